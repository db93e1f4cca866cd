// The RawNode contract driven by hand: formation, ready()/advance() with persist-before-send, stale/future handling, catch-up, restarts and bad input.
import { describe, expect, test } from 'bun:test';
import { ConfigError } from '../../mesh/config.ts';
import { type Outbound, type PersistentState, RawNode } from '../../mesh/rawnode.ts';
import type { Message } from '../../mesh/wire.ts';

const base = { meshId: 'm', worldSize: 3, seed: 7 };

/** A lossless in-order driver: persists, then delivers every message to its receivers. */
class Driver {
  readonly stored = new Map<string, PersistentState>();
  readonly sent: { from: string; out: Outbound; storedAtSend: PersistentState | undefined }[] = [];
  constructor(readonly nodes: Map<string, RawNode>) {}

  run(ticks: number): void {
    for (let t = 0; t < ticks; t++) {
      for (const n of this.nodes.values()) n.tick();
      this.flush();
    }
  }

  flush(): void {
    for (let guard = 0; guard < 1000; guard++) {
      let moved = false;
      for (const [id, n] of this.nodes) {
        if (!n.hasReady()) continue;
        moved = true;
        const rd = n.ready();
        if (rd.persist) this.stored.set(id, rd.persist);
        const queue: [string, Message][] = [];
        for (const out of rd.messages) {
          this.sent.push({ from: id, out, storedAtSend: this.stored.get(id) });
          if (out.kind === 'direct') queue.push([out.to, out.msg]);
          else for (const to of this.nodes.keys()) if (to !== id) queue.push([to, out.msg]);
        }
        for (const a of rd.actions) if (a.kind === 'probe') n.probeResult(a.peer, this.nodes.has(a.peer));
        n.advance();
        for (const [to, msg] of queue) this.nodes.get(to)?.step(id, msg);
      }
      if (!moved) return;
    }
    throw new Error('driver did not settle');
  }
}

function cluster(ids: string[], worldSize = ids.length): Driver {
  return new Driver(new Map(ids.map((id, i) => [id, new RawNode({ ...base, worldSize, self: id, bootId: `b-${id}`, seed: i + 1 })])));
}

describe('RawNode', () => {
  test('a one-node mesh forms at once', () => {
    const n = new RawNode({ ...base, worldSize: 1, self: 'solo', bootId: 'b1' });
    n.tick();
    const rd = n.ready();
    expect(n.view()?.epoch).toBe(1);
    expect(n.rank()).toBe(0);
    expect(n.maskHex()).toBe('1');
    expect(rd.actions).toContainEqual({ kind: 'viewCommitted', view: n.view()! });
    expect(rd.persist?.view?.ranks).toEqual([{ peerId: 'solo', bootId: 'b1' }]);
  });

  test('three nodes form one view, ranks in PeerId order, and extras become spares', () => {
    const d = cluster(['c', 'a', 'b', 'd'], 3);
    d.run(40);
    const views = [...d.nodes.values()].map((n) => n.view());
    for (const v of views) expect(v).toEqual(views[0]!);
    expect(views[0]!.ranks.map((r) => r?.peerId)).toEqual(['a', 'b', 'c']);
    expect(views[0]!.spares.map((s) => s.peerId)).toEqual(['d']);
    expect(d.nodes.get('d')!.phase()).toBe('spare');
    d.nodes.get('d')!.markReady();
    d.run(4);
    expect(d.nodes.get('a')!.summary()).toEqual({
      generation: 1,
      epoch: views[0]!.epoch,
      worldSize: 3,
      mask: '7',
      ranks: ['a', 'b', 'c'].map((p, rank) => ({ rank, peerId: p, bootId: `b-${p}`, active: true })),
      spares: [{ peerId: 'd', bootId: 'b-d', ready: true }],
      closed: false,
    });
  });

  test('every vote and formation acceptance is persisted before it is sent', () => {
    const d = cluster(['a', 'b', 'c', 'd'], 3);
    d.run(40);
    const votes = d.sent.filter((s) => s.out.msg.body.type === 'vote' || (s.out.msg.body.type === 'form' && s.out.msg.body.digest));
    expect(votes.length).toBeGreaterThan(0);
    for (const s of votes) {
      const st = s.storedAtSend!;
      const body = s.out.msg.body;
      if (body.type === 'vote') expect(st.view!.epoch > s.out.msg.epoch || (st.acceptor!.epoch === s.out.msg.epoch && st.acceptor!.votedBallot >= body.ballot)).toBe(true);
      else expect(st.view !== null || st.form!.vote !== null).toBe(true);
    }
  });

  test('ready() twice without advance() is a driver bug and says so', () => {
    const n = new RawNode({ ...base, self: 'a', bootId: 'b' });
    n.ready();
    expect(() => n.ready()).toThrow(/advance/);
    n.advance();
    expect(() => n.ready()).not.toThrow();
  });

  test('a removed member is replaced, and a dead one removed, only with a quorum', () => {
    const d = cluster(['a', 'b', 'c']);
    d.run(30);
    expect(d.nodes.get('a')!.view()!.epoch).toBe(1);
    d.nodes.delete('c');
    d.run(60);
    const v = d.nodes.get('a')!.view()!;
    expect(v.epoch).toBe(2);
    expect(v.ranks.map((r) => r?.peerId ?? null)).toEqual(['a', 'b', null]);
    expect(d.nodes.get('b')!.view()).toEqual(v);
  });

  test('a restarted incarnation takes back its rank only through a view change', () => {
    const d = cluster(['a', 'b', 'c']);
    d.run(30);
    const stored = d.stored.get('c')!;
    const restarted = new RawNode({ ...base, self: 'c', bootId: 'b-c2', seed: 99 }, stored);
    restarted.markReady();
    expect(restarted.phase()).toBe('outsider');
    expect(restarted.rank()).toBe(-1);
    d.nodes.set('c', restarted);
    d.run(80);
    const v = d.nodes.get('a')!.view()!;
    expect(v.epoch).toBeGreaterThan(1);
    expect(v.ranks[2]).toEqual({ peerId: 'c', bootId: 'b-c2' });
    expect(restarted.rank()).toBe(2);
  });

  test('a message of an older epoch is counted and answered with the newer view; a newer one triggers catch-up', () => {
    const d = cluster(['a', 'b', 'c']);
    d.run(30);
    const a = d.nodes.get('a')!;
    const old: Message = { v: 1, meshId: 'm', generation: 1, epoch: 0, body: { type: 'viewReq' } };
    const staleBefore = a.counters.stale;
    a.step('x', { ...old, body: { type: 'hb', bootId: 'bx', role: 'forming', ready: false, rememberedRank: -1, digest: 0, reports: [], closeRequested: false } });
    expect(a.counters.stale).toBe(staleBefore + 1);
    // A peer that is still behind after catchupTicks gets the view pushed.
    for (let t = 0; t < a.config.catchupTicks; t++) a.tick();
    a.ready();
    a.advance();
    a.step('x', { ...old, body: { type: 'hb', bootId: 'bx', role: 'forming', ready: false, rememberedRank: -1, digest: 0, reports: [], closeRequested: false } });
    const rd = a.ready();
    a.advance();
    expect(rd.messages).toContainEqual({ kind: 'direct', to: 'x', msg: expect.objectContaining({ body: expect.objectContaining({ type: 'viewResp' }) }) });

    const fresh = new RawNode({ ...base, self: 'z', bootId: 'bz' });
    fresh.ready();
    fresh.advance();
    fresh.step('a', { v: 1, meshId: 'm', generation: 1, epoch: 1, body: { type: 'vote', ballot: 0, change: { remove: [], admit: [], addSpares: [], close: true } } });
    expect(fresh.counters.future).toBe(1);
    const req = fresh.ready();
    fresh.advance();
    expect(req.messages).toEqual([{ kind: 'direct', to: 'a', msg: expect.objectContaining({ body: { type: 'viewReq' } }) }]);
    expect(fresh.view()).toBeNull();
  });

  test('messages of another mesh or from itself change nothing', () => {
    const n = new RawNode({ ...base, self: 'a', bootId: 'b' });
    n.ready();
    n.advance();
    n.step('q', { v: 1, meshId: 'other', generation: 9, epoch: 9, body: { type: 'viewReq' } });
    n.step('a', { v: 1, meshId: 'm', generation: 9, epoch: 9, body: { type: 'viewReq' } });
    expect(n.counters.rejected).toEqual({ 'message of another mesh': 1, 'message from this node itself': 1 });
    expect(n.hasReady()).toBe(false);
  });

  test('close commits as a view change and then nothing changes', () => {
    const d = cluster(['a', 'b', 'c']);
    d.run(30);
    d.nodes.get('b')!.requestClose();
    d.run(40);
    for (const n of d.nodes.values()) {
      expect(n.view()!.closed).toBe(true);
      expect(n.phase()).toBe('closed');
    }
  });

  test('once closed, a node heartbeats every closedHeartbeatTicks instead of heartbeatTicks', () => {
    const ids = ['a', 'b', 'c'];
    const d = new Driver(new Map(ids.map((id, i) => [id, new RawNode({ ...base, self: id, bootId: `b-${id}`, seed: i + 1, heartbeatTicks: 8, suspectTicks: 24, closedHeartbeatTicks: 2 })])));
    d.run(60);
    d.nodes.get('b')!.requestClose();
    d.run(40);
    expect(d.nodes.get('a')!.phase()).toBe('closed');
    const heartbeatsOfA = (): number => d.sent.filter((s) => s.from === 'a' && s.out.msg.body.type === 'hb').length;
    const before = heartbeatsOfA();
    d.run(40);
    // 40 ticks: 20 heartbeats at the closed cadence, where the open one would send 5.
    expect(heartbeatsOfA() - before).toBe(20);
    // The default is heartbeatTicks itself, and it is never longer.
    expect(() => new RawNode({ ...base, self: 'a', bootId: 'b', closedHeartbeatTicks: 0 })).toThrow(/closedHeartbeatTicks/);
  });

  test('bad configuration and foreign stored state are refused with a ConfigError', () => {
    expect(() => new RawNode({ ...base, worldSize: 0, self: 'a', bootId: 'b' })).toThrow(ConfigError);
    expect(() => new RawNode({ ...base, self: 'a b', bootId: 'b' })).toThrow(ConfigError);
    expect(() => new RawNode({ ...base, self: 'a', bootId: 'b', suspectTicks: 0 })).toThrow(ConfigError);
    expect(() => new RawNode({ ...base, self: 'a', bootId: 'b', heartbeatTicks: 3, suspectTicks: 5 })).toThrow(/twice heartbeatTicks/);
    expect(() => new RawNode({ ...base, self: 'a', bootId: 'b', reportThresholdMax: 1 })).toThrow(/reportThresholdMax/);
    const foreign: PersistentState = { meshId: 'other', generation: 1, view: null, rememberedRank: -1, acceptor: null, form: null };
    expect(() => new RawNode({ ...base, self: 'a', bootId: 'b' }, foreign)).toThrow(ConfigError);
  });
});
