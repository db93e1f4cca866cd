// Benchmark: requests through a node's edge to a rank on another node, against a plain Bun
// HTTP server answering the same request, measured in the same run on the same machine.
//
//   bun scripts/bench/ingress.ts            full run (about half a minute on an idle 2-core host)
//   bun scripts/bench/ingress.ts --quick    fewer requests
//
// Three separate processes serve: the plain server (parse the JSON body, answer JSON), and
// two real nodes — a gateway (--role gateway: no rank, no engine) and one rank (worldSize 1).
// The load comes from this process. Each system answers the same bodies: a one-token input
// (the engine does next to no work) through POST /v1/generate. The rank's own route,
// POST /v1/rank/infer, is timed as well, so the table shows what the engine loop costs and
// what the edge adds on top (store, route, forward over libp2p, store the result).
//
// Latency: sequential requests (one at a time). Throughput: a fixed number of requests kept
// `concurrency` at a time. Targets: throughput ≥ 50% of the plain server's; p50 ≤ 1 ms over it.
import type { Subprocess } from 'bun';
import { cpus, loadavg } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { loadOrCreateIdentity } from '../../node/identity.ts';
import { loadOrCreateSecret, newSwarmKey } from '../../node/secrets.ts';
import { freePort } from '../lib/ports.ts';

const token = 'bench-token';
const mainPath = resolve(import.meta.dir, '../../node/main.ts');
const throughputTarget = 0.5;
const addedP50TargetMs = 1;

if (process.argv[2] === '--plain-server') await plainServer(Number(process.argv[3]));
else await main(process.argv.includes('--quick'));

interface Figures {
  readonly name: string;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly rps: number;
}

async function main(quick: boolean): Promise<void> {
  const sequential = quick ? 300 : 1500;
  const loaded = quick ? 2000 : 8000;
  const concurrency = 32;
  console.log(`host: ${cpus().length} cores, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}; ${sequential} sequential requests, then ${loaded} at ${concurrency} at a time`);

  const dir = mkdtempSync(join(tmpdir(), 'rankmesh-bench-ingress-'));
  const children: Subprocess[] = [];
  try {
    const plainPort = await freePort();
    children.push(Bun.spawn([process.execPath, import.meta.path, '--plain-server', String(plainPort)], { stdout: 'ignore', stderr: 'inherit', stdin: 'pipe' }));
    const plainUrl = `http://127.0.0.1:${plainPort}`;
    const { rankUrl, gatewayUrl } = await startNodes(dir, children);
    await waitUntil('the plain server answering', async () => (await post(`${plainUrl}/v1/generate`, body(0))).ok, 10_000);

    const systems: { name: string; url: string; body: (i: number) => string }[] = [
      { name: 'plain Bun server', url: `${plainUrl}/v1/generate`, body },
      { name: 'rank node, POST /v1/rank/infer', url: `${rankUrl}/v1/rank/infer`, body: (i) => JSON.stringify({ input: [i % 256] }) },
      { name: 'gateway → rank, POST /v1/generate', url: `${gatewayUrl}/v1/generate`, body },
    ];
    const results: Figures[] = [];
    for (const s of systems) {
      await run(s.url, s.body, 200, 8); // warm-up: connections, JIT, SQLite pages
      const latencies = await run(s.url, s.body, sequential, 1);
      const started = performance.now();
      await run(s.url, s.body, loaded, concurrency);
      const seconds = (performance.now() - started) / 1000;
      results.push({ name: s.name, p50Ms: quantile(latencies, 0.5), p99Ms: quantile(latencies, 0.99), rps: loaded / seconds });
    }
    // The plain server again at the end: the host's load may have changed during the run.
    const again = await run(`${plainUrl}/v1/generate`, body, sequential, 1);
    const startedAgain = performance.now();
    await run(`${plainUrl}/v1/generate`, body, loaded, concurrency);
    const plainAgain: Figures = { name: 'plain Bun server (again)', p50Ms: quantile(again, 0.5), p99Ms: quantile(again, 0.99), rps: loaded / ((performance.now() - startedAgain) / 1000) };
    results.push(plainAgain);

    const plain = results[0]!;
    const baseline: Figures = { name: 'baseline', p50Ms: Math.min(plain.p50Ms, plainAgain.p50Ms), p99Ms: Math.min(plain.p99Ms, plainAgain.p99Ms), rps: Math.max(plain.rps, plainAgain.rps) };
    console.log('');
    console.log(table(['system', 'p50 ms', 'p99 ms', 'req/s', 'of plain req/s', 'p50 over plain'], results.map((r) => [
      r.name,
      r.p50Ms.toFixed(3),
      r.p99Ms.toFixed(3),
      r.rps.toFixed(0),
      `${((100 * r.rps) / baseline.rps).toFixed(1)}%`,
      `${(r.p50Ms - baseline.p50Ms >= 0 ? '+' : '')}${(r.p50Ms - baseline.p50Ms).toFixed(3)} ms`,
    ])));
    const rankOnly = results[1]!;
    const edge = results[2]!;
    console.log('');
    console.log(`the edge alone (gateway → rank over rank direct): +${(edge.p50Ms - rankOnly.p50Ms).toFixed(3)} ms p50, ${((100 * edge.rps) / rankOnly.rps).toFixed(1)}% of the rank route's req/s`);
    console.log('baseline: the better of the two plain-server measurements');
    const ratio = edge.rps / baseline.rps;
    const addedMs = edge.p50Ms - baseline.p50Ms;
    console.log(`bench ingress-throughput: ${(100 * ratio).toFixed(1)} % of plain (target >= ${100 * throughputTarget}) ${ratio >= throughputTarget ? 'ok' : 'short'}`);
    console.log(`bench ingress-added-p50: ${addedMs.toFixed(3)} ms (target <= ${addedP50TargetMs}) ${addedMs <= addedP50TargetMs ? 'ok' : 'short'}`);
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => c.exited));
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The request every system answers: a one-token input, so the engine does next to no work. */
function body(i: number): string {
  return JSON.stringify({ input: [i % 256] });
}

/** A plain Bun server answering what /v1/generate answers, with no mesh behind it. */
async function plainServer(port: number): Promise<void> {
  let next = 0;
  const server = Bun.serve({
    hostname: '127.0.0.1',
    port,
    async fetch(req) {
      const parsed = (await req.json()) as { input: number[] };
      next++;
      return Response.json({ id: `plain-${next}`, status: 'done', pipeline: 'default', output: parsed.input, rank: 0, epoch: 1 });
    },
  });
  // Ends with the benchmark: its standard input closes when the parent exits.
  for await (const _ of Bun.stdin.stream()) void _;
  server.stop(true);
}

/** A gateway and one rank (worldSize 1) as node processes; resolves once both serve. */
async function startNodes(dir: string, children: Subprocess[]): Promise<{ rankUrl: string; gatewayUrl: string }> {
  const keyFile = join(dir, 'swarm.key');
  loadOrCreateSecret(keyFile, newSwarmKey);
  const rankDir = join(dir, 'rank');
  const rankPeer = (await loadOrCreateIdentity(rankDir)).peerId.toString();
  const [rankP2p, rankHttp, gatewayP2p, gatewayHttp] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const common = { RANKMESH_KEY_FILE: keyFile, RANKMESH_MESH_ID: 'bench-ingress', RANKMESH_WORLD_SIZE: '1', RANKMESH_TOKEN: token, RANKMESH_STOP_ON_STDIN_END: 'true', RANKMESH_LOG_LEVEL: 'warn',
    // One load generator is one client address: lift the per-client limit on mutating requests.
    RANKMESH_HTTP_MUTATIONS_PER_SECOND: '1000000000', RANKMESH_HTTP_MUTATION_BURST: '1000000000' };
  const spawn = (env: Record<string, string>): Subprocess =>
    Bun.spawn([process.execPath, mainPath], { env: { ...(process.env as Record<string, string>), ...common, ...env }, stdin: 'pipe', stdout: 'inherit', stderr: 'inherit' });
  children.push(spawn({ RANKMESH_DATA_DIR: rankDir, RANKMESH_HTTP_ADDR: `127.0.0.1:${rankHttp}`, RANKMESH_LISTEN: `/ip4/127.0.0.1/tcp/${rankP2p}` }));
  children.push(
    spawn({
      RANKMESH_DATA_DIR: join(dir, 'gateway'),
      RANKMESH_HTTP_ADDR: `127.0.0.1:${gatewayHttp}`,
      RANKMESH_LISTEN: `/ip4/127.0.0.1/tcp/${gatewayP2p}`,
      RANKMESH_PEERS: `/ip4/127.0.0.1/tcp/${rankP2p}/p2p/${rankPeer}`,
      RANKMESH_ROLE: 'gateway',
    }),
  );
  const rankUrl = `http://127.0.0.1:${rankHttp}`;
  const gatewayUrl = `http://127.0.0.1:${gatewayHttp}`;
  await waitUntil('the rank serving', async () => ((await (await fetch(`${rankUrl}/v1/rank`)).json()) as { serving: boolean }).serving, 30_000);
  await waitUntil('the gateway routing to the rank', async () => (await post(`${gatewayUrl}/v1/generate`, body(1))).status === 200, 30_000);
  return { rankUrl, gatewayUrl };
}

/** `count` requests, `concurrency` at a time; returns each one's latency in ms. Any non-200 aborts the run. */
async function run(url: string, makeBody: (i: number) => string, count: number, concurrency: number): Promise<number[]> {
  const latencies: number[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const started = performance.now();
      const res = await post(url, makeBody(i));
      const text = await res.text();
      latencies.push(performance.now() - started);
      if (res.status !== 200) throw new Error(`${url}: ${res.status} ${text}`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return latencies;
}

function post(url: string, text: string): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: text });
}

async function waitUntil(what: string, condition: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      if (await condition()) return;
    } catch {
      // not up yet
    }
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(50);
  }
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}
