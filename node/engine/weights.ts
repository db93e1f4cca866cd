// The reference model's weights, drawn from a seed with no download. Every tensor has its
// own stream (derived from the seed and the tensor's id), so a rank can generate just the
// experts it holds and still get exactly the values every other rank would.

/** Shape of the reference mixture-of-experts model (see experts.ts for the math). */
export interface ModelConfig {
  readonly seed: number;
  /** Vocabulary size V. */
  readonly vocab: number;
  /** Hidden size d. */
  readonly hidden: number;
  /** Number of experts E. */
  readonly experts: number;
  /** Expert width h. */
  readonly width: number;
}

export const defaultModelConfig: ModelConfig = { seed: 1, vocab: 256, hidden: 64, experts: 8, width: 128 };

/** The pipeline whose model is the configured seed's own (every output from before pipelines stays the same). */
export const DEFAULT_PIPELINE = 'default';

/**
 * The weights seed of pipeline `pipeline`'s model: `seed` itself for the default pipeline,
 * else seed mixed with the FNV-1a hash of the name, so every node derives the same model for
 * a pipeline with nothing to exchange, and different pipelines get different weights.
 */
export function pipelineSeed(seed: number, pipeline: string): number {
  if (pipeline === DEFAULT_PIPELINE) return seed >>> 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < pipeline.length; i++) h = Math.imul(h ^ pipeline.charCodeAt(i), 0x01000193) >>> 0;
  // splitmix-style finaliser over (seed, hash): nearby names and seeds land far apart.
  let z = (seed ^ Math.imul(h, 0x9e3779b9)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** Sizes beyond these are refused: the reference engine is meant to stay small. */
export const modelLimits = { vocab: 1 << 16, hidden: 4096, experts: 1024, width: 16384 } as const;

export function checkModelConfig(c: ModelConfig): void {
  for (const [name, max] of Object.entries(modelLimits)) {
    const v = c[name as keyof typeof modelLimits];
    if (!Number.isInteger(v) || v < 1 || v > max) throw new RangeError(`model ${name} = ${v} must be an integer in 1..${max}`);
  }
  if (!Number.isInteger(c.seed) || c.seed < 0 || c.seed > 0xffffffff) throw new RangeError(`model seed ${c.seed} must be a 32-bit unsigned integer`);
}

/** emb [V × d]: scale 1, so tokens are far apart. */
export function embedding(c: ModelConfig): Float32Array {
  return uniform(c.seed, 0, c.vocab * c.hidden, 1);
}

/** router [d × E]. */
export function router(c: ModelConfig): Float32Array {
  return uniform(c.seed, 1, c.hidden * c.experts, 1 / Math.sqrt(c.hidden));
}

/** w1[e] [d × h] and w2[e] [h × d]; scaled so the expert output moves y noticeably. */
export function expertWeights(c: ModelConfig, expert: number): { w1: Float32Array; w2: Float32Array } {
  return {
    w1: uniform(c.seed, 2 + 2 * expert, c.hidden * c.width, 2 / Math.sqrt(c.hidden)),
    w2: uniform(c.seed, 3 + 2 * expert, c.width * c.hidden, 4 / Math.sqrt(c.width)),
  };
}

/** `length` float32 values uniform in [−scale, scale), from stream `tensorId` of `seed`. */
export function uniform(seed: number, tensorId: number, length: number, scale: number): Float32Array {
  const rng = new Xoshiro128(seed, tensorId);
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = (rng.next() / 2 ** 31 - 1) * scale;
  return out;
}

/**
 * xoshiro128** (Blackman & Vigna), seeded through splitmix32 from (seed, stream). Plain
 * 32-bit integer arithmetic, so every platform produces the same sequence.
 */
export class Xoshiro128 {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number, stream = 0) {
    let x = (seed ^ Math.imul(stream + 1, 0x9e3779b9)) >>> 0;
    const split = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = split();
    this.s1 = split();
    this.s2 = split();
    this.s3 = split();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the all-zero state is a fixed point
  }

  /** The next value, an unsigned 32-bit integer. */
  next(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
