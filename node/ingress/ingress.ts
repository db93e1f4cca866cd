// The edge of a node: it accepts inference requests, stores each one before anything else
// happens to it, and forwards it to a rank serving its pipeline, chosen round-robin over the
// committed view's active ranks in rank order. Nothing accepted is lost:
//
//   - a rank that leaves the view, or whose stream breaks, has its requests dispatched again
//     to another rank; its late replies are recognised by a per-request send number and
//     dropped (Megatron's coordinator crashed on one, and never re-routed such requests);
//   - a rank answers a repeated request id from its dedupe table (serve.ts), and the first
//     result to arrive here is the one recorded, so every request has exactly one result;
//   - a restarted node finds its unfinished requests in the store and dispatches them again;
//   - while the mesh is not RUNNING nothing new is forwarded: requests wait here (bounded) and
//     go out after UNPAUSE; STOP fails the waiting ones with the status `stopped`.
//
// Back-pressure is bounded everywhere: per rank a queue of at most ingressRankQueueCapacity
// requests (of which ingressRankConcurrency are in flight), and at most ingressHeldMax new
// requests held while no rank can take them. Past those, accept() throws IngressBusyError
// (429) or IngressUnavailableError (503) and nothing is stored.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { LifecycleState } from '../../mesh/rawnode.ts';
import { sameIncarnation, type Incarnation } from '../../mesh/view.ts';
import type { Config } from '../config.ts';
import type { MeshDriver } from '../mesh/driver.ts';
import type { RequestResult, Transport } from '../p2p/transport.ts';
import { IdempotencyConflictError, IngressBusyError, IngressInputError, IngressTooLargeError, IngressUnavailableError, UnknownPipelineError } from './errors.ts';
import { RoundRobin, servingRanks, type RanksFor } from './router.ts';
import type { IngressStore, NewRequest, Outcome, RequestMode, StoredRequest } from './store.ts';
import { decodeForwardReplies, encodeForwardBatch, FORWARD_BATCH_MAX, FORWARD_REQUEST, type ForwardReply, forwardRequestJson } from './wire.ts';

export type IngressSettings = Pick<
  Config,
  | 'pipelines'
  | 'ingressRankQueueCapacity'
  | 'ingressRankConcurrency'
  | 'ingressHeldMax'
  | 'ingressForwardTimeoutMs'
  | 'ingressRequestTimeoutMs'
  | 'ingressInputTokensMax'
  | 'requestBytesMax'
>;

export interface IngressOptions {
  /** This node's PeerId: a rank on this node is served in-process, not over the network. */
  readonly self: string;
  readonly driver: Pick<MeshDriver, 'on' | 'off' | 'core'>;
  readonly transport: Pick<Transport, 'request'>;
  readonly store: IngressStore;
  readonly settings: IngressSettings;
  /** Tokens are integers in 0..vocab-1 (the engine's vocabulary). */
  readonly vocab: number;
  /** Answers a forward to this node's own rank (ForwardServer.serve); absent on a gateway. */
  readonly local?: (bytes: Uint8Array) => Promise<Uint8Array>;
  /** Which ranks serve a pipeline (the planner's assignment); absent or null: every active rank. */
  readonly ranksFor?: RanksFor;
  readonly log: Logger;
}

/** What a client sends (POST /v1/generate), after JSON and schema checks. */
export interface GenerateInput {
  readonly input: readonly number[];
  readonly pipeline?: string;
  readonly idempotencyKey?: string;
  readonly mode?: RequestMode;
}

export type RequestStatus = 'queued' | 'running' | 'done' | 'failed';

/** A request as GET /v1/requests/:id shows it. */
export interface RequestView {
  readonly id: string;
  readonly status: RequestStatus;
  readonly pipeline: string;
  readonly mode: RequestMode;
  readonly idempotencyKey: string | null;
  /** Present when done. */
  readonly output?: readonly number[];
  /** The rank that produced the output (done), or the rank it is forwarded to (running). */
  readonly rank?: number;
  readonly epoch?: number;
  /** Present when failed: `deadline`, `stopped`, `bad-input` or `rank-failed`. */
  readonly error?: { readonly code: string; readonly message: string };
  /** Dispatches to a rank so far (a re-dispatch after a rank left counts again). */
  readonly attempts: number;
  readonly acceptedAtMs: number;
  readonly finishedAtMs?: number;
}

export interface Accepted {
  readonly request: RequestView;
  /** True when the idempotency key named a request accepted earlier (nothing new was stored). */
  readonly existing: boolean;
}

export interface IngressCounters {
  accepted: number;
  done: number;
  failed: number;
  /** Requests moved off a rank that left the view, or whose stream broke, to be dispatched again. */
  redispatched: number;
  /** Replies from a send that was superseded (a removed rank, a re-dispatch) and were dropped. */
  lateReplies: number;
  /** Forwards whose stream broke or timed out. */
  brokenForwards: number;
  refusedBusy: number;
  refusedUnavailable: number;
}

export type IngressStatus = { code: 'stopped' } | { code: 'started' };

/** Failed replies from ranks ("the engine failed it") before the request itself fails. */
const RANK_FAILURES_MAX = 3;
/** Back-off before a refused or broken request is dispatched again: base × 2^k, capped. */
const RETRY_BASE_MS = 25;
const RETRY_MAX_MS = 1000;
/** Pause before asking a rank again about a request it reported still queued past its deadline. */
const DEADLINE_POLL_MS = 200;
const MODES: readonly RequestMode[] = ['sync', 'async'];
/** Forward exchanges unanswered per rank, at most; more requests wait and go in the next batch. */
const FORWARD_EXCHANGES_MAX = 4;

export class Ingress {
  readonly counters: IngressCounters = { accepted: 0, done: 0, failed: 0, redispatched: 0, lateReplies: 0, brokenForwards: 0, refusedBusy: 0, refusedUnavailable: 0 };
  private state: IngressStatus = { code: 'stopped' };
  /** Every accepted, unfinished request. Invariant: each is in exactly one of held, a slot's queue, a slot's inflight. */
  private readonly tracked = new Map<string, Tracked>();
  /**
   * Finished requests whose outcome is not committed yet, with the view GET shows meanwhile:
   * the request as it was before it finished. A crash before the commit runs it again, so an
   * outcome not yet stored must not reach a client.
   */
  private readonly finishing = new Map<string, { readonly pending: RequestView; readonly t: Tracked }>();
  /** Requests with no rank yet, oldest (and re-dispatched) first. */
  private held: Tracked[] = [];
  /** One per rank incarnation of the current view that was routed to. */
  private readonly slots = new Map<string, Slot>();
  private readonly router = new RoundRobin();
  private readonly pipelines: ReadonlySet<string>;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private retryAtMs = Infinity;
  private pumpScheduled = false;
  private readonly onView = (): void => this.followView();
  private readonly onLifecycle = (): void => this.followLifecycle();

  constructor(private readonly options: IngressOptions) {
    this.pipelines = new Set(options.settings.pipelines);
  }

  status(): IngressStatus {
    return this.state;
  }

  /** Takes up the unfinished requests of the last run and follows views and the lifecycle. */
  start(): void {
    if (this.state.code === 'started') return;
    this.state = { code: 'started' };
    const unfinished = this.options.store.unfinished();
    for (const row of unfinished) this.track(row, null, Promise.resolve()).committed = true;
    if (unfinished.length > 0) this.options.log.info({ requests: unfinished.length }, 'dispatching again the requests accepted before the restart');
    this.options.driver.on('view', this.onView);
    this.options.driver.on('closed', this.onView);
    this.options.driver.on('lifecycle', this.onLifecycle);
    this.followView();
  }

  /**
   * Stops forwarding; unfinished requests stay stored for the next start, and every waiter is
   * answered with the request as it stands. Closes the store (if it owns its connection).
   * Idempotent.
   */
  stop(): void {
    if (this.state.code !== 'started') return;
    this.state = { code: 'stopped' };
    this.options.driver.off('view', this.onView);
    this.options.driver.off('closed', this.onView);
    this.options.driver.off('lifecycle', this.onLifecycle);
    clearTimeout(this.retryTimer);
    for (const t of this.tracked.values()) {
      clearTimeout(t.deadline);
      t.send++;
      for (const w of t.waiters) w(this.viewOf(t));
      t.waiters.length = 0;
    }
    this.tracked.clear();
    this.held = [];
    this.slots.clear();
    this.options.store.close();
  }

  /**
   * Validates, stores and queues one request, or returns the one its idempotency key named;
   * resolves once the request is committed to the store. Rejects (having stored nothing) with
   * IngressInputError, IngressTooLargeError, UnknownPipelineError, IdempotencyConflictError,
   * IngressBusyError or IngressUnavailableError.
   */
  async accept(req: GenerateInput): Promise<Accepted> {
    const pipeline = req.pipeline ?? 'default';
    const mode = req.mode ?? 'sync';
    this.validate(req, pipeline, mode);
    if (this.state.code !== 'started') throw this.unavailable('the node is not started', 1);
    const key = req.idempotencyKey ?? null;
    if (key !== null) {
      const earlier = this.options.store.byIdempotencyKey(key);
      if (earlier !== undefined) {
        if (earlier.pipeline !== pipeline || !sameTokens(earlier.input, req.input)) {
          throw new IdempotencyConflictError(`idempotency key ${JSON.stringify(key)} was used for request ${earlier.id} with another pipeline or input`);
        }
        const pending = this.tracked.get(earlier.id);
        if (pending !== undefined) await this.committed(pending);
        return { request: this.get(earlier.id) ?? this.viewOfStored(earlier), existing: true };
      }
    }
    const lifecycle = this.lifecycle();
    if (lifecycle === 'STOPPING' || lifecycle === 'STOPPED' || this.options.driver.core.view()?.closed === true) {
      throw this.unavailable(`the mesh is ${lifecycle === 'STOPPING' ? 'stopping' : 'stopped'} (a STOP was issued); it takes no more requests`, null);
    }
    // Straight to a rank's queue when the mesh runs and nothing older waits; otherwise held.
    let slot: Slot | null = null;
    if (lifecycle === 'RUNNING' && this.held.length === 0) {
      const ranks = this.servingRanks(pipeline);
      if (ranks.length > 0) {
        const rank = this.router.pick(pipeline, ranks, (r) => this.hasRoom(r));
        if (rank === null) {
          this.counters.refusedBusy++;
          const capacity = this.options.settings.ingressRankQueueCapacity;
          throw new IngressBusyError(`every rank serving pipeline ${pipeline} (${ranks.join(', ')}) has ${capacity} requests queued here, the limit`, 1);
        }
        slot = this.slotOf(rank);
      }
    }
    if (slot === null && this.held.length >= this.options.settings.ingressHeldMax) {
      const why = lifecycle !== 'RUNNING' ? `the mesh is ${lifecycle}` : 'no rank serves the pipeline yet';
      throw this.unavailable(`${this.held.length} requests already wait here for a rank (${why}), the limit`, 1);
    }
    const row: NewRequest = { id: randomUUID(), idempotencyKey: key, pipeline, input: [...req.input], mode, acceptedAtMs: Date.now() };
    // Tracked (and counted against the queues) at once, forwarded only once committed.
    const t = this.track({ ...row, attempts: 0 }, slot, this.options.store.insert(row));
    await this.committed(t);
    this.counters.accepted++;
    this.pump();
    // It may have finished meanwhile (a STOP fails waiting requests at once).
    return { request: this.get(t.id) ?? this.viewOf(t), existing: false };
  }

  /** Resolves once `t`'s insert is committed; if the store failed, `t` is dropped and this rejects. */
  private async committed(t: Tracked): Promise<void> {
    try {
      await t.stored;
    } catch (err) {
      this.untrack(t);
      // Requests queued behind it at its rank may go now.
      this.pump();
      throw this.unavailable(`the request could not be stored: ${(err as Error).message}`, 1);
    }
  }

  /** The request as it stands, from memory while unfinished, else from the store. */
  get(id: string): RequestView | undefined {
    const t = this.tracked.get(id);
    if (t !== undefined) return this.viewOf(t);
    const finishing = this.finishing.get(id);
    if (finishing !== undefined) return finishing.pending;
    const row = this.options.store.get(id);
    return row === undefined ? undefined : this.viewOfStored(row);
  }

  /** Resolves once the request finished or `timeoutMs` passed, with the request as it stands then. */
  wait(id: string, timeoutMs: number): Promise<RequestView | undefined> {
    // A request whose outcome is being committed is waited for like an unfinished one.
    const t = this.tracked.get(id) ?? this.finishing.get(id)?.t;
    if (t === undefined) return Promise.resolve(this.get(id));
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        t.waiters.splice(t.waiters.indexOf(done), 1);
        resolve(this.get(id));
      }, timeoutMs);
      const done = (view: RequestView): void => {
        clearTimeout(timer);
        resolve(view);
      };
      t.waiters.push(done);
    });
  }

  /**
   * The routing filter changed (a new plan gives pipelines other ranks): requests waiting here
   * for a rank are placed again. Requests already queued at a rank stay there.
   */
  reroute(): void {
    this.pump();
  }

  /** Requests unfinished here: held (no rank yet), queued at a rank, in flight. */
  load(): { held: number; queued: number; inflight: number } {
    let queued = 0;
    let inflight = 0;
    for (const s of this.slots.values()) {
      queued += s.queue.length;
      inflight += s.inflight.size;
    }
    return { held: this.held.length, queued, inflight };
  }

  // ---- admission ----

  private validate(req: GenerateInput, pipeline: string, mode: RequestMode): void {
    const { settings, vocab } = this.options;
    if (!this.pipelines.has(pipeline)) {
      throw new UnknownPipelineError(`unknown pipeline ${JSON.stringify(pipeline)}; this node serves ${[...this.pipelines].join(', ')}`);
    }
    if (!MODES.includes(mode)) throw new IngressInputError(`mode must be sync or async, got ${JSON.stringify(mode)}`);
    if (!Array.isArray(req.input) || req.input.length === 0) throw new IngressInputError('input must be a non-empty array of tokens');
    if (req.input.length > settings.ingressInputTokensMax) {
      throw new IngressTooLargeError(`input has ${req.input.length} tokens, the limit is ${settings.ingressInputTokensMax}`);
    }
    // A forward must fit one direct request (a token is at most 5 digits and a comma).
    if (req.input.length * 6 + 512 > settings.requestBytesMax) {
      throw new IngressTooLargeError(`input of ${req.input.length} tokens would not fit a forward of requestBytesMax (${settings.requestBytesMax} bytes)`);
    }
    for (let i = 0; i < req.input.length; i++) {
      const t = req.input[i]!;
      if (!Number.isInteger(t) || t < 0 || t >= vocab) throw new IngressInputError(`input[${i}]: token ${String(t)} is not in 0..${vocab - 1}`);
    }
    const key = req.idempotencyKey;
    if (key !== undefined && !/^[A-Za-z0-9_.:-]{1,128}$/.test(key)) {
      throw new IngressInputError('idempotencyKey must be 1-128 letters, digits, _ . : or -');
    }
  }

  private unavailable(message: string, retryAfterS: number | null): IngressUnavailableError {
    this.counters.refusedUnavailable++;
    return new IngressUnavailableError(message, retryAfterS);
  }

  private track(row: Pick<StoredRequest, 'id' | 'idempotencyKey' | 'pipeline' | 'input' | 'mode' | 'acceptedAtMs' | 'attempts'>, slot: Slot | null, stored: Promise<void>): Tracked {
    const t: Tracked = {
      stored,
      committed: false,
      id: row.id,
      pipeline: row.pipeline,
      mode: row.mode,
      idempotencyKey: row.idempotencyKey,
      acceptedAtMs: row.acceptedAtMs,
      json: forwardRequestJson({ id: row.id, pipeline: row.pipeline, input: row.input }),
      polling: false,
      slot: null,
      inflight: false,
      send: 0,
      attempts: row.attempts,
      retries: 0,
      rankFailures: 0,
      notBeforeMs: 0,
      avoid: null,
      deadline: undefined,
      waiters: [],
    };
    void stored.then(
      () => {
        t.committed = true;
      },
      () => {},
    );
    this.tracked.set(t.id, t);
    const leftMs = row.acceptedAtMs + this.options.settings.ingressRequestTimeoutMs - Date.now();
    t.deadline = setTimeout(() => this.expire(t), Math.max(0, leftMs));
    if (slot === null) this.held.push(t);
    else this.enqueue(slot, t);
    return t;
  }

  // ---- routing ----

  private lifecycle(): LifecycleState {
    return this.options.driver.core.lifecycleState();
  }

  private servingRanks(pipeline: string): number[] {
    const view = this.options.driver.core.view();
    if (view === null || view.closed) return [];
    const active: number[] = [];
    view.ranks.forEach((h, r) => {
      if (h !== null) active.push(r);
    });
    return servingRanks(active, pipeline, this.options.ranksFor);
  }

  /** The slot of the current view's holder of `rank` (created on first use). */
  private slotOf(rank: number): Slot {
    const holder = this.options.driver.core.view()!.ranks[rank]!;
    const key = slotKey(rank, holder);
    let slot = this.slots.get(key);
    if (slot === undefined) {
      slot = { key, rank, holder, queue: [], inflight: new Set(), exchanges: 0 };
      this.slots.set(key, slot);
    }
    return slot;
  }

  private hasRoom(rank: number): boolean {
    const holder = this.options.driver.core.view()?.ranks[rank];
    if (holder === null || holder === undefined) return false;
    const slot = this.slots.get(slotKey(rank, holder));
    return slot === undefined || slot.queue.length + slot.inflight.size < this.options.settings.ingressRankQueueCapacity;
  }

  /**
   * Moves work along: held requests to ranks with room, queued requests onto the wire up to
   * each rank's concurrency. Nothing moves while the mesh is not RUNNING.
   */
  private pump(): void {
    if (this.state.code !== 'started' || this.lifecycle() !== 'RUNNING') return;
    if (this.held.length > 0) this.placeHeld();
    for (const slot of this.slots.values()) this.drain(slot);
  }

  /**
   * Sends what waits for `slot` in batches: at most FORWARD_EXCHANGES_MAX exchanges and
   * ingressRankConcurrency requests in flight per rank, each batch within the transport's
   * byte limit. At low load a batch is one request; under load the queue fills while the
   * exchanges are out, and the next batch takes it.
   */
  private drain(slot: Slot): void {
    const { ingressRankConcurrency: concurrency, requestBytesMax } = this.options.settings;
    // Requests not yet committed wait at the back of the queue (they arrived last).
    const ready = (): boolean => slot.queue.length > 0 && slot.queue[0]!.committed;
    while (ready() && slot.exchanges < FORWARD_EXCHANGES_MAX && slot.inflight.size < concurrency) {
      const batch: Tracked[] = [];
      let bytes = 32;
      while (ready() && batch.length < FORWARD_BATCH_MAX && slot.inflight.size + batch.length < concurrency) {
        const size = slot.queue[0]!.json.length + 1;
        if (batch.length > 0 && bytes + size > requestBytesMax) break;
        batch.push(slot.queue.shift()!);
        bytes += size;
      }
      this.send(slot, batch);
    }
  }

  private placeHeld(): void {
    const nowMs = Date.now();
    const waiting: Tracked[] = [];
    let earliestMs = Infinity;
    const ranksByPipeline = new Map<string, number[]>();
    for (const t of this.held) {
      if (t.notBeforeMs > nowMs) {
        waiting.push(t);
        earliestMs = Math.min(earliestMs, t.notBeforeMs);
        continue;
      }
      let ranks = ranksByPipeline.get(t.pipeline);
      if (ranks === undefined) {
        ranks = this.servingRanks(t.pipeline);
        ranksByPipeline.set(t.pipeline, ranks);
      }
      // Prefer a rank other than the one that just failed this request, if any has room.
      const avoid = t.avoid;
      const rank =
        (avoid === null ? null : this.router.pick(t.pipeline, ranks, (r) => this.hasRoom(r) && this.slotOf(r).key !== avoid)) ??
        this.router.pick(t.pipeline, ranks, (r) => this.hasRoom(r));
      if (rank === null) waiting.push(t);
      else this.enqueue(this.slotOf(rank), t);
    }
    this.held = waiting;
    if (earliestMs < Infinity) this.scheduleRetry(earliestMs - nowMs);
  }

  /**
   * pump() on the next turn of the event loop. A reply can come back without ever leaving
   * the microtask queue (this node's own rank answering from its table), and pumping at
   * once would then send, answer and pump again in one unbroken chain of microtasks that
   * starves timers, sockets and signals; one macrotask per round keeps the node responsive.
   */
  private pumpSoon(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private enqueue(slot: Slot, t: Tracked): void {
    t.slot = slot;
    t.inflight = false;
    slot.queue.push(t);
  }

  /** Forwards a batch to its rank in one exchange (a new dispatch, or asking again after "pending"). */
  private send(slot: Slot, batch: readonly Tracked[]): void {
    slot.exchanges++;
    const sends = batch.map((t) => {
      t.slot = slot;
      t.inflight = true;
      slot.inflight.add(t);
      if (!t.polling) t.attempts++;
      t.polling = false;
      return ++t.send;
    });
    const bytes = encodeForwardBatch(batch.map((t) => t.json));
    const { local, transport, settings, self } = this.options;
    const reply: Promise<RequestResult> =
      slot.holder.peerId === self && local !== undefined
        ? local(bytes).then(
            (answer) => ({ ok: true as const, bytes: answer }),
            (err: Error) => ({ ok: false as const, error: 'remote-error' as const, message: err.message }),
          )
        : transport.request(slot.holder.peerId, FORWARD_REQUEST, bytes, { timeoutMs: settings.ingressForwardTimeoutMs });
    void reply.then((result) => {
      slot.exchanges--;
      if (this.state.code !== 'started') return;
      const replies = result.ok ? decodeForwardReplies(result.bytes) : null;
      batch.forEach((t, i) => {
        let delivery: Delivery;
        if (!result.ok) delivery = { kind: 'broken', message: `${result.error}: ${result.message}` };
        else if (typeof replies === 'string') delivery = { kind: 'malformed', message: replies };
        else if (replies?.[i]?.id !== t.id) delivery = { kind: 'malformed', message: `reply ${i} is not for request ${t.id}` };
        else delivery = { kind: 'reply', reply: replies[i]! };
        this.onReply(t, slot, sends[i]!, delivery);
      });
      this.pumpSoon();
    });
  }

  private onReply(t: Tracked, slot: Slot, send: number, delivery: Delivery): void {
    // Guard: a reply to a send that was superseded — its rank left the view and the request
    // went elsewhere, or the request finished — changes nothing.
    if (this.tracked.get(t.id) !== t || t.send !== send || t.slot !== slot) {
      this.counters.lateReplies++;
      return;
    }
    slot.inflight.delete(t);
    t.inflight = false;
    switch (delivery.kind) {
      case 'broken':
        // The stream broke, timed out or never opened: dispatch again, preferring another rank.
        this.counters.brokenForwards++;
        this.options.log.debug({ id: t.id, rank: slot.rank, message: delivery.message }, 'forward broke; dispatching again');
        return this.requeue(t, slot, true);
      case 'malformed':
        return this.onRankFailed(t, slot, `malformed reply from rank ${slot.rank}: ${delivery.message}`);
      case 'reply':
        return this.onForwardReply(t, slot, delivery.reply);
    }
  }

  /** Asks the same rank again after DEADLINE_POLL_MS, if the request is still waiting on it. */
  private pollLater(slot: Slot, t: Tracked): void {
    const send = t.send;
    slot.inflight.add(t);
    t.inflight = true;
    setTimeout(() => {
      if (this.tracked.get(t.id) !== t || t.send !== send || t.slot !== slot || this.state.code !== 'started') return;
      slot.inflight.delete(t);
      t.inflight = false;
      this.poll(slot, t);
      this.pump();
    }, DEADLINE_POLL_MS);
  }

  /** Asks the same rank again with the next batch; it answers from its dedupe table. */
  private poll(slot: Slot, t: Tracked): void {
    t.polling = true;
    slot.queue.unshift(t);
  }

  private onForwardReply(t: Tracked, slot: Slot, reply: ForwardReply): void {
    switch (reply.kind) {
      case 'done':
        return this.finish(t, { status: 'done', output: reply.output, rank: reply.rank, epoch: reply.epoch });
      case 'pending':
        // The rank holds it (queued, or paused with the mesh): ask again; the rank answers from its table.
        return this.poll(slot, t);
    }
    switch (reply.code) {
      case 'bad-input':
      case 'bad-request':
        return this.finish(t, { status: 'failed', errorCode: 'bad-input', errorMessage: `rank ${slot.rank} refused the input: ${reply.message}` });
      case 'deadline':
        // Still queued on that rank: ask it again (after a pause: the rank answered at once,
        // so asking at once would only spin) rather than run it elsewhere too.
        return this.pollLater(slot, t);
      case 'no-rank':
      case 'not-ready':
      case 'busy':
        return this.requeue(t, slot, true);
      case 'failed':
        return this.onRankFailed(t, slot, reply.message);
    }
  }

  private onRankFailed(t: Tracked, slot: Slot, message: string): void {
    const lifecycle = this.lifecycle();
    if (lifecycle === 'STOPPING' || lifecycle === 'STOPPED') {
      return this.finish(t, { status: 'failed', errorCode: 'stopped', errorMessage: `the mesh stopped before the request finished (${message})` });
    }
    t.rankFailures++;
    if (t.rankFailures >= RANK_FAILURES_MAX) {
      return this.finish(t, { status: 'failed', errorCode: 'rank-failed', errorMessage: `failed on ${t.rankFailures} tries, last on rank ${slot.rank}: ${message}` });
    }
    this.requeue(t, slot, true);
  }

  /** Back to held (at the front), to be placed again after a back-off, preferring another rank. */
  private requeue(t: Tracked, from: Slot, backOff: boolean): void {
    const i = from.queue.indexOf(t);
    if (i >= 0) from.queue.splice(i, 1);
    from.inflight.delete(t);
    t.slot = null;
    t.inflight = false;
    t.send++;
    t.avoid = from.key;
    this.counters.redispatched++;
    if (backOff) {
      t.notBeforeMs = Date.now() + Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.min(t.retries, 10));
      t.retries++;
      this.scheduleRetry(t.notBeforeMs - Date.now());
    } else {
      t.notBeforeMs = 0;
    }
    this.held.unshift(t);
  }

  private scheduleRetry(delayMs: number): void {
    const atMs = Date.now() + Math.max(0, delayMs);
    if (atMs >= this.retryAtMs) return;
    clearTimeout(this.retryTimer);
    this.retryAtMs = atMs;
    this.retryTimer = setTimeout(() => {
      this.retryAtMs = Infinity;
      this.pump();
    }, Math.max(0, delayMs));
  }

  // ---- following the mesh ----

  /** A new view: requests of ranks that left it go to other ranks at once. */
  private followView(): void {
    if (this.state.code !== 'started') return;
    const view = this.options.driver.core.view();
    if (view?.closed === true) {
      this.failAll('the mesh stopped (its view closed) before the request finished', true);
      return;
    }
    for (const [key, slot] of this.slots) {
      if (view !== null && sameIncarnation(view.ranks[slot.rank], slot.holder)) continue;
      this.slots.delete(key);
      const moved = [...slot.inflight, ...slot.queue];
      if (moved.length > 0) this.options.log.info({ rank: slot.rank, peer: slot.holder.peerId, requests: moved.length, epoch: view?.epoch }, 'rank left the view; dispatching its requests again');
      // Oldest first at the front of held: unshift in reverse.
      for (const t of moved.reverse()) this.requeue(t, slot, false);
    }
    this.pump();
  }

  private followLifecycle(): void {
    if (this.state.code !== 'started') return;
    const state = this.lifecycle();
    if (state === 'STOPPING') this.failAll('the mesh is stopping (STOP) and the request had not started', false);
    else if (state === 'STOPPED') this.failAll('the mesh stopped before the request finished', true);
    else this.pump();
  }

  /** Fails the waiting requests (held or queued here); with `inflight`, those on the wire too. */
  private failAll(message: string, inflight: boolean): void {
    for (const t of [...this.tracked.values()]) {
      if (!inflight && t.inflight) continue;
      this.finish(t, { status: 'failed', errorCode: 'stopped', errorMessage: message });
    }
  }

  private expire(t: Tracked): void {
    if (this.tracked.get(t.id) !== t) return;
    const seconds = Math.round(this.options.settings.ingressRequestTimeoutMs / 1000);
    this.finish(t, { status: 'failed', errorCode: 'deadline', errorMessage: `not finished within ${seconds} s of being accepted` });
  }

  private finish(t: Tracked, outcome: Outcome): void {
    if (this.tracked.get(t.id) !== t) return;
    const nowMs = Date.now();
    const view = this.viewOfFinished(t, outcome, nowMs);
    // Until the outcome is committed, GET shows the request as it stood (queued or running) and
    // waiters wait on: a client told "done" by a node killed before the commit would see the
    // request run again, on another rank, after the restart.
    const entry = { pending: this.viewOf(t), t };
    this.finishing.set(t.id, entry);
    const answer = (): void => {
      if (this.finishing.get(t.id) === entry) this.finishing.delete(t.id);
      for (const w of t.waiters) w(view);
      t.waiters.length = 0;
    };
    this.options.store.finish(t.id, outcome, t.attempts, nowMs).then(answer, (err: Error) => {
      this.options.log.error({ err, id: t.id }, 'storing a request\'s outcome failed; it will be dispatched again after a restart');
      answer();
    });
    this.untrack(t);
    if (outcome.status === 'done') this.counters.done++;
    else this.counters.failed++;
  }

  /** Forgets `t` here: no longer tracked, queued, in flight or timed. */
  private untrack(t: Tracked): void {
    if (this.tracked.get(t.id) !== t) return;
    this.tracked.delete(t.id);
    clearTimeout(t.deadline);
    t.send++;
    const slot = t.slot;
    if (slot !== null) {
      slot.inflight.delete(t);
      const i = slot.queue.indexOf(t);
      if (i >= 0) slot.queue.splice(i, 1);
    } else {
      const i = this.held.indexOf(t);
      if (i >= 0) this.held.splice(i, 1);
    }
    t.slot = null;
    t.inflight = false;
  }

  // ---- views ----

  private viewOf(t: Tracked): RequestView {
    if (t.inflight && t.slot !== null) return { id: t.id, status: 'running', rank: t.slot.rank, ...metaOf(t) };
    return { id: t.id, status: 'queued', ...metaOf(t) };
  }

  private viewOfStored(row: StoredRequest): RequestView {
    const meta = { ...metaOf(row), ...(row.finishedAtMs === null ? {} : { finishedAtMs: row.finishedAtMs }) };
    if (row.status === 'done') return { id: row.id, status: 'done', output: row.output ?? [], rank: row.rank ?? -1, epoch: row.epoch ?? 0, ...meta };
    if (row.status === 'failed') return { id: row.id, status: 'failed', error: { code: row.errorCode ?? 'failed', message: row.errorMessage ?? '' }, ...meta };
    // Stored as queued but not tracked: a run that stopped before finishing it; the next start dispatches it.
    return { id: row.id, status: 'queued', ...meta };
  }

  /** A request that just finished, as the store will hold it (without reading it back). */
  private viewOfFinished(t: Tracked, outcome: Outcome, finishedAtMs: number): RequestView {
    const meta = { ...metaOf(t), finishedAtMs };
    if (outcome.status === 'done') return { id: t.id, status: 'done', output: outcome.output, rank: outcome.rank, epoch: outcome.epoch, ...meta };
    return { id: t.id, status: 'failed', error: { code: outcome.errorCode, message: outcome.errorMessage }, ...meta };
  }
}

/** The fields every view of a request shows after its outcome. */
function metaOf(r: { pipeline: string; mode: RequestMode; idempotencyKey: string | null; attempts: number; acceptedAtMs: number }) {
  return { pipeline: r.pipeline, mode: r.mode, idempotencyKey: r.idempotencyKey, attempts: r.attempts, acceptedAtMs: r.acceptedAtMs };
}

interface Tracked {
  readonly id: string;
  /** The insert's commit; the request is forwarded only after it. */
  readonly stored: Promise<void>;
  committed: boolean;
  readonly pipeline: string;
  readonly mode: RequestMode;
  readonly idempotencyKey: string | null;
  readonly acceptedAtMs: number;
  /** The request as the forward batch carries it, encoded once. */
  readonly json: string;
  /** Queued to ask its rank again for a pending result (not a new dispatch). */
  polling: boolean;
  /** The rank it is queued at or in flight to; null while held. */
  slot: Slot | null;
  inflight: boolean;
  /** Numbers every send; a reply is taken only when it answers the latest. */
  send: number;
  attempts: number;
  /** Re-dispatches after refusals or broken streams, for the back-off. */
  retries: number;
  rankFailures: number;
  /** Held requests are not placed before this time (back-off). */
  notBeforeMs: number;
  /** The slot that last failed it: another rank is preferred when one has room. */
  avoid: string | null;
  deadline: ReturnType<typeof setTimeout> | undefined;
  waiters: ((view: RequestView) => void)[];
}

interface Slot {
  readonly key: string;
  readonly rank: number;
  readonly holder: Incarnation;
  /** Waiting to be sent, oldest first. Invariant: queue.length + inflight.size <= ingressRankQueueCapacity for new admissions. */
  readonly queue: Tracked[];
  readonly inflight: Set<Tracked>;
  /** Forward exchanges (batches) unanswered. */
  exchanges: number;
}

/** What one request of a batch got back. */
type Delivery = { kind: 'reply'; reply: ForwardReply } | { kind: 'broken'; message: string } | { kind: 'malformed'; message: string };

function slotKey(rank: number, holder: Incarnation): string {
  return `${rank}/${holder.peerId}/${holder.bootId}`;
}

function sameTokens(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((t, i) => t === b[i]);
}

