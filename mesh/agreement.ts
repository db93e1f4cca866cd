/**
 * Agreement on the change that leads from one epoch's view to the next: a single-decree
 * Fast Paxos instance per epoch, with no fixed leader.
 *
 * Acceptors are the peers holding a rank in the epoch's view (whatever their incarnation:
 * a restarted peer keeps its acceptor state on disk). Round 0 is the fast round: each
 * acceptor votes for the change it computed itself, sending the vote to the change's three
 * collectors (voteCollectors), and a change with fastQuorum(n) identical votes is decided
 * there and announced. When that does not happen in time, any acceptor runs a
 * classic round with a ballot ordered by (round, rank) after a randomised back-off; it
 * recovers any value that may have been chosen before, so both paths decide one value.
 */
import type { ResolvedConfig } from './config.ts';
import { fastQuorum, possiblyChosenThreshold, quorumSize } from './quorum.ts';
import { type Change, type Incarnation, type View, activePeers, canonicalChange, changeKey, isEmptyChange, rankOfPeer, sameIncarnation } from './view.ts';
import { BALLOT_RANK_SPAN, type Body } from './wire.ts';

/** What an acceptor must keep on stable storage before it answers anyone. */
export interface AcceptorState {
  readonly generation: number;
  readonly epoch: number;
  /** Invariant: promised ≥ votedBallot; it never decreases within an epoch. */
  readonly promised: number;
  /**
   * -1 when this acceptor has not voted in this epoch; 0 is the fast round.
   * Invariant: a fast-round vote (0) is only cast while promised === 0, and at most once.
   */
  readonly votedBallot: number;
  readonly voted: Change | null;
}

export interface AgreementIo {
  gossip(body: Body): void;
  direct(to: string, body: Body): void;
  /** The acceptor state changed; it must be persisted before the messages queued after it. */
  persist(): void;
  /** `ballot`: the ballot whose votes decided it (0: the fast round). */
  decided(change: Change, ballot: number): void;
  jitter(): number;
  count(reason: string): void;
}

interface Tally {
  readonly change: Change;
  readonly voters: Set<string>;
}

interface Proposer {
  readonly ballot: number;
  phase: 'prepare' | 'accept';
  readonly promises: Map<string, { votedBallot: number; voted: Change | null }>;
  value: Change | null;
}

/**
 * How many members collect the fast round's votes and announce its decision: the first of the
 * acceptors that stay in the next view, in rank order (see voteCollectors).
 */
export const DECISION_ANNOUNCERS = 3;

/**
 * The members a fast-round vote for `change` goes to, and that announce its decision: the first
 * DECISION_ANNOUNCERS ranks of `view` that `change` keeps, in rank order. Any node may learn a
 * decision by counting votes, so who counts them does not bear on safety; sending each vote to
 * these few instead of gossiping it to all turns the fast round's n² deliveries into about 3n,
 * plus the collectors' decisions. A voter names only members it believes alive (the change
 * removes the others), and voters with the same change name the same collectors. Empty when the
 * change keeps no rank; the vote is then gossiped.
 */
export function voteCollectors(view: View, change: Change): string[] {
  const staying = view.ranks.filter((h): h is Incarnation => h !== null && !change.remove.some((r) => sameIncarnation(r, h)));
  return staying.slice(0, DECISION_ANNOUNCERS).map((h) => h.peerId);
}

export function freshAcceptor(view: View): AcceptorState {
  return { generation: view.generation, epoch: view.epoch, promised: 0, votedBallot: -1, voted: null };
}

/** The longest gap between two sends of one fast vote, in retransmit intervals. */
export const FAST_RESEND_GAP_MAX = 8;

export class Agreement {
  readonly acceptors: ReadonlySet<string>;
  private readonly n: number;
  private readonly myRank: number;
  /** Votes seen, by ballot then change key. Invariant: one entry per (ballot, voter). */
  private readonly votes = new Map<number, Map<string, Tally>>();
  private readonly votedAt = new Map<number, Set<string>>();
  /** Invariant: a proposer proposes at most one value per ballot (p.value is set once). */
  private proposer: Proposer | null = null;
  private startedTick: number | null = null;
  private nextFallbackTick = 0;
  private lastSendTick = -Infinity;
  /** When a fast vote is sent again next, and the gap after that (see retransmit). */
  private fastResendTick = 0;
  private fastResendGap = 0;
  private maxBallotSeen = 0;
  private lastOwnChange: Change | null = null;
  /** Invariant: once true, nothing else happens in this instance (the node installs the next view). */
  private done = false;

  constructor(
    private readonly config: ResolvedConfig,
    private readonly view: View,
    private readonly self: string,
    private state: AcceptorState,
    private readonly io: AgreementIo,
  ) {
    const peers = activePeers(view);
    this.acceptors = new Set(peers);
    this.n = peers.length;
    this.myRank = rankOfPeer(view, self);
    this.maxBallotSeen = state.promised;
    if (state.votedBallot >= 0 && state.voted) this.record(self, state.votedBallot, state.voted);
  }

  acceptorState(): AcceptorState {
    return this.state;
  }

  isDecided(): boolean {
    return this.done;
  }

  /**
   * Whether an undecided change is under way in this epoch: this node proposed one, saw a vote,
   * or holds its own vote (a restarted node restores it before it hears or proposes anything,
   * and that vote still counts toward a decision).
   */
  pending(): boolean {
    return !this.done && (this.startedTick !== null || this.state.votedBallot >= 0);
  }

  tick(now: number, ownChange: Change | null): void {
    if (this.done) return;
    this.lastOwnChange = ownChange && !isEmptyChange(ownChange) ? canonicalChange(ownChange) : null;
    const isAcceptor = this.myRank >= 0;
    if (isAcceptor && this.lastOwnChange && this.state.votedBallot < 0 && this.state.promised === 0) {
      this.state = { ...this.state, votedBallot: 0, voted: this.lastOwnChange };
      this.io.persist();
      this.sendVote(0, this.lastOwnChange);
      this.lastSendTick = now;
      this.fastResendGap = this.config.retransmitTicks;
      this.fastResendTick = now + this.fastResendGap;
      this.start(now);
      this.record(this.self, 0, this.lastOwnChange);
      if (this.done) return;
    }
    if (this.lastOwnChange) this.start(now);
    if (now - this.lastSendTick >= this.config.retransmitTicks) this.retransmit(now);
    if (isAcceptor && this.startedTick !== null && now >= this.nextFallbackTick) this.startClassic(now);
  }

  onVote(from: string, ballot: number, change: Change, now: number): void {
    if (this.done) return;
    if (!this.acceptors.has(from)) return this.io.count('vote from a non-acceptor');
    this.seeBallot(ballot);
    this.start(now);
    this.record(from, ballot, change);
  }

  onPrepare(from: string, ballot: number, now: number): void {
    if (this.done) return;
    if (!this.validClassic(from, ballot)) return;
    this.seeBallot(ballot);
    this.start(now);
    if (from !== this.self) this.backOff(now, ballot);
    if (ballot > this.state.promised) {
      this.state = { ...this.state, promised: ballot };
      this.io.persist();
    }
    if (ballot === this.state.promised) {
      const reply = { type: 'promise' as const, ballot, votedBallot: this.state.votedBallot, voted: this.state.voted };
      if (from === this.self) this.onPromise(this.self, ballot, reply.votedBallot, reply.voted, now);
      else this.io.direct(from, reply);
    }
  }

  onPromise(from: string, ballot: number, votedBallot: number, voted: Change | null, now: number): void {
    const p = this.proposer;
    if (this.done || !p || p.ballot !== ballot || p.phase !== 'prepare') return;
    if (!this.acceptors.has(from)) return this.io.count('promise from a non-acceptor');
    p.promises.set(from, { votedBallot, voted });
    if (p.promises.size < quorumSize(this.n)) return;
    const value = this.chooseValue(p.promises);
    if (!value) {
      this.proposer = null;
      return;
    }
    p.phase = 'accept';
    p.value = value;
    this.io.gossip({ type: 'accept', ballot, change: value });
    this.lastSendTick = now;
    this.onAccept(this.self, ballot, value, now);
  }

  onAccept(from: string, ballot: number, change: Change, now: number): void {
    if (this.done) return;
    if (!this.validClassic(from, ballot)) return;
    this.seeBallot(ballot);
    this.start(now);
    if (from !== this.self) this.backOff(now, ballot);
    if (this.myRank < 0 || ballot < this.state.promised) return;
    if (this.state.votedBallot === ballot) return;
    const value = canonicalChange(change);
    this.state = { ...this.state, promised: ballot, votedBallot: ballot, voted: value };
    this.io.persist();
    this.io.gossip({ type: 'vote', ballot, change: value });
    this.record(this.self, ballot, value);
  }

  // ---- helpers ----

  private record(voter: string, ballot: number, change: Change): void {
    let voters = this.votedAt.get(ballot);
    if (!voters) this.votedAt.set(ballot, (voters = new Set()));
    if (voters.has(voter)) return;
    voters.add(voter);
    let byKey = this.votes.get(ballot);
    if (!byKey) this.votes.set(ballot, (byKey = new Map()));
    const key = changeKey(change);
    let tally = byKey.get(key);
    if (!tally) byKey.set(key, (tally = { change: canonicalChange(change), voters: new Set() }));
    tally.voters.add(voter);
    const needed = ballot === 0 ? fastQuorum(this.n) : quorumSize(this.n);
    if (tally.voters.size >= needed) {
      this.done = true;
      this.proposer = null;
      this.io.decided(tally.change, ballot);
    }
  }

  /**
   * The value a classic-round coordinator must propose, from a quorum of phase-1 replies
   * (Fast Paxos's rule): the value voted at the highest classic ballot if any; else a value
   * that may have been chosen in the fast round (at most one can be); else this node's own.
   */
  private chooseValue(promises: Map<string, { votedBallot: number; voted: Change | null }>): Change | null {
    let highest = -1;
    for (const p of promises.values()) highest = Math.max(highest, p.votedBallot);
    if (highest > 0) {
      for (const p of promises.values()) if (p.votedBallot === highest && p.voted) return canonicalChange(p.voted);
    }
    if (highest === 0) {
      const counts = new Map<string, { change: Change; n: number }>();
      for (const p of promises.values()) {
        if (p.votedBallot !== 0 || !p.voted) continue;
        const key = changeKey(p.voted);
        const c = counts.get(key) ?? { change: p.voted, n: 0 };
        c.n++;
        counts.set(key, c);
      }
      const threshold = possiblyChosenThreshold(this.n, promises.size);
      for (const c of counts.values()) if (c.n >= threshold) return canonicalChange(c.change);
      if (this.lastOwnChange) return this.lastOwnChange;
      return mostVoted(counts);
    }
    if (this.lastOwnChange) return this.lastOwnChange;
    const seen = new Map<string, { change: Change; n: number }>();
    for (const [key, tally] of this.votes.get(0) ?? []) seen.set(key, { change: tally.change, n: tally.voters.size });
    return mostVoted(seen);
  }

  private startClassic(now: number): void {
    const round = Math.floor(Math.max(this.maxBallotSeen, this.state.promised) / BALLOT_RANK_SPAN) + 1;
    const ballot = round * BALLOT_RANK_SPAN + this.myRank;
    this.nextFallbackTick = now + this.config.fallbackTicks + this.io.jitter();
    this.proposer = { ballot, phase: 'prepare', promises: new Map(), value: null };
    this.seeBallot(ballot);
    this.io.gossip({ type: 'prepare', ballot });
    this.lastSendTick = now;
    this.onPrepare(this.self, ballot, now);
  }

  /**
   * Sends again what this node's part of the round needs. A fast vote is sent again at doubling
   * gaps, up to FAST_RESEND_GAP_MAX retransmit intervals: it goes to three collectors that every
   * voter is sending to at once, each copy costs them a read while they count, and when they
   * cannot decide the classic fallback takes over anyway. Classic messages keep the fixed rate.
   */
  private retransmit(now: number): void {
    this.lastSendTick = now;
    if (this.state.votedBallot > 0 && this.state.voted) this.sendVote(this.state.votedBallot, this.state.voted);
    if (this.state.votedBallot === 0 && this.state.voted && now >= this.fastResendTick) {
      this.sendVote(0, this.state.voted);
      this.fastResendGap = Math.min(Math.max(this.fastResendGap, this.config.retransmitTicks) * 2, FAST_RESEND_GAP_MAX * this.config.retransmitTicks);
      this.fastResendTick = now + this.fastResendGap;
    }
    const p = this.proposer;
    if (p?.phase === 'prepare') this.io.gossip({ type: 'prepare', ballot: p.ballot });
    if (p?.phase === 'accept' && p.value) this.io.gossip({ type: 'accept', ballot: p.ballot, change: p.value });
  }

  /**
   * A fast-round vote goes to the change's collectors directly, except a collector's own, which
   * is gossiped: the other collectors count it, and a collector never sends a message to itself.
   * A classic-round vote is gossiped, since every acceptor announces a classic decision and the
   * round runs only when the fast one failed.
   */
  private sendVote(ballot: number, change: Change): void {
    const collectors = ballot === 0 ? voteCollectors(this.view, change) : [];
    if (collectors.length === 0 || collectors.includes(this.self)) return this.io.gossip({ type: 'vote', ballot, change });
    for (const to of collectors) this.io.direct(to, { type: 'vote', ballot, change });
  }

  private start(now: number): void {
    if (this.startedTick !== null) return;
    this.startedTick = now;
    this.nextFallbackTick = now + this.config.fallbackTicks + this.io.jitter();
  }

  /** Someone else runs a higher classic round: let it finish before trying again. */
  private backOff(now: number, ballot: number): void {
    if (this.proposer && this.proposer.ballot < ballot) this.proposer = null;
    this.nextFallbackTick = Math.max(this.nextFallbackTick, now + this.config.fallbackTicks + this.io.jitter());
  }

  private seeBallot(ballot: number): void {
    this.maxBallotSeen = Math.max(this.maxBallotSeen, ballot);
  }

  private validClassic(from: string, ballot: number): boolean {
    if (ballot < BALLOT_RANK_SPAN) {
      this.io.count('classic message with a fast ballot');
      return false;
    }
    if (!this.acceptors.has(from) || rankOfPeer(this.view, from) !== ballot % BALLOT_RANK_SPAN) {
      this.io.count('ballot not owned by its sender');
      return false;
    }
    return true;
  }
}

function mostVoted(counts: Map<string, { change: Change; n: number }>): Change | null {
  let best: { key: string; change: Change; n: number } | null = null;
  for (const [key, c] of counts) {
    if (!best || c.n > best.n || (c.n === best.n && key < best.key)) best = { key, change: c.change, n: c.n };
  }
  return best ? canonicalChange(best.change) : null;
}
