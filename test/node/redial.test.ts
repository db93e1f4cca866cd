// Covers the redial back-off: it starts at the minimum, doubles per failure, stays within
// [min, max] and jitters between half and all of its ceiling.
import { describe, expect, test } from 'bun:test';
import { backoffMs } from '../../node/p2p/redial.ts';

describe('redial back-off', () => {
  const cases: Array<[failures: number, random01: number, expected: number]> = [
    [0, 1, 250],
    [1, 1, 500],
    [2, 1, 1000],
    [2, 0, 500],
    [6, 1, 10_000],
    [40, 1, 10_000],
    [40, 0, 5000],
    [0, 0, 250],
  ];
  for (const [failures, random01, expected] of cases) {
    test(`after ${failures} failures with jitter ${random01}: ${expected} ms`, () => {
      expect(backoffMs(failures, 250, 10_000, random01)).toBe(expected);
    });
  }
});
