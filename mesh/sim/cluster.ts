/**
 * The simulator's driver: many RawNode cores over one VirtualNetwork, in virtual time.
 * It does for each core what the runtime does for one — tick it, feed it messages and
 * probe results, persist its ready() state before sending — and can crash and restart
 * nodes (a restart is a new bootId with the same identity and the last persisted state).
 * Every persisted state, commit and rank claim goes to the checkers.
 *
 * Each node also runs a tiny simulated engine: work arrives at ranks and is queued; while
 * RUNNING it starts and finishes over a few ticks; in PAUSING no new work starts, in-flight
 * work finishes, and the node reports drained once it has none and — standing in for the
 * engine's max all-reduce — every rank of its mask is PAUSING with none either. SUSPENDING,
 * RESUMING and STOPPING finish their local part after a few ticks.
 */
import { type Action, type CoreConfig, RawNode, type PersistentState } from '../rawnode.ts';
import type { Prng } from '../prng.ts';
import type { View } from '../view.ts';
import { type Message, decode, encode } from '../wire.ts';
import type { Checkers } from './checkers.ts';
import { type JoinCandidate, joinPlan } from '../join.ts';
import { STEPS_PER_TICK, VirtualNetwork } from './network.ts';

export type Timing = Omit<CoreConfig, 'meshId' | 'self' | 'bootId' | 'worldSize' | 'seed'>;

export interface SimNode {
  readonly peerId: string;
  core: RawNode | null;
  bootId: string;
  boots: number;
  /** What the node last persisted: survives crashes. */
  stored: PersistentState | undefined;
  /** Steps between two ticks of this node's clock (tick-rate skew). */
  readonly tickSteps: number;
  nextTickStep: number;
  /** Tick of its own clock at which this incarnation announces ready; -1: never by itself. */
  readyAtTick: number;
  /** The simulated engine of this incarnation (a restart starts a fresh one). */
  engine: SimEngine;
  /** This incarnation announced ready (its warm-up ended). */
  ready: boolean;
  /** How the node last went down: a dead process's host refuses probes, a dead host does not. */
  crashedHow?: 'process' | 'host';
}

export interface SimEngine {
  /** Accepted requests not started yet (they wait through a pause). */
  queued: number;
  /** Remaining ticks of each started request. */
  inflight: number[];
  finished: number;
  /** The lifecycle version whose local work (offload, reload, teardown) is under way, and when it ends. */
  taskVersion: number;
  taskDoneTick: number;
  /**
   * The join step (node/rank/join.ts): state is current while the incarnation served
   * continuously since it warmed up or adopted; it is lost with the rank.
   */
  hasState: boolean;
  /** `${generation}:${epoch}` whose join step this engine passed ('' none). */
  joinedKey: string;
  /** hasState as this engine entered the join step of `enteredKey` (what it all-gathers). */
  enteredKey: string;
  enteredWithState: boolean;
}

/**
 * When a PAUSING node's engine reports drained. The default stands in for the engine's max
 * all-reduce: no in-flight work here, and every rank of the mask is PAUSING with none.
 */
export type DrainRule = (node: SimNode, cluster: SimCluster) => boolean;

function freshEngine(): SimEngine {
  return { queued: 0, inflight: [], finished: 0, taskVersion: -1, taskDoneTick: 0, hasState: false, joinedKey: '', enteredKey: '', enteredWithState: false };
}

type Event =
  | { kind: 'msg'; from: string; to: string; msg: Message }
  | { kind: 'probe'; node: string; bootId: string; peer: string; id: number; ok: boolean; conclusive: boolean }
  /** The node's transport saw its connection to `peer` close (evidence, not proof). */
  | { kind: 'disconnect'; node: string; bootId: string; peer: string };

/** Tries of one gossip copy over TCP (lost segments are sent again). */
export const TCP_TRIES = 3;
/**
 * A probe as the runtime makes it (node/mesh/driver.ts): PROBE_ROUND_TRIPS round trips in a
 * row, each back within a short deadline, which leaves room for the original packet and one
 * quick resend (TCP's tail-loss probe) but not for a retransmission timeout.
 */
export const PROBE_ROUND_TRIPS = 3;
export const PROBE_TRIES_PER_ROUND_TRIP = 2;

export interface ClusterOptions {
  meshId: string;
  worldSize: number;
  peers: readonly string[];
  prng: Prng;
  checkers: Checkers;
  timing?: Timing;
  /** Encode and decode every message through the wire format. */
  wire?: boolean;
  /** Tick-rate skew: each node's tick takes STEPS_PER_TICK + [0, skewSteps] steps. */
  skewSteps?: number;
  /** Builds each core (tests pass deliberately broken variants to prove the checkers). */
  makeCore?: (config: CoreConfig, restored: PersistentState | undefined) => RawNode;
  /** Injected driver fault: storage that silently drops every write. */
  forgetfulStorage?: boolean;
  /** Chance per tick that a request arrives at a rank's engine (0: no engine load). */
  workRate?: number;
  /** Replaces the drain rule (tests pass a broken one to prove the checkers). */
  drainRule?: DrainRule;
  /**
   * Gossip travels as on the real transport: each copy over TCP (a lost packet is sent again,
   * up to TCP_TRIES tries) and relayed by gossipsub's mesh (a peer whose copy was lost
   * still gets the message if a live peer that got it can reach it). A node that loses most of
   * what it sends is then still heard, which is what its real peers see.
   */
  gossipRelay?: boolean;
}

export class SimCluster {
  readonly network: VirtualNetwork;
  readonly nodes = new Map<string, SimNode>();
  step = 0;
  delivered = 0;
  private readonly queue = new Map<number, Event[]>();
  private readonly order: string[];
  /** Observers of every delivered message (scenario tests use it to inject or watch). */
  onDeliver: ((from: string, to: string, msg: Message) => Message | null) | null = null;
  /** Observer of every action a core hands out (scenario tests watch lifecycle and barrier results). */
  onAction: ((peerId: string, action: Action) => void) | null = null;

  constructor(private readonly opts: ClusterOptions) {
    this.network = new VirtualNetwork(opts.prng);
    this.order = [...opts.peers];
    for (const peerId of opts.peers) {
      const tickSteps = STEPS_PER_TICK + opts.prng.int(0, opts.skewSteps ?? 0);
      this.nodes.set(peerId, { peerId, core: null, bootId: '', boots: 0, stored: undefined, tickSteps, nextTickStep: 0, readyAtTick: 0, ready: false, engine: freshEngine() });
    }
  }

  node(peerId: string): SimNode {
    const n = this.nodes.get(peerId);
    if (!n) throw new RangeError(`no simulated node ${peerId}`);
    return n;
  }

  /** Starts (or restarts) a node's process with a new bootId and its stored state. */
  start(peerId: string, readyAfterTicks = 0): void {
    const n = this.node(peerId);
    if (n.core) return;
    n.boots++;
    n.bootId = `b${n.boots}x${this.opts.prng.nextU32().toString(36)}`;
    const config: CoreConfig = { meshId: this.opts.meshId, self: peerId, bootId: n.bootId, worldSize: this.opts.worldSize, seed: this.opts.prng.nextU32(), ...this.opts.timing };
    n.core = this.opts.makeCore ? this.opts.makeCore(config, n.stored) : new RawNode(config, n.stored);
    n.readyAtTick = readyAfterTicks;
    n.ready = false;
    n.engine = freshEngine();
    n.nextTickStep = this.step + this.opts.prng.int(1, n.tickSteps);
    this.drain(n);
  }

  /** In-flight messages to a crashed node are lost; its stored state stays. */
  /**
   * Kills a node. 'process': the process dies and its host's kernel closes its sockets, so
   * every live peer's transport sees the disconnect at once. 'host': the host loses power or
   * hangs, and its peers learn nothing until its silence and a failed probe tell them.
   */
  crash(peerId: string, how: 'process' | 'host' = 'process'): void {
    this.node(peerId).core = null;
    this.node(peerId).crashedHow = how;
    if (how === 'process') for (const other of this.liveNodes()) this.disconnect(other.peerId, peerId);
  }

  /** `node`'s transport sees its connection to `peer` close a few steps from now. */
  disconnect(node: string, peer: string): void {
    const n = this.node(node);
    if (!n.core) return;
    this.schedule(this.step + this.opts.prng.int(1, 3), { kind: 'disconnect', node, bootId: n.bootId, peer });
  }

  alive(peerId: string): boolean {
    return this.node(peerId).core !== null;
  }

  liveNodes(): SimNode[] {
    return this.order.map((p) => this.node(p)).filter((n) => n.core !== null);
  }

  /** Runs until virtual step `until` (exclusive), calling `each` once per tick-length. */
  runSteps(count: number): void {
    const until = this.step + count;
    for (; this.step < until; this.step++) {
      const events = this.queue.get(this.step);
      if (events) {
        this.queue.delete(this.step);
        for (const ev of events) this.deliver(ev);
      }
      for (const peerId of this.order) {
        const n = this.node(peerId);
        if (!n.core || n.nextTickStep !== this.step) continue;
        n.nextTickStep += n.tickSteps;
        n.core.tick();
        if (n.readyAtTick >= 0 && n.core.currentTick() >= n.readyAtTick && !n.ready) {
          n.ready = true;
          n.core.markReady();
          this.opts.checkers.onReady(n.peerId, n.bootId);
        }
        this.drain(n);
        this.stepEngine(n);
        this.drain(n);
      }
    }
  }

  runTicks(ticks: number): void {
    this.runSteps(ticks * STEPS_PER_TICK);
  }

  /** Runs tick by tick until `done()` or `ticks` have passed; returns the ticks used or -1. */
  runUntil(done: () => boolean, ticks: number): number {
    for (let t = 0; t < ticks; t++) {
      if (done()) return t;
      this.runTicks(1);
    }
    return done() ? ticks : -1;
  }

  /** Delivers `msg` from→to after `afterSteps` steps, bypassing the network's faults. */
  inject(from: string, to: string, msg: Message, afterSteps = 1): void {
    this.schedule(this.step + afterSteps, { kind: 'msg', from, to, msg });
  }

  views(): (View | null)[] {
    return this.liveNodes().map((n) => n.core!.view());
  }

  /** The live process holding `rank` of `view` with the incarnation the view records, if any. */
  holderOf(view: View, rank: number): SimNode | null {
    const h = view.ranks[rank];
    if (!h) return null;
    const n = this.nodes.get(h.peerId);
    return n?.core && n.bootId === h.bootId ? n : null;
  }

  /** The default drain rule: the max all-reduce of "has work or is not pausing" over the mask is 0. */
  static allRanksDrained: DrainRule = (node, cluster) => {
    const view = node.core?.view();
    if (!view) return false;
    for (let r = 0; r < view.ranks.length; r++) {
      if (!view.ranks[r]) continue;
      const h = cluster.holderOf(view, r);
      // A dead rank never answers the collective: the drain waits for the view change.
      if (!h?.core) return false;
      const hv = h.core.view();
      if (!hv || hv.generation !== view.generation || hv.epoch !== view.epoch) return false;
      if (h.core.lifecycleState() !== 'PAUSING' || h.engine.inflight.length > 0) return false;
    }
    return true;
  };

  /**
   * The join step of node `n` in its current epoch, as the runtime runs it after building the
   * epoch's communicator: it completes once every rank holder of the view is live in the same
   * epoch (the ring build is the rendezvous); then every rank computes joinPlan from what each
   * holder all-gathered — its hasState as it entered the step — and a joiner adopts the
   * source's state. A node without a rank holds no current state.
   */
  private joinStep(n: SimNode): void {
    const core = n.core;
    if (!core) return;
    const e = n.engine;
    const view = core.view();
    const rank = core.rank();
    if (!view || view.closed || rank < 0) {
      if (e.hasState) this.opts.checkers.onStateLost(n.peerId, n.bootId, view);
      e.hasState = false;
      return;
    }
    const key = `${view.generation}:${view.epoch}`;
    if (e.joinedKey === key) return;
    if (e.enteredKey !== key) {
      e.enteredKey = key;
      e.enteredWithState = e.hasState;
    }
    const candidates: JoinCandidate[] = [];
    for (let r = 0; r < view.ranks.length; r++) {
      if (!view.ranks[r]) continue;
      const h = this.holderOf(view, r);
      const hv = h?.core?.view();
      if (!h || !hv || hv.generation !== view.generation || hv.epoch !== view.epoch || h.engine.enteredKey !== key) return;
      candidates.push({ rank: r, hasState: h.engine.enteredWithState, progress: 0 });
    }
    const plan = joinPlan(candidates);
    const sourceHolder = plan.kind === 'fresh' ? null : view.ranks[plan.source]!;
    this.opts.checkers.onJoinStep(n.peerId, n.bootId, view, rank, plan, sourceHolder);
    e.joinedKey = key;
    e.hasState = true;
  }

  /** One engine iteration of node `n`, after its core's tick. */
  private stepEngine(n: SimNode): void {
    const core = n.core;
    if (!core) return;
    this.joinStep(n);
    const e = n.engine;
    const state = core.lifecycleState();
    if (state === 'RUNNING' && e.queued === 0 && e.inflight.length === 0 && !(this.opts.workRate ?? 0)) return;
    const lc = core.lifecycle();
    const now = core.currentTick();
    const workRate = this.opts.workRate ?? 0;
    if (core.rank() < 0) {
      // Without a rank the engine serves nothing: its requests go back to be re-dispatched.
      e.queued = 0;
      e.inflight = [];
    }
    if (core.rank() >= 0 && lc.state !== 'STOPPED' && lc.state !== 'STOPPING' && workRate > 0 && this.opts.prng.chance(workRate)) e.queued++;
    if (lc.state === 'RUNNING' || lc.state === 'PAUSING') {
      const before = e.inflight.length;
      e.inflight = e.inflight.map((t) => t - 1).filter((t) => t > 0);
      e.finished += before - e.inflight.length;
    }
    if (lc.state === 'RUNNING') {
      while (e.queued > 0 && e.inflight.length < 3) {
        e.queued--;
        e.inflight.push(this.opts.prng.int(1, 6));
      }
    } else if (lc.state === 'PAUSING') {
      const rule = this.opts.drainRule ?? SimCluster.allRanksDrained;
      if (!lc.localDone && rule(n, this)) core.localDone('PAUSING');
    } else if (lc.transient) {
      if (e.taskVersion !== lc.version) {
        e.taskVersion = lc.version;
        e.taskDoneTick = now + this.opts.prng.int(1, 5);
      } else if (!lc.localDone && now >= e.taskDoneTick) {
        core.localDone(lc.state);
      }
    }
  }

  private deliver(ev: Event): void {
    if (ev.kind === 'disconnect') {
      const n = this.node(ev.node);
      if (!n.core || n.bootId !== ev.bootId) return;
      n.core.peerDisconnected(ev.peer);
      return this.drain(n);
    }
    if (ev.kind === 'probe') {
      const n = this.node(ev.node);
      if (!n.core || n.bootId !== ev.bootId) return;
      n.core.probeResult(ev.peer, ev.ok, ev.conclusive, ev.id);
      return this.drain(n);
    }
    const n = this.node(ev.to);
    if (!n.core) return;
    let msg: Message | null = ev.msg;
    if (this.onDeliver) msg = this.onDeliver(ev.from, ev.to, msg);
    if (!msg) return;
    this.delivered++;
    n.core.step(ev.from, msg);
    this.drain(n);
  }

  /** Hands a core's ready() to storage, the checkers and the network, in that order. */
  private drain(n: SimNode): void {
    const core = n.core;
    if (!core) return;
    const checkers = this.opts.checkers;
    while (core.hasReady()) {
      const rd = core.ready();
      if (rd.persist && !this.opts.forgetfulStorage) n.stored = rd.persist;
      for (const out of rd.messages) {
        const msg = this.opts.wire ? roundTrip(out.msg) : out.msg;
        checkers.onSend(n.peerId, n.stored, msg);
        if (out.kind === 'direct') this.send(n.peerId, out.to, msg);
        else this.publish(n.peerId, msg);
      }
      for (const action of rd.actions) {
        this.onAction?.(n.peerId, action);
        if (action.kind === 'viewCommitted') checkers.onCommit(n.peerId, action.view);
        else if (action.kind === 'probe') this.probe(n, action.peer, action.id, action.suspected);
        else if (action.kind === 'barrierComplete') checkers.onBarrierComplete(n.peerId, action);
        else if (action.kind === 'lifecycle') {
          checkers.onLifecycle(n.peerId, n.bootId, action);
          if (action.state === 'PAUSED' && action.previous === 'PAUSING' && action.via === 'complete') {
            const view = core.view();
            if (view) checkers.onPaused(n.peerId, action, view, (rank) => this.holderOf(view, rank)?.engine.inflight.length ?? null);
          }
        }
      }
      core.advance();
    }
    checkers.onClaim(n.peerId, n.bootId, core.view(), core.rank());
    checkers.onMask(n.peerId, core.view(), core.maskHex());
  }

  private send(from: string, to: string, msg: Message): void {
    if (!this.nodes.has(to)) return;
    for (const delay of this.network.deliveries(from, to)) this.schedule(this.step + delay, { kind: 'msg', from, to, msg });
  }

  /** A gossip message from `from` to every other node, relayed one hop when gossipRelay is on. */
  private publish(from: string, msg: Message): void {
    const direct = new Map<string, number[]>();
    const relay = this.opts.gossipRelay === true;
    for (const to of this.order) if (to !== from) direct.set(to, relay ? this.retried(from, to) : this.network.deliveries(from, to));
    for (const [to, delays] of direct) {
      for (const delay of delays) this.schedule(this.step + delay, { kind: 'msg', from, to, msg });
      if (delays.length > 0 || !relay) continue;
      // The first live peer (in a fixed order) holding a copy that can reach `to` relays it.
      for (const [via, got] of direct) {
        const first = got[0];
        if (via === to || first === undefined || !this.node(via).core) continue;
        const hop = this.retried(via, to)[0];
        if (hop === undefined) continue;
        this.schedule(this.step + first + hop, { kind: 'msg', from, to, msg });
        break;
      }
    }
  }

  /** One copy over TCP: tried up to TCP_TRIES times, each lost try costing the longest delay. */
  private retried(from: string, to: string): number[] {
    for (let i = 0; i < TCP_TRIES; i++) {
      const delays = this.network.deliveries(from, to);
      if (delays.length > 0) return delays.map((d) => d + i * this.network.faults.delayStepsMax);
    }
    return [];
  }

  /** A probe on suspicion is one ping over TCP; a scheduled one is PROBE_ROUND_TRIPS quick round trips. */
  private probe(n: SimNode, peer: string, id: number, suspected: boolean): void {
    const target = this.nodes.get(peer);
    // The result comes after the first round trip's delay: the simulated delays stand for the
    // whole exchange, which on a live link takes a few milliseconds per round trip.
    let rt = this.network.roundTrip(n.peerId, peer, suspected ? TCP_TRIES : PROBE_TRIES_PER_ROUND_TRIP);
    for (let i = 1; i < (suspected ? 1 : PROBE_ROUND_TRIPS) && rt.ok; i++) {
      rt = { ok: this.network.roundTrip(n.peerId, peer, PROBE_TRIES_PER_ROUND_TRIP).ok, steps: rt.steps };
    }
    // A dead process's host refuses the connection (conclusive); a crashed host, a cut link or
    // a lost packet only lets the probe time out.
    const refused = rt.ok && !!target && !target.core && target.crashedHow === 'process';
    const ok = rt.ok && !!target?.core;
    this.schedule(this.step + rt.steps, { kind: 'probe', node: n.peerId, bootId: n.bootId, peer, id, ok, conclusive: ok || refused });
  }

  private schedule(at: number, ev: Event): void {
    const list = this.queue.get(at);
    if (list) list.push(ev);
    else this.queue.set(at, [ev]);
  }
}

function roundTrip(msg: Message): Message {
  const decoded = decode(encode(msg));
  if (!decoded.ok) throw new Error(`the core sent a message its own decoder rejects: ${decoded.reason}`);
  return decoded.msg;
}
