// Views and the active-rank mask: canonical hex encoding, rank-order iteration, and deterministic application of changes.
import { describe, expect, test } from 'bun:test';
import fc from 'fast-check';
import { RankMask, activeMask, applyChange, changeKey, firstView, viewKey, viewProblem, type Change, type View } from '../../mesh/view.ts';

const inc = (p: string, b = 'b1') => ({ peerId: p, bootId: b });

describe('RankMask', () => {
  const table: [size: number, ranks: number[], hex: string][] = [
    [4, [], '0'], [4, [0], '1'], [3, [0, 1, 2], '7'], [8, [4], '10'], [8, [0, 7], '81'],
    [40, [32], '100000000'], [64, [0, 63], '8000000000000001'], [128, [1, 100], '10000000000000000000000002'],
  ];
  for (const [size, ranks, hex] of table) {
    test(`{${ranks.join(',')}} of ${size} ↔ ${hex}`, () => {
      const m = RankMask.of(size, ranks);
      expect(m.toHex()).toBe(hex);
      expect(RankMask.fromHex(size, hex).toArray()).toEqual(ranks);
      expect(m.count()).toBe(ranks.length);
    });
  }

  test('iterates in rank order whatever the insertion order', () => {
    expect(RankMask.of(70, [69, 3, 40, 0, 31, 32]).toArray()).toEqual([0, 3, 31, 32, 40, 69]);
  });

  test('refuses ranks outside the mask and non-canonical text', () => {
    expect(() => RankMask.of(4, [4])).toThrow(RangeError);
    expect(() => RankMask.fromHex(4, '10')).toThrow(RangeError);
    expect(() => RankMask.fromHex(8, '01')).toThrow(RangeError);
    expect(() => RankMask.fromHex(8, 'F')).toThrow(RangeError);
    expect(() => RankMask.fromHex(8, '')).toThrow(RangeError);
    expect(RankMask.of(4, [1]).has(7)).toBe(false);
  });
});

describe('applyChange', () => {
  const v1: View = firstView('m', 1, [inc('a'), inc('b'), inc('c')]);

  test('removes a failed rank and promotes a spare into it in one step', () => {
    const withSpare = applyChange(v1, { remove: [], admit: [], addSpares: [inc('s')], close: false });
    expect(withSpare.spares).toEqual([inc('s')]);
    const v3 = applyChange(withSpare, { remove: [inc('b')], admit: [{ rank: 1, ...inc('s') }], addSpares: [], close: false });
    expect(v3.epoch).toBe(3);
    expect(v3.ranks).toEqual([inc('a'), inc('s'), inc('c')]);
    expect(v3.spares).toEqual([]);
    expect(activeMask(v3).toHex()).toBe('7');
    expect(viewProblem(v3)).toBeNull();
  });

  test('replaces a restarted incarnation only through a change', () => {
    const v2 = applyChange(v1, { remove: [inc('b')], admit: [{ rank: 1, ...inc('b', 'b2') }], addSpares: [], close: false });
    expect(v2.ranks[1]).toEqual(inc('b', 'b2'));
  });

  test('skips entries that do not apply, the same way everywhere', () => {
    const bad: Change = { remove: [inc('zz')], admit: [{ rank: 0, ...inc('x') }, { rank: 9, ...inc('y') }], addSpares: [inc('a')], close: false };
    const v2 = applyChange(v1, bad);
    expect(v2.ranks).toEqual(v1.ranks);
    expect(v2.spares).toEqual([]);
    expect(v2.epoch).toBe(2);
  });

  test('a closed view never changes again', () => {
    const closed = applyChange(v1, { remove: [], admit: [], addSpares: [], close: true });
    expect(closed.closed).toBe(true);
    expect(applyChange(closed, { remove: [inc('a')], admit: [], addSpares: [], close: false })).toBe(closed);
  });

  test('equal changes have equal keys whatever their order', () => {
    const a: Change = { remove: [inc('b'), inc('a')], admit: [{ rank: 2, ...inc('x') }, { rank: 0, ...inc('y') }], addSpares: [], close: false };
    const b: Change = { remove: [inc('a'), inc('b')], admit: [{ rank: 0, ...inc('y') }, { rank: 2, ...inc('x') }], addSpares: [], close: false };
    expect(changeKey(a)).toBe(changeKey(b));
    expect(viewKey(applyChange(v1, a))).toBe(viewKey(applyChange(v1, b)));
  });

  test('viewProblem names broken invariants', () => {
    expect(viewProblem({ ...v1, ranks: [inc('a'), inc('a'), null] })).toContain('two ranks');
    expect(viewProblem({ ...v1, worldSize: 4 })).toContain('worldSize');
    expect(viewProblem({ ...v1, spares: [inc('a')] })).toContain('spare');
  });
});

describe('properties (fast-check)', () => {
  const peer = fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g');
  const incArb = fc.record({ peerId: peer, bootId: fc.constantFrom('b1', 'b2') });
  const changeArb = fc.record({
    remove: fc.array(incArb, { maxLength: 4 }),
    admit: fc.array(fc.record({ rank: fc.integer({ min: 0, max: 5 }), peerId: peer, bootId: fc.constantFrom('b1', 'b2') }), { maxLength: 4 }),
    addSpares: fc.array(incArb, { maxLength: 4 }),
    close: fc.boolean(),
  });

  test('any rank set round-trips through the hex encoding, in rank order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.array(fc.nat(), { maxLength: 40 }), (size, raw) => {
        const ranks = [...new Set(raw.map((r) => r % size))].sort((x, y) => x - y);
        const m = RankMask.of(size, ranks);
        expect(RankMask.fromHex(size, m.toHex()).toArray()).toEqual(ranks);
        expect(m.toHex()).toBe(ranks.reduce((acc, r) => acc | (1n << BigInt(r)), 0n).toString(16));
      }),
    );
  });

  test('applying any sequence of changes keeps every view invariant', () => {
    fc.assert(
      fc.property(fc.array(changeArb, { maxLength: 8 }), (changes) => {
        let v: View = firstView('m', 1, [inc('a'), inc('b'), inc('c'), inc('d'), inc('e'), inc('f')]);
        for (const c of changes) {
          const next = applyChange(v, c);
          expect(viewProblem(next)).toBeNull();
          expect(next.epoch).toBe(v.closed ? v.epoch : v.epoch + 1);
          v = next;
        }
      }),
    );
  });

  test('the key of a change does not depend on the order of its entries', () => {
    fc.assert(
      fc.property(changeArb, (c) => {
        const shuffled: Change = { ...c, remove: [...c.remove].reverse(), admit: [...c.admit].reverse(), addSpares: [...c.addSpares].reverse() };
        expect(changeKey(shuffled)).toBe(changeKey(c));
      }),
    );
  });
});
