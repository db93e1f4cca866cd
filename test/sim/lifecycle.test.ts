// Lifecycle and barrier scenarios on fixed seeds, with simulated engines under load and every safety checker running: Megatron's lifecycle test, rank death during PAUSING, partitions, barriers.
import { describe, expect, test } from 'bun:test';
import type { Action } from '../../mesh/rawnode.ts';
import type { LifecycleState } from '../../mesh/lifecycle.ts';
import { LIFECYCLE_TICKS_MAX, LIVENESS_TICKS_MAX, converged, lifecycleSettled } from '../../mesh/sim/run.ts';
import { type Formed, formed, holders, viewOf } from './helpers.ts';

type Watched = Formed & { actions: { peer: string; action: Action }[] };

function watched(size: number, seed: number, workRate = 0.3, worldSize = size): Watched {
  const f = formed(size, seed, { workRate }, worldSize);
  const actions: { peer: string; action: Action }[] = [];
  f.cluster.onAction = (peer, action) => actions.push({ peer, action });
  return { ...f, actions };
}

const stateOf = (f: Formed, p: string) => f.cluster.node(p).core!.lifecycle().state;
const live = (f: Formed) => f.cluster.liveNodes().map((n) => n.peerId);
const allIn = (f: Formed, state: LifecycleState, peers = live(f)) => peers.every((p) => stateOf(f, p) === state);
const waitAll = (f: Formed, state: LifecycleState, peers?: string[]) => f.cluster.runUntil(() => allIn(f, state, peers), LIFECYCLE_TICKS_MAX);
/** The states a node passed through in control rounds and closes (not restores or hearsay). */
const path = (f: Formed, p: string) => f.cluster.node(p).core!.lifecycle().transitions.filter((t) => t.via === 'command' || t.via === 'complete' || t.via === 'closed').map((t) => t.state);

describe('Megatron lifecycle test, leader-free', () => {
  test('out-of-order commands are dropped at every rank with the same reason, and nothing changes', () => {
    const f = watched(4, 101);
    const ids = [f.cluster.node('p0').core!.command('UNPAUSE'), f.cluster.node('p1').core!.command('SUSPEND'), f.cluster.node('p2').core!.command('RESUME'), f.cluster.node('p3').core!.command('STOP')];
    f.cluster.runTicks(40);
    expect(allIn(f, 'RUNNING')).toBe(true);
    for (const p of f.peers) {
      const dropped = f.actions.filter((a) => a.peer === p && a.action.kind === 'commandDropped').map((a) => a.action);
      expect(dropped.map((d) => (d as { id: string }).id).sort()).toEqual([...ids].sort());
      for (const d of dropped) expect(d).toMatchObject({ state: 'RUNNING', allowed: ['PAUSE'], reason: expect.stringContaining('allowed: PAUSE') });
      expect(f.cluster.node(p).core!.lifecycle()).toMatchObject({ state: 'RUNNING', version: 0, pending: [] });
    }
  });

  test('a double PAUSE (two issuers, one duplicated id) is harmless: one PAUSING, one PAUSED', () => {
    const f = watched(4, 102);
    // An operator's retry at another node reuses its own id; a default id (<bootId>.<n>) of
    // another incarnation is refused at once, as its peers would refuse it.
    const id = f.cluster.node('p0').core!.command('PAUSE', 'ops-pause-7');
    f.cluster.node('p2').core!.command('PAUSE');
    f.cluster.node('p3').core!.command('PAUSE', id);
    const foreign = f.cluster.node('p2').core!.lifecycle().pending.find((c) => c.id !== id)?.id;
    expect(foreign).toBeDefined();
    expect(() => f.cluster.node('p3').core!.command('PAUSE', foreign)).toThrow(/another node's incarnation/);
    expect(waitAll(f, 'PAUSED')).toBeGreaterThanOrEqual(0);
    f.cluster.node('p1').core!.command('PAUSE');
    f.cluster.runTicks(30);
    for (const p of f.peers) {
      expect(path(f, p)).toEqual(['PAUSING', 'PAUSED']);
      expect(f.cluster.node(p).core!.lifecycle().version).toBe(2);
    }
  });

  test('PAUSE → SUSPEND → RESUME → UNPAUSE under load: every rank passes the same states, in-flight work finishes before PAUSED, queued work runs after', () => {
    const f = watched(4, 103, 0.5);
    f.cluster.runTicks(20);
    const steps: [Parameters<NonNullable<ReturnType<typeof f.cluster.node>['core']>['command']>[0], LifecycleState][] = [['PAUSE', 'PAUSED'], ['SUSPEND', 'SUSPENDED'], ['RESUME', 'PAUSED']];
    for (const [i, [kind, target]] of steps.entries()) {
      f.cluster.node(f.peers[i]!).core!.command(kind);
      expect(waitAll(f, target)).toBeGreaterThanOrEqual(0);
    }
    // Requests kept arriving while paused; they wait in the queue and run after UNPAUSE.
    f.cluster.runTicks(20);
    const queued = f.peers.map((p) => f.cluster.node(p).engine.queued);
    const finished = f.peers.map((p) => f.cluster.node(p).engine.finished);
    expect(queued.some((q) => q > 0)).toBe(true);
    f.cluster.node('p3').core!.command('UNPAUSE');
    expect(waitAll(f, 'RUNNING')).toBeGreaterThanOrEqual(0);
    f.cluster.runTicks(20);
    expect(f.peers.map((p) => f.cluster.node(p).engine.finished).reduce((a, b) => a + b)).toBeGreaterThan(finished.reduce((a, b) => a + b));
    for (const p of f.peers) expect(path(f, p)).toEqual(['PAUSING', 'PAUSED', 'SUSPENDING', 'SUSPENDED', 'RESUMING', 'PAUSED', 'RUNNING']);
  });

  test('STOP from PAUSED closes the mesh: every node reaches STOPPED with the closed view', () => {
    const f = watched(4, 104);
    f.cluster.node('p1').core!.command('PAUSE');
    expect(waitAll(f, 'PAUSED')).toBeGreaterThanOrEqual(0);
    f.cluster.node('p2').core!.command('STOP');
    expect(waitAll(f, 'STOPPED')).toBeGreaterThanOrEqual(0);
    for (const p of f.peers) {
      expect(viewOf(f, p).closed).toBe(true);
      expect(path(f, p)).toEqual(['PAUSING', 'PAUSED', 'STOPPING', 'STOPPED']);
      expect(f.actions.some((a) => a.peer === p && a.action.kind === 'closed')).toBe(true);
    }
  });

  test('a spare takes no part in rounds but learns the state from heartbeats', () => {
    const f = watched(4, 105, 0.3, 3);
    expect(f.cluster.node('p3').core!.phase()).toBe('spare');
    f.cluster.node('p3').core!.command('PAUSE');
    expect(waitAll(f, 'PAUSED')).toBeGreaterThanOrEqual(0);
    expect(f.cluster.node('p3').core!.lifecycle().transitions.at(-1)).toMatchObject({ state: 'PAUSED', via: 'heard' });
    expect(f.cluster.node('p3').core!.lifecycle().pending).toEqual([]);
  });
});

describe('faults during transitions', () => {
  test('a rank whose host dies during PAUSING is removed by a view change and the pause completes over the new mask', () => {
    const f = watched(5, 106, 0.6);
    f.cluster.runTicks(10);
    f.cluster.node('p0').core!.command('PAUSE');
    expect(f.cluster.runUntil(() => stateOf(f, 'p0') === 'PAUSING', 50)).toBeGreaterThanOrEqual(0);
    const epoch = viewOf(f, 'p0').epoch;
    expect(allIn(f, 'PAUSED')).toBe(false);
    f.cluster.crash('p4', 'host');
    const rest = ['p0', 'p1', 'p2', 'p3'];
    expect(waitAll(f, 'PAUSED', rest)).toBeGreaterThanOrEqual(0);
    expect(holders(viewOf(f, 'p0'))).toEqual(['p0', 'p1', 'p2', 'p3', null]);
    for (const p of rest) {
      const paused = f.cluster.node(p).core!.lifecycle().transitions.find((t) => t.state === 'PAUSED')!;
      expect(paused.epoch).toBeGreaterThan(epoch);
    }
  });

  test('2|3 split: PAUSE on the minority side completes nowhere while split; PAUSE on the majority side completes there; after healing all are PAUSED', () => {
    const f = watched(5, 107);
    const minority = ['p0', 'p1'];
    const majority = ['p2', 'p3', 'p4'];
    f.cluster.network.split(minority, majority);
    f.cluster.node('p0').core!.command('PAUSE');
    f.cluster.runTicks(150);
    for (const p of minority) expect(stateOf(f, p)).toBe('RUNNING');
    for (const p of majority) expect(stateOf(f, p)).toBe('RUNNING');
    f.cluster.node('p3').core!.command('PAUSE');
    expect(waitAll(f, 'PAUSED', majority)).toBeGreaterThanOrEqual(0);
    for (const p of minority) expect(stateOf(f, p)).toBe('RUNNING');
    f.cluster.network.heal();
    expect(f.cluster.runUntil(() => converged(f.cluster, f.checkers) === null && lifecycleSettled(f.cluster, f.checkers) === null, LIVENESS_TICKS_MAX)).toBeGreaterThanOrEqual(0);
    expect(allIn(f, 'PAUSED')).toBe(true);
    // The minority's own PAUSE reached the mesh after healing and was a harmless no-op.
    for (const p of f.peers) expect(f.cluster.node(p).core!.lifecycle().version).toBe(2);
  });

  test('PAUSE issued inside a 3|2 split on the majority side completes there and spreads to the minority after healing', () => {
    const f = watched(5, 108);
    f.cluster.network.split(['p3', 'p4'], ['p0', 'p1', 'p2']);
    f.cluster.node('p1').core!.command('PAUSE');
    expect(waitAll(f, 'PAUSED', ['p0', 'p1', 'p2'])).toBeGreaterThanOrEqual(0);
    expect(stateOf(f, 'p3')).toBe('RUNNING');
    f.cluster.network.heal();
    expect(f.cluster.runUntil(() => converged(f.cluster, f.checkers) === null && allIn(f, 'PAUSED'), LIVENESS_TICKS_MAX)).toBeGreaterThanOrEqual(0);
  });
});

describe('barriers', () => {
  test('under 25% loss every rank completes a barrier with the same payloads in rank order', () => {
    const f = watched(4, 109, 0);
    f.cluster.network.faults = { lossRate: 0.25, duplicateRate: 0.1, delayStepsMax: 20 };
    for (const p of f.peers) f.cluster.node(p).core!.arrive('plan', `from-${p}`);
    const results = () => f.actions.filter((a) => a.action.kind === 'barrierComplete' && a.action.name === 'plan');
    expect(f.cluster.runUntil(() => results().length === 4, 200)).toBeGreaterThanOrEqual(0);
    for (const r of results()) expect(r.action).toMatchObject({ seq: 1, ranks: [0, 1, 2, 3], payloads: ['from-p0', 'from-p1', 'from-p2', 'from-p3'] });
    expect(new Set(results().map((r) => r.peer)).size).toBe(4);
  });

  test('a view change aborts an open barrier; re-run in the new epoch it completes over the new mask', () => {
    const f = watched(3, 110, 0);
    f.cluster.node('p0').core!.arrive('join', 'a');
    f.cluster.node('p1').core!.arrive('join', 'b');
    f.cluster.crash('p2');
    f.cluster.runUntil(() => viewOf(f, 'p0').epoch === 2 && viewOf(f, 'p1').epoch === 2, 100);
    for (const p of ['p0', 'p1']) expect(f.actions).toContainEqual({ peer: p, action: { kind: 'barrierAborted', generation: 1, epoch: 1, name: 'join', seq: 1 } });
    expect(f.cluster.node('p0').core!.arrive('join', 'a2')).toBe(1);
    f.cluster.node('p1').core!.arrive('join', 'b2');
    f.cluster.runTicks(20);
    const done = f.actions.filter((a) => a.action.kind === 'barrierComplete' && a.action.name === 'join').map((a) => a.action);
    expect(done).toEqual([0, 1].map(() => ({ kind: 'barrierComplete', generation: 1, epoch: 2, name: 'join', seq: 1, ranks: [0, 1], payloads: ['a2', 'b2'] })));
  });
});

describe('persistence', () => {
  test('the lifecycle survives a restart; a restarted rank rejoins in the agreed state', () => {
    const f = watched(3, 111);
    f.cluster.node('p0').core!.command('PAUSE');
    expect(waitAll(f, 'PAUSED')).toBeGreaterThanOrEqual(0);
    expect(f.cluster.node('p2').stored?.lifecycle).toEqual({ generation: 1, state: 'PAUSED', version: 2 });
    f.cluster.crash('p2');
    f.cluster.start('p2', 0);
    expect(stateOf(f, 'p2')).toBe('PAUSED');
    expect(f.cluster.runUntil(() => converged(f.cluster, f.checkers) === null, LIVENESS_TICKS_MAX)).toBeGreaterThanOrEqual(0);
    f.cluster.node('p2').core!.command('UNPAUSE');
    expect(waitAll(f, 'RUNNING')).toBeGreaterThanOrEqual(0);
  });

  test('state stored before lifecycles existed restores as RUNNING', () => {
    const f = watched(2, 112);
    const stored = f.cluster.node('p1').stored!;
    const { lifecycle: _, ...old } = stored;
    f.cluster.crash('p1');
    f.cluster.node('p1').stored = old;
    f.cluster.start('p1', 0);
    expect(f.cluster.node('p1').core!.lifecycle()).toMatchObject({ state: 'RUNNING', version: 0 });
  });
});
