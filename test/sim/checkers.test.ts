// The simulator's checkers can fail: each catches a deliberately broken core or an injected fault, and passes a healthy run.
import { describe, expect, test } from 'bun:test';
import { type CoreConfig, type PersistentState, RawNode } from '../../mesh/rawnode.ts';
import { Checkers, SafetyViolation } from '../../mesh/sim/checkers.ts';
import { LIFECYCLE_TICKS_MAX, converged, lifecycleSettled } from '../../mesh/sim/run.ts';
import type { BarrierResult } from '../../mesh/barrier.ts';
import { applyChange, firstView } from '../../mesh/view.ts';
import { formDigest } from '../../mesh/forming.ts';
import type { Message } from '../../mesh/wire.ts';
import { formed, viewOf } from './helpers.ts';

/** A core that commits any change it hears a single vote for: no quorum at all. */
class NoQuorumCore extends RawNode {
  override step(from: string, msg: Message): void {
    super.step(from, msg);
    if (msg.body.type === 'vote' && msg.epoch === this.view()?.epoch) (this as unknown as { commit(c: unknown, a: boolean): void }).commit(msg.body.change, true);
  }
}

/** A core that claims the rank its peer held before, whatever its incarnation. */
class StaleClaimCore extends RawNode {
  override rank(): number {
    return this.view()?.ranks.findIndex((h) => h?.peerId === this.config.self) ?? -1;
  }
}

/** A core that reports every rank as active in its mask. */
class FullMaskCore extends RawNode {
  override maskHex(): string {
    const size = this.view()?.worldSize ?? 0;
    return size === 0 ? '0' : ((1n << BigInt(size)) - 1n).toString(16);
  }
}

/** A core that resolves each control round as if every rank had sent its own payload. */
class OwnPayloadCore extends RawNode {
  constructor(config: CoreConfig, restored?: PersistentState) {
    super(config, restored);
    const self = this as unknown as { controlRoundDone(r: BarrierResult): void };
    const resolve = self.controlRoundDone.bind(this);
    self.controlRoundDone = (r) => {
      const mine = r.payloads[r.ranks.indexOf(this.rank())]!;
      resolve({ ...r, payloads: r.payloads.map(() => mine) });
    };
  }
}

const make = (Core: typeof RawNode) => (config: CoreConfig, restored: PersistentState | undefined) => new Core(config, restored);

describe('each checker catches what it guards', () => {
  test('agreement: two different views for one (generation, epoch)', () => {
    const c = new Checkers();
    const inc = (p: string) => ({ peerId: p, bootId: 'b' });
    c.onSend('a', { meshId: 'm', generation: 1, view: null, rememberedRank: -1, acceptor: null, form: { generation: 1, round: 0, vote: { value: [inc('a')] } } }, { v: 1, meshId: 'm', generation: 1, epoch: 0, body: { type: 'form', bootId: 'b', worldSize: 1, round: 0, digest: formDigest([inc('a')]) } });
    c.onCommit('a', firstView('m', 1, [inc('a')]));
    expect(() => c.onCommit('b', firstView('m', 1, [inc('b')]))).toThrow(/agreement/);
  });

  test('quorum: a core that commits on one vote is caught', () => {
    const f = formed(5, 41, { makeCore: make(NoQuorumCore) });
    f.cluster.crash('p4');
    expect(() => f.cluster.runTicks(100)).toThrow(/quorum/);
  });

  test('quorum / minority: a forged decision delivered inside a minority partition is caught', () => {
    const f = formed(5, 42);
    f.cluster.network.split(['p0', 'p1'], ['p2', 'p3', 'p4']);
    f.cluster.runTicks(5);
    const v = viewOf(f, 'p0');
    const forged: Message = { v: 1, meshId: 'scenario', generation: v.generation, epoch: v.epoch, body: { type: 'decide', change: { remove: v.ranks.slice(2).map((h) => h!), admit: [], addSpares: [], close: false } } };
    f.cluster.inject('p1', 'p0', forged);
    expect(() => f.cluster.runTicks(2)).toThrow(SafetyViolation);
  });

  test('persist before send: a driver whose storage drops writes is caught', () => {
    expect(() => formed(3, 43, { forgetfulStorage: true })).toThrow(/persist before send/);
  });

  test('no rank held by two incarnations: a restarted core claiming its old rank is caught', () => {
    const f = formed(3, 44, { makeCore: make(StaleClaimCore) });
    f.cluster.crash('p1');
    f.cluster.runTicks(1);
    expect(() => f.cluster.start('p1', 0)).toThrow(/claims rank 1/);
  });

  test('mask consistency: a core that reports a wrong mask is caught once a rank is empty', () => {
    const f = formed(3, 45, { makeCore: make(FullMaskCore) });
    f.cluster.crash('p2');
    expect(() => f.cluster.runTicks(100)).toThrow(/mask/);
  });

  test('liveness: a partition that never heals is reported as no convergence', () => {
    const f = formed(5, 46);
    f.cluster.network.split(['p0', 'p1'], ['p2', 'p3', 'p4']);
    f.cluster.runTicks(50);
    expect(f.cluster.runUntil(() => converged(f.cluster, f.checkers) === null, 200)).toBe(-1);
    expect(converged(f.cluster, f.checkers)).toMatch(/holds/);
  });

  test('a healthy core passes the same checks', () => {
    const f = formed(5, 47);
    f.cluster.crash('p4');
    f.cluster.runTicks(100);
    expect(f.checkers.commits).toBe(2);
    expect(applyChange(f.checkers.views.get('1:1')!, { remove: [{ peerId: 'p4', bootId: f.cluster.node('p4').bootId }], admit: [], addSpares: [], close: false })).toEqual(f.checkers.views.get('1:2')!);
  });

  test('lifecycle: a core that trusts only its own control payload lets ranks pass different states', () => {
    const f = formed(3, 48, { makeCore: make(OwnPayloadCore) });
    f.cluster.node('p0').core!.command('PAUSE');
    expect(f.cluster.runUntil(() => f.peers.every((p) => f.cluster.node(p).core!.lifecycle().state === 'PAUSED'), 100)).toBeGreaterThanOrEqual(0);
    // Two conflicting commands issued at once at two ranks: each applies its own.
    f.cluster.node('p1').core!.command('UNPAUSE');
    f.cluster.node('p2').core!.command('SUSPEND');
    expect(() => f.cluster.runTicks(50)).toThrow(/lifecycle: in 1:1 .* holds version 3/);
  });

  test('lifecycle: the same conflicting commands on a healthy core give every rank one state', () => {
    const f = formed(3, 48);
    f.cluster.node('p0').core!.command('PAUSE');
    expect(f.cluster.runUntil(() => f.peers.every((p) => f.cluster.node(p).core!.lifecycle().state === 'PAUSED'), 100)).toBeGreaterThanOrEqual(0);
    f.cluster.node('p1').core!.command('UNPAUSE');
    f.cluster.node('p2').core!.command('SUSPEND');
    f.cluster.runTicks(50);
    const states = f.peers.map((p) => f.cluster.node(p).core!.lifecycle());
    expect(new Set(states.map((l) => `${l.state}/${l.version}`)).size).toBe(1);
    expect(f.checkers.lifecycleSteps).toBeGreaterThanOrEqual(9);
  });

  test('lifecycle: a step that skips a state is caught', () => {
    const c = new Checkers();
    c.onLifecycle('a', 'b', { kind: 'lifecycle', state: 'RUNNING', previous: 'RUNNING', version: 0, generation: 1, epoch: 1, via: 'restore' });
    expect(() => c.onLifecycle('a', 'b', { kind: 'lifecycle', state: 'PAUSED', previous: 'RUNNING', version: 1, generation: 1, epoch: 1, via: 'command' })).toThrow(/not a legal command/);
  });

  test('drain: an engine that reports drained with work in flight is caught when the pause completes', () => {
    const f = formed(4, 49, { workRate: 0.8, drainRule: () => true });
    f.cluster.runTicks(10);
    f.cluster.node('p0').core!.command('PAUSE');
    expect(() => f.cluster.runTicks(60)).toThrow(/drain: .* in flight/);
  });

  test('drain: the same load with the all-reduce drain rule pauses cleanly', () => {
    const f = formed(4, 49, { workRate: 0.8 });
    f.cluster.runTicks(10);
    f.cluster.node('p0').core!.command('PAUSE');
    expect(f.cluster.runUntil(() => f.peers.every((p) => f.cluster.node(p).core!.lifecycle().state === 'PAUSED'), 100)).toBeGreaterThanOrEqual(0);
  });

  test('barriers: a completion missing a rank\'s arrival, or differing from another node\'s, is caught', () => {
    const c = new Checkers();
    const inc = (p: string) => ({ peerId: p, bootId: 'b' });
    const form = (p: string) => c.onSend(p, { meshId: 'm', generation: 1, view: null, rememberedRank: -1, acceptor: null, form: { generation: 1, round: 0, vote: { value: [inc('a'), inc('b')] } } }, { v: 1, meshId: 'm', generation: 1, epoch: 0, body: { type: 'form', bootId: 'b', worldSize: 2, round: 0, digest: formDigest([inc('a'), inc('b')]) } });
    form('a');
    form('b');
    c.onCommit('a', firstView('m', 1, [inc('a'), inc('b')]));
    const arrive = (p: string, payload: string) => c.onSend(p, undefined, { v: 1, meshId: 'm', generation: 1, epoch: 1, body: { type: 'arrive', name: 'x', seq: 1, payload } });
    const result = (payloads: string[]) => ({ generation: 1, epoch: 1, name: 'x', seq: 1, ranks: [0, 1], payloads });
    arrive('a', 'A');
    expect(() => c.onBarrierComplete('a', result(['A', 'B']))).toThrow(/rank 1 \(b\) never arrived/);
    arrive('b', 'B');
    expect(() => c.onBarrierComplete('a', result(['A', 'X']))).toThrow(/payload rank 1 did not send/);
    expect(() => arrive('b', 'B2')).toThrow(/twice with different payloads/);
    c.onBarrierComplete('a', result(['A', 'B']));
    expect(() => c.onBarrierComplete('b', { ...result(['A', 'B']), ranks: [0] })).toThrow(/barrier/);
  });

  test('lifecycle liveness: a rank whose engine never drains leaves the pause unfinished past the bound, and the check says so', () => {
    const f = formed(3, 50, { drainRule: (n) => n.peerId !== 'p1' && n.engine.inflight.length === 0 });
    f.cluster.node('p0').core!.command('PAUSE');
    expect(f.cluster.runUntil(() => lifecycleSettled(f.cluster, f.checkers) === null, LIFECYCLE_TICKS_MAX)).toBe(-1);
    expect(lifecycleSettled(f.cluster, f.checkers)).toMatch(/still PAUSING/);
  });
});
