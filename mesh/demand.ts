/**
 * Demand records and plan rounds, pure and deterministic.
 *
 * A demand record (pipeline, step target, priority) is opened when demand is signalled,
 * before any dispatch, and stays until it is closed (released, or its progress reached the
 * target) — never a per-round snapshot. Records spread by gossip and are stored, so a node
 * that restarts or joins learns them. Merging is a join: the immutable fields are set once
 * (a conflicting copy resolves to the smaller one), progress is a grow-only counter per
 * reporting node (each node raises only its own entry, so no report is lost to a concurrent
 * one), and `closed` only goes from false to true. Merges therefore give the same record in
 * any order, any number of times; closing twice or reporting progress on a closed record
 * changes nothing.
 *
 * A plan round is a barrier named 'plan' whose payload is one rank's view: what it serves
 * now and, per pipeline, the remaining work, priority and a knowledge version it holds (the
 * version grows with every record, progress step and close the rank has merged for that
 * pipeline). The payload is a per-pipeline summary, so its size depends on neither the
 * number of ranks nor of records; it carries up to PLAN_PAYLOAD_PIPELINES_MAX pipelines —
 * those with work in serving order, then those whose work just ended, most recent first —
 * and drops the rest (counted) when they would not fit BARRIER_PAYLOAD_BYTES_MAX. Every node
 * that completes the round combines the payloads the same way — per pipeline the report
 * with the highest version (then the larger remaining work), so the rank that has heard the
 * most about a pipeline decides it: a new record known to any rank counts, a close or
 * progress known to any rank is not undone by a rank that has not heard of it yet, and one
 * record seen by many ranks counts once — and runs the planner on them: the same plan
 * everywhere.
 */
import { z } from 'zod';
import { BARRIER_PAYLOAD_BYTES_MAX, type BarrierResult } from './barrier.ts';
import { PLAN_NUMBER_MAX, PLAN_PIPELINES_MAX, type PipelineDemand, type PlanResult, REBALANCE_POINTS, plan, rebalanceWanted, servingOrder } from './planner.ts';

/** The barrier name of plan rounds. */
export const PLAN_BARRIER = 'plan';
/** Records one node holds; beyond it the oldest closed ones are forgotten first. */
export const RECORDS_MAX = 1024;
/** Reporting nodes one record counts progress from (the smallest tags are kept). */
export const REPORTERS_MAX = 16;
/** Pipelines one plan payload carries at most. */
export const PLAN_PAYLOAD_PIPELINES_MAX = 16;
/** Gossip messages stay below this (noise on Bun drops messages of 1,200 bytes and more). */
export const DEMAND_MESSAGE_BYTES_MAX = 1000;
export const DEMAND_WIRE_VERSION = 1;
/**
 * A rank starts a rebalance round when some pipeline's share of ranks is this many points
 * from its share of remaining work and the planner would move a rank: a quarter of rlix's
 * 10-point threshold, so that the work done while a round runs (the plan lands on demand a
 * round old) still leaves the gap within 10. A gap only rounding causes starts nothing.
 */
export const REBALANCE_TRIGGER_POINTS = REBALANCE_POINTS / 4;

const ID_PATTERN = /^[A-Za-z0-9._-]{1,40}$/;
const PIPELINE_PATTERN = /^[A-Za-z0-9._:-]{1,64}$/;
const TAG_PATTERN = /^[A-Za-z0-9._-]{1,16}$/;
export const PRIORITY_MAX = 1000;

/** Bad input to a demand operation: nothing changed. */
export class DemandError extends Error {
  override name = 'DemandError';
  constructor(
    readonly code: 'invalid' | 'unknown-record' | 'full',
    message: string,
  ) {
    super(message);
  }
}

export interface DemandRecord {
  readonly id: string;
  readonly pipeline: string;
  /** Step target T. */
  readonly steps: number;
  readonly priority: number;
  /** Steps done, per reporting node's tag (a grow-only counter). */
  readonly done: Readonly<Record<string, number>>;
  readonly closed: boolean;
}

export interface OpenInput {
  readonly id: string;
  readonly pipeline: string;
  readonly steps: number;
  readonly priority?: number;
}

/** Steps done in all: the sum over reporters, capped at the target. */
export function doneSteps(r: DemandRecord): number {
  let sum = 0;
  for (const n of Object.values(r.done)) sum += n;
  return Math.min(sum, r.steps);
}

/** rlix's rem: max(T − min(done, T), 0), and 0 once closed. */
export function remainingSteps(r: DemandRecord): number {
  return r.closed ? 0 : r.steps - doneSteps(r);
}

/** Why a record is malformed, or null. */
export function recordProblem(r: DemandRecord): string | null {
  if (!ID_PATTERN.test(r.id)) return `record id must be 1..40 of A-Z a-z 0-9 . _ -, got ${JSON.stringify(r.id)}`;
  if (!PIPELINE_PATTERN.test(r.pipeline)) return `pipeline name must be 1..64 of A-Z a-z 0-9 . _ : -, got ${JSON.stringify(r.pipeline)}`;
  if (!Number.isInteger(r.steps) || r.steps < 1 || r.steps > PLAN_NUMBER_MAX) return `steps must be an integer in 1..${PLAN_NUMBER_MAX}, got ${r.steps}`;
  if (!Number.isInteger(r.priority) || r.priority < 0 || r.priority > PRIORITY_MAX) return `priority must be an integer in 0..${PRIORITY_MAX}, got ${r.priority}`;
  const tags = Object.keys(r.done);
  if (tags.length > REPORTERS_MAX) return `at most ${REPORTERS_MAX} reporters per record`;
  for (const t of tags) {
    const n = r.done[t];
    if (!TAG_PATTERN.test(t)) return `reporter tag must be 1..16 of A-Z a-z 0-9 . _ -, got ${JSON.stringify(t)}`;
    if (n === undefined || !Number.isInteger(n) || n < 0 || n > PLAN_NUMBER_MAX) return `progress of ${t} must be an integer in 0..${PLAN_NUMBER_MAX}`;
  }
  return null;
}

/**
 * The join of two copies of one record: commutative, associative and idempotent. Throws
 * DemandError when the ids differ.
 */
export function mergeRecords(a: DemandRecord, b: DemandRecord): DemandRecord {
  if (a.id !== b.id) throw new DemandError('invalid', `cannot merge records ${a.id} and ${b.id}`);
  // Immutable fields were set once by the opener; a conflicting copy (a reused id) resolves
  // to the smaller one everywhere, so every node still holds the same record.
  const base = compareFixed(a, b) <= 0 ? a : b;
  const merged: Record<string, number> = {};
  for (const src of [a.done, b.done]) for (const [t, n] of Object.entries(src)) merged[t] = Math.max(merged[t] ?? 0, n);
  const done = keepReporters(merged);
  const record = { id: base.id, pipeline: base.pipeline, steps: base.steps, priority: base.priority, done, closed: a.closed || b.closed };
  return normalise(record);
}

/** One rank's view of a pipeline in a plan round. */
export interface PipelineView extends PipelineDemand {
  /** Grows with every record, progress step and close merged for the pipeline (0: unknown). */
  readonly version?: number;
}

/** Every record this node knows, merged; the in-memory model of the durable registry. */
export class DemandBook {
  private readonly records = new Map<string, DemandRecord>();
  /** When each pipeline's records last changed, as a count of changes (recent first in payloads). */
  private readonly touched = new Map<string, number>();
  private changes = 0;

  get size(): number {
    return this.records.size;
  }

  get(id: string): DemandRecord | undefined {
    return this.records.get(id);
  }

  /** All records, open ones first, each group in id order. */
  list(): DemandRecord[] {
    return [...this.records.values()].sort((a, b) => Number(a.closed) - Number(b.closed) || compareText(a.id, b.id));
  }

  /**
   * Opens a record. Opening an id that exists changes nothing and returns the held record.
   * Throws DemandError on bad input or when RECORDS_MAX open records are held.
   */
  open(input: OpenInput): { record: DemandRecord; created: boolean } {
    const held = this.records.get(input.id);
    if (held) return { record: held, created: false };
    const record: DemandRecord = { id: input.id, pipeline: input.pipeline, steps: input.steps, priority: input.priority ?? 0, done: {}, closed: false };
    const problem = recordProblem(record);
    if (problem) throw new DemandError('invalid', problem);
    this.insert(record);
    return { record, created: true };
  }

  /**
   * Adds `steps` done, as counted by reporter `tag`. Progress for a closed record is ignored
   * (changed: false). Throws DemandError for an unknown record or bad input.
   */
  report(id: string, tag: string, steps: number): { record: DemandRecord; changed: boolean } {
    const held = this.records.get(id);
    if (!held) throw new DemandError('unknown-record', `no demand record ${id}`);
    if (!TAG_PATTERN.test(tag)) throw new DemandError('invalid', `reporter tag must be 1..16 of A-Z a-z 0-9 . _ -, got ${JSON.stringify(tag)}`);
    if (!Number.isInteger(steps) || steps < 0 || steps > PLAN_NUMBER_MAX) throw new DemandError('invalid', `completed steps must be an integer in 0..${PLAN_NUMBER_MAX}, got ${steps}`);
    if (held.closed || steps === 0) return { record: held, changed: false };
    if (!(tag in held.done) && Object.keys(held.done).length >= REPORTERS_MAX) throw new DemandError('full', `record ${id} already counts progress from ${REPORTERS_MAX} nodes`);
    const mine = Math.min((held.done[tag] ?? 0) + steps, PLAN_NUMBER_MAX);
    const record = normalise({ ...held, done: { ...held.done, [tag]: mine } });
    this.records.set(id, record);
    this.touch(record.pipeline);
    return { record, changed: true };
  }

  /** Closes a record; closing a closed one changes nothing. Throws DemandError if unknown. */
  close(id: string): { record: DemandRecord; changed: boolean } {
    const held = this.records.get(id);
    if (!held) throw new DemandError('unknown-record', `no demand record ${id}`);
    if (held.closed) return { record: held, changed: false };
    const record = { ...held, closed: true };
    this.records.set(id, record);
    this.touch(record.pipeline);
    return { record, changed: true };
  }

  /** Merges a copy heard from elsewhere; returns the merged record if anything changed. */
  merge(copy: DemandRecord): DemandRecord | null {
    if (recordProblem(copy)) return null;
    const held = this.records.get(copy.id);
    if (!held) {
      const record = normalise(copy);
      return this.insert(record) ? record : null;
    }
    const merged = mergeRecords(held, copy);
    if (sameRecord(merged, held)) return null;
    this.records.set(merged.id, merged);
    this.touch(merged.pipeline);
    return merged;
  }

  /** Per pipeline with remaining work: the sum of its open records' remaining steps, the highest priority. */
  pipelineDemand(): PipelineDemand[] {
    const by = new Map<string, { remaining: number; priority: number }>();
    for (const r of this.records.values()) {
      const rem = remainingSteps(r);
      if (rem <= 0) continue;
      const d = by.get(r.pipeline) ?? { remaining: 0, priority: 0 };
      d.remaining = Math.min(d.remaining + rem, PLAN_NUMBER_MAX);
      d.priority = Math.max(d.priority, r.priority);
      by.set(r.pipeline, d);
    }
    return [...by.entries()].map(([pipeline, d]) => ({ pipeline, ...d })).sort((a, b) => compareText(a.pipeline, b.pipeline));
  }

  /**
   * Every pipeline with a record: remaining work, priority (highest among open records) and
   * knowledge version; those with work first in serving order, then the others, most
   * recently changed first. This is what a rank reports in a plan round.
   */
  pipelineViews(): PipelineView[] {
    const by = new Map<string, { remaining: number; priority: number; version: number }>();
    for (const r of this.records.values()) {
      const v = by.get(r.pipeline) ?? { remaining: 0, priority: 0, version: 0 };
      const rem = remainingSteps(r);
      v.remaining = Math.min(v.remaining + rem, PLAN_NUMBER_MAX);
      if (rem > 0) v.priority = Math.max(v.priority, r.priority);
      v.version = Math.min(v.version + doneSteps(r) + (r.closed ? 1 : 0) + 1, PLAN_NUMBER_MAX);
      by.set(r.pipeline, v);
    }
    const views = [...by.entries()].map(([pipeline, v]) => ({ pipeline, ...v }));
    const open = views.filter((v) => v.remaining > 0).sort(servingOrder);
    const ended = views.filter((v) => v.remaining === 0).sort((a, b) => (this.touched.get(b.pipeline) ?? 0) - (this.touched.get(a.pipeline) ?? 0) || compareText(a.pipeline, b.pipeline));
    return [...open, ...ended];
  }

  /** A digest of every record's state: equal books have equal digests. */
  digest(): string {
    let h = 2166136261;
    for (const r of [...this.records.values()].sort((a, b) => compareText(a.id, b.id))) h = fnv(h, canonical(r));
    return (h >>> 0).toString(16).padStart(8, '0');
  }

  private insert(record: DemandRecord): boolean {
    if (this.records.size >= RECORDS_MAX) {
      // Forget the oldest closed record (insertion order); a copy heard again comes back closed.
      let victim: string | undefined;
      for (const [id, r] of this.records) {
        if (r.closed) {
          victim = id;
          break;
        }
      }
      if (victim === undefined) {
        if (!record.closed) throw new DemandError('full', `${RECORDS_MAX} demand records are open; close some first`);
        return false;
      }
      this.records.delete(victim);
    }
    this.records.set(record.id, record);
    this.touch(record.pipeline);
    return true;
  }

  private touch(pipeline: string): void {
    this.touched.set(pipeline, ++this.changes);
  }
}

// ---- plan rounds ----

/** One rank's view in a plan round. */
export interface PlanPayload {
  /** The pipeline this rank serves now, or null. */
  readonly serving: string | null;
  /** Pipelines with remaining work in serving order, then pipelines whose work ended. */
  readonly demand: readonly PipelineView[];
  /** Digest of the rank's whole book (for operators: equal digests, equal views). */
  readonly digest: string;
  /** Pipelines left out to fit the payload limit. */
  readonly dropped: number;
}

/** The plan a completed round produced: the same at every node that completed it. */
export interface AgreedPlan {
  readonly generation: number;
  readonly epoch: number;
  readonly seq: number;
  /** [rank, pipeline or null] in rank order. */
  readonly assignment: readonly (readonly [number, string | null])[];
  /** The agreed inputs: combined demand per pipeline. */
  readonly demand: readonly PipelineDemand[];
}

/**
 * Encodes a rank's payload within BARRIER_PAYLOAD_BYTES_MAX: pipelines with work in serving
 * order, then those without in the order given (DemandBook.pipelineViews: most recently
 * ended first), dropping from the end what does not fit.
 */
export function encodePlanPayload(serving: string | null, views: readonly PipelineView[], digest: string): string {
  const ordered = [...views.filter((d) => d.remaining > 0).sort(servingOrder), ...views.filter((d) => d.remaining <= 0)];
  let keep = Math.min(ordered.length, PLAN_PAYLOAD_PIPELINES_MAX);
  for (;;) {
    const text = JSON.stringify({ v: DEMAND_WIRE_VERSION, s: serving, d: digest, x: ordered.length - keep, p: ordered.slice(0, keep).map((d) => [d.pipeline, d.remaining, d.priority, d.version ?? 0]) });
    if (byteLength(text) <= BARRIER_PAYLOAD_BYTES_MAX || keep === 0) return text;
    keep--;
  }
}

const nameSchema = z.string().regex(PIPELINE_PATTERN);
const countSchema = z.int().min(0).max(PLAN_NUMBER_MAX);
const payloadSchema = z.strictObject({
  v: z.literal(DEMAND_WIRE_VERSION),
  s: nameSchema.nullable(),
  d: z.string().max(16),
  x: countSchema,
  p: z.array(z.tuple([nameSchema, countSchema, z.int().min(0).max(PRIORITY_MAX), countSchema])).max(PLAN_PAYLOAD_PIPELINES_MAX),
});

/** Decodes a payload; null if malformed (the round then counts that rank as serving nothing, with no demand). */
export function decodePlanPayload(text: string): PlanPayload | null {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return null;
  }
  const parsed = payloadSchema.safeParse(raw);
  if (!parsed.success) return null;
  const p = parsed.data;
  return { serving: p.s, digest: p.d, dropped: p.x, demand: p.p.map(([pipeline, remaining, priority, version]) => ({ pipeline, remaining, priority, version })) };
}

/**
 * Combines a round's payloads into planner inputs: per pipeline the report with the highest
 * version, then the larger remaining work, then the higher priority — the same choice at
 * every node, whatever order it looks in. Pipelines left with no work are dropped.
 */
export function combinePayloads(ranks: readonly number[], payloads: readonly string[]): { current: Map<number, string | null>; demand: PipelineDemand[] } {
  const current = new Map<number, string | null>();
  const by = new Map<string, { remaining: number; priority: number; version: number }>();
  ranks.forEach((rank, i) => {
    const p = decodePlanPayload(payloads[i] ?? '');
    current.set(rank, p?.serving ?? null);
    for (const d of p?.demand ?? []) {
      const held = by.get(d.pipeline);
      const mine = { remaining: d.remaining, priority: d.priority, version: d.version ?? 0 };
      const better = held === undefined || (mine.version - held.version || mine.remaining - held.remaining || mine.priority - held.priority) > 0;
      if (better) by.set(d.pipeline, mine);
    }
  });
  const demand = [...by.entries()]
    .filter(([, d]) => d.remaining > 0)
    .map(([pipeline, d]) => ({ pipeline, remaining: d.remaining, priority: d.priority }))
    .sort(servingOrder)
    .slice(0, PLAN_PIPELINES_MAX);
  return { current, demand: demand.sort((a, b) => compareText(a.pipeline, b.pipeline)) };
}

/** The plan of a completed plan round (every node gets the same from the same result). */
export function planOfRound(result: Pick<BarrierResult, 'generation' | 'epoch' | 'seq' | 'ranks' | 'payloads'>): AgreedPlan & { result: PlanResult } {
  const { current, demand } = combinePayloads(result.ranks, result.payloads);
  const planned = plan({ ranks: result.ranks, demand, current });
  return { generation: result.generation, epoch: result.epoch, seq: result.seq, assignment: planned.assignment, demand, result: planned };
}

/** Orders plans by their round: (generation, epoch, seq). */
export function comparePlans(a: Pick<AgreedPlan, 'generation' | 'epoch' | 'seq'>, b: Pick<AgreedPlan, 'generation' | 'epoch' | 'seq'>): number {
  return a.generation - b.generation || a.epoch - b.epoch || a.seq - b.seq;
}

/**
 * When a rank arrives at the next plan round. Plan rounds of one epoch run one after
 * another (seq 1, 2, …): a rank arrives at seq n + 1 only once seq n completed here, which is
 * what serialises resizes. It arrives when another rank already started the next round, when
 * its own book holds demand for a pipeline the plan gives no rank or a rank serves a pipeline
 * without work while others have some (at once: those are urgent), when its epoch has had no
 * round yet (a committed view changes the ranks) and `settleTicks` passed since this node took
 * the view, or when its book says the plan is far from the demand (rebalanceWanted at
 * `triggerPoints`) in a way the planner would change, at least `minIntervalTicks` after its
 * last round completed. Time is in the driver's units.
 *
 * The settle wait is for the members still deciding the view: the survivors of a view change
 * commit it up to about a second apart on a loaded host, and a round's all-to-all arrivals sent
 * meanwhile reach them as messages of an epoch they do not hold yet, costing each of them a
 * read (and a view request) while it waits for the decision. The last plan stays in force
 * meanwhile: ranks keep their numbers across a view change.
 */
export class PlanRounds {
  private generation = -1;
  private epoch = -1;
  private rank = -1;
  /** When this node took the current view (setView with a new view). */
  private viewSince = -Infinity;
  private arrivedSeq = 0;
  private completedSeq = 0;
  private lastCompletedTick = -Infinity;
  private latest: AgreedPlan | null = null;
  /** The rank this node held in `latest` (its serving pipeline is looked up by it). */
  private latestRank = -1;

  constructor(
    private readonly minIntervalTicks: number,
    private readonly settleTicks = 0,
    private readonly triggerPoints = REBALANCE_TRIGGER_POINTS,
  ) {}

  /** The current view as this node holds it at `now`; rank -1 when it holds none. */
  setView(generation: number, epoch: number, rank: number, now: number): void {
    if (generation === this.generation && epoch === this.epoch && rank === this.rank) return;
    this.generation = generation;
    this.epoch = epoch;
    this.rank = rank;
    this.viewSince = now;
    this.arrivedSeq = 0;
    this.completedSeq = 0;
  }

  /** The newest plan this node holds (computed here, or adopted from a peer). */
  plan(): AgreedPlan | null {
    return this.latest;
  }

  /** The pipeline this node serves: its assignment in the newest plan. */
  serving(): string | null {
    const p = this.latest;
    if (!p || this.latestRank < 0) return null;
    return p.assignment.find(([r]) => r === this.latestRank)?.[1] ?? null;
  }

  /**
   * Whether to arrive now, and with which seq. `peerStarted(seq)`: another rank's arrival at
   * plan round `seq` of this epoch is held here. `ranks`: the epoch's active ranks.
   */
  next(now: number, ranks: readonly number[], demand: readonly PipelineDemand[], peerStarted: (seq: number) => boolean): number | null {
    if (this.rank < 0 || this.arrivedSeq > this.completedSeq) return null;
    const seq = this.arrivedSeq + 1;
    // A pipeline with demand and no rank, or a rank idle while others have work, is urgent:
    // its round is neither rate-limited nor settled (each such round removes its cause).
    const wanted =
      this.completedSeq === 0
        ? now - this.viewSince >= this.settleTicks || this.urgent(ranks, demand)
        : this.urgent(ranks, demand) || (now - this.lastCompletedTick >= this.minIntervalTicks && this.rebalance(ranks, demand));
    if (!(wanted || peerStarted(seq))) return null;
    return seq;
  }

  /**
   * When the view's first round comes due by the settle wait alone, if this node holds a rank
   * and has not yet arrived at it; null otherwise. A driver that checks next() only on events
   * checks again then.
   */
  settlesAt(): number | null {
    return this.rank >= 0 && this.arrivedSeq === 0 && this.completedSeq === 0 ? this.viewSince + this.settleTicks : null;
  }

  /** This node arrived at `seq` (call after the barrier accepted the arrival). */
  arrived(seq: number): void {
    this.arrivedSeq = Math.max(this.arrivedSeq, seq);
  }

  /** A plan round of the current epoch completed here: the plan it gives, or null if not ours. */
  completed(now: number, result: Pick<BarrierResult, 'generation' | 'epoch' | 'name' | 'seq' | 'ranks' | 'payloads'>): (AgreedPlan & { result: PlanResult }) | null {
    if (result.name !== PLAN_BARRIER || result.generation !== this.generation || result.epoch !== this.epoch) return null;
    this.completedSeq = Math.max(this.completedSeq, result.seq);
    this.arrivedSeq = Math.max(this.arrivedSeq, result.seq);
    this.lastCompletedTick = now;
    const agreed = planOfRound(result);
    this.adopt(agreed, this.rank);
    return agreed;
  }

  /** Takes a plan heard from a peer when it is newer than the one held; returns whether it did. */
  adopt(p: AgreedPlan, selfRank = -1): boolean {
    if (this.latest && comparePlans(p, this.latest) <= 0) return false;
    this.latest = { generation: p.generation, epoch: p.epoch, seq: p.seq, assignment: p.assignment, demand: p.demand };
    this.latestRank = selfRank >= 0 ? selfRank : p.generation === this.generation && p.epoch === this.epoch ? this.rank : -1;
    return true;
  }

  /**
   * Some pipeline the planner would serve (ranks allowing) holds no rank, or some rank serves
   * a pipeline without work (or nothing) while others have work — the planner changes both —
   * or the agreed demand still lists work this rank knows has ended.
   */
  private urgent(ranks: readonly number[], demand: readonly PipelineDemand[]): boolean {
    // The agreed demand still lists a pipeline whose work this rank knows has ended (the last
    // one, say): one round brings the agreed inputs, and so routing, up to date.
    const open = new Set(demand.filter((d) => d.remaining > 0).map((d) => d.pipeline));
    if (this.latest?.demand.some((d) => d.remaining > 0 && !open.has(d.pipeline))) return true;
    const served = demand.filter((d) => d.remaining > 0).sort(servingOrder).slice(0, ranks.length);
    if (served.length === 0) return false;
    const assignment = this.assignmentMap();
    const held = new Set(ranks.map((r) => assignment.get(r) ?? null));
    if (served.some((d) => !held.has(d.pipeline))) return true;
    return ranks.some((r) => !open.has(assignment.get(r) ?? ''));
  }

  /** Far from the demand, and the planner (on this node's own view) would move a rank. */
  private rebalance(ranks: readonly number[], demand: readonly PipelineDemand[]): boolean {
    const current = this.assignmentMap();
    if (!rebalanceWanted(ranks, demand, current, this.triggerPoints)) return false;
    const top = [...demand].sort(servingOrder).slice(0, PLAN_PIPELINES_MAX);
    const planned = plan({ ranks, demand: top, current });
    return planned.shrinks.length > 0 || planned.expands.length > 0;
  }

  private assignmentMap(): Map<number, string | null> {
    return new Map(this.latest?.assignment ?? []);
  }
}

// ---- gossip ----

/** A demand message: a record's state, or a node's summary (book digest and newest plan). */
export type DemandMessage =
  | { readonly type: 'record'; readonly meshId: string; readonly record: DemandRecord }
  | { readonly type: 'summary'; readonly meshId: string; readonly digest: string; readonly records: number; readonly plan: { generation: number; epoch: number; seq: number } | null };

const recordSchema = z.strictObject({
  id: z.string().regex(ID_PATTERN),
  pipeline: nameSchema,
  steps: z.int().min(1).max(PLAN_NUMBER_MAX),
  priority: z.int().min(0).max(PRIORITY_MAX),
  done: z.record(z.string().regex(TAG_PATTERN), countSchema),
  closed: z.boolean(),
});
const messageSchema = z.discriminatedUnion('t', [
  z.strictObject({ v: z.literal(DEMAND_WIRE_VERSION), t: z.literal('record'), m: z.string().max(64), r: recordSchema }),
  z.strictObject({
    v: z.literal(DEMAND_WIRE_VERSION),
    t: z.literal('summary'),
    m: z.string().max(64),
    d: z.string().max(16),
    n: countSchema,
    q: z.tuple([countSchema, countSchema, countSchema]).nullable(),
  }),
]);

export function encodeDemandMessage(msg: DemandMessage): Uint8Array {
  const raw =
    msg.type === 'record'
      ? { v: DEMAND_WIRE_VERSION, t: 'record', m: msg.meshId, r: msg.record }
      : { v: DEMAND_WIRE_VERSION, t: 'summary', m: msg.meshId, d: msg.digest, n: msg.records, q: msg.plan ? [msg.plan.generation, msg.plan.epoch, msg.plan.seq] : null };
  const bytes = new TextEncoder().encode(JSON.stringify(raw));
  // Bounded by construction (ids ≤ 40, names ≤ 64, ≤ 16 reporters of ≤ 16 characters).
  if (bytes.byteLength >= DEMAND_MESSAGE_BYTES_MAX) throw new DemandError('invalid', `demand message of ${bytes.byteLength} bytes exceeds ${DEMAND_MESSAGE_BYTES_MAX}`);
  return bytes;
}

export function decodeDemandMessage(bytes: Uint8Array): { ok: true; msg: DemandMessage } | { ok: false; reason: string } {
  if (bytes.byteLength >= DEMAND_MESSAGE_BYTES_MAX) return { ok: false, reason: 'too large' };
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return { ok: false, reason: 'not JSON' };
  }
  const parsed = messageSchema.safeParse(raw);
  if (!parsed.success) return { ok: false, reason: parsed.error.issues[0]?.message ?? 'malformed' };
  const m = parsed.data;
  if (m.t === 'record') {
    const problem = recordProblem(m.r);
    return problem ? { ok: false, reason: problem } : { ok: true, msg: { type: 'record', meshId: m.m, record: m.r } };
  }
  return { ok: true, msg: { type: 'summary', meshId: m.m, digest: m.d, records: m.n, plan: m.q ? { generation: m.q[0], epoch: m.q[1], seq: m.q[2] } : null } };
}

/** Decodes a stored or transferred record; null if malformed. */
export function parseRecord(raw: unknown): DemandRecord | null {
  const parsed = recordSchema.safeParse(raw);
  return parsed.success && !recordProblem(parsed.data) ? parsed.data : null;
}

// ---- helpers ----

function normalise(r: DemandRecord): DemandRecord {
  // Completion closes a record: progress reaching the target is the pipeline's release.
  const closed = r.closed || sumDone(r.done) >= r.steps;
  return closed === r.closed ? r : { ...r, closed };
}

function sumDone(done: Readonly<Record<string, number>>): number {
  let s = 0;
  for (const n of Object.values(done)) s += n;
  return s;
}

function keepReporters(done: Record<string, number>): Record<string, number> {
  const tags = Object.keys(done).sort(compareText).slice(0, REPORTERS_MAX);
  const out: Record<string, number> = {};
  for (const t of tags) out[t] = done[t]!;
  return out;
}

function compareFixed(a: DemandRecord, b: DemandRecord): number {
  return compareText(a.pipeline, b.pipeline) || a.steps - b.steps || a.priority - b.priority;
}

function sameRecord(a: DemandRecord, b: DemandRecord): boolean {
  return canonical(a) === canonical(b);
}

/** One text per record state, independent of key insertion order. */
function canonical(r: DemandRecord): string {
  const done = Object.keys(r.done)
    .sort(compareText)
    .map((t) => `${t}=${r.done[t]}`)
    .join(',');
  return `${r.id}|${r.pipeline}|${r.steps}|${r.priority}|${r.closed ? 1 : 0}|${done}`;
}

function fnv(h: number, text: string): number {
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return Math.imul(h ^ 0x0a, 16777619);
}

function byteLength(text: string): number {
  return new TextEncoder().encode(text).byteLength;
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
