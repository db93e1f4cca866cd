// The rank side of a node: it owns the engine and its loop and follows the driver's
// committed views. While this node's incarnation holds an active rank, it serves the epoch:
// a CPU communicator over the epoch's active ranks (compact ranks in mesh-rank order), the
// engine loop running on it. On a view change the old communicator is aborted and a new one
// built; when the node loses its rank it stops serving and keeps its queue for later.
//
// Every node builds its communicator as soon as it commits the view; building connects to
// the ring neighbours, which is the rendezvous. A build that fails (a peer slow or gone) is
// retried after a back-off while the view is unchanged, as a new attempt: the data plane
// accepts each ring edge of an epoch key once, so attempt k of epoch e uses the epoch key
// e × BUILD_ATTEMPTS_MAX + k, and nodes announce their attempt so a node that fell behind
// jumps to its peers' attempt instead of walking up to it.
//
// Every wait is bounded (addresses and ring links by rankConnectTimeoutMs, collectives by
// the loop's deadline) and a newer view cuts a build short; nothing here blocks the event
// loop.
//
// Pipelines (pipelines.ts): once the node's plan divides the ranks between pipelines, the
// communicator spans this rank's group only (the active ranks the plan gives the same
// pipeline), the engine serves that pipeline's model, and requests of other pipelines are
// refused (the ingress sends them elsewhere). The build key folds the plan round into the
// epoch (buildEpochOf), so each group's rings are distinct and a new round never reuses a
// key. A plan round that changes this rank's group switches it: it starts no new work, lets
// the iteration in flight finish (peers of the old group stop at the same plan round), gives
// its queued requests back unrun (the ingress re-dispatches them), retires the communicator,
// swaps the engine's model (offload the old weights, load the new), builds the new group's
// communicator and serves. It reports itself awake (onReport) only while it serves.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { type CpuCommunicator, CpuDataPlane, createCpuCommunicator } from '../../ffi/comm/cpu.ts';
import { type Incarnation, sameIncarnation, type View } from '../../mesh/view.ts';
import type { Config } from '../config.ts';
import type { WarmUpProgress } from '../engine/engine.ts';
import { createEngineLoop, type EngineLoop, type IterationStats, QueueFullError, RequestRejectedError } from '../engine/loop.ts';
import type { Communicator } from '../../ffi/comm/communicator.ts';
import { createReferenceEngine, type ReferenceEngine } from '../engine/reference.ts';
import { DEFAULT_PIPELINE } from '../engine/weights.ts';
import type { AwakeReport } from '../demand/awake.ts';
import type { PlanState } from '../demand/plan-state.ts';
import { LifecycleGate } from '../lifecycle/gate.ts';
import type { MeshDriver } from '../mesh/driver.ts';
import type { Transport } from '../p2p/transport.ts';
import { BUILD_ATTEMPTS_MAX, type BuildAttempt, DataPlaneDirectory } from './directory.ts';
import { NoRankError, RankBusyError, RankDeadlineError, RankFailedError, RankInputError, RankNotReadyError } from './errors.ts';
import { type JoinOutcome, runJoinStep } from './join.ts';
import { dataPlaneKey } from './mesh-key.ts';
import { buildEpochOf, describeServes, type GroupServes, groupOf, modelPipelineOf, type RankGroup, sameServes, servesPipeline } from './pipelines.ts';

/** Where the plan comes from: the demand service's PlanState. */
export type RankPlans = Pick<PlanState, 'current' | 'on' | 'off'>;

/**
 * How long a switching rank lets the iteration in flight finish before it aborts the old
 * group's communicator. Peers stop at the same plan round and the first to stop closes its
 * links, so this bounds only a peer that never learns of the round.
 */
const SWITCH_DRAIN_MS = 1000;

/** The reason queued requests are failed with when a switching rank gives them back. */
const GIVE_BACK_REASON = 'given back unrun: this rank switched pipelines';

export type RankSettings = Pick<
  Config,
  | 'dataPlanePort'
  | 'dataPlaneAnnounceIntervalMs'
  | 'engineModelSeed'
  | 'engineWarmUpMs'
  | 'rankQueueCapacity'
  | 'rankBatchRequestsMax'
  | 'rankConnectTimeoutMs'
  | 'rankRetryMs'
  | 'rankRequestTimeoutMs'
>;

export interface RankHostOptions {
  readonly meshId: string;
  readonly self: Incarnation;
  /** Committed views come from here: `view` and `closed` events, and the core's current view. */
  readonly driver: Pick<MeshDriver, 'on' | 'off' | 'core' | 'localDone'>;
  readonly transport: Pick<Transport, 'subscribe' | 'publish' | 'onPeer'>;
  /** The private network's pre-shared key; the data plane's key is derived from it. */
  readonly swarmKey: Uint8Array;
  /** The address the data plane listens on and advertises. */
  readonly host: string;
  readonly settings: RankSettings;
  readonly log: Logger;
  /** Called once the engine has warmed up (the node may then be given a rank). */
  readonly onWarmedUp?: () => void;
  /** Called after every engine-loop iteration (the node's metrics). */
  readonly onIteration?: (stats: IterationStats) => void;
  /** Wraps each epoch's communicator before the engine loop runs on it (metrics measure its collectives). */
  readonly wrapCommunicator?: (comm: Communicator) => Communicator;
}

/**
 * Where a node stands on its way to serving: cold → warming (alone, communicator of only
 * itself) → ready (waiting for admission) or spare (waiting in the view's spares) → joining
 * (admitted: building the epoch's communicator and passing the join step) → serving.
 */
export type JoinPhase = 'cold' | 'warming' | 'ready' | 'spare' | 'joining' | 'serving' | 'closed' | 'failed';

/** The last join step this rank passed. */
export interface LastJoin {
  readonly generation: number;
  readonly epoch: number;
  /** 'fresh' (nobody had state), 'steady' (everyone current) or 'adopt' (someone adopted). */
  readonly plan: JoinOutcome['plan']['kind'];
  /** Mesh rank of the state source (null for 'fresh'). */
  readonly source: number | null;
  /** The mesh rank this rank adopted from, or null. */
  readonly adoptedFrom: number | null;
  readonly stateBytes: number;
  readonly ms: number;
}

/** What GET /v1/rank shows. */
export interface RankStatus {
  readonly phase: JoinPhase;
  /** The mesh rank this incarnation holds in the committed view, or null. */
  readonly rank: number | null;
  readonly generation: number | null;
  readonly epoch: number | null;
  /** The communicator build within the epoch that serves (0 first), or null while not serving. */
  readonly attempt: number | null;
  /** True while the engine loop runs on a live communicator of the committed view. */
  readonly serving: boolean;
  readonly queueLength: number;
  /** Engine loop iterations so far (steps, dummy steps and idle ones). */
  readonly iterations: number;
  readonly warmUp: WarmUpProgress;
  readonly requests: { readonly accepted: number; readonly completed: number; readonly failed: number; readonly timedOut: number };
  /** The last build or communicator failure, for operators. */
  readonly lastError: string | null;
  readonly lastJoin: LastJoin | null;
  /** What this rank's group serves: "all" (no dividing plan), a pipeline's name, or "idle". */
  readonly serves: string | null;
  /** The mesh ranks of this rank's group (its communicator's, once serving). */
  readonly group: readonly number[] | null;
  /** Queued requests given back unrun by pipeline switches so far. */
  readonly givenBack: number;
}

export interface InferRequest {
  readonly id?: string;
  readonly input: readonly number[];
  readonly pipeline?: string;
}

export interface InferResult {
  readonly id: string;
  readonly output: readonly number[];
  readonly rank: number;
  readonly epoch: number;
}

export type RankHostState = { code: 'stopped' } | { code: 'started' } | { code: 'stopping' };

export class RankHost {
  private state: RankHostState = { code: 'stopped' };
  private plane: CpuDataPlane | undefined;
  private directory: DataPlaneDirectory | undefined;
  private engine: ReferenceEngine | undefined;
  private warming: Promise<void> | undefined;
  private warmed = false;
  private progress: WarmUpProgress = { phase: 'cold', fraction: 0 };
  private loop: EngineLoop | undefined;
  /** Carries the agreed lifecycle into the engine loop (drain, offload, reload, teardown). */
  private gate: LifecycleGate | undefined;
  /** The epoch served now. Invariant: serving.comm is the loop's communicator while set. */
  private serving: Serving | null = null;
  private lastBuild: BuildAttempt | null = null;
  /** True while `lastBuild` is being built (addresses awaited or ring links connecting). */
  private building = false;
  private lastError: string | null = null;
  /** This incarnation served continuously since it last passed a join step: its state is current. */
  private stateCurrent = false;
  private lastJoin: LastJoin | null = null;
  private warmUpFailed = false;
  private loggedPhase: JoinPhase = 'cold';
  private readonly counts = { accepted: 0, completed: 0, failed: 0, timedOut: 0 };
  private givenBack = 0;
  /** The plan this host follows (followPlans), and where it reports whether it is awake. */
  private plans: RankPlans | null = null;
  private onReport: ((report: AwakeReport | null) => void) | null = null;
  /**
   * What the queued requests were accepted for and the engine's model serves. Invariant: the
   * loop's queue holds only requests this accepts. Undefined before the first build.
   */
  private queueServes: GroupServes | undefined;
  /** How long the last plan-round retirement took: the iteration in flight, then closing the links. */
  private lastRetire: { drainMs: number; closeMs: number } | null = null;
  private readonly onPlan = (): void => this.kick();
  // Following views: kick() marks work to do; one reconcile run at a time does it.
  private dirty = false;
  private changed = Promise.withResolvers<void>();
  private reconciling: Promise<void> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly onView = (): void => this.kick();

  constructor(private readonly options: RankHostOptions) {}

  status(): RankHostState {
    return this.state;
  }

  /** The data-plane addresses this node has learned; present once started. */
  get addresses(): DataPlaneDirectory {
    if (this.directory === undefined) throw new Error('rank host is not started');
    return this.directory;
  }

  /** Starts the data plane and its announcements, and the engine warm-up (not awaited). */
  async start(): Promise<void> {
    if (this.state.code !== 'stopped') throw new Error(`cannot start a rank host that is ${this.state.code}`);
    const { meshId, self, settings, log } = this.options;
    const plane = await CpuDataPlane.listen({
      meshId,
      meshKey: dataPlaneKey(this.options.swarmKey, meshId),
      hostname: this.options.host,
      port: settings.dataPlanePort,
    });
    this.plane = plane;
    this.state = { code: 'started' };
    this.directory = new DataPlaneDirectory({
      transport: this.options.transport,
      self: { ...self, host: plane.hostname, port: plane.port },
      announceIntervalMs: settings.dataPlaneAnnounceIntervalMs,
      log,
      onClaim: (claim) => this.onPeerBuild(claim.build),
    });
    this.directory.start();
    log.info({ dataPlane: `${plane.hostname}:${plane.port}` }, 'data plane listening');
    // Warm up for the rank held now, if any; the first step re-places experts for the real mask.
    const meshRank = this.targetOf(this.options.driver.core.view())?.meshRank ?? 0;
    const engine = createReferenceEngine({
      model: { seed: settings.engineModelSeed },
      meshRank,
      initialMeshRanks: [meshRank],
      warmUpMs: settings.engineWarmUpMs,
    });
    this.engine = engine;
    this.gate = new LifecycleGate({
      driver: this.options.driver,
      log,
      onChange: () => this.loop?.poke(),
      work: {
        offload: async () => {
          if (engine.status === 'ready') await engine.offload();
        },
        reload: async () => {
          if (engine.status === 'offloaded') await engine.reload();
        },
        teardown: async () => {
          this.loop?.failQueued('the mesh is stopping (STOP)');
          await engine.teardown();
        },
      },
    });
    this.options.driver.on('view', this.onView);
    this.options.driver.on('closed', this.onView);
    const startedMs = performance.now();
    this.warming = engine
      .warmUp((p) => {
        if (p.phase !== this.progress.phase) log.info({ phase: p.phase, fraction: Number(p.fraction.toFixed(2)) }, 'engine warm-up');
        this.progress = p;
        this.notePhase();
      })
      .then(
        () => {
          this.warmed = true;
          log.info({ ms: Math.round(performance.now() - startedMs) }, 'engine warmed up');
          this.options.onWarmedUp?.();
          this.kick();
        },
        (err: Error) => {
          this.lastError = `engine warm-up failed: ${err.message}`;
          this.warmUpFailed = true;
          log.error({ err }, 'engine warm-up failed; this node will not serve');
        },
      );
  }

  /**
   * Follows `plans` from now on: the rank serves its group's pipeline (see pipelines.ts), and
   * `onReport` hears what it serves and whether it serves now (null: it holds no rank).
   */
  followPlans(plans: RankPlans, onReport: (report: AwakeReport | null) => void): void {
    this.plans?.off('change', this.onPlan);
    this.plans = plans;
    this.onReport = onReport;
    plans.on('change', this.onPlan);
    this.report();
    this.kick();
  }

  /** Stops serving, fails what is still queued, closes the data plane. Idempotent. */
  async stop(): Promise<void> {
    if (this.state.code !== 'started') return;
    this.state = { code: 'stopping' };
    this.options.driver.off('view', this.onView);
    this.options.driver.off('closed', this.onView);
    this.plans?.off('change', this.onPlan);
    this.gate?.close();
    clearTimeout(this.retryTimer);
    // Cuts a wait for addresses or ring links short.
    this.dirty = true;
    this.changed.resolve();
    await this.reconciling;
    if (this.serving !== null) await this.retire(this.serving, 'node stopping');
    this.loop?.failQueued('the node is stopping');
    this.directory?.stop();
    const engine = this.engine;
    // The warm-up cannot be cancelled: tear down once it has ended rather than wait for it.
    void this.warming?.then(() => engine?.teardown()).catch((err: Error) => this.options.log.warn({ err }, 'engine teardown failed'));
    await this.plane?.close();
    this.plane = undefined;
    this.state = { code: 'stopped' };
  }

  rankStatus(): RankStatus {
    const target = this.targetOf(this.currentView());
    const view = this.currentView();
    const stats = this.loop?.stats();
    return {
      phase: this.joinPhase(),
      rank: target?.meshRank ?? null,
      generation: view?.generation ?? null,
      epoch: view?.epoch ?? null,
      attempt: this.serving?.attempt ?? null,
      serving: this.isServing(),
      queueLength: this.loop?.queueLength ?? 0,
      iterations: stats === undefined ? 0 : stats.step + stats.dummy + stats.idle,
      warmUp: { phase: this.progress.phase, fraction: this.progress.fraction },
      requests: { ...this.counts },
      lastError: this.lastError,
      lastJoin: this.lastJoin,
      serves: target === null ? null : describeServes(target.serves),
      group: this.serving?.members.map((m) => m.meshRank) ?? target?.members.map((m) => m.meshRank) ?? null,
      givenBack: this.givenBack,
    };
  }

  /** Where this node stands on its way to serving (GET /v1/rank and /v1/status, logs). */
  joinPhase(): JoinPhase {
    const view = this.currentView();
    if (view?.closed) return 'closed';
    if (this.warmUpFailed) return 'failed';
    if (!this.warmed) return this.progress.phase === 'cold' ? 'cold' : 'warming';
    if (this.isServing()) return 'serving';
    if (this.targetOf(view) !== null) return 'joining';
    if (view?.spares.some((s) => sameIncarnation(s, this.options.self))) return 'spare';
    return 'ready';
  }

  /** Warm-up progress as the engine reports it. */
  warmUpProgress(): WarmUpProgress {
    return { phase: this.progress.phase, fraction: this.progress.fraction };
  }

  /**
   * Aborts the communicator in use; like any communicator failure, it is rebuilt after the
   * back-off while the view is unchanged. Queued requests stay queued. An operator's way out
   * of a wedged data plane.
   */
  abortCommunicator(reason: string): boolean {
    if (this.serving === null || this.serving.comm.aborted !== null) return false;
    this.serving.comm.abort(reason);
    return true;
  }

  /**
   * Runs one request on this node's rank. Throws NoRankError, RankNotReadyError,
   * RankInputError or RankBusyError before anything is queued; RankDeadlineError (no result
   * within options.timeoutMs, default rankRequestTimeoutMs; the request stays queued) or
   * RankFailedError after.
   */
  async infer(req: InferRequest, options: { readonly timeoutMs?: number } = {}): Promise<InferResult> {
    const engine = this.engine;
    const view = this.currentView();
    if (this.state.code !== 'started' || engine === undefined) throw new RankNotReadyError('the node is not started');
    const target = this.targetOf(view);
    if (target === null) {
      const where = view === null ? 'there is no committed view yet' : view.closed ? `the mesh is closed (epoch ${view.epoch})` : `epoch ${view.epoch} gives it none`;
      throw new NoRankError(`this node holds no active rank: ${where}; send the request to a node that does (GET /v1/view)`);
    }
    const lifecycle = this.options.driver.core.lifecycleState();
    if (lifecycle === 'STOPPING' || lifecycle === 'STOPPED') throw new RankNotReadyError(`the mesh is ${lifecycle} (a STOP was issued); it takes no more requests`);
    const loop = this.loop;
    if (loop === undefined) {
      const why = this.warmed ? `building its first communicator (epoch ${target.epoch})` : `warming up (${this.progress.phase}, ${Math.round(this.progress.fraction * 100)}%)`;
      throw new RankNotReadyError(`rank ${target.meshRank} does not serve yet: ${why}`);
    }
    const pipeline = req.pipeline ?? DEFAULT_PIPELINE;
    if (!servesPipeline(target.serves, pipeline)) {
      throw new RankNotReadyError(`rank ${target.meshRank} serves ${describeServes(target.serves)} in the plan it holds, not pipeline ${pipeline}; send it to a rank of that pipeline`);
    }
    if (this.queueServes === undefined || !sameServes(this.queueServes, target.serves)) {
      throw new RankNotReadyError(`rank ${target.meshRank} is switching to ${describeServes(target.serves)} (draining, loading the model, connecting its group)`);
    }
    const request = { id: req.id ?? randomUUID(), pipeline, input: req.input };
    const why = engine.validateRequest(request);
    if (why !== null) throw new RankInputError(why);
    const capacity = this.options.settings.rankQueueCapacity;
    if (loop.queueLength >= capacity) throw new RankBusyError(`rank ${target.meshRank} has ${capacity} requests queued, its limit`, 1);
    const pending = loop.submit(request);
    this.counts.accepted += 1;
    const timeoutMs = options.timeoutMs ?? this.options.settings.rankRequestTimeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new RankDeadlineError(`no result within ${timeoutMs} ms; the request stays queued on rank ${target.meshRank}`)), timeoutMs);
    });
    try {
      const result = await Promise.race([pending, deadline]);
      this.counts.completed += 1;
      const serving = this.serving;
      return { id: result.id, output: result.output, rank: serving?.meshRank ?? target.meshRank, epoch: serving?.epoch ?? target.epoch };
    } catch (err) {
      if (err instanceof RankDeadlineError) {
        this.counts.timedOut += 1;
        // The answer may still come; nobody waits for it any more.
        pending.catch(() => {});
        throw err;
      }
      if (err instanceof RequestRejectedError && err.message.endsWith(GIVE_BACK_REASON)) {
        // Not run and no longer queued here: the ingress sends it to a rank of its pipeline.
        this.givenBack += 1;
        throw new RankNotReadyError(err.message);
      }
      this.counts.failed += 1;
      if (err instanceof QueueFullError) throw new RankBusyError(err.message, 1);
      if (this.state.code !== 'started') throw new RankNotReadyError(`the node is stopping: ${(err as Error).message}`);
      throw new RankFailedError((err as Error).message);
    } finally {
      clearTimeout(timer);
    }
  }

  private isServing(): boolean {
    const s = this.serving;
    return s !== null && s.comm.aborted === null && this.loop?.status.code === 'running';
  }

  private currentView(): View | null {
    return this.options.driver.core.view();
  }

  /** Work to do: a new view, the end of warm-up, or a retry. */
  private kick(): void {
    if (this.state.code !== 'started') return;
    this.dirty = true;
    this.changed.resolve();
    if (this.reconciling !== null) return;
    this.reconciling = this.reconcile().finally(() => {
      this.reconciling = null;
      if (this.dirty && this.state.code === 'started') this.kick();
    });
  }

  private async reconcile(): Promise<void> {
    while (this.dirty && this.state.code === 'started') {
      this.dirty = false;
      this.changed = Promise.withResolvers<void>();
      clearTimeout(this.retryTimer);
      try {
        await this.follow(this.changed.promise);
      } catch (err) {
        this.fail(`following the view failed: ${(err as Error).message}`);
      }
      this.notePhase();
      this.report();
    }
  }

  /** Brings serving in line with the committed view; `changed` settles when a newer one arrives. */
  private async follow(changed: Promise<void>): Promise<void> {
    const { log } = this.options;
    const view = this.currentView();
    const target = this.targetOf(view);
    const current = this.serving;
    if (current !== null && target !== null && current.comm.aborted === null && current.generation === target.generation && sameMembers(current.members, target.members) && sameServes(current.serves, target.serves)) {
      // The ranks and their holders are those of the communicator in use, serving the same
      // (only spares came or went, e.g. a joiner started warming up, or a plan round moved
      // other groups): every rank keeps serving on it, so nobody loses a step to a change
      // that does not touch its group.
      if (current.buildEpoch !== target.buildEpoch) {
        this.serving = { ...current, epoch: target.epoch, buildEpoch: target.buildEpoch };
        // A later rebuild counts on from the communicator's attempt, as every rank that kept it does.
        this.lastBuild = { generation: target.generation, epoch: target.buildEpoch, attempt: current.attempt };
      }
      return;
    }
    // Admission (the mask only grows: every rank of the communicator in use keeps its rank and
    // incarnation): that communicator stays valid, so this rank keeps serving on it while the
    // new ring connects, and switches once the new one is up — the ranks stall for the switch
    // and the join step, not for the ring's connection.
    const keep = current !== null && target !== null && current.comm.aborted === null && current.generation === target.generation && sameServes(current.serves, target.serves) && grows(current.members, target.members) ? current : null;
    if (current !== null && keep === null) {
      // In the same view a healthy communicator is left only for a plan round: its group
      // changed. The iteration in flight finishes first (a view change aborts at once, as a
      // rank may be gone).
      const planned = target !== null && current.comm.aborted === null && sameEpoch(current, target);
      const reason = target === null ? 'this node lost its rank' : planned ? `plan round ${target.planRound}: group ${describeServes(target.serves)} [${target.members.map((m) => m.meshRank).join(',')}]` : sameEpoch(current, target) ? 'communicator failed' : `view changed to epoch ${target.epoch}`;
      if (planned) await this.retireGently(current, reason);
      else await this.retire(current, reason);
      if (target === null) {
        log.info({ epoch: view?.epoch, queued: this.loop?.queueLength ?? 0 }, 'this node holds no active rank; serving stopped, queued requests are kept');
      }
    }
    if (target === null) {
      // Without a rank its state stops being current: if it is admitted again it adopts.
      this.stateCurrent = false;
      this.directory!.setBuild(null);
      return;
    }
    if (!this.warmed) return; // the end of warm-up kicks again
    if (this.queueServes === undefined || !sameServes(this.queueServes, target.serves)) await this.switchServes(target);

    const attempt = this.nextAttempt(target);
    const build: BuildAttempt = { generation: target.generation, epoch: target.buildEpoch, attempt };
    this.lastBuild = build;
    this.directory!.setBuild(build);
    this.building = true;
    try {
      await this.build(target, build, changed, keep);
    } finally {
      this.building = false;
    }
  }

  /**
   * One attempt: wait for the peers' addresses, connect the ring, retire `keep` (the
   * communicator still serving while this one connected, if any), pass the join step, start
   * or resume the loop.
   */
  private async build(target: Target, build: BuildAttempt, changed: Promise<void>, keep: Serving | null): Promise<void> {
    const { log, settings } = this.options;
    const { attempt } = build;
    const others = target.members.filter((m) => m.meshRank !== target.meshRank);
    const known = await this.directory!.waitFor(
      others.map((m) => m.holder),
      settings.rankConnectTimeoutMs,
      () => this.dirty,
    );
    if (!known) {
      if (this.dirty) return;
      const missing = others.filter((m) => this.directory!.lookup(m.holder) === undefined).map((m) => m.meshRank);
      this.fail(`epoch ${target.epoch}: data-plane addresses of ranks ${missing.join(', ')} not known within ${settings.rankConnectTimeoutMs} ms`);
      this.scheduleRetry();
      return;
    }
    const meshRanks = target.members.map((m) => m.meshRank);
    const peers = others.map((m) => ({ meshRank: m.meshRank, ...this.directory!.lookup(m.holder)! }));
    const building = createCpuCommunicator({
      dataPlane: this.plane!,
      key: { meshId: this.options.meshId, generation: target.generation, epoch: target.buildEpoch * BUILD_ATTEMPTS_MAX + attempt },
      rank: meshRanks.indexOf(target.meshRank),
      meshRanks,
      peers,
      connectTimeoutMs: settings.rankConnectTimeoutMs,
    });
    const outcome = await Promise.race([
      building.then(
        (comm) => ({ comm }),
        (error: Error) => ({ error }),
      ),
      changed.then(() => null),
    ]);
    if (outcome === null || ('comm' in outcome && this.dirty)) {
      // A newer view, a peer's later attempt, or stop came first: this communicator is of no use.
      void building.then((comm) => closeQuietly(comm, 'superseded'), () => {});
      return;
    }
    if ('error' in outcome) {
      this.fail(`epoch ${target.epoch} attempt ${attempt}: communicator build failed: ${outcome.error.message}`);
      this.scheduleRetry();
      return;
    }
    const comm = outcome.comm;
    if (keep !== null && this.serving === keep) await this.retire(keep, `switching to epoch ${target.epoch}'s communicator`);
    let joined: JoinOutcome;
    // A ring can connect around a member that is gone (its neighbours' links were up), so the
    // step's collectives may wait on a dead rank: a newer view or build cuts them short.
    let stepping = true;
    void changed.then(() => {
      if (stepping) comm.abort('a newer view or build superseded the join step');
    });
    try {
      joined = await runJoinStep({ comm, engine: this.engine!, hasState: this.stateCurrent, generation: target.generation, epoch: target.epoch, deadlineMs: settings.rankConnectTimeoutMs });
    } catch (err) {
      closeQuietly(comm, 'join step failed');
      if (this.dirty) return;
      this.fail(`epoch ${target.epoch} attempt ${attempt}: join step failed: ${(err as Error).message}`);
      this.scheduleRetry();
      return;
    } finally {
      stepping = false;
    }
    this.stateCurrent = true;
    const plan = joined.plan;
    this.lastJoin = { generation: target.generation, epoch: target.epoch, plan: plan.kind, source: plan.kind === 'fresh' ? null : plan.source, adoptedFrom: joined.adoptedFrom, stateBytes: joined.stateBytes, ms: Math.round(joined.ms * 10) / 10 };
    if (joined.adoptedFrom !== null) {
      log.info({ epoch: target.epoch, rank: target.meshRank, source: joined.adoptedFrom, stateBytes: joined.stateBytes, ms: this.lastJoin.ms, iteration: this.engine!.exportState().iteration }, `joined: adopted state from rank ${joined.adoptedFrom}`);
    }
    this.serving = { generation: target.generation, epoch: target.epoch, buildEpoch: target.buildEpoch, attempt, meshRank: target.meshRank, members: target.members, serves: target.serves, comm };
    log.info({ generation: target.generation, epoch: target.epoch, planRound: target.planRound, attempt, rank: target.meshRank, activeRanks: meshRanks, serves: describeServes(target.serves) }, 'serving the epoch');
    if (this.loop === undefined) {
      const engine = this.engine!;
      this.loop = createEngineLoop({
        engine,
        comm: this.options.wrapCommunicator?.(comm) ?? comm,
        ...(this.options.onIteration !== undefined ? { onIteration: this.options.onIteration } : {}),
        queueCapacity: settings.rankQueueCapacity,
        batchRequestsMax: settings.rankBatchRequestsMax,
        validate: (r) => engine.validateRequest(r),
        onAbort: (reason) => this.onLoopAbort(reason),
        lifecycle: this.gate,
      });
      this.loop.start();
    } else {
      this.loop.resume(this.options.wrapCommunicator?.(comm) ?? comm);
    }
  }

  /**
   * A peer moved on to a later attempt of the epoch this node is building: its ring links
   * will never match ours, so stop waiting on them and join its attempt now.
   */
  private onPeerBuild(peer: BuildAttempt | null): void {
    const mine = this.lastBuild;
    if (!this.building || peer === null || mine === null) return;
    if (peer.generation === mine.generation && peer.epoch === mine.epoch && peer.attempt > mine.attempt) this.kick();
  }

  /** The loop stopped on a communicator failure that no view change caused. */
  private onLoopAbort(reason: string): void {
    const serving = this.serving;
    // A communicator retired here was cleared from `serving` before it was aborted.
    if (serving === null || this.state.code !== 'started') return;
    // A peer switched to the next epoch's communicator first (admission): this rank's build
    // of it is under way and retires this one when it is up.
    const next = this.lastBuild;
    if (this.building && next !== null && next.generation === serving.generation && next.epoch !== serving.buildEpoch) return;
    this.fail(`epoch ${serving.epoch} attempt ${serving.attempt}: communicator aborted: ${reason}`);
    this.report();
    this.scheduleRetry();
  }

  /** Aborts the epoch's communicator, stops the loop (its queue is kept) and closes the links. */
  private async retire(serving: Serving, reason: string): Promise<void> {
    this.serving = null;
    this.report();
    serving.comm.abort(reason);
    await this.loop?.stop();
    await serving.comm.close();
  }

  /**
   * Leaves a group for a plan round: the loop starts nothing more and stops after the
   * iteration in flight (its step's results are delivered), then the communicator is retired.
   * A peer of the old group still waiting in a collective learns from the closed links.
   */
  private async retireGently(serving: Serving, reason: string): Promise<void> {
    this.serving = null;
    this.report();
    const startedMs = performance.now();
    const loop = this.loop;
    if (loop !== undefined) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const drained = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, Math.min(SWITCH_DRAIN_MS, this.options.settings.rankConnectTimeoutMs));
      });
      await Promise.race([loop.stop(), drained]);
      clearTimeout(timer);
    }
    const drainedMs = performance.now();
    serving.comm.abort(reason);
    await loop?.stop();
    await serving.comm.close();
    this.lastRetire = { drainMs: Math.round(drainedMs - startedMs), closeMs: Math.round(performance.now() - drainedMs) };
  }

  /**
   * The group now serves something else: give the queued requests back unrun (the ingress
   * re-dispatches them to ranks of their pipeline; none was started, as the loop is stopped),
   * then swap the engine's model. Requests for the new group are refused until this is done.
   */
  private async switchServes(target: Target): Promise<void> {
    const { log } = this.options;
    const loop = this.loop;
    const queued = loop?.queueLength ?? 0;
    // The loop runs only on a communicator in use, and every one was retired above.
    if (loop !== undefined && loop.status.code !== 'running') loop.failQueued(GIVE_BACK_REASON);
    const engine = this.engine!;
    const from = engine.pipeline;
    const startedMs = performance.now();
    await engine.servePipeline(modelPipelineOf(target.serves, DEFAULT_PIPELINE));
    const previous = this.queueServes;
    this.queueServes = target.serves;
    if (previous !== undefined) {
      log.info({ epoch: target.epoch, planRound: target.planRound, rank: target.meshRank, from: describeServes(previous), to: describeServes(target.serves), modelFrom: from, modelTo: engine.pipeline, givenBack: queued, ...this.lastRetire, swapMs: Math.round(performance.now() - startedMs) }, 'switched pipelines');
    }
    this.lastRetire = null;
  }

  /** Tells onReport what this rank serves and whether it serves now. */
  private report(): void {
    const onReport = this.onReport;
    if (onReport === null) return;
    const target = this.targetOf(this.currentView());
    if (target === null) return onReport(null);
    const s = this.serving;
    // A rank whose group grows keeps serving its pipeline on the old communicator meanwhile: awake.
    const serving = this.isServing() && s !== null && sameServes(s.serves, target.serves);
    onReport({ rank: target.meshRank, pipeline: target.serves.kind === 'one' ? target.serves.pipeline : null, round: target.round, serving });
  }

  /** The next try: one past our last in this view, or the furthest a peer announced. */
  private nextAttempt(target: Target): number {
    const last = this.lastBuild;
    let attempt = last !== null && last.generation === target.generation && last.epoch === target.buildEpoch ? last.attempt + 1 : 0;
    for (const m of target.members) {
      const b = this.directory!.buildOf(m.holder);
      if (b !== null && b.generation === target.generation && b.epoch === target.buildEpoch) attempt = Math.max(attempt, b.attempt);
    }
    return Math.min(attempt, BUILD_ATTEMPTS_MAX - 1);
  }

  /** Logs the join phase when it changed (operators follow a joiner in the logs). */
  private notePhase(): void {
    const phase = this.joinPhase();
    if (phase === this.loggedPhase) return;
    const previous = this.loggedPhase;
    this.loggedPhase = phase;
    const view = this.currentView();
    this.options.log.info({ phase, previous, epoch: view?.epoch ?? null, rank: this.targetOf(view)?.meshRank ?? null, warmUp: this.warmUpProgress() }, `join phase: ${phase}`);
  }

  private scheduleRetry(): void {
    clearTimeout(this.retryTimer);
    if (this.state.code !== 'started') return;
    this.retryTimer = setTimeout(() => this.kick(), this.options.settings.rankRetryMs);
  }

  private fail(message: string): void {
    this.lastError = message;
    this.options.log.warn(message);
  }

  /**
   * The epoch and group this incarnation serves in `view` under the plan it holds, or null
   * when it holds no active rank there.
   */
  private targetOf(view: View | null): Target | null {
    if (view === null || view.closed) return null;
    const meshRank = view.ranks.findIndex((h) => sameIncarnation(h, this.options.self));
    if (meshRank < 0) return null;
    const active: Member[] = [];
    view.ranks.forEach((holder, rank) => {
      if (holder !== null) active.push({ meshRank: rank, holder });
    });
    const group = groupOf(this.plans?.current() ?? null, view, active.map((m) => m.meshRank), meshRank);
    const inGroup = new Set(group.ranks);
    const members = active.filter((m) => inGroup.has(m.meshRank));
    return { generation: view.generation, epoch: view.epoch, buildEpoch: buildEpochOf(view.epoch, group.planRound), planRound: group.planRound, round: group.round, serves: group.serves, meshRank, members };
  }
}

interface Serving {
  readonly generation: number;
  readonly epoch: number;
  /** The view epoch and plan round the communicator's key was built for (buildEpochOf). */
  readonly buildEpoch: number;
  readonly attempt: number;
  readonly meshRank: number;
  /** The ranks the communicator connects (this rank's group in the view it was built for). */
  readonly members: readonly Member[];
  readonly serves: GroupServes;
  readonly comm: CpuCommunicator;
}

interface Member {
  readonly meshRank: number;
  readonly holder: Incarnation;
}

interface Target {
  readonly generation: number;
  readonly epoch: number;
  /** The view epoch and plan round folded into one (buildEpochOf): the build key's epoch part. */
  readonly buildEpoch: number;
  readonly planRound: RankGroup['planRound'];
  readonly round: RankGroup['round'];
  readonly serves: GroupServes;
  readonly meshRank: number;
  /** This rank's group: the view's active ranks that serve what it serves, ascending. */
  readonly members: readonly Member[];
}

function sameEpoch(a: { generation: number; epoch: number }, b: { generation: number; epoch: number }): boolean {
  return a.generation === b.generation && a.epoch === b.epoch;
}

function sameMembers(a: readonly Member[], b: readonly Member[]): boolean {
  return a.length === b.length && a.every((m, i) => m.meshRank === b[i]!.meshRank && sameIncarnation(m.holder, b[i]!.holder));
}

/** Whether every member of `from` keeps its rank, with the same incarnation, in `to`. */
function grows(from: readonly Member[], to: readonly Member[]): boolean {
  return from.every((m) => to.some((t) => t.meshRank === m.meshRank && sameIncarnation(t.holder, m.holder)));
}

function closeQuietly(comm: CpuCommunicator, reason: string): void {
  comm.abort(reason);
  void comm.close().catch(() => {});
}
