// The engine interface: what a rank runs. The engine loop (node/engine/loop.ts) calls these
// in lockstep with the other active ranks of the epoch; every collective an engine issues
// goes through the epoch's Communicator, so a step on one rank is matched by a step or a
// dummy step on every other rank.
import type { Communicator } from '../../ffi/comm/communicator.ts';

/** One unit of work for the engine: an inference request already accepted by the mesh. */
export interface EngineRequest {
  readonly id: string;
  readonly pipeline: string;
  /** Input tokens (small non-negative integers for the reference engine). */
  readonly input: readonly number[];
}

export interface EngineResult {
  readonly id: string;
  readonly output: readonly number[];
}

/** Expert placement and counters that a joiner adopts from a healthy member. */
export interface EngineState {
  /** expert index → mesh rank that holds it. */
  readonly placement: readonly number[];
  /** Iterations completed, in lockstep across the active ranks. */
  readonly iteration: number;
}

export interface WarmUpProgress {
  readonly phase: string;
  /** 0..1 */
  readonly fraction: number;
}

export interface Engine {
  /** The expensive part (weights, kernels, graph capture), done alone before serving. */
  warmUp(onProgress?: (p: WarmUpProgress) => void): Promise<void>;
  /**
   * A forward over a batch: one result per request, in batch order. Uses the communicator;
   * every active rank must call step or dummyStep.
   */
  step(batch: readonly EngineRequest[], comm: Communicator): Promise<EngineResult[]>;
  /** Joins the step's collectives with no work, so a rank with an empty queue keeps peers matched. */
  dummyStep(comm: Communicator): Promise<void>;
  /** Frees device memory / drops weights (SUSPEND). */
  offload(): Promise<void>;
  /** Restores what offload freed (RESUME). */
  reload(): Promise<void>;
  /** Final teardown (STOP). */
  teardown(): Promise<void>;
  /** State for a joiner to adopt, and adoption of it. */
  exportState(): EngineState;
  adoptState(state: EngineState): void;
}
