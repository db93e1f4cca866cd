/**
 * The join step's one decision: which member a joiner adopts its state from. Every rank of
 * the new epoch computes it from the same all-gathered input, so all agree without talking
 * further; the runtime (node/rank/join.ts) and the simulator both call this function.
 *
 * A member is a candidate when it holds state that is current: it served continuously into
 * this epoch (it did not warm up alone, and it never lost its rank since it last adopted),
 * and among those it is as far along as the furthest (iteration counters; a member that
 * missed iterations is not a source). The source is the lowest-ranked candidate — never the
 * joiner itself, and not rank 0 unless rank 0 is the lowest healthy member (SGLang's
 * `src_rank=0` broadcast stale metadata when rank 0 was the one recovering).
 */

/** What one rank of the new epoch says about itself in the join step. */
export interface JoinCandidate {
  /** Mesh rank in the new view. */
  readonly rank: number;
  /** Holds current state: served continuously into this epoch. */
  readonly hasState: boolean;
  /** How far along its state is (engine iterations); compared only among ranks with state. */
  readonly progress: number;
}

export type JoinPlan =
  /** No rank holds state (the generation's first epoch): every rank keeps what it warmed up. */
  | { readonly kind: 'fresh' }
  /** Every rank holds current state: nothing to adopt. */
  | { readonly kind: 'steady'; readonly source: number }
  /** `joiners` (ascending mesh ranks) adopt the state of mesh rank `source`. */
  | { readonly kind: 'adopt'; readonly source: number; readonly joiners: readonly number[] };

/**
 * The plan for one join step. `candidates` may come in any order; the result depends only on
 * their contents. Throws RangeError on duplicate ranks or bad numbers (a caller's bug).
 */
export function joinPlan(candidates: readonly JoinCandidate[]): JoinPlan {
  const seen = new Set<number>();
  for (const c of candidates) {
    if (!Number.isInteger(c.rank) || c.rank < 0) throw new RangeError(`joinPlan: bad rank ${c.rank}`);
    if (!Number.isFinite(c.progress) || c.progress < 0) throw new RangeError(`joinPlan: bad progress ${c.progress} of rank ${c.rank}`);
    if (seen.has(c.rank)) throw new RangeError(`joinPlan: rank ${c.rank} twice`);
    seen.add(c.rank);
  }
  const sorted = [...candidates].sort((a, b) => a.rank - b.rank);
  const stateful = sorted.filter((c) => c.hasState);
  if (stateful.length === 0) return { kind: 'fresh' };
  const furthest = Math.max(...stateful.map((c) => c.progress));
  const source = stateful.find((c) => c.progress === furthest)!.rank;
  // A member behind the furthest adopts too: its state is not current.
  const joiners = sorted.filter((c) => !c.hasState || c.progress !== furthest).map((c) => c.rank);
  if (joiners.length === 0) return { kind: 'steady', source };
  return { kind: 'adopt', source, joiners };
}
