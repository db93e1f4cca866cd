// Covers the round-robin router: rank order, a cursor that survives the list changing between picks, ranks without room skipped, each rank tried once, per-pipeline cursors and the planner's filter.
import { describe, expect, test } from 'bun:test';
import { RoundRobin, servingRanks } from '../../node/ingress/router.ts';

const always = (): boolean => true;

describe('RoundRobin', () => {
  test('cycles over the ranks in the order given', () => {
    const rr = new RoundRobin();
    expect(Array.from({ length: 7 }, () => rr.pick('p', [0, 1, 2], always))).toEqual([0, 1, 2, 0, 1, 2, 0]);
  });

  test('a list that shrinks or grows between picks never fails and keeps going round', () => {
    const rr = new RoundRobin();
    expect(rr.pick('p', [0, 1, 2], always)).toBe(0);
    expect(rr.pick('p', [0, 1, 2], always)).toBe(1);
    // Rank 2 left: the cursor (2) wraps over the shorter list instead of indexing past it.
    expect(rr.pick('p', [0, 1], always)).toBe(0);
    expect(rr.pick('p', [0, 1], always)).toBe(1);
    // Rank 3 joined: the cursor (4) goes on over the longer list, every rank in turn.
    expect([rr.pick('p', [0, 1, 3], always), rr.pick('p', [0, 1, 3], always), rr.pick('p', [0, 1, 3], always)]).toEqual([1, 3, 0]);
    expect(rr.pick('p', [], always)).toBeNull();
    expect(rr.pick('p', [5], always)).toBe(5);
  });

  test('skips ranks without room, tries each once, null when none has room', () => {
    const rr = new RoundRobin();
    const tried: number[] = [];
    expect(rr.pick('p', [0, 1, 2], (r) => (tried.push(r), r === 2))).toBe(2);
    expect(tried).toEqual([0, 1, 2]);
    tried.length = 0;
    expect(rr.pick('p', [0, 1, 2], (r) => (tried.push(r), false))).toBeNull();
    expect(tried).toEqual([0, 1, 2]);
    // After picking 2 the next turn starts at 0 again.
    expect(rr.pick('p', [0, 1, 2], always)).toBe(0);
  });

  test('pipelines have their own cursors', () => {
    const rr = new RoundRobin();
    expect([rr.pick('a', [0, 1], always), rr.pick('b', [0, 1], always), rr.pick('a', [0, 1], always), rr.pick('b', [0, 1], always)]).toEqual([0, 0, 1, 1]);
  });
});

describe('servingRanks', () => {
  test('every active rank without a plan; the planned subset of active ranks with one', () => {
    expect(servingRanks([0, 2, 3], 'p', undefined)).toEqual([0, 2, 3]);
    expect(servingRanks([0, 2, 3], 'p', () => null)).toEqual([0, 2, 3]);
    // A planned rank that is not active is not served to; order stays the rank order.
    expect(servingRanks([0, 2, 3], 'p', (p) => (p === 'p' ? [3, 1, 0] : null))).toEqual([0, 3]);
    expect(servingRanks([0, 2, 3], 'q', (p) => (p === 'p' ? [3] : null))).toEqual([0, 2, 3]);
    expect(servingRanks([0, 2, 3], 'p', () => [])).toEqual([]);
  });
});
