// Covers the chaos scenarios where network namespaces are not available (no root): five real
// nodes in one process (libp2p, the core, the rank side), cut apart by the transport's
// partition hook — an isolated node and a 2|3 split healed, a crashed and restarted node — while
// requests flow through every reachable node's rank; then agreement per epoch across every
// view any node committed, a minority that never advanced, and every request answered.
// test/mesh-node/partition.test.ts holds the plain 2|3 split without load.
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { activeMembers, InprocMesh, type InprocNode } from '../../scripts/lib/inproc-mesh.ts';
import { netnsUnavailableReason } from '../../scripts/lib/netns.ts';
import type { View } from '../../mesh/rawnode.ts';
import { canonicalJson } from './ns-cluster.ts';

const forced = process.env.CHAOS_INPROC === '1';
const netnsReason = netnsUnavailableReason();
const skip = netnsReason === undefined && !forced;
if (skip) console.log('test/chaos/inproc: skipped, network namespaces work here and netns.test.ts runs these scenarios with real processes (CHAOS_INPROC=1 runs it anyway)');
else console.log(`test/chaos/inproc: running in one process (${netnsReason ?? 'CHAOS_INPROC=1'})`);

const nodeCount = 5;
let mesh: InprocMesh;
/** Every view every incarnation committed, for the agreement audit at the end. */
const committed: { node: string; view: View }[] = [];

beforeAll(async () => {
  if (skip) return;
  mesh = await InprocMesh.start({ nodes: nodeCount, settings: { rankRequestTimeoutMs: 5000, rankConnectTimeoutMs: 3000 } });
  for (const node of mesh.nodes) record(node);
  await converged(mesh.nodes, 30_000);
}, 60_000);

afterAll(async () => {
  await mesh?.stop();
});

test.skipIf(skip)('isolate one and heal: the four move on, the one never advances, it is admitted again', async () => {
  const [victim, ...others] = mesh.nodes as [InprocNode, ...InprocNode[]];
  const load = startLoad(() => mesh.live().filter((n) => n !== victim));
  const before = epochOf(victim);
  await mesh.partition([victim], others);
  await waitUntil('the others to commit a view without the victim', () => others.every((n) => !activeMembers(mesh.view(n)).includes(victim.peerId)), 30_000);
  const core = victim.runtime.driver.core;
  const from = core.currentTick();
  await waitUntil('40 ticks at the victim', () => core.currentTick() >= from + 40, 30_000);
  expect(epochOf(victim)).toBe(before);
  mesh.heal();
  await converged(mesh.nodes, 30_000);
  const outcome = await load.stop();
  expect(outcome.lost).toBe(0);
  expect(outcome.completed).toBeGreaterThan(0);
  expectAgreement();
}, 90_000);

test.skipIf(skip)('crash and restart: the survivors remove the node, its new incarnation is admitted', async () => {
  const victim = mesh.nodes[nodeCount - 1]!;
  const others = mesh.nodes.filter((n) => n !== victim);
  const load = startLoad(() => mesh.live());
  await mesh.kill(victim);
  await waitUntil('the survivors to commit a view without the crashed node', () => others.every((n) => !activeMembers(mesh.view(n)).includes(victim.peerId)), 30_000);
  const restarted = await mesh.startNode(nodeCount - 1, mesh.nodes[0]!.runtime.transport.addresses());
  record(restarted);
  await converged(mesh.nodes, 30_000);
  const outcome = await load.stop();
  expect(outcome.lost).toBe(0);
  expect(outcome.completed).toBeGreaterThan(0);
  expectAgreement();
}, 90_000);

function record(node: InprocNode): void {
  node.runtime.driver.on('view', (view) => committed.push({ node: node.name, view }));
}

function epochOf(node: InprocNode): number {
  return mesh.view(node)?.epoch ?? 0;
}

function expectAgreement(): void {
  const byEpoch = new Map<string, string>();
  for (const { view } of committed) {
    const key = `${view.generation}/${view.epoch}`;
    const json = canonicalJson(view);
    expect(`${key} ${byEpoch.get(key) ?? json}`).toBe(`${key} ${json}`);
    byEpoch.set(key, json);
  }
}

async function converged(nodes: readonly InprocNode[], timeoutMs: number): Promise<void> {
  await waitUntil(
    'every node to hold one view with every rank active',
    () => {
      const views = nodes.map((n) => mesh.view(n));
      const first = views[0];
      return first !== null && first !== undefined && activeMembers(first).length === nodeCount && views.every((v) => v !== null && canonicalJson(v) === canonicalJson(first));
    },
    timeoutMs,
  );
}

async function waitUntil(what: string, condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(20);
  }
}

/** Requests to each reachable node's rank every 100 ms; lost: no answer within 15 s. */
function startLoad(entries: () => InprocNode[]): { stop(): Promise<{ completed: number; failed: number; lost: number }> } {
  const outcome = { completed: 0, failed: 0, lost: 0 };
  const pending = new Set<Promise<void>>();
  let n = 0;
  const timer = setInterval(() => {
    const list = entries();
    if (list.length === 0 || pending.size >= 16) return;
    const node = list[n++ % list.length]!;
    const done = (async () => {
      try {
        const res = await fetch(`${node.httpUrl}/v1/rank/infer`, {
          method: 'POST',
          headers: { authorization: 'Bearer inproc-test-token', 'content-type': 'application/json' },
          body: JSON.stringify({ input: [1, 2, 3, n % 200] }),
          signal: AbortSignal.timeout(15_000),
        });
        await res.text();
        if (res.status === 200) outcome.completed++;
        else outcome.failed++;
      } catch (err) {
        if ((err as Error).name === 'TimeoutError') outcome.lost++;
        else outcome.failed++;
      }
    })().finally(() => pending.delete(done));
    pending.add(done);
  }, 100);
  return {
    async stop() {
      clearInterval(timer);
      await Promise.all([...pending]);
      return outcome;
    },
  };
}
