// The expert block computed on the CPU in exactly the kernels' arithmetic: float32
// products and sums, rounded after every operation, summed in ascending index order. The
// GPU check compares the CUDA backend against it.

/** relu(x · w1) · w2 for `rows` rows; x [rows × d], w1 [d × h], w2 [h × d], row-major. */
export function expertForwardFloat32(x: Float32Array, w1: Float32Array, w2: Float32Array, rows: number, d: number, h: number): Float32Array {
  const f = Math.fround;
  const hid = new Float32Array(h);
  const y = new Float32Array(rows * d);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < h; j++) {
      let acc = 0;
      for (let k = 0; k < d; k++) acc = f(acc + f((x[r * d + k] ?? 0) * (w1[k * h + j] ?? 0)));
      hid[j] = acc > 0 ? acc : 0;
    }
    for (let i = 0; i < d; i++) {
      let acc = 0;
      for (let j = 0; j < h; j++) acc = f(acc + f((hid[j] ?? 0) * (w2[j * d + i] ?? 0)));
      y[r * d + i] = acc;
    }
  }
  return y;
}

/** max over elements of |a − b| / max(1, |b|): the tolerance measure the backends are held to. */
export function maxRelativeError(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const ref = b[i] ?? 0;
    worst = Math.max(worst, Math.abs((a[i] ?? 0) - ref) / Math.max(1, Math.abs(ref)));
  }
  return worst;
}
