/**
 * Membership knowledge of one node: what it has heard from each peer, its own failure
 * detector (suspicion, direct probe, report), the tally of every observer's reports, and
 * the change it would propose from all of that.
 *
 * Cut detection follows Rapid: a member is put in a proposed cut only when at least
 * reportThreshold(...) distinct active observers report it, so a single bad link (which
 * makes just its two ends report each other) never evicts anyone.
 */
import type { ResolvedConfig } from './config.ts';
import { reportThreshold } from './quorum.ts';
import {
  type Change,
  type Incarnation,
  type View,
  activePeers,
  incarnationKey,
  sameIncarnation,
} from './view.ts';
import type { Role } from './wire.ts';

export type Liveness = 'alive' | 'suspected' | 'reported';

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
  /** Peers probed directly, with the tick by which the result must arrive. */
  private readonly probes = new Map<string, number>();
  /**
   * Probes started on outside evidence (suspectNow) rather than silence. Invariant: a subset
   * of `probes`' keys. Recent hearing does not cancel them: the probe itself decides.
   */
  private readonly evidenceProbes = new Set<string>();
  /** This node's reports in the current epoch, by incarnation key. */
  private readonly myReports = new Map<string, Incarnation>();
  private reportsGrew = false;
  /** Last tick a direct probe of each peer succeeded. */
  private readonly probedOkTick = new Map<string, number>();
  /**
   * How often each incarnation was removed from a view. An incarnation removed while still
   * running (a partition, a flapping link) must be heard 8×, then 16×, 32× (at most) as long
   * as a newcomer before it is admitted again, so a flapping peer stays out instead of
   * oscillating in and out of the view (Rapid's flip-flop experiment).
   */
  private readonly removals = new Map<string, number>();
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
    // A report is withdrawn once its subject has been heard without a gap for refuteTicks:
    // long enough that a flapping peer stays reported, short enough that a healed link heals.
    const key = incarnationKey({ peerId: from, bootId });
    if (this.myReports.has(key) && now - info.heardSinceTick >= this.config.refuteTicks) this.myReports.delete(key);
  }

  /** Liveness alone (a message of another epoch still proves the peer's process is up). */
  touch(from: string, bootId: string, now: number, generation: number, epoch: number): void {
    this.heard(from, now, generation, epoch, null, bootId);
  }

  /** A new view was committed: reports and probes belong to the old epoch. */
  resetEpoch(now: number): void {
    this.myReports.clear();
    this.probes.clear();
    this.evidenceProbes.clear();
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

  /** Whether this node's reports grew since the last call (they are then gossiped at once). */
  takeNewReports(): boolean {
    const grew = this.reportsGrew;
    this.reportsGrew = false;
    return grew;
  }

  private report(inc: Incarnation): void {
    const key = incarnationKey(inc);
    if (this.myReports.has(key)) return;
    this.myReports.set(key, inc);
    this.reportsGrew = true;
  }

  /** This node's own reports, for its heartbeat. */
  reports(): Incarnation[] {
    return [...this.myReports.values()];
  }

  /**
   * One failure-detector step over every incarnation the view records. Returns the peers
   * to probe now. A peer heard under a new bootId is reported at once (its old incarnation
   * is gone); a silent one is probed first and reported only if the probe fails or times out.
   */
  detect(view: View, self: string, selfBootId: string, now: number): string[] {
    const toProbe: string[] = [];
    const subjects: Incarnation[] = [];
    for (const h of view.ranks) if (h) subjects.push(h);
    for (const s of view.spares) subjects.push(s);
    for (const inc of subjects) {
      const key = incarnationKey(inc);
      if (this.myReports.has(key)) continue;
      if (inc.peerId === self) {
        if (inc.bootId !== selfBootId) this.report(inc);
        continue;
      }
      const info = this.peers.get(inc.peerId);
      if (info && info.bootId !== inc.bootId && now - info.lastHeardTick <= this.config.suspectTicks) {
        this.report(inc);
        this.probes.delete(inc.peerId);
        continue;
      }
      const heard = info && info.bootId === inc.bootId ? info.lastHeardTick : -Infinity;
      const lastHeard = Math.max(heard, this.probedOkTick.get(inc.peerId) ?? -Infinity);
      const silentSince = Math.max(lastHeard, this.epochStartTick);
      const deadline = this.probes.get(inc.peerId);
      if (deadline !== undefined) {
        const evidence = this.evidenceProbes.has(inc.peerId);
        if (now - silentSince <= this.config.suspectTicks && !evidence) this.probes.delete(inc.peerId);
        else if (now >= deadline) {
          this.probes.delete(inc.peerId);
          this.evidenceProbes.delete(inc.peerId);
          this.report(inc);
        }
        continue;
      }
      if (now - silentSince > this.config.suspectTicks) {
        this.probes.set(inc.peerId, now + this.config.probeTimeoutTicks);
        toProbe.push(inc.peerId);
      }
    }
    return toProbe;
  }

  /**
   * Outside evidence that `peer` may be gone (the transport saw its last connection close):
   * probe it now instead of waiting out suspectTicks of silence. Returns whether a probe is
   * due. Evidence alone never reports a peer — only a failed or unanswered probe does, so a
   * dropped connection to a live peer costs one probe and nothing else.
   */
  suspectNow(view: View, peer: string, now: number): boolean {
    if (this.probes.has(peer)) return false;
    const inc = view.ranks.find((h) => h?.peerId === peer) ?? view.spares.find((s) => s.peerId === peer);
    if (!inc || this.myReports.has(incarnationKey(inc))) return false;
    this.probes.set(peer, now + this.config.probeTimeoutTicks);
    this.evidenceProbes.add(peer);
    return true;
  }

  /**
   * The result of a direct probe this node asked for. `conclusive` says whether a failure
   * proves the process gone (its host refused the connection) or may be load or loss (a
   * timeout). A silent peer is reported on any failure; a peer probed only on evidence (its
   * connection closed while it kept talking) is reported only on a conclusive one — otherwise
   * the evidence is dropped and silence decides, as for any peer.
   */
  probeResult(view: View, peer: string, ok: boolean, now: number, conclusive = true): void {
    if (!this.probes.has(peer)) return;
    const evidence = this.evidenceProbes.has(peer);
    this.probes.delete(peer);
    this.evidenceProbes.delete(peer);
    const inc = view.ranks.find((h) => h?.peerId === peer) ?? view.spares.find((s) => s.peerId === peer);
    if (!inc) return;
    if (ok) {
      // The peer answered directly: its gossip is lost, not its process. Suspicion starts over.
      this.probedOkTick.set(peer, now);
    } else if (conclusive || !evidence) {
      this.report(inc);
    }
  }

  liveness(peerId: string, now: number, view: View | null): Liveness {
    const info = this.peers.get(peerId);
    const recorded = view?.ranks.find((h) => h?.peerId === peerId) ?? view?.spares.find((s) => s.peerId === peerId);
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
      const reports = observer === self ? this.myReports.values() : (this.peers.get(observer)?.reports ?? []);
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
    const cfg = this.config;
    const actives = new Set(activePeers(view));
    const counts = this.reportCounts(view, self.peerId);
    const remove: Incarnation[] = [];
    if (counts.size > 0) {
      for (const inc of [...view.ranks, ...view.spares]) {
        if (!inc) continue;
        const n = counts.get(incarnationKey(inc)) ?? 0;
        if (n === 0) continue;
        // Observers of an active member are the other active members; a restarted peer
        // reporting its own old incarnation also counts, so a one-member mesh can recover.
        const observers = Math.max(1, actives.size - (actives.has(inc.peerId) ? 1 : 0));
        if (n >= reportThreshold(observers, cfg.reportThresholdMax, actives.size)) remove.push(inc);
      }
    }
    const removed = (inc: Incarnation | null) => !!inc && remove.some((r) => sameIncarnation(r, inc));
    const ranksAfter = view.ranks.map((h) => (removed(h) ? null : h));
    const sparesAfter = view.spares.filter((s) => !removed(s));

    // Peers outside the view that have been heard long enough to be considered.
    interface Candidate { peerId: string; bootId: string; ready: boolean; rememberedRank: number }
    const outsiders: Candidate[] = [];
    const consider = (c: Candidate & { heardSinceTick: number }) => {
      // Never re-admit an incarnation in the change that removes it: a peer reported on a
      // failed probe may still look recently heard, and remove + admit would be a no-op view.
      if (remove.some((r) => r.peerId === c.peerId && r.bootId === c.bootId)) return;
      if (ranksAfter.some((h) => h?.peerId === c.peerId)) return;
      if (sparesAfter.some((s) => s.peerId === c.peerId)) return;
      if (now - c.heardSinceTick < this.admitTicks(c)) return;
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
}
