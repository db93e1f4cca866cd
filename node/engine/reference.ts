// The reference engine: a small mixture-of-experts model (see experts.ts) whose weights
// come from a seed. Experts are spread over the active ranks and every step is
// expert-parallel and lockstep across them:
//   1. all-gather [token count, iteration] of every rank (a dummy step sends count 0);
//   2. all-gather every rank's tokens (padded to the largest count);
//   3. each rank runs its own experts on the tokens routed to them, zeros elsewhere;
//   4. sum all-reduce of the expert outputs; each rank reads its own rows.
// Each row's expert output comes from exactly one rank and the others add zeros, so the
// sum is exact and a request's output does not depend on how many ranks there are or where
// the experts sit.
//
// The engine serves one pipeline's model at a time (weights.ts pipelineSeed: the default
// pipeline's model is the configured seed's). Every request of a step runs on that model,
// whatever pipeline it names: which requests reach which engine is the rank host's business
// (with a plan, only those of the pipeline the rank serves). servePipeline() swaps the model
// for real: the weights of the old one are dropped and the new one's built and loaded.
import type { Communicator } from '../../ffi/comm/communicator.ts';
import type { Engine, EngineRequest, EngineResult, EngineState, WarmUpProgress } from './engine.ts';
import type { ExpertBackend } from './experts.ts';
import { createCpuExpertBackend } from './cpu-experts.ts';
import { expertsOf, placeExperts } from './placement.ts';
import { checkModelConfig, DEFAULT_PIPELINE, defaultModelConfig, embedding, expertWeights, type ModelConfig, pipelineSeed, router } from './weights.ts';

export interface ReferenceEngineOptions {
  /** The model shape and the seed of the default pipeline's weights. */
  readonly model?: Partial<ModelConfig>;
  /** The pipeline whose model warm-up loads. Default: the default pipeline. */
  readonly pipeline?: string;
  /** Makes the backend that runs this rank's experts. Default: the CPU backend. */
  readonly expertBackend?: () => ExpertBackend;
  /** The mask warm-up places experts for; a node warming up alone passes [its own rank]. */
  readonly initialMeshRanks?: readonly number[];
  /** This node's mesh rank during warm-up (which experts it loads). Default: initialMeshRanks[0]. */
  readonly meshRank?: number;
  /** Warm-up takes at least this long (tests use it to model a slow warm-up). Default 0. */
  readonly warmUpMs?: number;
  /** Deadline for each collective a step issues. Default 30000. */
  readonly collectiveDeadlineMs?: number;
  /** Largest number of tokens in one request. Default 4096. */
  readonly requestTokensMax?: number;
}

/** A request the engine cannot run (bad tokens, too large); nothing was changed. */
export class EngineInputError extends Error {
  override readonly name = 'EngineInputError';
}

/** The engine was called in a state that does not allow it (not warmed up, offloaded...). */
export class EngineStateError extends Error {
  override readonly name = 'EngineStateError';
}

/** Ranks disagree on the step they are in: lockstep was lost. */
export class EngineDesyncError extends Error {
  override readonly name = 'EngineDesyncError';
}

export type ReferenceEngineStatus = 'cold' | 'warming' | 'ready' | 'offloaded' | 'torn-down';

export function createReferenceEngine(options: ReferenceEngineOptions = {}): ReferenceEngine {
  return new ReferenceEngine(options);
}

export class ReferenceEngine implements Engine {
  /** The configured model: its seed is the default pipeline's. */
  private readonly base: ModelConfig;
  private model_: ModelConfig;
  private pipeline_: string;
  private readonly backend: ExpertBackend;
  private readonly warmUpMs: number;
  private readonly deadlineMs: number;
  private readonly requestTokensMax: number;
  private status_: ReferenceEngineStatus = 'cold';
  private emb: Float32Array | null = null;
  private routes: Int32Array | null = null;
  private placement: number[];
  /** The mask `placement` was computed for; null after adoptState (recomputed on the next step). */
  private placedFor: number[] | null;
  /** Which mesh rank's experts the backend holds, and which ones. */
  private loaded: { meshRank: number; experts: number[] } | null = null;
  /** The mesh rank whose experts were loaded last (kept across offload). */
  private heldFor: number;
  private iteration = 0;
  /** The communicator of the previous step: the first step on a new one re-agrees the iteration. */
  private lastComm: Communicator | null = null;

  constructor(options: ReferenceEngineOptions = {}) {
    this.base = { ...defaultModelConfig, ...options.model };
    checkModelConfig(this.base);
    this.pipeline_ = options.pipeline ?? DEFAULT_PIPELINE;
    this.model_ = this.modelFor(this.pipeline_);
    this.backend = (options.expertBackend ?? createCpuExpertBackend)();
    this.warmUpMs = options.warmUpMs ?? 0;
    this.deadlineMs = options.collectiveDeadlineMs ?? 30_000;
    this.requestTokensMax = options.requestTokensMax ?? 4096;
    const initial = [...(options.initialMeshRanks ?? [options.meshRank ?? 0])];
    this.placement = placeExperts(this.model_.experts, initial);
    this.placedFor = initial;
    this.heldFor = options.meshRank ?? initial[0]!;
  }

  get status(): ReferenceEngineStatus {
    return this.status_;
  }

  /** The model served now: the served pipeline's. */
  get model(): ModelConfig {
    return this.model_;
  }

  /** The pipeline whose model is served now. */
  get pipeline(): string {
    return this.pipeline_;
  }

  /** The model of `pipeline`: the configured shape, with the pipeline's seed. */
  modelFor(pipeline: string): ModelConfig {
    return { ...this.base, seed: pipelineSeed(this.base.seed, pipeline) };
  }

  /**
   * Serves `pipeline`'s model from now on. Ready: drops the old model's weights, builds and
   * loads the new one's (the real work of a switch). Offloaded or cold: only records the
   * choice, which reload or warm-up then loads. No step may run meanwhile (the rank host's
   * loop is stopped during a switch). A failure leaves the engine offloaded on the new model.
   */
  async servePipeline(pipeline: string): Promise<void> {
    if (pipeline === this.pipeline_) return;
    if (this.status_ === 'warming' || this.status_ === 'torn-down') throw new EngineStateError(`servePipeline in state ${this.status_}`);
    const wasReady = this.status_ === 'ready';
    if (wasReady) await this.offload();
    this.pipeline_ = pipeline;
    this.model_ = this.modelFor(pipeline);
    if (wasReady) await this.reload();
  }

  /** Why `req` cannot run, or null if it can. The engine loop checks this on submission. */
  validateRequest(req: EngineRequest): string | null {
    if (!Array.isArray(req.input)) return 'input must be an array of tokens';
    if (req.input.length === 0) return 'input is empty';
    if (req.input.length > this.requestTokensMax) return `input has ${req.input.length} tokens, the limit is ${this.requestTokensMax}`;
    for (const t of req.input) {
      if (!Number.isInteger(t) || t < 0 || t >= this.model_.vocab) return `token ${String(t)} is not in 0..${this.model_.vocab - 1}`;
    }
    return null;
  }

  async warmUp(onProgress?: (p: WarmUpProgress) => void): Promise<void> {
    if (this.status_ !== 'cold') throw new EngineStateError(`warmUp in state ${this.status_}`);
    this.status_ = 'warming';
    const started = performance.now();
    const report = (phase: string, fraction: number) => onProgress?.({ phase, fraction: Math.min(1, Math.max(0, fraction)) });
    report('embedding', 0);
    await this.buildShared((f) => report('routing table', 0.1 + 0.4 * f));
    report('experts', 0.5);
    await this.loadExperts(this.heldFor);
    report('experts', 0.9);
    // The configured minimum: a real model's warm-up (weight load, graph capture) takes time
    // that tests model with this; progress keeps being reported meanwhile.
    for (;;) {
      const elapsed = performance.now() - started;
      if (elapsed >= this.warmUpMs) break;
      report('settling', 0.9 + (0.1 * elapsed) / this.warmUpMs);
      await Bun.sleep(Math.min(50, this.warmUpMs - elapsed));
    }
    this.status_ = 'ready';
    report('ready', 1);
  }

  step(batch: readonly EngineRequest[], comm: Communicator): Promise<EngineResult[]> {
    for (const req of batch) {
      const why = this.validateRequest(req);
      if (why) return Promise.reject(new EngineInputError(`request ${req.id}: ${why}`));
    }
    return this.forward(batch, comm);
  }

  async dummyStep(comm: Communicator): Promise<void> {
    await this.forward([], comm);
  }

  async offload(): Promise<void> {
    if (this.status_ !== 'ready') throw new EngineStateError(`offload in state ${this.status_}`);
    await this.backend.unload();
    this.emb = null;
    this.routes = null;
    this.loaded = null;
    this.status_ = 'offloaded';
  }

  async reload(): Promise<void> {
    if (this.status_ !== 'offloaded') throw new EngineStateError(`reload in state ${this.status_}`);
    await this.buildShared(() => {});
    // The experts come back for the rank that held them; a new mask is applied on the next step.
    await this.loadExperts(this.heldFor);
    this.status_ = 'ready';
  }

  async teardown(): Promise<void> {
    if (this.status_ === 'torn-down') return;
    await this.backend.unload();
    this.emb = null;
    this.routes = null;
    this.loaded = null;
    this.status_ = 'torn-down';
  }

  exportState(): EngineState {
    return { placement: [...this.placement], iteration: this.iteration };
  }

  adoptState(state: EngineState): void {
    const e = this.model_.experts;
    if (!Array.isArray(state.placement) || state.placement.length !== e || !state.placement.every((r) => Number.isInteger(r) && r >= 0)) {
      throw new EngineInputError(`adoptState: placement must list a mesh rank for each of ${e} experts`);
    }
    if (!Number.isInteger(state.iteration) || state.iteration < 0) throw new EngineInputError(`adoptState: bad iteration ${state.iteration}`);
    this.placement = [...state.placement];
    this.placedFor = null;
    this.iteration = state.iteration;
  }

  /** The step and dummy step in one: an empty batch still joins every collective. */
  private async forward(batch: readonly EngineRequest[], comm: Communicator): Promise<EngineResult[]> {
    if (this.status_ !== 'ready') throw new EngineStateError(`step in state ${this.status_}`);
    const { hidden: d, vocab, experts: E } = this.model_;
    const tokens: number[] = [];
    for (const req of batch) for (const t of req.input) tokens.push(t);
    const opts = { deadlineMs: this.deadlineMs };

    // 1. Who brings how many tokens, and is everyone in the same iteration? The first step
    // on a new communicator also agrees on the placement and the iteration: every rank
    // sends its own, and all adopt those of the lowest rank among the furthest along (a
    // rank that warmed up alone, or missed the end of an aborted step, catches up here).
    const fresh = comm !== this.lastComm;
    this.lastComm = comm;
    const width = fresh ? 2 + E : 2;
    const own = new Int32Array(width);
    own[0] = tokens.length;
    own[1] = this.iteration;
    if (fresh) own.set(this.placement, 2);
    const header = await comm.allGather(own, opts);
    const counts: number[] = [];
    let source = 0;
    for (let r = 0; r < comm.size; r++) {
      counts.push(header[r * width]!);
      const it = header[r * width + 1]!;
      if (!fresh && it !== this.iteration) throw new EngineDesyncError(`rank ${r} is at iteration ${it}, this rank at ${this.iteration}`);
      if (it > header[source * width + 1]!) source = r;
    }
    this.iteration = header[source * width + 1]! + 1;
    if (fresh) {
      const agreed = Array.from(header.subarray(source * width + 2, source * width + 2 + E));
      this.placement = placeExperts(E, comm.meshRanks, agreed);
      this.placedFor = [...comm.meshRanks];
    }
    await this.applyView(comm.meshRanks, comm.meshRanks[comm.rank]!);
    const maxCount = Math.max(...counts);
    const total = counts.reduce((a, b) => a + b, 0);
    if (total === 0) return [];

    // 2. Every rank's tokens, rank-major; rows of rank r start at rowStart[r].
    const padded = new Int32Array(maxCount).fill(-1);
    padded.set(tokens);
    const gathered = await comm.allGather(padded, opts);
    const rowStart: number[] = [];
    const rowToken = new Int32Array(total);
    let row = 0;
    for (let r = 0; r < comm.size; r++) {
      rowStart.push(row);
      for (let i = 0; i < counts[r]!; i++) rowToken[row++] = gathered[r * maxCount + i]!;
    }

    // 3. This rank's experts on the rows routed to them.
    const emb = this.emb!;
    const routes = this.routes!;
    const partial = new Float32Array(total * d);
    for (const e of this.loaded!.experts) {
      const rows: number[] = [];
      for (let i = 0; i < total; i++) if (routes[rowToken[i]!] === e) rows.push(i);
      if (rows.length === 0) continue;
      const x = new Float32Array(rows.length * d);
      rows.forEach((i, k) => x.set(emb.subarray(rowToken[i]! * d, rowToken[i]! * d + d), k * d));
      const y = await this.backend.forward(e, x, rows.length);
      rows.forEach((i, k) => partial.set(y.subarray(k * d, k * d + d), i * d));
    }

    // 4. Exact sum across ranks, then this rank's rows: y = x + expert(x), out = argmax(y · emb).
    const summed = await comm.allReduce(partial, 'sum', opts);
    const results: EngineResult[] = [];
    const y = new Float32Array(d);
    let mine = rowStart[comm.rank]!;
    for (const req of batch) {
      const output: number[] = [];
      for (const t of req.input) {
        for (let k = 0; k < d; k++) y[k] = emb[t * d + k]! + summed[mine * d + k]!;
        output.push(argmaxLogit(y, emb, vocab, d));
        mine++;
      }
      results.push({ id: req.id, output });
    }
    return results;
  }

  /** Recomputes the placement when the mask changed, and loads this rank's experts. */
  private async applyView(meshRanks: readonly number[], self: number): Promise<void> {
    if (!this.placedFor || !sameRanks(this.placedFor, meshRanks)) {
      this.placement = placeExperts(this.model_.experts, meshRanks, this.placement);
      this.placedFor = [...meshRanks];
    }
    const want = expertsOf(this.placement, self);
    if (!this.loaded || this.loaded.meshRank !== self || !sameRanks(this.loaded.experts, want)) await this.loadExperts(self);
  }

  private async loadExperts(meshRank: number): Promise<void> {
    const experts = expertsOf(this.placement, meshRank);
    const w1: Float32Array[] = [];
    const w2: Float32Array[] = [];
    for (const e of experts) {
      const w = expertWeights(this.model_, e);
      w1.push(w.w1);
      w2.push(w.w2);
      await yieldToEventLoop();
    }
    await this.backend.load({ hidden: this.model_.hidden, width: this.model_.width, experts, w1, w2 });
    this.loaded = { meshRank, experts };
    this.heldFor = meshRank;
  }

  /** Embedding and the routing table (token → expert), which every rank needs. */
  private async buildShared(progress: (fraction: number) => void): Promise<void> {
    const { vocab: V, hidden: d, experts: E } = this.model_;
    const emb = embedding(this.model_);
    const r = router(this.model_);
    const routes = new Int32Array(V);
    const chunk = 64;
    for (let t0 = 0; t0 < V; t0 += chunk) {
      for (let t = t0; t < Math.min(V, t0 + chunk); t++) {
        // e = argmax_j (x · router[:, j]), ties → lowest j.
        let best = 0;
        let bestScore = -Infinity;
        for (let j = 0; j < E; j++) {
          let s = 0;
          for (let k = 0; k < d; k++) s += emb[t * d + k]! * r[k * E + j]!;
          if (s > bestScore) {
            bestScore = s;
            best = j;
          }
        }
        routes[t] = best;
      }
      progress(Math.min(1, (t0 + chunk) / V));
      await yieldToEventLoop();
    }
    this.emb = emb;
    this.routes = routes;
  }
}

/** argmax_v (y · emb[v]), ties → lowest v. */
function argmaxLogit(y: Float32Array, emb: Float32Array, vocab: number, d: number): number {
  let best = 0;
  let bestScore = -Infinity;
  for (let v = 0; v < vocab; v++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += y[k]! * emb[v * d + k]!;
    if (s > bestScore) {
      bestScore = s;
      best = v;
    }
  }
  return best;
}

function sameRanks(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Lets the node's other work (gossip, HTTP) run between chunks of a long computation. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
