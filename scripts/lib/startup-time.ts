// Measures start-up: one node (process spawn → /healthz answers) and `bun run cluster --nodes 3`
// (spawn → every node lists the other two in /v1/status). Fresh data directories each run.
// Usage: bun scripts/lib/startup-time.ts [runs]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort } from './ports.ts';

const runs = Number(process.argv[2] ?? 5);
const root = resolve(import.meta.dir, '../..');
const pollMs = 5;

async function answers(url: string): Promise<Response | undefined> {
  try {
    return await fetch(url);
  } catch {
    return undefined;
  }
}

async function oneNode(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'rankmesh-startup-'));
  const [http, p2p] = [await freePort(), await freePort()];
  const started = performance.now();
  const child = Bun.spawn([process.execPath, join(root, 'node/main.ts'), '--data-dir', dir, '--http-addr', `127.0.0.1:${http}`, '--listen', `/ip4/127.0.0.1/tcp/${p2p}`], { stdout: 'ignore', stderr: 'ignore' });
  while ((await answers(`http://127.0.0.1:${http}/healthz`))?.ok !== true) await Bun.sleep(pollMs);
  const ms = performance.now() - started;
  child.kill('SIGTERM');
  await child.exited;
  rmSync(dir, { recursive: true, force: true });
  return ms;
}

async function cluster(nodes: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'rankmesh-startup-cluster-'));
  const httpBase = 20000 + Math.floor(Math.random() * 20000);
  const p2pBase = httpBase + 100;
  const started = performance.now();
  const child = Bun.spawn([process.execPath, join(root, 'scripts/cluster.ts'), '--nodes', String(nodes), '--dir', dir, '--http-port', String(httpBase), '--p2p-port', String(p2pBase)], { stdout: 'ignore', stderr: 'ignore' });
  const urls = Array.from({ length: nodes }, (_, i) => `http://127.0.0.1:${httpBase + i}/v1/status`);
  for (;;) {
    const views = await Promise.all(urls.map(async (url) => ((await (await answers(url))?.json()) as { connectedPeers: string[] } | undefined)?.connectedPeers.length));
    if (views.every((n) => n === nodes - 1)) break;
    await Bun.sleep(pollMs);
  }
  const ms = performance.now() - started;
  child.kill('SIGTERM');
  await child.exited;
  rmSync(dir, { recursive: true, force: true });
  return ms;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const single: number[] = [];
for (let i = 0; i < runs; i++) single.push(await oneNode());
const three: number[] = [];
for (let i = 0; i < runs; i++) three.push(await cluster(3));
const fmt = (xs: number[]): string => xs.map((x) => x.toFixed(0)).join(', ');
process.stdout.write(`one node, spawn → /healthz: median ${median(single).toFixed(0)} ms (runs: ${fmt(single)})\n`);
process.stdout.write(`cluster --nodes 3, spawn → all see each other: median ${median(three).toFixed(0)} ms (runs: ${fmt(three)})\n`);
