// The engine loop of one rank. Every iteration starts with a max all-reduce of "this rank
// has queued work" over the epoch's active ranks (Megatron's rule), so all ranks agree on
// what the iteration is: a step where a rank has work, a dummy step where it has none but
// another rank has, or an idle wait when no rank has work. Ranks therefore issue the same
// collectives in the same order, and the engine's expert-parallel step never waits on a
// rank that is not stepping.
//
// On a communicator abort the loop stops stepping, puts the batch it was running back at
// the head of its queue (nothing is lost) and reports; the owner builds the next epoch's
// communicator and calls resume(comm).
//
// How a node serves an epoch (CPU backend; the NCCL one differs only in the communicator):
//   once:      plane = await CpuDataPlane.listen({ meshId, meshKey })   // advertise plane.port
//              engine = createReferenceEngine({ meshRank, initialMeshRanks: [meshRank] })
//              await engine.warmUp(onProgress)
//   per epoch: comm = await createCpuCommunicator({ dataPlane: plane, key, rank, meshRanks, peers })
//              joiner only: engine.adoptState(state of the lowest-ranked healthy member)
//              first epoch: loop = createEngineLoop({ engine, comm, validate: (r) => engine.validateRequest(r) }); loop.start()
//              later:       loop.resume(comm)   (after the old one was aborted and the loop reported it)
//   view change: oldComm.abort('view change'); await oldComm.close()
import { CommAbortedError, type Communicator } from '../../ffi/comm/communicator.ts';
import type { Engine, EngineRequest, EngineResult } from './engine.ts';

export interface EngineLoopOptions {
  readonly engine: Engine;
  readonly comm: Communicator;
  /** Requests waiting on this rank, at most. Default 1024. */
  readonly queueCapacity?: number;
  /** Requests per step, at most. Default 32. */
  readonly batchRequestsMax?: number;
  /**
   * With no work anywhere, wait this long (or until work arrives here) before asking again;
   * each further idle iteration doubles the wait up to idleWaitMaxMs. Default 2.
   */
  readonly idleWaitMs?: number;
  /**
   * Longest idle wait. Every idle iteration is an all-reduce across all ranks, so a short
   * wait keeps latency low and a long one keeps an idle mesh cheap (Megatron sleeps 20 ms).
   * Work arriving at this rank ends its wait at once. Where the communicator reports peer
   * activity (the CPU backend) a peer's all-reduce also ends it, so the wait can be long:
   * default 5000 ms there (an idle all-reduce of n ranks sends n − 1 messages at every rank,
   * so an idle 32-rank mesh asking every second costs ~1000 socket writes a second). Otherwise
   * peers join within this bound: default 100 ms.
   */
  readonly idleWaitMaxMs?: number;
  /** Deadline of the per-iteration all-reduce. Default 10000. */
  readonly collectiveDeadlineMs?: number;
  /** Why a request cannot run (checked on submit), or null. E.g. ReferenceEngine.validateRequest. */
  readonly validate?: (req: EngineRequest) => string | null;
  readonly onIteration?: (stats: IterationStats) => void;
  /** The communicator failed; the loop has stopped and kept its queue. */
  readonly onAbort?: (reason: string) => void;
  /** Work that later layers run between iterations (joiners, plans). */
  readonly control?: LoopControl;
  /** The mesh lifecycle (pause, suspend, resume, stop); absent: always running. */
  readonly lifecycle?: LoopLifecycle;
}

/**
 * How the loop follows the mesh lifecycle (Megatron's drain rule). While `draining` is set
 * this rank starts no queued request; every iteration's all-reduce also carries "this rank
 * is not draining", so when an iteration's maxima are (no work, nobody running) every rank
 * learns in the same collective that the mesh is drained, and every rank parks there. No
 * collective runs while parked, so `parked` may offload, reload or tear the engine down.
 */
export interface LoopLifecycle {
  /** A plain field read once per iteration: true from PAUSING on. */
  readonly draining: boolean;
  /**
   * Called when every rank is drained; the loop is parked until it resolves (the mesh runs
   * again) or `stopping` resolves (the loop was asked to stop, e.g. for a view change).
   */
  parked(stopping: Promise<void>): Promise<void>;
}

/**
 * Checked at the top of every iteration. `pending` must be a plain field read: with nothing
 * pending the check costs nothing, which is what lets healthy ranks poll for joiners on
 * every iteration.
 */
export interface LoopControl {
  readonly pending: boolean;
  /** Runs at the hook point when `pending` is set; it may swap the communicator. */
  run(ctx: LoopControlContext): Promise<void>;
}

export interface LoopControlContext {
  readonly comm: Communicator;
  readonly queueLength: number;
  setCommunicator(comm: Communicator): void;
}

export interface IterationStats {
  /** Loop iterations since start, idle ones included. */
  readonly iteration: number;
  readonly kind: 'step' | 'dummy' | 'idle';
  readonly iterationMs: number;
  /** Requests and tokens this rank stepped (0 for dummy and idle). */
  readonly batchRequests: number;
  readonly batchTokens: number;
  readonly queueLength: number;
}

export type EngineLoopStatus = { code: 'stopped' } | { code: 'running' } | { code: 'aborted'; reason: string };

export class QueueFullError extends Error {
  override readonly name = 'QueueFullError';
}
export class RequestRejectedError extends Error {
  override readonly name = 'RequestRejectedError';
}

export function createEngineLoop(options: EngineLoopOptions): EngineLoop {
  return new EngineLoop(options);
}

interface Pending {
  readonly req: EngineRequest;
  readonly resolve: (r: EngineResult) => void;
  readonly reject: (e: Error) => void;
}

export class EngineLoop {
  private readonly engine: Engine;
  private comm: Communicator;
  private readonly queue: Pending[] = [];
  private readonly queueCapacity: number;
  private readonly batchRequestsMax: number;
  private readonly idleWaitMs: number;
  private readonly idleWaitMaxMs: number | undefined;
  /** Idle iterations in a row; the idle wait doubles with each. */
  private idleStreak = 0;
  private readonly deadlineMs: number;
  private readonly options: EngineLoopOptions;
  private status_: EngineLoopStatus = { code: 'stopped' };
  private stopRequested = false;
  private running: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private iterations = 0;
  private readonly counts = { step: 0, dummy: 0, idle: 0, parked: 0 };
  /** Settles when stop() is called; renewed on start. */
  private stopping = Promise.withResolvers<void>();
  private parkedNow = false;

  constructor(options: EngineLoopOptions) {
    this.options = options;
    this.engine = options.engine;
    this.comm = options.comm;
    this.queueCapacity = options.queueCapacity ?? 1024;
    this.batchRequestsMax = options.batchRequestsMax ?? 32;
    this.idleWaitMs = options.idleWaitMs ?? 2;
    this.idleWaitMaxMs = options.idleWaitMaxMs === undefined ? undefined : Math.max(this.idleWaitMs, options.idleWaitMaxMs);
    this.deadlineMs = options.collectiveDeadlineMs ?? 10_000;
  }

  get status(): EngineLoopStatus {
    return this.status_;
  }

  /** Whether the loop is in an idle wait (no rank had work at its last all-reduce). */
  get idleWaiting(): boolean {
    return this.wake !== null;
  }

  get queueLength(): number {
    return this.queue.length;
  }

  get communicator(): Communicator {
    return this.comm;
  }

  /** Iterations run so far, by kind ('parked': times every rank was drained and the loop parked). */
  stats(): { readonly step: number; readonly dummy: number; readonly idle: number; readonly parked: number } {
    return { ...this.counts };
  }

  /** Whether the loop is parked now (every rank drained; no collective in progress). */
  get parked(): boolean {
    return this.parkedNow;
  }

  /** Queues a request; the promise settles with its result. Refused at once when full or invalid. */
  submit(req: EngineRequest): Promise<EngineResult> {
    const why = this.options.validate?.(req) ?? null;
    if (why !== null) return Promise.reject(new RequestRejectedError(`request ${req.id}: ${why}`));
    if (this.queue.length >= this.queueCapacity) return Promise.reject(new QueueFullError(`queue holds ${this.queueCapacity} requests`));
    return new Promise<EngineResult>((resolve, reject) => {
      this.queue.push({ req, resolve, reject });
      // A draining rank starts nothing new, so new work need not end its wait.
      if (!this.options.lifecycle?.draining) this.wake?.();
    });
  }

  start(): void {
    if (this.running) return;
    this.stopRequested = false;
    this.stopping = Promise.withResolvers<void>();
    this.status_ = { code: 'running' };
    this.running = this.run();
  }

  /**
   * Stops after the current iteration; queued requests stay queued. An iteration blocked on
   * peers ends when they take part or its deadline passes: abort the communicator first for
   * an immediate stop.
   */
  async stop(): Promise<void> {
    this.stopRequested = true;
    this.stopping.resolve();
    this.wake?.();
    await this.running;
  }

  /**
   * Ends an idle wait now (e.g. the lifecycle changed): the next iteration's all-reduce
   * carries the news to every rank at once instead of after the idle back-off.
   */
  poke(): void {
    this.wake?.();
  }

  /** After an abort (or a stop): continue on a new communicator with the kept queue. */
  resume(comm: Communicator): void {
    if (this.running) throw new Error('resume: the loop is still running');
    this.comm = comm;
    this.start();
  }

  /** Fails every queued request (teardown). */
  failQueued(reason: string): void {
    for (const p of this.queue.splice(0)) p.reject(new RequestRejectedError(`request ${p.req.id}: ${reason}`));
  }

  private async run(): Promise<void> {
    try {
      while (!this.stopRequested) await this.iterate();
      this.status_ = { code: 'stopped' };
    } catch (e) {
      const reason = e instanceof CommAbortedError ? e.reason : `engine loop failed: ${e instanceof Error ? e.message : String(e)}`;
      // A failure outside the communicator leaves peers mid-collective: abort so they learn
      // now rather than at their deadline.
      if (!(e instanceof CommAbortedError)) this.comm.abort(reason);
      this.status_ = { code: 'aborted', reason };
      this.options.onAbort?.(reason);
    } finally {
      this.running = null;
    }
  }

  private async iterate(): Promise<void> {
    const started = performance.now();
    this.iterations += 1;

    // ---- Hook point: pause, joiners and plans are handled here, between iterations. ----
    const control = this.options.control;
    if (control?.pending) {
      await control.run({ comm: this.comm, queueLength: this.queue.length, setCommunicator: (c) => (this.comm = c) });
    }

    const comm = this.comm;
    const lifecycle = this.options.lifecycle;
    const draining = lifecycle?.draining ?? false;
    // A step finishes every request it starts, so a rank has in-flight work at the top of an
    // iteration only as queued requests it may still start.
    const hasWork = !draining && this.queue.length > 0 ? 1 : 0;
    const maxima = await comm.allReduce(new Int32Array([hasWork, draining ? 0 : 1]), 'max', { deadlineMs: this.deadlineMs });
    if (maxima[0] === 0 && maxima[1] === 0 && lifecycle !== undefined) {
      // Every rank is draining and none has work: the same verdict on every rank, so every
      // rank parks at this iteration and the collectives stay matched when they resume.
      this.idleStreak = 0;
      this.counts.parked += 1;
      this.parkedNow = true;
      try {
        await lifecycle.parked(this.stopping.promise);
      } finally {
        this.parkedNow = false;
      }
      return;
    }
    if (maxima[0] === 0) {
      // Every rank sees the same sequence of maxima, so their idle waits grow in step.
      this.idleStreak += 1;
      // A draining rank whose peers are not draining yet asks again soon: they learn of the
      // pause within a gossip hop, and the mesh is drained only once an all-reduce says so.
      const maxMs = this.idleWaitMaxMs ?? Math.max(this.idleWaitMs, comm.watchPeerActivity ? 5000 : 100);
      const waitMs = draining ? this.idleWaitMs : Math.min(maxMs, this.idleWaitMs * 2 ** Math.min(20, this.idleStreak - 1));
      await this.idleWait(waitMs, comm);
      this.report('idle', started, 0, 0);
      return;
    }
    this.idleStreak = 0;
    if (!hasWork) {
      await this.engine.dummyStep(comm);
      this.report('dummy', started, 0, 0);
      return;
    }
    const batch = this.queue.splice(0, this.batchRequestsMax);
    let results: EngineResult[];
    try {
      results = await this.engine.step(
        batch.map((p) => p.req),
        comm,
      );
    } catch (e) {
      // A lost communicator loses nothing: the batch goes back to the head of the queue, in
      // order, for the next epoch. Any other failure is the engine's verdict on this batch:
      // its requests are reported failed rather than retried forever.
      if (e instanceof CommAbortedError) this.queue.unshift(...batch);
      else for (const p of batch) p.reject(new RequestRejectedError(`request ${p.req.id}: ${e instanceof Error ? e.message : String(e)}`));
      throw e;
    }
    // Results come in batch order (so two requests with one id still get their own).
    let tokens = 0;
    batch.forEach((p, i) => {
      tokens += p.req.input.length;
      const r = results[i];
      if (r?.id === p.req.id) p.resolve(r);
      else p.reject(new RequestRejectedError(`request ${p.req.id}: the engine returned no result for it`));
    });
    this.report('step', started, batch.length, tokens);
  }

  /** Waits waitMs, or less: until work arrives here, poke(), stop(), or a peer's next collective. */
  private idleWait(waitMs: number, comm: Communicator): Promise<void> {
    const startable = this.queue.length > 0 && !this.options.lifecycle?.draining;
    if (startable || this.stopRequested) return Promise.resolve();
    return new Promise((resolve) => {
      let unwatch: (() => void) | undefined;
      const done = () => {
        clearTimeout(timer);
        unwatch?.();
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, waitMs);
      this.wake = done;
      unwatch = comm.watchPeerActivity?.(done);
    });
  }

  private report(kind: IterationStats['kind'], started: number, batchRequests: number, batchTokens: number): void {
    this.counts[kind] += 1;
    this.options.onIteration?.({
      iteration: this.iterations,
      kind,
      iterationMs: performance.now() - started,
      batchRequests,
      batchTokens,
      queueLength: this.queue.length,
    });
  }
}
