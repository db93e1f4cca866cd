/**
 * Barrier rounds of one epoch: an all-gather over the epoch's active-rank mask.
 *
 * A barrier is (generation, epoch, name, seq). Each rank of the mask arrives once with a
 * small payload; a node sees the barrier complete when it holds an arrival from every rank
 * of the mask, and the result is the payloads in rank order — the same at every node that
 * completes, because each rank's arrival is one value taken only from the peer holding
 * that rank. An open arrival is re-announced every retransmitTicks (lost gossip repaired);
 * a node that already completed answers a peer still announcing with its own arrival, so
 * no barrier waits on a retransmission that stopped. One Barriers object serves one epoch:
 * a view change drops it, aborting what is open, and callers re-run in the new epoch.
 */
import type { View } from './view.ts';

/** Largest payload of one arrival, in UTF-8 bytes (a control round needs about 1.2 KB at most). */
export const BARRIER_PAYLOAD_BYTES_MAX = 2048;
/** Barriers one node holds at once in an epoch; arrivals for more are refused (a bound, not a limit in practice). */
export const BARRIERS_PER_EPOCH_MAX = 256;
/**
 * Completed rounds kept per name; older ones are forgotten, so an epoch may run any number of
 * rounds (control and plan rounds go on for as long as a view lasts). Rounds of one name run
 * one after another, so a peer is at most a round or two behind the newest one completed.
 */
export const COMPLETED_KEPT_PER_NAME = 16;

export class BarrierError extends Error {
  override name = 'BarrierError';
}

export interface BarrierResult {
  readonly generation: number;
  readonly epoch: number;
  readonly name: string;
  readonly seq: number;
  /** The ranks of the mask, ascending. */
  readonly ranks: readonly number[];
  /** payloads[i] is the arrival of ranks[i]. */
  readonly payloads: readonly string[];
}

export interface BarrierInfo {
  readonly name: string;
  readonly seq: number;
  /** Ranks whose arrival this node holds, ascending. */
  readonly arrived: readonly number[];
  readonly complete: boolean;
  /** Whether this node arrived. */
  readonly mine: boolean;
}

export interface BarrierHooks {
  /** `answer`: sent because a peer still announced a round this node completed; receivers never answer it. */
  gossip(name: string, seq: number, payload: string, answer: boolean): void;
  direct(to: string, name: string, seq: number, payload: string, answer: boolean): void;
  completed(result: BarrierResult): void;
}

interface Round {
  readonly name: string;
  readonly seq: number;
  readonly arrivals: Map<number, string>;
  mine: string | null;
  lastSentTick: number;
  done: boolean;
  /** Last tick this node answered each peer's announcement after completing. */
  readonly answered: Map<string, number>;
}

const encoder = new TextEncoder();
const NAME_PATTERN = /^[A-Za-z0-9._:+=-]{1,64}$/;

export function barrierProblem(name: string, payload: string): string | null {
  if (!NAME_PATTERN.test(name)) return `barrier name must be 1..64 characters of A-Z a-z 0-9 . _ : + = -, got ${JSON.stringify(name)}`;
  const bytes = encoder.encode(payload).byteLength;
  if (bytes > BARRIER_PAYLOAD_BYTES_MAX) return `barrier payload is ${bytes} bytes, limit ${BARRIER_PAYLOAD_BYTES_MAX}`;
  return null;
}

export class Barriers {
  /** The mask's ranks, ascending; rankOf maps each holder's peerId to its rank. */
  readonly ranks: readonly number[];
  private readonly rankOf = new Map<string, number>();
  private readonly rounds = new Map<string, Round>();
  /** Rounds this set has opened so far (a sampler compares it to skip unchanged sets). */
  private openedCount = 0;
  /** Highest seq this node arrived at, by name (the default next seq follows it). */
  private readonly lastSeq = new Map<string, number>();
  /** Per name, every seq at or below this completed here and was forgotten. */
  private readonly forgottenUpTo = new Map<string, number>();

  constructor(
    readonly view: View,
    private readonly selfRank: number,
    private readonly retransmitTicks: number,
    private readonly hooks: BarrierHooks,
  ) {
    const ranks: number[] = [];
    view.ranks.forEach((h, r) => {
      if (!h) return;
      ranks.push(r);
      this.rankOf.set(h.peerId, r);
    });
    this.ranks = ranks;
  }

  /** The seq arrive() uses when none is given: one past the last this node arrived at. */
  nextSeq(name: string): number {
    return (this.lastSeq.get(name) ?? 0) + 1;
  }

  /** This node (holding selfRank) arrives. Throws BarrierError on bad input or a second arrival. */
  arrive(name: string, seq: number, payload: string, now: number): void {
    if (!this.ranks.includes(this.selfRank)) throw new BarrierError('only a rank of the current view can arrive at a barrier');
    const problem = barrierProblem(name, payload);
    if (problem) throw new BarrierError(problem);
    if (!Number.isInteger(seq) || seq < 1 || seq > 2 ** 31 - 1) throw new BarrierError(`barrier seq must be an integer in 1..2^31-1, got ${seq}`);
    const round = this.round(name, seq);
    if (!round) throw new BarrierError(`more than ${BARRIERS_PER_EPOCH_MAX} barriers in one epoch`);
    if (round.mine !== null || seq <= (this.forgottenUpTo.get(name) ?? 0)) throw new BarrierError(`already arrived at barrier ${name}#${seq} of epoch ${this.view.epoch}`);
    round.mine = payload;
    round.arrivals.set(this.selfRank, payload);
    round.lastSentTick = now;
    this.lastSeq.set(name, Math.max(seq, this.lastSeq.get(name) ?? 0));
    this.hooks.gossip(name, seq, payload, false);
    this.check(round);
  }

  /** Whether this node arrived at (name, seq). */
  arrived(name: string, seq: number): boolean {
    return this.rounds.get(key(name, seq))?.mine != null;
  }

  /** Whether (name, seq) completed here. */
  completed(name: string, seq: number): boolean {
    return this.rounds.get(key(name, seq))?.done ?? false;
  }

  /** Whether any rank's arrival at (name, seq) is held. */
  started(name: string, seq: number): boolean {
    return (this.rounds.get(key(name, seq))?.arrivals.size ?? 0) > 0;
  }

  /**
   * An arrival from peer `from` (`answer`: the peer completed the round and answers an
   * announcement; it waits for nothing, so it is not answered); returns a refusal reason or null.
   */
  onArrive(from: string, name: string, seq: number, payload: string, now: number, answer = false): string | null {
    const rank = this.rankOf.get(from);
    if (rank === undefined) return 'barrier arrival from a peer without a rank';
    if (barrierProblem(name, payload)) return 'malformed barrier arrival';
    // A late copy of a round completed long ago: everyone it concerned has moved on.
    if (seq <= (this.forgottenUpTo.get(name) ?? 0)) return null;
    const existing = this.rounds.get(key(name, seq));
    const round = existing ?? this.round(name, seq);
    if (!round) return 'too many barriers in one epoch';
    const held = round.arrivals.get(rank);
    if (held !== undefined && held !== payload) return 'conflicting barrier arrival';
    if (held === undefined) round.arrivals.set(rank, payload);
    if (round.done) {
      // The peer is still announcing, so it may still wait for our arrival: answer it —
      // directly the first time, by gossip after that (a peer that announces again may not
      // have got the direct answer: this node may have no address for it, while gossip
      // reaches it through whoever relays its announcements).
      const last = round.answered.get(from);
      if (!answer && round.mine !== null && now - (last ?? -Infinity) >= this.retransmitTicks) {
        round.answered.set(from, now);
        if (last === undefined) this.hooks.direct(from, name, seq, round.mine, true);
        else this.hooks.gossip(name, seq, round.mine, true);
      }
      return null;
    }
    this.check(round);
    return null;
  }

  /** Re-announces this node's arrival at every barrier still open here. */
  tick(now: number): void {
    for (const round of this.rounds.values()) {
      if (round.done || round.mine === null || now - round.lastSentTick < this.retransmitTicks) continue;
      round.lastSentTick = now;
      this.hooks.gossip(round.name, round.seq, round.mine, false);
    }
  }

  /** How many rounds this set has opened (it only grows; forgotten rounds still count). */
  opened(): number {
    return this.openedCount;
  }

  /** Open barriers first, then completed ones; each in (name, seq) order. */
  list(): BarrierInfo[] {
    return [...this.rounds.values()]
      .map((r) => ({ name: r.name, seq: r.seq, arrived: [...r.arrivals.keys()].sort((a, b) => a - b), complete: r.done, mine: r.mine !== null }))
      .sort((a, b) => Number(a.complete) - Number(b.complete) || (a.name < b.name ? -1 : a.name > b.name ? 1 : a.seq - b.seq));
  }

  /** Barriers still open here (the view change that drops this object aborts them). */
  open(): BarrierInfo[] {
    return this.list().filter((b) => !b.complete);
  }

  private round(name: string, seq: number): Round | null {
    const k = key(name, seq);
    let round = this.rounds.get(k);
    if (round) return round;
    if (this.rounds.size >= BARRIERS_PER_EPOCH_MAX) return null;
    round = { name, seq, arrivals: new Map(), mine: null, lastSentTick: -Infinity, done: false, answered: new Map() };
    this.rounds.set(k, round);
    this.openedCount++;
    return round;
  }

  private check(round: Round): void {
    if (round.done || round.arrivals.size < this.ranks.length) return;
    const payloads: string[] = [];
    for (const r of this.ranks) {
      const p = round.arrivals.get(r);
      if (p === undefined) return;
      payloads.push(p);
    }
    round.done = true;
    this.hooks.completed({ generation: this.view.generation, epoch: this.view.epoch, name: round.name, seq: round.seq, ranks: this.ranks, payloads });
    this.forgetOld(round.name);
  }

  /**
   * Drops the completed rounds of `name` beyond the newest COMPLETED_KEPT_PER_NAME, only below
   * its lowest open round (so the forgotten range never covers a round still open).
   */
  private forgetOld(name: string): void {
    const mine = [...this.rounds.values()].filter((r) => r.name === name);
    const lowestOpen = Math.min(...mine.filter((r) => !r.done).map((r) => r.seq));
    const done = mine.filter((r) => r.done && r.seq < lowestOpen).sort((a, b) => a.seq - b.seq);
    for (const r of done.slice(0, Math.max(0, done.length - COMPLETED_KEPT_PER_NAME))) {
      this.rounds.delete(key(r.name, r.seq));
      this.forgottenUpTo.set(name, Math.max(r.seq, this.forgottenUpTo.get(name) ?? 0));
    }
  }
}

function key(name: string, seq: number): string {
  return `${name}#${seq}`;
}
