// Covers the edge across real node processes: three ranks and a gateway (`--role gateway`) take 1,000 requests spread over all four entry points while one rank's process is killed with SIGKILL and started again, and every request completes with exactly one result equal to a single-rank run.
import { afterAll, beforeAll, expect, test } from 'bun:test';
import { join } from 'node:path';
import { loadOrCreateIdentity } from '../../node/identity.ts';
import { loadOrCreateSecret, newSwarmKey } from '../../node/secrets.ts';
import { freePort } from '../../scripts/lib/ports.ts';
import { type NodeProcess, spawnNode, tempDir, waitFor } from '../node/helpers.ts';
import { type Completed, getRequest, inputOf, singleRankOutputs, submit, token } from './helpers.ts';

const worldSize = 3;

interface ProcNode {
  readonly name: string;
  readonly dataDir: string;
  readonly httpUrl: string;
  readonly flags: string[];
  peerId: string;
  proc: NodeProcess;
}

const dir = tempDir('rankmesh-ingress-procs-');
const nodes: ProcNode[] = [];

function start(node: ProcNode): void {
  node.proc = spawnNode(node.dataDir, node.flags);
}

async function json<T>(url: string): Promise<T | null> {
  try {
    const res = await fetch(url);
    return res.ok ? ((await res.json()) as T) : null;
  } catch {
    return null;
  }
}

type ViewBody = { epoch: number; ranks: { peerId: string | null; active: boolean }[] };

/** Every running node holds a view with all three ranks, and every rank serves it. */
async function fullyServing(): Promise<boolean> {
  for (const node of nodes) {
    const view = await json<ViewBody>(`${node.httpUrl}/v1/view`);
    if (view === null || view.ranks.filter((r) => r.active).length !== worldSize) return false;
    if (node.name === 'gateway') continue;
    const rank = await json<{ serving: boolean }>(`${node.httpUrl}/v1/rank`);
    if (rank === null || !rank.serving) return false;
  }
  return true;
}

beforeAll(async () => {
  const keyFile = join(dir.path, 'swarm.key');
  loadOrCreateSecret(keyFile, newSwarmKey);
  const names = ['rank-0', 'rank-1', 'rank-2', 'gateway'];
  let bootstrap = '';
  for (const [i, name] of names.entries()) {
    const dataDir = join(dir.path, name);
    const peerId = (await loadOrCreateIdentity(dataDir)).peerId.toString();
    const [httpPort, p2pPort] = [await freePort(), await freePort()];
    if (i === 0) bootstrap = `/ip4/127.0.0.1/tcp/${p2pPort}/p2p/${peerId}`;
    const flags = [
      '--http-addr', `127.0.0.1:${httpPort}`,
      '--listen', `/ip4/127.0.0.1/tcp/${p2pPort}`,
      '--key-file', keyFile,
      '--token', token,
      '--mesh-id', 'ingress-procs',
      '--world-size', String(worldSize),
      '--role', name === 'gateway' ? 'gateway' : 'rank',
      '--gossip-heartbeat-interval-ms', '100',
      '--redial-min-ms', '50',
      '--redial-max-ms', '1000',
      '--data-plane-announce-interval-ms', '200',
      '--rank-retry-ms', '200',
      '--http-mutations-per-second', '1000000000',
      '--http-mutation-burst', '1000000000',
      ...(i === 0 ? [] : ['--peers', bootstrap]),
    ];
    const node: ProcNode = { name, dataDir, httpUrl: `http://127.0.0.1:${httpPort}`, flags, peerId, proc: undefined as never };
    nodes.push(node);
    start(node);
  }
  await Promise.all(nodes.map((n) => n.proc.serving));
  await waitFor('three ranks serving and the gateway following the view', fullyServing, 40_000);
}, 60_000);

// A node may take several seconds to stop once its peers are gone (rank-0 took 6.2 s), so the
// hook waits past its own 10 s SIGKILL fallback rather than bun's default 5 s.
afterAll(async () => {
  for (const node of nodes) node.proc?.process.kill('SIGTERM');
  const killer = setTimeout(() => nodes.forEach((n) => n.proc?.process.kill('SIGKILL')), 10_000);
  await Promise.all(nodes.map((n) => n.proc?.process.exited));
  clearTimeout(killer);
  dir.remove();
}, 20_000);

test('1,000 requests over every entry point, a rank process killed (SIGKILL) and restarted: each completes once with the single-rank output', async () => {
  const total = 1000;
  const want = await singleRankOutputs(Array.from({ length: total }, (_, i) => inputOf(i)));
  const deadlineMs = performance.now() + 75_000;
  const victim = nodes[1]!;
  const results: (Completed | undefined)[] = new Array(total);
  let completed = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) {
      const i = next++;
      results[i] = await submit(nodes[i % nodes.length]!.httpUrl, i, i % 2 === 0 ? 'sync' : 'async', deadlineMs);
      completed++;
    }
  };
  const chaos = async (): Promise<void> => {
    await waitFor('a quarter of the requests done', () => completed >= total / 4, 40_000);
    victim.proc.process.kill('SIGKILL');
    await victim.proc.process.exited;
    const others = nodes.filter((n) => n !== victim);
    await waitFor(
      'a view without the killed rank on every other node',
      async () => (await Promise.all(others.map((n) => json<ViewBody>(`${n.httpUrl}/v1/view`)))).every((v) => v !== null && !v.ranks.some((r) => r.peerId === victim.peerId)),
      20_000,
    );
    start(victim);
    await victim.proc.serving;
    await waitFor('the restarted rank serving again', fullyServing, 40_000);
  };
  await Promise.all([...Array.from({ length: 32 }, worker), chaos()]);

  expect(results.filter((r) => r !== undefined).length).toBe(total);
  expect(new Set(results.map((r) => r!.id)).size).toBe(total);
  for (let i = 0; i < total; i++) expect(results[i]!.output).toEqual(want[i]!);
  expect(new Set(results.map((r) => r!.rank))).toEqual(new Set([0, 1, 2]));
  // What GET shows at each entry is what the client was given: one result per request.
  for (let i = 0; i < total; i += 5) {
    const got = await getRequest(nodes[i % nodes.length]!.httpUrl, results[i]!.id);
    expect(got.body).toMatchObject({ status: 'done', output: results[i]!.output, rank: results[i]!.rank });
  }
}, 150_000);
