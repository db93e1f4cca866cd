// Deferred join and hot spares in the simulator: joiners enter the mask only after READY, healthy ranks never wait on a warm-up, state is sourced from the lowest healthy member and never from a joiner, spares and returning members race with failures — on fixed scenarios, a seeded campaign, and broken variants the checkers must catch.
import { describe, expect, test } from 'bun:test';
import { joinPlan } from '../../mesh/join.ts';
import { type CoreConfig, type PersistentState, RawNode } from '../../mesh/rawnode.ts';
import { Checkers, SafetyViolation } from '../../mesh/sim/checkers.ts';
import { LIFECYCLE_TICKS_MAX, LIVENESS_TICKS_MAX, converged, runSeed } from '../../mesh/sim/run.ts';
import { type View, firstView } from '../../mesh/view.ts';
import { type Formed, formed, holders, viewOf } from './helpers.ts';

const settle = (f: Formed) => f.cluster.runUntil(() => converged(f.cluster, f.checkers) === null, LIVENESS_TICKS_MAX);

/** Records every join step the checkers see: which peer, for which rank, with which plan. */
function watchJoins(f: Formed): { peer: string; rank: number; epoch: number; kind: string; source: number | null }[] {
  const seen: { peer: string; rank: number; epoch: number; kind: string; source: number | null }[] = [];
  const original = f.checkers.onJoinStep.bind(f.checkers);
  f.checkers.onJoinStep = (peerId, bootId, view, rank, plan, source) => {
    original(peerId, bootId, view, rank, plan, source);
    seen.push({ peer: peerId, rank, epoch: view.epoch, kind: plan.kind === 'adopt' && plan.joiners.includes(rank) ? 'adopt' : plan.kind, source: plan.kind === 'fresh' ? null : plan.source });
  };
  return seen;
}

/** Every node of `peers` that is live and holds a rank is in lifecycle `state`. */
function ranksIn(f: Formed, state: string): boolean {
  return f.cluster.liveNodes().every((n) => n.core!.rank() < 0 || n.core!.lifecycle().state === state);
}

/** Crashes `peer`, waits for the view without it, and starts it again warming up for `warmTicks` (-1: until told). */
function restartWarming(f: Formed, peer: string, warmTicks: number): void {
  f.cluster.crash(peer, 'process');
  const observer = peer === 'p0' ? 'p1' : 'p0';
  const gone = f.cluster.runUntil(() => !viewOf(f, observer).ranks.some((h) => h?.peerId === peer), LIVENESS_TICKS_MAX);
  expect(gone).toBeGreaterThanOrEqual(0);
  f.cluster.start(peer, warmTicks);
}

describe('deferred join', () => {
  test('a joiner stalled in warm-up waits as a spare outside the mask; ranks pause and resume meanwhile; once ready it takes its old rank and adopts from rank 0', () => {
    const f = formed(4, 601);
    const joins = watchJoins(f);
    restartWarming(f, 'p2', -1);
    const boot = f.cluster.node('p2').bootId;
    expect(f.cluster.runUntil(() => viewOf(f, 'p0').spares.some((s) => s.peerId === 'p2' && s.bootId === boot), LIVENESS_TICKS_MAX)).toBeGreaterThanOrEqual(0);
    const mask = viewOf(f, 'p0').ranks.map((h) => h?.peerId ?? null);
    expect(mask).toEqual(['p0', 'p1', null, 'p3']);
    // The ranks' barriers and commands complete while the joiner is still warming up.
    f.cluster.node('p1').core!.command('PAUSE');
    expect(f.cluster.runUntil(() => ranksIn(f, 'PAUSED'), LIFECYCLE_TICKS_MAX)).toBeGreaterThanOrEqual(0);
    f.cluster.node('p3').core!.command('UNPAUSE');
    expect(f.cluster.runUntil(() => ranksIn(f, 'RUNNING'), LIFECYCLE_TICKS_MAX)).toBeGreaterThanOrEqual(0);
    f.cluster.runTicks(100);
    expect(viewOf(f, 'p0').ranks.map((h) => h?.peerId ?? null)).toEqual(mask);
    // READY: admitted by a view change into its remembered rank, then the join step.
    f.cluster.node('p2').readyAtTick = 0;
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    expect(holders(viewOf(f, 'p0'))).toEqual(['p0', 'p1', 'p2', 'p3']);
    expect(f.cluster.runUntil(() => joins.some((j) => j.peer === 'p2' && j.kind === 'adopt'), 100)).toBeGreaterThanOrEqual(0);
    expect(joins.find((j) => j.peer === 'p2' && j.kind === 'adopt')!.source).toBe(0);
  });

  test('when rank 0 is the joiner, state comes from the lowest healthy rank (1), not from rank 0', () => {
    const f = formed(4, 602);
    const joins = watchJoins(f);
    restartWarming(f, 'p0', 20);
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    expect(holders(viewOf(f, 'p1'))).toEqual(['p0', 'p1', 'p2', 'p3']);
    expect(f.cluster.runUntil(() => joins.some((j) => j.peer === 'p0' && j.kind === 'adopt'), 100)).toBeGreaterThanOrEqual(0);
    const adopt = joins.find((j) => j.peer === 'p0' && j.kind === 'adopt')!;
    expect(adopt.source).toBe(1);
    expect(adopt.rank).toBe(0);
  });

  test('a joiner that dies during warm-up costs the ranks nothing: the mask never changes and a command completes', () => {
    const f = formed(5, 603);
    restartWarming(f, 'p4', -1);
    const mask = holders(viewOf(f, 'p0'));
    expect(f.cluster.runUntil(() => viewOf(f, 'p0').spares.some((s) => s.peerId === 'p4'), LIVENESS_TICKS_MAX)).toBeGreaterThanOrEqual(0);
    f.cluster.crash('p4', 'host');
    f.cluster.node('p0').core!.command('PAUSE');
    expect(f.cluster.runUntil(() => ranksIn(f, 'PAUSED'), LIFECYCLE_TICKS_MAX)).toBeGreaterThanOrEqual(0);
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    expect(holders(viewOf(f, 'p0'))).toEqual(mask);
    expect(viewOf(f, 'p0').spares).toEqual([]);
  });

  test('a joiner that dies right after admission is removed like any failed rank', () => {
    const f = formed(5, 604);
    restartWarming(f, 'p3', 10);
    expect(f.cluster.runUntil(() => holders(viewOf(f, 'p0'))[3] === 'p3', LIVENESS_TICKS_MAX)).toBeGreaterThanOrEqual(0);
    f.cluster.crash('p3', 'host');
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    expect(holders(viewOf(f, 'p0'))).toEqual(['p0', 'p1', 'p2', null, 'p4']);
  });

  test('join and failure at the same time do not deadlock, on 40 seeds', () => {
    for (let seed = 610; seed < 650; seed++) {
      const f = formed(5, seed);
      restartWarming(f, 'p1', -1);
      expect(f.cluster.runUntil(() => viewOf(f, 'p0').spares.some((s) => s.peerId === 'p1'), LIVENESS_TICKS_MAX)).toBeGreaterThanOrEqual(0);
      // READY and a crash of another rank in the same tick.
      f.cluster.node('p1').readyAtTick = 0;
      f.cluster.crash(seed % 2 === 0 ? 'p3' : 'p0', seed % 3 === 0 ? 'host' : 'process');
      expect(settle(f)).toBeGreaterThanOrEqual(0);
      const v = f.checkers.latest()!;
      expect(v.ranks[1]?.peerId).toBe('p1');
    }
  });
});

describe('hot spares', () => {
  test('the change that removes a failed rank promotes the ready spare into it in the same step', () => {
    const f = formed(5, 620, {}, 4);
    expect(viewOf(f, 'p0').spares.map((s) => s.peerId)).toEqual(['p4']);
    const before = viewOf(f, 'p0').epoch;
    f.cluster.crash('p1', 'process');
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    // The first view without p1 already has p4 in rank 1: there was never a hole.
    const next = f.checkers.views.get(`1:${before + 1}`)!;
    expect(holders(next)).toEqual(['p0', 'p4', 'p2', 'p3']);
    expect(next.spares).toEqual([]);
  });

  test('a returning member gets its old rank back before a ready spare that comes first in peer order', () => {
    const f = formed(5, 621, {}, 4);
    // The spare restarts and warms up slowly, so it is not ready when ranks free up.
    f.cluster.crash('p4', 'process');
    f.cluster.start('p4', -1);
    restartWarming(f, 'p1', -1);
    restartWarming(f, 'p3', -1);
    expect(f.cluster.runUntil(() => viewOf(f, 'p0').spares.length === 3, LIVENESS_TICKS_MAX)).toBeGreaterThanOrEqual(0);
    expect(holders(viewOf(f, 'p0'))).toEqual(['p0', null, 'p2', null]);
    // p3 (returning to rank 3) and the spare p4 get ready together; p1 still warms up.
    f.cluster.node('p3').readyAtTick = 0;
    f.cluster.node('p4').readyAtTick = 0;
    expect(f.cluster.runUntil(() => holders(viewOf(f, 'p0')).every((h) => h !== null), LIVENESS_TICKS_MAX)).toBeGreaterThanOrEqual(0);
    expect(holders(viewOf(f, 'p0'))).toEqual(['p0', 'p4', 'p2', 'p3']);
    // p1 finishes its warm-up later and waits as a spare.
    f.cluster.node('p1').readyAtTick = 0;
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    expect(viewOf(f, 'p0').spares.map((s) => s.peerId)).toEqual(['p1']);
  });

  test('returning member and spare both ready when the rank frees: the member takes it back', () => {
    const f = formed(5, 622, {}, 4);
    // The spare p4 and the returning p2 get ready in the same tick while rank 2 is empty.
    f.cluster.crash('p4', 'process');
    f.cluster.start('p4', -1);
    restartWarming(f, 'p2', -1);
    expect(f.cluster.runUntil(() => viewOf(f, 'p0').spares.length === 2, LIVENESS_TICKS_MAX)).toBeGreaterThanOrEqual(0);
    f.cluster.node('p4').readyAtTick = 0;
    f.cluster.node('p2').readyAtTick = 0;
    expect(settle(f)).toBeGreaterThanOrEqual(0);
    expect(holders(viewOf(f, 'p0'))).toEqual(['p0', 'p1', 'p2', 'p3']);
    expect(viewOf(f, 'p0').spares.map((s) => s.peerId)).toEqual(['p4']);
  });
});

// Seeded runs of small meshes with crashes, restarts with warm-ups, spares and partitions:
// every join check runs on every event. `bun run sim --seeds N --size 2-8` runs more.
const base = Number(process.env.SEED ?? 7_000_000);
const count = Number(process.env.JOIN_SEEDS ?? 2500);
describe(`${count} seeded join runs from ${base}`, () => {
  const batches = 5;
  for (let b = 0; b < batches; b++) {
    const from = base + Math.floor((b * count) / batches);
    const to = base + Math.floor(((b + 1) * count) / batches);
    test(`seeds ${from}..${to - 1}`, () => {
      const failures: string[] = [];
      let admissions = 0;
      let adoptions = 0;
      for (let seed = from; seed < to; seed++) {
        const r = runSeed({ seed, sizeMin: 2, sizeMax: 7, inspect: (_, c) => ((admissions += c.admissions), (adoptions += c.adoptions)) });
        if (!r.ok) failures.push(`seed ${seed} (${r.size} nodes, worldSize ${r.worldSize}): ${r.failure}\n  replay: bun run sim --seed ${seed} --size 2-7`);
      }
      if (failures.length > 0) console.log(failures.join('\n'));
      expect(failures).toEqual([]);
      // The campaign must actually exercise joins, or it proves nothing.
      expect(admissions).toBeGreaterThan(0);
      expect(adoptions).toBeGreaterThan(0);
    }, 60_000);
  }
});

/** A core that announces READY as soon as it starts, whatever its engine says. */
class EagerReadyCore extends RawNode {
  constructor(config: CoreConfig, restored?: PersistentState) {
    super(config, restored);
    this.markReady();
  }
}

describe('the join checkers can fail', () => {
  test('a core announcing READY before its warm-up ended is caught when it is admitted', () => {
    const f = formed(4, 630, { makeCore: (c, r) => new EagerReadyCore(c, r) });
    f.cluster.crash('p1', 'process');
    f.cluster.runTicks(60);
    f.cluster.start('p1', -1);
    expect(() => f.cluster.runTicks(LIVENESS_TICKS_MAX)).toThrow(/before it reported ready/);
  });

  const view: View = { ...firstView('m', 1, [{ peerId: 'a', bootId: '1' }, { peerId: 'b', bootId: '1' }, { peerId: 'c', bootId: '1' }]), epoch: 3 };
  const withState = (c: Checkers) => {
    // a and b joined in epoch 1 (fresh); c is the joiner of epoch 3.
    const first = { ...view, epoch: 1 };
    c.onJoinStep('a', '1', first, 0, { kind: 'fresh' }, null);
    c.onJoinStep('b', '1', first, 1, { kind: 'fresh' }, null);
  };

  test('state sourced from a joiner is caught', () => {
    const c = new Checkers();
    withState(c);
    expect(() => c.onJoinStep('a', '1', view, 0, { kind: 'adopt', source: 2, joiners: [2] }, { peerId: 'c', bootId: '1' })).toThrow(SafetyViolation);
    expect(() => c.onJoinStep('c', '1', view, 2, { kind: 'adopt', source: 2, joiners: [2] }, { peerId: 'c', bootId: '1' })).toThrow(/no current state|itself/);
  });

  test('a fresh start while a rank holds state is caught; a source that lost its rank is caught', () => {
    const c = new Checkers();
    withState(c);
    expect(() => c.onJoinStep('c', '1', view, 2, { kind: 'fresh' }, null)).toThrow(/fresh although/);
    c.onStateLost('a', '1', { ...view, epoch: 2 });
    expect(() => c.onJoinStep('c', '1', view, 2, { kind: 'adopt', source: 0, joiners: [2] }, { peerId: 'a', bootId: '1' })).toThrow(/no current state/);
    // The healthy source passes.
    c.onJoinStep('c', '1', view, 2, { kind: 'adopt', source: 1, joiners: [2] }, { peerId: 'b', bootId: '1' });
    expect(c.adoptions).toBe(1);
  });
});

describe('joinPlan', () => {
  test('lowest-ranked member with current state, furthest along; joiners and laggards adopt', () => {
    expect(joinPlan([])).toEqual({ kind: 'fresh' });
    expect(joinPlan([{ rank: 0, hasState: false, progress: 0 }, { rank: 2, hasState: false, progress: 0 }])).toEqual({ kind: 'fresh' });
    expect(joinPlan([{ rank: 1, hasState: true, progress: 5 }, { rank: 0, hasState: true, progress: 5 }])).toEqual({ kind: 'steady', source: 0 });
    expect(joinPlan([{ rank: 0, hasState: false, progress: 0 }, { rank: 3, hasState: true, progress: 9 }, { rank: 1, hasState: true, progress: 9 }])).toEqual({ kind: 'adopt', source: 1, joiners: [0] });
    expect(joinPlan([{ rank: 0, hasState: true, progress: 8 }, { rank: 1, hasState: true, progress: 9 }, { rank: 2, hasState: false, progress: 99 }])).toEqual({ kind: 'adopt', source: 1, joiners: [0, 2] });
  });

  test('bad input is refused', () => {
    expect(() => joinPlan([{ rank: 0, hasState: true, progress: 0 }, { rank: 0, hasState: false, progress: 0 }])).toThrow(RangeError);
    expect(() => joinPlan([{ rank: -1, hasState: true, progress: 0 }])).toThrow(RangeError);
    expect(() => joinPlan([{ rank: 0, hasState: true, progress: Number.NaN }])).toThrow(RangeError);
  });
});
