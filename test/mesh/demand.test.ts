// Demand records (order-independent merges, harmless repeats, completion), the plan payload and gossip encodings with their size bounds, and the plan-round sequencing of PlanRounds.
import { describe, expect, test } from 'bun:test';
import fc from 'fast-check';
import { BARRIER_PAYLOAD_BYTES_MAX } from '../../mesh/barrier.ts';
import {
  DEMAND_MESSAGE_BYTES_MAX,
  DemandBook,
  DemandError,
  type DemandRecord,
  PLAN_BARRIER,
  PLAN_PAYLOAD_PIPELINES_MAX,
  PlanRounds,
  REPORTERS_MAX,
  decodeDemandMessage,
  decodePlanPayload,
  encodeDemandMessage,
  encodePlanPayload,
  mergeRecords,
  parseRecord,
  remainingSteps,
} from '../../mesh/demand.ts';

const base: DemandRecord = { id: 'r1', pipeline: 'p', steps: 100, priority: 0, done: {}, closed: false };

describe('DemandRecord merges', () => {
  const copy = fc.record({
    done: fc.dictionary(fc.constantFrom('n1', 'n2', 'n3', 'n4'), fc.integer({ min: 0, max: 60 })),
    closed: fc.boolean(),
    steps: fc.constantFrom(100, 120),
  });
  const rec = (c: { done: Record<string, number>; closed: boolean; steps: number }): DemandRecord => ({ ...base, ...c });

  test('merging is commutative, associative and idempotent', () => {
    fc.assert(
      fc.property(copy, copy, copy, (a, b, c) => {
        const [x, y, z] = [rec(a), rec(b), rec(c)];
        const canon = (r: DemandRecord) => JSON.stringify({ ...r, done: Object.fromEntries(Object.entries(r.done).sort()) });
        expect(canon(mergeRecords(x, y))).toBe(canon(mergeRecords(y, x)));
        expect(canon(mergeRecords(mergeRecords(x, y), z))).toBe(canon(mergeRecords(x, mergeRecords(y, z))));
        const xx = mergeRecords(x, x);
        expect(canon(mergeRecords(xx, x))).toBe(canon(xx));
      }),
      { numRuns: 300, seed: 3 },
    );
  });

  test('two books that heard the same copies in any order hold the same state', () => {
    fc.assert(
      fc.property(fc.array(copy, { minLength: 1, maxLength: 8 }), fc.integer(), (copies, seed) => {
        const a = new DemandBook();
        const b = new DemandBook();
        for (const c of copies) a.merge(rec(c));
        const shuffled = [...copies].sort((p, q) => ((JSON.stringify(p).length * seed) % 7) - ((JSON.stringify(q).length * seed) % 7));
        for (const c of [...shuffled, ...shuffled]) b.merge(rec(c));
        expect(b.digest()).toBe(a.digest());
      }),
      { numRuns: 200, seed: 4 },
    );
  });
});

describe('DemandBook', () => {
  test('open, report, complete: progress reaching the target closes the record', () => {
    const book = new DemandBook();
    expect(book.open({ id: 'a1', pipeline: 'a', steps: 10 }).created).toBe(true);
    expect(book.open({ id: 'a1', pipeline: 'a', steps: 99 }).created).toBe(false);
    book.report('a1', 'n1', 4);
    book.report('a1', 'n2', 3);
    expect(book.pipelineDemand()).toEqual([{ pipeline: 'a', remaining: 3, priority: 0 }]);
    const { record } = book.report('a1', 'n1', 5);
    expect(record.closed).toBe(true);
    expect(remainingSteps(record)).toBe(0);
    expect(book.pipelineDemand()).toEqual([]);
  });

  test('closing twice and reporting progress for a closed record are harmless', () => {
    const book = new DemandBook();
    book.open({ id: 'x', pipeline: 'p', steps: 5 });
    const digest = book.digest();
    expect(book.close('x').changed).toBe(true);
    const closed = book.digest();
    expect(closed).not.toBe(digest);
    expect(book.close('x').changed).toBe(false);
    expect(book.report('x', 'n1', 2).changed).toBe(false);
    expect(book.digest()).toBe(closed);
  });

  test('a close heard from elsewhere wins over a later progress report', () => {
    const book = new DemandBook();
    book.open({ id: 'x', pipeline: 'p', steps: 5 });
    book.merge({ ...base, id: 'x', pipeline: 'p', steps: 5, closed: true });
    expect(book.report('x', 'n1', 1).changed).toBe(false);
    expect(book.get('x')?.closed).toBe(true);
  });

  test('bad input is refused with a typed error and changes nothing', () => {
    const book = new DemandBook();
    book.open({ id: 'ok', pipeline: 'p', steps: 1 });
    const before = book.digest();
    const cases: [() => unknown, string][] = [
      [() => book.open({ id: 'bad id', pipeline: 'p', steps: 1 }), 'invalid'],
      [() => book.open({ id: 'y', pipeline: 'p', steps: 0 }), 'invalid'],
      [() => book.open({ id: 'y', pipeline: 'p', steps: 1, priority: -1 }), 'invalid'],
      [() => book.report('missing', 'n1', 1), 'unknown-record'],
      [() => book.report('ok', 'n1', -2), 'invalid'],
      [() => book.report('ok', 'a tag', 1), 'invalid'],
      [() => book.close('missing'), 'unknown-record'],
    ];
    for (const [fn, code] of cases) {
      let caught: unknown;
      try {
        fn();
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(DemandError);
      expect((caught as DemandError).code).toBe(code as DemandError['code']);
    }
    expect(book.digest()).toBe(before);
    expect(book.merge({ ...base, id: 'ok', steps: -3 })).toBeNull();
  });

  test(`progress counts from at most ${REPORTERS_MAX} nodes per record`, () => {
    const book = new DemandBook();
    book.open({ id: 'x', pipeline: 'p', steps: 1000 });
    for (let i = 0; i < REPORTERS_MAX; i++) book.report('x', `n${i}`, 1);
    expect(() => book.report('x', 'late', 1)).toThrow(DemandError);
    expect(book.report('x', 'n0', 1).changed).toBe(true);
  });
});

describe('encodings', () => {
  const longName = (i: number) => `${String(i).padStart(2, '0')}${'x'.repeat(62)}`;

  test('a plan payload with many long pipeline names stays within the barrier limit and says what it dropped', () => {
    const demand = Array.from({ length: 40 }, (_, i) => ({ pipeline: longName(i), remaining: 2 ** 31 - 1 - i, priority: 1000 }));
    const text = encodePlanPayload(longName(0), demand, 'ffffffff');
    expect(new TextEncoder().encode(text).byteLength).toBeLessThanOrEqual(BARRIER_PAYLOAD_BYTES_MAX);
    const p = decodePlanPayload(text)!;
    expect(p.demand.length).toBeLessThanOrEqual(PLAN_PAYLOAD_PIPELINES_MAX);
    expect(p.dropped).toBe(40 - p.demand.length);
    // The largest remaining work comes first (serving order).
    expect(p.demand[0]?.pipeline).toBe(longName(0));
  });

  test('a record message at every size bound stays under the gossip limit and round-trips', () => {
    const done = Object.fromEntries(Array.from({ length: REPORTERS_MAX }, (_, i) => [`t${String(i).padStart(15, '0')}`, 2 ** 31 - 1]));
    const record: DemandRecord = { id: 'i'.repeat(40), pipeline: 'p'.repeat(64), steps: 2 ** 31 - 1, priority: 1000, done, closed: false };
    const bytes = encodeDemandMessage({ type: 'record', meshId: 'm'.repeat(64), record });
    expect(bytes.byteLength).toBeLessThan(DEMAND_MESSAGE_BYTES_MAX);
    expect(decodeDemandMessage(bytes)).toEqual({ ok: true, msg: { type: 'record', meshId: 'm'.repeat(64), record } });
    const summary = { type: 'summary' as const, meshId: 'm', digest: '0123abcd', records: 3, plan: { generation: 1, epoch: 2, seq: 3 } };
    expect(decodeDemandMessage(encodeDemandMessage(summary))).toEqual({ ok: true, msg: summary });
  });

  test('malformed messages and records are refused with a reason', () => {
    const enc = (x: unknown) => new TextEncoder().encode(JSON.stringify(x));
    for (const bad of [enc({ v: 1, t: 'record', m: 'm', r: { ...base, steps: 0 } }), enc({ v: 2, t: 'summary' }), new Uint8Array([0xff, 0x00]), new Uint8Array(2000)]) {
      const r = decodeDemandMessage(bad);
      expect(r.ok).toBe(false);
    }
    expect(parseRecord({ ...base, done: { 'a b': 1 } })).toBeNull();
    expect(parseRecord(base)).toEqual(base);
  });
});

describe('PlanRounds', () => {
  const demand = [{ pipeline: 'a', remaining: 10, priority: 0 }];
  const result = (seq: number, payloads: string[], epoch = 1) => ({ generation: 1, epoch, name: PLAN_BARRIER, seq, ranks: payloads.map((_, i) => i), payloads });

  test('a new epoch runs round 1 at once; the next round waits for the previous one; rebalance is rate-limited', () => {
    const r = new PlanRounds(10);
    expect(r.next(0, [0, 1], demand, () => false)).toBeNull(); // no view yet
    r.setView(1, 1, 0, 0);
    expect(r.next(0, [0, 1], demand, () => false)).toBe(1);
    r.arrived(1);
    expect(r.next(1, [0, 1], demand, () => true)).toBeNull(); // round 1 still open here
    const p = encodePlanPayload(null, demand, 'd');
    const agreed = r.completed(2, result(1, [p, p]))!;
    expect(agreed.assignment).toEqual([
      [0, 'a'],
      [1, 'a'],
    ]);
    expect(r.serving()).toBe('a');
    // Balanced: no round wanted; another rank starting round 2 is joined.
    expect(r.next(3, [0, 1], demand, () => false)).toBeNull();
    expect(r.next(3, [0, 1], demand, (seq) => seq === 2)).toBe(2);
    // A new pipeline without a rank is starving: its round starts at once, whatever the interval.
    const more = [...demand, { pipeline: 'b', remaining: 10, priority: 0 }];
    expect(r.next(5, [0, 1], more, () => false)).toBe(2);
  });

  test('a new view waits settleTicks for its first round unless a pipeline starves or a peer started it', () => {
    const idle = [{ pipeline: 'a', remaining: 0, priority: 0 }];
    const r = new PlanRounds(10, 20);
    expect(r.settlesAt()).toBeNull(); // no view
    r.setView(1, 1, 0, 100);
    expect(r.settlesAt()).toBe(120);
    expect(r.next(100, [0, 1], idle, () => false)).toBeNull();
    expect(r.next(119, [0, 1], idle, () => false)).toBeNull();
    expect(r.next(110, [0, 1], idle, (seq) => seq === 1)).toBe(1); // another rank started it
    expect(r.next(120, [0, 1], idle, () => false)).toBe(1);
    // Taking the same view again does not restart the wait; a new epoch does.
    r.setView(1, 1, 0, 150);
    expect(r.next(120, [0, 1], idle, () => false)).toBe(1);
    r.setView(1, 2, 0, 150);
    expect(r.next(160, [0, 1], idle, () => false)).toBeNull();
    // Pipeline a has work and no rank in the last plan (there is none): the round is urgent.
    expect(r.next(160, [0, 1], demand, () => false)).toBe(1);
    // The plan gives rank 0 to a and rank 1 to b. A view that keeps both ranks waits; one in
    // which rank 1 left (rank 2 joined) leaves b without a rank, so its round starts at once.
    const both = [...demand, { pipeline: 'b', remaining: 10, priority: 0 }];
    const p = encodePlanPayload(null, both, 'd');
    r.arrived(1);
    expect(r.settlesAt()).toBeNull(); // arrived: the wait is over
    expect(r.completed(170, result(1, [p, p], 2))?.assignment).toEqual([
      [0, 'a'],
      [1, 'b'],
    ]);
    r.setView(1, 3, 0, 200);
    expect(r.next(200, [0, 1], both, () => false)).toBeNull();
    expect(r.next(220, [0, 1], both, () => false)).toBe(1);
    r.setView(1, 4, 0, 300);
    expect(r.next(300, [0, 2], both, () => false)).toBe(1);
  });

  test('a gap the planner cannot close (rounding) starts no round; drift it can close does, rate-limited', () => {
    const r = new PlanRounds(10);
    r.setView(1, 1, 0, 0);
    r.arrived(1);
    const even = [
      { pipeline: 'a', remaining: 10, priority: 0 },
      { pipeline: 'b', remaining: 10, priority: 0 },
    ];
    const p = encodePlanPayload(null, even, 'd');
    r.completed(0, result(1, [p, p, p]));
    expect(r.plan()?.assignment.map(([, x]) => x)).toEqual(['a', 'b', 'a']);
    // a holds 67% of ranks for 50% of the work: 17 points, but the planner would not move a rank.
    expect(r.next(10, [0, 1, 2], even, () => false)).toBeNull();
    // Drift the planner would fix starts a round, but not before minIntervalTicks.
    const drifted = [even[0]!, { ...even[1]!, remaining: 40 }];
    expect(r.next(5, [0, 1, 2], drifted, () => false)).toBeNull();
    expect(r.next(10, [0, 1, 2], drifted, () => false)).toBe(2);
  });

  test('a rank left serving a finished pipeline while another has work, or the last demand ending, starts a round at once', () => {
    const r = new PlanRounds(1000);
    r.setView(1, 1, 0, 0);
    r.arrived(1);
    const both = [
      { pipeline: 'a', remaining: 10, priority: 0 },
      { pipeline: 'b', remaining: 10, priority: 0 },
    ];
    const p = encodePlanPayload(null, both, 'd');
    r.completed(0, result(1, [p, p]));
    expect(r.next(1, [0, 1], both, () => false)).toBeNull();
    expect(r.next(1, [0, 1], [{ ...both[0]!, remaining: 0 }, both[1]!], () => false)).toBe(2);
    // The last demand ending also starts a round at once: the agreed inputs still list it.
    expect(r.next(1, [0, 1], [{ ...both[0]!, remaining: 0 }, { ...both[1]!, remaining: 0 }], () => false)).toBe(2);
  });

  test('results of another barrier or another epoch are not plans; a node without a rank runs no rounds but adopts newer plans', () => {
    const r = new PlanRounds(0);
    r.setView(1, 2, -1, 0);
    expect(r.next(0, [0], demand, () => true)).toBeNull();
    expect(r.completed(0, { ...result(1, ['x']), name: 'other' })).toBeNull();
    expect(r.completed(0, result(1, ['x'], 1))).toBeNull();
    expect(r.adopt({ generation: 1, epoch: 2, seq: 4, assignment: [[0, 'a']], demand })).toBe(true);
    expect(r.adopt({ generation: 1, epoch: 2, seq: 3, assignment: [[0, 'b']], demand })).toBe(false);
    expect(r.plan()?.seq).toBe(4);
    expect(r.serving()).toBeNull();
  });
});
