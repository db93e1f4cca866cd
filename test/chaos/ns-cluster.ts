// Real `bun node/main.ts` processes, one per network namespace of a NetnsLab: every node has
// its own address on the lab's bridge (the same ports everywhere, since each namespace has its
// own), one shared pre-shared key, every other node as a bootstrap peer. Every JSON log line
// of every incarnation is kept, every exit is recorded, and each node's view history can be
// read from its SQLite database, so a scenario can be audited after the fact.
import { Database } from 'bun:sqlite';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { NetnsLab } from '../../scripts/lib/netns.ts';
import { collectLogs } from '../../scripts/lib/proc-cluster.ts';
import { loadOrCreateIdentity } from '../../node/identity.ts';
import { loadOrCreateSecret, newSwarmKey } from '../../node/secrets.ts';

const mainPath = resolve(import.meta.dir, '../../node/main.ts');
const httpPort = 7070;
const p2pPort = 7071;
const dataPlanePort = 7072;

export const chaosToken = 'chaos-token';
export const chaosMeshId = 'chaos';

/**
 * Timing settings for chaos runs: redials capped at 2 s so a healed link is used soon, a
 * stuck forward sent again after 3 s, and an accepted request failed (deadline) after
 * `ingressRequestTimeoutMs` at worst, so every request ends within a scenario.
 */
export function chaosNodeSettings(ingressRequestTimeoutMs: number): Record<string, string> {
  return {
    RANKMESH_REDIAL_MAX_MS: '2000',
    RANKMESH_RANK_CONNECT_TIMEOUT_MS: '3000',
    RANKMESH_RANK_REQUEST_TIMEOUT_MS: '5000',
    RANKMESH_INGRESS_FORWARD_TIMEOUT_MS: '3000',
    RANKMESH_INGRESS_REQUEST_TIMEOUT_MS: String(ingressRequestTimeoutMs),
  };
}

export interface LogRecord {
  time: number;
  msg: string;
  [field: string]: unknown;
}

/** How one incarnation of a node ended. */
export interface NodeExit {
  readonly incarnation: number;
  readonly code: number | null;
  readonly signal: string | null;
  /** The harness ended it on purpose (kill()). */
  readonly killed: boolean;
}

export interface NsNode {
  readonly index: number;
  readonly name: string;
  readonly peerId: string;
  readonly address: string;
  readonly httpUrl: string;
  readonly dataDir: string;
  process: ReturnType<typeof Bun.spawn> | undefined;
  /** Incarnations started so far (1 after the first start). */
  incarnations: number;
  /** Set by kill() until the process is gone. */
  killing: boolean;
  /** Log lines of every incarnation, in order; `incarnation` is added to each. */
  readonly logs: LogRecord[];
  readonly exits: NodeExit[];
}

/** A view as GET /v1/view serves it. */
export interface ViewBody {
  generation: number;
  epoch: number;
  worldSize: number;
  mask: string;
  ranks: { rank: number; peerId: string; bootId: string; active: boolean }[];
  spares: { peerId: string; bootId: string; ready: boolean }[];
  closed: boolean;
}

/** One row of a node's view_history table. */
export interface HistoryRow {
  generation: number;
  epoch: number;
  /** The stored view, as canonical JSON (keys sorted), so equal views compare equal. */
  viewJson: string;
  committedAtMs: number;
}

export interface NsClusterOptions {
  lab: NetnsLab;
  /** Nodes to run: hosts 0..nodes-1 of the lab. */
  nodes: number;
  worldSize: number;
  /** Extra RANKMESH_* settings for every node. */
  env?: Record<string, string>;
  /** Arguments for bun before the script, per node (e.g. `--inspect=ADDRESS:9229/x` to debug one). */
  bunArgs?: (node: { index: number; address: string }) => string[];
}

export class NsCluster {
  readonly nodes: NsNode[] = [];
  readonly dir = mkdtempSync(join(tmpdir(), 'rankmesh-chaos-'));
  private readonly keyFile = join(this.dir, 'swarm.key');
  private peerAddresses: string[] = [];

  private constructor(private readonly options: NsClusterOptions) {
    loadOrCreateSecret(this.keyFile, newSwarmKey);
  }

  static async start(options: NsClusterOptions): Promise<NsCluster> {
    if (options.nodes > options.lab.hosts.length) throw new RangeError(`the lab has ${options.lab.hosts.length} hosts, not ${options.nodes}`);
    const cluster = new NsCluster(options);
    for (let index = 0; index < options.nodes; index++) {
      const host = options.lab.hosts[index]!;
      const dataDir = join(cluster.dir, `node-${index}`);
      const identity = await loadOrCreateIdentity(dataDir);
      const peerId = identity.peerId.toString();
      cluster.nodes.push({
        index,
        name: `node-${index}`,
        peerId,
        address: host.address,
        httpUrl: `http://${host.address}:${httpPort}`,
        dataDir,
        process: undefined,
        incarnations: 0,
        killing: false,
        logs: [],
        exits: [],
      });
    }
    cluster.peerAddresses = cluster.nodes.map((n) => `/ip4/${n.address}/tcp/${p2pPort}/p2p/${n.peerId}`);
    for (const node of cluster.nodes) cluster.spawn(node);
    return cluster;
  }

  /** Whether the node's current process is running. */
  running(node: NsNode): boolean {
    return node.process !== undefined && node.process.exitCode === null && node.process.signalCode === null;
  }

  /** Starts (or starts again, same identity and data) the node's process in its namespace. */
  spawn(node: NsNode): void {
    if (this.running(node)) throw new Error(`${node.name} is already running`);
    const env: Record<string, string> = {
      ...(process.env as Record<string, string>),
      RANKMESH_DATA_DIR: node.dataDir,
      RANKMESH_HTTP_ADDR: `${node.address}:${httpPort}`,
      RANKMESH_LISTEN: `/ip4/${node.address}/tcp/${p2pPort}`,
      RANKMESH_DATA_PLANE_PORT: String(dataPlanePort),
      RANKMESH_PEERS: this.peerAddresses.filter((_, i) => i !== node.index).join(','),
      RANKMESH_KEY_FILE: this.keyFile,
      RANKMESH_MESH_ID: chaosMeshId,
      RANKMESH_WORLD_SIZE: String(this.options.worldSize),
      RANKMESH_TOKEN: chaosToken,
      RANKMESH_STOP_ON_STDIN_END: 'true',
      ...this.options.env,
    };
    node.incarnations += 1;
    const incarnation = node.incarnations;
    const bunArgs = this.options.bunArgs?.({ index: node.index, address: node.address }) ?? [];
    const child = Bun.spawn(this.options.lab.command(node.index, [process.execPath, ...bunArgs, mainPath]), {
      env,
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: 'pipe',
    });
    node.process = child;
    void collectLogs(child.stdout as ReadableStream<Uint8Array>, node.logs, { incarnation });
    void collectLogs(child.stderr as ReadableStream<Uint8Array>, node.logs, { incarnation });
    void child.exited.then(() => {
      node.exits.push({ incarnation, code: child.exitCode, signal: child.signalCode === null ? null : String(child.signalCode), killed: node.killing });
      node.killing = false;
    });
  }

  /** Sends `signal` and waits until the process is gone. */
  async kill(node: NsNode, signal: 'SIGKILL' | 'SIGTERM' = 'SIGKILL'): Promise<void> {
    const child = node.process;
    if (child === undefined || !this.running(node)) return;
    node.killing = true;
    child.kill(signal);
    await child.exited;
    // The exit record is pushed by the exited handler registered first; let it run.
    await Bun.sleep(0);
  }

  /** The node's committed view over HTTP, or null (no view yet, unreachable, not running). */
  async view(node: NsNode, timeoutMs = 1000): Promise<ViewBody | null> {
    if (!this.running(node)) return null;
    try {
      const res = await fetch(`${node.httpUrl}/v1/view`, { signal: AbortSignal.timeout(timeoutMs) });
      return res.ok ? ((await res.json()) as ViewBody) : null;
    } catch {
      return null;
    }
  }

  /** Every view the node recorded (all incarnations), read from its database. */
  history(node: NsNode): HistoryRow[] {
    let db: Database;
    try {
      db = new Database(join(node.dataDir, 'node.sqlite'), { readonly: true });
    } catch {
      return [];
    }
    try {
      const rows = db
        .query('SELECT generation, epoch, view, committed_at_ms AS committedAtMs FROM view_history WHERE mesh_id = ? ORDER BY generation, epoch')
        .all(chaosMeshId) as { generation: number; epoch: number; view: string; committedAtMs: number }[];
      return rows.map((r) => ({ generation: r.generation, epoch: r.epoch, viewJson: canonicalJson(JSON.parse(r.view)), committedAtMs: r.committedAtMs }));
    } finally {
      db.close();
    }
  }

  /** 'view committed' log records of the node (all incarnations), in order. */
  commits(node: NsNode): LogRecord[] {
    return node.logs.filter((r) => r.msg === 'view committed');
  }

  /**
   * Stops every running node with SIGTERM (SIGKILL after `graceMs`) and waits for them.
   * The exits land in each node's `exits`.
   */
  async stop(graceMs = 15_000): Promise<void> {
    const running = this.nodes.filter((n) => this.running(n));
    for (const node of running) node.process!.kill('SIGTERM');
    const killer = setTimeout(() => running.forEach((n) => n.process?.kill('SIGKILL')), graceMs);
    await Promise.all(running.map((n) => n.process!.exited));
    clearTimeout(killer);
    await Bun.sleep(0);
  }

  /** Removes the nodes' data directories (after stop()). */
  removeFiles(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** JSON with object keys sorted, so two equal values give equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

