// One node's runtime: starts its pieces in order — storage (and its lock), identity and
// secrets, libp2p, HTTP — and stops them in reverse. stop() leaves no timer, socket or file
// handle behind, so the process can end on its own.
import type { Server } from 'bun';
import { isAbsolute, join, resolve } from 'node:path';
import packageJson from '../package.json' with { type: 'json' };
import { createApp } from './api/app.ts';
import type { NodeInfo } from './api/status.ts';
import type { Config } from './config.ts';
import { loadOrCreateIdentity, newBootId } from './identity.ts';
import type { Logger } from './log.ts';
import { type CoreConfig, RawNode } from '../mesh/rawnode.ts';
import { controlRoutes } from './api/control.ts';
import { debugRoutes } from './api/debug.ts';
import { GossipProbe } from './p2p/gossip-probe.ts';
import { meshRoutes } from './api/mesh.ts';
import { rankRoutes } from './api/rank.ts';
import { ingressRoutes } from './api/ingress.ts';
import { demandRoutes } from './api/demand.ts';
import { DemandService } from './demand/service.ts';
import { defaultModelConfig } from './engine/weights.ts';
import { Ingress } from './ingress/ingress.ts';
import { ForwardServer } from './ingress/serve.ts';
import { IngressStore } from './ingress/store.ts';
import { MeshDriver } from './mesh/driver.ts';
import { CloseLinger } from './lifecycle/linger.ts';
import { closeRoutes } from './lifecycle/routes.ts';
import { meterCommunicator } from './metrics/communicator.ts';
import { NodeMetrics } from './metrics/metrics.ts';
import { CoreStore } from './mesh/store.ts';
import { Transport } from './p2p/transport.ts';
import { RankHost } from './rank/host.ts';
import { loadOrCreateToken, loadSwarmKey } from './secrets.ts';
import { openStorage, type Storage } from './storage/database.ts';
import { recordStart } from './storage/meta.ts';

export const version: string = packageJson.version;

export type RuntimeStatus =
  | { code: 'stopped' }
  | { code: 'starting' }
  | { code: 'started'; node: StartedNode }
  | { code: 'stopping' };

/** The closed view a node learned of (STOP committed). */
export interface ClosedMesh {
  readonly generation: number;
  readonly epoch: number;
  /**
   * What this incarnation was in the closed view: a rank, a waiting spare, a member removed
   * before the close (it was cut off), or outside it (a joiner still warming up, a node that
   * just started).
   */
  readonly role: 'member' | 'spare' | 'removed' | 'outsider';
}

/**
 * The data directory holds a mesh that STOP closed and no new generation was asked for
 * (newGeneration): the node does not start, and `bun run node` exits 0.
 */
export class MeshClosedError extends Error {
  override readonly name = 'MeshClosedError';
  constructor(
    readonly meshId: string,
    readonly generation: number,
    readonly epoch: number,
  ) {
    super(`mesh ${meshId} was closed by STOP (generation ${generation}, epoch ${epoch}); nothing to join — start with --new-generation to form generation ${generation + 1}`);
  }
}

/** What a started node is, for logs, tests and scripts. */
export interface StartedNode {
  peerId: string;
  bootId: string;
  httpUrl: string;
  addresses: string[];
  dataDir: string;
  /** Where the bearer token lives when it was generated, undefined when it came from config. */
  tokenFile: string | undefined;
  keyFile: string;
  starts: number;
}

export class Runtime {
  private state: RuntimeStatus = { code: 'stopped' };
  private storage: Storage | undefined;
  private transportRef: Transport | undefined;
  private server: Server<undefined> | undefined;
  private driverRef: MeshDriver | undefined;
  private rankRef: RankHost | undefined;
  private ingressRef: Ingress | undefined;
  private demandRef: DemandService | undefined;
  private metricsRef: NodeMetrics | undefined;
  private appRef: ReturnType<typeof createApp> | undefined;
  /** Aborted at stop: open dashboard event streams end so HTTP stop does not wait on them. */
  private stopping: AbortController | undefined;
  private readonly closed = Promise.withResolvers<ClosedMesh>();
  private probeRef: GossipProbe | undefined;
  private lingerRef: CloseLinger | undefined;

  constructor(
    readonly config: Config,
    private readonly log: Logger,
  ) {}

  status(): RuntimeStatus {
    return this.state;
  }

  /**
   * Settles when this node learns that its mesh closed (a STOP committed); `bun run node`
   * then keeps gossiping the closed record while closeLinger says so and exits 0.
   */
  get meshClosed(): Promise<ClosedMesh> {
    return this.closed.promise;
  }

  /** The linger after the close: `done` settles when the node may exit; present once started. */
  get closeLinger(): CloseLinger {
    if (this.lingerRef === undefined) throw new Error('runtime is not started');
    return this.lingerRef;
  }

  /** The libp2p transport; present once started. */
  get transport(): Transport {
    if (this.transportRef === undefined) throw new Error('runtime is not started');
    return this.transportRef;
  }

  /** The rank side (engine, data plane, engine loop); present once started. */
  get rank(): RankHost {
    if (this.rankRef === undefined) throw new Error(this.config.role === 'gateway' ? 'a gateway holds no rank' : 'runtime is not started');
    return this.rankRef;
  }

  /** The node's Prometheus metrics; present once started. */
  get metrics(): NodeMetrics {
    if (this.metricsRef === undefined) throw new Error('runtime is not started');
    return this.metricsRef;
  }

  /** The HTTP app (every route module mounted); present once started. */
  get app(): ReturnType<typeof createApp> {
    if (this.appRef === undefined) throw new Error('runtime is not started');
    return this.appRef;
  }

  private get probe(): GossipProbe {
    if (this.probeRef === undefined) throw new Error('runtime is not started');
    return this.probeRef;
  }

  /** The edge: accepted requests and their routing to ranks; present once started. */
  get ingress(): Ingress {
    if (this.ingressRef === undefined) throw new Error('runtime is not started');
    return this.ingressRef;
  }

  /** Demand records, plan rounds and the plan (PlanState); present once started. */
  get demand(): DemandService {
    if (this.demandRef === undefined) throw new Error('runtime is not started');
    return this.demandRef;
  }

  /** The driver of the protocol core; present once started. */
  get driver(): MeshDriver {
    if (this.driverRef === undefined) throw new Error('runtime is not started');
    return this.driverRef;
  }

  async start(): Promise<StartedNode> {
    if (this.state.code !== 'stopped') throw new Error(`cannot start a runtime that is ${this.state.code}`);
    this.state = { code: 'starting' };
    try {
      const node = await this.startPieces();
      this.state = { code: 'started', node };
      return node;
    } catch (err) {
      await this.stopPieces();
      this.state = { code: 'stopped' };
      throw err;
    }
  }

  /** Stops HTTP, then libp2p, then closes the database. Idempotent. */
  async stop(): Promise<void> {
    if (this.state.code !== 'started') return;
    this.state = { code: 'stopping' };
    await this.stopPieces();
    this.state = { code: 'stopped' };
  }

  private async startPieces(): Promise<StartedNode> {
    const { config, log } = this;
    const startedAtMs = Date.now();
    const dataDir = resolve(config.dataDir);
    // The lock comes first: a second process on this directory is refused before it reads
    // or writes any other file there.
    this.storage = openStorage(dataDir);
    const identity = await loadOrCreateIdentity(dataDir);
    const peerId = identity.peerId.toString();
    const bootId = newBootId();
    const defaultKeyFile = config.keyFile === '';
    const keyFile = defaultKeyFile ? join(dataDir, 'swarm.key') : resolvePath(config.keyFile);
    const swarm = loadSwarmKey(keyFile, defaultKeyFile);
    const tokenFile = config.token === '' ? join(dataDir, 'token') : undefined;
    const token = tokenFile === undefined ? config.token : loadOrCreateToken(tokenFile).token;
    const start = recordStart(this.storage.db, peerId, bootId, startedAtMs);
    if (start.previousPeerId !== undefined) log.warn({ previousPeerId: start.previousPeerId }, 'identity key changed since the last start');
    if (identity.created) log.info({ peerId }, 'created a new identity key');
    if (swarm.created) log.info({ keyFile }, 'created a new pre-shared key');

    // A closed mesh stays closed: starting a node again never begins a new generation from a
    // stale closed record, only when the operator asks for one.
    const before = new CoreStore(this.storage.db, config.meshId).load()?.view;
    if (before?.closed && !config.newGeneration) throw new MeshClosedError(config.meshId, before.generation, before.epoch);
    if (before?.closed) log.info({ closedGeneration: before.generation }, `forming generation ${before.generation + 1} of mesh ${config.meshId} (--new-generation)`);

    this.transportRef = await Transport.create({
      privateKey: identity.privateKey,
      swarmKey: swarm.key,
      meshId: config.meshId,
      listen: config.listen,
      peers: config.peers,
      gossipHeartbeatIntervalMs: config.gossipHeartbeatIntervalMs,
      gossipMeshDegree: config.gossipMeshDegree,
      peerConnectionsTarget: config.peerConnectionsTarget,
      ipColocationFactorWeight: config.ipColocationFactorWeight,
      requestTimeoutMs: config.requestTimeoutMs,
      requestBytesMax: config.requestBytesMax,
      peerGuard: { invalidPerMinuteMax: config.peerInvalidPerMinuteMax, blockMs: config.peerBlockMs },
      redialMinMs: config.redialMinMs,
      redialMaxMs: config.redialMaxMs,
      log: log.child({ component: 'p2p' }),
    });
    const transport = this.transportRef;
    transport.onPeer((event) => log.info({ peer: event.peerId }, event.type === 'connect' ? 'peer connected' : 'peer disconnected'));
    await transport.start();
    this.probeRef = new GossipProbe(transport, peerId, log.child({ component: 'probe' }));
    this.probeRef.start();

    const store = new CoreStore(this.storage.db, config.meshId);
    const stored = store.storedMeshId();
    if (stored !== undefined && stored !== config.meshId) {
      log.warn({ storedMeshId: stored, meshId: config.meshId }, 'data directory held state of another mesh; starting fresh for this one');
    }
    const core = new RawNode(coreConfig(config, peerId, bootId), store.load());
    this.driverRef = new MeshDriver({
      core,
      transport,
      store,
      log: log.child({ component: 'mesh' }),
      tickMs: config.tickMs,
      probeTimeoutMs: config.probeTimeoutMs,
      probeRoundTripMs: config.probeRoundTripMs,
    });
    // Whether this incarnation was ever in an open view (a rank or a spare): only a node that
    // never was may take a closed record it learns as the end of the last generation and
    // form the next one (--new-generation); any other node exits with its mesh.
    let inOpenView = false;
    this.lingerRef = new CloseLinger({
      acks: () => core.closeAcks(),
      settings: lingerSettings(config),
      pollMs: config.tickMs,
      log: log.child({ component: 'lifecycle' }),
    });
    const linger = this.lingerRef;
    this.driverRef.on('view', (view) => {
      if (!view.closed && [...view.ranks, ...view.spares].some((h) => h?.peerId === peerId && h.bootId === bootId)) inOpenView = true;
    });
    this.driverRef.on('closed', (view) => {
      if (config.newGeneration && !inOpenView && core.startNextGeneration()) {
        log.info({ closedGeneration: view.generation }, `learned that generation ${view.generation} is closed; forming generation ${view.generation + 1} (--new-generation)`);
        return;
      }
      const mine = (h: { peerId: string; bootId: string } | null) => h?.peerId === peerId && h.bootId === bootId;
      const role = view.ranks.some(mine) ? 'member' : view.spares.some(mine) ? 'spare' : inOpenView ? 'removed' : 'outsider';
      // The engine is torn down (STOPPING) or never served; gossip and the closed record stay
      // up until the peers this node knows of hold it too (a partitioned one learns it here).
      linger.begin();
      this.closed.resolve({ generation: view.generation, epoch: view.epoch, role });
    });
    await this.driverRef.start();
    const { hostname, port } = splitHostPort(config.httpAddr);
    const metrics = new NodeMetrics();
    this.metricsRef = metrics;
    // Repeat intervals of the periodic gossip, automatic ones resolved for this worldSize.
    const gossip = periodicGossip(config);
    // A gateway holds no rank: no engine, no data plane, nothing forwarded to it.
    this.rankRef = config.role === 'gateway' ? undefined : new RankHost({
      meshId: config.meshId,
      self: { peerId, bootId },
      driver: this.driverRef,
      transport,
      swarmKey: swarm.key,
      host: hostname,
      settings: { ...config, ...gossip },
      log: log.child({ component: 'rank' }),
      // Readiness is what lets a spare or joiner be given a rank: it comes with the end of
      // the engine's warm-up, so healthy ranks never wait on a warming node.
      onWarmedUp: () => core.markReady(),
      onIteration: (stats) => metrics.observeIteration(stats),
      wrapCommunicator: (comm) => meterCommunicator(comm, metrics),
    });
    await this.rankRef?.start();
    // The synchronous-admission baseline: READY now, so the ranks take this node in and wait.
    if (config.engineReadyBeforeWarmUp && this.rankRef !== undefined) core.markReady();

    const demand = new DemandService({
      meshId: config.meshId,
      peerId,
      db: this.storage.db,
      transport,
      driver: this.driverRef,
      log: log.child({ component: 'demand' }),
      // Events prompt most checks at once; the poll catches a rebalance round coming due,
      // which may start only planRoundIntervalMs after the last.
      pollMs: Math.max(config.tickMs, config.planRoundIntervalMs),
      roundIntervalMs: config.planRoundIntervalMs,
      settleMs: config.planSettleMs,
      syncIntervalMs: gossip.demandSyncIntervalMs,
      requestTimeoutMs: config.requestTimeoutMs,
    });
    this.demandRef = demand;
    await demand.start();
    // The rank serves its plan group's pipeline and reports when it is awake for it.
    this.rankRef?.followPlans(demand.plans, (report) => demand.awake.report(report));

    const rank = this.rankRef;
    const forwards =
      rank === undefined
        ? undefined
        : new ForwardServer({
            transport,
            rank,
            dedupeEntries: config.ingressDedupeEntries,
            // Answer "pending" well before the transport's own request timeout ends the stream.
            holdMs: Math.max(1, Math.floor(config.requestTimeoutMs / 2)),
            resultTimeoutMs: config.ingressRequestTimeoutMs,
            log: log.child({ component: 'forward' }),
          });
    await forwards?.start();
    const ingress = new Ingress({
      self: peerId,
      driver: this.driverRef,
      transport,
      store: IngressStore.open(this.storage.path, config.ingressFinishedKeptMax),
      settings: config,
      vocab: defaultModelConfig.vocab,
      local: forwards === undefined ? undefined : (bytes) => forwards.serve(bytes),
      // Requests go only to ranks the current plan gives their pipeline (every rank before plans exist).
      ranksFor: (pipeline) => demand.plans.ranksFor(pipeline),
      log: log.child({ component: 'ingress' }),
    });
    this.ingressRef = ingress;
    ingress.start();
    demand.plans.on('change', () => ingress.reroute());

    const info: NodeInfo = {
      peerId,
      bootId,
      meshId: config.meshId,
      worldSize: config.worldSize,
      version,
      startedAtMs,
      addresses: () => transport.addresses(),
      connectedPeers: () => transport.connectedPeers(),
      join: rank === undefined ? undefined : () => ({ phase: rank.joinPhase(), rank: rank.rankStatus().rank, warmUp: rank.warmUpProgress() }),
    };
    const driver = this.driverRef;
    metrics.attach({ driver, rank: this.rankRef, ingress });
    this.stopping = new AbortController();
    const app = createApp({
      info,
      db: this.storage.db,
      token,
      limits: { bodyBytesMax: config.httpBodyBytesMax, mutationsPerSecond: config.httpMutationsPerSecond, mutationBurst: config.httpMutationBurst },
      log: log.child({ component: 'http' }),
      metrics,
      stopping: this.stopping.signal,
      onChange: (listener) => {
        driver.on('view', listener);
        driver.on('lifecycle', listener);
        demand.plans.on('change', listener);
        return () => {
          driver.off('view', listener);
          driver.off('lifecycle', listener);
          demand.plans.off('change', listener);
        };
      },
      routes: [meshRoutes(core, config.tickMs), ...(rank === undefined ? [] : [rankRoutes(rank)]),
        ingressRoutes(ingress, { syncWaitMs: config.ingressSyncWaitMs, inputTokensMax: config.ingressInputTokensMax }),
        controlRoutes(this.driverRef, { timeoutMs: config.controlTimeoutMs }), closeRoutes(linger, lingerSettings(config)), debugRoutes(this.probe),
        demandRoutes(demand, { timeoutMs: config.demandTimeoutMs, pipelines: config.pipelines })],
    });
    this.appRef = app;
    this.server = Bun.serve({ hostname, port, fetch: app.fetch });
    const httpUrl = `http://${hostname}:${this.server.port}`;
    return { peerId, bootId, httpUrl, addresses: transport.addresses(), dataDir, tokenFile, keyFile, starts: start.starts };
  }

  private async stopPieces(): Promise<void> {
    // Waiting sync requests are answered at once (202, their id) so HTTP stop does not wait on
    // them; unfinished requests stay stored and are dispatched again by the next start.
    this.ingressRef?.stop();
    this.ingressRef = undefined;
    // Callers waiting for a rank are answered (504, the node is stopping) before HTTP stops.
    this.demandRef?.stop();
    this.demandRef = undefined;
    this.stopping?.abort();
    this.metricsRef?.detach();
    if (this.server !== undefined) {
      // Stop accepting, let in-flight requests finish, then drop idle keep-alive sockets. The
      // rank host stops meanwhile, so a request waiting on its rank is answered (503) instead
      // of holding the stop until its deadline.
      const serverStopped = this.server.stop();
      await this.rankRef?.stop();
      await serverStopped;
      this.server = undefined;
    }
    await this.rankRef?.stop();
    this.rankRef = undefined;
    this.lingerRef?.stop();
    this.lingerRef = undefined;
    this.driverRef?.stop();
    this.driverRef = undefined;
    this.probeRef?.stop();
    this.probeRef = undefined;
    if (this.transportRef !== undefined) {
      await this.transportRef.stop();
      this.transportRef = undefined;
    }
    this.storage?.close();
    this.storage = undefined;
  }
}

/** The longest interval between a closed node's heartbeats (the acknowledgements of the close). */
export const CLOSED_HEARTBEAT_MAX_MS = 600;

/**
 * Heartbeat interval and suspicion timeout, the settings' 0 resolved (see
 * autoHeartbeatIntervalMs), and the closed node's heartbeat interval: at most
 * CLOSED_HEARTBEAT_MAX_MS, so STOP exits as soon in a large mesh.
 */
export function membershipTiming(config: Pick<Config, 'heartbeatIntervalMs' | 'suspectMs' | 'worldSize'>): { heartbeatIntervalMs: number; suspectMs: number; closedHeartbeatIntervalMs: number } {
  const heartbeatIntervalMs = config.heartbeatIntervalMs > 0 ? config.heartbeatIntervalMs : autoHeartbeatIntervalMs(config.worldSize);
  const suspectMs = config.suspectMs > 0 ? config.suspectMs : 3 * heartbeatIntervalMs;
  return { heartbeatIntervalMs, suspectMs, closedHeartbeatIntervalMs: Math.min(heartbeatIntervalMs, CLOSED_HEARTBEAT_MAX_MS) };
}

/**
 * How much less often each node repeats its periodic gossip (heartbeats, demand summaries, awake
 * reports, data-plane announcements) in a mesh of `worldSize` ranks than in one of 8 or fewer:
 * (worldSize / 8)², at least 1. Every node hears every node's periodic gossip, so at fixed
 * intervals a node's gossip work grows with the mesh; slowing the repeats with the square lets
 * that work shrink as the mesh grows, which is what lets 32 node processes idle on a few
 * cores. Changes are gossiped when they happen whatever the interval: only the repeats, which
 * let a node that missed one catch up, come less often.
 */
export function gossipSlowdown(worldSize: number): number {
  return Math.max(1, (worldSize / 8) ** 2);
}

/**
 * The heartbeat interval when none is set: 300 ms × gossipSlowdown, at most 10 s (1.2 s at 16
 * ranks, 4.8 s at 32), so a node hears 27 heartbeats a second at 8 ranks, 13 at 16, 7 at 32. A
 * crash is still found at once through its closed connections, and a hang through the ring
 * observers' scheduled probes (probeIntervalMs); only suspicion by silence takes longer in a
 * large mesh.
 */
export function autoHeartbeatIntervalMs(worldSize: number): number {
  return Math.round(Math.min(10_000, 300 * gossipSlowdown(worldSize)));
}

/** The repeat intervals of demand summaries and awake reports, and of data-plane announcements: set, or automatic (0). */
export function periodicGossip(config: Pick<Config, 'demandSyncIntervalMs' | 'dataPlaneAnnounceIntervalMs' | 'worldSize'>): { demandSyncIntervalMs: number; dataPlaneAnnounceIntervalMs: number } {
  const auto = (baseMs: number): number => Math.round(Math.min(60_000, baseMs * gossipSlowdown(config.worldSize)));
  return {
    demandSyncIntervalMs: config.demandSyncIntervalMs > 0 ? config.demandSyncIntervalMs : auto(2000),
    dataPlaneAnnounceIntervalMs: config.dataPlaneAnnounceIntervalMs > 0 ? config.dataPlaneAnnounceIntervalMs : auto(5000),
  };
}

/** The core's configuration: millisecond settings become whole ticks (at least one). */
export function coreConfig(config: Config, peerId: string, bootId: string): CoreConfig {
  const ticks = (ms: number): number => Math.max(1, Math.round(ms / config.tickMs));
  const timing = membershipTiming(config);
  return {
    meshId: config.meshId,
    self: peerId,
    bootId,
    worldSize: config.worldSize,
    role: config.role,
    // The core's PRNG only spreads heartbeats and back-offs; each incarnation draws its own.
    seed: seedFrom(bootId),
    heartbeatTicks: ticks(timing.heartbeatIntervalMs),
    closedHeartbeatTicks: ticks(timing.closedHeartbeatIntervalMs),
    suspectTicks: ticks(timing.suspectMs),
    probeTimeoutTicks: ticks(config.probeTimeoutMs),
    probeIntervalTicks: ticks(config.probeIntervalMs),
  };
}

/** The close linger's bounds: a closed node's own heartbeat reaches its last acknowledger within two of its (closed) intervals. */
export function lingerSettings(config: Config): { graceMs: number; lingerMaxMs: number; settleMs: number } {
  return { graceMs: config.closedGraceMs, lingerMaxMs: config.closeLingerMs, settleMs: 2 * membershipTiming(config).closedHeartbeatIntervalMs };
}

function seedFrom(text: string): number {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return h >>> 0;
}

function resolvePath(path: string): string {
  return isAbsolute(path) ? path : resolve(path);
}

function splitHostPort(address: string): { hostname: string; port: number } {
  const colon = address.lastIndexOf(':');
  return { hostname: address.slice(0, colon), port: Number(address.slice(colon + 1)) };
}
