// Covers the Ingress's routing decisions step by step over a virtual network: real protocol cores (three ranks and a gateway) and a real SQLite store, with each forward held until the test answers it — round-robin in rank order, per-rank concurrency and capacity (429), "pending" answers asked again at the same rank, a broken stream re-dispatched to another rank, and a rank removed from the view: its requests go elsewhere and its late reply is ignored.
import { afterEach, beforeEach, describe, expect, test } from 'bun:test';
import { EventEmitter } from 'node:events';
import pino from 'pino';
import { type Outbound, RawNode } from '../../mesh/rawnode.ts';
import type { Message } from '../../mesh/wire.ts';
import { validate } from '../../node/config.ts';
import { IngressBusyError } from '../../node/ingress/errors.ts';
import { Ingress } from '../../node/ingress/ingress.ts';
import { IngressStore } from '../../node/ingress/store.ts';
import { decodeForwardBatch, encodeForwardReplies, type ForwardReply, type ForwardRequest } from '../../node/ingress/wire.ts';
import type { RequestResult } from '../../node/p2p/transport.ts';
import { openStorage, type Storage } from '../../node/storage/database.ts';
import { tempDir, waitFor } from '../node/helpers.ts';

/** Lossless in-order delivery between cores; the gateway's view and lifecycle changes are emitted as the runtime's driver does. */
class Mesh {
  readonly events = new EventEmitter();
  constructor(readonly nodes: Map<string, RawNode>) {}

  run(ticks: number): void {
    for (let t = 0; t < ticks; t++) {
      for (const n of this.nodes.values()) n.tick();
      this.flush();
    }
  }

  private flush(): void {
    for (let guard = 0; guard < 1000; guard++) {
      let moved = false;
      for (const [id, n] of this.nodes) {
        if (!n.hasReady()) continue;
        moved = true;
        const rd = n.ready();
        const queue: [string, Message][] = [];
        for (const out of rd.messages as Outbound[]) {
          if (out.kind === 'direct') queue.push([out.to, out.msg]);
          else for (const to of this.nodes.keys()) if (to !== id) queue.push([to, out.msg]);
        }
        for (const a of rd.actions) {
          if (a.kind === 'probe') n.probeResult(a.peer, this.nodes.has(a.peer));
          if (id === 'gw' && a.kind === 'viewCommitted') this.events.emit('view', a.view);
          if (id === 'gw' && a.kind === 'lifecycle') this.events.emit('lifecycle', a, 0);
        }
        n.advance();
        for (const [to, msg] of queue) this.nodes.get(to)?.step(id, msg);
      }
      if (!moved) return;
    }
    throw new Error('mesh did not settle');
  }
}

/** A forward exchange waiting for the test to answer it; these tests send one request per exchange. */
interface Call {
  readonly peer: string;
  readonly req: ForwardRequest;
  answer(reply: ForwardReply): void;
  fail(): void;
}

let dir: ReturnType<typeof tempDir>;
let storage: Storage;
let mesh: Mesh;
let calls: Call[];
let ingress: Ingress;

function start(settings: { ingressRankQueueCapacity: number; ingressRankConcurrency: number }): void {
  const nodes = new Map<string, RawNode>();
  ['ra', 'rb', 'rc'].forEach((id, i) => nodes.set(id, new RawNode({ meshId: 'm', worldSize: 3, self: id, bootId: `b-${id}`, seed: i + 1 })));
  nodes.set('gw', new RawNode({ meshId: 'm', worldSize: 3, self: 'gw', bootId: 'b-gw', seed: 9, role: 'gateway' }));
  mesh = new Mesh(nodes);
  mesh.run(40);
  calls = [];
  const gw = nodes.get('gw')!;
  ingress = new Ingress({
    self: 'gw',
    driver: { core: gw, on: (e: string, f: () => void) => mesh.events.on(e, f), off: (e: string, f: () => void) => mesh.events.off(e, f) } as never,
    transport: {
      request: (peer: string, _name: string, bytes: Uint8Array): Promise<RequestResult> =>
        new Promise((resolve) => {
          const batch = decodeForwardBatch(bytes) as ForwardRequest[];
          if (batch.length !== 1) throw new Error(`expected one request per exchange here, got ${batch.length}`);
          calls.push({
            peer,
            req: batch[0]!,
            answer: (reply) => resolve({ ok: true, bytes: encodeForwardReplies([reply]) }),
            fail: () => resolve({ ok: false, error: 'unreachable', message: 'stream reset' }),
          });
        }),
    },
    store: new IngressStore(storage.db, 1000),
    settings: validate({ ...settings, ingressForwardTimeoutMs: 60_000 }),
    vocab: 256,
    log: pino({ level: 'silent' }),
  });
  ingress.start();
}

/** The mesh rank each peer holds in the gateway's view. */
function rankOf(peer: string): number {
  return mesh.nodes.get('gw')!.view()!.ranks.findIndex((h) => h?.peerId === peer);
}

function done(call: Call, output: number[]): void {
  call.answer({ kind: 'done', id: call.req.id, output, rank: rankOf(call.peer), epoch: 1 });
}

/** Lets the replies' promise callbacks and the store's group commit (end of the turn) run. */
const settle = async (): Promise<void> => {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
};

describe('Ingress routing', () => {
  beforeEach(() => {
    dir = tempDir();
    storage = openStorage(dir.path);
  });
  afterEach(() => {
    ingress?.stop();
    storage.close();
    dir.remove();
  });

  test('round-robin in rank order, at most the concurrency in flight per rank, and 429 once every queue is full', async () => {
    start({ ingressRankQueueCapacity: 2, ingressRankConcurrency: 1 });
    const ids = (await Promise.all(Array.from({ length: 6 }, (_, i) => ingress.accept({ input: [i + 1] })))).map((a) => a.request.id);
    // One in flight per rank, the second of each queued here.
    expect(calls.map((c) => rankOf(c.peer))).toEqual([0, 1, 2]);
    expect(ingress.load()).toEqual({ held: 0, queued: 3, inflight: 3 });
    expect(ingress.accept({ input: [9] })).rejects.toThrow(IngressBusyError);
    // Answering rank 1 lets its queued request go out, to the same rank.
    done(calls[1]!, [42]);
    await settle();
    expect(ingress.get(ids[1]!)).toMatchObject({ status: 'done', output: [42], rank: 1 });
    expect(calls.length).toBe(4);
    expect(calls[3]!.req.id).toBe(ids[4]!);
    expect(rankOf(calls[3]!.peer)).toBe(1);
  });

  test('a pending answer is asked again at the same rank; a broken stream goes to another rank', async () => {
    start({ ingressRankQueueCapacity: 4, ingressRankConcurrency: 4 });
    const id = (await ingress.accept({ input: [5] })).request.id;
    const first = calls[0]!;
    first.answer({ kind: 'pending', id });
    await settle();
    expect(calls.length).toBe(2);
    expect(calls[1]!.peer).toBe(first.peer);
    expect(calls[1]!.req.id).toBe(id);
    expect(ingress.get(id)).toMatchObject({ status: 'running', attempts: 1 });
    calls[1]!.fail();
    await waitFor('the request dispatched again', () => calls.length === 3, 2000);
    expect(calls[2]!.peer).not.toBe(first.peer);
    expect(ingress.counters.brokenForwards).toBe(1);
    done(calls[2]!, [7]);
    await settle();
    expect(ingress.get(id)).toMatchObject({ status: 'done', output: [7], attempts: 2 });
  });

  test('a rank that leaves the view has its requests dispatched again; its late reply is ignored', async () => {
    start({ ingressRankQueueCapacity: 4, ingressRankConcurrency: 4 });
    const ids = (await Promise.all([0, 1, 2].map((i) => ingress.accept({ input: [i + 1] })))).map((a) => a.request.id);
    const onRank2 = calls.find((c) => rankOf(c.peer) === 2)!;
    const victim = onRank2.peer;
    // The rank's node stops talking; the others remove it in a new view.
    mesh.nodes.delete(victim);
    mesh.run(200);
    const view = mesh.nodes.get('gw')!.view()!;
    expect(view.epoch).toBeGreaterThan(1);
    expect(view.ranks.some((h) => h?.peerId === victim)).toBe(false);
    const again = calls.slice(3).find((c) => c.req.id === onRank2.req.id);
    expect(again).toBeDefined();
    expect(again!.peer).not.toBe(victim);
    // The removed rank answers after all: dropped, and nothing crashes.
    onRank2.answer({ kind: 'done', id: onRank2.req.id, output: [666], rank: 2, epoch: 1 });
    await settle();
    expect(ingress.counters.lateReplies).toBe(1);
    expect(ingress.get(onRank2.req.id)!.status).toBe('running');
    done(again!, [5]);
    for (const c of calls.slice(0, 3)) if (c !== onRank2) done(c, [1]);
    await settle();
    for (const id of ids) expect(ingress.get(id)!.status).toBe('done');
    expect(ingress.get(onRank2.req.id)).toMatchObject({ output: [5], attempts: 2 });
  });

  test('an outcome is shown only once it is stored: until the commit, GET sees it unfinished and waiters wait', async () => {
    start({ ingressRankQueueCapacity: 2, ingressRankConcurrency: 1 });
    const { request } = await ingress.accept({ input: [1] });
    await settle();
    const call = calls[0]!;
    done(call, [7]);
    // The reply is handled in microtasks; the store's group commit waits for the end of the turn.
    for (let i = 0; i < 50 && ingress.load().inflight > 0; i++) await Promise.resolve();
    expect(ingress.load().inflight).toBe(0);
    const stored = (): string | undefined => new IngressStore(storage.db, 1000).get(request.id)?.status;
    expect(stored()).toBe('queued');
    // A node killed now would run the request again after its restart: no client may see "done" yet.
    const meanwhile = ingress.get(request.id)!;
    expect(['queued', 'running']).toContain(meanwhile.status);
    expect(meanwhile).not.toHaveProperty('output');
    const waited = ingress.wait(request.id, 5_000);
    await settle();
    expect(await waited).toMatchObject({ status: 'done', output: [7] });
    expect(ingress.get(request.id)).toMatchObject({ status: 'done', output: [7] });
    expect(stored()).toBe('done');
  });
});
