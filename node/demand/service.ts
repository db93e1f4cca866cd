// The node's demand service: the durable registry of demand records (SQLite + gossip on the
// `demand` channel), the plan rounds this node takes part in as a rank, and the plan it
// holds (PlanState). A record opened here is stored and gossiped before the call returns,
// so it is known before any dispatch; a node that restarts loads its records from SQLite,
// and one that joins pulls them from the first peer whose summary differs from its own.
//
// Plan rounds (mesh/demand.ts PlanRounds): after each committed view, and whenever the
// records say the plan is far from the demand, ranks arrive at barrier `plan` with their
// payload; on completion every rank runs the planner on the same payloads. Nodes without a
// rank learn the plan from the lowest rank's summary and pull it.
//
// "Request ranks" (waitForRanks) waits for more than an assignment: at least one rank the
// plan gives the pipeline must report that it serves it (awake.ts), i.e. it drained its old
// pipeline, loaded the new model and runs on its group's communicator.
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { z } from 'zod';
import {
  type AgreedPlan,
  DemandBook,
  DemandError,
  type DemandRecord,
  PLAN_BARRIER,
  PlanRounds,
  comparePlans,
  decodeDemandMessage,
  encodeDemandMessage,
  encodePlanPayload,
  parseRecord,
} from '../../mesh/demand.ts';
import { BarrierError, type BarrierResult } from '../../mesh/rawnode.ts';
import type { MeshDriver } from '../mesh/driver.ts';
import type { Transport } from '../p2p/transport.ts';
import type { Db } from '../storage/database.ts';
import { jitteredMs } from '../timers.ts';
import { AwakeBoard } from './awake.ts';
import { PlanState } from './plan-state.ts';
import { DemandStore } from './store.ts';

/** Gossip channel of the demand service (records and summaries). */
export const DEMAND_CHANNEL = 'demand';
/**
 * Direct-request name of a pull (every record and the plan). Not the channel's name: the
 * peer guard checks direct requests on a gossip channel's name as that channel's messages.
 */
export const DEMAND_PULL = 'demand-pull';

export type DemandTransport = Pick<Transport, 'publish' | 'subscribe' | 'handle' | 'request'>;
export type DemandDriver = Pick<MeshDriver, 'core' | 'arrive' | 'on' | 'off'>;

export interface DemandServiceOptions {
  meshId: string;
  /** This node's PeerId; its tail tags the progress this node counts. */
  peerId: string;
  db: Db;
  transport: DemandTransport;
  driver: DemandDriver;
  log: Logger;
  /**
   * How often the service checks, besides the events that prompt a check at once (a new view,
   * a changed record, a peer's arrival at a plan round, a round's end), whether to arrive at a
   * plan round or gossip its summary.
   */
  pollMs: number;
  /** Least time between two plan rounds started for a rebalance. */
  roundIntervalMs: number;
  /** Wait after taking a view before its first plan round, unless one is urgent or a peer started it (PlanRounds). */
  settleMs: number;
  /** Interval between summaries (book digest and plan round) gossiped for anti-entropy. */
  syncIntervalMs: number;
  /** Budget of one pull from a peer. */
  requestTimeoutMs: number;
}

/** The ranks a pipeline holds in the plan, and those of them that serve it now. */
export interface PipelineRanks {
  readonly ranks: readonly number[];
  readonly awake: readonly number[];
}

/** No rank was assigned to the pipeline, or none woke up for it, in time; the record stays open. */
export class DemandTimeoutError extends Error {
  override name = 'DemandTimeoutError';
}

export interface OpenDemand {
  readonly pipeline: string;
  readonly steps: number;
  readonly priority?: number;
  /** A caller-chosen id makes the open idempotent; by default the node draws one. */
  readonly id?: string;
}

export interface DemandCounters {
  gossipIn: number;
  gossipOut: number;
  rejected: Record<string, number>;
  pulls: number;
  /** Plan rounds this node arrived at, and completed. */
  arrivals: number;
  rounds: number;
}

type ServiceStatus = { code: 'stopped' } | { code: 'started'; timer: ReturnType<typeof setInterval>; unsubscribe: () => void };

export class DemandService {
  readonly plans: PlanState;
  /** Which ranks report serving which pipeline (this node's rank reports through it too). */
  readonly awake: AwakeBoard;
  readonly counters: DemandCounters = { gossipIn: 0, gossipOut: 0, rejected: {}, pulls: 0, arrivals: 0, rounds: 0 };
  private readonly book = new DemandBook();
  private readonly rounds: PlanRounds;
  private readonly store: DemandStore;
  private readonly tag: string;
  private state: ServiceStatus = { code: 'stopped' };
  /** Wakes the service when a new view's first plan round comes due by its settle wait (PlanRounds.settlesAt). */
  private settleTimer: { at: number; timer: ReturnType<typeof setTimeout> } | null = null;
  private handlerRegistered = false;
  /** When the next repeated summary is due (also sent at once when the records change). */
  private nextSummaryMs = -Infinity;
  private readonly lastPullMs = new Map<string, number>();
  private pulling = false;
  private barrierErrorEpoch = '';
  private readonly waiters = new Set<() => void>();

  constructor(private readonly options: DemandServiceOptions) {
    this.store = new DemandStore(options.db, options.meshId);
    this.rounds = new PlanRounds(options.roundIntervalMs, options.settleMs);
    this.tag = options.peerId.slice(-12);
    this.plans = new PlanState((rank) => {
      const view = options.driver.core.view();
      return view !== null && !view.closed && view.ranks[rank] != null;
    });
    this.awake = new AwakeBoard({ meshId: options.meshId, peerId: options.peerId, transport: options.transport, intervalMs: options.syncIntervalMs, log: options.log });
  }

  /** Loads the stored records, joins the demand channel and starts taking part in plan rounds. */
  async start(): Promise<void> {
    if (this.state.code === 'started') return;
    const { records, malformed } = this.store.load();
    if (malformed > 0) this.options.log.warn({ malformed }, 'skipped stored demand records that no longer parse');
    for (const r of records) this.mergeQuietly(r);
    const { transport, driver } = this.options;
    if (!this.handlerRegistered) {
      await transport.handle(DEMAND_PULL, () => this.answerPull());
      this.handlerRegistered = true;
    }
    const unsubscribe = transport.subscribe(DEMAND_CHANNEL, (from, bytes) => this.onGossip(from, bytes));
    driver.on('barrier', this.onBarrier);
    driver.on('barrierAborted', this.poke);
    driver.on('peerArrived', this.onPeerArrived);
    driver.on('view', this.poke);
    this.awake.start();
    const timer = setInterval(() => this.poll(), this.options.pollMs);
    this.state = { code: 'started', timer, unsubscribe };
    this.poll();
  }

  /** Stops rounds, gossip and waiting callers (they get DemandTimeoutError). Idempotent. */
  stop(): void {
    if (this.state.code !== 'started') return;
    clearInterval(this.state.timer);
    if (this.settleTimer) clearTimeout(this.settleTimer.timer);
    this.settleTimer = null;
    this.state.unsubscribe();
    this.options.driver.off('barrier', this.onBarrier);
    this.options.driver.off('barrierAborted', this.poke);
    this.options.driver.off('peerArrived', this.onPeerArrived);
    this.options.driver.off('view', this.poke);
    this.awake.stop();
    this.state = { code: 'stopped' };
    for (const cancel of [...this.waiters]) cancel();
  }

  /** Every record this node knows, open first. */
  records(): DemandRecord[] {
    return this.book.list();
  }

  /** Digest of this node's records (equal digests: equal registries). */
  digest(): string {
    return this.book.digest();
  }

  /**
   * Opens a demand record: stored and gossiped before this returns. Opening an existing id
   * changes nothing. Throws DemandError on bad input (nothing stored).
   */
  open(input: OpenDemand): { record: DemandRecord; created: boolean } {
    const id = input.id ?? `d${randomBytes(9).toString('base64url')}`;
    const held = this.book.get(id);
    if (held !== undefined && held.pipeline !== input.pipeline) throw new DemandError('invalid', `record ${id} belongs to pipeline ${held.pipeline}`);
    const result = this.book.open({ id, pipeline: input.pipeline, steps: input.steps, priority: input.priority ?? 0 });
    if (result.created) this.changed(result.record);
    return result;
  }

  /** Counts `completed` more steps of record `id` of `pipeline`; a closed record ignores it. */
  progress(pipeline: string, id: string, completed: number): { record: DemandRecord; changed: boolean } {
    this.ownRecord(pipeline, id);
    const result = this.book.report(id, this.tag, completed);
    if (result.changed) this.changed(result.record);
    return result;
  }

  /** Closes record `id` of `pipeline`; closing a closed record changes nothing. */
  close(pipeline: string, id: string): { record: DemandRecord; changed: boolean } {
    this.ownRecord(pipeline, id);
    const result = this.book.close(id);
    if (result.changed) this.changed(result.record);
    return result;
  }

  /** The ranks the current plan gives `pipeline` and those of them awake for it (null: no dividing plan). */
  ranksOf(pipeline: string): PipelineRanks | null {
    const ranks = this.plans.ranksFor(pipeline);
    if (ranks === null) return null;
    const view = this.options.driver.core.view();
    const holderOf = (rank: number): string | null => view?.ranks[rank]?.peerId ?? null;
    return { ranks, awake: this.awake.awake(pipeline, ranks, this.plans.round, holderOf) };
  }

  /**
   * Resolves once a completed plan round assigns `pipeline` at least one rank and one of
   * them reports serving it; rejects with DemandTimeoutError, saying why, after `timeoutMs`.
   */
  waitForRanks(pipeline: string, timeoutMs: number): Promise<PipelineRanks> {
    const ready = (): PipelineRanks | null => {
      const held = this.ranksOf(pipeline);
      return held !== null && held.awake.length > 0 ? held : null;
    };
    const now = ready();
    if (now !== null) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        this.plans.off('change', onChange);
        this.awake.off('change', onChange);
        this.waiters.delete(cancel);
      };
      const onChange = (): void => {
        const held = ready();
        if (held === null) return;
        cleanup();
        resolve(held);
      };
      const cancel = (): void => {
        cleanup();
        reject(new DemandTimeoutError('the node is stopping'));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new DemandTimeoutError(this.whyNoRank(pipeline, timeoutMs)));
      }, timeoutMs);
      this.plans.on('change', onChange);
      this.awake.on('change', onChange);
      this.waiters.add(cancel);
    });
  }

  // ---- plan rounds ----

  private readonly poke = (): void => {
    queueMicrotask(() => this.poll());
  };

  /** A peer started (or went on with) a plan round: this rank arrives too without waiting for the next poll. */
  private readonly onPeerArrived = (name: string): void => {
    if (name === PLAN_BARRIER) this.poke();
  };

  private poll(): void {
    if (this.state.code !== 'started') return;
    try {
      this.pollOnce(Date.now());
    } catch (err) {
      // A bug here must not take the node down with it (this runs on a timer): log and go on.
      this.options.log.error({ err }, 'demand poll failed');
    }
  }

  private pollOnce(nowMs: number): void {
    const core = this.options.driver.core;
    const view = core.view();
    if (view !== null && !view.closed) {
      const rank = core.rank();
      this.rounds.setView(view.generation, view.epoch, rank, nowMs);
      if (rank >= 0) this.maybeArrive(nowMs, view.generation, view.epoch, view.ranks.flatMap((h, r) => (h ? [r] : [])));
      this.wakeAtSettle(nowMs);
    }
    if (nowMs >= this.nextSummaryMs) this.gossipSummary(nowMs);
  }

  /** The poll may come later than a new view's settle wait ends: a timer checks then. */
  private wakeAtSettle(nowMs: number): void {
    const at = this.rounds.settlesAt();
    if (at === null || at <= nowMs || this.settleTimer?.at === at) return;
    if (this.settleTimer) clearTimeout(this.settleTimer.timer);
    const timer = setTimeout(() => {
      this.settleTimer = null;
      this.poll();
    }, at - nowMs);
    this.settleTimer = { at, timer };
  }

  private maybeArrive(nowMs: number, generation: number, epoch: number, ranks: number[]): void {
    const core = this.options.driver.core;
    const barriers = core.barriers();
    const started = (seq: number): boolean => barriers.some((b) => b.name === PLAN_BARRIER && b.seq === seq && !b.mine);
    const demand = this.book.pipelineDemand();
    const seq = this.rounds.next(nowMs, ranks, demand, started);
    if (seq === null) return;
    const payload = encodePlanPayload(this.rounds.serving(), this.book.pipelineViews(), this.book.digest());
    try {
      this.options.driver.arrive(PLAN_BARRIER, payload, seq);
      this.rounds.arrived(seq);
      this.counters.arrivals++;
    } catch (err) {
      if (!(err instanceof BarrierError)) throw err;
      // Logged once per epoch: the next poll retries, and a view change starts afresh.
      const key = `${generation}:${epoch}`;
      if (this.barrierErrorEpoch !== key) this.options.log.warn({ err: err.message, generation, epoch, seq }, 'could not arrive at a plan round');
      this.barrierErrorEpoch = key;
    }
  }

  private readonly onBarrier = (result: BarrierResult): void => {
    if (result.name !== PLAN_BARRIER) return;
    try {
      this.planRoundDone(result);
      // The next round may be due at once (a pipeline still without a rank).
      this.poke();
    } catch (err) {
      // Runs inside the driver's hand-out loop, which must not be broken by a listener.
      this.options.log.error({ err, seq: result.seq }, 'plan round result not applied');
    }
  };

  private planRoundDone(result: BarrierResult): void {
    const agreed = this.rounds.completed(Date.now(), result);
    if (agreed === null) return;
    this.counters.rounds++;
    const previous = this.plans.current();
    if (!this.plans.update(stripResult(agreed))) return;
    if (previous === null || JSON.stringify(previous.assignment) !== JSON.stringify(agreed.assignment)) {
      this.options.log.info(
        { generation: agreed.generation, epoch: agreed.epoch, seq: agreed.seq, assignment: Object.fromEntries(agreed.assignment), shrinks: agreed.result.shrinks.length, expands: agreed.result.expands.length },
        'plan round changed the assignment',
      );
    }
    // The lowest rank tells nodes without a rank at once, so they pull the new plan.
    if (result.ranks[0] === this.options.driver.core.rank()) this.gossipSummary(Date.now());
  }

  // ---- records: storage and gossip ----

  private changed(record: DemandRecord): void {
    this.store.save(record, Date.now());
    this.publish(encodeDemandMessage({ type: 'record', meshId: this.options.meshId, record }));
    this.poke();
  }

  private mergeQuietly(record: DemandRecord): DemandRecord | null {
    try {
      return this.book.merge(record);
    } catch (err) {
      if (!(err instanceof DemandError)) throw err;
      this.reject(err.code);
      return null;
    }
  }

  private ownRecord(pipeline: string, id: string): void {
    const held = this.book.get(id);
    if (held === undefined || held.pipeline !== pipeline) throw new DemandError('unknown-record', `no demand record ${id} for pipeline ${pipeline}`);
  }

  private onGossip(from: string, bytes: Uint8Array): void {
    if (this.state.code !== 'started') return;
    this.counters.gossipIn++;
    const decoded = decodeDemandMessage(bytes);
    if (!decoded.ok) return this.reject('malformed');
    const msg = decoded.msg;
    if (msg.meshId !== this.options.meshId) return this.reject('another mesh');
    if (msg.type === 'record') {
      const merged = this.mergeQuietly(msg.record);
      if (merged !== null) {
        this.store.save(merged, Date.now());
        this.poke();
      }
      return;
    }
    const held = this.plans.current();
    const newerPlan = msg.plan !== null && (held === null || comparePlans(msg.plan, held) > 0) && this.options.driver.core.rank() < 0;
    if (msg.digest !== this.book.digest() || newerPlan) void this.pull(from);
  }

  private gossipSummary(nowMs: number): void {
    this.nextSummaryMs = nowMs + jitteredMs(this.options.syncIntervalMs);
    const p = this.plans.current();
    const plan = p === null ? null : { generation: p.generation, epoch: p.epoch, seq: p.seq };
    this.publish(encodeDemandMessage({ type: 'summary', meshId: this.options.meshId, digest: this.book.digest(), records: this.book.size, plan }));
  }

  private publish(bytes: Uint8Array): void {
    this.counters.gossipOut++;
    this.options.transport.publish(DEMAND_CHANNEL, bytes).catch((err: Error) => {
      // No subscribed peer yet (a lone node) is normal.
      this.options.log.debug({ err: err.message }, 'demand gossip not sent');
    });
  }

  /** Pulls every record (and the plan) from `peer`: at most one pull at a time, one per peer per sync interval. */
  private async pull(peer: string): Promise<void> {
    const nowMs = Date.now();
    if (this.pulling || nowMs - (this.lastPullMs.get(peer) ?? -Infinity) < this.options.syncIntervalMs) return;
    this.pulling = true;
    this.lastPullMs.set(peer, nowMs);
    this.counters.pulls++;
    try {
      const result = await this.options.transport.request(peer, DEMAND_PULL, new TextEncoder().encode('{"t":"pull"}'), { timeoutMs: this.options.requestTimeoutMs });
      if (this.state.code !== 'started') return;
      if (!result.ok) {
        this.options.log.debug({ peer, error: result.error }, 'demand pull failed');
        return;
      }
      const parsed = pullSchema.safeParse(safeJson(new TextDecoder().decode(result.bytes)));
      if (!parsed.success) return this.reject('malformed pull');
      let changed = 0;
      for (const raw of parsed.data.records) {
        const record = parseRecord(raw);
        const merged = record === null ? null : this.mergeQuietly(record);
        if (merged !== null) {
          this.store.save(merged, Date.now());
          changed++;
        }
      }
      const plan = parsed.data.plan;
      if (plan !== null && this.options.driver.core.rank() < 0 && this.rounds.adopt(plan)) this.plans.update(plan);
      if (changed > 0) this.poke();
    } finally {
      this.pulling = false;
    }
  }

  private answerPull(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify({ records: this.book.list(), plan: this.plans.current() }));
  }

  private whyNoRank(pipeline: string, timeoutMs: number): string {
    const core = this.options.driver.core;
    const view = core.view();
    if (view === null) return `no view within ${timeoutMs} ms: the mesh has not formed, so no plan round can run`;
    if (view.closed) return 'the mesh is closed: no plan round will run';
    const p = this.plans.current();
    const ranks = view.ranks.filter((h) => h !== null).length;
    if (p === null) return `no plan round completed within ${timeoutMs} ms (${ranks} active ranks; a round needs every one of them to arrive)`;
    const round = `${p.generation}:${p.epoch}:${p.seq}`;
    const d = p.demand.find((x) => x.pipeline === pipeline);
    const assigned = this.plans.ranksFor(pipeline) ?? [];
    if (assigned.length > 0) return `the last plan round (${round}) gives ${pipeline} ranks ${assigned.join(', ')}, but none reported serving it within ${timeoutMs} ms (a switching rank drains its old pipeline, loads the new model and connects its group first)`;
    if (d === undefined) return `the last plan round (${round}) did not yet carry demand for ${pipeline}: its record had not reached the ranks within ${timeoutMs} ms`;
    const ahead = p.demand.filter((x) => x.remaining > 0).length;
    return `the last plan round (${round}) gave ${pipeline} no rank: ${p.assignment.length} ranks for ${ahead} pipelines with demand, and others come first by priority and remaining work`;
  }

  private reject(reason: string): void {
    this.counters.rejected[reason] = (this.counters.rejected[reason] ?? 0) + 1;
  }
}

const pullSchema = z.object({
  records: z.array(z.unknown()).max(4096),
  plan: z
    .object({
      generation: z.int().min(0),
      epoch: z.int().min(0),
      seq: z.int().min(1),
      assignment: z.array(z.tuple([z.int().min(0), z.string().max(64).nullable()])).max(1024),
      demand: z.array(z.object({ pipeline: z.string().max(64), remaining: z.int().min(0), priority: z.int().min(0) })).max(256),
    })
    .nullable(),
});

function stripResult(p: AgreedPlan): AgreedPlan {
  return { generation: p.generation, epoch: p.epoch, seq: p.seq, assignment: p.assignment, demand: p.demand };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
