/**
 * The gap-ratio planner: which rank serves which pipeline. Every node runs this same pure
 * function on the same agreed inputs (a plan round's payloads) and gets the same
 * assignment, so no node owns the plan.
 *
 * It follows rlix's planner (one rank is one unit, so its tensor-parallel factor is 1):
 *   remaining  rem_p   = Σ over open records of max(T − min(done, T), 0)
 *   share      ratio_p = rem_p / Σ rem
 *   target     target_p = max(roundHalfUp(ratio_p · B), 1), B = number of ranks, adjusted
 *                         deterministically so that the targets sum to exactly B
 *   gap        gap_p   = ratio_p − active_p / B
 * Shrink before expand: ranks of pipelines with no remaining work, and ranks above a
 * pipeline's target, are released first; then one activation per iteration gives a free
 * rank to the acceptor with the largest gap / ratio (then gap, then name). Iterations and
 * activations are bounded. Every open pipeline gets at least one rank when ranks ≥ open
 * pipelines; with fewer ranks, pipelines are served in (priority desc, remaining desc, name)
 * order. When no pipeline has remaining work, ranks keep what they serve (nothing to gain
 * from an offload).
 */

/** Ranks a plan handles at most (the view's worldSize bound). */
export const PLAN_RANKS_MAX = 1024;
/** Pipelines one plan weighs at most. */
export const PLAN_PIPELINES_MAX = 256;
/** Bound on planner loop iterations (rlix: 10,000). */
export const PLAN_ITERATIONS_MAX = 10_000;
/** Bound on activations in one plan (rlix: 1,000). */
export const PLAN_ACTIVATIONS_MAX = 1_000;
/** rlix's background-rebalance threshold: share of ranks vs share of remaining work, in points. */
export const REBALANCE_POINTS = 10;
/** Largest remaining work or priority accepted (fits a 31-bit integer). */
export const PLAN_NUMBER_MAX = 2 ** 31 - 1;

const NAME_PATTERN = /^[A-Za-z0-9._:-]{1,64}$/;

/** Bad planner input: nothing was planned. */
export class PlannerError extends Error {
  override name = 'PlannerError';
}

export interface PipelineDemand {
  readonly pipeline: string;
  /** Steps of open demand not yet done (rem_p). */
  readonly remaining: number;
  /** Higher is served first when ranks are scarce, and breaks ties; 0 by default. */
  readonly priority: number;
}

export interface PlanInputs {
  /** The active ranks of the epoch, ascending. */
  readonly ranks: readonly number[];
  readonly demand: readonly PipelineDemand[];
  /** What each rank serves now (rank → pipeline); a rank not listed serves nothing. */
  readonly current: ReadonlyMap<number, string | null>;
}

export interface PlanMove {
  readonly rank: number;
  readonly from: string | null;
  readonly to: string | null;
}

export interface PlanResult {
  /** [rank, pipeline or null] for every rank of the inputs, in rank order. */
  readonly assignment: readonly (readonly [number, string | null])[];
  /** Ranks each served pipeline should hold (pipelines with remaining work only). */
  readonly targets: ReadonlyMap<string, number>;
  /** Releases, in the order they happen (all before any activation). */
  readonly shrinks: readonly PlanMove[];
  /** Activations, in the order they happen. */
  readonly expands: readonly PlanMove[];
  readonly iterations: number;
}

/** Plans the assignment of ranks to pipelines. Throws PlannerError on bad input. */
export function plan(inputs: PlanInputs): PlanResult {
  const problem = planProblem(inputs);
  if (problem) throw new PlannerError(problem);
  const ranks = inputs.ranks;
  const assigned = new Map<number, string | null>();
  for (const r of ranks) assigned.set(r, inputs.current.get(r) ?? null);
  const open = inputs.demand.filter((d) => d.remaining > 0).sort(servingOrder);
  if (open.length === 0 || ranks.length === 0) return result(ranks, assigned, new Map(), [], [], 0);

  // With fewer ranks than open pipelines, the first ones in serving order get one each.
  const eligible = open.slice(0, ranks.length);
  const targets = targetsOf(eligible, ranks.length);
  const total = eligible.reduce((s, d) => s + d.remaining, 0);
  const ratio = new Map(eligible.map((d) => [d.pipeline, d.remaining / total]));
  const shrinks: PlanMove[] = [];
  const expands: PlanMove[] = [];

  // Shrink: ranks of pipelines that are not served, then ranks above target (highest first,
  // so low ranks keep what they hold).
  for (const r of ranks) {
    const p = assigned.get(r) ?? null;
    if (p !== null && !targets.has(p)) release(r);
  }
  for (const d of eligible) {
    const held = ranksOf(assigned, d.pipeline);
    const target = targets.get(d.pipeline) ?? 0;
    for (let i = held.length - 1; i >= target; i--) release(held[i]!);
  }

  // Expand: one activation per iteration, to the acceptor furthest below its share.
  let iterations = 0;
  const active = new Map(eligible.map((d) => [d.pipeline, ranksOf(assigned, d.pipeline).length]));
  while (iterations < PLAN_ITERATIONS_MAX && expands.length < PLAN_ACTIVATIONS_MAX) {
    iterations++;
    const acceptor = pickAcceptor(eligible, targets, active, ratio, ranks.length);
    const free = ranks.find((r) => assigned.get(r) === null);
    if (acceptor === null || free === undefined) break;
    const from = inputs.current.get(free) ?? null;
    assigned.set(free, acceptor);
    active.set(acceptor, (active.get(acceptor) ?? 0) + 1);
    expands.push({ rank: free, from, to: acceptor });
  }
  return result(ranks, assigned, targets, shrinks, expands, iterations);

  function release(rank: number): void {
    const from = assigned.get(rank) ?? null;
    assigned.set(rank, null);
    shrinks.push({ rank, from, to: null });
  }
}

/**
 * Whether the assignment is far enough from the demand to be worth a plan round (rlix's
 * background rebalance): a pipeline with remaining work and no rank while some rank serves
 * a pipeline without work or more than one rank serves one pipeline, or a pipeline whose
 * share of ranks differs from its share of remaining work by more than `points`.
 */
export function rebalanceWanted(ranks: readonly number[], demand: readonly PipelineDemand[], current: ReadonlyMap<number, string | null>, points = REBALANCE_POINTS): boolean {
  if (ranks.length === 0) return false;
  const open = demand.filter((d) => d.remaining > 0).sort(servingOrder).slice(0, ranks.length);
  if (open.length === 0) return false;
  const total = open.reduce((s, d) => s + d.remaining, 0);
  const counts = new Map<string, number>();
  for (const r of ranks) {
    const p = current.get(r) ?? null;
    if (p !== null) counts.set(p, (counts.get(p) ?? 0) + 1);
  }
  for (const d of open) {
    const held = counts.get(d.pipeline) ?? 0;
    if (held === 0) return true;
    if (Math.abs(held / ranks.length - d.remaining / total) * 100 > points) return true;
  }
  // Ranks idle or serving a pipeline without work while others have work.
  const servedOpen = open.reduce((s, d) => s + (counts.get(d.pipeline) ?? 0), 0);
  return servedOpen < ranks.length;
}

/**
 * The largest difference, in points, between a pipeline's share of ranks and its share of
 * remaining work, over the pipelines with remaining work (0 when none has any).
 */
export function shareGapPoints(ranks: readonly number[], demand: readonly PipelineDemand[], assignment: ReadonlyMap<number, string | null>): number {
  const open = demand.filter((d) => d.remaining > 0);
  const total = open.reduce((s, d) => s + d.remaining, 0);
  if (total === 0 || ranks.length === 0) return 0;
  let worst = 0;
  for (const d of open) {
    const held = ranks.filter((r) => assignment.get(r) === d.pipeline).length;
    worst = Math.max(worst, Math.abs(held / ranks.length - d.remaining / total) * 100);
  }
  return worst;
}

/** Why the inputs are unusable, or null. */
export function planProblem(inputs: PlanInputs): string | null {
  const { ranks, demand } = inputs;
  if (ranks.length > PLAN_RANKS_MAX) return `at most ${PLAN_RANKS_MAX} ranks, got ${ranks.length}`;
  for (let i = 0; i < ranks.length; i++) {
    const r = ranks[i]!;
    if (!Number.isInteger(r) || r < 0) return `rank must be a non-negative integer, got ${r}`;
    if (i > 0 && r <= ranks[i - 1]!) return 'ranks must be strictly ascending';
  }
  if (demand.length > PLAN_PIPELINES_MAX) return `at most ${PLAN_PIPELINES_MAX} pipelines, got ${demand.length}`;
  const seen = new Set<string>();
  for (const d of demand) {
    if (!NAME_PATTERN.test(d.pipeline)) return `pipeline name must be 1..64 of A-Z a-z 0-9 . _ : -, got ${JSON.stringify(d.pipeline)}`;
    if (seen.has(d.pipeline)) return `pipeline ${d.pipeline} is listed twice`;
    seen.add(d.pipeline);
    if (!isCount(d.remaining)) return `remaining work of ${d.pipeline} must be an integer in 0..${PLAN_NUMBER_MAX}, got ${d.remaining}`;
    if (!isCount(d.priority)) return `priority of ${d.pipeline} must be an integer in 0..${PLAN_NUMBER_MAX}, got ${d.priority}`;
  }
  return null;
}

/** Serving order under scarcity and for ties: priority desc, remaining desc, name asc. */
export function servingOrder(a: PipelineDemand, b: PipelineDemand): number {
  return b.priority - a.priority || b.remaining - a.remaining || compareNames(a.pipeline, b.pipeline);
}

/**
 * Targets summing to exactly `budget` (≥ eligible.length): rlix's rounded share with a floor
 * of one, then corrected one rank at a time — taken from the target furthest above its exact
 * share (and above one), or given to the one furthest below — ties by name.
 */
function targetsOf(eligible: readonly PipelineDemand[], budget: number): Map<string, number> {
  const total = eligible.reduce((s, d) => s + d.remaining, 0);
  const exact = new Map(eligible.map((d) => [d.pipeline, (d.remaining / total) * budget]));
  const targets = new Map(eligible.map((d) => [d.pipeline, Math.max(Math.floor((exact.get(d.pipeline) ?? 0) + 0.5), 1)]));
  let sum = [...targets.values()].reduce((s, t) => s + t, 0);
  // Each correction moves the sum one step towards the budget: at most `budget + |eligible|` steps.
  while (sum !== budget) {
    const over = sum > budget;
    let pick: string | null = null;
    let pickScore = -Infinity;
    for (const d of eligible) {
      const t = targets.get(d.pipeline)!;
      if (over && t <= 1) continue;
      const score = over ? t - exact.get(d.pipeline)! : exact.get(d.pipeline)! - t;
      // Ties favour the pipeline first in name order: it gains first and loses last.
      const tieWins = pick !== null && (over ? compareNames(d.pipeline, pick) > 0 : compareNames(d.pipeline, pick) < 0);
      if (score > pickScore || (score === pickScore && tieWins)) {
        pick = d.pipeline;
        pickScore = score;
      }
    }
    if (pick === null) break;
    targets.set(pick, targets.get(pick)! + (over ? -1 : 1));
    sum += over ? -1 : 1;
  }
  return targets;
}

function pickAcceptor(eligible: readonly PipelineDemand[], targets: ReadonlyMap<string, number>, active: ReadonlyMap<string, number>, ratio: ReadonlyMap<string, number>, budget: number): string | null {
  let best: { pipeline: string; rel: number; gap: number } | null = null;
  for (const d of eligible) {
    const held = active.get(d.pipeline) ?? 0;
    if (held >= (targets.get(d.pipeline) ?? 0)) continue;
    const share = ratio.get(d.pipeline) ?? 0;
    const gap = share - held / budget;
    const rel = share > 0 ? gap / share : 0;
    if (best === null || rel > best.rel || (rel === best.rel && (gap > best.gap || (gap === best.gap && compareNames(d.pipeline, best.pipeline) < 0)))) {
      best = { pipeline: d.pipeline, rel, gap };
    }
  }
  return best?.pipeline ?? null;
}

function ranksOf(assigned: ReadonlyMap<number, string | null>, pipeline: string): number[] {
  const out: number[] = [];
  for (const [r, p] of assigned) if (p === pipeline) out.push(r);
  return out.sort((a, b) => a - b);
}

function result(ranks: readonly number[], assigned: ReadonlyMap<number, string | null>, targets: ReadonlyMap<string, number>, shrinks: PlanMove[], expands: PlanMove[], iterations: number): PlanResult {
  return { assignment: ranks.map((r) => [r, assigned.get(r) ?? null] as const), targets, shrinks, expands, iterations };
}

function isCount(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= PLAN_NUMBER_MAX;
}

/** Code-unit order, the same on every platform (localeCompare is not). */
function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
