// Shared test inputs for the engine tests.
import type { EngineRequest } from '../../node/engine/engine.ts';
import { Xoshiro128 } from '../../node/engine/weights.ts';

/** Requests with deterministic pseudo-random tokens (vocabulary 256). */
export function requests(count: number, prefix: string, seed = 3): EngineRequest[] {
  const rng = new Xoshiro128(seed, 99);
  return Array.from({ length: count }, (_, i) => ({
    id: `${prefix}-${i}`,
    pipeline: 'test',
    input: Array.from({ length: 1 + (rng.next() % 12) }, () => rng.next() % 256),
  }));
}
