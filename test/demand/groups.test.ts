// Rank groups and models per pipeline, without a network: the group each rank computes from a plan (tables: no plan, a divided plan, an idle rank, a plan of an earlier epoch, demand ended), build keys that only grow, and an engine that really swaps its weights when it switches pipelines.
import { describe, expect, test } from 'bun:test';
import { CpuDataPlane, createCpuCommunicator } from '../../ffi/comm/cpu.ts';
import type { AgreedPlan } from '../../mesh/demand.ts';
import { BUILD_ATTEMPTS_MAX } from '../../node/rank/directory.ts';
import { createReferenceEngine } from '../../node/engine/reference.ts';
import { DEFAULT_PIPELINE, pipelineSeed } from '../../node/engine/weights.ts';
import { buildEpochOf, groupOf, PLAN_ROUNDS_MAX, servesPipeline } from '../../node/rank/pipelines.ts';

const view = { generation: 1, epoch: 3 };
const active = [0, 1, 2, 3];
function plan(seq: number, assignment: (string | null)[], demand: string[], epoch = 3): AgreedPlan {
  return { generation: 1, epoch, seq, assignment: assignment.map((x, r) => [r, x] as const), demand: demand.map((pipeline) => ({ pipeline, remaining: 10, priority: 0 })) };
}

describe('groupOf', () => {
  const cases: [string, AgreedPlan | null, number, string, number[], number][] = [
    // name, plan, rank, serves, group, plan round in the key
    ['no plan: one group serving all', null, 2, 'all', [0, 1, 2, 3], 0],
    ['a plan without demand that never assigned: round 0', plan(4, [null, null, null, null], []), 1, 'all', [0, 1, 2, 3], 0],
    ['divided: the ranks of a', plan(2, ['a', 'a', 'b', 'b'], ['a', 'b']), 1, 'a', [0, 1], 2],
    ['divided: the ranks of b', plan(2, ['a', 'a', 'b', 'b'], ['a', 'b']), 3, 'b', [2, 3], 2],
    ['interleaved ranks', plan(5, ['a', 'b', 'a', 'b'], ['a', 'b']), 2, 'a', [0, 2], 5],
    ['a rank the plan leaves out idles with the others left out', plan(2, ['a', null, 'a', null], ['a']), 3, 'idle', [1, 3], 2],
    ['demand ended after an assignment: one group, keyed by its round', plan(7, ['b', 'b', 'b', 'b'], []), 0, 'all', [0, 1, 2, 3], 7],
    ['a plan of the previous epoch carries over at round 0', plan(9, ['a', 'b', 'b', 'b'], ['a', 'b'], 2), 2, 'b', [1, 2, 3], 0],
  ];
  for (const [name, p, rank, serves, ranks, planRound] of cases) {
    test(name, () => {
      const g = groupOf(p, view, active, rank);
      expect(g.serves.kind === 'one' ? g.serves.pipeline : g.serves.kind).toBe(serves);
      expect(g.ranks).toEqual(ranks);
      expect(g.planRound).toBe(planRound);
      // Every member of the group computes the same group: groups are symmetric.
      for (const other of ranks) expect(groupOf(p, view, active, other)).toEqual(g);
    });
  }

  test('a rank that left the view is in nobody\'s group', () => {
    const g = groupOf(plan(2, ['a', 'a', 'b', 'b'], ['a', 'b']), view, [0, 2, 3], 0);
    expect(g.ranks).toEqual([0]);
  });

  test('who takes which requests', () => {
    expect(servesPipeline({ kind: 'all' }, 'x')).toBe(true);
    expect(servesPipeline({ kind: 'one', pipeline: 'a' }, 'a')).toBe(true);
    expect(servesPipeline({ kind: 'one', pipeline: 'a' }, 'b')).toBe(false);
    expect(servesPipeline({ kind: 'idle' }, 'a')).toBe(false);
  });

  test('build keys grow with the epoch and the plan round, and stay exact integers', () => {
    const key = (epoch: number, round: number, attempt: number) => buildEpochOf(epoch, round) * BUILD_ATTEMPTS_MAX + attempt;
    expect(key(3, 2, 0)).toBeGreaterThan(key(3, 1, BUILD_ATTEMPTS_MAX - 1));
    expect(key(4, 0, 0)).toBeGreaterThan(key(3, PLAN_ROUNDS_MAX - 1, BUILD_ATTEMPTS_MAX - 1));
    expect(Number.isSafeInteger(key(9_000_000, PLAN_ROUNDS_MAX - 1, BUILD_ATTEMPTS_MAX - 1))).toBe(true);
  });
});

describe('a model per pipeline', () => {
  test('default keeps the configured seed; other pipelines get their own, the same on every node', () => {
    expect(pipelineSeed(1, DEFAULT_PIPELINE)).toBe(1);
    expect(pipelineSeed(1, 'a')).toBe(pipelineSeed(1, 'a'));
    expect(new Set([pipelineSeed(1, 'a'), pipelineSeed(1, 'b'), pipelineSeed(2, 'a'), 1]).size).toBe(4);
  });

  test('servePipeline swaps the weights: outputs follow the pipeline served, and come back identical', async () => {
    const plane = await CpuDataPlane.listen({ meshId: 'solo', meshKey: new Uint8Array(32).fill(1) });
    const comm = await createCpuCommunicator({ dataPlane: plane, key: { meshId: 'solo', generation: 1, epoch: 1 }, rank: 0, meshRanks: [0], peers: [] });
    const reqs = Array.from({ length: 12 }, (_, i) => ({ id: `r${i}`, pipeline: 'x', input: [i * 19 % 256, i * 7 % 256, 3] }));
    const run = async (engine: ReturnType<typeof createReferenceEngine>) => (await engine.step(reqs, comm)).map((r) => r.output);
    const engine = createReferenceEngine({ model: { seed: 1 } });
    await engine.warmUp();
    const asDefault = await run(engine);
    await engine.servePipeline('a');
    expect([engine.pipeline, engine.model.seed, engine.status]).toEqual(['a', pipelineSeed(1, 'a'), 'ready']);
    const asA = await run(engine);
    const fresh = createReferenceEngine({ model: { seed: 1 }, pipeline: 'a' });
    await fresh.warmUp();
    expect(asA).toEqual(await run(fresh));
    expect(asA).not.toEqual(asDefault);
    await engine.servePipeline(DEFAULT_PIPELINE);
    expect(await run(engine)).toEqual(asDefault);
    // Offloaded (SUSPENDED): the switch is recorded and reload loads the new model.
    await engine.offload();
    await engine.servePipeline('a');
    expect(engine.status).toBe('offloaded');
    await engine.reload();
    expect(await run(engine)).toEqual(asA);
    await engine.teardown();
    await expect(engine.servePipeline('b')).rejects.toThrow(/torn-down/);
    await fresh.teardown();
    await comm.close();
    await plane.close();
  });
});
