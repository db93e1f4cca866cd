/**
 * Quorum arithmetic for view agreement. Pure functions, tested with tables.
 *
 * Acceptors are the active members of the previous view (n of them). A classic quorum is a
 * strict majority; the fast quorum is Rapid's N − ⌊(N−1)/4⌋. Any fast quorum, any other
 * fast quorum and any classic quorum intersect (q + 2f > 2n), which is what lets a
 * classic-round coordinator recover a value that may have been chosen on the fast path.
 */

export type VoteResult = 'pending' | 'won' | 'lost';

/** The smallest strict majority of n acceptors (n ≥ 1). */
export function quorumSize(n: number): number {
  assertCount(n);
  return Math.floor(n / 2) + 1;
}

/** Identical fast-round votes needed to decide without a coordinator (n ≥ 1). */
export function fastQuorum(n: number): number {
  assertCount(n);
  return n - Math.floor((n - 1) / 4);
}

/**
 * Whether `yes` identical votes out of n acceptors, with `responded` acceptors heard from
 * (each voting once), have won, lost (can no longer reach `needed`) or are pending.
 */
export function voteResult(n: number, needed: number, yes: number, responded: number): VoteResult {
  if (yes >= needed) return 'won';
  if (yes + (n - responded) < needed) return 'lost';
  return 'pending';
}

/**
 * Fast Paxos recovery: given the fast-round votes reported in phase-1 replies by
 * `responded` of n acceptors, the number of votes a value needs among them to have possibly
 * been chosen on the fast path. At most one value can reach it when responded ≥ quorumSize(n).
 */
export function possiblyChosenThreshold(n: number, responded: number): number {
  return fastQuorum(n) - (n - responded);
}

/**
 * Distinct observer reports needed before a subject is put in a cut, given how many of the
 * n active members could observe it. Two or more whenever two observers exist (and
 * thresholdMax ≥ 2), so one bad link never evicts anyone; never more than quorumSize(n), so
 * a live majority can always remove a member it has lost.
 */
export function reportThreshold(observers: number, thresholdMax: number, n: number): number {
  return Math.max(1, Math.min(thresholdMax, observers, quorumSize(n)));
}

function assertCount(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`acceptor count must be an integer ≥ 1, got ${n}`);
}
