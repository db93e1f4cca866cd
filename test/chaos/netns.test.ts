// Covers real node processes, each in its own network namespace, through a 2|3 split, an
// isolated node, one-way loss on one node, a kill -9 with restart and a STOP during a
// partition healed only after the closed majority's grace period, while requests flow through
// every reachable node; after each, the nodes' own records are audited (agreement per epoch, a
// minority that never advanced, every accepted request finished or reported failed) and every
// process exits 0 at the end.
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { NetnsLab, netnsUnavailableReason, nftUnavailableReason } from '../../scripts/lib/netns.ts';
import { exitViolations } from './accounting.ts';
import type { LoadDoor } from './load.ts';
import { chaosNodeSettings, NsCluster } from './ns-cluster.ts';
import { type ChaosEnv, type ScenarioName, scenarios, seededRandom, stopDuringPartition, waitConverged } from './scenarios.ts';

const skipReason = netnsUnavailableReason();
const nftReason = skipReason ?? nftUnavailableReason();
if (skipReason !== undefined) console.log(`test/chaos: skipped, ${skipReason}`);
else if (nftReason !== undefined) console.log(`test/chaos: the one-way loss scenario is skipped, ${nftReason}`);

// Requests enter through the edge (POST /v1/generate, followed to their end) at every node by
// default; CHAOS_DOOR=rank sends them to each node's own rank instead (/v1/rank/infer).
const door: LoadDoor = process.env.CHAOS_DOOR === 'rank' ? 'rank' : 'generate';
const seed = Number(process.env.SEED ?? Date.now() % 100_000);
const nodes = 5;
const ingressRequestTimeoutMs = 30_000;
let lab: NetnsLab | undefined;
let cluster: NsCluster | undefined;
let env: ChaosEnv;

beforeAll(async () => {
  if (skipReason !== undefined) return;
  console.log(`test/chaos: seed ${seed} (SEED=${seed} replays the same choices), requests through ${door === 'rank' ? '/v1/rank/infer' : '/v1/generate'}`);
  lab = NetnsLab.create({ hosts: nodes });
  cluster = await NsCluster.start({
    lab,
    nodes,
    worldSize: nodes,
    env: chaosNodeSettings(ingressRequestTimeoutMs),
  });
  env = {
    lab,
    cluster,
    worldSize: nodes,
    random: seededRandom(seed),
    log: (line) => console.log(`chaos: ${line}`),
    holdMs: 2000,
    reactMs: 30_000,
    ingressRequestTimeoutMs,
    door,
  };
  await waitConverged(env, 60_000);
}, 90_000);

afterAll(async () => {
  // A hung node gets SIGKILL after the stop's grace; destroying the lab ends anything left.
  await cluster?.stop(10_000);
  lab?.destroy();
  cluster?.removeFiles();
}, 30_000);

function chaosTest(name: ScenarioName, reason: string | undefined): void {
  test.skipIf(reason !== undefined)(name, async () => {
    const report = await scenarios[name](env);
    expect(report.violations).toEqual([]);
    expect(report.requests.lost).toBe(0);
    expect(report.requests.completed).toBeGreaterThan(0);
    expect(report.faults).toBeGreaterThan(0);
  }, 120_000);
}

chaosTest('split 2|3 and heal', skipReason);
chaosTest('isolate one and heal', skipReason);
// All of the node's outgoing packets are dropped silently. Partial loss (60%, 97%) runs in
// scripts/chaos.ts, where its results are reported rather than gating CI.
chaosTest('one-way loss on one node (100%)', nftReason);
chaosTest('kill -9 and restart a rank', skipReason);

test.skipIf(skipReason !== undefined)('STOP during a partition: the majority stops and waits past closedGraceMs for the minority, which exits once healed; every process exits 0', async () => {
  const report = await stopDuringPartition(env, { healWithinGrace: false });
  expect(report.violations).toEqual([]);
  expect(cluster!.nodes.every((n) => !cluster!.running(n) && n.exits.length > 0)).toBe(true);
  expect(exitViolations(cluster!)).toEqual([]);
}, 120_000);
