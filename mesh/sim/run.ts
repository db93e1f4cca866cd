/**
 * One simulated run from one seed (TigerBeetle's VOPR is the model). The seed draws the
 * cluster size, worldSize and spares, network faults, partitions, crashes and restarts
 * and tick-rate skew. Safety is checked on every event while faults run; then the run
 * heals the network, restarts all but a minority of crashed members, stops faults and
 * requires every live node to converge on one view within LIVENESS_TICKS_MAX ticks.
 *
 * Lifecycle commands (legal and illegal, duplicates) are issued at random nodes throughout
 * the fault phase while simulated engines take load. After convergence every live node
 * must settle on one stable lifecycle state within LIFECYCLE_TICKS_MAX ticks, and then a
 * sequence of legal commands issued at random nodes must each bring every live node to
 * its target state within LIFECYCLE_TICKS_MAX ticks.
 */
import { type CommandKind, type LifecycleState, isTransient } from '../lifecycle.ts';
import { Prng } from '../prng.ts';
import { LifecycleError } from '../rawnode.ts';
import { quorumSize } from '../quorum.ts';
import { type View, activePeers, viewKey } from '../view.ts';
import { Checkers, SafetyViolation } from './checkers.ts';
import { SimCluster } from './cluster.ts';
import { CALM, type NetworkFaults } from './network.ts';

/** Bound on the ticks from the end of faults to convergence (stated in docs/PROTOCOL.md). */
export const LIVENESS_TICKS_MAX = 500;
/** Bound on the ticks for the lifecycle to settle, and for each legal command to complete, once the mesh converged. */
export const LIFECYCLE_TICKS_MAX = 300;

export interface RunOptions {
  seed: number;
  sizeMin?: number;
  sizeMax?: number;
  /** Route every message through encode/decode. */
  wire?: boolean;
  /** Lines describing the run, for replay output. */
  log?: (line: string) => void;
  /** Called with the cluster when the run ends (debugging and tests). */
  inspect?: (cluster: SimCluster, checkers: Checkers) => void;
}

export interface RunResult {
  seed: number;
  ok: boolean;
  failure?: string;
  size: number;
  worldSize: number;
  faultTicks: number;
  convergeTicks: number;
  commits: number;
  delivered: number;
  /** Commands issued during the run. */
  commands: number;
  /** Lifecycle state changes taken by ranks in control rounds. */
  lifecycleSteps: number;
  /** Slowest settle or legal command after convergence, in ticks. */
  lifecycleTicks: number;
}

export function runSeed(opts: RunOptions): RunResult {
  const prng = new Prng(opts.seed);
  const log = opts.log ?? (() => {});
  const size = drawSize(prng, opts.sizeMin ?? 1, opts.sizeMax ?? 64);
  const spares = Math.min(prng.pick([0, 0, 1, 1, 2, 3]), Math.floor((size - 1) / 2));
  const worldSize = size - spares;
  const peers = Array.from({ length: size }, (_, i) => `P${prng.nextU32().toString(36)}${i}`);
  const faults: NetworkFaults = {
    lossRate: prng.pick([0, 0.02, 0.05, 0.1, 0.2]),
    duplicateRate: prng.pick([0, 0.02, 0.1]),
    delayStepsMax: prng.int(1, 30),
  };
  const faultTicks = size > 24 ? prng.int(60, 150) : prng.int(100, 300);
  const checkers = new Checkers();
  // Half the runs use the default timing, the others a random one.
  const heartbeatTicks = prng.int(1, 3);
  const timing = prng.chance(0.5)
    ? {}
    : {
        heartbeatTicks,
        suspectTicks: prng.int(2 * heartbeatTicks, 2 * heartbeatTicks + 5),
        probeTimeoutTicks: prng.int(1, 4),
        settleTicks: prng.int(1, 3),
        admitStableTicks: prng.int(1, 6),
        fallbackTicks: prng.int(4, 15),
        fallbackJitterTicks: prng.int(0, 12),
        retransmitTicks: prng.int(2, 6),
        reportThresholdMax: prng.int(2, 4),
        formSettleTicks: prng.int(1, 4),
        probeIntervalTicks: prng.int(1, 6),
        probeObservers: prng.int(2, 5),
      };
  const workRate = prng.pick([0, 0.1, 0.3]);
  const commandRate = prng.pick([0, 0.02, 0.05]);
  // Half the runs carry gossip as the real transport does (TCP, relayed by the mesh).
  const gossipRelay = prng.chance(0.5);
  const cluster = new SimCluster({ meshId: 'sim', worldSize, peers, prng, checkers, wire: opts.wire, skewSteps: prng.pick([0, 1, 3]), timing, workRate, gossipRelay });
  cluster.network.faults = faults;
  const result: RunResult = { seed: opts.seed, ok: true, size, worldSize, faultTicks, convergeTicks: -1, commits: 0, delivered: 0, commands: 0, lifecycleSteps: 0, lifecycleTicks: 0 };
  const issued: { kind: CommandKind; id: string }[] = [];
  log(`seed ${opts.seed}: ${size} nodes, worldSize ${worldSize}, loss ${faults.lossRate}, dup ${faults.duplicateRate}, delay ≤ ${faults.delayStepsMax} steps, ${faultTicks} fault ticks, gossip ${gossipRelay ? 'relayed' : 'direct'}, timing ${JSON.stringify(timing)}`);

  try {
    for (const p of peers) cluster.start(p, prng.int(0, 40));
    const faultRate = prng.pick([0, 0.01, 0.03, 0.06]);
    const closeAt = prng.chance(0.04) ? prng.int(20, faultTicks) : -1;
    const restarts = new Map<number, string[]>();
    const heals = new Map<number, () => void>();
    for (let t = 0; t < faultTicks; t++) {
      for (const p of restarts.get(t) ?? []) {
        log(`tick ${t}: restart ${p}`);
        cluster.start(p, prng.int(0, 30));
      }
      heals.get(t)?.();
      if (t === closeAt) {
        const live = cluster.liveNodes();
        if (live.length > 0) {
          const n = prng.pick(live);
          log(`tick ${t}: ${n.peerId} requests close`);
          n.core!.requestClose();
        }
      }
      if (prng.chance(faultRate)) injectFault(t, prng, cluster, peers, restarts, heals, log);
      if (prng.chance(commandRate)) issueRandomCommand(t, prng, cluster, issued, log);
      cluster.runTicks(1);
    }

    // Liveness: heal, stop faults, restart every crashed node; all must converge. Then
    // kill a minority of the converged view's members for good; the rest must converge
    // again on a view without them.
    cluster.network.heal();
    cluster.network.faults = { ...CALM };
    for (const p of peers) if (!cluster.alive(p)) cluster.start(p, 0);
    for (const n of cluster.liveNodes()) n.readyAtTick = 0;
    log(`tick ${faultTicks}: faults stop, every node runs`);
    let core: Set<string> | undefined;
    result.convergeTicks = cluster.runUntil(() => converged(cluster, checkers) === null, LIVENESS_TICKS_MAX);
    if (result.convergeTicks < 0) {
      result.ok = false;
      result.failure = `liveness: no convergence within ${LIVENESS_TICKS_MAX} ticks after faults stopped: ${converged(cluster, checkers)}`;
    } else {
      const view = checkers.latest();
      const actives = view && !view.closed ? activePeers(view) : [];
      const canLose = actives.length === 0 ? 0 : actives.length - quorumSize(actives.length);
      const victims = prng.shuffle(actives).slice(0, prng.int(0, canLose));
      if (victims.length > 0) {
        // Each victim dies, or stays up but cut off from everyone: the majority core must
        // converge without it either way.
        core = new Set(peers);
        for (const p of victims) {
          core.delete(p);
          if (prng.chance(0.5)) cluster.crash(p);
          else cluster.network.split([p], peers.filter((q) => q !== p));
        }
        log(`tick ${faultTicks + result.convergeTicks}: ${victims.join(' ')} die or are cut off for good`);
        const again = cluster.runUntil(() => converged(cluster, checkers, core) === null, LIVENESS_TICKS_MAX);
        if (again < 0) {
          result.ok = false;
          result.failure = `liveness: the majority core did not converge within ${LIVENESS_TICKS_MAX} ticks after losing ${victims.length} member(s): ${converged(cluster, checkers, core)}`;
        }
        result.convergeTicks = Math.max(result.convergeTicks, again);
      }
    }
    if (result.ok) {
      const failure = lifecycleLiveness(prng, cluster, checkers, core, result, log);
      if (failure) {
        result.ok = false;
        result.failure = `liveness: ${failure}`;
      }
    }
  } catch (err) {
    result.ok = false;
    result.failure = err instanceof SafetyViolation ? `safety: ${err.message}` : `crash: ${(err as Error).stack ?? err}`;
  }
  opts.inspect?.(cluster, checkers);
  result.commits = checkers.commits;
  result.delivered = cluster.delivered;
  result.commands = issued.length;
  result.lifecycleSteps = checkers.lifecycleSteps;
  return result;
}

/**
 * Null when every live node (of `core`, if given) holds one lifecycle (generation, state,
 * version), that state is stable, and no node still holds a command not applied; else why not.
 * A closed mesh has nothing left to settle.
 */
export function lifecycleSettled(cluster: SimCluster, checkers: Checkers, core?: ReadonlySet<string>): string | null {
  if (checkers.latest()?.closed) return null;
  const live = cluster.liveNodes().filter((n) => !core || core.has(n.peerId));
  const first = live[0]?.core?.lifecycle();
  if (!first) return null;
  for (const n of live) {
    const lc = n.core!.lifecycle();
    if (lc.generation !== first.generation || lc.state !== first.state || lc.version !== first.version) return `${n.peerId} is ${lc.state} v${lc.version}, ${live[0]!.peerId} is ${first.state} v${first.version}`;
    // A command issued during the faults may still be on its way: it must be applied first.
    if (lc.pending.length > 0) return `${n.peerId} still has ${lc.pending.length} command(s) not applied`;
  }
  if (isTransient(first.state)) return `the mesh is still ${first.state}`;
  return null;
}

/** Every live node (of `core`) is in `state`; else why not. */
function allIn(cluster: SimCluster, state: LifecycleState, core?: ReadonlySet<string>): string | null {
  for (const n of cluster.liveNodes()) {
    if (core && !core.has(n.peerId)) continue;
    const lc = n.core!.lifecycle();
    if (lc.state !== state) return `${n.peerId} is ${lc.state}, not ${state}`;
  }
  return null;
}

/**
 * After convergence: the lifecycle settles, then legal commands issued at random live
 * nodes each complete everywhere within LIFECYCLE_TICKS_MAX. Returns a failure or null.
 */
function lifecycleLiveness(prng: Prng, cluster: SimCluster, checkers: Checkers, core: Set<string> | undefined, result: RunResult, log: (line: string) => void): string | null {
  if (checkers.latest()?.closed) return null;
  const settle = cluster.runUntil(() => lifecycleSettled(cluster, checkers, core) === null, LIFECYCLE_TICKS_MAX);
  if (settle < 0) return `the lifecycle did not settle within ${LIFECYCLE_TICKS_MAX} ticks after convergence: ${lifecycleSettled(cluster, checkers, core)}`;
  result.lifecycleTicks = Math.max(result.lifecycleTicks, settle);
  // A STOP issued during the faults may have closed the mesh while it settled.
  if (checkers.latest()?.closed) return null;
  const live = () => cluster.liveNodes().filter((n) => !core || core.has(n.peerId));
  const start = live()[0]?.core?.lifecycle().state;
  if (!start) return null;
  const plan: [CommandKind, LifecycleState][] = [];
  if (start === 'RUNNING') plan.push(['PAUSE', 'PAUSED']);
  if (start === 'SUSPENDED') plan.push(['RESUME', 'PAUSED']);
  if (prng.chance(0.5)) plan.push(['SUSPEND', 'SUSPENDED'], ['RESUME', 'PAUSED']);
  if (prng.chance(0.05)) plan.push(['STOP', 'STOPPED']);
  else plan.push(['UNPAUSE', 'RUNNING']);
  for (const [kind, target] of plan) {
    const issuer = prng.pick(live());
    const id = issuer.core!.command(kind);
    log(`after convergence: ${kind} (${id}) at ${issuer.peerId}, expecting ${target} everywhere`);
    // A close requested during the faults may still commit now; a closed mesh has no lifecycle left to drive.
    const used = cluster.runUntil(() => !!checkers.latest()?.closed || allIn(cluster, target, core) === null, LIFECYCLE_TICKS_MAX);
    if (checkers.latest()?.closed && target !== 'STOPPED') return null;
    if (used < 0) return `${kind} issued at ${issuer.peerId} did not bring every live node to ${target} within ${LIFECYCLE_TICKS_MAX} ticks: ${allIn(cluster, target, core)}`;
    result.lifecycleTicks = Math.max(result.lifecycleTicks, used);
  }
  return null;
}

const COMMAND_WEIGHTS: readonly CommandKind[] = ['PAUSE', 'PAUSE', 'PAUSE', 'UNPAUSE', 'UNPAUSE', 'SUSPEND', 'SUSPEND', 'RESUME', 'RESUME'];

/** A random command (legal or not) at a random live node; sometimes a duplicate of an earlier id. */
function issueRandomCommand(t: number, prng: Prng, cluster: SimCluster, issued: { kind: CommandKind; id: string }[], log: (line: string) => void): void {
  const live = cluster.liveNodes();
  if (live.length === 0) return;
  const n = prng.pick(live);
  const dup = issued.length > 0 && prng.chance(0.15) ? prng.pick(issued) : null;
  // STOP is rare: it ends the generation, and most runs should keep their mesh.
  const kind = dup?.kind ?? (prng.chance(0.02) ? 'STOP' : prng.pick(COMMAND_WEIGHTS));
  let id: string;
  try {
    id = n.core!.command(kind, dup?.id);
  } catch (err) {
    // A node with PENDING_COMMANDS_MAX commands waiting refuses more; nothing changed.
    if (!(err instanceof LifecycleError)) throw err;
    return log(`tick ${t}: ${n.peerId} refuses ${kind}: ${err.message}`);
  }
  issued.push({ kind, id });
  log(`tick ${t}: ${n.peerId} issues ${kind} (${id}${dup ? ', a duplicate' : ''}) in state ${n.core!.lifecycle().state}`);
}

/**
 * Null when every live node holds the same view, that view holds exactly the live
 * incarnations (as ranks or spares), no rank is free while a spare waits, and no change is
 * under way or about to start anywhere (no vote, no report held); otherwise why not. With
 * `core`, only those nodes count, and the view must hold exactly the core's live
 * incarnations. A closed mesh has converged when every live node that has a view holds it.
 */
export function converged(cluster: SimCluster, checkers: Checkers, core?: ReadonlySet<string>): string | null {
  const live = cluster.liveNodes().filter((n) => !core || core.has(n.peerId));
  if (live.length === 0) return null;
  const latest = checkers.latest();
  if (latest?.closed) {
    // Nodes restarted after the close form the next generation, joined by the others, once
    // worldSize nodes run.
    const forming = live.filter((n) => n.core!.phase() === 'forming' && n.core!.generationNumber() > latest.generation);
    if (forming.length > 0 && live.length >= latest.worldSize) return `${forming.length} nodes are forming generation ${latest.generation + 1}`;
    for (const n of live) {
      const v = n.core!.view();
      if (forming.includes(n)) continue;
      if (!v || viewKey(v) !== viewKey(latest)) return `${n.peerId} has not learned the closed view`;
    }
    return null;
  }
  const first = live[0]!.core!.view();
  if (!first) return `${live[0]!.peerId} has no view`;
  const key = viewKey(first);
  for (const n of live) {
    const v = n.core!.view();
    if (!v || viewKey(v) !== key) return `${n.peerId} holds ${v ? `${v.generation}:${v.epoch}` : 'no view'}, ${live[0]!.peerId} holds ${first.generation}:${first.epoch}`;
  }
  const recorded = [...first.ranks.filter((h) => h !== null), ...first.spares] as NonNullable<View['ranks'][number]>[];
  for (const inc of recorded) {
    const n = cluster.nodes.get(inc.peerId);
    if (!n?.core || n.bootId !== inc.bootId || (core && !core.has(inc.peerId))) return `view ${first.epoch} still records dead incarnation ${inc.peerId}/${inc.bootId}`;
  }
  for (const n of live) {
    if (!recorded.some((inc) => inc.peerId === n.peerId && inc.bootId === n.bootId)) return `${n.peerId}/${n.bootId} is live but not in view ${first.epoch}`;
  }
  if (first.ranks.some((h) => h === null) && first.spares.length > 0) return `view ${first.epoch} has a free rank and a waiting spare`;
  // Quiescent too: a change still being voted on could commit later, and so could one that a
  // report still held against a member would start (a report from the faults is withdrawn
  // once the member is heard or probed again).
  for (const n of live) if (n.core!.pendingChange()) return `${n.peerId} still has a change under way`;
  for (const n of live) {
    const held = n.core!.members().find((m) => m.liveness === 'reported');
    if (held) return `${n.peerId} still reports ${held.peerId}`;
  }
  return null;
}

function drawSize(prng: Prng, lo: number, hi: number): number {
  const r = prng.next();
  const band = r < 0.55 ? [1, 5] : r < 0.85 ? [6, 12] : r < 0.97 ? [13, 32] : [33, 64];
  const a = Math.max(lo, band[0]!);
  const b = Math.min(hi, band[1]!);
  return a <= b ? prng.int(a, b) : prng.int(lo, hi);
}

function injectFault(
  t: number,
  prng: Prng,
  cluster: SimCluster,
  peers: string[],
  restarts: Map<number, string[]>,
  heals: Map<number, () => void>,
  log: (line: string) => void,
): void {
  const net = cluster.network;
  const later = (ticks: number, fn: () => void) => {
    const at = t + ticks;
    const prev = heals.get(at);
    heals.set(at, prev ? () => { prev(); fn(); } : fn);
  };
  const restartAt = (p: string, at: number) => restarts.set(at, [...(restarts.get(at) ?? []), p]);
  const kind = prng.pick(['crash', 'crash', 'crash2', 'split', 'isolate', 'oneway', 'flap', 'restartFast', 'disconnect'] as const);
  // A cut link closes the connections across it, as the runtime's partition hook does.
  const cutBoth = (a: string, b: string) => {
    cluster.disconnect(a, b);
    cluster.disconnect(b, a);
  };
  const live = cluster.liveNodes().map((n) => n.peerId);
  if (live.length === 0) return;
  switch (kind) {
    case 'crash':
    case 'restartFast': {
      const p = prng.pick(live);
      const how = prng.pick(['process', 'host'] as const);
      cluster.crash(p, how);
      const down = kind === 'restartFast' ? prng.int(1, 5) : prng.int(10, 150);
      log(`tick ${t}: crash ${p} (${how}), restart in ${down}`);
      restartAt(p, t + down);
      return;
    }
    case 'crash2': {
      const a = prng.pick(live);
      const b = prng.pick(live);
      cluster.crash(a);
      cluster.crash(b);
      log(`tick ${t}: crash ${a} and ${b} at once`);
      if (prng.chance(0.7)) restartAt(a, t + prng.int(10, 150));
      if (prng.chance(0.7)) restartAt(b, t + prng.int(10, 150));
      return;
    }
    case 'split': {
      const shuffled = prng.shuffle(peers);
      const cut = prng.int(1, Math.max(1, Math.floor(peers.length / 2)));
      const minority = shuffled.slice(0, cut);
      const majority = shuffled.slice(cut);
      net.split(minority, majority);
      for (const a of minority) for (const b of majority) cutBoth(a, b);
      const dur = prng.int(10, 120);
      log(`tick ${t}: split ${minority.join(' ')} | rest for ${dur}`);
      later(dur, () => {
        for (const a of minority) for (const b of majority) { net.unblock(a, b); net.unblock(b, a); }
      });
      return;
    }
    case 'isolate': {
      const p = prng.pick(peers);
      const rest = peers.filter((x) => x !== p);
      net.split([p], rest);
      for (const b of rest) cutBoth(p, b);
      const dur = prng.int(10, 120);
      log(`tick ${t}: isolate ${p} for ${dur}`);
      later(dur, () => {
        for (const b of rest) { net.unblock(p, b); net.unblock(b, p); }
      });
      return;
    }
    case 'oneway': {
      const p = prng.pick(peers);
      const egress = prng.chance(0.5);
      (egress ? net.egressLoss : net.ingressLoss).set(p, 0.8);
      const dur = prng.int(20, 150);
      log(`tick ${t}: 80% ${egress ? 'egress' : 'ingress'} loss on ${p} for ${dur}`);
      later(dur, () => (egress ? net.egressLoss : net.ingressLoss).delete(p));
      return;
    }
    case 'flap': {
      if (peers.length < 2) return;
      const a = prng.pick(peers);
      const b = prng.pick(peers.filter((x) => x !== a));
      const period = prng.int(2, 15);
      const flips = prng.int(2, 12);
      log(`tick ${t}: flap link ${a}-${b} every ${period} ticks, ${flips} times`);
      for (let i = 0; i < flips; i++) {
        later(i * period + 1, () => {
          if (i % 2 === 0) { net.block(a, b); net.block(b, a); cutBoth(a, b); } else { net.unblock(a, b); net.unblock(b, a); }
        });
      }
      later(flips * period + 1, () => { net.unblock(a, b); net.unblock(b, a); });
      return;
    }
    case 'disconnect': {
      // A connection drops between two live, reachable peers: each probes the other, the
      // probe answers, and nobody may be removed for it.
      if (live.length < 2) return;
      const a = prng.pick(live);
      const b = prng.pick(live.filter((x) => x !== a));
      log(`tick ${t}: connection ${a}-${b} drops (both alive)`);
      cutBoth(a, b);
      return;
    }
  }
}
