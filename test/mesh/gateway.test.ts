// Covers the gateway role in the core: a gateway takes no part in formation, never holds a rank or a spare place, does not count toward worldSize, still learns views and the lifecycle, and announces itself as 'gateway' on the wire.
import { describe, expect, test } from 'bun:test';
import { ConfigError } from '../../mesh/config.ts';
import type { NodeRole } from '../../mesh/config.ts';
import { type Outbound, RawNode } from '../../mesh/rawnode.ts';
import { decode, encode, type Message } from '../../mesh/wire.ts';

const base = { meshId: 'm', seed: 7 };

/** A lossless in-order driver over a set of cores; nodes can be removed (crash). */
class Driver {
  readonly sent: { from: string; out: Outbound }[] = [];
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
        const queue: [string, Message][] = [];
        for (const out of rd.messages) {
          this.sent.push({ from: id, out });
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

function node(id: string, worldSize: number, role: NodeRole, seed: number): RawNode {
  return new RawNode({ ...base, worldSize, self: id, bootId: `b-${id}`, seed, role });
}

/** Ranks a..; gateways g0..; all with the same worldSize. */
function cluster(ranks: string[], gateways: string[], worldSize: number): Driver {
  const nodes = new Map<string, RawNode>();
  ranks.forEach((id, i) => nodes.set(id, node(id, worldSize, 'rank', i + 1)));
  gateways.forEach((id, i) => nodes.set(id, node(id, worldSize, 'gateway', 100 + i)));
  for (const id of ranks) nodes.get(id)!.markReady();
  return new Driver(nodes);
}

function holders(n: RawNode): string[] {
  return (n.view()?.ranks ?? []).map((h) => h?.peerId ?? '-');
}

describe('gateway role', () => {
  test('three ranks and a gateway form a three-rank view; the gateway learns it and holds nothing', () => {
    const d = cluster(['a', 'b', 'c'], ['g'], 3);
    d.run(40);
    const g = d.nodes.get('g')!;
    for (const n of d.nodes.values()) {
      expect(n.view()?.epoch).toBe(1);
      expect(holders(n).sort()).toEqual(['a', 'b', 'c']);
      expect(n.view()?.spares).toEqual([]);
    }
    expect(g.rank()).toBe(-1);
    expect(g.phase()).toBe('outsider');
    // Other nodes see it as a gateway.
    expect(d.nodes.get('a')!.members().find((m) => m.peerId === 'g')?.role).toBe('gateway');
    // Its heartbeats after the view are taken, not refused as forged, so it stays alive to the ranks.
    const a = d.nodes.get('a')!;
    expect(Object.keys(a.counters.rejected).filter((r) => r.includes('gateway'))).toEqual([]);
    d.run(20);
    const heard = a.members().find((m) => m.peerId === 'g')!;
    expect(a.currentTick() - heard.lastHeardTick).toBeLessThanOrEqual(a.config.heartbeatTicks);
    expect(heard.liveness).toBe('alive');
    // It never sent a formation message.
    expect(d.sent.filter((s) => s.from === 'g' && s.out.msg.body.type === 'form')).toEqual([]);
  });

  test('a gateway does not count toward worldSize: two ranks and two gateways never form a view of three', () => {
    const d = cluster(['a', 'b'], ['g', 'h'], 3);
    d.run(80);
    for (const n of d.nodes.values()) expect(n.view()).toBeNull();
    // A third rank-role node completes the formation, still without the gateways.
    d.nodes.set('c', node('c', 3, 'rank', 9));
    d.nodes.get('c')!.markReady();
    d.run(60);
    for (const n of d.nodes.values()) expect(holders(n).sort()).toEqual(['a', 'b', 'c']);
  });

  test('a gateway is never listed as a spare, while a rank-role newcomer is', () => {
    const d = cluster(['a', 'b', 'c'], ['g'], 3);
    d.run(40);
    d.nodes.set('s', node('s', 3, 'rank', 11));
    d.run(80);
    const view = d.nodes.get('a')!.view()!;
    expect(view.spares.map((s) => s.peerId)).toEqual(['s']);
    expect(d.nodes.get('g')!.view()?.spares.map((s) => s.peerId)).toEqual(['s']);
  });

  test('when a rank dies, its place stays empty rather than go to the ready gateway', () => {
    const d = cluster(['a', 'b', 'c'], ['g'], 3);
    d.run(40);
    // Readiness would let an outsider be admitted; a gateway must stay out regardless.
    d.nodes.get('g')!.markReady();
    d.nodes.delete('c');
    d.run(200);
    const view = d.nodes.get('a')!.view()!;
    expect(view.epoch).toBeGreaterThan(1);
    expect(holders(d.nodes.get('a')!)).toContain('-');
    expect(holders(d.nodes.get('a')!)).not.toContain('g');
    expect(holders(d.nodes.get('g')!)).toEqual(holders(d.nodes.get('a')!));
  });

  test('a gateway follows the lifecycle and a command issued at it is applied by the ranks', () => {
    const d = cluster(['a', 'b', 'c'], ['g'], 3);
    d.run(40);
    const g = d.nodes.get('g')!;
    g.command('PAUSE', 'pause-from-gateway');
    d.run(60);
    for (const id of ['a', 'b', 'c']) expect(['PAUSING', 'PAUSED']).toContain(d.nodes.get(id)!.lifecycleState());
    expect(['PAUSING', 'PAUSED']).toContain(g.lifecycleState());
  });

  test('heartbeats of a gateway say gateway and decode', () => {
    const d = cluster(['a'], ['g'], 1);
    d.run(10);
    const hb = d.sent.find((s) => s.from === 'g' && s.out.msg.body.type === 'hb');
    expect(hb).toBeDefined();
    const body = hb!.out.msg.body as { role: string };
    expect(body.role).toBe('gateway');
    const round = decode(encode(hb!.out.msg));
    expect(round.ok).toBe(true);
  });

  test('an unknown role is refused with a ConfigError', () => {
    expect(() => new RawNode({ ...base, worldSize: 1, self: 'x', bootId: 'b', role: 'leader' as NodeRole })).toThrow(ConfigError);
  });
});
