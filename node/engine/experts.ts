// The expert computation of the reference engine, behind one interface so the same engine
// runs on the CPU and on CUDA (kernels in ffi/kernels/).
//
// The reference model (all float32, row-major, weights drawn from a seed):
//   vocab V, hidden d, experts E, expert width h.
//   embedding  emb    [V × d]
//   router     router [d × E]
//   expert e   w1[e]  [d × h],  w2[e] [h × d]
// For an input token t: x = emb[t]; e = argmax_j (x · router[:, j]) (ties → lowest j);
//   y = x + relu(x · w1[e]) · w2[e];  output token = argmax_v (y · emb[v]) (ties → lowest v).
// An ExpertBackend computes only  relu(x · w1[e]) · w2[e]  for a block of rows routed to e.
// Each row's expert output is computed on exactly one rank and the others contribute zeros,
// so the cross-rank sum is exact and outputs do not depend on the number of ranks.

export interface ExpertWeights {
  readonly hidden: number; // d
  readonly width: number; // h
  /** Expert indices held by this rank, ascending. */
  readonly experts: readonly number[];
  /** w1 of each held expert, [d × h] row-major, same order as `experts`. */
  readonly w1: readonly Float32Array[];
  /** w2 of each held expert, [h × d] row-major, same order as `experts`. */
  readonly w2: readonly Float32Array[];
}

export interface ExpertBackend {
  readonly kind: 'cpu' | 'cuda';
  /** Upload / keep the weights of the experts this rank holds. Replaces earlier ones. */
  load(weights: ExpertWeights): Promise<void>;
  /**
   * relu(x · w1[expert]) · w2[expert] for `rows` rows of x ([rows × d], row-major).
   * Returns a new [rows × d] array. Throws if `expert` is not loaded.
   */
  forward(expert: number, x: Float32Array, rows: number): Promise<Float32Array>;
  /** Free the weights (and device memory). load() must be called again before forward(). */
  unload(): Promise<void>;
}
