// Covers the edge on real nodes: three ranks and a gateway take 1,000 requests spread over all four entry points while a rank is killed and restarted, and every request completes with exactly one result equal to a single-rank run; the gateway holds no rank and does not count toward worldSize.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { waitFor } from '../node/helpers.ts';
import { fullyServing, getRequest, inputOf, singleRankOutputs, submit, type TestCluster, TestCluster as Cluster } from './helpers.ts';

const worldSize = 3;
let cluster: TestCluster;

describe('edge ingress on real nodes', () => {
  beforeAll(async () => {
    cluster = await Cluster.start(['rank', 'rank', 'rank', 'gateway'], worldSize);
    await waitFor('three ranks serving and the gateway following the view', () => fullyServing(cluster, worldSize), 30_000);
  }, 40_000);

  afterAll(async () => {
    await cluster?.stop();
  });

  test('the gateway holds no rank, is no spare, and worldSize stays three', () => {
    const gateway = cluster.nodes[3]!;
    for (const node of cluster.nodes) {
      const view = cluster.view(node)!;
      expect(view.worldSize).toBe(worldSize);
      expect(view.ranks.some((h) => h?.peerId === gateway.peerId)).toBe(false);
      expect(view.spares).toEqual([]);
    }
    expect(() => gateway.runtime.rank).toThrow('a gateway holds no rank');
  });

  test('1,000 requests over every entry point, a rank killed and restarted: each completes once with the single-rank output', async () => {
    const total = 1000;
    const want = await singleRankOutputs(Array.from({ length: total }, (_, i) => inputOf(i)));
    const deadlineMs = performance.now() + 60_000;
    const victim = cluster.nodes[1]!;
    const results: ({ id: string; output: readonly number[]; rank: number } | undefined)[] = new Array(total);
    let completed = 0;
    const concurrency = 48;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < total) {
        const i = next++;
        const entry = cluster.nodes[i % cluster.nodes.length]!;
        results[i] = await submit(entry.httpUrl, i, i % 2 === 0 ? 'sync' : 'async', deadlineMs);
        completed++;
      }
    };
    const chaos = async (): Promise<void> => {
      await waitFor('a quarter of the requests done', () => completed >= total / 4, 30_000);
      await cluster.kill(victim);
      // The others commit a view without it, so its requests must move to other ranks.
      await waitFor('a view without the killed rank', () => cluster.nodes.filter((n) => n !== victim).every((n) => !cluster.view(n)!.ranks.some((h) => h?.peerId === victim.peerId)), 20_000);
      await cluster.launch(victim);
      await waitFor('the restarted node serving its rank again', () => fullyServing(cluster, worldSize), 30_000);
    };
    await Promise.all([...Array.from({ length: concurrency }, worker), chaos()]);

    expect(results.filter((r) => r !== undefined).length).toBe(total);
    expect(new Set(results.map((r) => r!.id)).size).toBe(total);
    for (let i = 0; i < total; i++) expect(results[i]!.output).toEqual(want[i]!);
    // Every rank served a share (round-robin) and the restarted incarnation served after it came back.
    const byRank = new Map<number, number>();
    for (const r of results) byRank.set(r!.rank, (byRank.get(r!.rank) ?? 0) + 1);
    expect([...byRank.keys()].sort()).toEqual([0, 1, 2]);
    // Exactly one result each: what GET shows is what the client was given, at every entry.
    for (let i = 0; i < total; i += 7) {
      const entry = cluster.nodes[i % cluster.nodes.length]!;
      const got = await getRequest(entry.httpUrl, results[i]!.id);
      expect(got.body).toMatchObject({ status: 'done', output: results[i]!.output, rank: results[i]!.rank });
    }
    // The killed rank's requests were dispatched again rather than lost.
    const redispatched = cluster.nodes.filter((n) => n !== victim).reduce((sum, n) => sum + n.runtime.ingress.counters.redispatched, 0);
    expect(redispatched).toBeGreaterThan(0);
  }, 90_000);
});
