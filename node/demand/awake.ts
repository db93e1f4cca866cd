// Which ranks are awake for which pipeline: each rank reports, on the `awake` gossip channel,
// the pipeline it serves now and whether its engine loop runs on its group's communicator.
// An assignment alone is not enough for a caller of "request ranks": a rank the plan just
// moved is still draining, offloading the old model, loading the new one and connecting its
// group's ring. A report is small (well under 1,000 bytes), sent when it changes and again
// every interval, so a node that joins or missed one learns it within an interval.
//
// The demand channel is not reused: its messages are records and summaries that every node
// stores and the peer guard checks with the demand decoder; these reports are soft state,
// kept per peer and replaced by the next one.
import { randomInt } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Transport } from '../p2p/transport.ts';
import { everyJittered } from '../timers.ts';

/** Gossip channel of the rank reports. */
export const AWAKE_CHANNEL = 'awake';

/**
 * A report that this rank stopped serving is sent this long after the change, unless another
 * report replaces it first; one that it serves is sent at once (callers wait for it). When a
 * rank dies, every rank of its group loses its communicator while the survivors are still
 * deciding the view, and a report from each of them to every node at that moment would slow
 * the decision. A caller learns of a lost rank by its requests waiting in that rank's queue
 * meanwhile, which the rank keeps and serves once its group is rebuilt.
 */
export const AWAKE_DOWN_DELAY_MS = 1000;

/** Largest report accepted, in bytes. */
export const AWAKE_REPORT_BYTES_MAX = 1000;

/** What a rank says of itself. */
export interface AwakeReport {
  /** Its mesh rank in the view it serves. */
  readonly rank: number;
  /** The pipeline its group serves, or null (every pipeline, or none). */
  readonly pipeline: string | null;
  /** The plan round its group comes from, or null. */
  readonly round: PlanRoundRef | null;
  /** True while its engine loop runs on its group's communicator. */
  readonly serving: boolean;
}

export interface PlanRoundRef {
  readonly generation: number;
  readonly epoch: number;
  readonly seq: number;
}

export interface AwakeBoardOptions {
  readonly meshId: string;
  /** This node's PeerId: its own report is kept under it. */
  readonly peerId: string;
  readonly transport: Pick<Transport, 'publish' | 'subscribe'>;
  /** Each report is sent again this often. */
  readonly intervalMs: number;
  /** Delay of a report that stopped serving (default AWAKE_DOWN_DELAY_MS). */
  readonly downDelayMs?: number;
  readonly log: Logger;
}

export interface AwakeBoardEvents {
  /** Some rank's report changed. */
  change: [];
}

export class AwakeBoard extends EventEmitter<AwakeBoardEvents> {
  /** Latest report per peer. Invariant: one entry per peer, replaced only by a newer one. */
  private readonly reports = new Map<string, Held>();
  private local: AwakeReport | null = null;
  private seq = 0;
  /** Tells this process's reports from an earlier one's (whose seq may be higher). */
  private readonly bootId = randomInt(2 ** 31);
  private timer: { stop(): void } | undefined;
  /** The pending send of a report that stopped serving (see AWAKE_DOWN_DELAY_MS). */
  private down: ReturnType<typeof setTimeout> | undefined;
  private unsubscribe: (() => void) | undefined;
  /** Reports refused (malformed, another mesh) or out of date. */
  readonly ignored = { malformed: 0, stale: 0 };

  constructor(private readonly options: AwakeBoardOptions) {
    super();
  }

  start(): void {
    if (this.timer !== undefined) return;
    this.unsubscribe = this.options.transport.subscribe(AWAKE_CHANNEL, (from, bytes) => this.receive(from, bytes));
    this.timer = everyJittered(this.options.intervalMs, () => this.publish());
  }

  stop(): void {
    this.timer?.stop();
    this.timer = undefined;
    clearTimeout(this.down);
    this.down = undefined;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** This node's own report (null: it holds no rank); sent when it changed (see AWAKE_DOWN_DELAY_MS). */
  report(report: AwakeReport | null): void {
    if (JSON.stringify(report) === JSON.stringify(this.local)) return;
    this.local = report;
    if (report === null) this.reports.delete(this.options.peerId);
    else this.reports.set(this.options.peerId, { bootId: this.bootId, seq: ++this.seq, report });
    this.emit('change');
    if (report === null || report.serving) return this.publish();
    if (this.down !== undefined || this.timer === undefined) return;
    this.down = setTimeout(() => this.publish(), this.options.downDelayMs ?? AWAKE_DOWN_DELAY_MS);
  }

  /**
   * The ranks among `ranks` that report serving `pipeline` under plan round `round` or a later
   * one. `holderOf(rank)` is the peer holding the rank in this node's view: a report counts
   * only from that peer and for that rank.
   */
  awake(pipeline: string, ranks: readonly number[], round: PlanRoundRef | null, holderOf: (rank: number) => string | null): number[] {
    return ranks.filter((rank) => {
      const holder = holderOf(rank);
      const r = holder === null ? undefined : this.reports.get(holder)?.report;
      if (r === undefined || !r.serving || r.rank !== rank || r.pipeline !== pipeline) return false;
      return round === null || (r.round !== null && compareRounds(r.round, round) >= 0);
    });
  }

  private publish(): void {
    clearTimeout(this.down);
    this.down = undefined;
    const local = this.local;
    if (local === null || this.timer === undefined) return;
    const held = this.reports.get(this.options.peerId);
    const msg: Wire = { v: 1, meshId: this.options.meshId, boot: this.bootId, seq: held?.seq ?? this.seq, ...local };
    this.options.transport.publish(AWAKE_CHANNEL, new TextEncoder().encode(JSON.stringify(msg))).catch((err: Error) => {
      // No subscribed peer yet (a lone node) is normal.
      this.options.log.debug({ err: err.message }, 'awake report not sent');
    });
  }

  private receive(from: string, bytes: Uint8Array): void {
    if (bytes.length > AWAKE_REPORT_BYTES_MAX) {
      this.ignored.malformed++;
      return;
    }
    let msg: Wire;
    try {
      const parsed = wireSchema.safeParse(JSON.parse(new TextDecoder().decode(bytes)));
      if (!parsed.success || parsed.data.meshId !== this.options.meshId) throw new Error('malformed');
      msg = parsed.data;
    } catch {
      this.ignored.malformed++;
      return;
    }
    const held = this.reports.get(from);
    // A report of the same process with an older or equal seq is out of date; a new boot replaces.
    if (held !== undefined && held.bootId === msg.boot && held.seq >= msg.seq) {
      if (held.seq > msg.seq) this.ignored.stale++;
      return;
    }
    const report: AwakeReport = { rank: msg.rank, pipeline: msg.pipeline, round: msg.round, serving: msg.serving };
    const changed = held === undefined || JSON.stringify(held.report) !== JSON.stringify(report);
    this.reports.set(from, { bootId: msg.boot, seq: msg.seq, report });
    if (changed) this.emit('change');
  }
}

function compareRounds(a: PlanRoundRef, b: PlanRoundRef): number {
  return a.generation - b.generation || a.epoch - b.epoch || a.seq - b.seq;
}

interface Held {
  readonly bootId: number;
  readonly seq: number;
  readonly report: AwakeReport;
}

const roundSchema = z.strictObject({ generation: z.int().min(0), epoch: z.int().min(0), seq: z.int().min(0) });
const wireSchema = z.strictObject({
  v: z.literal(1),
  meshId: z.string().min(1).max(256),
  boot: z.int().min(0),
  seq: z.int().min(0),
  rank: z.int().min(0).max(1 << 16),
  pipeline: z.string().max(64).nullable(),
  round: roundSchema.nullable(),
  serving: z.boolean(),
});
type Wire = z.output<typeof wireSchema>;
