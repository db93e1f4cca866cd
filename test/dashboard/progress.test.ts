// Covers scripts/lib/progress.ts: a redrawn bar on a terminal, one plain line elsewhere.
import { describe, expect, test } from 'bun:test';
import { formatSeconds, progress } from '../../scripts/lib/progress.ts';

function sink(isTTY: boolean): { text: () => string; out: { write(t: string): void; isTTY: boolean; columns: number } } {
  let text = '';
  return { text: () => text, out: { write: (t: string) => void (text += t), isTTY, columns: 120 } };
}

describe('progress', () => {
  test('on a terminal the line is redrawn with a bar and ends with a check mark', () => {
    const s = sink(true);
    const p = progress('warming up', { out: s.out });
    p.update(0.5, 'loading');
    p.update(1, 'done loading');
    p.done('ready');
    const text = s.text();
    expect(text).toContain('\r\x1b[2K[████████████░░░░░░░░░░░░]  50% warming up · loading');
    expect(text).toContain('100% warming up · done loading');
    expect(text).toMatch(/✓ warming up — ready \(\d\.\d\d s\)\n$/);
  });

  test('elsewhere only the final line is written, without carriage returns', () => {
    const s = sink(false);
    const p = progress('joining', { out: s.out });
    p.update(0.3);
    p.update(null, 'waiting');
    p.fail('no view');
    p.done('ignored after the end');
    expect(s.text()).toMatch(/^✗ joining — no view \(\d\.\d\d s\)\n$/);
  });

  test('an unknown share shows a spinner', () => {
    const s = sink(true);
    progress('forming', { out: s.out }).update(null, 'epoch 1');
    expect(s.text()).toMatch(/^\r\x1b\[2K⠋ forming · epoch 1 · /);
  });

  test('seconds are formatted by magnitude', () => {
    expect(formatSeconds(420)).toBe('0.42 s');
    expect(formatSeconds(12_340)).toBe('12.3 s');
    expect(formatSeconds(125_000)).toBe('2 min 5 s');
  });
});
