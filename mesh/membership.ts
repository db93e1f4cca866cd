/**
 * Membership knowledge of one node: what it has heard from each peer, its own failure
 * detector (suspicion, direct probe, report), the tally of every observer's reports, and
 * the change it would propose from all of that.
 *
 * Two detectors feed the reports (docs/PROTOCOL.md, failure detection):
 *  - silence: a recorded peer not heard for suspectTicks is probed, and reported if the probe
 *    fails; such a report is withdrawn once the peer is heard again for refuteTicks. This
 *    finds crashed and hung nodes.
 *  - scheduled probes: every active member probes its K ring subjects (observers.ts) every
 *    probeIntervalTicks and reports one when most of its recent probes failed; only its own
 *    probes succeeding again withdraw that report. This finds a node that still gets some
 *    gossip through (retransmits, copies relayed by others) but loses much of what it sends.
 *
 * Cut detection follows Rapid: a member is put in a proposed cut only when at least
 * reportThreshold(...) distinct active observers report it, so a single bad link (which
 * makes just its two ends report each other) never evicts anyone.
 */
import type { ResolvedConfig } from './config.ts';
import { ProbeHistory, watchedBy } from './observers.ts';
import { reportThreshold } from './quorum.ts';
import {
  type Change,
  type Incarnation,
  type View,
  activePeers,
  incarnationKey,
  recordedIncarnation,
  sameIncarnation,
} from './view.ts';
import type { Role } from './wire.ts';

export type Liveness = 'alive' | 'suspected' | 'reported';

/**
 * A ring subject whose recent probes all answered is probed this many times less often than
 * probeIntervalTicks: the steady cost of watching healthy members is a third, and the first
 * failed probe restores the full rate, so detection waits at most one calm interval longer.
 */
export const PROBE_CALM_FACTOR = 3;

/**
 * Why this node reports an incarnation. 'gone': it fell silent and a probe failed, a probe
 * was refused, or it restarted — hearing it again withdraws the report. 'probes': most of
 * this node's recent scheduled probes of it failed — only probes withdraw the report.
 */
export type ReportReason = 'gone' | 'probes';

/** A direct probe the driver should make now; its result goes back with this id. */
export interface ProbeRequest {
  readonly peer: string;
  readonly id: number;
  /** Started because the peer fell silent or its connection closed, not on schedule. */
  readonly suspected: boolean;
}

/** A report this node started in the last step (for the driver's log). */
export interface NewReport {
  readonly inc: Incarnation;
  readonly reason: ReportReason;
}

export interface PeerInfo {
  readonly peerId: string;
  /** The incarnation most recently heard from this peer. */
  bootId: string;
  role: Role;
  ready: boolean;
  rememberedRank: number;
  closeRequested: boolean;
  generation: number;
  epoch: number;
  lastHeardTick: number;
  /** Start of the current stretch of hearing this incarnation without a silence > 2 × suspectTicks. */
  heardSinceTick: number;
  /** What the peer reported in its last heartbeat of this node's (generation, epoch). */
  reports: readonly Incarnation[];
}

export interface HeartbeatFields {
  bootId: string;
  role: Role;
  ready: boolean;
  rememberedRank: number;
  closeRequested: boolean;
  reports: readonly Incarnation[];
}

export class Membership {
  /** Invariant: keyed by peerId; never holds this node itself. */
  readonly peers = new Map<string, PeerInfo>();
  /** Invariant: at most one probe per peer is in flight. */
  private readonly probes = new Map<string, Probe>();
  private nextProbeId = 1;
  /**
   * Scheduled-probe state of each incarnation this node watches, by incarnation key. It
   * outlives view changes (a lossy member stays reported in the next epoch) and is dropped
   * once the incarnation is no longer watched.
   */
  private readonly watches = new Map<string, Watch>();
  /** This node's reports in the current epoch, by incarnation key. */
  private readonly myReports = new Map<string, { inc: Incarnation; reason: ReportReason }>();
  private newReports: NewReport[] = [];
  /** Last tick a direct probe of each peer succeeded. */
  private readonly probedOkTick = new Map<string, number>();
  /**
   * How often each incarnation was removed from a view. An incarnation removed while still
   * running (a partition, a flapping link) must be heard 8×, then 16×, 32× (at most) as long
   * as a newcomer before it is admitted again, so a flapping peer stays out instead of
   * oscillating in and out of the view (Rapid's flip-flop experiment).
   */
  private readonly removals = new Map<string, number>();
  /** The view and the number of returning incarnations the watches were last rebuilt for (updateWatches). */
  private watchedView: View | null = null;
  private watchedReturning = 0;
  /** Tick the current view was committed (silence is measured from no earlier than this). */
  private epochStartTick = 0;

  constructor(private readonly config: ResolvedConfig) {}

  /** Records a heartbeat (or formation message) from `from`; `sameEpoch` says whether its reports count. */
  heard(from: string, now: number, generation: number, epoch: number, hb: HeartbeatFields | null, bootId: string): void {
    let info = this.peers.get(from);
    if (!info) {
      info = {
        peerId: from,
        bootId,
        role: 'forming',
        ready: false,
        rememberedRank: -1,
        closeRequested: false,
        generation,
        epoch,
        lastHeardTick: now,
        heardSinceTick: now,
        reports: [],
      };
      this.peers.set(from, info);
    }
    // Continuity breaks on a new incarnation or a silence long enough to be more than a few
    // lost heartbeats: twice the suspicion timeout.
    if (info.bootId !== bootId || now - info.lastHeardTick > 2 * this.config.suspectTicks) info.heardSinceTick = now;
    if (info.bootId !== bootId) {
      // A new incarnation says nothing yet: what the old one announced (ready, its role, its
      // reports) must not carry over until the new one's own heartbeat says it.
      info.ready = false;
      info.role = 'forming';
      info.rememberedRank = -1;
      info.closeRequested = false;
      info.reports = [];
    }
    info.bootId = bootId;
    info.lastHeardTick = now;
    info.generation = generation;
    info.epoch = epoch;
    if (hb) {
      info.role = hb.role;
      info.ready = hb.ready;
      info.rememberedRank = hb.rememberedRank;
      info.closeRequested = hb.closeRequested;
      info.reports = hb.reports;
    }
    // A silence report is withdrawn once its subject has been heard without a gap for
    // refuteTicks: long enough that a flapping peer stays reported, short enough that a healed
    // link heals. A report on failed probes is not: gossip relayed by others proves the process
    // is up, not that its own links carry what it sends.
    const key = incarnationKey({ peerId: from, bootId });
    if (this.myReports.get(key)?.reason === 'gone' && now - info.heardSinceTick >= this.config.refuteTicks) this.myReports.delete(key);
  }

  /** Liveness alone (a message of another epoch still proves the peer's process is up). */
  touch(from: string, bootId: string, now: number, generation: number, epoch: number): void {
    this.heard(from, now, generation, epoch, null, bootId);
  }

  /**
   * A new view was committed: reports and probes in flight belong to the old epoch. Probe
   * histories stay; detect() re-reports from them in the new epoch.
   */
  resetEpoch(now: number): void {
    this.myReports.clear();
    this.probes.clear();
    this.probedOkTick.clear();
    this.epochStartTick = now;
    for (const info of this.peers.values()) info.reports = [];
  }

  /** Notes the incarnations that `next` no longer records compared with `prev`. */
  noteRemovals(prev: View, next: View): void {
    const kept = new Set<string>();
    for (const inc of [...next.ranks, ...next.spares]) if (inc) kept.add(incarnationKey(inc));
    for (const inc of [...prev.ranks, ...prev.spares]) {
      if (!inc) continue;
      const key = incarnationKey(inc);
      if (!kept.has(key)) this.removals.set(key, (this.removals.get(key) ?? 0) + 1);
    }
  }

  /** Continuous hearing an outsider needs before it is admitted (doubling per past removal). */
  admitTicks(inc: Incarnation): number {
    const removed = this.removals.get(incarnationKey(inc)) ?? 0;
    if (removed === 0) return this.config.admitStableTicks;
    return this.config.admitStableTicks * Math.min(32, 8 * 2 ** (removed - 1));
  }

  /** The reports this node started since the last call (they are then gossiped at once). */
  takeNewReports(): NewReport[] {
    const added = this.newReports;
    this.newReports = [];
    return added;
  }

  private report(inc: Incarnation, reason: ReportReason): void {
    const key = incarnationKey(inc);
    const held = this.myReports.get(key);
    if (held) {
      // Probe evidence outlasts a silence report: hearing the peer must not cancel it.
      if (reason === 'probes') held.reason = 'probes';
      return;
    }
    this.myReports.set(key, { inc, reason });
    this.newReports.push({ inc, reason });
  }

  /** This node's own reports, for its heartbeat. */
  reports(): Incarnation[] {
    return [...this.myReports.values()].map((r) => r.inc);
  }

  /**
   * One failure-detector step over every incarnation the view records. Returns the probes
   * to make now. A peer heard under a new bootId is reported at once (its old incarnation is
   * gone); a silent one is probed first and reported only if the probe fails or times out;
   * the members this node watches are probed on schedule whatever is heard of them.
   */
  detect(view: View, self: string, selfBootId: string, now: number): ProbeRequest[] {
    const cfg = this.config;
    const toProbe: ProbeRequest[] = [];
    const returning = this.updateWatches(view, self, now);
    for (const inc of returning) {
      const probe = this.probes.get(inc.peerId);
      if (probe && now >= probe.deadline) this.settle(inc, probe, false, false, now, false);
      const watch = this.watches.get(incarnationKey(inc));
      if (!this.probes.has(inc.peerId) && watch && now >= watch.nextProbeTick) {
        watch.nextProbeTick = now + cfg.probeIntervalTicks;
        toProbe.push(this.startProbe(inc.peerId, 'schedule', now));
      }
    }
    const subjects: Incarnation[] = [];
    for (const h of view.ranks) if (h) subjects.push(h);
    for (const s of view.spares) subjects.push(s);
    for (const inc of subjects) {
      const key = incarnationKey(inc);
      if (this.myReports.get(key)?.reason === 'gone') continue;
      if (inc.peerId === self) {
        if (inc.bootId !== selfBootId) this.report(inc, 'gone');
        continue;
      }
      const info = this.peers.get(inc.peerId);
      if (info && info.bootId !== inc.bootId && now - info.lastHeardTick <= cfg.suspectTicks) {
        this.report(inc, 'gone');
        this.probes.delete(inc.peerId);
        continue;
      }
      let probe = this.probes.get(inc.peerId);
      if (probe && now >= probe.deadline) {
        // Unanswered in time: a failure, but not proof that the process is gone.
        this.settle(inc, probe, false, false, now);
        probe = undefined;
        if (this.myReports.get(key)?.reason === 'gone') continue;
      }
      const watch = this.watches.get(key);
      if (watch && this.condemns(watch.history, key)) this.report(inc, 'probes');
      const silent = now - this.silentSince(inc) > cfg.suspectTicks;
      if (probe) {
        // A silence probe is called off when the peer is heard again; a scheduled or
        // evidence probe is not: its result is the evidence.
        if (probe.why === 'silence' && !silent) this.probes.delete(inc.peerId);
        continue;
      }
      if (silent && !this.myReports.has(key)) toProbe.push(this.startProbe(inc.peerId, 'silence', now));
      else if (watch && now >= watch.nextProbeTick) {
        // A subject whose recent probes all answered is probed PROBE_CALM_FACTOR times less often;
        // one failure brings it back to the full rate until the window clears.
        watch.nextProbeTick = now + cfg.probeIntervalTicks * (watch.history.failures() === 0 ? PROBE_CALM_FACTOR : 1);
        toProbe.push(this.startProbe(inc.peerId, 'schedule', now));
      }
    }
    return toProbe;
  }

  /**
   * Outside evidence that `peer` may be gone (the transport saw its last connection close):
   * probe it now instead of waiting out suspectTicks of silence. Returns the probe to make, or
   * null. Evidence alone never reports a peer — only a refused probe, or a failed one once the
   * peer is also silent, does — so a dropped connection to a live peer costs one probe.
   */
  suspectNow(view: View, peer: string, now: number): ProbeRequest | null {
    // A scheduled probe in flight may have left before the connection closed: it gives way
    // (its late result is ignored by id) to a probe that asks whether the process is there.
    if (this.probes.has(peer) && this.probes.get(peer)?.why !== 'schedule') return null;
    const inc = recordedIncarnation(view, peer);
    if (!inc || this.myReports.has(incarnationKey(inc))) return null;
    return this.startProbe(peer, 'evidence', now);
  }

  /**
   * The result of a direct probe this node asked for (`id` as in the request; omitted, the
   * probe in flight to `peer`). `conclusive` says whether a failure proves the process gone
   * (its host refused the connection) or may be load or loss (a timeout). A refused probe
   * reports the peer; a silence probe reports it on any failure; every probe of a watched
   * member counts in its history, which reports it when most recent probes failed.
   */
  probeResult(view: View, peer: string, ok: boolean, now: number, conclusive = true, id?: number): void {
    const probe = this.probes.get(peer);
    if (!probe || (id !== undefined && id !== probe.id)) return;
    const inc = recordedIncarnation(view, peer);
    if (inc) return this.settle(inc, probe, ok, conclusive, now, true);
    const returning = [...this.watches.values()].find((w) => w.inc.peerId === peer && !recordedIncarnation(view, peer));
    if (returning) return this.settle(returning.inc, probe, ok, conclusive, now, false);
    this.probes.delete(peer);
  }

  /** A probe that ended without saying anything about the peer (a local limit); nothing is recorded. */
  probeAbandoned(peer: string, id: number): void {
    if (this.probes.get(peer)?.id === id) this.probes.delete(peer);
  }

  liveness(peerId: string, now: number, view: View | null): Liveness {
    const info = this.peers.get(peerId);
    const recorded = view ? recordedIncarnation(view, peerId) : null;
    if (recorded && this.myReports.has(incarnationKey(recorded))) return 'reported';
    if (!info || now - info.lastHeardTick > this.config.suspectTicks) return 'suspected';
    return 'alive';
  }

  isAlive(peerId: string, now: number): boolean {
    const info = this.peers.get(peerId);
    return !!info && now - info.lastHeardTick <= this.config.suspectTicks;
  }

  /** For each reported incarnation, the distinct active observers (this node included) reporting it. */
  reportCounts(view: View, self: string): Map<string, number> {
    const counts = new Map<string, number>();
    for (const observer of activePeers(view)) {
      const reports = observer === self ? this.reports() : (this.peers.get(observer)?.reports ?? []);
      for (const r of reports) {
        const key = incarnationKey(r);
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
    }
    return counts;
  }

  /**
   * The change this node would propose now, from what it knows. Deterministic in that
   * knowledge, so nodes that know the same things propose identical changes (the fast path).
   */
  proposal(view: View, self: HeartbeatFields & { peerId: string; heardSinceTick: number }, closeRequested: boolean, now: number): Change {
    if (this.proposesNothing(view, self, closeRequested)) return { remove: [], admit: [], addSpares: [], close: false };
    const cfg = this.config;
    const actives = new Set(activePeers(view));
    const counts = this.reportCounts(view, self.peerId);
    const remove: Incarnation[] = [];
    if (counts.size > 0) {
      for (const inc of [...view.ranks, ...view.spares]) {
        if (!inc) continue;
        const n = counts.get(incarnationKey(inc)) ?? 0;
        if (n === 0) continue;
        // Any other active member may report a member on silence, but only its probeObservers
        // ring observers probe it on schedule: the threshold must be reachable by those alone,
        // or a lossy member that still gets its gossip through would never be removed. A
        // restarted peer reporting its own old incarnation also counts, so a one-member mesh
        // can recover.
        const others = Math.max(1, actives.size - (actives.has(inc.peerId) ? 1 : 0));
        const observers = Math.min(others, cfg.probeObservers);
        if (n >= reportThreshold(observers, cfg.reportThresholdMax, actives.size)) remove.push(inc);
      }
    }
    const removed = (inc: Incarnation | null) => !!inc && remove.some((r) => sameIncarnation(r, inc));
    const ranksAfter = view.ranks.map((h) => (removed(h) ? null : h));
    const sparesAfter = view.spares.filter((s) => !removed(s));
    const keptPeers = new Set<string>();
    for (const h of ranksAfter) if (h) keptPeers.add(h.peerId);
    for (const s of sparesAfter) keptPeers.add(s.peerId);

    // Peers outside the view that have been heard long enough to be considered.
    interface Candidate { peerId: string; bootId: string; ready: boolean; rememberedRank: number }
    const outsiders: Candidate[] = [];
    const consider = (c: Candidate & { heardSinceTick: number }) => {
      // Never re-admit an incarnation in the change that removes it: a peer reported on a
      // failed probe may still look recently heard, and remove + admit would be a no-op view.
      if (remove.some((r) => r.peerId === c.peerId && r.bootId === c.bootId)) return;
      if (keptPeers.has(c.peerId)) return;
      if (now - c.heardSinceTick < this.admitTicks(c)) return;
      if (c.peerId !== self.peerId && !this.probedClean(c)) return;
      outsiders.push(c);
    };
    // Gateways route requests and never hold a rank: they are neither admitted nor spares.
    for (const info of this.peers.values()) {
      if (info.role === 'forming' || info.role === 'gateway' || !this.isAlive(info.peerId, now)) continue;
      if (info.generation !== view.generation || info.epoch !== view.epoch) continue;
      consider(info);
    }
    if (self.role !== 'gateway') consider({ ...self, peerId: self.peerId });
    outsiders.sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));

    const free: number[] = [];
    ranksAfter.forEach((h, r) => {
      if (!h) free.push(r);
    });
    const admit: { rank: number; peerId: string; bootId: string }[] = [];
    const placed = new Set<string>();
    const take = (rank: number, c: Incarnation) => {
      admit.push({ rank, peerId: c.peerId, bootId: c.bootId });
      placed.add(c.peerId);
      free.splice(free.indexOf(rank), 1);
    };
    // A spare counts as ready only while this node hears that incarnation say so.
    const readySpares = sparesAfter.filter((s) => {
      const info = s.peerId === self.peerId ? self : this.peers.get(s.peerId);
      return !!info && info.bootId === s.bootId && info.ready && (s.peerId === self.peerId || this.isAlive(s.peerId, now));
    });
    const rememberedOf = (peerId: string) => (peerId === self.peerId ? self.rememberedRank : (this.peers.get(peerId)?.rememberedRank ?? -1));
    // 1. A returning peer gets its old rank back when that rank is free — before any spare is
    // placed, and whether it came back as an outsider or waited as a spare while it warmed up
    // (nvidia-resiliency-ext #325: early spares must not take a returning member's rank).
    const returning = [...outsiders.filter((c) => c.ready), ...readySpares.map((s) => ({ ...s, rememberedRank: rememberedOf(s.peerId) }))];
    returning.sort((a, b) => (a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0));
    for (const c of returning) {
      if (!placed.has(c.peerId) && free.includes(c.rememberedRank)) take(c.rememberedRank, c);
    }
    // 2. Ready spares fill the lowest free ranks, in peerId order.
    for (const s of readySpares) {
      if (free.length === 0) break;
      if (!placed.has(s.peerId)) take(free[0] as number, s);
    }
    // 3. Then ready joiners, in peerId order.
    for (const c of outsiders) {
      if (free.length === 0) break;
      if (c.ready && !placed.has(c.peerId)) take(free[0] as number, c);
    }
    // 4. Everyone else outside the view waits as a spare.
    const addSpares = outsiders.filter((c) => !placed.has(c.peerId)).map((c) => ({ peerId: c.peerId, bootId: c.bootId }));

    // Never agree a view with no active member: nobody could change it again.
    const activeAfter = ranksAfter.filter((h) => h !== null).length + admit.length;
    if (activeAfter === 0) return { remove: [], admit: [], addSpares: [], close: closeRequested };
    return { remove, admit, addSpares, close: closeRequested };
  }

  /**
   * The usual case, tested without the allocations of a full proposal (it runs every tick):
   * no close asked, no member reports anyone, no free rank beside a waiting spare, and every
   * peer heard in this epoch, this node included, already recorded in the view. Then the
   * proposal is empty; when this says false, proposal() works it out in full.
   */
  private proposesNothing(view: View, self: { peerId: string; role: Role }, closeRequested: boolean): boolean {
    if (closeRequested || this.myReports.size > 0) return false;
    if (view.spares.length > 0 && view.ranks.includes(null)) return false;
    for (const h of view.ranks) if (h && h.peerId !== self.peerId && (this.peers.get(h.peerId)?.reports.length ?? 0) > 0) return false;
    if (self.role !== 'gateway' && !recordedIncarnation(view, self.peerId)) return false;
    for (const info of this.peers.values()) {
      if (info.role === 'forming' || info.role === 'gateway' || info.generation !== view.generation || info.epoch !== view.epoch) continue;
      if (!recordedIncarnation(view, info.peerId)) return false;
    }
    return true;
  }

  /** The tick since which `inc` counts as silent here (heard, answered a probe, or the epoch began). */
  private silentSince(inc: Incarnation): number {
    const info = this.peers.get(inc.peerId);
    const heard = info && info.bootId === inc.bootId ? info.lastHeardTick : -Infinity;
    const lastHeard = Math.max(heard, this.probedOkTick.get(inc.peerId) ?? -Infinity);
    return Math.max(lastHeard, this.epochStartTick);
  }

  private startProbe(peer: string, why: Probe['why'], now: number): ProbeRequest {
    const probe: Probe = { id: this.nextProbeId++, deadline: now + this.config.probeTimeoutTicks, why };
    this.probes.set(peer, probe);
    return { peer, id: probe.id, suspected: why !== 'schedule' };
  }

  /** A probe ended (answered, failed or timed out): record it and report or withdraw. */
  private settle(inc: Incarnation, probe: Probe, ok: boolean, conclusive: boolean, now: number, recorded = true): void {
    this.probes.delete(inc.peerId);
    const key = incarnationKey(inc);
    const watch = this.watches.get(key);
    if (watch) {
      watch.history.record(ok);
      watch.answeredInARow = ok ? watch.answeredInARow + 1 : 0;
    }
    // A removed incarnation asking back in is only measured: there is nothing to report.
    if (!recorded) return;
    if (ok) {
      // The peer answered directly: its gossip is lost, not its process. Suspicion starts over.
      this.probedOkTick.set(inc.peerId, now);
    } else if (conclusive || probe.why === 'silence' || now - this.silentSince(inc) > this.config.suspectTicks) {
      this.report(inc, 'gone');
      return;
    }
    if (!watch) return;
    const verdict = watch.history.verdict();
    if (this.condemns(watch.history, key)) this.report(inc, 'probes');
    else if (verdict === 'withdraw' && this.myReports.get(key)?.reason === 'probes') this.myReports.delete(key);
  }

  /**
   * Whether this node's probes of the subject `key` make it report the subject now: enough of
   * the recent ones failed, the latest among them, and the subject is to blame (blames). A
   * subject that just answered is not reported on older failures: after a spell of loss or
   * load, histories clear one probe at a time and blames() can turn against a subject whose
   * window still holds the old failures — in the simulator that removed three healthy members
   * of five at once, on a calm network, right after they had all answered.
   */
  private condemns(history: ProbeHistory, key: string): boolean {
    return history.verdict() === 'report' && history.lastFailed() && this.blames(key);
  }

  /**
   * Whether failed probes of the subject `key` are the subject's fault rather than this
   * node's (Lifeguard's local health): an observer whose probes of most of its other ring
   * subjects fail too is itself the slow or lossy one — a starved event loop, its own lost
   * packets — and blames nobody. An observer with a single subject cannot tell and blames it.
   */
  private blames(key: string): boolean {
    let others = 0;
    let failing = 0;
    for (const [k, w] of this.watches) {
      if (k === key || !w.ringSubject) continue;
      others++;
      if (w.history.mostlyFailing()) failing++;
    }
    return 2 * failing <= others;
  }

  /**
   * Starts watching this view's ring subjects of `self` and the removed incarnations that ask
   * back in, and forgets the others. Returns the latter: an incarnation removed while still
   * running (a lossy link, a partition) is probed by every member before any proposes it
   * again, so a node whose links still lose most of what it sends stays out instead of being
   * admitted and removed over and over. They are few: only incarnations removed before.
   */
  private updateWatches(view: View, self: string, now: number): Incarnation[] {
    const cfg = this.config;
    const returning = this.returningIncarnations(view, now);
    // The watched set follows from the view and the returning incarnations alone: with the
    // same view and none returning now or at the last rebuild, it is unchanged.
    if (view === this.watchedView && returning.length === 0 && this.watchedReturning === 0) return returning;
    this.watchedView = view;
    this.watchedReturning = returning.length;
    const ring = watchedBy(view, self, cfg.probeObservers);
    const watched = [...ring, ...returning];
    const keys = new Set(watched.map(incarnationKey));
    for (const key of this.watches.keys()) if (!keys.has(key)) this.watches.delete(key);
    watched.forEach((inc, i) => {
      const key = incarnationKey(inc);
      const existing = this.watches.get(key);
      if (existing) {
        existing.ringSubject = i < ring.length;
        return;
      }
      // Spread first probes over one interval so they do not all leave in the same tick.
      const offset = Math.floor((i * cfg.probeIntervalTicks) / watched.length);
      this.watches.set(key, { inc, history: new ProbeHistory(cfg.probeWindow, cfg.probeFailuresToReport), nextProbeTick: now + 1 + offset, answeredInARow: 0, ringSubject: i < ring.length });
    });
    return returning;
  }

  /** Live peers outside the view whose current incarnation was removed from a view before. */
  private returningIncarnations(view: View, now: number): Incarnation[] {
    const out: Incarnation[] = [];
    if (this.removals.size === 0) return out;
    for (const info of this.peers.values()) {
      // Cheapest test first: nearly every peer is in the view.
      if (recordedIncarnation(view, info.peerId) || info.role === 'forming' || info.role === 'gateway' || !this.isAlive(info.peerId, now)) continue;
      const inc = { peerId: info.peerId, bootId: info.bootId };
      if ((this.removals.get(incarnationKey(inc)) ?? 0) > 0) out.push(inc);
    }
    return out;
  }

  /**
   * Whether this node's own probes clear a removed incarnation for admission: its last
   * 2 × probeWindow probes answered, doubling with each removal (at most 4 × probeWindow), so
   * a link that still loses much of what it sends almost never shows such a clean run.
   */
  private probedClean(inc: Incarnation): boolean {
    const removed = this.removals.get(incarnationKey(inc)) ?? 0;
    if (removed === 0) return true;
    const needed = this.config.probeWindow * Math.min(4, 2 ** removed);
    return (this.watches.get(incarnationKey(inc))?.answeredInARow ?? 0) >= needed;
  }
}

/** A probe in flight: why it was started, and the tick by which its result must arrive. */
interface Probe {
  readonly id: number;
  readonly deadline: number;
  /** 'silence': the peer fell silent; 'evidence': its connection closed; 'schedule': a ring probe. */
  readonly why: 'silence' | 'evidence' | 'schedule';
}

/** This node's scheduled probing of one watched incarnation. */
interface Watch {
  readonly inc: Incarnation;
  readonly history: ProbeHistory;
  nextProbeTick: number;
  /** Probes answered since the last one that failed. */
  answeredInARow: number;
  /** A ring subject of the current view (not a removed incarnation asking back in). */
  ringSubject: boolean;
}
