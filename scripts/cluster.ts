// `bun run cluster --nodes N`: N node processes on loopback, each with its own ports and data
// directory under .rankmesh/cluster/, one shared pre-shared key, every node bootstrapped to
// all the others. Prints one line per node, prefixes their logs, and stops them all on
// Ctrl-C or SIGTERM. A node that dies leaves the others running; `restart NAME` on stdin
// starts it again. Nodes also stop on their own when this script dies (even by SIGKILL):
// each reads its stdin from this process and stops when that pipe closes.
import { Command, InvalidArgumentError } from 'commander';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadOrCreateIdentity } from '../node/identity.ts';
import { loadOrCreateSecret, newSwarmKey } from '../node/secrets.ts';
import { colocatedEnv } from './lib/colocated-env.ts';
import { pipeLines } from './lib/log-lines.ts';
import { isPortFree } from './lib/ports.ts';

interface ClusterNode {
  name: string;
  httpUrl: string;
  process: ReturnType<typeof Bun.spawn>;
  peerId: string;
}

const readyTimeoutMs = 60_000;
const stopTimeoutMs = 10_000;

const options = new Command('cluster')
  .description('Runs a local rankmesh cluster on 127.0.0.1')
  .option('--nodes <n>', 'number of nodes', integer, 3)
  .option('--http-port <port>', 'HTTP port of the first node; the others follow', integer, 7101)
  .option('--p2p-port <port>', 'libp2p port of the first node; the others follow', integer, 7201)
  .option('--dir <path>', 'directory for the key and the nodes\' data', '.rankmesh/cluster')
  .option('--mesh-id <id>', 'mesh name', 'local')
  .option('--world-size <n>', 'world size given to every node (default: --nodes)', integer)
  .parse(process.argv.slice(2), { from: 'user' })
  .opts<{ nodes: number; httpPort: number; p2pPort: number; dir: string; meshId: string; worldSize?: number }>();

const print = (line: string): void => void process.stdout.write(`${line}\n`);
const dir = resolve(options.dir);
const keyFile = join(dir, 'swarm.key');
mkdirSync(dir, { recursive: true });
loadOrCreateSecret(keyFile, newSwarmKey);

interface NodePlan {
  name: string;
  dataDir: string;
  httpPort: number;
  p2pPort: number;
  address: string;
  peerId: string;
}

const plans: NodePlan[] = [];
for (let i = 0; i < options.nodes; i++) {
  const dataDir = join(dir, `node-${i}`);
  const identity = await loadOrCreateIdentity(dataDir);
  const httpPort = options.httpPort + i;
  const p2pPort = options.p2pPort + i;
  for (const port of [httpPort, p2pPort]) {
    if (!(await isPortFree(port))) {
      process.stderr.write(`cluster: port ${port} on 127.0.0.1 is in use; pick other bases with --http-port / --p2p-port\n`);
      process.exit(1);
    }
  }
  const address = `/ip4/127.0.0.1/tcp/${p2pPort}/p2p/${identity.peerId.toString()}`;
  plans.push({ name: `node-${i}`, dataDir, httpPort, p2pPort, address, peerId: identity.peerId.toString() });
}

const startedAtMs = performance.now();
const worldSize = options.worldSize ?? options.nodes;

function spawnNode(plan: NodePlan): ClusterNode {
  const env = {
    ...colocatedEnv(process.env),
    RANKMESH_DATA_DIR: plan.dataDir,
    RANKMESH_HTTP_ADDR: `127.0.0.1:${plan.httpPort}`,
    RANKMESH_LISTEN: `/ip4/127.0.0.1/tcp/${plan.p2pPort}`,
    RANKMESH_PEERS: plans.filter((p) => p !== plan).map((p) => p.address).join(','),
    RANKMESH_KEY_FILE: keyFile,
    RANKMESH_MESH_ID: options.meshId,
    RANKMESH_WORLD_SIZE: String(worldSize),
    RANKMESH_STOP_ON_STDIN_END: 'true',
  };
  const child = Bun.spawn([process.execPath, join(import.meta.dir, '../node/main.ts')], {
    env,
    stdin: 'pipe',
    stdout: 'pipe',
    stderr: 'pipe',
  });
  const prefix = `[${plan.name}]`;
  void pipeLines(child.stdout as ReadableStream<Uint8Array>, prefix, print);
  void pipeLines(child.stderr as ReadableStream<Uint8Array>, prefix, print);
  const node = { name: plan.name, httpUrl: `http://127.0.0.1:${plan.httpPort}`, process: child, peerId: plan.peerId };
  // A node that dies is not the end of the cluster: the mesh is meant to survive it, and the
  // operator can start it again (same data directory, same identity) with `restart`.
  void child.exited.then((code) => {
    if (!stopping && nodes.get(plan.name) === node) {
      print(`cluster: ${plan.name} exited with code ${code}; the others keep running (type: restart ${plan.name})`);
    }
  });
  return node;
}

let stopping = false;
const nodes = new Map<string, ClusterNode>(plans.map((plan) => [plan.name, spawnNode(plan)]));
for (const node of nodes.values()) print(`${node.name}  ${node.httpUrl}  pid ${node.process.pid}  ${node.peerId}`);

async function stopAll(reason: string, code: number): Promise<never> {
  if (stopping) process.exit(code);
  stopping = true;
  const all = [...nodes.values()];
  print(`cluster: ${reason}; stopping ${all.length} nodes`);
  for (const node of all) node.process.kill('SIGTERM');
  const deadline = setTimeout(() => {
    for (const node of all) node.process.kill('SIGKILL');
  }, stopTimeoutMs);
  const codes = await Promise.all(all.map((node) => node.process.exited));
  clearTimeout(deadline);
  print(`cluster: all nodes stopped (exit codes ${codes.join(', ')})`);
  process.exit(code);
}
process.on('SIGINT', () => void stopAll('SIGINT', 0));
process.on('SIGTERM', () => void stopAll('SIGTERM', 0));
void readCommands();

/**
 * Commands typed on stdin, one per line: `kill NAME` (SIGKILL, a crash), `stop NAME`
 * (SIGTERM), `restart NAME` (start it again with the same data directory), `list` (each
 * node's join phase: warming with its progress, ready, spare, joining, serving).
 */
async function readCommands(): Promise<void> {
  const help = 'commands: list | kill NAME | stop NAME | restart NAME';
  for await (const line of console) {
    const [verb, name] = line.trim().split(/\s+/);
    if (verb === undefined || verb === '') continue;
    const node = name === undefined ? undefined : nodes.get(name);
    const plan = plans.find((p) => p.name === name);
    if (verb === 'list') {
      for (const n of nodes.values()) {
        const state = n.process.exitCode === null ? `running  ${await joinPhase(n)}` : `exited ${n.process.exitCode}`;
        print(`${n.name}  ${n.httpUrl}  pid ${n.process.pid}  ${state}`);
      }
    } else if ((verb === 'kill' || verb === 'stop') && node !== undefined) {
      node.process.kill(verb === 'kill' ? 'SIGKILL' : 'SIGTERM');
    } else if (verb === 'restart' && node !== undefined && plan !== undefined) {
      if (node.process.exitCode === null && node.process.signalCode === null) {
        node.process.kill('SIGTERM');
        await node.process.exited;
      }
      const fresh = spawnNode(plan);
      nodes.set(plan.name, fresh);
      print(`${fresh.name}  ${fresh.httpUrl}  pid ${fresh.process.pid}  restarted`);
    } else {
      print(`cluster: ${JSON.stringify(line.trim())} not understood; ${help}`);
    }
  }
}

// Ready when every node answers /v1/status and lists every other node among its peers.
const deadline = performance.now() + readyTimeoutMs;
while (!stopping) {
  if (await allSeeEachOther()) {
    print(`cluster: ${nodes.size} nodes up and connected to each other in ${Math.round(performance.now() - startedAtMs)} ms; Ctrl-C stops them`);
    break;
  }
  if (performance.now() > deadline) {
    print(`cluster: nodes not all connected after ${readyTimeoutMs} ms; still running, check the logs`);
    break;
  }
  await Bun.sleep(50);
}

/** A node's way to serving as `list` shows it: phase, rank, and warm-up progress while it warms up. */
async function joinPhase(node: ClusterNode): Promise<string> {
  try {
    const response = await fetch(`${node.httpUrl}/v1/status`, { signal: AbortSignal.timeout(1000) });
    const join = ((await response.json()) as { join: { phase: string; rank: number | null; warmUp: { phase: string; fraction: number } } | null }).join;
    if (join === null) return 'gateway';
    const rank = join.rank === null ? '' : ` rank ${join.rank}`;
    const warm = join.phase === 'warming' ? ` (${join.warmUp.phase} ${Math.round(join.warmUp.fraction * 100)}%)` : '';
    return `${join.phase}${rank}${warm}`;
  } catch {
    return 'not answering';
  }
}

async function allSeeEachOther(): Promise<boolean> {
  const views = await Promise.all(
    [...nodes.values()].map(async (node) => {
      try {
        const response = await fetch(`${node.httpUrl}/v1/status`);
        return response.ok ? ((await response.json()) as { connectedPeers: string[] }).connectedPeers : undefined;
      } catch {
        return undefined;
      }
    }),
  );
  const all = [...nodes.values()];
  return views.every((peers, i) => peers !== undefined && all.every((other, j) => i === j || peers.includes(other.peerId)));
}

function integer(text: string): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) throw new InvalidArgumentError('expected a positive integer');
  return value;
}
