// Covers the engine loop inside real nodes: three in-process nodes and a spare on the CPU
// backend serve POST /v1/rank/infer on every rank with the outputs of a single-rank run, refuse
// bad input (400, nothing queued) and rankless requests (409), ignore forged data-plane claims,
// rebuild an aborted communicator in the same view, serve the next epoch after a rank dies, and
// a rank that cannot serve keeps its queue, answering 504 past the deadline, 429 when full and
// 503 to waiting requests when the node stops; a rank still warming up answers 503, then serves;
// a restarted node takes its rank back and serves the same outputs.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { CpuDataPlane, createCpuCommunicator } from '../../ffi/comm/cpu.ts';
import type { EngineRequest } from '../../node/engine/engine.ts';
import { createReferenceEngine } from '../../node/engine/reference.ts';
import type { InferResult, RankStatus } from '../../node/rank/host.ts';
import { InprocMesh, type InprocNode } from '../../scripts/lib/inproc-mesh.ts';
import { DATAPLANE_CHANNEL } from '../../node/rank/directory.ts';
import { requests } from '../engine/helpers.ts';
import { waitFor } from '../node/helpers.ts';

const token = 'inproc-test-token';
const worldSize = 3;
let mesh: InprocMesh;
let ranked: InprocNode[] = [];
let spare: InprocNode;

async function rankStatus(node: InprocNode): Promise<RankStatus> {
  return (await (await fetch(`${node.httpUrl}/v1/rank`)).json()) as RankStatus;
}

function infer(node: InprocNode, body: unknown): Promise<Response> {
  return fetch(`${node.httpUrl}/v1/rank/infer`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

/** The same requests on one rank alone, computed by the engine directly. */
async function singleRankOutputs(reqs: readonly EngineRequest[]): Promise<Map<string, readonly number[]>> {
  const plane = await CpuDataPlane.listen({ meshId: 'solo', meshKey: new Uint8Array(32).fill(1) });
  const comm = await createCpuCommunicator({ dataPlane: plane, key: { meshId: 'solo', generation: 1, epoch: 1 }, rank: 0, meshRanks: [0], peers: [] });
  const engine = createReferenceEngine({ model: { seed: 1 } });
  await engine.warmUp();
  const results = await engine.step(reqs, comm);
  await comm.close();
  await plane.close();
  await engine.teardown();
  return new Map(results.map((r) => [r.id, r.output]));
}

describe('ranks in real nodes', () => {
  beforeAll(async () => {
    mesh = await InprocMesh.start({
      nodes: worldSize + 1,
      worldSize,
      settings: { engineModelSeed: 1, dataPlaneAnnounceIntervalMs: 200, rankRetryMs: 200, rankConnectTimeoutMs: 5000 },
    });
    // Three nodes hold the ranks and the fourth is a spare, as every node sees it.
    await waitFor(
      'a view with every rank held and one spare on every node',
      () =>
        mesh.nodes.every((n) => {
          const v = mesh.view(n);
          return v !== null && v.ranks.every((h) => h !== null) && v.spares.length === 1 && v.epoch === mesh.view(mesh.nodes[0]!)?.epoch;
        }),
      12_000,
    );
    const view = mesh.view(mesh.nodes[0]!)!;
    ranked = view.ranks.map((h) => mesh.nodes.find((n) => n.peerId === h!.peerId)!);
    spare = mesh.nodes.find((n) => !ranked.includes(n))!;
    await waitFor('every rank serving the view', async () => (await Promise.all(ranked.map(rankStatus))).every((s) => s.serving && s.epoch === view.epoch), 10_000);
  }, 30_000);

  afterAll(async () => {
    await mesh?.stop();
  });

  test('concurrent requests on every rank return the single-rank outputs', async () => {
    const reqs = requests(36, 'q', 17);
    const want = await singleRankOutputs(reqs);
    const view = mesh.view(mesh.nodes[0]!)!;
    const answers = await Promise.all(
      reqs.map(async (req, i) => {
        const rank = i % worldSize;
        const res = await infer(ranked[rank]!, { id: req.id, input: req.input, pipeline: 'test' });
        expect(res.status).toBe(200);
        const body = (await res.json()) as InferResult;
        expect(body.rank).toBe(rank);
        expect(body.epoch).toBe(view.epoch);
        return body;
      }),
    );
    expect(new Map(answers.map((a) => [a.id, a.output]))).toEqual(want);
    for (const node of ranked) expect((await rankStatus(node)).requests.completed).toBe(reqs.length / worldSize);
  });

  test('bad input is refused with 400 and queues nothing', async () => {
    const node = ranked[1]!;
    const before = await rankStatus(node);
    const bad = [{ input: [] }, { input: [1, 2.5] }, { input: 'abc' }, { input: [1], extra: true }, { input: [1_000_000] }];
    for (const body of bad) {
      const res = await infer(node, body);
      expect(res.status).toBe(400);
      const { error } = (await res.json()) as { error: { code: string; message: string } };
      expect(error.code).toBe('bad-request');
      expect(error.message.length).toBeGreaterThan(0);
    }
    const notJson = await fetch(`${node.httpUrl}/v1/rank/infer`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: '{' });
    expect(notJson.status).toBe(400);
    const after = await rankStatus(node);
    expect(after.requests.accepted).toBe(before.requests.accepted);
    expect(after.queueLength).toBe(0);
    // Without the token nothing runs either.
    const unauthorized = await fetch(`${node.httpUrl}/v1/rank/infer`, { method: 'POST', body: JSON.stringify({ input: [1] }) });
    expect(unauthorized.status).toBe(401);
  });

  test('a node without a rank answers 409 and shows no rank', async () => {
    const res = await infer(spare, { input: [1, 2, 3] });
    expect(res.status).toBe(409);
    const { error } = (await res.json()) as { error: { code: string; message: string } };
    expect(error.code).toBe('no-rank');
    expect(error.message).toContain('holds no active rank');
    const status = await rankStatus(spare);
    expect(status.rank).toBeNull();
    expect(status.serving).toBe(false);
    expect(status.requests.accepted).toBe(0);
  });

  test('a data-plane claim signed by another peer, or malformed, is ignored', async () => {
    const victim = ranked[0]!;
    const victimInc = mesh.view(victim)!.ranks[0]!;
    expect(victimInc.peerId).toBe(victim.peerId);
    const real = ranked[1]!.runtime.rank.addresses.lookup(victimInc);
    expect(real).toBeDefined();
    const forged = { v: 1, peerId: victimInc.peerId, bootId: victimInc.bootId, host: '127.0.0.1', port: 1, seq: 1e9, build: null };
    const before = ranked[1]!.runtime.rank.addresses.ignored['wrong-signer'];
    await spare.runtime.transport.publish(DATAPLANE_CHANNEL, new TextEncoder().encode(JSON.stringify(forged)));
    await waitFor('the forged claim to arrive and be ignored', () => ranked[1]!.runtime.rank.addresses.ignored['wrong-signer'] > before, 5000);
    expect(ranked[1]!.runtime.rank.addresses.lookup(victimInc)).toEqual(real!);
    // Malformed claims are counted and dropped too.
    const malformedBefore = ranked[1]!.runtime.rank.addresses.ignored.malformed;
    for (const text of ['not json', JSON.stringify({ ...forged, peerId: spare.peerId, port: 70_000 })]) {
      await spare.runtime.transport.publish(DATAPLANE_CHANNEL, new TextEncoder().encode(text));
    }
    await waitFor('both malformed claims to be ignored', () => ranked[1]!.runtime.rank.addresses.ignored.malformed >= malformedBefore + 2, 5000);
  });

  test('an aborted communicator is rebuilt in the same view, on a new attempt, and serves', async () => {
    const view = mesh.view(ranked[0]!)!;
    expect(ranked[0]!.runtime.rank.abortCommunicator('test abort')).toBe(true);
    await waitFor(
      'every rank serving again on a later attempt of the same epoch',
      async () => (await Promise.all(ranked.map(rankStatus))).every((s) => s.serving && s.epoch === view.epoch && (s.attempt ?? 0) > 0),
      10_000,
    );
    expect((await rankStatus(ranked[0]!)).lastError).toContain('test abort');
    const reqs = requests(6, 'rebuilt', 9);
    const want = await singleRankOutputs(reqs);
    const answers = await Promise.all(reqs.map(async (req, i) => (await (await infer(ranked[i % worldSize]!, req)).json()) as InferResult));
    expect(new Map(answers.map((a) => [a.id, a.output]))).toEqual(want);
    expect(mesh.view(ranked[0]!)!.epoch).toBe(view.epoch);
  });

  test('after a rank dies, the next epoch serves on the survivors and the promoted spare', async () => {
    const before = mesh.view(ranked[0]!)!;
    const victim = ranked[2]!;
    await mesh.kill(victim);
    const survivors = mesh.nodes.filter((n) => n !== victim);
    await waitFor(
      'a view without the dead node, its rank held again, on every survivor',
      () =>
        survivors.every((n) => {
          const v = mesh.view(n);
          return v !== null && v.epoch > before.epoch && v.ranks.every((h) => h !== null && h.peerId !== victim.peerId);
        }),
      15_000,
    );
    const view = mesh.view(survivors[0]!)!;
    const serving = view.ranks.map((h) => mesh.nodes.find((n) => n.peerId === h!.peerId)!);
    expect(serving).toContain(spare);
    await waitFor(
      'every rank serving the new epoch',
      async () => (await Promise.all(serving.map(rankStatus))).every((s) => s.serving && s.epoch === mesh.view(serving[0]!)!.epoch),
      10_000,
    );
    const reqs = requests(12, 'after', 5);
    const want = await singleRankOutputs(reqs);
    const answers = await Promise.all(
      reqs.map(async (req, i) => {
        const res = await infer(serving[i % worldSize]!, { id: req.id, input: req.input });
        expect(res.status).toBe(200);
        const body = (await res.json()) as InferResult;
        expect(body.rank).toBe(i % worldSize);
        return body;
      }),
    );
    expect(new Map(answers.map((a) => [a.id, a.output]))).toEqual(want);
  }, 30_000);
});

describe('a rank that cannot serve', () => {
  let pair: InprocMesh;

  beforeAll(async () => {
    pair = await InprocMesh.start({
      nodes: 2,
      settings: { rankQueueCapacity: 3, rankRequestTimeoutMs: 1500, rankRetryMs: 200, rankConnectTimeoutMs: 500, dataPlaneAnnounceIntervalMs: 200 },
    });
    await waitFor('both ranks serving', async () => (await Promise.all(pair.nodes.map(rankStatus))).every((s) => s.serving), 12_000);
  }, 30_000);

  afterAll(async () => {
    await pair?.stop();
  });

  test('keeps its queue, answers 504 past the deadline, 429 when full, 503 when stopping', async () => {
    const [survivor, dead] = pair.nodes as [InprocNode, InprocNode];
    expect((await infer(survivor, { input: [1, 2] })).status).toBe(200);
    // One of two cannot remove the other (no majority), so the survivor keeps its rank and
    // cannot build a communicator: it holds requests without running them.
    await pair.kill(dead);
    await waitFor('the survivor to stop serving', async () => !(await rankStatus(survivor)).serving, 5000);
    const late = await Promise.all([infer(survivor, { id: 'a', input: [3] }), infer(survivor, { id: 'b', input: [4] })]);
    for (const res of late) {
      expect(res.status).toBe(504);
      expect(((await res.json()) as { error: { message: string } }).error.message).toContain('stays queued');
    }
    const status = await rankStatus(survivor);
    expect(status.rank).not.toBeNull();
    expect(status.queueLength).toBe(2);
    expect(status.requests.timedOut).toBe(2);
    const waiting = infer(survivor, { id: 'c', input: [5] });
    await waitFor('the third request to be queued', async () => (await rankStatus(survivor)).queueLength === 3, 1000);
    const full = await infer(survivor, { input: [6] });
    expect(full.status).toBe(429);
    expect(full.headers.get('retry-after')).toBe('1');
    expect((await rankStatus(survivor)).queueLength).toBe(3);
    // Stopping the node answers the request still waiting at once, not at its deadline.
    const stopStarted = performance.now();
    await pair.kill(survivor);
    expect(performance.now() - stopStarted).toBeLessThan(1500);
    const stopped = await waiting;
    expect(stopped.status).toBe(503);
    expect(((await stopped.json()) as { error: { message: string } }).error.message).toContain('stopping');
  });
});

describe('a rank still warming up', () => {
  let solo: InprocMesh;

  afterAll(async () => {
    await solo?.stop();
  });

  test('answers 503 with its warm-up progress, then serves alone with the single-rank outputs', async () => {
    solo = await InprocMesh.start({ nodes: 1, settings: { engineWarmUpMs: 1500 } });
    const node = solo.nodes[0]!;
    await waitFor('the one-node view', () => solo.view(node) !== null, 5000);
    const res = await infer(node, { input: [1, 2, 3] });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain('warming up');
    const warming = await rankStatus(node);
    expect(warming.rank).toBe(0);
    expect(warming.serving).toBe(false);
    expect(warming.warmUp.fraction).toBeLessThan(1);
    expect(warming.requests.accepted).toBe(0);
    await waitFor('the rank to serve', async () => (await rankStatus(node)).serving, 10_000);
    expect((await rankStatus(node)).warmUp).toEqual({ phase: 'ready', fraction: 1 });
    const reqs = requests(4, 'solo', 2);
    const want = await singleRankOutputs(reqs);
    const answers = await Promise.all(reqs.map(async (req) => (await (await infer(node, req)).json()) as InferResult));
    expect(new Map(answers.map((a) => [a.id, a.output]))).toEqual(want);
  }, 20_000);
});

describe('a restarted node', () => {
  let trio: InprocMesh;

  afterAll(async () => {
    await trio?.stop();
  });

  test('warms up alone, takes its rank back in a new epoch and serves the single-rank outputs', async () => {
    trio = await InprocMesh.start({ nodes: 3, settings: { dataPlaneAnnounceIntervalMs: 200, rankRetryMs: 200, rankConnectTimeoutMs: 3000 } });
    await waitFor('three ranks serving', async () => (await Promise.all(trio.nodes.map(rankStatus))).every((s) => s.serving), 12_000);
    const first = (await rankStatus(trio.nodes[1]!)).epoch!;
    await trio.kill(trio.nodes[1]!);
    // Same data directory, so the same identity: a new incarnation of a known peer.
    const back = await trio.startNode(1, trio.nodes[0]!.runtime.transport.addresses());
    await waitFor(
      'the restarted node serving with the others in a later epoch',
      async () => {
        const all = await Promise.all(trio.live().map(rankStatus));
        return all.length === 3 && all.every((s) => s.serving && s.epoch === all[0]!.epoch && s.epoch! > first);
      },
      15_000,
    );
    expect((await rankStatus(back)).rank).not.toBeNull();
    const reqs = requests(9, 'rejoined', 4);
    const want = await singleRankOutputs(reqs);
    const answers = await Promise.all(reqs.map(async (req, i) => (await (await infer(trio.live()[i % 3]!, req)).json()) as InferResult));
    expect(new Map(answers.map((a) => [a.id, a.output]))).toEqual(want);
  }, 30_000);
});
