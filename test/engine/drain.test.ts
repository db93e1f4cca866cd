// The engine loop's drain rule over real CPU communicators: a draining rank starts no queued
// request while the others keep stepping theirs, every rank parks at the same iteration once
// all are draining and none has work, nothing queued is lost across the pause, and a stop
// ends a parked loop at once.
import { afterEach, describe, expect, test } from 'bun:test';
import type { CpuCommunicator, CpuDataPlane } from '../../ffi/comm/cpu.ts';
import type { EngineRequest, EngineResult } from '../../node/engine/engine.ts';
import { createEngineLoop, type EngineLoop, type LoopLifecycle } from '../../node/engine/loop.ts';
import { createReferenceEngine } from '../../node/engine/reference.ts';
import { epochKey, planes, ring } from '../comm/helpers.ts';
import { waitFor } from '../node/helpers.ts';
import { requests } from './helpers.ts';

/** One rank's view of the lifecycle, flipped by the test at different moments per rank (gossip skew). */
class TestLifecycle implements LoopLifecycle {
  draining = false;
  parkedCalls = 0;
  private release = Promise.withResolvers<void>();

  parked(stopping: Promise<void>): Promise<void> {
    this.parkedCalls += 1;
    return Promise.race([this.release.promise, stopping]);
  }

  unpause(): void {
    this.draining = false;
    this.release.resolve();
    this.release = Promise.withResolvers<void>();
  }
}

interface Rank {
  readonly loop: EngineLoop;
  readonly lifecycle: TestLifecycle;
}

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function cluster(n: number): Promise<Rank[]> {
  const meshRanks = Array.from({ length: n }, (_, i) => i);
  const nodes: CpuDataPlane[] = await planes(n);
  const comms: CpuCommunicator[] = await ring(nodes, epochKey(1), meshRanks);
  const ranks: Rank[] = [];
  for (let r = 0; r < n; r++) {
    const engine = createReferenceEngine({ meshRank: r, initialMeshRanks: meshRanks, collectiveDeadlineMs: 5000 });
    await engine.warmUp();
    const lifecycle = new TestLifecycle();
    const loop = createEngineLoop({ engine, comm: comms[r]!, lifecycle, batchRequestsMax: 2, validate: (q) => engine.validateRequest(q) });
    ranks.push({ loop, lifecycle });
  }
  cleanup.push(async () => {
    for (const c of comms) c.abort('test over');
    await Promise.all(ranks.map((x) => x.loop.stop()));
    await Promise.all([...comms.map((c) => c.close()), ...nodes.map((p) => p.close())]);
  });
  return ranks;
}

async function outputsOf(reqs: EngineRequest[]): Promise<Map<string, readonly number[]>> {
  const [only] = await cluster(1);
  only!.loop.start();
  const results = await Promise.all(reqs.map((q) => only!.loop.submit(q)));
  return new Map(results.map((r) => [r.id, r.output]));
}

const until = (what: string, cond: () => boolean): Promise<void> => waitFor(what, cond, 10_000);

describe('drain rule', () => {
  test('a draining rank starts nothing new; all park together; queued work runs after unpause', async () => {
    const early = requests(6, 'early', 5);
    const late = requests(9, 'late', 6);
    const want = await outputsOf([...early, ...late]);
    const ranks = await cluster(3);
    for (const r of ranks) r.loop.start();

    const done = new Map<string, readonly number[]>();
    const track = (p: Promise<EngineResult>) => p.then((r) => done.set(r.id, r.output));
    await Promise.all(early.map((q, i) => track(ranks[i % 3]!.loop.submit(q))));

    // Rank 0 learns of the pause first: its new requests wait, while ranks 1 and 2 (not yet
    // draining) keep stepping theirs, rank 0 joining with dummy steps.
    ranks[0]!.lifecycle.draining = true;
    const pending: Promise<unknown>[] = [];
    late.forEach((q, i) => pending.push(track(ranks[i % 3]!.loop.submit(q))));
    const lateOn = (rank: number) => late.filter((_, i) => i % 3 === rank).map((q) => q.id);
    await until('ranks 1 and 2 finished their requests', () => [...lateOn(1), ...lateOn(2)].every((id) => done.has(id)));
    expect(lateOn(0).some((id) => done.has(id))).toBe(false);
    expect(ranks[0]!.loop.queueLength).toBe(3);
    expect(ranks.every((r) => r.lifecycle.parkedCalls === 0)).toBe(true);

    // The others learn of it: one all-reduce later every rank parks, at the same iteration.
    ranks[1]!.lifecycle.draining = true;
    ranks[2]!.lifecycle.draining = true;
    await until('every rank parked', () => ranks.every((r) => r.loop.parked));
    const iterations = ranks.map((r) => r.loop.stats());
    expect(new Set(iterations.map((s) => s.step + s.dummy + s.idle)).size).toBe(1);
    expect(ranks.map((r) => r.lifecycle.parkedCalls)).toEqual([1, 1, 1]);
    expect(ranks[0]!.loop.queueLength).toBe(3);

    // Requests that arrive while paused wait too; unpausing runs everything, nothing lost.
    const paused = requests(3, 'paused', 7);
    for (const q of paused) pending.push(track(ranks[1]!.loop.submit(q)));
    expect(ranks[1]!.loop.queueLength).toBe(3);
    for (const r of ranks) r.lifecycle.unpause();
    await Promise.all(pending);
    const wantPaused = await outputsOf(paused);
    expect(done).toEqual(new Map([...want, ...wantPaused]));
  });

  test('a pause with no work anywhere parks every rank; stop ends a parked loop', async () => {
    const ranks = await cluster(2);
    for (const r of ranks) r.loop.start();
    ranks[1]!.lifecycle.draining = true;
    ranks[0]!.lifecycle.draining = true;
    await until('both parked', () => ranks.every((r) => r.loop.parked));
    await Promise.all(ranks.map((r) => r.loop.stop()));
    expect(ranks.map((r) => r.loop.status.code)).toEqual(['stopped', 'stopped']);
    expect(ranks.every((r) => !r.loop.parked)).toBe(true);
  });
});
