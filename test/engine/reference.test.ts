// The reference engine: seeded weights, placement that follows the mask, outputs identical
// for 1–4 ranks over real CPU communicators, dummy steps, offload/reload and state adoption.
import { afterEach, describe, expect, test } from 'bun:test';
import type { CpuCommunicator } from '../../ffi/comm/cpu.ts';
import type { EngineRequest, EngineResult, WarmUpProgress } from '../../node/engine/engine.ts';
import { createCpuExpertBackend } from '../../node/engine/cpu-experts.ts';
import { expertsOf, placeExperts } from '../../node/engine/placement.ts';
import { createReferenceEngine, EngineInputError, type ReferenceEngine } from '../../node/engine/reference.ts';
import { expertWeights, uniform, Xoshiro128 } from '../../node/engine/weights.ts';
import { requests } from './helpers.ts';
import { epochKey, planes, ring } from '../comm/helpers.ts';

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

async function engines(meshRanks: number[]): Promise<ReferenceEngine[]> {
  const out = meshRanks.map((m) => createReferenceEngine({ meshRank: m, initialMeshRanks: meshRanks, collectiveDeadlineMs: 5000 }));
  await Promise.all(out.map((e) => e.warmUp()));
  return out;
}

async function communicators(meshRanks: number[], epoch = 1): Promise<CpuCommunicator[]> {
  const nodes = await planes(meshRanks.length);
  const comms = await ring(nodes, epochKey(epoch), meshRanks);
  open.push(...comms, ...nodes);
  return comms;
}

/** Splits `reqs` round-robin over the ranks, steps once everywhere, returns results by id. */
async function runSplit(es: ReferenceEngine[], comms: CpuCommunicator[], reqs: EngineRequest[]): Promise<Map<string, readonly number[]>> {
  const share = es.map((_, r) => reqs.filter((_, i) => i % es.length === r));
  const results = await Promise.all(es.map((e, r) => e.step(share[r]!, comms[r]!)));
  const out = new Map<string, readonly number[]>();
  for (const list of results) for (const res of list) out.set(res.id, res.output);
  return out;
}

describe('weights and placement', () => {
  test('the PRNG and weights are fixed by the seed', () => {
    const a = new Xoshiro128(42);
    const b = new Xoshiro128(42);
    const seqA = Array.from({ length: 5 }, () => a.next());
    expect(seqA).toEqual(Array.from({ length: 5 }, () => b.next()));
    expect(new Set(seqA).size).toBe(5);
    expect(uniform(1, 2, 10, 1)).toEqual(uniform(1, 2, 10, 1));
    expect(uniform(1, 2, 10, 1)).not.toEqual(uniform(1, 3, 10, 1));
    const m = { seed: 1, vocab: 16, hidden: 8, experts: 4, width: 8 };
    expect(expertWeights(m, 2).w1).toEqual(expertWeights(m, 2).w1);
  });

  test('placement is balanced, deterministic and moves few experts', () => {
    expect(placeExperts(8, [0])).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    const two = placeExperts(8, [0, 1]);
    expect(two).toEqual([0, 1, 0, 1, 0, 1, 0, 1]);
    const three = placeExperts(8, [0, 1, 2], two);
    // Experts 0-4 stay (each old rank keeps ceil(8/3) = 3), the overflow goes to rank 2.
    expect(three).toEqual([0, 1, 0, 1, 0, 1, 2, 2]);
    expect(placeExperts(8, [0, 1, 2], three)).toEqual(three);
    // Rank 1 leaves: its experts move, rank 0 and 2 keep theirs.
    const without1 = placeExperts(8, [0, 2], three);
    expect(without1.filter((r, e) => three[e] !== 1 && r !== three[e])).toEqual([]);
    expect(Math.max(expertsOf(without1, 0).length, expertsOf(without1, 2).length)).toBe(4);
    expect(() => placeExperts(8, [])).toThrow(RangeError);
    expect(() => placeExperts(8, [2, 1])).toThrow(RangeError);
  });

  test('the CPU expert backend refuses experts it does not hold', async () => {
    const be = createCpuExpertBackend();
    const m = { seed: 1, vocab: 16, hidden: 4, experts: 2, width: 3 };
    const w = expertWeights(m, 1);
    await be.load({ hidden: 4, width: 3, experts: [1], w1: [w.w1], w2: [w.w2] });
    const y = await be.forward(1, new Float32Array([1, 0, -1, 0.5]), 1);
    expect(y.length).toBe(4);
    await expect(be.forward(0, new Float32Array(4), 1)).rejects.toThrow('not loaded');
    await be.unload();
    await expect(be.forward(1, new Float32Array(4), 1)).rejects.toThrow('not loaded');
  });
});

describe('stepping', () => {
  test('1, 2, 3 and 4 ranks give byte-identical outputs', async () => {
    const reqs = requests(24, 'r');
    const [single] = await engines([0]);
    const [solo] = await communicators([0]);
    const reference = await single!.step(reqs, solo!);
    // The model does real work: many outputs differ from their inputs, and tokens differ.
    const changed = reference.flatMap((r, i) => r.output.filter((t, k) => t !== reqs[i]!.input[k])).length;
    expect(changed).toBeGreaterThan(10);
    const byId = new Map(reference.map((r) => [r.id, r.output]));
    for (const meshRanks of [[0, 1], [0, 2, 5], [1, 2, 3, 4]]) {
      const es = await engines(meshRanks);
      const comms = await communicators(meshRanks);
      const got = await runSplit(es, comms, reqs);
      expect(got).toEqual(byId);
      // Each rank holds a different share of the experts.
      const held = es.map((e) => expertsOf(e.exportState().placement, meshRanks[es.indexOf(e)]!));
      expect(held.flat().sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    }
  });

  test('dummy steps keep ranks matched when only one rank has work', async () => {
    const es = await engines([0, 1, 2]);
    const comms = await communicators([0, 1, 2]);
    const reqs = requests(6, 'd');
    const [results] = await Promise.all([es[1]!.step(reqs, comms[1]!), es[0]!.dummyStep(comms[0]!), es[2]!.dummyStep(comms[2]!)]);
    const [single] = await engines([0]);
    const [solo] = await communicators([0]);
    expect(results).toEqual(await single!.step(reqs, solo!));
    // Every rank advanced one iteration together.
    expect(es.map((e) => e.exportState().iteration)).toEqual([1, 1, 1]);
    // All-dummy iterations still advance in lockstep.
    await Promise.all(es.map((e, r) => e.dummyStep(comms[r]!)));
    expect(es.map((e) => e.exportState().iteration)).toEqual([2, 2, 2]);
  });

  test('offload drops the weights and reload restores identical outputs', async () => {
    const [engine] = await engines([0]);
    const [comm] = await communicators([0]);
    const reqs = requests(5, 'o');
    const before: EngineResult[] = await engine!.step(reqs, comm!);
    await engine!.offload();
    expect(engine!.status).toBe('offloaded');
    await expect(engine!.step(reqs, comm!)).rejects.toThrow('offloaded');
    await engine!.reload();
    expect(await engine!.step(reqs, comm!)).toEqual(before);
    await engine!.teardown();
    await expect(engine!.step(reqs, comm!)).rejects.toThrow('torn-down');
  });

  test('a joiner adopts the placement, and a new mask moves experts identically everywhere', async () => {
    // Ranks 0 and 1 serve; rank 2 warms up alone, adopts their state, and the mask grows.
    const es = await engines([0, 1]);
    const comms = await communicators([0, 1], 1);
    const reqs = requests(10, 'j');
    await runSplit(es, comms, reqs);
    const joiner = createReferenceEngine({ meshRank: 2, initialMeshRanks: [2] });
    await joiner.warmUp();
    joiner.adoptState(es[0]!.exportState());
    const grown = await communicators([0, 1, 2], 2);
    const all = [...es, joiner];
    const got = await runSplit(all, grown, reqs);
    const [single] = await engines([0]);
    const [solo] = await communicators([0]);
    expect(got).toEqual(new Map((await single!.step(reqs, solo!)).map((r) => [r.id, r.output])));
    const placements = all.map((e) => e.exportState().placement);
    expect(placements[2]).toEqual(placements[0]);
    expect(expertsOf(placements[0]!, 2).length).toBeGreaterThan(0);
    expect(new Set(all.map((e) => e.exportState().iteration)).size).toBe(1);
  });

  test('ranks that warmed up alone agree on one placement at their first step', async () => {
    const meshRanks = [0, 1, 2];
    const es = meshRanks.map((m) => createReferenceEngine({ meshRank: m, initialMeshRanks: [m] }));
    await Promise.all(es.map((e) => e.warmUp()));
    // Before the first step each one believes it holds every expert.
    expect(es.map((e, i) => expertsOf(e.exportState().placement, i).length)).toEqual([8, 8, 8]);
    const comms = await communicators(meshRanks);
    const reqs = requests(12, 'alone');
    const got = await runSplit(es, comms, reqs);
    const placements = es.map((e) => e.exportState().placement);
    expect(placements[1]).toEqual(placements[0]);
    expect(placements[2]).toEqual(placements[0]);
    expect(placements[0]).toEqual(placeExperts(8, meshRanks, [0, 0, 0, 0, 0, 0, 0, 0]));
    const [single] = await engines([0]);
    const [solo] = await communicators([0]);
    expect(got).toEqual(new Map((await single!.step(reqs, solo!)).map((r) => [r.id, r.output])));
  });

  test('a joiner that did not adopt state follows the ranks that have served', async () => {
    const es = await engines([0, 1]);
    const comms = await communicators([0, 1], 1);
    await runSplit(es, comms, requests(4, 'warm'));
    await runSplit(es, comms, requests(4, 'warm2'));
    const joiner = createReferenceEngine({ meshRank: 2, initialMeshRanks: [2] });
    await joiner.warmUp();
    const all = [...es, joiner];
    const grown = await communicators([0, 1, 2], 2);
    await runSplit(all, grown, requests(6, 'after'));
    expect(all.map((e) => e.exportState().iteration)).toEqual([3, 3, 3]);
    expect(joiner.exportState().placement).toEqual(placeExperts(8, [0, 1, 2], placeExperts(8, [0, 1])));
  });

  test('bad input is refused before any collective', async () => {
    const [engine] = await engines([0]);
    const [comm] = await communicators([0]);
    await expect(engine!.step([{ id: 'x', pipeline: 'p', input: [300] }], comm!)).rejects.toBeInstanceOf(EngineInputError);
    expect(engine!.validateRequest({ id: 'y', pipeline: 'p', input: [1.5] })).toContain('not in');
    expect(engine!.exportState().iteration).toBe(0);
    expect(() => engine!.adoptState({ placement: [0], iteration: 1 })).toThrow(EngineInputError);
  });

  test('warm-up reports progress and lasts at least warmUpMs', async () => {
    const seen: WarmUpProgress[] = [];
    const engine = createReferenceEngine({ warmUpMs: 150 });
    const t0 = performance.now();
    await engine.warmUp((p) => seen.push(p));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(149);
    expect(seen[0]!.fraction).toBe(0);
    expect(seen.at(-1)).toEqual({ phase: 'ready', fraction: 1 });
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.fraction).toBeGreaterThanOrEqual(seen[i - 1]!.fraction);
    expect(new Set(seen.map((p) => p.phase))).toContain('routing table');
  });
});
