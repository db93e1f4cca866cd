// Quorum arithmetic of view agreement, checked against tables and the intersection property it exists for.
import { describe, expect, test } from 'bun:test';
import { fastQuorum, possiblyChosenThreshold, quorumSize, reportThreshold, voteResult } from '../../mesh/quorum.ts';

describe('quorum sizes', () => {
  const table: [n: number, majority: number, fast: number][] = [
    [1, 1, 1], [2, 2, 2], [3, 2, 3], [4, 3, 4], [5, 3, 4], [6, 4, 5], [7, 4, 6], [8, 5, 7],
    [9, 5, 7], [10, 6, 8], [16, 9, 13], [32, 17, 25], [64, 33, 49], [128, 65, 97],
  ];
  for (const [n, majority, fast] of table) {
    test(`n=${n}: majority ${majority}, fast ${fast}`, () => {
      expect(quorumSize(n)).toBe(majority);
      expect(fastQuorum(n)).toBe(fast);
    });
  }

  test('two fast quorums and a classic quorum always intersect (q + 2f > 2n)', () => {
    for (let n = 1; n <= 1024; n++) expect(quorumSize(n) + 2 * fastQuorum(n)).toBeGreaterThan(2 * n);
  });

  test('at most one value can look possibly chosen among a classic quorum of replies', () => {
    for (let n = 1; n <= 200; n++) {
      for (let responded = quorumSize(n); responded <= n; responded++) {
        const t = possiblyChosenThreshold(n, responded);
        // Two disjoint groups of replies each reaching t would need 2t ≤ responded.
        expect(2 * t).toBeGreaterThan(responded);
      }
    }
  });

  test('bad acceptor counts are refused', () => {
    expect(() => quorumSize(0)).toThrow(RangeError);
    expect(() => fastQuorum(2.5)).toThrow(RangeError);
  });
});

describe('voteResult', () => {
  const table: [n: number, needed: number, yes: number, responded: number, result: string][] = [
    [5, 3, 3, 3, 'won'], [5, 3, 2, 5, 'lost'], [5, 3, 2, 4, 'pending'], [5, 4, 1, 3, 'lost'], [1, 1, 1, 1, 'won'], [3, 2, 0, 0, 'pending'],
  ];
  for (const [n, needed, yes, responded, result] of table) {
    test(`n=${n} needed=${needed} yes=${yes} responded=${responded} → ${result}`, () => {
      expect(voteResult(n, needed, yes, responded)).toBe(result as 'won');
    });
  }
});

describe('reportThreshold', () => {
  const table: [observers: number, max: number, n: number, threshold: number][] = [
    [0, 3, 1, 1], [1, 3, 2, 1], [2, 3, 3, 2], [3, 3, 4, 3], [63, 3, 64, 3], [10, 5, 11, 5], [4, 4, 5, 3], [6, 9, 7, 4],
  ];
  for (const [observers, max, n, threshold] of table) {
    test(`${observers} observers of ${n}, max ${max} → ${threshold}`, () => expect(reportThreshold(observers, max, n)).toBe(threshold));
  }
  test('one bad link never suffices once two observers exist; a live majority always suffices', () => {
    for (let n = 3; n < 100; n++) {
      for (let max = 2; max < 8; max++) {
        expect(reportThreshold(n - 1, max, n)).toBeGreaterThanOrEqual(2);
        // A dead subject leaves at least quorumSize(n) live observers when a majority lives.
        expect(reportThreshold(n - 1, max, n)).toBeLessThanOrEqual(quorumSize(n));
      }
    }
  });
});
