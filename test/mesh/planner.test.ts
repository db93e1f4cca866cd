// The gap-ratio planner as tables: rlix's two-pipeline cases, never-cleared records, shrink before expand, bounds, at least one rank per open pipeline, deterministic ties, the rebalance trigger and bad input.
import { describe, expect, test } from 'bun:test';
import fc from 'fast-check';
import { DemandBook, combinePayloads, encodePlanPayload } from '../../mesh/demand.ts';
import { PLAN_ACTIVATIONS_MAX, PLAN_ITERATIONS_MAX, type PipelineDemand, PlannerError, plan, rebalanceWanted, shareGapPoints } from '../../mesh/planner.ts';

const d = (pipeline: string, remaining: number, priority = 0): PipelineDemand => ({ pipeline, remaining, priority });
const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const cur = (entries: Record<number, string | null> = {}) => new Map(Object.entries(entries).map(([r, p]) => [Number(r), p]));
const counts = (assignment: readonly (readonly [number, string | null])[]) => {
  const out: Record<string, number> = {};
  for (const [, p] of assignment) out[p ?? '-'] = (out[p ?? '-'] ?? 0) + 1;
  return out;
};

describe('plan: assignment tables', () => {
  const cases: { name: string; ranks: number; demand: PipelineDemand[]; current?: Record<number, string | null>; want: Record<string, number> }[] = [
    // rlix's smoke: 4 inference workers, two rollout pipelines with equal demand.
    { name: 'rlix two pipelines, equal demand, nothing assigned yet', ranks: 4, demand: [d('a', 100), d('b', 100)], want: { a: 2, b: 2 } },
    // B-13: the first pipeline took every worker; the second must still get its share.
    { name: 'rlix B-13: a holds every rank when b signals', ranks: 4, demand: [d('a', 100), d('b', 100)], current: { 0: 'a', 1: 'a', 2: 'a', 3: 'a' }, want: { a: 2, b: 2 } },
    { name: 'uneven demand 3:1', ranks: 4, demand: [d('a', 300), d('b', 100)], want: { a: 3, b: 1 } },
    { name: 'tiny demand still gets one rank', ranks: 8, demand: [d('a', 10_000), d('b', 1)], want: { a: 7, b: 1 } },
    { name: 'four pipelines on eight ranks', ranks: 8, demand: [d('a', 400), d('b', 200), d('c', 100), d('d', 100)], want: { a: 4, b: 2, c: 1, d: 1 } },
    { name: 'ranks = pipelines: one each', ranks: 3, demand: [d('a', 1000), d('b', 1), d('c', 1)], want: { a: 1, b: 1, c: 1 } },
    { name: 'fewer ranks than pipelines: priority, then remaining, then name', ranks: 2, demand: [d('a', 5), d('b', 50), d('c', 1, 3)], want: { c: 1, b: 1 } },
    { name: 'one pipeline takes every rank', ranks: 5, demand: [d('a', 7)], want: { a: 5 } },
    { name: 'a completed pipeline releases its ranks to the open one', ranks: 4, demand: [d('a', 0), d('b', 50)], current: { 0: 'a', 1: 'a', 2: 'b', 3: 'b' }, want: { b: 4 } },
    { name: 'no demand: ranks keep what they serve', ranks: 3, demand: [d('a', 0)], current: { 0: 'a', 1: null, 2: 'b' }, want: { a: 1, '-': 1, b: 1 } },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const r = plan({ ranks: range(c.ranks), demand: c.demand, current: cur(c.current) });
      expect(counts(r.assignment)).toEqual(c.want);
      expect(r.assignment.map(([rank]) => rank)).toEqual(range(c.ranks));
    });
  }

  test('the B-13 case shrinks a before it expands b, and moves only what it must', () => {
    const r = plan({ ranks: range(4), demand: [d('a', 100), d('b', 100)], current: cur({ 0: 'a', 1: 'a', 2: 'a', 3: 'a' }) });
    expect(r.shrinks).toEqual([
      { rank: 3, from: 'a', to: null },
      { rank: 2, from: 'a', to: null },
    ]);
    expect(r.expands).toEqual([
      { rank: 2, from: 'a', to: 'b' },
      { rank: 3, from: 'a', to: 'b' },
    ]);
    // Ranks 0 and 1 keep serving a: no needless offload.
    expect(r.assignment).toEqual([
      [0, 'a'],
      [1, 'a'],
      [2, 'b'],
      [3, 'b'],
    ]);
  });

  test('a plan already at target moves nothing', () => {
    const r = plan({ ranks: range(4), demand: [d('a', 300), d('b', 100)], current: cur({ 0: 'b', 1: 'a', 2: 'a', 3: 'a' }) });
    expect(r.shrinks).toEqual([]);
    expect(r.expands).toEqual([]);
  });

  test('ranks of the mask with holes keep their numbers', () => {
    const r = plan({ ranks: [0, 2, 5], demand: [d('x', 2), d('y', 1)], current: cur() });
    expect(r.assignment.map(([rank]) => rank)).toEqual([0, 2, 5]);
    expect(counts(r.assignment)).toEqual({ x: 2, y: 1 });
  });

  test('ties are broken by name, whatever the input order', () => {
    const one = plan({ ranks: range(3), demand: [d('b', 10), d('a', 10)], current: cur() });
    const two = plan({ ranks: range(3), demand: [d('a', 10), d('b', 10)], current: cur() });
    expect(one).toEqual(two);
    expect(counts(one.assignment)).toEqual({ a: 2, b: 1 });
  });

  test('no ranks: an empty plan', () => {
    expect(plan({ ranks: [], demand: [d('a', 5)], current: cur() }).assignment).toEqual([]);
  });
});

describe('plan round inputs: never-cleared records, double counting, lagging ranks', () => {
  test('a record whose progress reached its target counts nothing, even if nobody closed it', () => {
    // rlix's open issue: an entry never cleared kept counting. Here remaining is computed
    // from progress, so a finished record gives its pipeline no demand and no ranks.
    const payload = encodePlanPayload('stale', [d('stale', 0), d('live', 40)], 'x');
    const { demand } = combinePayloads([0, 1], [payload, payload]);
    expect(demand).toEqual([d('live', 40)]);
    const r = plan({ ranks: [0, 1], demand, current: cur({ 0: 'stale', 1: 'stale' }) });
    expect(counts(r.assignment)).toEqual({ live: 2 });
  });

  test('one pipeline reported by every rank counts once (the largest report), not once per rank', () => {
    const a = encodePlanPayload(null, [d('p', 30), d('q', 10)], 'x');
    const b = encodePlanPayload(null, [d('p', 20), d('q', 10)], 'y');
    const { demand } = combinePayloads([0, 1, 2], [a, b, b]);
    expect(demand).toEqual([d('p', 30), d('q', 10)]);
  });

  test('the rank that heard most about a pipeline decides it: progress and closes are not undone by a rank that lags', () => {
    // Rank 0 heard 30 steps of progress (version 32); rank 1 has not (version 2, remaining 100).
    const ahead = encodePlanPayload(null, [{ ...d('p', 70), version: 32 }, { ...d('gone', 0), version: 9 }], 'x');
    const behind = encodePlanPayload(null, [{ ...d('p', 100), version: 2 }, { ...d('gone', 50), version: 4 }], 'y');
    for (const payloads of [
      [ahead, behind],
      [behind, ahead],
    ]) {
      const { demand } = combinePayloads([0, 1], payloads);
      // 'gone' was closed at rank 0: it has no demand, although rank 1 still counts 50 steps.
      expect(demand).toEqual([d('p', 70)]);
    }
  });

  test('a book reports pipelines with work in serving order, then the ones that just ended, with growing versions', () => {
    const book = new DemandBook();
    book.open({ id: 'a1', pipeline: 'a', steps: 10 });
    book.open({ id: 'b1', pipeline: 'b', steps: 50, priority: 1 });
    book.open({ id: 'c1', pipeline: 'c', steps: 5 });
    const before = book.pipelineViews();
    book.report('a1', 'n', 4);
    book.close('c1');
    const after = book.pipelineViews();
    expect(after.map((v) => [v.pipeline, v.remaining])).toEqual([
      ['b', 50],
      ['a', 6],
      ['c', 0],
    ]);
    const version = (views: typeof after, name: string) => views.find((v) => v.pipeline === name)?.version ?? 0;
    expect(version(after, 'a')).toBeGreaterThan(version(before, 'a'));
    expect(version(after, 'c')).toBeGreaterThan(version(before, 'c'));
    expect(version(after, 'b')).toBe(version(before, 'b'));
  });

  test('a malformed payload counts as a rank serving nothing with no demand, the same everywhere', () => {
    const { current, demand } = combinePayloads([0, 1], ['{"nope":1}', encodePlanPayload('p', [d('p', 3)], 'z')]);
    expect([...current]).toEqual([
      [0, null],
      [1, 'p'],
    ]);
    expect(demand).toEqual([d('p', 3)]);
  });
});

describe('plan: properties', () => {
  const arb = fc.record({
    ranks: fc.integer({ min: 0, max: 40 }),
    demand: fc.uniqueArray(fc.record({ pipeline: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'), remaining: fc.integer({ min: 0, max: 10_000 }), priority: fc.integer({ min: 0, max: 3 }) }), { selector: (x) => x.pipeline, maxLength: 8 }),
    current: fc.array(fc.constantFrom<string | null>(null, 'a', 'b', 'c', 'z'), { maxLength: 40 }),
  });

  test('every open pipeline gets a rank when ranks ≥ open pipelines; every rank serves open work; bounded; deterministic', () => {
    fc.assert(
      fc.property(arb, ({ ranks, demand, current }) => {
        const inputs = { ranks: range(ranks), demand, current: new Map(current.map((p, i) => [i, p] as const)) };
        const r = plan(inputs);
        const open = demand.filter((x) => x.remaining > 0);
        const c = counts(r.assignment);
        if (ranks >= open.length) for (const p of open) expect(c[p.pipeline] ?? 0).toBeGreaterThanOrEqual(1);
        if (open.length > 0) for (const [, p] of r.assignment) expect(open.some((x) => x.pipeline === p)).toBe(true);
        // Shrink before expand: every rank that changes hands was released first.
        for (const e of r.expands) if (e.from !== null) expect(r.shrinks.some((s) => s.rank === e.rank)).toBe(true);
        expect(r.iterations).toBeLessThanOrEqual(PLAN_ITERATIONS_MAX);
        expect(r.expands.length).toBeLessThanOrEqual(PLAN_ACTIVATIONS_MAX);
        // Targets sum to the ranks when any pipeline is open.
        if (open.length > 0 && ranks > 0) expect([...r.targets.values()].reduce((s, t) => s + t, 0)).toBe(ranks);
        expect(plan({ ...inputs, demand: [...demand].reverse() })).toEqual(r);
      }),
      { numRuns: 400, seed: 8 },
    );
  });

  test('with two or more ranks per open pipeline, shares stay within one rank of the exact share', () => {
    fc.assert(
      fc.property(arb, ({ ranks, demand }) => {
        const open = demand.filter((x) => x.remaining > 0);
        if (open.length === 0 || ranks < 2 * open.length) return;
        const r = plan({ ranks: range(ranks), demand, current: new Map() });
        const total = open.reduce((s, x) => s + x.remaining, 0);
        const c = counts(r.assignment);
        for (const p of open) expect(Math.abs((c[p.pipeline] ?? 0) - (p.remaining / total) * ranks)).toBeLessThan(2);
      }),
      { numRuns: 400, seed: 9 },
    );
  });
});

describe('rebalanceWanted and shareGapPoints', () => {
  test('table', () => {
    const cases: [string, number, PipelineDemand[], Record<number, string | null>, boolean][] = [
      ['open pipeline without a rank', 4, [d('a', 10), d('b', 10)], { 0: 'a', 1: 'a', 2: 'a', 3: 'a' }, true],
      ['balanced', 4, [d('a', 10), d('b', 10)], { 0: 'a', 1: 'a', 2: 'b', 3: 'b' }, false],
      ['within 10 points (a has 50% of ranks, 55% of work)', 4, [d('a', 55), d('b', 45)], { 0: 'a', 1: 'a', 2: 'b', 3: 'b' }, false],
      ['beyond 10 points', 4, [d('a', 70), d('b', 30)], { 0: 'a', 1: 'a', 2: 'b', 3: 'b' }, true],
      ['ranks serve a finished pipeline', 2, [d('a', 10)], { 0: 'a', 1: 'old' }, true],
      ['no demand at all', 2, [], { 0: 'a', 1: null }, false],
      ['no ranks', 0, [d('a', 1)], {}, false],
    ];
    for (const [name, ranks, demand, current, want] of cases) expect([name, rebalanceWanted(range(ranks), demand, cur(current))]).toEqual([name, want]);
  });

  test('shareGapPoints measures the worst pipeline', () => {
    expect(shareGapPoints(range(4), [d('a', 75), d('b', 25)], cur({ 0: 'a', 1: 'a', 2: 'b', 3: 'b' }))).toBeCloseTo(25);
    expect(shareGapPoints(range(4), [d('a', 75), d('b', 25)], cur({ 0: 'a', 1: 'a', 2: 'a', 3: 'b' }))).toBeCloseTo(0);
  });
});

describe('plan: bad input is refused and changes nothing', () => {
  const bad: [string, Parameters<typeof plan>[0], RegExp][] = [
    ['duplicate pipeline', { ranks: [0], demand: [d('a', 1), d('a', 2)], current: cur() }, /listed twice/],
    ['negative remaining', { ranks: [0], demand: [d('a', -1)], current: cur() }, /remaining work/],
    ['fractional priority', { ranks: [0], demand: [d('a', 1, 0.5)], current: cur() }, /priority/],
    ['bad name', { ranks: [0], demand: [d('a b', 1)], current: cur() }, /pipeline name/],
    ['unsorted ranks', { ranks: [1, 0], demand: [], current: cur() }, /ascending/],
    ['negative rank', { ranks: [-1], demand: [], current: cur() }, /non-negative/],
  ];
  for (const [name, inputs, message] of bad) {
    test(name, () => {
      expect(() => plan(inputs)).toThrow(PlannerError);
      expect(() => plan(inputs)).toThrow(message);
    });
  }
});
