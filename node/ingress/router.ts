// Round-robin over the ranks serving a pipeline. The list of ranks is read fresh at every
// pick (it changes with the view), in rank order, so the routing never depends on map or
// insertion order and never fails because the list changed between two picks: the cursor
// is a plain counter taken modulo the list's current length (Megatron's `idx % len` fix of
// `itertools.cycle` over a mutated deque).

/**
 * Which ranks serve a pipeline: a subset of the active ranks, or null when every active
 * rank serves every pipeline (the behaviour until the planner assigns ranks to pipelines).
 */
export type RanksFor = (pipeline: string) => readonly number[] | null;

export class RoundRobin {
  /** Per pipeline, the position after the last pick. Invariant: only grows. */
  private readonly cursors = new Map<string, number>();

  /**
   * The next rank of `ranks` (ascending) with room, starting after the last pick for this
   * pipeline; null when `ranks` is empty or none has room. Tries each rank at most once.
   */
  pick(pipeline: string, ranks: readonly number[], hasRoom: (rank: number) => boolean): number | null {
    const n = ranks.length;
    if (n === 0) return null;
    const cursor = this.cursors.get(pipeline) ?? 0;
    for (let i = 0; i < n; i++) {
      const rank = ranks[(cursor + i) % n]!;
      if (!hasRoom(rank)) continue;
      this.cursors.set(pipeline, cursor + i + 1);
      return rank;
    }
    return null;
  }
}

/** The active ranks of a view that serve `pipeline`, ascending. */
export function servingRanks(activeRanks: readonly number[], pipeline: string, ranksFor: RanksFor | undefined): number[] {
  const assigned = ranksFor?.(pipeline) ?? null;
  if (assigned === null) return [...activeRanks];
  const allowed = new Set(assigned);
  return activeRanks.filter((r) => allowed.has(r));
}
