// Real rankmesh nodes inside one process: each is a full Runtime (libp2p over loopback TCP,
// the protocol core and its driver, SQLite, HTTP on port 0), started with one shared key and
// bootstrapped to the first node. Tests and benchmarks use it to cut links between nodes
// (the transport's partition hook) and to watch views converge, without child processes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { View } from '../../mesh/rawnode.ts';
import { activePeers } from '../../mesh/view.ts';
import { validate, type Config } from '../../node/config.ts';
import { Runtime } from '../../node/runtime.ts';
import { loadOrCreateSecret, newSwarmKey } from '../../node/secrets.ts';

export interface InprocNode {
  readonly name: string;
  readonly runtime: Runtime;
  readonly peerId: string;
  readonly httpUrl: string;
  /** Every view this node committed, in order. */
  readonly views: View[];
}

export interface InprocMeshOptions {
  nodes: number;
  worldSize?: number;
  /** Settings applied to every node (e.g. faster timing). */
  settings?: Partial<Config>;
  logLevel?: 'silent' | 'info' | 'debug';
  /**
   * Keeps the last this many log lines of every node in memory (at logLevel, 'info' when
   * unset) instead of printing them: a test prints them with recentLogs() when it fails.
   */
  captureLogLines?: number;
}

export class InprocMesh {
  readonly nodes: InprocNode[] = [];
  private readonly dir = mkdtempSync(join(tmpdir(), 'rankmesh-inproc-'));
  private readonly keyFile = join(this.dir, 'swarm.key');
  /** Captured log lines, oldest first (captureLogLines). */
  private readonly captured: string[] = [];

  private constructor(private readonly options: InprocMeshOptions) {
    loadOrCreateSecret(this.keyFile, newSwarmKey);
  }

  /** Starts the first node, then the rest bootstrapped to it, a few at a time. */
  static async start(options: InprocMeshOptions): Promise<InprocMesh> {
    const mesh = new InprocMesh(options);
    try {
      const first = await mesh.startNode(0, []);
      const bootstrap = first.runtime.transport.addresses();
      const rest = Array.from({ length: options.nodes - 1 }, (_, i) => i + 1);
      // Starting every node at once makes a thundering herd of dials at one listener.
      for (let i = 0; i < rest.length; i += 8) {
        await Promise.all(rest.slice(i, i + 8).map((index) => mesh.startNode(index, bootstrap)));
      }
      return mesh;
    } catch (err) {
      await mesh.stop();
      throw err;
    }
  }

  async startNode(index: number, peers: string[]): Promise<InprocNode> {
    const name = `node-${index}`;
    const config = validate({
      dataDir: join(this.dir, name),
      httpAddr: '127.0.0.1:0',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      peers,
      keyFile: this.keyFile,
      token: 'inproc-test-token',
      meshId: 'inproc',
      worldSize: this.options.worldSize ?? this.options.nodes,
      gossipHeartbeatIntervalMs: 100,
      redialMinMs: 50,
      redialMaxMs: 1000,
      ...this.options.settings,
    });
    const capture = this.options.captureLogLines;
    const logger =
      capture === undefined
        ? pino({ level: this.options.logLevel ?? 'silent' })
        : pino(
            { level: this.options.logLevel ?? 'info' },
            {
              write: (line: string) => {
                this.captured.push(line.trimEnd());
                if (this.captured.length > capture) this.captured.splice(0, this.captured.length - capture);
              },
            },
          );
    const runtime = new Runtime(config, logger.child({ node: name }));
    const started = await runtime.start();
    const views: View[] = [];
    runtime.driver.on('view', (view) => views.push(view));
    const node: InprocNode = { name, runtime, peerId: started.peerId, httpUrl: started.httpUrl, views };
    this.nodes[index] = node;
    return node;
  }

  /** The captured log lines of every node, oldest first, as one text (captureLogLines). */
  recentLogs(): string {
    return this.captured.join('\n');
  }

  /** The view a node holds now (null before its first). */
  view(node: InprocNode): View | null {
    return node.runtime.driver.core.view();
  }

  /** Cuts every link between the two groups, both ways. */
  async partition(a: readonly InprocNode[], b: readonly InprocNode[]): Promise<void> {
    await Promise.all([
      ...a.map((n) => n.runtime.transport.block(b.map((x) => x.peerId))),
      ...b.map((n) => n.runtime.transport.block(a.map((x) => x.peerId))),
    ]);
  }

  /** Lifts every cut. */
  heal(): void {
    for (const node of this.live()) node.runtime.transport.unblock(node.runtime.transport.blockedPeers());
  }

  /** Stops one node abruptly, as a crash looks to its peers: its connections close. */
  async kill(node: InprocNode): Promise<void> {
    await node.runtime.stop();
  }

  live(): InprocNode[] {
    return this.nodes.filter((n) => n.runtime.status().code === 'started');
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.runtime.stop()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Peer ids holding an active rank in the view, in rank order. */
export function activeMembers(view: View | null): string[] {
  return view === null ? [] : [...activePeers(view)];
}
