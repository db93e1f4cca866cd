// How long this process's event loop went without running: the driver records when each
// protocol tick ran, and a tick that comes late by more than its interval shows a stall. A
// probe that failed while this node itself stalled says nothing about the peer (Lifeguard's
// local health): the echo may have sat unread in the socket.

/**
 * A failed probe is inconclusive when this node stalled for at least this share of the probe's
 * budget while it ran. On a host whose cores are all busy (many nodes on one machine, a
 * CPU-bound neighbour) every process stalls now and then; counting those failures removed
 * healthy members of a 32-process mesh on 2 cores every few seconds.
 */
export const STALL_SHARE_INCONCLUSIVE = 0.5;

export class StallClock {
  private readonly times: Float64Array;
  private count = 0;

  /** `intervalMs`: how often tick() is meant to run; `kept`: ticks remembered. */
  constructor(
    private readonly intervalMs: number,
    kept = 128,
  ) {
    this.times = new Float64Array(kept);
  }

  /** The tick timer ran at `nowMs`. */
  tick(nowMs: number): void {
    this.times[this.count++ % this.times.length] = nowMs;
  }

  /**
   * The longest gap between consecutive ticks (and from the last tick to `nowMs`) beyond the
   * tick interval, over the time from `fromMs` to `nowMs`: how long this process could not
   * have read anything. 0 before any tick, or when it kept time.
   */
  stallSince(fromMs: number, nowMs: number): number {
    const n = Math.min(this.count, this.times.length);
    let later = nowMs;
    let worst = 0;
    for (let i = 1; i <= n; i++) {
      const t = this.times[(this.count - i) % this.times.length]!;
      worst = Math.max(worst, later - t - this.intervalMs);
      if (t < fromMs) break;
      later = t;
    }
    return worst;
  }
}

/** Whether a failed, unrefused probe of budget `budgetMs` counts against the peer. */
export function probeFailureCounts(stalledMs: number, budgetMs: number): boolean {
  return stalledMs < STALL_SHARE_INCONCLUSIVE * budgetMs;
}
