// The CPU ExpertBackend: relu(x · w1[e]) · w2[e] in float32, row by row. It is the
// reference the CUDA backend is checked against.
import type { ExpertBackend, ExpertWeights } from './experts.ts';

export function createCpuExpertBackend(): ExpertBackend {
  return new CpuExpertBackend();
}

export class CpuExpertBackend implements ExpertBackend {
  readonly kind = 'cpu' as const;
  private hidden = 0;
  private width = 0;
  private readonly held = new Map<number, { w1: Float32Array; w2: Float32Array }>();

  async load(weights: ExpertWeights): Promise<void> {
    const { hidden: d, width: h, experts, w1, w2 } = weights;
    if (experts.length !== w1.length || experts.length !== w2.length) throw new RangeError('load: experts, w1 and w2 differ in length');
    for (let i = 0; i < experts.length; i++) {
      if (w1[i]!.length !== d * h || w2[i]!.length !== h * d) throw new RangeError(`load: expert ${experts[i]} has wrongly sized weights`);
    }
    this.held.clear();
    this.hidden = d;
    this.width = h;
    experts.forEach((e, i) => this.held.set(e, { w1: w1[i]!, w2: w2[i]! }));
  }

  async forward(expert: number, x: Float32Array, rows: number): Promise<Float32Array> {
    const w = this.held.get(expert);
    if (!w) throw new RangeError(`forward: expert ${expert} is not loaded on this rank`);
    const d = this.hidden;
    const h = this.width;
    if (x.length < rows * d) throw new RangeError(`forward: x holds ${x.length} values, ${rows} rows need ${rows * d}`);
    const out = new Float32Array(rows * d);
    const act = new Float32Array(h);
    for (let r = 0; r < rows; r++) {
      act.fill(0);
      // act = relu(x_r · w1): accumulate row k of w1 scaled by x[r,k] (float32 stores).
      for (let k = 0; k < d; k++) {
        const xv = x[r * d + k]!;
        if (xv === 0) continue;
        const row = k * h;
        for (let j = 0; j < h; j++) act[j] = act[j]! + xv * w.w1[row + j]!;
      }
      for (let j = 0; j < h; j++) if (act[j]! < 0) act[j] = 0;
      // out_r = act · w2
      const o = r * d;
      for (let j = 0; j < h; j++) {
        const a = act[j]!;
        if (a === 0) continue;
        const row = j * d;
        for (let k = 0; k < d; k++) out[o + k] = out[o + k]! + a * w.w2[row + k]!;
      }
    }
    return out;
  }

  async unload(): Promise<void> {
    this.held.clear();
  }
}
