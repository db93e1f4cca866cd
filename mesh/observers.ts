/**
 * Who probes whom, and what an observer concludes from its recent probes of one member.
 *
 * Every active member of a view watches a fixed, small set of subjects (Rapid's monitoring
 * ring, with one ring): over the active members in rank order, the member at position i
 * probes the K members after it, K = min(active − 1, observersMax). Spare j is watched by
 * the K active members from position j on. So every member has K observers and every
 * observer K subjects (plus a share of the spares), and the probing cost per node stays
 * constant however large the mesh grows. Every node computes the same ring from the same
 * view, so each knows who watches whom without asking.
 *
 * An observer keeps the outcomes of its last `window` probes of each subject. It reports the
 * subject while `failuresToReport` (a majority) of them failed, and withdraws that report
 * only when its own probes no longer fail that often — hearing the subject's gossip, which
 * other peers may have relayed, says nothing about the link the probes measure.
 */
import { type Incarnation, type View, activePeers } from './view.ts';

/** The incarnations `self` probes on schedule in `view`: its ring successors, then its share of spares. */
export function watchedBy(view: View, self: string, observersMax: number): Incarnation[] {
  const actives = activeHolders(view);
  const n = actives.length;
  const i = actives.findIndex((h) => h.peerId === self);
  if (i < 0) return [];
  const subjects: Incarnation[] = [];
  const k = Math.min(n - 1, observersMax);
  for (let t = 1; t <= k; t++) subjects.push(actives[(i + t) % n] as Incarnation);
  const kSpare = Math.min(n, observersMax);
  view.spares.forEach((spare, j) => {
    // Spare j's observers are positions j … j + kSpare − 1: is position i among them?
    if ((((i - j) % n) + n) % n < kSpare) subjects.push(spare);
  });
  return subjects;
}

/** The active members that probe `peerId` on schedule in `view` (none if it is not recorded). */
export function observersOf(view: View, peerId: string, observersMax: number): string[] {
  const actives = activePeers(view);
  const n = actives.length;
  const i = actives.indexOf(peerId);
  if (i >= 0) {
    const k = Math.min(n - 1, observersMax);
    return Array.from({ length: k }, (_, t) => actives[(((i - 1 - t) % n) + n) % n] as string);
  }
  const j = view.spares.findIndex((s) => s.peerId === peerId);
  if (j < 0 || n === 0) return [];
  return Array.from({ length: Math.min(n, observersMax) }, (_, t) => actives[(j + t) % n] as string);
}

/** What an observer's recent probes of one subject say. */
export type ProbeVerdict = 'report' | 'withdraw' | 'keep';

/**
 * The outcomes of one observer's recent probes of one subject, newest last.
 * Invariant: outcomes.length <= window.
 */
export class ProbeHistory {
  private readonly outcomes: boolean[] = [];

  constructor(
    private readonly window: number,
    private readonly failuresToReport: number,
  ) {
    if (!Number.isInteger(window) || window < 1) throw new RangeError(`probe window must be an integer ≥ 1, got ${window}`);
    if (!Number.isInteger(failuresToReport) || failuresToReport < 1 || failuresToReport > window) {
      throw new RangeError(`failures to report must be an integer in 1..${window}, got ${failuresToReport}`);
    }
  }

  record(ok: boolean): void {
    this.outcomes.push(ok);
    if (this.outcomes.length > this.window) this.outcomes.shift();
  }

  failures(): number {
    return this.outcomes.filter((ok) => !ok).length;
  }

  /** Whether the most recent probe failed (false before the first probe). */
  lastFailed(): boolean {
    return this.outcomes.at(-1) === false;
  }

  /** More than half of the probes recorded so far failed (false before the first probe). */
  mostlyFailing(): boolean {
    return 2 * this.failures() > this.outcomes.length;
  }

  /**
   * 'report' while enough recent probes failed; 'withdraw' once at most failuresToReport − 2
   * of them failed (a report, if any, no longer holds); 'keep' in between, or before the
   * window holds failuresToReport probes. The one-failure margin keeps a lossy subject, whose
   * failures hover around the threshold, reported by all its observers at once; it is small,
   * so a healthy subject that stalled briefly (a busy host) is reported briefly, and its
   * observers rarely report it at the same moment.
   */
  verdict(): ProbeVerdict {
    const failed = this.failures();
    if (failed >= this.failuresToReport) return 'report';
    if (this.outcomes.length >= this.failuresToReport && failed <= this.failuresToReport - 2) return 'withdraw';
    return 'keep';
  }
}

function activeHolders(view: View): Incarnation[] {
  const out: Incarnation[] = [];
  for (const h of view.ranks) if (h) out.push(h);
  return out;
}
