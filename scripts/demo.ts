// `bun run demo`: the whole story on one machine. Starts a mesh of 4 ranks as real node
// processes on loopback, sends steady load through the edge ingress, kills a rank (kill -9)
// and restarts it — it warms up alone while the others serve and is admitted back (deferred
// join) — adds a hot spare that takes over on a second failure (the failed node, restarted,
// becomes the next spare), pauses and unpauses the mesh, and prints a timeline with timings. Then it leaves the mesh and its dashboard up until
// Ctrl-C (`--no-wait`: stop at the end). Everything lives in a temporary directory that is
// removed on exit; every node's log is kept there while it runs.
import { Command, InvalidArgumentError } from 'commander';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadOrCreateIdentity } from '../node/identity.ts';
import { loadOrCreateSecret, newSwarmKey } from '../node/secrets.ts';
import { freePort } from './lib/ports.ts';
import { formatSeconds, progress } from './lib/progress.ts';

const options = new Command('demo')
  .description('Runs the rankmesh demo: 4 ranks and a spare on 127.0.0.1, a crash and a rejoin, a spare promotion, pause and unpause')
  .option('--no-wait', 'stop the mesh at the end instead of waiting for Ctrl-C')
  .option('--warm-up-ms <ms>', 'engine warm-up of every node (models loading a model)', integer, 1500)
  .option('--rejoin-warm-up-ms <ms>', 'engine warm-up of the restarted node (the ranks keep serving meanwhile)', integer, 3000)
  .parse(process.argv.slice(2), { from: 'user' })
  .opts<{ wait: boolean; warmUpMs: number; rejoinWarmUpMs: number }>();

const mainPath = resolve(import.meta.dir, '../node/main.ts');
const worldSize = 4;
const stepTimeoutMs = 60_000;
const print = (line = ''): void => void process.stdout.write(`${line}\n`);
const bold = (text: string): string => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);

interface DemoNode {
  readonly name: string;
  readonly peerId: string;
  readonly address: string;
  readonly httpUrl: string;
  readonly dataDir: string;
  readonly p2pPort: number;
  process: ReturnType<typeof Bun.spawn> | null;
}

interface ViewBody {
  generation: number;
  epoch: number;
  mask: string;
  ranks: { rank: number; peerId: string | null; bootId: string | null; active: boolean }[];
  spares: { peerId: string; bootId: string; ready: boolean }[];
}

const dir = mkdtempSync(join(tmpdir(), 'rankmesh-demo-'));
const keyFile = join(dir, 'swarm.key');
const token = randomBytes(12).toString('hex');
const nodes: DemoNode[] = [];
const startedMs = performance.now();
const timeline: { atMs: number; what: string; step?: string; tookMs?: number }[] = [];
let stopping = false;

/**
 * One timeline line: time since the start, what happened and, where it applies, how long it
 * took; a timed step also gets a row, named `step`, in the summary.
 */
function event(what: string, tookMs?: number, step?: string): void {
  const atMs = performance.now() - startedMs;
  timeline.push({ atMs, what, ...(tookMs !== undefined ? { tookMs } : {}), ...(step !== undefined ? { step } : {}) });
  print(`  ${`+${formatSeconds(atMs)}`.padStart(9)}  ${what}${tookMs !== undefined ? `  ${bold(`(${formatSeconds(tookMs)})`)}` : ''}`);
}

function section(title: string): void {
  print();
  print(bold(title));
}

async function main(): Promise<void> {
  process.on('SIGINT', () => void shutdown(130));
  process.on('SIGTERM', () => void shutdown(143));
  loadOrCreateSecret(keyFile, newSwarmKey);
  for (let i = 0; i <= worldSize; i++) nodes.push(await plan(i));
  const [n0, n1, , , spare] = nodes as [DemoNode, DemoNode, DemoNode, DemoNode, DemoNode];

  print(bold('rankmesh demo') + `: ${worldSize} ranks and a hot spare on 127.0.0.1 (data and logs in ${dir})`);

  section('1. The mesh forms');
  let t = performance.now();
  for (const node of nodes.slice(0, worldSize)) spawn(node, options.warmUpMs);
  event(`started ${worldSize} node processes (engine warm-up ${formatSeconds(options.warmUpMs)} each)`);
  const formed = await waitFor('4 ranks serving', async (p) => {
    const serving = (await Promise.all(nodes.slice(0, worldSize).map((n) => json<{ serving: boolean }>(n, '/v1/rank')))).filter((r) => r?.serving).length;
    p.update(serving / worldSize, `${serving} of ${worldSize} ranks serving`);
    return serving === worldSize ? await json<ViewBody>(n0, '/v1/view') : null;
  });
  event(`view committed: generation ${formed.generation}, epoch ${formed.epoch}, mask 0x${formed.mask}; every rank serving`, performance.now() - t, 'start 4 nodes → every rank serving');

  section('2. Load through the edge ingress');
  const load = startLoad([n0, n1]);
  await waitFor('first results', async (p) => {
    p.update(null, `${load.done} done`);
    return load.done >= 20 ? true : null;
  });
  event(`steady load: ${load.concurrency} clients send POST /v1/generate to node-0 and node-1, which forward to the ranks`);

  section('3. A rank crashes and comes back (deferred join)');
  const victim = await holderOf(n0, nodes[3]!);
  t = performance.now();
  kill(nodes[3]!);
  event(`kill -9 node-3 (rank ${victim})`);
  const without = await waitForView(n0, (v) => v.ranks[victim]?.peerId !== nodes[3]!.peerId || !v.ranks[victim]?.active, `a view without rank ${victim}`);
  event(`survivors committed epoch ${without.epoch} without it, mask 0x${without.mask}`, performance.now() - t, 'kill -9 → view without the rank');
  const doneBeforeRejoin = load.done;
  t = performance.now();
  spawn(nodes[3]!, options.rejoinWarmUpMs);
  event(`restarted node-3 with the same data directory: same PeerId, new incarnation`);
  await warmUp(nodes[3]!, 'node-3 warms up alone');
  event(`node-3 ready; the ranks served ${load.done - doneBeforeRejoin} requests meanwhile`, performance.now() - t, 'restart → warmed up alone');
  const back = await waitForView(n0, (v) => v.ranks.some((r) => r.peerId === nodes[3]!.peerId && r.active), 'node-3 admitted');
  const rejoinedRank = back.ranks.find((r) => r.peerId === nodes[3]!.peerId)!.rank;
  event(`admitted to rank ${rejoinedRank} in epoch ${back.epoch}, mask 0x${back.mask}`, performance.now() - t, 'restart → admitted (deferred join)');

  section('4. A hot spare takes over on the next failure');
  t = performance.now();
  spawn(spare, options.warmUpMs);
  event('started node-4 as a hot spare');
  await warmUp(spare, 'node-4 warms up');
  await waitForView(n0, (v) => v.spares.some((s) => s.peerId === spare.peerId && s.ready), 'node-4 listed as a ready spare');
  event('node-4 waits as a ready spare', performance.now() - t, 'start spare → ready spare');
  const second = nodes[2]!;
  const secondRank = await holderOf(n0, second);
  t = performance.now();
  kill(second);
  event(`kill -9 node-2 (rank ${secondRank})`);
  const promoted = await waitForView(n0, (v) => v.ranks[secondRank]?.peerId === spare.peerId && v.ranks[secondRank]?.active === true, `node-4 in rank ${secondRank}`);
  event(`one view change removed node-2 and promoted node-4 into rank ${secondRank}: epoch ${promoted.epoch}, mask 0x${promoted.mask}`, performance.now() - t, 'kill -9 → spare promoted');
  await waitFor('node-4 serving', async (p) => {
    p.update(null, 'building its communicator');
    return (await json<{ serving: boolean }>(spare, '/v1/rank'))?.serving === true ? true : null;
  });
  event('node-4 serves its rank', performance.now() - t, 'kill -9 → spare serving');
  t = performance.now();
  spawn(second, options.warmUpMs);
  event(`restarted node-2: its rank is taken, so it waits as the new hot spare`);
  await warmUp(second, 'node-2 warms up');
  await waitForView(n0, (v) => v.spares.some((s) => s.peerId === second.peerId && s.ready), 'node-2 listed as a ready spare');
  event('node-2 is the new ready spare', performance.now() - t, 'restart → new ready spare');

  section('5. Pause and unpause, decided by the ranks themselves');
  const paused = await control(n1, 'pause');
  event(`PAUSE at node-1: every rank drained its work and the mesh is ${paused.state}`, paused.tookMs, 'PAUSE → PAUSED (drain + barrier)');
  const doneWhilePausedBefore = load.done;
  await Bun.sleep(500);
  event(`while paused: ${load.inFlight} requests wait at the ingress, ${load.done - doneWhilePausedBefore} completed`);
  t = performance.now();
  const resumed = await control(n0, 'unpause');
  event(`UNPAUSE at node-0: mesh ${resumed.state}`, resumed.tookMs, 'UNPAUSE → RUNNING');
  const target = load.done + load.inFlight;
  await waitFor('held requests done', async (p) => {
    p.update(null, `${load.done} done`);
    return load.done >= target ? true : null;
  });
  event('the requests held during the pause completed', performance.now() - t, 'UNPAUSE → held requests done');

  section('Summary');
  await load.stop();
  const lat = load.latencies.sort((a, b) => a - b);
  const pct = (q: number): string => (lat.length === 0 ? '—' : `${Math.round(lat[Math.min(lat.length - 1, Math.floor(q * lat.length))]!)} ms`);
  print(`  requests: ${load.sent} sent, ${load.done} done, ${load.failed} failed${load.failed === 0 ? ' — none lost across two crashes, a rejoin and a pause' : ''}`);
  print(`  latency: p50 ${pct(0.5)}, p99 ${pct(0.99)}, max ${pct(1)}`);
  if (load.failed > 0) print(`  first failure: ${load.firstError}`);
  print();
  print(`  ${'step'.padEnd(48)}${'took'.padStart(8)}`);
  for (const e of timeline) if (e.step !== undefined && e.tookMs !== undefined) print(`  ${e.step.padEnd(48)}${formatSeconds(e.tookMs).padStart(8)}`);

  print();
  print(bold('Dashboard: ') + `${n0.httpUrl}/dashboard   (any node serves it: ${nodes.filter((n) => n.process !== null).map((n) => n.httpUrl).join(' ')})`);
  print(`  token for its buttons: ${token}`);
  print(`  API reference: ${n0.httpUrl}/docs   metrics: ${n0.httpUrl}/metrics`);
  if (!options.wait) return shutdown(load.failed === 0 ? 0 : 1);
  print('  Ctrl-C stops the mesh.');
  await new Promise(() => {});
}

async function plan(index: number): Promise<DemoNode> {
  const name = `node-${index}`;
  const dataDir = join(dir, name);
  const identity = await loadOrCreateIdentity(dataDir);
  const p2pPort = await freePort();
  const httpPort = await freePort();
  const peerId = identity.peerId.toString();
  return { name, peerId, address: `/ip4/127.0.0.1/tcp/${p2pPort}/p2p/${peerId}`, httpUrl: `http://127.0.0.1:${httpPort}`, dataDir, p2pPort, process: null };
}

function spawn(node: DemoNode, warmUpMs: number): void {
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    RANKMESH_DATA_DIR: node.dataDir,
    RANKMESH_HTTP_ADDR: node.httpUrl.replace('http://', ''),
    RANKMESH_LISTEN: `/ip4/127.0.0.1/tcp/${node.p2pPort}`,
    RANKMESH_PEERS: nodes.filter((n) => n !== node).map((n) => n.address).join(','),
    RANKMESH_KEY_FILE: keyFile,
    RANKMESH_MESH_ID: 'demo',
    RANKMESH_WORLD_SIZE: String(worldSize),
    RANKMESH_TOKEN: token,
    RANKMESH_ENGINE_WARM_UP_MS: String(warmUpMs),
    // The node stops when this script's end of its stdin closes, even if the script is killed.
    RANKMESH_STOP_ON_STDIN_END: 'true',
  };
  const log = Bun.file(join(dir, `${node.name}.log`));
  node.process = Bun.spawn([process.execPath, mainPath], { env, stdin: 'pipe', stdout: log, stderr: log });
}

function kill(node: DemoNode): void {
  node.process?.kill('SIGKILL');
  node.process = null;
}

async function json<T>(node: DemoNode, path: string): Promise<T | null> {
  try {
    const response = await fetch(`${node.httpUrl}${path}`, { signal: AbortSignal.timeout(2000) });
    return response.ok ? ((await response.json()) as T) : null;
  } catch {
    return null;
  }
}

/** Polls `check` (with a progress line) until it returns a value; fails the demo after stepTimeoutMs. */
async function waitFor<T>(what: string, check: (p: ReturnType<typeof progress>) => Promise<T | null>): Promise<T> {
  const p = progress(what);
  const deadline = performance.now() + stepTimeoutMs;
  for (;;) {
    const value = await check(p);
    if (value !== null) {
      p.done();
      return value;
    }
    const dead = nodes.find((n) => n.process !== null && n.process.exitCode !== null);
    if (dead !== undefined) {
      p.fail(`${dead.name} exited (code ${dead.process!.exitCode})`);
      const tail = readFileSync(join(dir, `${dead.name}.log`), 'utf8').trimEnd().split('\n').slice(-8).join('\n');
      throw new Error(`demo: ${dead.name} exited unexpectedly with code ${dead.process!.exitCode}; the end of its log:\n${tail}`);
    }
    if (performance.now() > deadline) {
      p.fail(`not within ${formatSeconds(stepTimeoutMs)}`);
      throw new Error(`demo: ${what} did not happen within ${formatSeconds(stepTimeoutMs)}; node logs are in ${dir}`);
    }
    await Bun.sleep(50);
  }
}

function waitForView(node: DemoNode, match: (v: ViewBody) => boolean, what: string): Promise<ViewBody> {
  return waitFor(what, async (p) => {
    const view = await json<ViewBody>(node, '/v1/view');
    p.update(null, view === null ? 'no view' : `epoch ${view.epoch}, mask 0x${view.mask}`);
    return view !== null && match(view) ? view : null;
  });
}

/** Shows a node's engine warm-up as it goes, until it is ready. */
function warmUp(node: DemoNode, what: string): Promise<true> {
  return waitFor(what, async (p) => {
    const rank = await json<{ warmUp: { phase: string; fraction: number }; phase?: string }>(node, '/v1/rank');
    if (rank === null) {
      p.update(0, 'starting');
      return null;
    }
    p.update(rank.warmUp.fraction, rank.phase ?? rank.warmUp.phase);
    return rank.warmUp.fraction >= 1 ? true : null;
  });
}

async function holderOf(viewer: DemoNode, node: DemoNode): Promise<number> {
  const view = await json<ViewBody>(viewer, '/v1/view');
  const rank = view?.ranks.find((r) => r.peerId === node.peerId)?.rank;
  if (rank === undefined) throw new Error(`demo: ${node.name} holds no rank in ${viewer.name}'s view`);
  return rank;
}

async function control(node: DemoNode, command: string): Promise<{ state: string; tookMs: number }> {
  const response = await fetch(`${node.httpUrl}/v1/control/${command}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ timeoutMs: 30_000 }),
  });
  const body = (await response.json()) as { state: string; tookMs: number; error?: { message: string } };
  if (!response.ok) throw new Error(`demo: ${command} answered ${response.status}: ${body.error?.message}`);
  return body;
}

interface Load {
  readonly concurrency: number;
  sent: number;
  done: number;
  failed: number;
  inFlight: number;
  firstError: string | null;
  readonly latencies: number[];
  stop(): Promise<void>;
}

/** Clients that each send one request at a time, round-robin over `entries`, until stopped. */
function startLoad(entries: DemoNode[]): Load {
  let running = true;
  const load: Load = {
    concurrency: 4,
    sent: 0,
    done: 0,
    failed: 0,
    inFlight: 0,
    firstError: null,
    latencies: [],
    stop: async () => {
      running = false;
      await Promise.all(clients);
    },
  };
  let next = 0;
  const client = async (): Promise<void> => {
    while (running && !stopping) {
      const entry = entries[next++ % entries.length]!;
      const input = Array.from({ length: 8 }, (_, i) => (load.sent * 7 + i) % 256);
      load.sent += 1;
      load.inFlight += 1;
      const t = performance.now();
      try {
        const response = await fetch(`${entry.httpUrl}/v1/generate`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ input }),
        });
        const body = (await response.json()) as { status?: string; error?: { message: string } };
        if (response.status === 200 && body.status === 'done') {
          load.done += 1;
          load.latencies.push(performance.now() - t);
        } else {
          load.failed += 1;
          load.firstError ??= `${response.status} ${JSON.stringify(body).slice(0, 200)}`;
        }
      } catch (err) {
        if (!stopping) {
          load.failed += 1;
          load.firstError ??= (err as Error).message;
        }
      } finally {
        load.inFlight -= 1;
      }
    }
  };
  const clients = Array.from({ length: load.concurrency }, () => client());
  return load;
}

async function shutdown(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    const live = nodes.filter((n) => n.process !== null);
    for (const n of live) n.process!.kill('SIGTERM');
    const killer = setTimeout(() => live.forEach((n) => n.process?.kill('SIGKILL')), 10_000);
    await Promise.all(live.map((n) => n.process!.exited));
    clearTimeout(killer);
    // A failed demo keeps the nodes' logs for a look at what went wrong.
    if (code === 1) process.stderr.write(`node logs kept in ${dir}\n`);
    else rmSync(dir, { recursive: true, force: true });
  }
  process.exit(code);
}

function integer(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number');
  return n;
}

main().catch(async (err: Error) => {
  process.stderr.write(`${err.message}\n`);
  await shutdown(1);
});
