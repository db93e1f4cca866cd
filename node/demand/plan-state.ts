// The plan this node holds: which rank serves which pipeline, as the newest completed plan
// round decided (computed here when this node is a rank, pulled from a rank otherwise).
// Routing asks ranksFor(pipeline); the rank host asks assignmentOf(meshRank) and listens for
// 'change' to switch pipelines (drain, offload, reload) when its assignment moves.
import { EventEmitter } from 'node:events';
import type { AgreedPlan } from '../../mesh/demand.ts';

export interface PlanRound {
  readonly generation: number;
  readonly epoch: number;
  readonly seq: number;
}

/**
 * Whether `plan` divides the ranks between pipelines: it agreed on open demand and assigns
 * some rank. Otherwise every rank serves every pipeline (routing and the rank groups agree on
 * this one rule).
 */
export function routesByPlan(plan: AgreedPlan | null): plan is AgreedPlan {
  return plan !== null && plan.demand.length > 0 && plan.assignment.some(([, x]) => x !== null);
}

export interface PlanStateEvents {
  /** A newer plan was taken; `previous` is the one it replaced (null for the first). */
  change: [plan: AgreedPlan, previous: AgreedPlan | null];
}

export class PlanState extends EventEmitter<PlanStateEvents> {
  private held: AgreedPlan | null = null;

  /**
   * @param isActive whether a rank is active in this node's current view: a plan of an
   * earlier epoch may still list a rank that has left, and routing must not use it.
   */
  constructor(private readonly isActive: (rank: number) => boolean = () => true) {
    super();
  }

  /** The newest plan, or null before the first plan round this node saw. */
  current(): AgreedPlan | null {
    return this.held;
  }

  /** The round the current plan comes from, or null. */
  get round(): PlanRound | null {
    const p = this.held;
    return p === null ? null : { generation: p.generation, epoch: p.epoch, seq: p.seq };
  }

  /**
   * The active ranks serving `pipeline`, ascending. Null — every active rank serves every
   * pipeline, the behaviour before plans exist — while no plan round has agreed on open
   * demand, or its plan assigns no rank. While some pipeline has demand, one without any gets
   * no rank (an empty list): demand is signalled before requests are sent.
   */
  ranksFor(pipeline: string): readonly number[] | null {
    const p = this.held;
    if (!routesByPlan(p)) return null;
    return p.assignment.filter(([r, x]) => x === pipeline && this.isActive(r)).map(([r]) => r);
  }

  /** The pipeline rank `meshRank` serves in the current plan, or null. */
  assignmentOf(meshRank: number): string | null {
    return this.held?.assignment.find(([r]) => r === meshRank)?.[1] ?? null;
  }

  /** Takes `plan` if it is newer than the held one (the demand service calls this). */
  update(plan: AgreedPlan): boolean {
    const held = this.held;
    if (held !== null && (plan.generation - held.generation || plan.epoch - held.epoch || plan.seq - held.seq) <= 0) return false;
    this.held = plan;
    this.emit('change', plan, held);
    return true;
  }
}
