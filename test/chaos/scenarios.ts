// The chaos scenarios, shared by the bun test suite (test/chaos/) and the longer run
// (scripts/chaos.ts). Each one runs while requests flow through every reachable node, injects
// its faults through the NetnsLab or by killing processes, heals, waits for the mesh to
// converge on one full view, and then audits what the nodes recorded (accounting.ts).
// Choices (which nodes to cut or kill) come from a seeded PRNG, so a run can be replayed.
import type { NetnsLab } from '../../scripts/lib/netns.ts';
import {
  agreementViolations,
  minorityViolations,
  requestViolations,
  type Violation,
  viewsBetween,
} from './accounting.ts';
import { type LoadDoor, type LoadSummary, RequestLoad } from './load.ts';
import { chaosToken, type NsCluster, type NsNode, type ViewBody } from './ns-cluster.ts';

export interface ChaosEnv {
  readonly lab: NetnsLab;
  readonly cluster: NsCluster;
  readonly worldSize: number;
  readonly random: () => number;
  /** Progress lines (the script prints them; tests may drop them). */
  readonly log: (line: string) => void;
  /** How long a cut stays after the majority has moved on, so the minority has time to try. */
  readonly holdMs: number;
  /** Bound on each wait for the mesh to react (detection, convergence). */
  readonly reactMs: number;
  /** The nodes' ingressRequestTimeoutMs: an accepted request fails (deadline) by then at worst. */
  readonly ingressRequestTimeoutMs: number;
  /** Where requests enter: the edge (/v1/generate) or each node's rank (/v1/rank/infer). */
  readonly door: LoadDoor;
}

export interface ScenarioReport {
  readonly name: string;
  readonly faults: number;
  readonly durationMs: number;
  readonly requests: LoadSummary;
  readonly violations: Violation[];
}

export type Scenario = (env: ChaosEnv) => Promise<ScenarioReport>;

/** Nodes whose link the harness took down: they cannot be reached, so no requests go there. */
const cutOff = new WeakMap<NsCluster, Set<number>>();

export const scenarios = {
  'split 2|3 and heal': split23,
  'isolate one and heal': isolateOne,
  'one-way loss on one node (100%)': (env) => oneWayLoss(env, 100),
  'one-way loss on one node (97%)': (env) => oneWayLoss(env, 97),
  'one-way loss on one node (60%)': (env) => oneWayLoss(env, 60),
  'kill -9 and restart a rank': killRank,
  'kill -9 and restart two ranks': killTwoRanks,
  'kill -9 and restart a spare': killSpare,
  'flapping link': flappingLink,
  'one-way cut': oneWayCut,
  'PAUSE on the minority side': pauseOnMinority,
  'PAUSE on the majority side': pauseOnMajority,
} satisfies Record<string, Scenario>;

export type ScenarioName = keyof typeof scenarios;

/** The mesh did not settle on one full view in time (a liveness failure, not a harness bug). */
export class NoConvergenceError extends Error {
  override readonly name = 'NoConvergenceError';
}

/** Waits until every running, reachable node holds the same view, full and naming them all. */
export async function waitConverged(env: ChaosEnv, timeoutMs = env.reactMs): Promise<ViewBody> {
  const { cluster } = env;
  let last = '';
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const nodes = reachable(env);
    const views = await Promise.all(nodes.map((n) => cluster.view(n)));
    const first = views[0];
    if (first !== undefined && first !== null) {
      const members = new Set([...first.ranks.filter((r) => r.active).map((r) => r.peerId), ...first.spares.map((s) => s.peerId)]);
      const same = views.every((v) => v !== null && v.generation === first.generation && v.epoch === first.epoch && v.mask === first.mask);
      const full = first.ranks.filter((r) => r.active).length === env.worldSize;
      if (same && full && nodes.every((n) => members.has(n.peerId)) && members.size === nodes.length) return first;
    }
    last = views.map((v, i) => `${nodes[i]!.name}=${v === null || v === undefined ? '-' : `${v.generation}/${v.epoch}:${v.mask}+${v.spares.length}`}`).join(' ');
    last += nodes.filter((_, i) => views[i] === null).map((n) => `\n${n.name} serves no view; its last lines: ${n.logs.slice(-6).map((r) => r.msg).join(' | ')}`).join('');
    if (performance.now() > deadline) throw new NoConvergenceError(`no convergence within ${timeoutMs} ms: ${last}${deadNodes(env)}`);
    await Bun.sleep(100);
  }
}

/** What ended the nodes that are not running, with their last lines, for error messages. */
function deadNodes(env: ChaosEnv): string {
  const dead = env.cluster.nodes.filter((n) => !env.cluster.running(n));
  return dead.map((n) => `\n${n.name} not running (${JSON.stringify(n.exits.at(-1))}): ${n.logs.slice(-5).map((r) => r.msg).join(' | ')}`).join('');
}

/** The running nodes the harness can reach. */
export function reachable(env: ChaosEnv): NsNode[] {
  const cut = cutOff.get(env.cluster) ?? new Set<number>();
  return env.cluster.nodes.filter((n) => env.cluster.running(n) && !cut.has(n.index));
}

// --- scenarios -----------------------------------------------------------------------------

async function split23(env: ChaosEnv): Promise<ScenarioReport> {
  return scenario(env, 'split 2|3 and heal', async (ctx) => {
    const view = ctx.view;
    const ranked = rankedNodes(env, view);
    const minority = pick(env, ranked, 2);
    const majority = env.cluster.nodes.filter((n) => !minority.includes(n) && env.cluster.running(n));
    env.log(`cut ${names(minority)} | ${names(majority)}`);
    env.lab.split(minority.map((n) => n.index), majority.map((n) => n.index));
    ctx.fault(minority.length * majority.length);
    const fromMs = Date.now();
    await ctx.expect('the majority to commit a view without the minority', () => viewsLack(env, majority, minority));
    await Bun.sleep(env.holdMs);
    const toMs = Date.now();
    env.lab.heal();
    ctx.violations.push(...minorityViolations(env.cluster, minority, fromMs, toMs));
  });
}

async function isolateOne(env: ChaosEnv): Promise<ScenarioReport> {
  return scenario(env, 'isolate one and heal', async (ctx) => {
    const [victim] = pick(env, rankedNodes(env, ctx.view), 1) as [NsNode];
    const others = env.cluster.nodes.filter((n) => n !== victim && env.cluster.running(n));
    env.log(`link down: ${victim.name}`);
    markCut(env, victim, true);
    env.lab.linkDown(victim.index);
    ctx.fault();
    const fromMs = Date.now();
    await ctx.expect('the others to commit a view without the isolated node', () => viewsLack(env, others, [victim]));
    await Bun.sleep(env.holdMs);
    const toMs = Date.now();
    env.lab.heal();
    markCut(env, victim, false);
    ctx.violations.push(...minorityViolations(env.cluster, [victim], fromMs, toMs));
  });
}

/**
 * A share of everything one node sends is dropped. The node must be removed, stay out while
 * the loss lasts (no flapping), and no healthy node may be evicted by its failing probes.
 */
async function oneWayLoss(env: ChaosEnv, percent: number): Promise<ScenarioReport> {
  return scenario(env, `one-way loss on one node (${percent}%)`, async (ctx) => {
    const [victim] = pick(env, rankedNodes(env, ctx.view), 1) as [NsNode];
    const healthy = env.cluster.nodes.filter((n) => n !== victim && env.cluster.running(n));
    env.log(`${percent}% loss on everything ${victim.name} sends`);
    env.lab.setLoss(victim.index, percent);
    ctx.fault();
    const fromMs = Date.now();
    try {
      await ctx.expect('the healthy nodes to remove the lossy one', () => viewsLack(env, healthy, [victim]));
    } finally {
      env.log(`   reports since the loss began: ${reportsSince(env, fromMs)}`);
    }
    const removedMs = Date.now();
    // The loss stays on: the node must stay out (not be admitted and removed again).
    await Bun.sleep(env.holdMs * 2);
    const toMs = Date.now();
    env.lab.heal();
    const healthyPeers = new Set(healthy.map((n) => n.peerId));
    for (const observer of healthy) {
      for (const { key, active } of viewsBetween(env.cluster, observer, fromMs, toMs)) {
        const missing = [...healthyPeers].filter((p) => !active.has(p));
        if (missing.length > 0) ctx.violations.push({ invariant: 'healthy-evicted', detail: `${observer.name} committed ${key} without healthy ${missing.join(', ')}` });
      }
      const readmitted = viewsBetween(env.cluster, observer, removedMs, toMs).filter((v) => v.active.has(victim.peerId));
      if (readmitted.length > 0) {
        ctx.violations.push({ invariant: 'flapping', detail: `${observer.name} re-admitted lossy ${victim.name} in ${readmitted.map((v) => v.key).join(', ')} while the loss lasted` });
      }
    }
  });
}

/** Who reported whom (the nodes' 'peer reported' lines) since `fromMs`, for the log. */
function reportsSince(env: ChaosEnv, fromMs: number): string {
  const names = new Map(env.cluster.nodes.map((n) => [n.peerId, n.name]));
  const lines: string[] = [];
  for (const node of env.cluster.nodes) {
    for (const r of node.logs) {
      if (r.msg !== 'peer reported' || r.time < fromMs) continue;
      lines.push(`${node.name}→${names.get(String(r.peer)) ?? String(r.peer)} (${String(r.reason)}, +${r.time - fromMs} ms)`);
    }
  }
  // Failed scheduled probes are logged at debug level only (RANKMESH_LOG_LEVEL=debug shows them here).
  const failed = new Map<string, number>();
  for (const node of env.cluster.nodes) {
    for (const r of node.logs) {
      if (r.msg !== 'probe failed' || r.time < fromMs) continue;
      const pair = `${node.name}→${names.get(String(r.peer)) ?? String(r.peer)}`;
      failed.set(pair, (failed.get(pair) ?? 0) + 1);
    }
  }
  const probes = [...failed].map(([pair, n]) => `${pair} ${n}`).join(', ');
  return `${lines.length === 0 ? 'none' : lines.join(', ')}${probes ? `; failed probes: ${probes}` : ''}`;
}

async function killRank(env: ChaosEnv): Promise<ScenarioReport> {
  return killAndRestart(env, 'kill -9 and restart a rank', (view) => pick(env, rankedNodes(env, view), 1));
}

async function killTwoRanks(env: ChaosEnv): Promise<ScenarioReport> {
  return killAndRestart(env, 'kill -9 and restart two ranks', (view) => pick(env, rankedNodes(env, view), 2));
}

async function killSpare(env: ChaosEnv): Promise<ScenarioReport> {
  return killAndRestart(env, 'kill -9 and restart a spare', (view) => {
    const spares = env.cluster.nodes.filter((n) => view.spares.some((s) => s.peerId === n.peerId));
    if (spares.length === 0) throw new Error('no spare to kill: run with more nodes than worldSize');
    return pick(env, spares, 1);
  });
}

async function flappingLink(env: ChaosEnv, cycles = 4, periodMs = 1500): Promise<ScenarioReport> {
  return scenario(env, 'flapping link', async (ctx) => {
    const [victim] = pick(env, rankedNodes(env, ctx.view), 1) as [NsNode];
    const others = env.cluster.nodes.filter((n) => n !== victim && env.cluster.running(n));
    env.log(`flapping ${victim.name}: ${cycles} × (${periodMs} ms down, ${periodMs} ms up)`);
    const fromMs = Date.now();
    markCut(env, victim, true);
    ctx.fault(await env.lab.flap(victim.index, { cycles, downMs: periodMs, upMs: periodMs }));
    markCut(env, victim, false);
    const toMs = Date.now();
    const otherPeers = new Set(others.map((n) => n.peerId));
    for (const observer of others) {
      for (const { key, active } of viewsBetween(env.cluster, observer, fromMs, toMs)) {
        const missing = [...otherPeers].filter((p) => !active.has(p));
        if (missing.length > 0) ctx.violations.push({ invariant: 'healthy-evicted', detail: `${observer.name} committed ${key} without healthy ${missing.join(', ')}` });
      }
    }
  });
}

async function oneWayCut(env: ChaosEnv): Promise<ScenarioReport> {
  return scenario(env, 'one-way cut', async (ctx) => {
    const [victim] = pick(env, rankedNodes(env, ctx.view), 1) as [NsNode];
    const others = env.cluster.nodes.filter((n) => n !== victim && env.cluster.running(n));
    env.log(`one-way cut: nothing ${victim.name} sends reaches the others`);
    for (const other of others) env.lab.blockPath(victim.index, other.index);
    ctx.fault(others.length);
    const fromMs = Date.now();
    await ctx.expect('the others to remove the node they cannot hear', () => viewsLack(env, others, [victim]));
    await Bun.sleep(env.holdMs);
    const toMs = Date.now();
    env.lab.heal();
    ctx.violations.push(...minorityViolations(env.cluster, [victim], fromMs, toMs));
  });
}

/**
 * PAUSE issued at a node of a 2|3 minority must not complete there, and nobody may reach
 * PAUSED while the cut lasts; after the heal the command may still be applied by the whole
 * mesh (it was issued), and the scenario then UNPAUSEs.
 */
async function pauseOnMinority(env: ChaosEnv): Promise<ScenarioReport> {
  return scenario(env, 'PAUSE on the minority side', async (ctx) => {
    const minority = pick(env, rankedNodes(env, ctx.view), 2);
    const majority = env.cluster.nodes.filter((n) => !minority.includes(n) && env.cluster.running(n));
    env.log(`cut ${names(minority)} | ${names(majority)}; PAUSE at ${minority[0]!.name}`);
    env.lab.split(minority.map((n) => n.index), majority.map((n) => n.index));
    ctx.fault(minority.length * majority.length);
    const watch = watchStates(env, env.cluster.nodes);
    const answer = await control(minority[0]!, 'pause', env.holdMs * 2);
    await ctx.expect('the majority to commit a view without the minority', () => viewsLack(env, majority, minority));
    await Bun.sleep(env.holdMs);
    const paused = watch.stop().filter((s) => s.state === 'PAUSED' || s.state === 'PAUSING');
    env.lab.heal();
    if (answer.status === 200) ctx.violations.push({ invariant: 'minority-advanced', detail: `PAUSE at minority ${minority[0]!.name} completed: ${answer.body}` });
    for (const s of paused.filter((x) => x.state === 'PAUSED')) ctx.violations.push({ invariant: 'minority-advanced', detail: `${s.node} reached PAUSED while the minority's PAUSE could not be agreed` });
    env.log(`   PAUSE at the minority answered ${answer.status}; states seen during the cut: ${describeStates(paused) || 'RUNNING only'}`);
    await waitConverged(env);
    await unpauseAll(env, ctx);
  });
}

/** PAUSE issued at a node of a 2|3 majority must complete there; the minority must not reach PAUSED while cut off. */
async function pauseOnMajority(env: ChaosEnv): Promise<ScenarioReport> {
  return scenario(env, 'PAUSE on the majority side', async (ctx) => {
    const minority = pick(env, rankedNodes(env, ctx.view), 2);
    const majority = env.cluster.nodes.filter((n) => !minority.includes(n) && env.cluster.running(n));
    env.log(`cut ${names(minority)} | ${names(majority)}; PAUSE at ${majority[0]!.name}`);
    env.lab.split(minority.map((n) => n.index), majority.map((n) => n.index));
    ctx.fault(minority.length * majority.length);
    const watch = watchStates(env, minority);
    const answer = await control(majority[0]!, 'pause', env.reactMs);
    await Bun.sleep(env.holdMs);
    const seen = watch.stop();
    env.lab.heal();
    if (answer.status !== 200) ctx.violations.push({ invariant: 'liveness', detail: `PAUSE at majority ${majority[0]!.name} answered ${answer.status}: ${answer.body}` });
    for (const s of seen.filter((x) => x.state === 'PAUSED')) ctx.violations.push({ invariant: 'minority-advanced', detail: `minority ${s.node} reached PAUSED while cut off` });
    env.log(`   PAUSE at the majority answered ${answer.status}`);
    await waitConverged(env);
    await unpauseAll(env, ctx);
  });
}

/**
 * STOP during a 2|3 partition: the majority pauses and stops; the minority cannot stop while
 * cut off. The closed majority keeps gossiping the closed record until the minority holds it
 * too, so after the heal — at once, or (healWithinGrace false) only once the majority has been
 * closed for longer than closedGraceMs — the minority learns the close, and every process exits
 * 0. No majority node may exit before every minority node learned the close. This ends the
 * cluster: run it last.
 */
export async function stopDuringPartition(env: ChaosEnv, options: { healWithinGrace: boolean }): Promise<ScenarioReport> {
  const title = options.healWithinGrace ? 'STOP during a partition, healed at once' : 'STOP during a partition, healed after the grace period';
  return scenario(env, title, async (ctx) => {
    const minority = pick(env, rankedNodes(env, ctx.view), 2);
    const majority = env.cluster.nodes.filter((n) => !minority.includes(n) && env.cluster.running(n));
    env.log(`cut ${names(minority)} | ${names(majority)}; PAUSE then STOP at ${majority[0]!.name}`);
    env.lab.split(minority.map((n) => n.index), majority.map((n) => n.index));
    ctx.fault(minority.length * majority.length);
    const paused = await control(majority[0]!, 'pause', env.reactMs);
    if (paused.status !== 200) ctx.violations.push({ invariant: 'liveness', detail: `PAUSE at majority answered ${paused.status}: ${paused.body}` });
    const stopped = await control(majority[0]!, 'stop', env.reactMs);
    if (stopped.status !== 200) ctx.violations.push({ invariant: 'liveness', detail: `STOP at majority answered ${stopped.status}: ${stopped.body}` });
    if (!options.healWithinGrace) {
      // Past the grace period the majority must still be there, waiting for the minority: a
      // node that left now would leave the minority nobody to learn the close from.
      await ctx.expect('the majority to be closed for longer than closedGraceMs', async () => {
        const closes = await Promise.all(majority.map(closeOf));
        return closes.every((c) => c !== null && c.closedForMs !== null && c.closedForMs > c.graceMs + 1000) || majority.some((n) => !env.cluster.running(n));
      });
      const early = majority.filter((n) => !env.cluster.running(n));
      if (early.length > 0) ctx.violations.push({ invariant: 'liveness', detail: `STOP linger: majority ${names(early)} exited while the minority could not have learned the close` });
      const closes = await Promise.all(majority.map(closeOf));
      const minorityPeers = minority.map((n) => n.peerId);
      for (const [i, close] of closes.entries()) {
        if (close !== null && !minorityPeers.every((p) => close.waitingFor.includes(p))) {
          ctx.violations.push({ invariant: 'liveness', detail: `STOP linger: ${majority[i]!.name} does not wait for the cut-off minority: waitingFor ${JSON.stringify(close.waitingFor)}` });
        }
      }
      env.log(`   closed for over the grace period; the majority waits for ${closes.map((c) => c?.waitingFor.length ?? '-').join(', ')} peer(s)`);
    }
    const minorityGone = minority.filter((n) => !env.cluster.running(n));
    if (minorityGone.length > 0) ctx.violations.push({ invariant: 'minority-advanced', detail: `minority ${names(minorityGone)} exited while cut off from the STOP` });
    env.lab.heal();
    await ctx.expect('every process to exit', async () => env.cluster.nodes.every((n) => !env.cluster.running(n)));
    // Every node that left did so after the minority had learned the close (its log says when).
    const learnedMs = Math.max(...minority.map((n) => n.logs.findLast((r) => r.msg === 'mesh closed')?.time ?? Number.POSITIVE_INFINITY));
    if (!Number.isFinite(learnedMs)) ctx.violations.push({ invariant: 'liveness', detail: `STOP linger: minority ${names(minority)} exited without learning the close` });
    for (const node of majority) {
      const leftMs = node.logs.at(-1)?.time ?? 0;
      if (Number.isFinite(learnedMs) && leftMs < learnedMs) ctx.violations.push({ invariant: 'liveness', detail: `STOP linger: ${node.name} exited ${learnedMs - leftMs} ms before the minority learned the close` });
    }
  }, { converge: false });
}

/** A node's GET /v1/lifecycle/close, or null (not running, unreachable). */
async function closeOf(node: NsNode): Promise<{ state: string; closedForMs: number | null; graceMs: number; waitingFor: string[] } | null> {
  try {
    const res = await fetch(`${node.httpUrl}/v1/lifecycle/close`, { signal: AbortSignal.timeout(1000) });
    return res.ok ? ((await res.json()) as { state: string; closedForMs: number | null; graceMs: number; waitingFor: string[] }) : null;
  } catch {
    return null;
  }
}

// --- the frame every scenario runs in ------------------------------------------------------

interface ScenarioContext {
  readonly view: ViewBody;
  readonly load: RequestLoad;
  readonly violations: Violation[];
  /** Counts faults as they are injected (they count even when the scenario then aborts). */
  fault(count?: number): void;
  /** Waits for a condition the mesh must reach; a miss is a liveness violation and throws. */
  expect(what: string, condition: () => Promise<boolean>): Promise<void>;
}

let loads = 0;
const agreementReported = new WeakMap<NsCluster, Set<string>>();

async function scenario(env: ChaosEnv, name: string, body: (ctx: ScenarioContext) => Promise<void>, options = { converge: true }): Promise<ScenarioReport> {
  const startedMs = performance.now();
  env.log(`== ${name}`);
  let view: ViewBody;
  try {
    view = await waitConverged(env);
  } catch (err) {
    if (!(err instanceof NoConvergenceError)) throw err;
    // A mesh that never settled cannot host the scenario: report that, inject nothing.
    const violations: Violation[] = [{ invariant: 'liveness', detail: `${name}: not started, the mesh had not settled: ${err.message}` }];
    const requests: LoadSummary = { sent: 0, refused: 0, accepted: 0, completed: 0, failed: 0, lost: 0, wrong: 0, redispatched: 0 };
    env.log(`   VIOLATION liveness: ${violations[0]!.detail}`);
    return { name, faults: 0, durationMs: Math.round(performance.now() - startedMs), requests, violations };
  }
  const load = new RequestLoad({
    door: env.door,
    entries: () => reachable(env),
    // Past the nodes' own deadline (then the request must have been reported failed), plus
    // time to ask again after a heal.
    finishDeadlineMs: env.ingressRequestTimeoutMs + 15_000,
    keyPrefix: `chaos-${process.pid}-${++loads}`,
  });
  const violations: Violation[] = [];
  let faults = 0;
  const ctx: ScenarioContext = {
    view,
    load,
    violations,
    fault(count = 1) {
      faults += count;
    },
    async expect(what, condition) {
      const deadline = performance.now() + env.reactMs;
      while (!(await condition())) {
        if (performance.now() > deadline) {
          violations.push({ invariant: 'liveness', detail: `${name}: timed out after ${env.reactMs} ms waiting for ${what}` });
          throw new ScenarioAbort(what);
        }
        await Bun.sleep(100);
      }
    },
  };
  load.start();
  // Requests flow for a moment before the fault, so some are in flight when it hits.
  await Bun.sleep(500);
  try {
    await body(ctx);
    if (options.converge) await waitConverged(env).catch((err: Error) => {
      violations.push({ invariant: 'liveness', detail: `${name}: after the heal, ${err.message}` });
    });
  } catch (err) {
    if (err instanceof NoConvergenceError) violations.push({ invariant: 'liveness', detail: `${name}: ${err.message}` });
    else if (!(err instanceof ScenarioAbort)) throw err;
  } finally {
    env.lab.heal();
    for (const node of env.cluster.nodes) markCut(env, node, false);
  }
  // A moment of healthy traffic after the heal, then every request must have settled.
  await Bun.sleep(500);
  const requests = await load.stop();
  // Agreement is audited over the whole history; a disagreement is reported by the first
  // scenario that sees it, not again by every later one.
  const reported = agreementReported.get(env.cluster) ?? new Set<string>();
  agreementReported.set(env.cluster, reported);
  const disagreements = agreementViolations(env.cluster).filter((v) => !reported.has(v.detail));
  for (const v of disagreements) reported.add(v.detail);
  violations.push(...requestViolations(requests, name), ...disagreements);
  const report = { name, faults, durationMs: Math.round(performance.now() - startedMs), requests, violations };
  env.log(`   ${report.durationMs} ms, ${faults} fault(s), requests ${JSON.stringify(requests)}, violations ${violations.length}`);
  for (const v of violations) env.log(`   VIOLATION ${v.invariant}: ${v.detail}`);
  return report;
}

class ScenarioAbort extends Error {}

async function killAndRestart(env: ChaosEnv, name: string, choose: (view: ViewBody) => NsNode[]): Promise<ScenarioReport> {
  return scenario(env, name, async (ctx) => {
    const victims = choose(ctx.view);
    const others = env.cluster.nodes.filter((n) => !victims.includes(n) && env.cluster.running(n));
    env.log(`kill -9: ${names(victims)}`);
    await Promise.all(victims.map((v) => env.cluster.kill(v, 'SIGKILL')));
    ctx.fault(victims.length);
    await ctx.expect('the survivors to commit a view without the killed', () => viewsLack(env, others, victims));
    env.log(`restart: ${names(victims)}`);
    for (const victim of victims) env.cluster.spawn(victim);
  });
}

/** Issues a lifecycle command at `node` and waits for its answer (the node waits for the target state). */
async function control(node: NsNode, command: 'pause' | 'unpause' | 'stop', timeoutMs: number): Promise<{ status: number; body: string }> {
  try {
    const res = await fetch(`${node.httpUrl}/v1/control/${command}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${chaosToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ timeoutMs }),
      signal: AbortSignal.timeout(timeoutMs + 5000),
    });
    return { status: res.status, body: (await res.text()).slice(0, 300) };
  } catch (err) {
    return { status: 0, body: (err as Error).message };
  }
}

async function lifecycleState(node: NsNode): Promise<string | null> {
  try {
    const res = await fetch(`${node.httpUrl}/v1/lifecycle`, { signal: AbortSignal.timeout(1000) });
    return res.ok ? ((await res.json()) as { state: string }).state : null;
  } catch {
    return null;
  }
}

/** Polls the lifecycle state of `nodes` until stop(); returns every (node, state) seen. */
function watchStates(env: ChaosEnv, nodes: readonly NsNode[]): { stop(): { node: string; state: string }[] } {
  const seen = new Map<string, { node: string; state: string }>();
  let running = true;
  const loop = (async () => {
    while (running) {
      const states = await Promise.all(nodes.map((n) => (env.cluster.running(n) ? lifecycleState(n) : null)));
      states.forEach((state, i) => state !== null && seen.set(`${nodes[i]!.name}/${state}`, { node: nodes[i]!.name, state }));
      await Bun.sleep(100);
    }
  })();
  return {
    stop() {
      running = false;
      void loop;
      return [...seen.values()];
    },
  };
}

function describeStates(states: readonly { node: string; state: string }[]): string {
  return states.map((s) => `${s.node} ${s.state}`).join(', ');
}

/** Brings a paused (or pausing) mesh back to RUNNING everywhere. */
async function unpauseAll(env: ChaosEnv, ctx: ScenarioContext): Promise<void> {
  const nodes = reachable(env);
  const states = await Promise.all(nodes.map(lifecycleState));
  if (states.every((s) => s === 'RUNNING')) return;
  const answer = await control(nodes[0]!, 'unpause', env.reactMs);
  env.log(`   UNPAUSE answered ${answer.status}`);
  await ctx.expect('every node to be RUNNING again', async () => (await Promise.all(nodes.map(lifecycleState))).every((s) => s === 'RUNNING'));
}

// --- helpers -------------------------------------------------------------------------------

/** Whether every node of `observers` serves a view in which none of `absent` takes part. */
async function viewsLack(env: ChaosEnv, observers: readonly NsNode[], absent: readonly NsNode[]): Promise<boolean> {
  const views = await Promise.all(observers.map((n) => env.cluster.view(n)));
  return views.every((v) => {
    if (v === null) return false;
    const present = new Set([...v.ranks.filter((r) => r.active).map((r) => r.peerId), ...v.spares.map((s) => s.peerId)]);
    return absent.every((n) => !present.has(n.peerId));
  });
}

/** Nodes holding an active rank in `view`, in rank order. */
function rankedNodes(env: ChaosEnv, view: ViewBody): NsNode[] {
  const byPeer = new Map(env.cluster.nodes.map((n) => [n.peerId, n]));
  return view.ranks.filter((r) => r.active).map((r) => byPeer.get(r.peerId)).filter((n): n is NsNode => n !== undefined);
}

/** `count` distinct nodes of `from`, drawn with the run's PRNG. */
function pick(env: ChaosEnv, from: readonly NsNode[], count: number): NsNode[] {
  if (from.length < count) throw new Error(`cannot pick ${count} of ${from.length} nodes`);
  const pool = [...from];
  const out: NsNode[] = [];
  for (let i = 0; i < count; i++) out.push(...pool.splice(Math.floor(env.random() * pool.length), 1));
  return out;
}

function markCut(env: ChaosEnv, node: NsNode, cut: boolean): void {
  let set = cutOff.get(env.cluster);
  if (set === undefined) cutOff.set(env.cluster, (set = new Set()));
  if (cut) set.add(node.index);
  else set.delete(node.index);
}

function names(nodes: readonly NsNode[]): string {
  return nodes.map((n) => n.name).join(', ');
}

/** A small seeded PRNG (mulberry32) for the harness's choices. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
