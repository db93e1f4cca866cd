// Expert placement: which mesh rank holds which expert. It follows the view: when the
// active mask changes, every rank computes the next placement from the previous one and the
// new mask with this deterministic function, so all ranks agree without talking. A joiner
// gets the previous placement by adopting a healthy member's EngineState.

/**
 * The placement for `activeMeshRanks` (ascending), moving as few experts as it can from
 * `previous`: an expert stays where it is while its rank is active and holds no more than
 * ceil(E / n) experts; the rest go, in expert order, to the least-loaded active rank
 * (ties → lowest mesh rank). Without a previous placement this deals experts round-robin.
 * Invariant: every rank holds at most ceil(E / n) experts; the result is a pure function of
 * its inputs, and placing again for the same mask returns the same placement.
 */
export function placeExperts(experts: number, activeMeshRanks: readonly number[], previous?: readonly number[]): number[] {
  if (activeMeshRanks.length === 0) throw new RangeError('placeExperts: no active ranks');
  for (let i = 1; i < activeMeshRanks.length; i++) {
    if (activeMeshRanks[i]! <= activeMeshRanks[i - 1]!) throw new RangeError('placeExperts: active ranks must be strictly ascending');
  }
  if (previous !== undefined && previous.length !== experts) throw new RangeError(`placeExperts: previous placement has ${previous.length} experts, not ${experts}`);
  const cap = Math.ceil(experts / activeMeshRanks.length);
  const load = new Map<number, number>(activeMeshRanks.map((r) => [r, 0]));
  const placement = new Array<number>(experts).fill(-1);
  if (previous) {
    for (let e = 0; e < experts; e++) {
      const r = previous[e]!;
      const l = load.get(r);
      if (l !== undefined && l < cap) {
        placement[e] = r;
        load.set(r, l + 1);
      }
    }
  }
  for (let e = 0; e < experts; e++) {
    if (placement[e] !== -1) continue;
    let best = activeMeshRanks[0]!;
    for (const r of activeMeshRanks) if (load.get(r)! < load.get(best)!) best = r;
    placement[e] = best;
    load.set(best, load.get(best)! + 1);
  }
  return placement;
}

/** The experts `meshRank` holds under `placement`, ascending. */
export function expertsOf(placement: readonly number[], meshRank: number): number[] {
  const out: number[] = [];
  for (let e = 0; e < placement.length; e++) if (placement[e] === meshRank) out.push(e);
  return out;
}
