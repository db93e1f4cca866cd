// Progress of a long operation (warm-up, a join, a benchmark): on a terminal, one line redrawn
// in place with a bar, the percentage, a detail and the elapsed time; elsewhere (a log file, CI)
// nothing until it ends, then one plain line — so logs never fill with carriage returns.
//
//   const p = progress('warming up node-3');
//   p.update(0.4, 'loading weights');   // or p.update(null, 'waiting for peers') when the share is unknown
//   p.done('ready');                    // "✓ warming up node-3 — ready (2.31 s)"

export interface Progress {
  /** `fraction` 0..1, or null when the share done is unknown (a spinner is shown instead). */
  update(fraction: number | null, detail?: string): void;
  /** Ends the line with a summary. Idempotent. */
  done(summary?: string): void;
  /** Ends the line with what went wrong. Idempotent. */
  fail(reason: string): void;
}

export interface ProgressOptions {
  /** Where to write; default process.stdout. */
  readonly out?: { write(text: string): unknown; isTTY?: boolean; columns?: number };
  /** Force the terminal or the plain form (default: whether `out` is a TTY). */
  readonly tty?: boolean;
}

const barWidth = 24;
/** Redraws at most this often; a bar updated every millisecond would cost more than the work. */
const redrawIntervalMs = 80;
const spinner = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export function progress(label: string, options: ProgressOptions = {}): Progress {
  const out = options.out ?? process.stdout;
  const tty = options.tty ?? out.isTTY === true;
  const startedMs = performance.now();
  let lastDrawMs = -Infinity;
  let frame = 0;
  let finished = false;

  const elapsed = (): string => formatSeconds(performance.now() - startedMs);
  const finish = (mark: string, text: string): void => {
    if (finished) return;
    finished = true;
    const line = `${mark} ${label}${text === '' ? '' : ` — ${text}`} (${elapsed()})`;
    out.write(tty ? `\r\x1b[2K${line}\n` : `${line}\n`);
  };

  return {
    update(fraction, detail = '') {
      if (finished || !tty) return;
      const nowMs = performance.now();
      if (nowMs - lastDrawMs < redrawIntervalMs && fraction !== 1) return;
      lastDrawMs = nowMs;
      let gauge: string;
      if (fraction === null) {
        gauge = `${spinner[frame++ % spinner.length]}`;
      } else {
        const f = Math.min(1, Math.max(0, fraction));
        const filled = Math.round(f * barWidth);
        gauge = `[${'█'.repeat(filled)}${'░'.repeat(barWidth - filled)}] ${String(Math.round(f * 100)).padStart(3)}%`;
      }
      const line = `${gauge} ${label}${detail === '' ? '' : ` · ${detail}`} · ${elapsed()}`;
      const columns = out.columns ?? 100;
      out.write(`\r\x1b[2K${line.length > columns - 1 ? line.slice(0, columns - 2) + '…' : line}`);
    },
    done(summary = '') {
      finish('✓', summary);
    },
    fail(reason) {
      finish('✗', reason);
    },
  };
}

/** `0.42 s`, `12.3 s`, `2 min 5 s`. */
export function formatSeconds(ms: number): string {
  if (ms < 10_000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}
