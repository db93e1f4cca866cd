// The runtime driver of the protocol core: it feeds the core real ticks (a timer), real
// gossip and direct messages (the libp2p transport) and real probe results (libp2p ping),
// and carries out what the core hands back in ready() — persist first, then send, then act.
// The simulator in mesh/sim/ is the other driver of the same core.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { type Action, type BarrierResult, type CommandKind, DECISION_ANNOUNCERS, type LifecycleState, type RawNode, type View } from '../../mesh/rawnode.ts';
import { encode, type Message } from '../../mesh/wire.ts';
import { decodeCoreOnce } from './decode-once.ts';
import { probeFailureCounts, StallClock } from './stall.ts';
import { jitteredMs } from '../timers.ts';
import type { Transport } from '../p2p/transport.ts';
import type { CoreStore } from './store.ts';

/** Gossip channel and request name of the core protocol. */
export const CORE_CHANNEL = 'core';

/**
 * Round trips (libp2p pings, one after the other on one stream) in one scheduled probe; each must come back
 * within probeRoundTripMs. A ping still gets through a link that drops 60 % of what the subject
 * sends — TCP's tail-loss probe sends a lost segment again within a few milliseconds — but when
 * that copy is lost too, the retransmission timeout (at least 200 ms on Linux) delays it past
 * the deadline. Over three round trips that happens more often than not at 60 % loss, rarely
 * on a healthy link, whose round trips take a few milliseconds unless its host is starved.
 */
export const PROBE_ROUND_TRIPS = 3;

/** Probe errors that come from this node's own limits, not from the peer or the link. */
const LOCAL_PROBE_FAILURE = /Too many outbound protocol streams|transport is not started/;

export interface MeshDriverOptions {
  core: RawNode;
  transport: Transport;
  store: CoreStore;
  log: Logger;
  tickMs: number;
  /** Budget of one direct probe (libp2p ping); a failed or late probe counts as failed. */
  probeTimeoutMs: number;
  /** A scheduled probe fails when one of its round trips takes longer than this (default 150). */
  probeRoundTripMs?: number;
}

export type LifecycleAction = Extract<Action, { kind: 'lifecycle' }>;
export type BarrierAborted = Extract<Action, { kind: 'barrierAborted' }>;
export type CommandDropped = Extract<Action, { kind: 'commandDropped' }>;

export interface MeshDriverEvents {
  view: [view: View];
  closed: [view: View];
  /** This node's agreed lifecycle state changed (atMs: wall clock when the driver saw it). */
  lifecycle: [change: LifecycleAction, atMs: number];
  /** A barrier completed here (control rounds included). */
  barrier: [result: BarrierResult];
  /** A peer's barrier arrival reached this node; the core has stepped it (accepted or refused). */
  peerArrived: [name: string, seq: number];
  barrierAborted: [aborted: BarrierAborted];
  /** A control round dropped an illegal command (identically at every rank). */
  commandDropped: [dropped: CommandDropped];
  /** The core took an input (a tick, a message, a local call) and the driver carried out what it produced. */
  stepped: [];
}

/** A lifecycle change as the driver saw it, with wall-clock timing for operators. */
export interface TimedTransition {
  readonly state: LifecycleState;
  readonly previous: LifecycleState;
  readonly version: number;
  readonly generation: number;
  readonly epoch: number;
  readonly via: LifecycleAction['via'];
  readonly atMs: number;
  /** Time spent in `previous` (since the last transition this driver saw), or null for the first. */
  readonly previousMs: number | null;
}

/**
 * How long after a view is installed the driver opens its push streams to the view's likely
 * vote collectors (see warmCollectors): long enough to stay out of the view change's own work.
 */
const PUSH_WARM_DELAY_MS = 2000;

/** Transitions the driver keeps for GET /v1/lifecycle. */
const TIMED_TRANSITIONS_KEPT = 32;

export type DriverStatus = { code: 'stopped' } | { code: 'started'; timer: ReturnType<typeof setInterval> };

/** Counts of what the driver refused or failed to do, by reason (for /metrics and tests). */
export interface DriverCounters {
  /** Core messages by path and direction, each by body type (hb, vote, decide, …). */
  gossipIn: Record<string, number>;
  gossipOut: Record<string, number>;
  directIn: Record<string, number>;
  directOut: Record<string, number>;
  rejected: Record<string, number>;
  sendFailures: number;
  /** Peers this node suspected (silent past suspectMs, or their connection closed) and probed. */
  suspicions: number;
  /** Scheduled probes of the members this node watches (its ring subjects). */
  scheduledProbes: number;
  /** Probes that failed, so the core may report the peer. */
  probeFailures: number;
  /** Incarnations this node started reporting (silence, a refused probe, or most recent probes failed). */
  reports: number;
  /** Failed probes not counted against the peer because this node's own event loop stalled meanwhile. */
  probesInconclusive: number;
}

export class MeshDriver extends EventEmitter<MeshDriverEvents> {
  readonly core: RawNode;
  readonly counters: DriverCounters = { gossipIn: {}, gossipOut: {}, directIn: {}, directOut: {}, rejected: {}, sendFailures: 0, suspicions: 0, scheduledProbes: 0, probeFailures: 0, reports: 0, probesInconclusive: 0 };
  private state: DriverStatus = { code: 'stopped' };
  private unsubscribe: (() => void) | undefined;
  private offPeer: (() => void) | undefined;
  private handlerRegistered = false;
  private draining = false;
  private readonly timed: TimedTransition[] = [];
  /** When the protocol ticks ran: tells whether this node's own event loop stalled during a probe. */
  private readonly stalls: StallClock;
  /** performance.now() at which to open push streams to the likely collectors; null: done. */
  private warmDueMs: number | null = null;

  constructor(private readonly options: MeshDriverOptions) {
    super();
    this.core = options.core;
    this.stalls = new StallClock(options.tickMs);
  }

  status(): DriverStatus {
    return this.state;
  }

  /** Subscribes to the core channel, serves direct core messages and starts ticking. */
  async start(): Promise<void> {
    if (this.state.code === 'started') return;
    const { transport } = this.options;
    this.unsubscribe = transport.subscribe(CORE_CHANNEL, (from, bytes) => this.receive(from, bytes, 'gossip'));
    // A closed connection is evidence, not proof: the core probes the peer at once instead of
    // waiting for suspectMs of silence (a crashed process's sockets close immediately).
    this.offPeer = transport.onPeer((event) => {
      if (event.type !== 'disconnect' || this.state.code !== 'started') return;
      this.core.peerDisconnected(event.peerId);
      this.drain();
    });
    if (!this.handlerRegistered) {
      await transport.handle(CORE_CHANNEL, (from, bytes) => {
        this.receive(from, bytes, 'direct');
        return new Uint8Array(0);
      });
      this.handlerRegistered = true;
    }
    const timer = setInterval(() => this.onTick(), this.options.tickMs);
    this.state = { code: 'started', timer };
    this.warmDueMs = performance.now() + jitteredMs(PUSH_WARM_DELAY_MS);
    // The core's first ready() holds its restored state and its first heartbeat.
    this.drain();
  }

  /** Stops ticking and receiving; nothing is sent after stop() returns. Idempotent. */
  stop(): void {
    if (this.state.code !== 'started') return;
    clearInterval(this.state.timer);
    this.state = { code: 'stopped' };
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.offPeer?.();
    this.offPeer = undefined;
  }

  /**
   * Issues a lifecycle command at this node and sends it (see RawNode.command). Returns its
   * id; throws LifecycleError on bad input, changing nothing.
   */
  command(kind: CommandKind, id?: string): string {
    const cid = this.core.command(kind, id);
    this.drain();
    return cid;
  }

  /** This rank arrives at barrier `name` (see RawNode.arrive); the result comes as a 'barrier' event. */
  arrive(name: string, payload: string, seq?: number): number {
    const s = this.core.arrive(name, payload, seq);
    this.drain();
    return s;
  }

  /** This node finished its local part of transient state `state` (see RawNode.localDone). */
  localDone(state: LifecycleState): boolean {
    const done = this.core.localDone(state);
    this.drain();
    return done;
  }

  /** Lifecycle changes this driver saw, oldest first, with wall-clock timings. */
  transitions(): readonly TimedTransition[] {
    return [...this.timed];
  }

  private onTick(): void {
    if (this.state.code !== 'started') return;
    const now = performance.now();
    this.stalls.tick(now);
    this.core.tick();
    this.drain();
    if (this.warmDueMs !== null && now >= this.warmDueMs) {
      this.warmDueMs = null;
      this.warmCollectors();
    }
  }

  /**
   * Opens push streams to the first DECISION_ANNOUNCERS + 1 ranks of the view: the collectors
   * of the next change's fast votes are among them unless two of them fail at once. Without
   * this, the first vote after a quiet spell waits for a stream to open and its protocol to be
   * negotiated with a collector that every other voter is opening one to at the same moment.
   */
  private warmCollectors(): void {
    const view = this.core.view();
    if (!view) return;
    const likely = view.ranks.filter((h) => h !== null).slice(0, DECISION_ANNOUNCERS + 1);
    for (const h of likely) this.options.transport.warmPush(h.peerId, CORE_CHANNEL);
  }

  private receive(from: string, bytes: Uint8Array, path: 'gossip' | 'direct'): void {
    if (this.state.code !== 'started') return;
    const decoded = decodeCoreOnce(bytes);
    if (!decoded.ok) {
      this.reject('malformed');
      this.options.log.debug({ from, reason: decoded.reason, path }, 'rejected a malformed core message');
      return;
    }
    countType(path === 'gossip' ? this.counters.gossipIn : this.counters.directIn, decoded.msg);
    this.core.step(from, decoded.msg);
    this.drain();
    const body = decoded.msg.body;
    if (body.type === 'arrive') this.emit('peerArrived', body.name, body.seq);
  }

  private reject(reason: string): void {
    this.counters.rejected[reason] = (this.counters.rejected[reason] ?? 0) + 1;
  }

  /**
   * Hands every ready() batch out: persist (a synchronous SQLite write, durable when it
   * returns), then send, then act, then advance. Re-entrant calls (a handler stepping the
   * core while a batch is handed out) are folded into the running loop.
   */
  private drain(): void {
    if (this.draining) return;
    this.draining = true;
    try {
      // Bounded: each batch is produced by inputs already taken; a core that kept producing
      // batches with no new input would be a bug, so cap the loop rather than spin.
      for (let i = 0; i < 64 && this.core.hasReady(); i++) {
        const ready = this.core.ready();
        const nowMs = Date.now();
        // A committed view is recorded in the same transaction as the state that holds it: one
        // disk sync, where a view change has every process on a host syncing at the same moment.
        const committed = ready.actions.flatMap((a) => (a.kind === 'viewCommitted' ? [a.view] : []));
        if (ready.persist !== null) this.options.store.save(ready.persist, nowMs, committed);
        else for (const view of committed) this.options.store.recordView(view, nowMs);
        for (const out of ready.messages) {
          if (out.kind === 'gossip') this.publish(out.msg);
          else this.sendDirect(out.to, out.msg);
        }
        for (const action of ready.actions) this.act(action, nowMs);
        this.core.advance();
      }
    } finally {
      this.draining = false;
    }
    this.emit('stepped');
  }

  private publish(msg: Message): void {
    countType(this.counters.gossipOut, msg);
    this.options.transport.publish(CORE_CHANNEL, encode(msg)).catch((err: Error) => {
      // No subscribed peer yet (a lone node) is normal; anything else is worth a debug line.
      this.counters.sendFailures++;
      this.options.log.debug({ err: err.message }, 'core gossip not sent');
    });
  }

  /** Over the peer's push stream: no answer is awaited, and the core re-sends what matters. */
  private sendDirect(to: string, msg: Message): void {
    countType(this.counters.directOut, msg);
    this.options.transport.push(to, CORE_CHANNEL, encode(msg), () => this.counters.sendFailures++);
  }

  /**
   * One probe of `peer` within probeTimeoutMs. A suspicion asks whether the process is there
   * at all (one libp2p ping: a refused connection proves it gone); a scheduled probe asks
   * whether it keeps up a conversation without losses (PROBE_ROUND_TRIPS pings in a row, each
   * back within probeRoundTripMs).
   */
  private async probe(peer: string, suspected: boolean): Promise<{ ok: true } | { ok: false; error: string; refused: boolean }> {
    if (suspected) return this.options.transport.ping(peer, { timeoutMs: this.probeBudgetMs(true) });
    return this.options.transport.pingSeries(peer, PROBE_ROUND_TRIPS, this.probeBudgetMs(false));
  }

  /** A probe's time budget: the whole probe on suspicion, each round trip of a scheduled one. */
  private probeBudgetMs(suspected: boolean): number {
    return suspected ? this.options.probeTimeoutMs : Math.min(this.options.probeRoundTripMs ?? 150, this.options.probeTimeoutMs);
  }

  private act(action: Action, nowMs: number): void {
    switch (action.kind) {
      case 'probe': {
        const { peer, id, suspected } = action;
        // Scheduled probes of the ring subjects run all the time: only a suspicion is news.
        if (suspected) {
          this.counters.suspicions++;
          this.options.log.info({ peer }, 'peer suspected; probing it directly');
        } else {
          this.counters.scheduledProbes++;
        }
        const startedMs = performance.now();
        void this.probe(peer, suspected).then((result) => {
          if (this.state.code !== 'started') return;
          // This node's own stream limit, or its own stalled event loop, says nothing about the peer.
          const stalledMs = result.ok || result.refused ? 0 : this.stalls.stallSince(startedMs, performance.now());
          if (!result.ok && (LOCAL_PROBE_FAILURE.test(result.error) || !probeFailureCounts(stalledMs, this.probeBudgetMs(suspected)))) {
            this.core.probeAbandoned(peer, id);
            if (stalledMs > 0) this.counters.probesInconclusive++;
            this.options.log.debug({ peer, error: result.error, stalledMs: Math.round(stalledMs) }, 'probe abandoned');
            return;
          }
          if (!result.ok) {
            this.counters.probeFailures++;
            const fields = { peer, error: result.error, refused: result.refused, scheduled: !suspected };
            if (suspected) this.options.log.info(fields, 'probe failed');
            else this.options.log.debug(fields, 'probe failed');
          }
          this.core.probeResult(peer, result.ok, result.ok || result.refused, id);
          this.drain();
        });
        return;
      }
      case 'reported': {
        this.counters.reports++;
        this.options.log.info({ peer: action.peerId, bootId: action.bootId, reason: action.reason }, 'peer reported');
        return;
      }
      case 'viewCommitted': {
        this.options.log.info(
          { generation: action.view.generation, epoch: action.view.epoch, mask: this.core.maskHex(), spares: action.view.spares.length },
          'view committed',
        );
        this.emit('view', action.view);
        this.warmDueMs = performance.now() + jitteredMs(PUSH_WARM_DELAY_MS);
        return;
      }
      case 'closed': {
        this.options.log.info({ generation: action.view.generation, epoch: action.view.epoch }, 'mesh closed');
        this.emit('closed', action.view);
        return;
      }
      case 'lifecycle': {
        const last = this.timed.at(-1);
        const timed: TimedTransition = {
          state: action.state,
          previous: action.previous,
          version: action.version,
          generation: action.generation,
          epoch: action.epoch,
          via: action.via,
          atMs: nowMs,
          previousMs: last === undefined ? null : nowMs - last.atMs,
        };
        this.timed.push(timed);
        if (this.timed.length > TIMED_TRANSITIONS_KEPT) this.timed.shift();
        this.options.log.info(
          // atMs is sub-millisecond wall time, comparable across processes of one host (benchmarks).
          { state: action.state, previous: action.previous, version: action.version, epoch: action.epoch, via: action.via, previousMs: timed.previousMs, atMs: performance.timeOrigin + performance.now() },
          'lifecycle state changed',
        );
        this.emit('lifecycle', action, nowMs);
        return;
      }
      case 'barrierComplete': {
        const { kind: _kind, ...result } = action;
        this.emit('barrier', result);
        return;
      }
      case 'barrierAborted': {
        this.options.log.debug({ name: action.name, seq: action.seq, epoch: action.epoch }, 'barrier aborted by a view change');
        this.emit('barrierAborted', action);
        return;
      }
      case 'commandDropped': {
        this.options.log.warn({ id: action.id, command: action.command, state: action.state, reason: action.reason }, 'control round dropped a command');
        this.emit('commandDropped', action);
        return;
      }
    }
  }
}

function countType(counts: Record<string, number>, msg: Message): void {
  counts[msg.body.type] = (counts[msg.body.type] ?? 0) + 1;
}
