/**
 * RawNode: the protocol core of one mesh node, a deterministic state machine in the style
 * of etcd's raft. The driver (the runtime in node/, or the simulator in mesh/sim/) calls
 * tick() every tick, step() for every decoded message and probeResult() for every probe
 * it was asked to make, then collects ready(): it must persist `persist` durably BEFORE it
 * sends `messages` and performs `actions`, and then call advance().
 *
 * The node is in one phase at a time and each phase has its own handlers:
 *   forming  — no view yet: formation of the generation's first view (forming.ts);
 *   member   — holds a rank in the current view with this incarnation;
 *   spare    — listed as a hot spare of the current view;
 *   outsider — knows the view but is not in it (a joiner, or a restarted incarnation
 *              whose old incarnation still holds its rank until a view change removes it);
 *   closed   — the mesh is closed; nothing changes any more.
 */
import { Agreement, type AcceptorState, freshAcceptor, voteCollectors } from './agreement.ts';
import { BarrierError, type BarrierInfo, type BarrierResult, Barriers } from './barrier.ts';
import { type CoreConfig, ConfigError, type ResolvedConfig, resolveConfig } from './config.ts';
import { Formation, type FormCandidate, type FormState, formDigest } from './forming.ts';
import {
  type Command,
  type CommandKind,
  type CommandOutcome,
  CONTROL_APPLIED_MAX,
  CONTROL_COMMANDS_MAX,
  type LifecycleState,
  allowedCommands,
  applyCommand,
  compareCommandIds,
  decodeControl,
  encodeControl,
  isCommandKind,
  isLifecycleState,
  isTransient,
  resolveRound,
} from './lifecycle.ts';
import { type Liveness, Membership, type ReportReason } from './membership.ts';
import { observersOf } from './observers.ts';
import { Prng } from './prng.ts';
import {
  type Change,
  type Incarnation,
  type View,
  activeMask,
  applyChange,
  rankOfPeer,
  changeKey,
  firstView,
  isEmptyChange,
  recordedIncarnation,
  sameIncarnation,
  viewDigest,
  viewProblem,
} from './view.ts';
import { type Body, type HeartbeatLifecycle, LIFECYCLE_APPLIED_IN_HEARTBEAT_MAX, type Message, type Role, WIRE_VERSION } from './wire.ts';

export type { CoreConfig } from './config.ts';
export { BarrierError } from './barrier.ts';
export type { BarrierInfo, BarrierResult } from './barrier.ts';
export type { CommandKind, LifecycleState } from './lifecycle.ts';

/** The name of the barrier that carries control rounds; arrive() refuses it. */
export const CONTROL_BARRIER = 'control';
/** A command not applied this many ticks after this node first saw it is forgotten. */
export const COMMAND_TTL_TICKS = 600;
/** Commands one node holds unapplied at most; more are refused. */
export const PENDING_COMMANDS_MAX = 64;
/** Applied command ids a node remembers (so a late copy is not applied twice). */
const APPLIED_IDS_MAX = 512;
/** Lifecycle transitions lifecycle() reports. */
const TRANSITIONS_KEPT = 32;

export { DECISION_ANNOUNCERS } from './agreement.ts';

/** Bad input to command(): an unknown kind or a malformed id. Nothing changed. */
export class LifecycleError extends Error {
  override name = 'LifecycleError';
}

/** The agreed lifecycle as this node stores it. */
export interface PersistedLifecycle {
  readonly generation: number;
  readonly state: LifecycleState;
  /** Counts agreed state changes within the generation. */
  readonly version: number;
}

/** How this node's lifecycle state last changed. */
export type LifecycleVia =
  /** A control round applied a command. */
  | 'command'
  /** A control round saw every rank done with the transient state. */
  | 'complete'
  /** A control round brought this rank up to the newest version another rank held. */
  | 'sync'
  /** Learned from a member's heartbeat (this node holds no rank). */
  | 'heard'
  /** The mesh closed (STOPPED). */
  | 'closed'
  /** A new generation starts RUNNING. */
  | 'generation'
  /** Restored from storage at start. */
  | 'restore';

export interface LifecycleTransition {
  readonly state: LifecycleState;
  readonly version: number;
  readonly generation: number;
  readonly epoch: number;
  readonly tick: number;
  readonly via: LifecycleVia;
}

/** What lifecycle() reports (the GET /v1/lifecycle body, less timings the driver adds). */
export interface LifecycleInfo {
  readonly generation: number;
  readonly epoch: number;
  readonly state: LifecycleState;
  readonly version: number;
  /** Commands legal in this state. */
  readonly allowed: readonly CommandKind[];
  /** The state waits for every rank's local part. */
  readonly transient: boolean;
  /** This node reported its local part of the transient state done. */
  readonly localDone: boolean;
  /** Commands seen and not yet applied, in application order. */
  readonly pending: readonly Command[];
  /** The last transitions, oldest first. */
  readonly transitions: readonly LifecycleTransition[];
}

/** Everything the node must find again after a restart. */
export interface PersistentState {
  readonly meshId: string;
  /** The generation this node belongs to (or is forming). */
  readonly generation: number;
  /** The last committed view, or null before the first one. */
  readonly view: View | null;
  /** The rank this peer last held, -1 if none: formation and re-admission prefer it. */
  readonly rememberedRank: number;
  /** Acceptor state of the current epoch's agreement. */
  readonly acceptor: AcceptorState | null;
  /** Formation progress while there is no view. */
  readonly form: FormState | null;
  /** The agreed lifecycle; absent in state stored before lifecycles existed (RUNNING). */
  readonly lifecycle?: PersistedLifecycle | null;
}

export type Outbound = { kind: 'gossip'; msg: Message } | { kind: 'direct'; to: string; msg: Message };

export type Action =
  /**
   * Probe `peer` directly (e.g. libp2p ping) and hand the outcome to probeResult() with this
   * `id`. `suspected`: the peer fell silent or lost its connection (not a scheduled probe).
   */
  | { kind: 'probe'; peer: string; id: number; suspected: boolean }
  /** This node started reporting an incarnation (for the log): 'gone' on silence or a refused probe, 'probes' when most of its recent probes failed. */
  | { kind: 'reported'; peerId: string; bootId: string; reason: ReportReason }
  /** A new view was committed (or learned by catch-up). */
  | { kind: 'viewCommitted'; view: View }
  /** The mesh is closed: the driver lingers until closeAcks() waits for nobody (or a bound passes), then exits 0. */
  | { kind: 'closed'; view: View }
  /**
   * This node's lifecycle state changed. Entering PAUSING, SUSPENDING, RESUMING or STOPPING
   * (on a rank), the driver starts the local work and calls localDone(state) when it is done.
   */
  | { kind: 'lifecycle'; state: LifecycleState; previous: LifecycleState; version: number; generation: number; epoch: number; via: LifecycleVia }
  /** A barrier completed here: payloads[i] is the arrival of ranks[i]. Name 'control' is the core's own. */
  | ({ kind: 'barrierComplete' } & BarrierResult)
  /** A view change aborted a barrier still open here; re-run it in the new epoch with a fresh seq. */
  | { kind: 'barrierAborted'; generation: number; epoch: number; name: string; seq: number }
  /** A control round at this rank dropped an illegal command (identically at every rank). */
  | { kind: 'commandDropped'; id: string; command: CommandKind; state: LifecycleState; allowed: readonly CommandKind[]; reason: string };

export interface Ready {
  /** Write durably BEFORE sending `messages` (null: nothing changed). */
  readonly persist: PersistentState | null;
  readonly messages: readonly Outbound[];
  readonly actions: readonly Action[];
}

export type Phase = 'forming' | 'member' | 'spare' | 'outsider' | 'closed';

export interface MemberInfo {
  readonly peerId: string;
  readonly bootId: string;
  readonly role: Role;
  readonly liveness: Liveness;
  readonly ready: boolean;
  readonly lastHeardTick: number;
}

/** The current view as the HTTP API shows it (`GET /v1/view`). */
export interface ViewSummary {
  readonly generation: number;
  readonly epoch: number;
  readonly worldSize: number;
  /** Hex of the active-rank bitset, bit r = rank r. */
  readonly mask: string;
  readonly ranks: readonly { rank: number; peerId: string | null; bootId: string | null; active: boolean }[];
  readonly spares: readonly { peerId: string; bootId: string; ready: boolean }[];
  readonly closed: boolean;
}

/**
 * Who knows that the mesh closed, as a closed node sees it (closeAcks()). A peer counts as
 * acknowledged once a heartbeat of it carried the closed view's (generation, epoch) or a
 * later one: no other view exists for that epoch, so its sender holds the closed record.
 */
export interface CloseAcks {
  readonly generation: number;
  readonly epoch: number;
  /** Peers known to hold the closed view (or to have moved on to a later generation), sorted. */
  readonly acknowledged: readonly string[];
  /**
   * Peers this node knows of in the closed generation that have not shown it: every peer of a
   * view it held in the generation (ranks, spares, members removed before the close) and any
   * other peer heard in the generation (joiners, gateways). Sorted.
   */
  readonly waitingFor: readonly string[];
}

export interface Counters {
  /** Messages of an older generation/epoch, ignored. */
  stale: number;
  /** Messages of a newer generation/epoch, answered by a catch-up request. */
  future: number;
  /** Messages refused, by reason. */
  rejected: Record<string, number>;
}

export class RawNode {
  readonly config: ResolvedConfig;
  private readonly prng: Prng;
  private readonly membership: Membership;
  private now = 0;
  /** Invariant: equals currentView.generation whenever there is a view; only grows. */
  private generation: number;
  /** Invariant: only ever replaced by a view with a higher (generation, epoch). */
  private currentView: View | null = null;
  /** Derived from currentView at install (the digest and mask are read on every message). */
  private currentDigest = 0;
  private currentMaskHex = '0';
  private rememberedRank: number;
  /** The closed view of the previous generation while forming the next one (answers catch-up). */
  private closedView: View | null = null;
  /** Invariant: exactly one of formation (no view) and agreement (open view) is set; neither when closed. */
  private formation: Formation | null = null;
  private agreement: Agreement | null = null;
  private readyFlag = false;
  private closeRequested = false;
  private readonly heartbeatPhase: number;
  private commandCounter = 0;
  private ownChangeKey = '';
  private ownChangeSinceTick = 0;
  private lastFormSendTick = -Infinity;
  private lastCatchupTick = -Infinity;
  /** Peers whose messages were stale, since when (cleared by a current message). */
  private readonly staleSinceTick = new Map<string, number>();
  /** Every peer of every view this node held in generation viewPeersGeneration (closeAcks() waits for them). */
  private readonly viewPeers = new Set<string>();
  private viewPeersGeneration = -1;
  private readonly lastPushTick = new Map<string, number>();
  readonly counters: Counters = { stale: 0, future: 0, rejected: {} };

  // Barriers and the lifecycle.
  /** Barriers of the current epoch; set exactly while this incarnation holds a rank of an open view. */
  private barrierSet: Barriers | null = null;
  /** Invariant: lc.generation === this.generation. */
  private lc: PersistedLifecycle;
  /** The lifecycle was learned as a rank through control rounds (not from hearsay or disk). */
  private lcTrusted = false;
  /** The version whose transient state this node's local part finished (-1: none). */
  private lcDoneVersion = -1;
  private readonly lcTransitions: LifecycleTransition[] = [];
  /** Commands seen and not applied: id → command, first tick seen, whether issued here, last send. */
  private readonly pendingCommands = new Map<string, { command: Command; firstTick: number; own: boolean; lastSentTick: number }>();
  /** Command ids seen applied or dropped (bounded, oldest forgotten first). */
  private readonly appliedIds = new Set<string>();
  private recentApplied: string[] = [];
  /** The last control round this node arrived at in this epoch (0: none yet). */
  private controlSeq = 0;
  /** What this node's last control payload said, so it starts a new round only with news. */
  private lastControlKey = '';
  /** A rank of this epoch announced another lifecycle than ours: run a round to synchronise. */
  private syncWanted = false;

  // Output of the current batch; handed out by ready().
  /** Invariant: set whenever state that PersistentState holds changed since the last ready(). */
  private dirty = false;
  private messages: Outbound[] = [];
  private actions: Action[] = [];
  private handedOut = false;

  constructor(config: CoreConfig, restored?: PersistentState) {
    this.config = resolveConfig(config);
    if (restored && restored.meshId !== this.config.meshId) {
      throw new ConfigError(`stored state is for mesh ${restored.meshId}, this node is configured for ${this.config.meshId}`);
    }
    if (restored?.view && viewProblem(restored.view)) throw new ConfigError(`stored view is invalid: ${viewProblem(restored.view)}`);
    this.prng = new Prng(this.config.seed);
    this.membership = new Membership(this.config);
    this.heartbeatPhase = this.prng.int(0, this.config.heartbeatTicks - 1);
    this.rememberedRank = restored?.rememberedRank ?? -1;
    const view = restored?.view ?? null;
    this.lc = { generation: 0, state: 'RUNNING', version: 0 };
    if (view && !view.closed) {
      this.generation = view.generation;
      this.setView(view);
      const acc = restored?.acceptor;
      const state = acc && acc.generation === view.generation && acc.epoch === view.epoch ? acc : freshAcceptor(view);
      this.agreement = this.newAgreement(view, state);
    } else {
      // No view, or the last one closed: form the next generation.
      this.closedView = view;
      this.generation = Math.max(view ? view.generation + 1 : 1, restored?.generation ?? 1);
      const form = restored?.form;
      this.formation = new Formation(this.config, form && form.generation === this.generation ? form : { generation: this.generation, round: 0, vote: null });
    }
    const stored = restored?.lifecycle;
    const usable = !!stored && stored.generation === this.generation && isLifecycleState(stored.state) && Number.isInteger(stored.version) && stored.version >= 0;
    this.setLifecycle(usable ? stored.state : 'RUNNING', usable ? stored.version : 0, 'restore');
    if (view && !view.closed) this.barrierSet = this.newBarriers(view);
    this.dirty = true;
  }

  // ---- inputs ----

  /** One logical tick. */
  tick(): void {
    this.now++;
    const phase = this.phase();
    // A closed node heartbeats at least as often as closedHeartbeatTicks: those heartbeats are
    // the acknowledgements its lingering peers wait for.
    const every = phase === 'closed' ? this.config.closedHeartbeatTicks : this.config.heartbeatTicks;
    if (this.now % every === this.heartbeatPhase % every) this.gossip(this.heartbeat());
    switch (phase) {
      case 'forming':
        this.tickForming();
        break;
      case 'closed':
        return;
      default:
        this.tickActive();
    }
    this.tickCommands();
    this.barrierSet?.tick(this.now);
    this.pumpControl();
  }

  /** A decoded message; `from` is the sender's PeerId as the transport authenticated it. */
  step(from: string, msg: Message): void {
    if (from === this.config.self) return this.reject('message from this node itself');
    if (msg.meshId !== this.config.meshId) return this.reject('message of another mesh');
    const body = msg.body;
    if (body.type === 'viewReq') return this.pushView(from, true);
    if (body.type === 'viewResp') return this.onViewResp(body.view);
    const myEpoch = this.currentView?.epoch ?? 0;
    const order = compareEpoch(msg.generation, msg.epoch, this.generation, myEpoch);
    if (order !== 0) {
      if (body.type === 'hb' || body.type === 'form') this.membership.touch(from, body.bootId, this.now, msg.generation, msg.epoch);
      if (order < 0) {
        this.counters.stale++;
        return this.pushView(from, false);
      }
      this.counters.future++;
      const phase = this.phase();
      if ((phase === 'forming' || phase === 'closed') && msg.epoch === 0) return this.adoptGeneration(msg.generation);
      return this.requestView(from);
    }
    this.staleSinceTick.delete(from);
    if (this.phase() === 'forming') return this.stepForming(from, msg);
    // A heartbeat of the closed epoch is the sender's acknowledgement of the close (closeAcks()).
    if (this.phase() === 'closed') return body.type === 'hb' ? this.membership.touch(from, body.bootId, this.now, msg.generation, msg.epoch) : undefined;
    this.stepActive(from, msg);
    this.pumpControl();
  }

  /** The result of a probe this node asked for with a {kind: 'probe'} action. */
  /**
   * The driver lost its last connection to `peer`. If the peer is recorded in the view and
   * this node watches it (an active member), it is probed now instead of after suspectTicks
   * of silence; the probe's result decides as usual.
   */
  peerDisconnected(peer: string): void {
    const view = this.currentView;
    if (!view || !this.agreement?.acceptors.has(this.config.self) || peer === this.config.self) return;
    const probe = this.membership.suspectNow(view, peer, this.now);
    if (probe) this.actions.push({ kind: 'probe', ...probe });
  }

  /**
   * The answer to a {kind:'probe'} action. `conclusive` (default true): a failure proves the
   * process gone (connection refused), not merely slow or unreachable (a timeout). `id`: the
   * action's; a result for a probe no longer in flight is ignored (omitted: the one in flight).
   */
  probeResult(peer: string, ok: boolean, conclusive = true, id?: number): void {
    if (!this.currentView) return;
    this.membership.probeResult(this.currentView, peer, ok, this.now, conclusive, id);
    this.announceNewReports();
  }

  /**
   * A {kind:'probe'} action that could not be carried out for a local reason (this node's own
   * stream limit): it says nothing about the peer, so nothing is recorded and the next
   * scheduled probe goes out as usual.
   */
  probeAbandoned(peer: string, id: number): void {
    this.membership.probeAbandoned(peer, id);
  }

  /** This node finished warming up and may be given a rank (announced in heartbeats). */
  markReady(): void {
    this.readyFlag = true;
  }

  /**
   * Leaves a closed mesh for its next generation: this node forms generation g + 1 of a mesh
   * closed at generation g. An operator asks for this explicitly (a new mesh); a closed record
   * alone never starts one. Returns false, changing nothing, unless the current view is closed.
   */
  startNextGeneration(): boolean {
    const view = this.currentView;
    if (!view?.closed) return false;
    this.adoptGeneration(view.generation + 1);
    return true;
  }

  /** Propose closing the mesh; the close commits as a view change like any other. */
  requestClose(): void {
    this.closeRequested = true;
  }

  /**
   * This rank arrives at barrier `name` of the current epoch with `payload` (≤ 1024 UTF-8
   * bytes); `seq` defaults to one past the last seq this node arrived at for `name` in this
   * epoch. Returns the seq. The result comes as a {kind: 'barrierComplete'} action; a view
   * change first aborts it ({kind: 'barrierAborted'}). Throws BarrierError (and changes
   * nothing) when this node holds no rank, on a bad name, payload or seq, on a second
   * arrival, or for the reserved name 'control'.
   */
  arrive(name: string, payload: string, seq?: number): number {
    if (name === CONTROL_BARRIER) throw new BarrierError(`barrier name '${CONTROL_BARRIER}' is reserved for control rounds`);
    const barriers = this.barrierSet;
    if (!barriers) throw new BarrierError(`only a rank of an open view can arrive at a barrier (this node is ${this.phase()})`);
    const s = seq ?? barriers.nextSeq(name);
    barriers.arrive(name, s, payload, this.now);
    return s;
  }

  /**
   * Issues a lifecycle command at this node (member, spare, outsider or forming). It spreads
   * by gossip and is applied by the ranks in a control round; illegal commands are dropped
   * there identically. `id` must be unique in the mesh (1..64 of A-Z a-z 0-9 . _ : + = -);
   * by default the core makes one from this incarnation's bootId and a counter. Returns the
   * id. Throws LifecycleError on an unknown kind or a bad id (nothing changes). Issuing an id
   * already seen changes nothing. The caller waits for lifecycle() to reach its target.
   */
  command(kind: CommandKind, id?: string): string {
    if (!isCommandKind(kind)) throw new LifecycleError(`unknown command ${JSON.stringify(kind)} (one of PAUSE, UNPAUSE, SUSPEND, RESUME, STOP)`);
    const cid = id ?? `${this.config.bootId}.${++this.commandCounter}`;
    if (!/^[A-Za-z0-9._:+=-]{1,64}$/.test(cid)) throw new LifecycleError(`command id must be 1..64 characters of A-Z a-z 0-9 . _ : + = -, got ${JSON.stringify(cid)}`);
    // Peers refuse a command whose default-form id (<bootId>.<n>) names another incarnation
    // (it would take that id from its owner): refuse it here too, rather than hold a command
    // nobody will apply.
    const owner = this.commandIdOwner(cid);
    if (owner !== null && owner !== this.config.self) throw new LifecycleError(`command id ${cid} names another node's incarnation (ids of the form <bootId>.<n> belong to that incarnation); choose another id`);
    if (this.appliedIds.has(cid) || this.pendingCommands.has(cid)) return cid;
    if (this.pendingCommands.size >= PENDING_COMMANDS_MAX) throw new LifecycleError(`${PENDING_COMMANDS_MAX} commands are already waiting to be applied`);
    this.pendingCommands.set(cid, { command: { kind, id: cid }, firstTick: this.now, own: true, lastSentTick: this.now });
    this.gossip({ type: 'cmd', kind, id: cid });
    this.pumpControl();
    return cid;
  }

  /**
   * The driver finished this node's local part of transient state `state` (drained for
   * PAUSING, offloaded for SUSPENDING, reloaded for RESUMING, torn down for STOPPING). Returns
   * false, changing nothing, when `state` is not the current state (the lifecycle moved on).
   */
  localDone(state: LifecycleState): boolean {
    if (state !== this.lc.state || !isTransient(state)) return false;
    this.lcDoneVersion = this.lc.version;
    this.pumpControl();
    return true;
  }

  // ---- outputs ----

  hasReady(): boolean {
    return this.dirty || this.messages.length > 0 || this.actions.length > 0;
  }

  ready(): Ready {
    if (this.handedOut) throw new Error('RawNode.ready() called again before advance()');
    this.handedOut = true;
    const rd: Ready = { persist: this.dirty ? this.snapshot() : null, messages: this.messages, actions: this.actions };
    this.dirty = false;
    this.messages = [];
    this.actions = [];
    return rd;
  }

  /** The driver persisted and sent the last ready(). */
  advance(): void {
    this.handedOut = false;
  }

  // ---- queries ----

  phase(): Phase {
    const view = this.currentView;
    if (!view) return 'forming';
    if (view.closed) return 'closed';
    const mine = recordedIncarnation(view, this.config.self);
    if (mine && mine.bootId === this.config.bootId) return view.ranks.some((h) => h === mine) ? 'member' : 'spare';
    return 'outsider';
  }

  view(): View | null {
    return this.currentView;
  }

  generationNumber(): number {
    return this.generation;
  }

  /** The rank this incarnation holds in the current view, or -1. */
  rank(): number {
    const view = this.currentView;
    if (!view) return -1;
    return view.ranks.findIndex((h) => h?.peerId === this.config.self && h.bootId === this.config.bootId);
  }

  /** Hex encoding of the current view's active-rank mask ("0" without a view). */
  maskHex(): string {
    return this.currentMaskHex;
  }

  members(): MemberInfo[] {
    return [...this.membership.peers.values()]
      .map((p) => ({
        peerId: p.peerId,
        bootId: p.bootId,
        role: p.role,
        liveness: this.membership.liveness(p.peerId, this.now, this.currentView),
        ready: p.ready,
        lastHeardTick: p.lastHeardTick,
      }))
      .sort((a, b) => (a.peerId < b.peerId ? -1 : 1));
  }

  /** The current view for the HTTP API, or null before the first view. */
  summary(): ViewSummary | null {
    const view = this.currentView;
    if (!view) return null;
    const spareReady = (peerId: string, bootId: string) => {
      if (peerId === this.config.self) return bootId === this.config.bootId && this.readyFlag;
      const info = this.membership.peers.get(peerId);
      return !!info && info.bootId === bootId && info.ready;
    };
    return {
      generation: view.generation,
      epoch: view.epoch,
      worldSize: view.worldSize,
      mask: this.currentMaskHex,
      ranks: view.ranks.map((h, rank) => ({ rank, peerId: h?.peerId ?? null, bootId: h?.bootId ?? null, active: h !== null })),
      spares: view.spares.map((s) => ({ peerId: s.peerId, bootId: s.bootId, ready: spareReady(s.peerId, s.bootId) })),
      closed: view.closed,
    };
  }

  /** The agreed lifecycle as this node holds it. */
  lifecycle(): LifecycleInfo {
    return {
      generation: this.lc.generation,
      epoch: this.currentView?.epoch ?? 0,
      state: this.lc.state,
      version: this.lc.version,
      allowed: allowedCommands(this.lc.state),
      transient: isTransient(this.lc.state),
      localDone: isTransient(this.lc.state) && this.lcDoneVersion === this.lc.version,
      pending: this.sortedPending(),
      transitions: [...this.lcTransitions],
    };
  }

  /**
   * While the mesh is closed: which peers of the closed generation are known to hold the
   * closed view and which are not (null when the current view is not closed). A closed node
   * answers a lagging peer's heartbeat with the closed view (catch-up), so the driver keeps it
   * running until `waitingFor` is empty or a bound passes.
   */
  closeAcks(): CloseAcks | null {
    const view = this.currentView;
    if (!view?.closed) return null;
    const known = new Set(this.viewPeers);
    for (const p of this.membership.peers.values()) if (p.generation === view.generation) known.add(p.peerId);
    known.delete(this.config.self);
    const acknowledged: string[] = [];
    const waitingFor: string[] = [];
    for (const peerId of [...known].sort()) {
      const heard = this.membership.peers.get(peerId);
      const holds = heard !== undefined && compareEpoch(heard.generation, heard.epoch, view.generation, view.epoch) >= 0;
      (holds ? acknowledged : waitingFor).push(peerId);
    }
    return { generation: view.generation, epoch: view.epoch, acknowledged, waitingFor };
  }

  /** The lifecycle state alone (cheap: for a driver's per-iteration check). */
  lifecycleState(): LifecycleState {
    return this.lc.state;
  }

  /** Whether `kind` is legal in this node's current state, and if not why (for a 409). */
  checkCommand(kind: CommandKind): CommandOutcome {
    return applyCommand(this.lc.state, kind);
  }

  /** Barriers of the current epoch at this node, open ones first (empty without a rank). */
  barriers(): BarrierInfo[] {
    return this.barrierSet?.list() ?? [];
  }

  /**
   * A key that changes whenever a barrier round opens at this node: the epoch and the count of
   * rounds its barrier set opened (null without a rank). Cheap, for a sampler that would
   * otherwise list every barrier at each tick.
   */
  barrierKey(): string | null {
    if (this.barrierSet === null || this.currentView === null) return null;
    return `${this.currentView.generation}/${this.currentView.epoch}/${this.barrierSet.opened()}`;
  }

  /** Whether a view change is under way (votes seen or a change proposed, not yet decided). */
  pendingChange(): boolean {
    return !!this.agreement?.pending();
  }

  currentTick(): number {
    return this.now;
  }

  // ---- phase: forming ----

  private tickForming(): void {
    const formation = this.formation;
    // A gateway never takes part in formation: it learns the first view by catch-up.
    if (!formation || this.config.role === 'gateway') return;
    const self: FormCandidate = { peerId: this.config.self, bootId: this.config.bootId, rememberedRank: this.rememberedRank };
    const candidates: FormCandidate[] = [self];
    for (const p of this.membership.peers.values()) {
      if (p.role !== 'forming' || p.generation !== this.generation || p.epoch !== 0) continue;
      if (this.membership.isAlive(p.peerId, this.now)) candidates.push(p);
    }
    const result = formation.step(self, candidates, this.now);
    if (result.kind === 'commit') {
      // Tell the others this node's acceptance (it may be the one that completed the value).
      if (formation.state.vote?.value) this.sendForm();
      return this.install(firstView(this.config.meshId, this.generation, result.ranks));
    }
    if (result.kind === 'vote') {
      this.dirty = true;
      // Only a vote (accept or pass) is news: "moved to round r" alone must not read as a pass.
      if (result.state.vote) this.sendForm();
    } else if (this.now - this.lastFormSendTick >= this.config.retransmitTicks && formation.state.vote) {
      this.sendForm();
    }
  }

  private stepForming(from: string, msg: Message): void {
    const body = msg.body;
    if (body.type === 'hb') return this.membership.heard(from, this.now, msg.generation, msg.epoch, body, body.bootId);
    if (body.type === 'form') {
      if (body.worldSize !== this.config.worldSize) return this.reject('formation with another worldSize');
      this.membership.touch(from, body.bootId, this.now, msg.generation, msg.epoch);
      this.formation?.heard(from, { bootId: body.bootId, round: body.round, digest: body.digest });
      return;
    }
    this.reject(`${body.type} while forming`);
  }

  private sendForm(): void {
    const state = this.formation?.state;
    if (!state) return;
    this.lastFormSendTick = this.now;
    const value = state.vote?.value;
    this.gossip({ type: 'form', bootId: this.config.bootId, worldSize: this.config.worldSize, round: state.round, digest: value ? formDigest(value) : null });
  }

  /**
   * A forming peer of a later generation exists, so the mesh closed and restarted: join that
   * formation. Only a forming or closed node does; one holding an open view asks for the
   * view instead and learns of the close first.
   */
  private adoptGeneration(generation: number): void {
    if (generation <= this.generation) return;
    if (this.currentView?.closed) this.closedView = this.currentView;
    this.currentView = null;
    this.agreement = null;
    this.abortBarriers();
    this.generation = generation;
    this.formation = new Formation(this.config, { generation, round: 0, vote: null });
    this.closeRequested = false;
    this.setLifecycle('RUNNING', 0, 'generation');
    this.dirty = true;
  }

  // ---- phases with a view: member, spare, outsider ----

  private tickActive(): void {
    const view = this.currentView;
    const agreement = this.agreement;
    if (!view || !agreement) return;
    let own: Change | null = null;
    if (agreement.acceptors.has(this.config.self)) {
      for (const probe of this.membership.detect(view, this.config.self, this.config.bootId, this.now)) {
        this.actions.push({ kind: 'probe', ...probe });
      }
      this.announceNewReports();
      own = this.settledChange(view);
    }
    agreement.tick(this.now, own);
  }

  /**
   * A new report travels at once, rather than with the next regular heartbeat, when this node
   * is one of the subject's ring observers. A crash is seen by every member connected to the
   * subject, and if all of them announced, each failure would cost n broadcasts before the
   * first vote; the probeObservers observers' reports already reach the report threshold, with
   * every other member's own report adding to it. The others' reports still go out with their
   * regular heartbeats, so a subject whose observers are all gone is removed too, only later.
   */
  private announceNewReports(): void {
    const added = this.membership.takeNewReports();
    if (added.length === 0) return;
    for (const { inc, reason } of added) this.actions.push({ kind: 'reported', peerId: inc.peerId, bootId: inc.bootId, reason });
    const view = this.currentView;
    const self = this.config.self;
    if (!view || added.some(({ inc }) => observersOf(view, inc.peerId, this.config.probeObservers).includes(self))) this.gossip(this.heartbeat());
  }

  /** This node's proposal, once it has stayed the same for settleTicks; null if none. */
  private settledChange(view: View): Change | null {
    const close = this.closeRequested || [...this.membership.peers.values()].some((p) => p.closeRequested && p.epoch === view.epoch && p.generation === view.generation && this.membership.isAlive(p.peerId, this.now));
    const self = { peerId: this.config.self, ...this.heartbeatFields(), heardSinceTick: 0 };
    const change = this.membership.proposal(view, self, close, this.now);
    if (isEmptyChange(change)) {
      this.ownChangeKey = '';
      return null;
    }
    const key = changeKey(change);
    if (key !== this.ownChangeKey) {
      this.ownChangeKey = key;
      this.ownChangeSinceTick = this.now;
    }
    return this.now - this.ownChangeSinceTick >= this.config.settleTicks ? change : null;
  }

  private stepActive(from: string, msg: Message): void {
    const view = this.currentView;
    const agreement = this.agreement;
    if (!view || !agreement) return;
    const body = msg.body;
    switch (body.type) {
      case 'hb': {
        if (body.digest !== this.currentDigest) {
          // No honest node holds another view of this epoch: its process is up, but nothing it
          // says about its role, readiness or other peers can be checked against ours.
          this.reject('heartbeat with another view of this epoch');
          return this.membership.touch(from, body.bootId, this.now, msg.generation, msg.epoch);
        }
        // Same view, so the sender's role is known exactly: a claim it does not hold is forged.
        const forged = heartbeatForgery(view, from, body);
        if (forged) return this.reject(forged);
        if (body.lc && body.role === 'member') this.heardLifecycle(from, view, body.lc);
        return this.membership.heard(from, this.now, msg.generation, msg.epoch, body, body.bootId);
      }
      case 'arrive': {
        if (!this.barrierSet) return this.reject('barrier arrival at a node without a rank');
        // The transport authenticates the PeerId, not the process: a rank whose peer now runs
        // another incarnation is dead, and the new process holds no rank to arrive with.
        const heard = this.membership.peers.get(from)?.bootId;
        const holder = view.ranks.find((h) => h?.peerId === from);
        if (heard !== undefined && holder && heard !== holder.bootId) return this.reject('barrier arrival from a replaced incarnation');
        const refused = this.barrierSet.onArrive(from, body.name, body.seq, body.payload, this.now, body.answer === true);
        return refused ? this.reject(refused) : undefined;
      }
      case 'cmd': {
        // Default ids name their issuer's incarnation (<bootId>.<n>): one naming another
        // node's would take that id from it, and its own command would be dropped as seen.
        const issuer = this.commandIdOwner(body.id);
        if (issuer !== null && issuer !== from) return this.reject('command id of another node');
        // A command applied already is still being re-sent: its issuer missed the news, so
        // the next heartbeats carry its id again.
        if (this.appliedIds.has(body.id)) return this.readvertise(body.id);
        return this.heardCommand({ kind: body.kind, id: body.id });
      }
      case 'vote':
        return agreement.onVote(from, body.ballot, body.change, this.now);
      case 'prepare':
        return agreement.onPrepare(from, body.ballot, this.now);
      case 'promise':
        return agreement.onPromise(from, body.ballot, body.votedBallot, body.voted, this.now);
      case 'accept':
        return agreement.onAccept(from, body.ballot, body.change, this.now);
      case 'decide':
        // Only an acceptor of this epoch can have seen the quorum a decision claims.
        if (!agreement.acceptors.has(from)) return this.reject('decision from a non-acceptor');
        return this.commit(body.change, false);
      case 'form':
        return this.reject('form message after formation');
    }
  }

  /**
   * Whether this node gossips a decision it reached itself. Only acceptors may (the others'
   * announcements would be refused). A fast-round decision is announced by the change's vote
   * collectors (see voteCollectors), the members the fast round's votes were sent to, and the
   * only ones that count them. A classic-round decision, reached when the fast round did not
   * suffice (votes lost, split, or collectors gone), is announced by every acceptor. A member
   * that misses the announcements catches up from the peers it lags (pushView).
   */
  private announcesDecision(view: View, change: Change, ballot: number): boolean {
    const self = this.config.self;
    if (rankOfPeer(view, self) < 0) return false;
    return ballot > 0 || voteCollectors(view, change).includes(self);
  }

  private commit(change: Change, announce: boolean): void {
    const view = this.currentView;
    if (!view || view.closed) return;
    if (announce) this.gossip({ type: 'decide', change });
    this.install(applyChange(view, change));
  }

  // ---- catch-up ----

  /**
   * Asks one peer for its view. At most one request per catchupTicks in all: when a view
   * commits, every peer's next heartbeat looks newer to a node a moment behind, and asking
   * each of them would bring back n copies of the view.
   */
  private requestView(peer: string): void {
    if (this.now - this.lastCatchupTick < this.config.catchupTicks) return;
    this.lastCatchupTick = this.now;
    this.direct(peer, { type: 'viewReq' });
  }

  /** Sends our view to a peer that asked (always) or that we saw lagging (rate-limited). */
  private pushView(peer: string, asked: boolean): void {
    // A node forming a new generation still tells laggards how the last one ended.
    const view = this.currentView ?? this.closedView;
    if (!view) return;
    if (!asked) {
      // Unasked, only to a peer that has lagged for catchupTicks (a peer one decide behind
      // catches up by itself), and then at most once per catchupTicks.
      const since = this.staleSinceTick.get(peer);
      if (since === undefined) {
        this.staleSinceTick.set(peer, this.now);
        return;
      }
      const last = this.lastPushTick.get(peer) ?? -Infinity;
      if (this.now - since < this.config.catchupTicks || this.now - last < this.config.catchupTicks) return;
      this.lastPushTick.set(peer, this.now);
    }
    this.direct(peer, { type: 'viewResp', view });
  }

  private onViewResp(view: View): void {
    if (view.meshId !== this.config.meshId) return this.reject('view of another mesh');
    const problem = viewProblem(view);
    if (problem) return this.reject(`invalid view: ${problem}`);
    const mine = this.currentView;
    const order = compareEpoch(view.generation, view.epoch, this.generation, mine?.epoch ?? 0);
    if (order <= 0) return;
    if (!mine && view.generation < this.generation) return;
    this.install(view);
  }

  // ---- common ----

  private install(view: View): void {
    if (this.currentView) this.membership.noteRemovals(this.currentView, view);
    this.abortBarriers();
    this.setView(view);
    if (view.generation !== this.generation || this.lc.generation !== view.generation) {
      // A new generation starts afresh: RUNNING, and no close asked for in an earlier one.
      if (view.generation !== this.generation) this.closeRequested = false;
      this.generation = view.generation;
      this.setLifecycle('RUNNING', 0, 'generation');
    }
    this.formation = null;
    const rank = this.rank();
    if (rank >= 0) this.rememberedRank = rank;
    this.agreement = view.closed ? null : this.newAgreement(view, freshAcceptor(view));
    this.membership.resetEpoch(this.now);
    this.ownChangeKey = '';
    this.dirty = true;
    this.actions.push({ kind: 'viewCommitted', view });
    if (view.closed) {
      this.setLifecycle('STOPPED', this.lc.version, 'closed');
      this.actions.push({ kind: 'closed', view });
    } else {
      this.barrierSet = this.newBarriers(view);
    }
    // Only ranks propose commands: a node without a rank keeps just those it issued itself.
    if (!this.barrierSet) for (const [id, p] of this.pendingCommands) if (!p.own) this.pendingCommands.delete(id);
  }

  // ---- barriers and the lifecycle ----

  /** Barriers for `view` when this incarnation holds a rank in it, else null. */
  private newBarriers(view: View): Barriers | null {
    const rank = this.rank();
    if (rank < 0 || view.closed) return null;
    this.controlSeq = 0;
    this.lastControlKey = '';
    this.syncWanted = false;
    return new Barriers(view, rank, this.config.retransmitTicks, {
      gossip: (name, seq, payload, answer) => this.gossip({ type: 'arrive', name, seq, payload, ...(answer ? { answer } : {}) }),
      direct: (to, name, seq, payload, answer) => this.direct(to, { type: 'arrive', name, seq, payload, ...(answer ? { answer } : {}) }),
      completed: (result) => this.barrierCompleted(result),
    });
  }

  private abortBarriers(): void {
    const barriers = this.barrierSet;
    if (!barriers) return;
    for (const b of barriers.open()) this.actions.push({ kind: 'barrierAborted', generation: barriers.view.generation, epoch: barriers.view.epoch, name: b.name, seq: b.seq });
    this.barrierSet = null;
  }

  private barrierCompleted(result: BarrierResult): void {
    this.actions.push({ kind: 'barrierComplete', ...result });
    if (result.name === CONTROL_BARRIER) this.controlRoundDone(result);
  }

  /**
   * Arrives at the next control round when there is news for it (commands not yet
   * proposed, the local part of a transient state finished), when another rank started it,
   * or when a rank of this epoch announced another lifecycle in its heartbeat (a view change
   * cut a round short and left the ranks a round apart: the round synchronises them). The
   * previous round must have completed here first.
   */
  private pumpControl(): void {
    const barriers = this.barrierSet;
    if (!barriers || this.lc.state === 'STOPPED') return;
    if (this.controlSeq > 0 && !barriers.completed(CONTROL_BARRIER, this.controlSeq)) return;
    const next = this.controlSeq + 1;
    const done = isTransient(this.lc.state) && this.lcDoneVersion === this.lc.version;
    const commands = this.sortedPending().slice(0, CONTROL_COMMANDS_MAX);
    const key = `${this.lc.version}|${done ? 1 : 0}|${commands.map((c) => c.id).join(',')}`;
    const news = key !== this.lastControlKey && (done || commands.length > 0);
    if (!(this.syncWanted || news || barriers.started(CONTROL_BARRIER, next))) return;
    this.syncWanted = false;
    this.controlSeq = next;
    this.lastControlKey = key;
    const applied = this.recentApplied.slice(-CONTROL_APPLIED_MAX);
    barriers.arrive(CONTROL_BARRIER, next, encodeControl({ version: this.lc.version, state: this.lc.state, trusted: this.lcTrusted, done, commands, applied }), this.now);
  }

  private controlRoundDone(result: BarrierResult): void {
    const payloads = result.payloads.map(decodeControl);
    for (const p of payloads) for (const id of p?.applied ?? []) this.markApplied(id);
    const res = resolveRound(payloads);
    this.lcTrusted = true;
    if (res.kind === 'sync') {
      if (res.version !== this.lc.version || res.state !== this.lc.state) this.setLifecycle(res.state, res.version, 'sync');
      // A sync round consumed nothing: what this rank proposed is news again for the next one.
      this.lastControlKey = '';
      return;
    }
    for (const c of res.applied) this.markApplied(c.id);
    for (const d of res.dropped) {
      this.markApplied(d.command.id);
      this.actions.push({ kind: 'commandDropped', id: d.command.id, command: d.command.kind, state: this.lc.state, allowed: d.allowed, reason: d.reason });
    }
    for (const c of res.carried) this.heardCommand(c);
    if (res.close) this.closeRequested = true;
    if (res.via !== 'none') this.setLifecycle(res.state, res.version, res.via);
  }

  private setLifecycle(state: LifecycleState, version: number, via: LifecycleVia): void {
    const previous = this.lc.state;
    // Versions count again from 0 in a new generation: a local part finished in the last one
    // (same version number, other state) says nothing about this one.
    if (this.lc.generation !== this.generation) this.lcDoneVersion = -1;
    this.lc = { generation: this.generation, state, version };
    this.dirty = true;
    if (via === 'generation' || via === 'heard' || via === 'restore') this.lcTrusted = false;
    const epoch = this.currentView?.epoch ?? 0;
    this.lcTransitions.push({ state, version, generation: this.generation, epoch, tick: this.now, via });
    if (this.lcTransitions.length > TRANSITIONS_KEPT) this.lcTransitions.shift();
    this.actions.push({ kind: 'lifecycle', state, previous, version, generation: this.generation, epoch, via });
  }

  /**
   * A member's heartbeat of this epoch: its applied command ids are applied here too. A node
   * without a rank follows the lifecycle of the lowest-ranked member (one source, so it does
   * not flap while the ranks are a round apart), whatever its own value: what it restored,
   * heard earlier, or held as a rank of an earlier epoch may be a branch the ranks left.
   */
  private heardLifecycle(from: string, view: View, lc: HeartbeatLifecycle): void {
    const rank = rankOfPeer(view, from);
    if (rank < 0) return;
    for (const id of lc.applied) this.markApplied(id);
    if (this.barrierSet) {
      // Ranks within one round of each other differ only until the open round completes here.
      const settled = this.controlSeq === 0 || this.barrierSet.completed(CONTROL_BARRIER, this.controlSeq);
      if (settled && (lc.version !== this.lc.version || lc.state !== this.lc.state)) this.syncWanted = true;
      return;
    }
    if (this.lc.state === 'STOPPED' || lc.state === 'STOPPED') return;
    if (view.ranks.findIndex((h) => h !== null) !== rank) return;
    if (lc.version !== this.lc.version || lc.state !== this.lc.state) this.setLifecycle(lc.state, lc.version, 'heard');
  }

  /**
   * The peer whose incarnation a default-form command id (<bootId>.<n>) names, when that
   * bootId is one this node knows (this node, the view, or a peer heard); else null.
   */
  private commandIdOwner(id: string): string | null {
    const dot = id.lastIndexOf('.');
    if (dot <= 0 || !/^\d+$/.test(id.slice(dot + 1))) return null;
    const bootId = id.slice(0, dot);
    if (bootId === this.config.bootId) return this.config.self;
    const view = this.currentView;
    for (const inc of view ? [...view.ranks, ...view.spares] : []) if (inc?.bootId === bootId) return inc.peerId;
    for (const p of this.membership.peers.values()) if (p.bootId === bootId) return p.peerId;
    return null;
  }

  /** A command heard from a peer or carried by a round: kept only at a rank, which proposes it. */
  private heardCommand(command: Command): void {
    if (!this.barrierSet || this.appliedIds.has(command.id) || this.pendingCommands.has(command.id)) return;
    if (this.pendingCommands.size >= PENDING_COMMANDS_MAX) return this.reject('too many pending commands');
    this.pendingCommands.set(command.id, { command, firstTick: this.now, own: false, lastSentTick: this.now });
  }

  private markApplied(id: string): void {
    this.pendingCommands.delete(id);
    if (this.appliedIds.has(id)) return;
    this.appliedIds.add(id);
    if (this.appliedIds.size > APPLIED_IDS_MAX) {
      const oldest = this.appliedIds.values().next().value;
      if (oldest !== undefined) this.appliedIds.delete(oldest);
    }
    this.recentApplied.push(id);
    if (this.recentApplied.length > LIFECYCLE_APPLIED_IN_HEARTBEAT_MAX) this.recentApplied.shift();
  }

  private readvertise(id: string): void {
    if (this.recentApplied.at(-1) === id) return;
    this.recentApplied = this.recentApplied.filter((x) => x !== id);
    this.recentApplied.push(id);
    if (this.recentApplied.length > LIFECYCLE_APPLIED_IN_HEARTBEAT_MAX) this.recentApplied.shift();
  }

  /** Re-sends this node's own commands until applied; forgets any command after COMMAND_TTL_TICKS. */
  private tickCommands(): void {
    for (const [id, p] of this.pendingCommands) {
      if (this.now - p.firstTick >= COMMAND_TTL_TICKS) {
        this.pendingCommands.delete(id);
        continue;
      }
      if (p.own && this.now - p.lastSentTick >= this.config.retransmitTicks) {
        p.lastSentTick = this.now;
        this.gossip({ type: 'cmd', kind: p.command.kind, id });
      }
    }
  }

  private sortedPending(): Command[] {
    return [...this.pendingCommands.values()].map((p) => p.command).sort((a, b) => compareCommandIds(a.id, b.id));
  }

  private setView(view: View): void {
    if (view.generation !== this.viewPeersGeneration) {
      this.viewPeers.clear();
      this.viewPeersGeneration = view.generation;
    }
    for (const inc of [...view.ranks, ...view.spares]) if (inc) this.viewPeers.add(inc.peerId);
    this.currentView = view;
    this.currentDigest = viewDigest(view);
    this.currentMaskHex = activeMask(view).toHex();
  }

  private newAgreement(view: View, state: AcceptorState): Agreement {
    return new Agreement(this.config, view, this.config.self, state, {
      gossip: (body) => this.gossip(body),
      direct: (to, body) => this.direct(to, body),
      persist: () => {
        this.dirty = true;
      },
      decided: (change, ballot) => this.commit(change, this.announcesDecision(view, change, ballot)),
      jitter: () => this.prng.int(0, this.config.fallbackJitterTicks),
      count: (reason) => this.reject(reason),
    });
  }

  private heartbeatFields() {
    const view = this.currentView;
    const phase = this.phase();
    const role: Role = this.config.role === 'gateway' ? 'gateway' : phase === 'closed' ? (this.rank() >= 0 ? 'member' : 'spare') : phase;
    return {
      bootId: this.config.bootId,
      role,
      ready: this.readyFlag,
      rememberedRank: this.rememberedRank,
      closeRequested: this.closeRequested,
      reports: view && this.agreement?.acceptors.has(this.config.self) ? this.membership.reports() : [],
    };
  }

  private heartbeat(): Body {
    const view = this.currentView;
    const f = this.heartbeatFields();
    const lc = { state: this.lc.state, version: this.lc.version, applied: [...this.recentApplied] };
    return { type: 'hb', ...f, digest: view ? this.currentDigest : 0, lc };
  }

  private envelope(body: Body): Message {
    return { v: WIRE_VERSION, meshId: this.config.meshId, generation: this.generation, epoch: this.currentView?.epoch ?? 0, body };
  }

  private gossip(body: Body): void {
    this.messages.push({ kind: 'gossip', msg: this.envelope(body) });
  }

  private direct(to: string, body: Body): void {
    this.messages.push({ kind: 'direct', to, msg: this.envelope(body) });
  }

  private reject(reason: string): void {
    this.counters.rejected[reason] = (this.counters.rejected[reason] ?? 0) + 1;
  }

  private snapshot(): PersistentState {
    return {
      meshId: this.config.meshId,
      generation: this.generation,
      view: this.currentView ?? this.closedView,
      rememberedRank: this.rememberedRank,
      acceptor: this.agreement?.acceptorState() ?? null,
      form: this.formation?.state ?? null,
      lifecycle: this.lc,
    };
  }
}

/**
 * Why a heartbeat of the receiver's own view is forged, or null. With the same view both ends
 * derive the sender's role from (PeerId, bootId) alone, exactly as the sender's phase() does:
 * a member holds a rank with that incarnation (and remembers that rank), a spare is listed as
 * one, anyone else is an outsider.
 */
export function heartbeatForgery(view: View, from: string, hb: { bootId: string; role: Role; rememberedRank: number }): string | null {
  const rank = view.ranks.findIndex((h) => h?.peerId === from && h.bootId === hb.bootId);
  const spare = view.spares.some((s) => s.peerId === from && s.bootId === hb.bootId);
  const held: Role = rank >= 0 ? 'member' : spare ? 'spare' : 'outsider';
  // A gateway is an outsider that says what it is; it can never claim a rank or a spare place.
  const gateway = held === 'outsider' && hb.role === 'gateway';
  if (hb.role !== held && !gateway) return `heartbeat claims role ${hb.role}, sender is ${held === 'outsider' ? 'an' : 'a'} ${held} of the view`;
  if (held === 'member' && hb.rememberedRank !== rank) return 'heartbeat claims another rank than its sender holds';
  return null;
}

/** Orders (generation, epoch) pairs. */
export function compareEpoch(genA: number, epochA: number, genB: number, epochB: number): number {
  if (genA !== genB) return genA < genB ? -1 : 1;
  if (epochA !== epochB) return epochA < epochB ? -1 : 1;
  return 0;
}

export type { Incarnation, View };
