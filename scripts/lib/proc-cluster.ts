// Real rankmesh node processes on loopback for benchmarks and long tests: each is
// `bun node/main.ts` with its own data directory and ports, one shared key, bootstrapped to
// the first node. Every JSON log line of every node is parsed and kept, so a benchmark can
// time events by the nodes' own timestamps instead of polling them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { loadOrCreateIdentity } from '../../node/identity.ts';
import { loadOrCreateSecret, newSwarmKey } from '../../node/secrets.ts';
import { colocatedEnv } from './colocated-env.ts';
import { freePort } from './ports.ts';

const mainPath = resolve(import.meta.dir, '../../node/main.ts');

export interface LogRecord {
  time: number;
  msg: string;
  [field: string]: unknown;
}

export interface ProcNode {
  readonly name: string;
  readonly peerId: string;
  readonly httpUrl: string;
  readonly dataDir: string;
  process: ReturnType<typeof Bun.spawn>;
  /** Parsed JSON log lines of the current process, in order. */
  logs: LogRecord[];
}

export interface ProcClusterOptions {
  nodes: number;
  worldSize?: number;
  /** Extra RANKMESH_* environment for every node. */
  env?: Record<string, string>;
}

export class ProcCluster {
  readonly nodes: ProcNode[] = [];
  readonly dir = mkdtempSync(join(tmpdir(), 'rankmesh-procs-'));
  private readonly keyFile = join(this.dir, 'swarm.key');
  private bootstrap = '';
  private readonly p2pPorts = new Map<string, number>();

  private constructor(private readonly options: ProcClusterOptions) {
    loadOrCreateSecret(this.keyFile, newSwarmKey);
  }

  static async start(options: ProcClusterOptions): Promise<ProcCluster> {
    const cluster = new ProcCluster(options);
    for (let i = 0; i < options.nodes; i++) await cluster.plan(i);
    for (const node of cluster.nodes) cluster.spawn(node);
    return cluster;
  }

  private async plan(index: number): Promise<void> {
    const name = `node-${index}`;
    const dataDir = join(this.dir, name);
    const identity = await loadOrCreateIdentity(dataDir);
    const p2pPort = await freePort();
    const httpPort = await freePort();
    const peerId = identity.peerId.toString();
    if (index === 0) this.bootstrap = `/ip4/127.0.0.1/tcp/${p2pPort}/p2p/${peerId}`;
    this.p2pPorts.set(name, p2pPort);
    this.nodes.push({ name, peerId, httpUrl: `http://127.0.0.1:${httpPort}`, dataDir, process: undefined as never, logs: [] });
  }

  /** Starts (or starts again, same identity and data) the node's process. */
  spawn(node: ProcNode): void {
    const env: Record<string, string> = {
      ...(colocatedEnv(process.env) as Record<string, string>),
      RANKMESH_DATA_DIR: node.dataDir,
      RANKMESH_HTTP_ADDR: node.httpUrl.replace('http://', ''),
      RANKMESH_LISTEN: `/ip4/127.0.0.1/tcp/${this.p2pPorts.get(node.name)}`,
      RANKMESH_PEERS: node.name === 'node-0' ? '' : this.bootstrap,
      RANKMESH_KEY_FILE: this.keyFile,
      RANKMESH_MESH_ID: 'bench',
      RANKMESH_WORLD_SIZE: String(this.options.worldSize ?? this.options.nodes),
      RANKMESH_TOKEN: 'bench-token',
      RANKMESH_STOP_ON_STDIN_END: 'true',
      ...this.options.env,
    };
    const child = Bun.spawn([process.execPath, mainPath], { env, stdin: 'pipe', stdout: 'pipe', stderr: 'pipe' });
    node.process = child;
    const logs: LogRecord[] = [];
    node.logs = logs;
    void collectLogs(child.stdout as ReadableStream<Uint8Array>, logs, {});
    void collectLogs(child.stderr as ReadableStream<Uint8Array>, logs, {});
  }

  /**
   * Resolves with the first log record of `node` that matches; rejects after timeoutMs, or at
   * once if the node's process has exited (with its last log lines, so the cause is visible).
   */
  async waitForLog(node: ProcNode, match: (r: LogRecord) => boolean, timeoutMs: number, from = 0): Promise<LogRecord> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const logs = node.logs;
      for (let i = from; i < logs.length; i++) if (match(logs[i]!)) return logs[i]!;
      if (node.process.exitCode !== null && node.process.signalCode === null) {
        const tail = logs.slice(-12).map((r) => r.msg).join('\n');
        throw new Error(`${node.name} exited with code ${node.process.exitCode}: ${tail}`);
      }
      if (performance.now() > deadline) throw new Error(`${node.name}: no matching log line within ${timeoutMs} ms`);
      await Bun.sleep(20);
    }
  }

  async stop(): Promise<void> {
    for (const node of this.nodes) node.process?.kill('SIGTERM');
    const killer = setTimeout(() => this.nodes.forEach((n) => n.process?.kill('SIGKILL')), 10_000);
    await Promise.all(this.nodes.map((n) => n.process?.exited));
    clearTimeout(killer);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** GET `path` on the node's HTTP API: the JSON body of a 2xx answer, else null (also when unreachable within 2 s). */
export async function getJson<T>(node: ProcNode, path: string): Promise<T | null> {
  try {
    const res = await fetch(`${node.httpUrl}${path}`, { signal: AbortSignal.timeout(2000) });
    return res.ok ? ((await res.json()) as T) : null;
  } catch {
    return null;
  }
}

/**
 * Parses a node's output into `into`, one record per JSON log line, each with `extra`'s fields
 * added; a line that is not JSON (a crash's stack trace, a runtime warning) is kept as text.
 */
export async function collectLogs(stream: ReadableStream<Uint8Array>, into: LogRecord[], extra: Readonly<Record<string, unknown>>): Promise<void> {
  const decoder = new TextDecoder();
  let pending = '';
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      try {
        into.push({ ...(JSON.parse(line) as LogRecord), ...extra });
      } catch {
        into.push({ time: Date.now(), msg: `[raw] ${line}`, ...extra });
      }
    }
  }
}
