// Pipelines on the ranks, on four real in-process nodes: two pipelines signalled at the same moment each get a group of ranks that wakes up on its own model (outputs equal a single-rank run of that pipeline's model, each request on a rank of its pipeline), and closing one pipeline's demand moves its ranks to the other — drained, model swapped, regrouped — with every request sent across the switch answered once and correctly.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { CpuDataPlane, createCpuCommunicator } from '../../ffi/comm/cpu.ts';
import type { AgreedPlan } from '../../mesh/demand.ts';
import { createReferenceEngine } from '../../node/engine/reference.ts';
import { InprocMesh, type InprocNode } from '../../scripts/lib/inproc-mesh.ts';
import { waitFor } from '../node/helpers.ts';

const token = 'inproc-test-token';
const settings = {
  pipelines: ['a', 'b'],
  planRoundIntervalMs: 100,
  demandSyncIntervalMs: 200,
  dataPlaneAnnounceIntervalMs: 200,
  rankRetryMs: 200,
  rankConnectTimeoutMs: 5000,
};
let mesh: InprocMesh;

async function call(node: InprocNode, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${node.httpUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: await res.json() };
}

function inputOf(i: number): number[] {
  return Array.from({ length: 1 + (i % 9) }, (_, k) => (i * 37 + k * 11) % 256);
}

/** The outputs of `pipeline`'s model alone on one rank. */
async function singleRank(pipeline: string, inputs: readonly (readonly number[])[]): Promise<(readonly number[])[]> {
  const plane = await CpuDataPlane.listen({ meshId: 'solo', meshKey: new Uint8Array(32).fill(1) });
  const comm = await createCpuCommunicator({ dataPlane: plane, key: { meshId: 'solo', generation: 1, epoch: 1 }, rank: 0, meshRanks: [0], peers: [] });
  const engine = createReferenceEngine({ model: { seed: 1 }, pipeline });
  await engine.warmUp();
  const results = await engine.step(inputs.map((input, i) => ({ id: `solo-${i}`, pipeline, input })), comm);
  await comm.close();
  await plane.close();
  await engine.teardown();
  return results.map((r) => r.output);
}

const planOf = (n: InprocNode): AgreedPlan | null => n.runtime.demand.plans.current();
const ranksOf = (p: AgreedPlan | null, pipeline: string): number[] => (p?.assignment ?? []).filter(([, x]) => x === pipeline).map(([r]) => r);
/** Every node holds one plan (same round and assignment): returns it, else null. */
function agreedPlan(): AgreedPlan | null {
  const first = planOf(mesh.nodes[0]!);
  return first !== null && mesh.nodes.every((n) => JSON.stringify(planOf(n)) === JSON.stringify(first)) ? first : null;
}
/** Every rank serves what the agreed plan gives it, on a communicator of exactly its group. */
function groupsServing(p: AgreedPlan): boolean {
  return mesh.nodes.every((n) => {
    const s = n.runtime.rank.rankStatus();
    const mine = p.assignment.find(([r]) => r === s.rank)?.[1];
    return s.serving && mine !== undefined && s.serves === mine && JSON.stringify(s.group) === JSON.stringify(ranksOf(p, mine ?? ''));
  });
}

describe('pipelines switching ranks on four real nodes', () => {
  const inputs = Array.from({ length: 40 }, (_, i) => inputOf(i));
  const want: Record<string, (readonly number[])[]> = {};

  beforeAll(async () => {
    want.a = await singleRank('a', inputs);
    want.b = await singleRank('b', inputs);
    mesh = await InprocMesh.start({ nodes: 4, settings });
    await waitFor('a full view, a first plan round and every rank serving', () => mesh.nodes.every((n) => mesh.view(n)?.ranks.every((h) => h !== null) && planOf(n) !== null && n.runtime.rank.rankStatus().serving), 20_000);
  }, 40_000);

  afterAll(async () => {
    await mesh?.stop();
  });

  test('the two pipelines have different models', () => {
    // Otherwise the output checks below could not tell a request served on the wrong model.
    const differ = inputs.filter((_, i) => JSON.stringify(want.a![i]) !== JSON.stringify(want.b![i])).length;
    expect(differ).toBeGreaterThan(inputs.length / 2);
  });

  test('two pipelines signalled at once both wake up, and each request runs on its own pipeline ranks and model', async () => {
    const [ra, rb] = await Promise.all([
      call(mesh.nodes[0]!, 'POST', '/v1/pipelines/a/demand', { steps: 1000, id: 'sw-a', timeoutMs: 15_000 }),
      call(mesh.nodes[1]!, 'POST', '/v1/pipelines/b/demand', { steps: 1000, id: 'sw-b', timeoutMs: 15_000 }),
    ]);
    expect([ra.status, rb.status]).toEqual([201, 201]);
    // The call returns only once a rank of the pipeline reports serving it.
    expect(ra.json.awake.length).toBeGreaterThan(0);
    expect(rb.json.awake.length).toBeGreaterThan(0);
    for (const r of [ra, rb]) for (const rank of r.json.awake) expect(r.json.ranks).toContain(rank);
    await waitFor('one agreed plan of two ranks each, every group serving', () => {
      const p = agreedPlan();
      return p !== null && ranksOf(p, 'a').length === 2 && ranksOf(p, 'b').length === 2 && groupsServing(p);
    }, 15_000);
    const plan = agreedPlan()!;
    const sends = Array.from({ length: 16 }, (_, i) => {
      const pipeline = i % 2 === 0 ? 'a' : 'b';
      return call(mesh.nodes[i % 4]!, 'POST', '/v1/generate', { input: inputs[i], pipeline }).then((r) => ({ i, pipeline, ...r }));
    });
    for (const r of await Promise.all(sends)) {
      expect([r.i, r.status, r.json.status]).toEqual([r.i, 200, 'done']);
      expect([r.i, r.json.output]).toEqual([r.i, want[r.pipeline]![r.i]]);
      expect(ranksOf(plan, r.pipeline)).toContain(r.json.rank);
    }
    // A rank refuses another pipeline's request outright (nothing queued): the ingress sends it on.
    const aRank = mesh.nodes.find((n) => n.runtime.rank.rankStatus().serves === 'a')!;
    const accepted = aRank.runtime.rank.rankStatus().requests.accepted;
    const refused = await call(aRank, 'POST', '/v1/rank/infer', { input: inputs[0], pipeline: 'b' });
    expect(refused.status).toBe(503);
    expect(refused.json.error.message).toMatch(/serves a .*not pipeline b/);
    expect(aRank.runtime.rank.rankStatus().requests.accepted).toBe(accepted);
  }, 40_000);

  test('closing one pipeline moves its ranks to the other: nothing lost, nothing on the wrong model', async () => {
    const before = agreedPlan()!;
    const bRanksBefore = ranksOf(before, 'b');
    // b's traffic flows through the whole switch, from every node.
    const results: { i: number; status: number; json: any }[] = [];
    let sending = true;
    let next = 0;
    const workers = mesh.nodes.map(async (node) => {
      while (sending) {
        const i = next++ % inputs.length;
        results.push({ i, ...(await call(node, 'POST', '/v1/generate', { input: inputs[i], pipeline: 'b' })) });
      }
    });
    await waitFor('b requests flowing', () => results.length >= 8, 10_000);
    const closed = await call(mesh.nodes[2]!, 'DELETE', '/v1/pipelines/a/demand/sw-a');
    expect(closed.json).toMatchObject({ changed: true, record: { closed: true } });
    await waitFor('a plan giving b every rank, and every rank serving b in one group', () => {
      const p = agreedPlan();
      return p !== null && ranksOf(p, 'b').length === 4 && groupsServing(p);
    }, 20_000);
    const atSwitch = results.length;
    await waitFor('more b requests answered after the switch', () => results.length >= atSwitch + 8, 10_000);
    sending = false;
    await Promise.all(workers);
    for (const r of results) {
      expect([r.i, r.status, r.json.status]).toEqual([r.i, 200, 'done']);
      expect([r.i, r.json.output]).toEqual([r.i, want.b![r.i]]);
    }
    // The ranks that served a switched; b's own ranks kept serving b (they only grew their group).
    const switched = mesh.nodes.filter((n) => !bRanksBefore.includes(n.runtime.rank.rankStatus().rank!));
    expect(switched.length).toBe(2);
    // b now runs on all four ranks: a node's round-robin reaches each of them.
    const used = new Set<number>();
    for (let i = 0; i < 8; i++) {
      const r = await call(mesh.nodes[0]!, 'POST', '/v1/generate', { input: inputs[i], pipeline: 'b' });
      expect([r.status, r.json.status, r.json.output]).toEqual([200, 'done', want.b![i]]);
      used.add(r.json.rank);
    }
    expect([...used].sort()).toEqual([0, 1, 2, 3]);
    const b = await call(mesh.nodes[3]!, 'GET', '/v1/pipelines');
    expect(b.json.pipelines.find((p: any) => p.name === 'b').awake).toEqual([0, 1, 2, 3]);
    // No request failed anywhere: every one was answered once, as done.
    for (const n of mesh.nodes) expect(n.runtime.ingress.counters.failed).toBe(0);
  }, 40_000);

  test('new demand takes ranks from a busy pipeline: its queued requests are given back and finish on its remaining ranks', async () => {
    const results: { pipeline: string; i: number; status: number; json: any }[] = [];
    let sending = true;
    let next = 0;
    // Several requests in flight per node keep the queues of b's ranks non-empty when they move.
    const workers = [...mesh.nodes, ...mesh.nodes, ...mesh.nodes].map(async (node) => {
      while (sending) {
        const i = next++ % inputs.length;
        results.push({ pipeline: 'b', i, ...(await call(node, 'POST', '/v1/generate', { input: inputs[i], pipeline: 'b' })) });
      }
    });
    await waitFor('b requests flowing', () => results.length >= 8, 10_000);
    const ra = await call(mesh.nodes[1]!, 'POST', '/v1/pipelines/a/demand', { steps: 1000, id: 'sw-a2', timeoutMs: 15_000 });
    expect(ra.status).toBe(201);
    expect(ra.json.awake.length).toBeGreaterThan(0);
    await waitFor('two ranks each again, every group serving', () => {
      const p = agreedPlan();
      return p !== null && ranksOf(p, 'a').length === 2 && ranksOf(p, 'b').length === 2 && groupsServing(p);
    }, 20_000);
    const plan = agreedPlan()!;
    const atSwitch = results.length;
    await waitFor('more b requests answered after the switch', () => results.length >= atSwitch + 8, 10_000);
    const aAnswers = await Promise.all(Array.from({ length: 6 }, (_, i) => call(mesh.nodes[i % 4]!, 'POST', '/v1/generate', { input: inputs[i], pipeline: 'a' }).then((r) => ({ pipeline: 'a', i, ...r }))));
    sending = false;
    await Promise.all(workers);
    for (const r of [...results, ...aAnswers]) {
      expect([r.pipeline, r.i, r.status, r.json.status]).toEqual([r.pipeline, r.i, 200, 'done']);
      expect([r.pipeline, r.i, r.json.output]).toEqual([r.pipeline, r.i, want[r.pipeline]![r.i]]);
    }
    for (const r of aAnswers) expect(ranksOf(plan, 'a')).toContain(r.json.rank);
    for (const n of mesh.nodes) expect(n.runtime.ingress.counters.failed).toBe(0);
    const givenBack = mesh.nodes.reduce((s, n) => s + n.runtime.rank.rankStatus().givenBack, 0);
    console.log(`b requests across the switch: ${results.length}; given back by switching ranks and re-dispatched: ${givenBack}`);
  }, 40_000);
});
