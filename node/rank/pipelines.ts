// Rank groups: which ranks a rank shares its communicator with, and which pipeline they serve.
// With a plan that divides the ranks (routesByPlan), the active ranks assigned to one pipeline
// form that pipeline's group: their own ring, their own join step, that pipeline's model, its
// experts placed across the group. A rank the plan leaves without a pipeline sits in the idle
// group and serves nothing. Without such a plan every active rank is in one group that serves
// every pipeline's requests on the default pipeline's model, as before plans existed.
//
// Every node computes a rank's group from the same two inputs (its committed view and its
// plan), so ranks holding the same plan agree on the groups without talking. Ranks that
// disagree for a moment (one has the next plan round, another not yet) cannot connect a ring
// between them: the group's build key carries the plan round, and a ring only forms among
// ranks whose member lists agree; they retry once the plan reached them.
import type { AgreedPlan } from '../../mesh/demand.ts';
import { routesByPlan } from '../demand/plan-state.ts';

/** What a group serves: every pipeline (no dividing plan), one pipeline, or nothing. */
export type GroupServes = { readonly kind: 'all' } | { readonly kind: 'one'; readonly pipeline: string } | { readonly kind: 'idle' };

export interface RankGroup {
  readonly serves: GroupServes;
  /** The group's mesh ranks (active in the view), ascending; the rank itself included. */
  readonly ranks: readonly number[];
  /**
   * The plan round within the view's epoch that the group comes from: the plan's seq when the
   * plan is of this view's generation and epoch, else 0 (no plan yet in this epoch: the last
   * one carries over). The one group of every rank is round 0 while the plan has never given
   * any rank a pipeline (no demand yet), so ranks connect it without first agreeing on a plan
   * round. Once a plan gave ranks pipelines it keeps them when demand ends (the planner leaves
   * ranks where they are), so the one group after demand is keyed by its round. Never
   * decreases while the view stays, so build keys only grow.
   */
  readonly planRound: number;
  /** The plan's (generation, epoch, seq), or null when this node holds none. */
  readonly round: { readonly generation: number; readonly epoch: number; readonly seq: number } | null;
}

/**
 * Plan rounds per view epoch that build keys tell apart (see buildEpochOf): about eleven days
 * of one round a second within one epoch; later rounds share the last key slot.
 */
export const PLAN_ROUNDS_MAX = 1_000_000;

/** The group of `meshRank` among `activeRanks` (ascending) of the view (generation, epoch) under `plan`. */
export function groupOf(plan: AgreedPlan | null, view: { readonly generation: number; readonly epoch: number }, activeRanks: readonly number[], meshRank: number): RankGroup {
  const round = plan === null ? null : { generation: plan.generation, epoch: plan.epoch, seq: plan.seq };
  const planRound = plan !== null && plan.generation === view.generation && plan.epoch === view.epoch ? Math.min(plan.seq, PLAN_ROUNDS_MAX - 1) : 0;
  const everAssigned = plan?.assignment.some(([, x]) => x !== null) ?? false;
  if (!routesByPlan(plan)) return { serves: { kind: 'all' }, ranks: [...activeRanks], planRound: everAssigned ? planRound : 0, round };
  const assigned = new Map(plan.assignment);
  const mine = assigned.get(meshRank) ?? null;
  const ranks = activeRanks.filter((r) => (assigned.get(r) ?? null) === mine);
  return { serves: mine === null ? { kind: 'idle' } : { kind: 'one', pipeline: mine }, ranks, planRound, round };
}

/** Whether two groups serve the same thing. */
export function sameServes(a: GroupServes, b: GroupServes): boolean {
  return a.kind === b.kind && (a.kind !== 'one' || (b.kind === 'one' && a.pipeline === b.pipeline));
}

/** Whether a group serving `serves` takes a request of `pipeline`. */
export function servesPipeline(serves: GroupServes, pipeline: string): boolean {
  return serves.kind === 'all' || (serves.kind === 'one' && serves.pipeline === pipeline);
}

/** The pipeline whose model the group's engines run: its own, or the default pipeline's. */
export function modelPipelineOf(serves: GroupServes, defaultPipeline: string): string {
  return serves.kind === 'one' ? serves.pipeline : defaultPipeline;
}

/**
 * The build epoch: the view's epoch and the plan round folded into one number, so the rings of
 * each plan round are distinct and a new round never reuses an old key. The data plane's key
 * is buildEpoch × BUILD_ATTEMPTS_MAX + attempt; with both factors (10^6 × 10^3) it stays an
 * exact integer (below 2^53) up to epoch 9 × 10^6.
 */
export function buildEpochOf(viewEpoch: number, planRound: number): number {
  return viewEpoch * PLAN_ROUNDS_MAX + planRound;
}

/** How a group reads in logs and status: "all", "idle" or the pipeline's name. */
export function describeServes(serves: GroupServes): string {
  return serves.kind === 'one' ? serves.pipeline : serves.kind;
}
