// Deferred join and hot spares on real node processes: 4 ranks serve requests while one is killed (-9) and restarted with the same command — it warms up alone and is admitted back, or a spare takes its rank — with no request lost and every output equal to a single-rank run; a joiner that stalls and dies in warm-up costs the ranks no rebuild; STOP with a spare waiting ends every process with 0, and a node started on the closed mesh's data exits 0.
import { afterEach, describe, expect, test } from 'bun:test';
import { CpuDataPlane, createCpuCommunicator } from '../../ffi/comm/cpu.ts';
import type { EngineRequest } from '../../node/engine/engine.ts';
import { createReferenceEngine } from '../../node/engine/reference.ts';
import type { StatusBody } from '../../node/api/status.ts';
import type { InferResult, RankStatus } from '../../node/rank/host.ts';
import { ProcCluster, type ProcNode } from '../../scripts/lib/proc-cluster.ts';
import { requests } from '../engine/helpers.ts';
import { waitFor } from '../node/helpers.ts';

const token = 'bench-token';
const env = {
  RANKMESH_ENGINE_WARM_UP_MS: '1500',
  RANKMESH_DATA_PLANE_ANNOUNCE_INTERVAL_MS: '200',
  RANKMESH_RANK_RETRY_MS: '200',
  RANKMESH_RANK_CONNECT_TIMEOUT_MS: '5000',
  RANKMESH_CLOSED_GRACE_MS: '500',
};
let cluster: ProcCluster | undefined;

afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

async function json<T>(node: ProcNode, path: string): Promise<T | null> {
  try {
    const res = await fetch(`${node.httpUrl}${path}`, { signal: AbortSignal.timeout(2000) });
    return res.ok ? ((await res.json()) as T) : null;
  } catch {
    return null;
  }
}

const rankOf = (node: ProcNode) => json<RankStatus>(node, '/v1/rank');
const statusOf = (node: ProcNode) => json<StatusBody>(node, '/v1/status');

/** Every node of `nodes` serves one epoch; returns them ordered by the rank they hold. */
async function allServing(nodes: readonly ProcNode[], timeoutMs: number): Promise<ProcNode[]> {
  let statuses: (RankStatus | null)[] = [];
  await waitFor(
    `${nodes.length} ranks serving one epoch`,
    async () => {
      statuses = await Promise.all(nodes.map(rankOf));
      return statuses.every((s) => s !== null && s.serving && s.epoch === statuses[0]!.epoch);
    },
    timeoutMs,
  );
  return nodes.map((n, i) => ({ n, rank: statuses[i]!.rank! })).sort((a, b) => a.rank - b.rank).map((x) => x.n);
}

/**
 * A client that keeps requests flowing while the test kills and restarts nodes, until
 * finish(): it cycles through `reqs` (each pass with fresh ids), each request goes to the next
 * node in turn and, if that node is dead, holds no rank or cannot serve yet, is retried on the
 * next one (edge re-dispatch stands in here). Every request issued ends with its result or the
 * test fails: none may be lost.
 */
class Load {
  readonly results = new Map<string, InferResult>();
  issued = 0;
  readonly servedBy = new Map<string, number>();
  retries = 0;
  private next = 0;
  private running = true;
  private readonly workers: Promise<void>[] = [];

  constructor(
    private readonly nodes: () => readonly ProcNode[],
    private readonly reqs: readonly EngineRequest[],
    concurrency: number,
  ) {
    for (let w = 0; w < concurrency; w++) this.workers.push(this.work(w));
  }

  /** Stops issuing new requests and waits for every issued one to finish. */
  async finish(): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
  }

  /** Waits until `count` more requests completed. */
  async progress(count: number, timeoutMs: number): Promise<void> {
    const target = this.results.size + count;
    await waitFor(`${count} more requests answered`, () => this.results.size >= target, timeoutMs);
  }

  private async work(worker: number): Promise<void> {
    let target = worker;
    while (this.running) {
      const index = this.next++;
      const base = this.reqs[index % this.reqs.length]!;
      const req = { ...base, id: `${base.id}.${Math.floor(index / this.reqs.length)}` };
      this.issued++;
      const deadline = performance.now() + 60_000;
      for (;;) {
        const nodes = this.nodes();
        const node = nodes[target++ % nodes.length]!;
        const answer = await this.send(node, req);
        if (answer !== null) {
          this.results.set(req.id, answer);
          this.servedBy.set(node.name, (this.servedBy.get(node.name) ?? 0) + 1);
          break;
        }
        this.retries++;
        if (performance.now() > deadline) throw new Error(`request ${req.id} found no rank to run it within 60 s`);
        await Bun.sleep(20);
      }
    }
  }

  private async send(node: ProcNode, req: EngineRequest): Promise<InferResult | null> {
    try {
      const res = await fetch(`${node.httpUrl}/v1/rank/infer`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ id: req.id, input: req.input, pipeline: 'join-test' }),
        signal: AbortSignal.timeout(15_000),
      });
      if (res.status !== 200) return null;
      return (await res.json()) as InferResult;
    } catch {
      return null;
    }
  }
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

/** Every request issued was answered, each with the single-rank output of its input. */
function expectIdentical(load: Load, want: Map<string, readonly number[]>): void {
  expect(load.results.size).toBe(load.issued);
  for (const [id, result] of load.results) expect(result.output).toEqual(want.get(id.slice(0, id.lastIndexOf('.')))!);
}

describe('deferred join on real nodes', () => {
  test('4 ranks under load: one is killed and restarted with the same command, warms up alone, is admitted to its old rank and adopts state from the lowest healthy rank', async () => {
    cluster = await ProcCluster.start({ nodes: 4, worldSize: 4, env });
    const byRank = await allServing(cluster.nodes, 60_000);
    const reqs = requests(240, 'rejoin', 21);
    const want = await singleRankOutputs(reqs);
    const live = new Set(cluster.nodes);
    const load = new Load(() => cluster!.nodes.filter((n) => live.has(n)), reqs, 4);
    await load.progress(20, 30_000);

    const victim = byRank[2]!;
    const others = byRank.filter((n) => n !== victim);
    live.delete(victim);
    victim.process.kill('SIGKILL');
    await victim.process.exited;
    // The survivors serve an epoch without it.
    await allServing(others, 30_000);
    await load.progress(20, 30_000);

    cluster.spawn(victim);
    const seen = new Set<string>();
    await waitFor(
      'the restarted node serving its old rank again',
      async () => {
        const s = await statusOf(victim);
        if (s?.join) seen.add(s.join.phase);
        return s?.join?.phase === 'serving' && s.join.rank === 2;
      },
      60_000,
    );
    live.add(victim);
    // It warmed up alone (its status said so) before it held a rank again.
    expect(seen.has('warming')).toBe(true);
    expect(victim.logs.some((r) => r.msg === 'join phase: warming')).toBe(true);
    const joined = await rankOf(victim);
    expect(joined?.lastJoin?.plan).toBe('adopt');
    // The source is a healthy member, never the joiner itself: the lowest-ranked of those
    // furthest along (normally rank 0; a rank that finished one more step than rank 0 before
    // the old communicator was aborted is further along). Every rank computed the same plan.
    const source = joined?.lastJoin?.adoptedFrom;
    expect(source).not.toBe(2);
    expect([0, 1, 3]).toContain(source as number);
    const plans = await Promise.all(byRank.map(rankOf));
    expect(plans.map((p) => p?.lastJoin?.source)).toEqual([source, source, source, source]);
    await allServing(cluster.nodes, 30_000);
    await load.progress(30, 30_000);
    await load.finish();
    expectIdentical(load, want);
    expect(load.servedBy.get(victim.name) ?? 0).toBeGreaterThan(0);
  }, 180_000);

  test('a spare takes a killed rank in the change that removes it; the restarted node waits as a spare; no request lost', async () => {
    cluster = await ProcCluster.start({ nodes: 5, worldSize: 4, env });
    await waitFor('four ranks and a spare', async () => (await Promise.all(cluster!.nodes.map(statusOf))).filter((s) => s?.join?.phase === 'spare').length === 1, 60_000);
    const statuses = await Promise.all(cluster.nodes.map(statusOf));
    const spare = cluster.nodes[statuses.findIndex((s) => s?.join?.phase === 'spare')]!;
    const ranks = await allServing(cluster.nodes.filter((n) => n !== spare), 60_000);
    const reqs = requests(200, 'spare', 22);
    const want = await singleRankOutputs(reqs);
    const live = new Set(cluster.nodes);
    const load = new Load(() => cluster!.nodes.filter((n) => live.has(n)), reqs, 4);
    await load.progress(20, 30_000);

    const victim = ranks[1]!;
    live.delete(victim);
    victim.process.kill('SIGKILL');
    await victim.process.exited;
    await waitFor('the spare serving rank 1', async () => (await rankOf(spare))?.rank === 1 && (await rankOf(spare))?.serving === true, 30_000);
    // The view that removed the dead rank already had the spare in it: no hole in the mask.
    const views = spare.logs.filter((r) => r.msg === 'view committed');
    expect(views.every((r) => r.mask === 'f')).toBe(true);
    expect((await rankOf(spare))?.lastJoin?.adoptedFrom).toBe(0);

    cluster.spawn(victim);
    await waitFor('the restarted node waiting as a spare', async () => (await statusOf(victim))?.join?.phase === 'spare', 60_000);
    live.add(victim);
    await load.progress(30, 30_000);
    await load.finish();
    expectIdentical(load, want);
    expect(load.servedBy.get(spare.name) ?? 0).toBeGreaterThan(0);
  }, 180_000);

  test('a joiner that stalls in warm-up and then dies costs the ranks nothing: they keep their communicator and serve throughout', async () => {
    const local = { ...env };
    cluster = await ProcCluster.start({ nodes: 3, worldSize: 3, env: local });
    const byRank = await allServing(cluster.nodes, 60_000);
    const victim = byRank[1]!;
    const healthy = byRank.filter((n) => n !== victim);
    victim.process.kill('SIGKILL');
    await victim.process.exited;
    await allServing(healthy, 30_000);
    const builds = () => healthy.map((n) => n.logs.filter((r) => r.msg === 'serving the epoch').length);
    const before = builds();
    const reqs = requests(120, 'stall', 23);
    const want = await singleRankOutputs(reqs);
    const load = new Load(() => healthy, reqs, 2);
    // The same command, but this start's warm-up never ends within the test.
    local.RANKMESH_ENGINE_WARM_UP_MS = '600000';
    cluster.spawn(victim);
    await waitFor('the joiner waiting as a spare while it warms up', async () => (await statusOf(victim))?.join?.phase === 'warming' && (await statusOf(healthy[0]!)) !== null && (await json<{ spares: unknown[] }>(healthy[0]!, '/v1/view'))?.spares.length === 1, 30_000);
    await load.progress(20, 30_000);
    victim.process.kill('SIGKILL');
    await victim.process.exited;
    await waitFor('the dead joiner gone from the spares', async () => (await json<{ spares: unknown[] }>(healthy[0]!, '/v1/view'))?.spares.length === 0, 30_000);
    await load.progress(20, 30_000);
    await load.finish();
    expectIdentical(load, want);
    // Two view changes (spare added, spare removed), and no rank rebuilt its communicator.
    expect(builds()).toEqual(before);
    expect(load.retries).toBe(0);
  }, 120_000);

  test('STOP with a spare waiting: every process, the spare included, exits 0; a node started again on the closed mesh exits 0', async () => {
    cluster = await ProcCluster.start({ nodes: 5, worldSize: 4, env });
    await waitFor('four ranks and a spare', async () => (await Promise.all(cluster!.nodes.map(statusOf))).filter((s) => s?.join?.phase === 'spare').length === 1, 60_000);
    const spare = cluster.nodes[(await Promise.all(cluster.nodes.map(statusOf))).findIndex((s) => s?.join?.phase === 'spare')]!;
    await allServing(cluster.nodes.filter((n) => n !== spare), 60_000);
    const control = async (command: string) =>
      fetch(`${cluster!.nodes[0]!.httpUrl}/v1/control/${command}`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(30_000) });
    expect((await control('pause')).status).toBe(200);
    await control('stop').catch(() => null);
    const codes = await Promise.race([Promise.all(cluster.nodes.map((n) => n.process.exited)), Bun.sleep(30_000).then(() => null)]);
    expect(codes).toEqual([0, 0, 0, 0, 0]);
    expect(spare.logs.some((r) => typeof r.msg === 'string' && r.msg.startsWith('the mesh closed (STOP) while this node waited as a spare'))).toBe(true);

    // Started again with the same command, a node of the closed mesh does not form a new one.
    const again = cluster.nodes[1]!;
    cluster.spawn(again);
    expect(await Promise.race([again.process.exited, Bun.sleep(30_000).then(() => null)])).toBe(0);
    expect(again.logs.some((r) => typeof r.msg === 'string' && r.msg.includes('closed by STOP') && r.msg.includes('--new-generation'))).toBe(true);
  }, 120_000);
});
