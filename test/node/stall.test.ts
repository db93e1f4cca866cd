// Covers the stall clock behind inconclusive probes: a tick that comes late by more than its
// interval is a stall of this node's own event loop, and a probe that failed while this node
// stalled for half its budget does not count against the peer.
import { describe, expect, test } from 'bun:test';
import { probeFailureCounts, StallClock } from '../../node/mesh/stall.ts';

describe('StallClock', () => {
  test('ticks on time: no stall', () => {
    const clock = new StallClock(50);
    for (let t = 0; t <= 1000; t += 50) clock.tick(t);
    expect(clock.stallSince(200, 1020)).toBe(0);
  });

  test('a late tick inside the window is a stall of its lateness', () => {
    const clock = new StallClock(50);
    for (const t of [0, 50, 100, 400, 450]) clock.tick(t);
    // 100 → 400 is 300 ms between ticks meant 50 apart: a 250 ms stall.
    expect(clock.stallSince(120, 460)).toBe(250);
  });

  test('the gap that spans the window start counts; gaps before it do not', () => {
    const clock = new StallClock(50);
    for (const t of [0, 500, 550, 800, 850]) clock.tick(t);
    // Window from 600: the gap 550 → 800 spans it (200 ms stall); 0 → 500 is older.
    expect(clock.stallSince(600, 860)).toBe(200);
  });

  test('no tick since the probe started: the time since the last tick counts', () => {
    const clock = new StallClock(50);
    for (const t of [0, 50, 100]) clock.tick(t);
    expect(clock.stallSince(120, 400)).toBe(250);
  });

  test('before any tick: 0', () => {
    expect(new StallClock(50).stallSince(0, 1000)).toBe(0);
  });

  test('only the ticks kept are looked at', () => {
    const clock = new StallClock(10, 4);
    for (const t of [0, 1000, 1010, 1020, 1030, 1040]) clock.tick(t);
    // The 990 ms gap after 0 was overwritten; the ring holds 1010..1040.
    expect(clock.stallSince(0, 1045)).toBe(0);
  });
});

describe('probeFailureCounts', () => {
  test('a failure counts unless this node stalled for half the budget or more', () => {
    expect(probeFailureCounts(0, 150)).toBe(true);
    expect(probeFailureCounts(74, 150)).toBe(true);
    expect(probeFailureCounts(75, 150)).toBe(false);
    expect(probeFailureCounts(900, 1000)).toBe(false);
  });
});
