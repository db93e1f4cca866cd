// The engine loop over real CPU communicators: three ranks with requests on each match a
// single-rank run, dummy steps keep an idle rank in lockstep, an abort keeps the queue for
// the next communicator, and the per-iteration hook runs only when flagged.
import { afterEach, describe, expect, test } from 'bun:test';
import { waitFor } from '../node/helpers.ts';
import type { CpuCommunicator, CpuDataPlane } from '../../ffi/comm/cpu.ts';
import type { EngineResult } from '../../node/engine/engine.ts';
import { createEngineLoop, type EngineLoop, type IterationStats, type LoopControl, QueueFullError, RequestRejectedError } from '../../node/engine/loop.ts';
import { createReferenceEngine, type ReferenceEngine } from '../../node/engine/reference.ts';
import { epochKey, planes, ring } from '../comm/helpers.ts';
import { requests } from './helpers.ts';

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

interface Rank {
  readonly engine: ReferenceEngine;
  readonly loop: EngineLoop;
  readonly stats: IterationStats[];
  readonly aborts: string[];
}

async function cluster(n: number, control?: LoopControl, idle: { idleWaitMs?: number; idleWaitMaxMs?: number } = {}): Promise<{ ranks: Rank[]; nodes: CpuDataPlane[]; comms: CpuCommunicator[] }> {
  const meshRanks = Array.from({ length: n }, (_, i) => i);
  const nodes = await planes(n);
  const comms = await ring(nodes, epochKey(1), meshRanks);
  const ranks: Rank[] = [];
  for (let r = 0; r < n; r++) {
    const engine = createReferenceEngine({ meshRank: r, initialMeshRanks: meshRanks, collectiveDeadlineMs: 5000 });
    await engine.warmUp();
    const stats: IterationStats[] = [];
    const aborts: string[] = [];
    const loop = createEngineLoop({
      engine,
      comm: comms[r]!,
      validate: (q) => engine.validateRequest(q),
      onIteration: (s) => stats.push(s),
      onAbort: (why) => aborts.push(why),
      batchRequestsMax: 4,
      queueCapacity: 64,
      ...idle,
      ...(r === 0 && control ? { control } : {}),
    });
    ranks.push({ engine, loop, stats, aborts });
  }
  cleanup.push(async () => {
    for (const c of comms) c.abort('test over');
    await Promise.all(ranks.map((x) => x.loop.stop()));
    await Promise.all([...comms.map((c) => c.close()), ...nodes.map((p) => p.close())]);
  });
  return { ranks, nodes, comms };
}

async function singleRankOutputs(reqs: ReturnType<typeof requests>): Promise<Map<string, readonly number[]>> {
  const { ranks } = await cluster(1);
  ranks[0]!.loop.start();
  const res = await Promise.all(reqs.map((q) => ranks[0]!.loop.submit(q)));
  return new Map(res.map((r) => [r.id, r.output]));
}

describe('engine loop', () => {
  test('three ranks with requests on each give the single-rank outputs', async () => {
    const reqs = requests(30, 'q', 11);
    const want = await singleRankOutputs(reqs);
    const { ranks } = await cluster(3);
    for (const x of ranks) x.loop.start();
    // Requests arrive at every rank, unevenly, while the loops run.
    const pending: Promise<EngineResult>[] = [];
    reqs.forEach((q, i) => pending.push(ranks[i % 3 === 2 && i % 2 === 0 ? 0 : i % 3]!.loop.submit(q)));
    const results = await Promise.all(pending);
    expect(new Map(results.map((r) => [r.id, r.output]))).toEqual(want);
    // Every rank took part in every stepping iteration: steps and dummies line up (a rank
    // may still be finishing the last one when the final result arrives elsewhere).
    const stepping = () => ranks.map((x) => x.stats.filter((s) => s.kind !== 'idle').length);
    await waitUntil(() => new Set(stepping()).size === 1);
    expect(stepping()[0]).toBeGreaterThanOrEqual(Math.ceil(30 / 3 / 4));
    expect(ranks.every((x) => x.engine.exportState().iteration === ranks[0]!.engine.exportState().iteration)).toBe(true);
  });

  test('a rank without work dummy-steps while another steps', async () => {
    const { ranks } = await cluster(3);
    for (const x of ranks) x.loop.start();
    const reqs = requests(8, 'solo', 5);
    const results = await Promise.all(reqs.map((q) => ranks[1]!.loop.submit(q)));
    expect(results.map((r) => r.id)).toEqual(reqs.map((q) => q.id));
    // Batches of 4: two steps on rank 1, matched by two dummy steps on ranks 0 and 2 (whose
    // second dummy step may still be finishing when rank 1's results arrive).
    await waitUntil(() => ranks[0]!.loop.stats().dummy === 2 && ranks[2]!.loop.stats().dummy === 2);
    expect(ranks[1]!.loop.stats().step).toBe(2);
    expect(ranks[1]!.loop.stats().dummy).toBe(0);
    expect(ranks[0]!.loop.stats()).toMatchObject({ step: 0, dummy: 2 });
    expect(ranks[2]!.loop.stats()).toMatchObject({ step: 0, dummy: 2 });
    const steps = ranks[1]!.stats.filter((s) => s.kind === 'step');
    expect(steps.map((s) => s.batchRequests)).toEqual([4, 4]);
    expect(steps.every((s) => s.iterationMs >= 0 && s.batchTokens > 0)).toBe(true);
  });

  test('an abort keeps queued requests; a new communicator finishes them', async () => {
    const { ranks, nodes } = await cluster(2);
    // Not started yet: requests wait in the queue.
    const reqs = requests(6, 'keep', 8);
    const results = reqs.map((q, i) => ranks[i % 2]!.loop.submit(q));
    const comm0 = ranks[0]!.loop.communicator;
    comm0.abort('view change');
    for (const x of ranks) x.loop.start();
    await waitUntil(() => ranks.every((x) => x.loop.status.code === 'aborted'));
    expect(ranks[0]!.aborts[0]).toContain('view change');
    expect(ranks.reduce((a, x) => a + x.loop.queueLength, 0)).toBe(6);
    // The next epoch's communicators, on the same data planes.
    const next = await ring(nodes, epochKey(2), [0, 1]);
    cleanup.push(async () => {
      for (const c of next) c.abort('test over');
      await Promise.all(next.map((c) => c.close()));
    });
    ranks.forEach((x, r) => x.loop.resume(next[r]!));
    const want = await singleRankOutputs(reqs);
    expect(new Map((await Promise.all(results)).map((r) => [r.id, r.output]))).toEqual(want);
  });

  test('the hook runs only when flagged, at an iteration boundary', async () => {
    let runs = 0;
    const control = {
      pending: false,
      async run() {
        runs += 1;
        control.pending = false;
      },
    };
    const { ranks } = await cluster(2, control);
    for (const x of ranks) x.loop.start();
    await waitUntil(() => ranks[0]!.stats.length >= 5);
    expect(runs).toBe(0);
    control.pending = true;
    await waitUntil(() => runs === 1 && ranks[0]!.stats.length >= 10);
    expect(runs).toBe(1);
  });

  test('invalid and excess requests are refused at submission', async () => {
    const { ranks } = await cluster(1);
    const loop = ranks[0]!.loop;
    await expect(loop.submit({ id: 'bad', pipeline: 'p', input: [999] })).rejects.toBeInstanceOf(RequestRejectedError);
    const accepted = requests(64, 'fill').map((q) => loop.submit(q));
    await expect(loop.submit({ id: 'one-too-many', pipeline: 'p', input: [1] })).rejects.toBeInstanceOf(QueueFullError);
    loop.start();
    expect((await Promise.all(accepted)).length).toBe(64);
  });

  test('stop leaves queued requests queued, and the idle wait wakes on submit', async () => {
    const { ranks } = await cluster(1);
    const loop = ranks[0]!.loop;
    loop.start();
    await waitUntil(() => ranks[0]!.stats.length >= 3);
    const t0 = performance.now();
    await loop.submit(requests(1, 'wake')[0]!);
    expect(performance.now() - t0).toBeLessThan(1000);
    await loop.stop();
    expect(loop.status.code).toBe('stopped');
    const later = loop.submit(requests(1, 'later')[0]!);
    expect(loop.queueLength).toBe(1);
    loop.start();
    expect((await later).id).toBe('later-0');
  });
});

describe('idle waits', () => {
  test("a rank asleep in a long idle wait joins a peer's all-reduce at once", async () => {
    // Every idle wait lasts 30 s unless something ends it: work at this rank, or (CPU
    // backend) a peer starting the next collective.
    const { ranks } = await cluster(3, undefined, { idleWaitMs: 30_000, idleWaitMaxMs: 30_000 });
    for (const r of ranks) r.loop.start();
    // Past the first all-reduce, every rank is in its 30 s wait.
    await waitUntil(() => ranks.every((r) => r.loop.idleWaiting));
    const t0 = performance.now();
    const result = await ranks[1]!.loop.submit(requests(1, 'woken')[0]!);
    const elapsedMs = performance.now() - t0;
    expect(result.id).toBe('woken-0');
    expect(elapsedMs).toBeLessThan(5000);
    // Ranks 0 and 2 had no work: they took part through dummy steps they were woken for.
    await waitUntil(() => ranks[0]!.loop.stats().dummy > 0 && ranks[2]!.loop.stats().dummy > 0);
  });
});

const waitUntil = (cond: () => boolean): Promise<void> => waitFor('the condition', cond, 5000);
