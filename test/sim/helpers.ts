/** Shared set-up for scenario tests: a formed cluster with named peers and the checkers attached. */
import { Prng } from '../../mesh/prng.ts';
import { Checkers } from '../../mesh/sim/checkers.ts';
import { type ClusterOptions, SimCluster } from '../../mesh/sim/cluster.ts';
import { converged } from '../../mesh/sim/run.ts';
import type { View } from '../../mesh/view.ts';

export interface Formed {
  cluster: SimCluster;
  checkers: Checkers;
  peers: string[];
}

/** Starts `size` nodes p0..p{size-1} (ranks follow that order) and waits for the first view. */
export function formed(size: number, seed: number, extra: Partial<ClusterOptions> = {}, worldSize = size): Formed {
  const peers = Array.from({ length: size }, (_, i) => `p${i}`);
  const checkers = new Checkers();
  const cluster = new SimCluster({ meshId: 'scenario', worldSize, peers, prng: new Prng(seed), checkers, ...extra });
  for (const p of peers) cluster.start(p, 0);
  const used = cluster.runUntil(() => converged(cluster, checkers) === null, 200);
  if (used < 0) throw new Error(`cluster of ${size} did not form: ${converged(cluster, checkers)}`);
  return { cluster, checkers, peers };
}

export function viewOf(f: Formed, peer: string): View {
  const v = f.cluster.node(peer).core?.view();
  if (!v) throw new Error(`${peer} has no view`);
  return v;
}

export function holders(v: View): (string | null)[] {
  return v.ranks.map((h) => h?.peerId ?? null);
}
