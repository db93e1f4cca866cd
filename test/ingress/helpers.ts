// Shared helpers of the ingress tests: real nodes in this process with a role each (ranks and
// gateways), fixed HTTP ports so a restarted node answers at the same address, clients of
// POST /v1/generate and GET /v1/requests/:id, and the outputs of a single-rank run.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { CpuDataPlane, createCpuCommunicator } from '../../ffi/comm/cpu.ts';
import type { View } from '../../mesh/view.ts';
import { type Config, validate } from '../../node/config.ts';
import { createReferenceEngine } from '../../node/engine/reference.ts';
import type { RequestView } from '../../node/ingress/ingress.ts';
import { Runtime } from '../../node/runtime.ts';
import { loadOrCreateSecret, newSwarmKey } from '../../node/secrets.ts';
import { freePort } from '../../scripts/lib/ports.ts';

export const token = 'ingress-test-token';

export interface TestNode {
  readonly name: string;
  readonly role: 'rank' | 'gateway';
  readonly dataDir: string;
  readonly httpUrl: string;
  runtime: Runtime;
  peerId: string;
}

/** Real nodes (libp2p on loopback, SQLite, HTTP) in this process; node 0 is everyone's bootstrap. */
export class TestCluster {
  readonly nodes: TestNode[] = [];
  private readonly dir = mkdtempSync(join(tmpdir(), 'rankmesh-ingress-'));
  private readonly keyFile = join(this.dir, 'swarm.key');
  private bootstrap: string[] = [];

  private constructor(
    private readonly worldSize: number,
    private readonly settings: Partial<Config>,
  ) {
    loadOrCreateSecret(this.keyFile, newSwarmKey);
  }

  static async start(roles: readonly ('rank' | 'gateway')[], worldSize: number, settings: Partial<Config> = {}): Promise<TestCluster> {
    const cluster = new TestCluster(worldSize, settings);
    try {
      for (const [i, role] of roles.entries()) {
        const port = await freePort();
        const node: TestNode = { name: `node-${i}`, role, dataDir: join(cluster.dir, `node-${i}`), httpUrl: `http://127.0.0.1:${port}`, runtime: undefined as never, peerId: '' };
        cluster.nodes.push(node);
        await cluster.launch(node);
        if (i === 0) cluster.bootstrap = node.runtime.transport.addresses();
      }
      return cluster;
    } catch (err) {
      await cluster.stop();
      throw err;
    }
  }

  /** Starts (or starts again, same data directory and HTTP port) the node's runtime. */
  async launch(node: TestNode): Promise<void> {
    const config = validate({
      dataDir: node.dataDir,
      httpAddr: node.httpUrl.replace('http://', ''),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      peers: node.name === 'node-0' ? [] : this.bootstrap,
      keyFile: this.keyFile,
      token,
      meshId: 'ingress',
      worldSize: this.worldSize,
      role: node.role,
      gossipHeartbeatIntervalMs: 100,
      redialMinMs: 50,
      redialMaxMs: 1000,
      dataPlaneAnnounceIntervalMs: 200,
      rankRetryMs: 200,
      // Every client of these tests is 127.0.0.1: lift the per-client limit on mutating requests.
      httpMutationsPerSecond: 1e9,
      httpMutationBurst: 1e9,
      ...this.settings,
    });
    node.runtime = new Runtime(config, pino({ level: 'silent' }).child({ node: node.name }));
    node.peerId = (await node.runtime.start()).peerId;
  }

  /** Stops a node the way a crash looks to its peers: its connections close. */
  async kill(node: TestNode): Promise<void> {
    await node.runtime.stop();
  }

  view(node: TestNode): View | null {
    return node.runtime.status().code === 'started' ? node.runtime.driver.core.view() : null;
  }

  ranks(): TestNode[] {
    return this.nodes.filter((n) => n.role === 'rank');
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.runtime?.stop()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Every node up holds a view whose ranks are all held and all serving. */
export function fullyServing(cluster: TestCluster, worldSize: number): boolean {
  return cluster.nodes.every((n) => {
    if (n.runtime.status().code !== 'started') return false;
    const view = cluster.view(n);
    if (view === null || view.ranks.filter((h) => h !== null).length !== worldSize) return false;
    return n.role === 'gateway' || n.runtime.rank.rankStatus().serving;
  });
}

export interface Answer {
  readonly status: number;
  readonly body: RequestView & { error?: { code: string; message: string } };
  readonly retryAfter: string | null;
}

export async function generate(url: string, body: unknown, raw?: string): Promise<Answer> {
  const res = await fetch(`${url}/v1/generate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: raw ?? JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Answer['body'], retryAfter: res.headers.get('retry-after') };
}

export async function getRequest(url: string, id: string): Promise<{ status: number; body: RequestView }> {
  const res = await fetch(`${url}/v1/requests/${id}`);
  return { status: res.status, body: (await res.json()) as RequestView };
}

/** The outputs of the reference engine alone on one rank, one per input. */
export async function singleRankOutputs(inputs: readonly (readonly number[])[]): Promise<(readonly number[])[]> {
  const plane = await CpuDataPlane.listen({ meshId: 'solo', meshKey: new Uint8Array(32).fill(1) });
  const comm = await createCpuCommunicator({ dataPlane: plane, key: { meshId: 'solo', generation: 1, epoch: 1 }, rank: 0, meshRanks: [0], peers: [] });
  const engine = createReferenceEngine({ model: { seed: 1 } });
  await engine.warmUp();
  const outputs: (readonly number[])[] = [];
  for (let i = 0; i < inputs.length; i += 64) {
    const batch = inputs.slice(i, i + 64).map((input, j) => ({ id: `solo-${i + j}`, pipeline: 'default', input }));
    for (const r of await engine.step(batch, comm)) outputs.push(r.output);
  }
  await comm.close();
  await plane.close();
  await engine.teardown();
  return outputs;
}

/** A deterministic input of 1-12 tokens for request i. */
export function inputOf(i: number): number[] {
  const length = 1 + (i % 12);
  return Array.from({ length }, (_, k) => (i * 31 + k * 7) % 256);
}

/** What a client got for one request in the end. */
export interface Completed {
  readonly id: string;
  readonly output: readonly number[];
  readonly rank: number;
}

/**
 * One client request with input inputOf(i), retried at the same entry with the same
 * idempotency key while that node is down or refuses (429/503), then followed to its result
 * by GET if it was answered 202. Throws if it fails or is not done by `deadlineMs`.
 */
export async function submit(entryUrl: string, i: number, mode: 'sync' | 'async', deadlineMs: number): Promise<Completed> {
  const body = { input: inputOf(i), idempotencyKey: `req-${i}`, mode };
  let answer: Answer | null = null;
  while (performance.now() < deadlineMs) {
    try {
      answer = await generate(entryUrl, body);
    } catch {
      answer = null; // the entry node is down: ask it again once it is back
    }
    if (answer !== null && (answer.status === 200 || answer.status === 202)) break;
    if (answer !== null && answer.status !== 429 && answer.status !== 503) throw new Error(`request ${i}: ${answer.status} ${JSON.stringify(answer.body)}`);
    await Bun.sleep(20);
  }
  if (answer === null || (answer.status !== 200 && answer.status !== 202)) throw new Error(`request ${i} not accepted before the deadline`);
  const id = answer.body.id;
  let view: RequestView = answer.body;
  while (view.status !== 'done') {
    if (view.status === 'failed') throw new Error(`request ${i} failed: ${JSON.stringify(view)}`);
    if (performance.now() > deadlineMs) throw new Error(`request ${i} (${id}) not done before the deadline: ${view.status}`);
    await Bun.sleep(20);
    try {
      const got = await getRequest(entryUrl, id);
      if (got.status === 200) view = got.body;
    } catch {
      // the entry node is restarting
    }
  }
  return { id, output: view.output!, rank: view.rank! };
}
