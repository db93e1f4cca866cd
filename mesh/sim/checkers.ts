/**
 * Cross-node safety checkers for the simulator. They sit outside the product code, see
 * every persisted state and every committed view of every node, and throw a
 * SafetyViolation the moment an invariant breaks:
 *  - agreement: no two nodes commit different views for one (generation, epoch);
 *  - quorum: a view of epoch e + 1 is committed only if a majority of the active members of
 *    view e durably voted for the change that produces it (fastQuorum identical votes on
 *    the fast path, a majority at one classic ballot otherwise); a first view only if every
 *    one of its rank holders durably accepted it in one formation round; nothing follows a
 *    closed view. A minority side cannot gather those votes, so it never advances;
 *  - mask consistency: the active-rank mask is exactly the held ranks, in rank order, and
 *    its hex encoding round-trips;
 *  - no rank held by two incarnations: within a view no peer appears twice, and no two live
 *    processes ever claim the same rank of the same (generation, epoch);
 *  - barriers: no two nodes complete one barrier (generation, epoch, name, seq) with different
 *    results, a result lists exactly the mask's ranks, and each payload is what that rank's
 *    holder sent — so none completes before every rank of the mask arrived; a rank never
 *    arrives twice with different payloads;
 *  - lifecycle: every rank of an epoch passes through the same states — within one
 *    (generation, epoch) a lifecycle version means one state at every node — and each step a
 *    node takes by itself (a command or a completion) is legal and advances the version by one;
 *    a rank's version never goes back, except a provisional one (restored or heard as a
 *    non-rank) that the ranks' first round replaces; STOPPED only with a closed view;
 *  - drain: the first node to reach PAUSED for a version finds no in-flight work on any live
 *    rank of its mask (PAUSED only after an iteration where no rank had work);
 *  - join: an incarnation enters the mask by a view change (admission or spare promotion)
 *    only after it reported ready, so no barrier or collective of a later epoch ever waits on
 *    a warm-up; in an epoch's join step the state source holds a rank of that view, had
 *    current state when the step began (it served continuously since it joined) and is not
 *    the joiner itself; a step that adopts nothing ('fresh') happens only when no rank had
 *    current state.
 */
import { fastQuorum, quorumSize } from '../quorum.ts';
import { formDigest } from '../forming.ts';
import type { BarrierResult } from '../barrier.ts';
import { isLegalStep } from '../lifecycle.ts';
import type { JoinPlan } from '../join.ts';
import type { Action, PersistentState } from '../rawnode.ts';
import type { Message } from '../wire.ts';
import {
  type Change,
  RankMask,
  type View,
  activeMask,
  activePeers,
  applyChange,
  changeKey,
  viewKey,
  viewProblem,
} from '../view.ts';

export class SafetyViolation extends Error {
  override name = 'SafetyViolation';
}

interface Votes {
  readonly change: Change;
  readonly voters: Set<string>;
}

export class Checkers {
  /** Every committed view, by `${generation}:${epoch}`. */
  readonly views = new Map<string, View>();
  private readonly viewKeys = new Map<string, string>();
  /** Votes sent (each backed by stored state), by `${generation}:${epoch}` → ballot → change key. */
  private readonly votes = new Map<string, Map<number, Map<string, Votes>>>();
  /** Formation acceptances sent, by `${generation}:${round}` → value key → peers. */
  private readonly formAccepts = new Map<string, Map<string, Set<string>>>();
  /** Rank claims of live processes: `${generation}:${epoch}:${rank}` → `${peer}/${boot}`. */
  private readonly claims = new Map<string, string>();
  /** Views whose mask was already checked, with the encoding seen (the check depends on nothing else). */
  private readonly maskChecked = new WeakMap<View, string>();
  commits = 0;
  checks = 0;
  /** Arrivals sent, by `${generation}:${epoch}:${name}#${seq}` → peerId → payload. */
  private readonly arrivals = new Map<string, Map<string, string>>();
  /** First result of each completed barrier, by the same key. */
  private readonly barrierResults = new Map<string, string>();
  barrierCompletions = 0;
  /** Lifecycle state of each version, by `${generation}:${epoch}` → version. */
  private readonly lcByEpoch = new Map<string, Map<number, string>>();
  /** Each incarnation's last lifecycle record: `${peer}/${boot}` → generation, version, state. */
  private readonly lcLast = new Map<string, { generation: number; version: number; state: string; via: string }>();
  /** Versions whose PAUSED was already checked for drain: `${generation}:${version}`. */
  private readonly pausedChecked = new Set<string>();
  lifecycleSteps = 0;
  /** Incarnations (`${peer}/${boot}`) that announced ready. */
  private readonly readyIncs = new Set<string>();
  /**
   * Periods of current state per incarnation: from the epoch whose join step gave it state to
   * the epoch of the view in which it saw it had lost its rank (undefined: still holds it).
   */
  private readonly stateSpans = new Map<string, { generation: number; from: number; to: number | undefined }[]>();
  /** Admissions checked (ranks entered by view change) and join steps checked. */
  admissions = 0;
  joinSteps = 0;
  adoptions = 0;

  /**
   * A node sends `msg` after persisting `stored`. Votes and formation acceptances count
   * toward quorums from here on; each must already be backed by the stored state
   * (persist before send), or by a stored view that supersedes its epoch.
   */
  onSend(peerId: string, stored: PersistentState | undefined, msg: Message): void {
    const body = msg.body;
    if (body.type === 'arrive') {
      const key = `${msg.generation}:${msg.epoch}:${body.name}#${body.seq}`;
      let byPeer = this.arrivals.get(key);
      if (!byPeer) this.arrivals.set(key, (byPeer = new Map()));
      const prev = byPeer.get(peerId);
      if (prev !== undefined && prev !== body.payload) throw new SafetyViolation(`barrier: ${peerId} arrived at ${key} twice with different payloads`);
      byPeer.set(peerId, body.payload);
    } else if (body.type === 'vote') {
      const acc = stored?.acceptor;
      const superseded = !!stored?.view && compare(stored.view.generation, stored.view.epoch, msg.generation, msg.epoch) > 0;
      const backed = !!acc && acc.generation === msg.generation && acc.epoch === msg.epoch && acc.votedBallot >= body.ballot && acc.promised >= body.ballot;
      if (!superseded && !backed) throw new SafetyViolation(`persist before send: ${peerId} sent a vote at ${msg.generation}:${msg.epoch} ballot ${body.ballot} that its stored state does not hold`);
      const epochKey = `${msg.generation}:${msg.epoch}`;
      let byBallot = this.votes.get(epochKey);
      if (!byBallot) this.votes.set(epochKey, (byBallot = new Map()));
      let byChange = byBallot.get(body.ballot);
      if (!byChange) byBallot.set(body.ballot, (byChange = new Map()));
      const key = changeKey(body.change);
      let entry = byChange.get(key);
      if (!entry) byChange.set(key, (entry = { change: body.change, voters: new Set() }));
      entry.voters.add(peerId);
    } else if (body.type === 'form' && body.digest) {
      const form = stored?.form;
      const superseded = !!stored?.view && stored.view.generation >= msg.generation;
      const backed = !!form && form.generation === msg.generation && form.round >= body.round;
      if (!superseded && !backed) throw new SafetyViolation(`persist before send: ${peerId} sent a formation acceptance its stored state does not hold`);
      const roundKey = `${msg.generation}:${body.round}`;
      let byValue = this.formAccepts.get(roundKey);
      if (!byValue) this.formAccepts.set(roundKey, (byValue = new Map()));
      const key = body.digest;
      let peers = byValue.get(key);
      if (!peers) byValue.set(key, (peers = new Set()));
      peers.add(peerId);
    }
  }

  /** A node committed (or learned) `view`. */
  onCommit(peerId: string, view: View): void {
    this.checks++;
    const key = `${view.generation}:${view.epoch}`;
    const vkey = viewKey(view);
    const known = this.viewKeys.get(key);
    if (known !== undefined) {
      if (known !== vkey) throw new SafetyViolation(`agreement: ${peerId} committed ${vkey}, but ${known} was committed for ${key}`);
      return;
    }
    const problem = viewProblem(view);
    if (problem) throw new SafetyViolation(`invalid view ${key} committed by ${peerId}: ${problem}`);
    this.onMask(peerId, view, activeMask(view).toHex());
    if (view.epoch === 1) this.justifyFirst(peerId, view);
    else {
      this.justifyChange(peerId, view);
      this.checkAdmissions(peerId, view);
    }
    this.views.set(key, view);
    this.viewKeys.set(key, vkey);
    this.commits++;
  }

  /** A live process's current claim to a rank; called after every event it handles. */
  onClaim(peerId: string, bootId: string, view: View | null, rank: number): void {
    if (!view || rank < 0) return;
    const holder = view.ranks[rank];
    if (!holder || holder.peerId !== peerId || holder.bootId !== bootId) {
      throw new SafetyViolation(`${peerId}/${bootId} claims rank ${rank} of ${view.generation}:${view.epoch}, held by ${holder ? `${holder.peerId}/${holder.bootId}` : 'nobody'}`);
    }
    const key = `${view.generation}:${view.epoch}:${rank}`;
    const inc = `${peerId}/${bootId}`;
    const other = this.claims.get(key);
    if (other !== undefined && other !== inc) throw new SafetyViolation(`rank ${key} claimed by ${other} and ${inc}`);
    this.claims.set(key, inc);
  }

  /**
   * A node's active-rank mask as it would report it: it must be the held ranks of its view,
   * encoded as hex of the bitset (computed here independently with BigInt), and decode back
   * to those ranks in rank order.
   */
  onMask(peerId: string, view: View | null, maskHex: string): void {
    if (!view || this.maskChecked.get(view) === maskHex) return;
    let bits = 0n;
    const held: number[] = [];
    view.ranks.forEach((h, r) => {
      if (h) {
        bits |= 1n << BigInt(r);
        held.push(r);
      }
    });
    if (maskHex !== bits.toString(16)) throw new SafetyViolation(`mask: ${peerId} reports ${maskHex} for ${view.generation}:${view.epoch}, held ranks give ${bits.toString(16)}`);
    const decoded = RankMask.fromHex(view.worldSize, maskHex).toArray();
    if (decoded.length !== held.length || decoded.some((r, i) => r !== held[i])) throw new SafetyViolation(`mask: ${maskHex} does not iterate as ranks ${held.join(',')}`);
    this.maskChecked.set(view, maskHex);
  }

  /** A node completed a barrier. */
  onBarrierComplete(peerId: string, result: BarrierResult): void {
    this.checks++;
    this.barrierCompletions++;
    const key = `${result.generation}:${result.epoch}:${result.name}#${result.seq}`;
    const text = JSON.stringify([result.ranks, result.payloads]);
    const known = this.barrierResults.get(key);
    if (known !== undefined && known !== text) throw new SafetyViolation(`barrier: ${peerId} completed ${key} with ${text}, another node with ${known}`);
    const view = this.views.get(`${result.generation}:${result.epoch}`);
    if (!view) throw new SafetyViolation(`barrier: ${peerId} completed ${key} in an epoch never committed`);
    const mask = activeMask(view).toArray();
    if (mask.length !== result.ranks.length || mask.some((r, i) => r !== result.ranks[i])) throw new SafetyViolation(`barrier: ${peerId} completed ${key} over ranks ${result.ranks.join(',')}, the mask is ${mask.join(',')}`);
    const sent = this.arrivals.get(key);
    result.ranks.forEach((r, i) => {
      const holder = view.ranks[r]!.peerId;
      const payload = sent?.get(holder);
      if (payload === undefined) throw new SafetyViolation(`barrier: ${peerId} completed ${key} but rank ${r} (${holder}) never arrived`);
      if (payload !== result.payloads[i]) throw new SafetyViolation(`barrier: ${peerId} completed ${key} with a payload rank ${r} did not send`);
    });
    this.barrierResults.set(key, text);
  }

  /** A node's lifecycle changed. */
  onLifecycle(peerId: string, bootId: string, a: Extract<Action, { kind: 'lifecycle' }>): void {
    this.checks++;
    const inc = `${peerId}/${bootId}`;
    const last = this.lcLast.get(inc);
    this.lcLast.set(inc, { generation: a.generation, version: a.version, state: a.state, via: a.via });
    if (a.state === 'STOPPED') {
      if (a.via !== 'closed') throw new SafetyViolation(`lifecycle: ${inc} reached STOPPED by ${a.via}, not by a closed view`);
      const view = this.views.get(`${a.generation}:${a.epoch}`);
      if (!view?.closed) throw new SafetyViolation(`lifecycle: ${inc} reached STOPPED in ${a.generation}:${a.epoch}, which is not a committed closed view`);
      return;
    }
    if (a.via !== 'command' && a.via !== 'complete' && a.via !== 'sync') return;
    if (!last || last.generation !== a.generation) throw new SafetyViolation(`lifecycle: ${inc} took a ${a.via} step in generation ${a.generation} with no earlier state of it`);
    if (a.via === 'sync') {
      // A state restored from disk or heard as a non-rank is provisional: the ranks' own rounds may replace it with an older version.
      const provisional = last.via === 'heard' || last.via === 'restore' || last.via === 'generation';
      if (a.version < last.version && !provisional) throw new SafetyViolation(`lifecycle: ${inc} synchronised back from version ${last.version} to ${a.version}`);
    } else {
      if (a.version !== last.version + 1) throw new SafetyViolation(`lifecycle: ${inc} stepped from version ${last.version} to ${a.version}`);
      if (!isLegalStep(last.state as never, a.state)) throw new SafetyViolation(`lifecycle: ${inc} stepped ${last.state} → ${a.state}, not a legal ${a.via}`);
      this.lifecycleSteps++;
    }
    const epochKey = `${a.generation}:${a.epoch}`;
    let byVersion = this.lcByEpoch.get(epochKey);
    if (!byVersion) this.lcByEpoch.set(epochKey, (byVersion = new Map()));
    const known = byVersion.get(a.version);
    if (known !== undefined && known !== a.state) throw new SafetyViolation(`lifecycle: in ${epochKey} ${inc} holds version ${a.version} as ${a.state}, another rank as ${known}`);
    byVersion.set(a.version, a.state);
  }

  /**
   * A node completed PAUSING into PAUSED. The first to do so for a version must find no
   * in-flight work on any live holder of its mask's ranks (`inflight(rank)`: null when the
   * holder is dead or a newer incarnation runs).
   */
  onPaused(peerId: string, a: Extract<Action, { kind: 'lifecycle' }>, view: View, inflight: (rank: number) => number | null): void {
    const key = `${a.generation}:${a.version}`;
    if (this.pausedChecked.has(key)) return;
    this.pausedChecked.add(key);
    for (const r of activeMask(view)) {
      const n = inflight(r);
      if (n !== null && n > 0) throw new SafetyViolation(`drain: ${peerId} reached PAUSED (version ${a.version}) while rank ${r} still had ${n} request(s) in flight`);
    }
  }

  /** An incarnation announced ready (its warm-up ended); only now may a view change give it a rank. */
  onReady(peerId: string, bootId: string): void {
    this.readyIncs.add(`${peerId}/${bootId}`);
  }

  /** An incarnation with current state saw a view (or none) that gives it no rank. */
  onStateLost(peerId: string, bootId: string, view: View | null): void {
    const span = this.stateSpans.get(`${peerId}/${bootId}`)?.at(-1);
    if (span && span.to === undefined) span.to = view && view.generation === span.generation ? view.epoch : Number.MAX_SAFE_INTEGER;
  }

  /**
   * Rank `rank` of `view` (held by peerId/bootId) passed the epoch's join step with `plan`;
   * `source` is the holder of plan.source (null for 'fresh').
   */
  onJoinStep(peerId: string, bootId: string, view: View, rank: number, plan: JoinPlan, source: { peerId: string; bootId: string } | null): void {
    this.checks++;
    this.joinSteps++;
    const inc = `${peerId}/${bootId}`;
    const where = `${view.generation}:${view.epoch}`;
    const holder = view.ranks[rank];
    if (!holder || holder.peerId !== peerId || holder.bootId !== bootId) throw new SafetyViolation(`join: ${inc} ran the join step of ${where} for rank ${rank}, which it does not hold`);
    if (plan.kind === 'fresh') {
      view.ranks.forEach((h, r) => {
        if (h && this.hadState(`${h.peerId}/${h.bootId}`, view)) throw new SafetyViolation(`join: ${inc} started ${where} fresh although rank ${r} (${h.peerId}/${h.bootId}) had current state`);
      });
    } else {
      if (!source) throw new SafetyViolation(`join: ${inc} has a plan with source ${plan.source} but no holder`);
      const src = `${source.peerId}/${source.bootId}`;
      const recorded = view.ranks[plan.source];
      if (!recorded || recorded.peerId !== source.peerId || recorded.bootId !== source.bootId) throw new SafetyViolation(`join: state source ${src} does not hold rank ${plan.source} of ${where}`);
      if (!this.hadState(src, view)) throw new SafetyViolation(`join: ${inc} sources state in ${where} from ${src}, which had no current state (a joiner)`);
      if (plan.kind === 'adopt' && plan.joiners.includes(rank)) {
        if (plan.source === rank) throw new SafetyViolation(`join: ${inc} adopts state from itself in ${where}`);
        this.adoptions++;
      }
    }
    const spans = this.stateSpans.get(inc) ?? [];
    const last = spans.at(-1);
    if (!last || last.to !== undefined || last.generation !== view.generation) spans.push({ generation: view.generation, from: view.epoch, to: undefined });
    this.stateSpans.set(inc, spans);
  }

  /** The committed view with the highest (generation, epoch), if any. */
  latest(): View | null {
    let best: View | null = null;
    for (const v of this.views.values()) {
      if (!best || v.generation > best.generation || (v.generation === best.generation && v.epoch > best.epoch)) best = v;
    }
    return best;
  }

  /** Whether `inc` had current state when the join step of `view` began. */
  private hadState(inc: string, view: View): boolean {
    return (this.stateSpans.get(inc) ?? []).some((s) => s.generation === view.generation && s.from < view.epoch && (s.to === undefined || s.to > view.epoch));
  }

  /** Every incarnation that holds a rank in `view` but did not in the view before reported ready first. */
  private checkAdmissions(peerId: string, view: View): void {
    const prev = this.views.get(`${view.generation}:${view.epoch - 1}`);
    if (!prev) return;
    view.ranks.forEach((h, r) => {
      if (!h || prev.ranks.some((p) => p?.peerId === h.peerId && p.bootId === h.bootId)) return;
      this.admissions++;
      if (!this.readyIncs.has(`${h.peerId}/${h.bootId}`)) throw new SafetyViolation(`join: ${peerId} committed ${view.generation}:${view.epoch} with ${h.peerId}/${h.bootId} in rank ${r} before it reported ready`);
    });
  }

  private justifyFirst(peerId: string, view: View): void {
    const key = formDigest(view.ranks as NonNullable<View['ranks'][number]>[]);
    const holders = view.ranks.map((h) => h?.peerId);
    for (const [roundKey, byValue] of this.formAccepts) {
      if (!roundKey.startsWith(`${view.generation}:`)) continue;
      const peers = byValue.get(key);
      if (peers && holders.every((p) => p !== undefined && peers.has(p))) return;
    }
    throw new SafetyViolation(`quorum: ${peerId} committed first view ${viewKey(view)} without every rank holder accepting it in one round`);
  }

  private justifyChange(peerId: string, view: View): void {
    const prevKey = `${view.generation}:${view.epoch - 1}`;
    const prev = this.views.get(prevKey);
    if (!prev) throw new SafetyViolation(`quorum: ${peerId} committed ${view.generation}:${view.epoch} but no node ever committed ${prevKey}`);
    if (prev.closed) throw new SafetyViolation(`quorum: ${peerId} committed a view after the closed view ${prevKey}`);
    const acceptors = new Set(activePeers(prev));
    const n = acceptors.size;
    const target = viewKey(view);
    for (const [ballot, byChange] of this.votes.get(prevKey) ?? []) {
      const needed = ballot === 0 ? fastQuorum(n) : quorumSize(n);
      for (const entry of byChange.values()) {
        let count = 0;
        for (const v of entry.voters) if (acceptors.has(v)) count++;
        if (count >= needed && viewKey(applyChange(prev, entry.change)) === target) return;
      }
    }
    throw new SafetyViolation(`quorum: ${peerId} committed ${viewKey(view)} without durable votes from a quorum of the ${n} active members of ${prevKey}`);
  }
}

function compare(genA: number, epochA: number, genB: number, epochB: number): number {
  return genA !== genB ? genA - genB : epochA - epochB;
}
