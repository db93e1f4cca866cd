// Covers which rank announcements wait: a report that a rank stopped serving is sent only after
// the awake board's down delay (and not at all when the rank serves again first), one that it
// serves at once; a data-plane claim carrying a view's first build waits, one carrying a later
// attempt (which peers must join) goes at once. At a view change every rank does both while
// the slowest survivors still decide the view.
import { afterEach, describe, expect, test } from 'bun:test';
import pino from 'pino';
import { AwakeBoard, type AwakeReport } from '../../node/demand/awake.ts';
import { DataPlaneDirectory } from '../../node/rank/directory.ts';
import { waitFor } from '../node/helpers.ts';

const log = pino({ level: 'silent' });
// A deferred send is waited for; that one did not go out is shown by sleeping past its 150 ms
// delay (timers run in deadline order, so the check holds however loaded the host).
const pastTheDelay = (): Promise<void> => Bun.sleep(300);
const stops: Array<() => void> = [];
afterEach(() => {
  for (const stop of stops.splice(0)) stop();
});

/** A transport that records what is published (decoded JSON). */
function recorder() {
  const sent: any[] = [];
  const transport = {
    subscribe: () => () => {},
    publish: async (_channel: string, bytes: Uint8Array) => {
      sent.push(JSON.parse(new TextDecoder().decode(bytes)));
      return { recipients: 1 };
    },
    onPeer: () => () => {},
  };
  return { sent, transport };
}

const report = (serving: boolean, seq = 1): AwakeReport => ({ rank: 2, pipeline: 'a', round: { generation: 1, epoch: 3, seq }, serving });

describe('awake reports', () => {
  test('serving is sent at once; not serving only after the down delay, and not if serving again first', async () => {
    const { sent, transport } = recorder();
    const board = new AwakeBoard({ meshId: 'm', peerId: 'self', transport, intervalMs: 3_600_000, downDelayMs: 150, log });
    board.start();
    stops.push(() => board.stop());
    board.report(report(true));
    expect(sent.map((m) => m.serving)).toEqual([true]);
    board.report(report(false));
    // Known here at once (the board's own view), sent only later.
    expect(board.awake('a', [2], null, () => 'self')).toEqual([]);
    expect(sent.length).toBe(1);
    board.report(report(true, 2));
    expect(sent.map((m) => m.serving)).toEqual([true, true]);
    await pastTheDelay();
    expect(sent.length).toBe(2); // the down report was replaced before it went out
    board.report(report(false, 2));
    board.report(report(false, 3));
    await waitFor('the deferred down report', () => sent.length > 2);
    // One message, with the latest report.
    expect(sent.slice(2).map((m) => [m.serving, m.round.seq])).toEqual([[false, 3]]);
  });
});

describe('data-plane claims', () => {
  test('a first build is announced after a delay, a later attempt at once', async () => {
    const { sent, transport } = recorder();
    const dir = new DataPlaneDirectory({ transport, self: { peerId: 'self', bootId: 'b1', host: '127.0.0.1', port: 4000 }, announceIntervalMs: 3_600_000, firstBuildDelayMs: 150, log });
    dir.start();
    stops.push(() => dir.stop());
    expect(sent.map((c) => c.build)).toEqual([null]); // the start announcement
    dir.setBuild({ generation: 1, epoch: 4, attempt: 0 });
    expect(sent.length).toBe(1);
    await waitFor('the deferred first-build claim', () => sent.length > 1);
    expect(sent.map((c) => c.build?.attempt ?? null)).toEqual([null, 0]);
    dir.setBuild({ generation: 1, epoch: 5, attempt: 0 });
    dir.setBuild({ generation: 1, epoch: 5, attempt: 1 });
    // The later attempt went at once and carried the pending first build's news with it.
    expect(sent.slice(2).map((c) => [c.build.epoch, c.build.attempt])).toEqual([[5, 1]]);
    await pastTheDelay();
    expect(sent.length).toBe(3); // the pending first-build claim was covered by it
  });
});
