// Barrier rounds of one epoch: completion over the mask in rank order, who may arrive, repair by re-announcement and answers, and input errors.
import { describe, expect, test } from 'bun:test';
import { BARRIER_PAYLOAD_BYTES_MAX, BARRIERS_PER_EPOCH_MAX, BarrierError, type BarrierResult, Barriers, COMPLETED_KEPT_PER_NAME } from '../../mesh/barrier.ts';
import { RawNode } from '../../mesh/rawnode.ts';
import { type View, firstView } from '../../mesh/view.ts';

// Ranks 0, 2, 3 held; rank 1 empty (a hole in the mask).
const view: View = { ...firstView('m', 1, ['a', 'b', 'c', 'd'].map((p) => ({ peerId: p, bootId: 'x' }))), ranks: [{ peerId: 'a', bootId: 'x' }, null, { peerId: 'c', bootId: 'x' }, { peerId: 'd', bootId: 'x' }] };

function make(selfRank: number) {
  const sent: { to: string | null; name: string; seq: number; payload: string }[] = [];
  const done: BarrierResult[] = [];
  const b = new Barriers(view, selfRank, 4, {
    gossip: (name, seq, payload) => sent.push({ to: null, name, seq, payload }),
    direct: (to, name, seq, payload) => sent.push({ to, name, seq, payload }),
    completed: (r) => done.push(r),
  });
  return { b, sent, done };
}

describe('Barriers', () => {
  test('an epoch runs any number of rounds: old completed rounds are forgotten, late copies of them ignored', () => {
    const { b, done, sent } = make(2);
    const rounds = BARRIERS_PER_EPOCH_MAX * 3;
    for (let seq = 1; seq <= rounds; seq++) {
      b.arrive('plan', seq, `c${seq}`, seq);
      expect(b.onArrive('a', 'plan', seq, `a${seq}`, seq)).toBeNull();
      expect(b.onArrive('d', 'plan', seq, `d${seq}`, seq)).toBeNull();
    }
    expect(done.length).toBe(rounds);
    expect(done.at(-1)!.payloads).toEqual([`a${rounds}`, `c${rounds}`, `d${rounds}`]);
    expect(b.list().length).toBe(COMPLETED_KEPT_PER_NAME);
    expect(b.opened()).toBe(rounds);
    // A recent round still answers a peer that keeps announcing it; a forgotten one is ignored.
    const before = sent.length;
    expect(b.onArrive('a', 'plan', rounds, `a${rounds}`, rounds + 100)).toBeNull();
    expect(sent.length).toBe(before + 1);
    expect(b.onArrive('a', 'plan', 1, 'a1', rounds + 200)).toBeNull();
    expect(sent.length).toBe(before + 1);
    expect(b.completed('plan', 1)).toBe(false);
    expect(() => b.arrive('plan', 1, 'again', rounds + 300)).toThrow(/already arrived/);
  });

  test('a round still open is never forgotten, however many later rounds complete', () => {
    const { b, done } = make(2);
    b.arrive('x', 1, 'c1', 0); // rank 0 and 3 never arrive at x#1
    for (let seq = 2; seq <= 40; seq++) {
      b.arrive('x', seq, `c${seq}`, seq);
      b.onArrive('a', 'x', seq, `a${seq}`, seq);
      b.onArrive('d', 'x', seq, `d${seq}`, seq);
    }
    expect(done.length).toBe(39);
    b.onArrive('a', 'x', 1, 'a1', 50);
    b.onArrive('d', 'x', 1, 'd1', 50);
    expect(done.at(-1)).toMatchObject({ name: 'x', seq: 1, payloads: ['a1', 'c1', 'd1'] });
  });

  test('completes when every rank of the mask arrived, with payloads in rank order, whatever the arrival order', () => {
    const { b, done } = make(2);
    expect(b.onArrive('d', 'join', 1, 'D', 0)).toBeNull();
    b.arrive('join', 1, 'C', 0);
    expect(done).toEqual([]);
    expect(b.onArrive('a', 'join', 1, 'A', 1)).toBeNull();
    expect(done).toEqual([{ generation: 1, epoch: 1, name: 'join', seq: 1, ranks: [0, 2, 3], payloads: ['A', 'C', 'D'] }]);
    // A duplicate changes nothing and completes nothing twice.
    expect(b.onArrive('a', 'join', 1, 'A', 2)).toBeNull();
    expect(done.length).toBe(1);
  });

  test('never waits on a rank outside the mask, and refuses arrivals from peers without a rank and conflicting ones', () => {
    const { b, done } = make(0);
    expect(b.onArrive('b', 'x', 1, 'B', 0)).toMatch(/without a rank/);
    expect(b.onArrive('c', 'x', 1, 'C', 0)).toBeNull();
    expect(b.onArrive('c', 'x', 1, 'other', 0)).toMatch(/conflicting/);
    b.arrive('x', 1, 'A', 0);
    b.onArrive('d', 'x', 1, 'D', 0);
    expect(done[0]!.payloads).toEqual(['A', 'C', 'D']);
  });

  test('re-announces an open arrival every retransmitTicks and stops once complete', () => {
    const { b, sent } = make(0);
    b.arrive('x', 1, 'A', 0);
    b.tick(3);
    b.tick(4);
    b.tick(6);
    b.tick(8);
    expect(sent.map((s) => s.to === null)).toEqual([true, true, true]);
    b.onArrive('c', 'x', 1, 'C', 9);
    b.onArrive('d', 'x', 1, 'D', 9);
    b.tick(20);
    expect(sent.length).toBe(3);
  });

  test('a node that completed answers a peer still announcing with its own arrival: directly, then by gossip (rate-limited)', () => {
    const { b, sent } = make(0);
    b.arrive('x', 1, 'A', 0);
    b.onArrive('c', 'x', 1, 'C', 0);
    b.onArrive('d', 'x', 1, 'D', 0);
    const before = sent.length;
    b.onArrive('c', 'x', 1, 'C', 5);
    b.onArrive('c', 'x', 1, 'C', 6);
    b.onArrive('c', 'x', 1, 'C', 9);
    b.onArrive('c', 'x', 1, 'C', 13);
    // A direct answer first; the peer kept announcing, so the next answer goes by gossip.
    expect(sent.slice(before).map((s) => [s.to, s.payload])).toEqual([
      ['c', 'A'],
      [null, 'A'],
      [null, 'A'],
    ]);
  });

  test('an answer is never answered, so two nodes that completed a round do not keep answering each other', () => {
    const { b, sent } = make(0);
    b.arrive('x', 1, 'A', 0);
    b.onArrive('c', 'x', 1, 'C', 0);
    b.onArrive('d', 'x', 1, 'D', 0);
    const before = sent.length;
    for (let now = 10; now < 100; now += 5) expect(b.onArrive('c', 'x', 1, 'C', now, true)).toBeNull();
    expect(sent.length).toBe(before);
  });

  test('seqs default to one past the last arrival; bad input throws BarrierError and changes nothing', () => {
    const { b, sent } = make(0);
    expect(b.nextSeq('x')).toBe(1);
    b.arrive('x', 1, '', 0);
    expect(b.nextSeq('x')).toBe(2);
    expect(() => b.arrive('x', 1, 'again', 0)).toThrow(/already arrived/);
    expect(() => b.arrive('bad name', 2, '', 0)).toThrow(BarrierError);
    expect(() => b.arrive('x', 0, '', 0)).toThrow(/seq/);
    expect(() => b.arrive('x', 2, 'é'.repeat(BARRIER_PAYLOAD_BYTES_MAX / 2 + 1), 0)).toThrow(/bytes/);
    expect(() => make(1).b.arrive('x', 1, '', 0)).toThrow(/only a rank/);
    expect(sent.length).toBe(1);
  });
});

describe('RawNode.arrive', () => {
  test('a node without a view cannot arrive, and the control barrier name is reserved', () => {
    const node = new RawNode({ meshId: 'm', self: 'a', bootId: 'x', worldSize: 2, seed: 1 });
    expect(() => node.arrive('x', '')).toThrow(/only a rank/);
    expect(() => node.arrive('control', '')).toThrow(/reserved/);
    expect(node.barriers()).toEqual([]);
    expect(node.barrierKey()).toBeNull();
  });

  test('a single-rank mesh completes its barrier at once', () => {
    const node = new RawNode({ meshId: 'm', self: 'a', bootId: 'x', worldSize: 1, seed: 1 });
    for (let i = 0; i < 10 && node.phase() !== 'member'; i++) node.tick();
    expect(node.phase()).toBe('member');
    while (node.hasReady()) {
      node.ready();
      node.advance();
    }
    const before = node.barrierKey();
    expect(before).toBe('1/1/0');
    expect(node.arrive('warm', 'ok')).toBe(1);
    const rd = node.ready();
    expect(rd.actions).toContainEqual({ kind: 'barrierComplete', generation: 1, epoch: 1, name: 'warm', seq: 1, ranks: [0], payloads: ['ok'] });
    // The sampler's key moves when a round opens, and only then.
    expect(node.barrierKey()).toBe('1/1/1');
    node.tick();
    expect(node.barrierKey()).toBe('1/1/1');
  });
});
