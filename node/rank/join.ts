// The join step: the first thing every rank of a new epoch does on the epoch's new
// communicator, before its engine loop runs there. Building the communicator is the join
// barrier (every rank of the mask connects its ring links, or nobody proceeds); the step
// then all-gathers each rank's [has current state, iteration, state size] and every rank
// computes the same plan with mesh/join.ts: the lowest-ranked member with current state is
// the source; ranks without it (a joiner that warmed up alone, a promoted spare) adopt the
// source's state, broadcast over the communicator: expert placement, iteration counter, the
// epoch's mask and a digest of the model's weights, sealed with a SHA-256 checksum. A
// joiner refuses state whose checksum or model digest does not match its own and the build
// fails (and is retried) rather than serving on a wrong model.
//
// With every rank current (a rank left, or only spares changed) the step is one small
// all-gather. Healthy ranks never take part in a joiner's warm-up: the joiner becomes a rank
// only by a view change, after it announced READY.
import { createHash } from 'node:crypto';
import type { Communicator } from '../../ffi/comm/communicator.ts';
import { type JoinPlan, joinPlan } from '../../mesh/join.ts';
import type { EngineState } from '../engine/engine.ts';
import { embedding, expertWeights, type ModelConfig, router } from '../engine/weights.ts';

/** What the step needs of the engine. */
export interface JoinEngine {
  readonly model: ModelConfig;
  exportState(): EngineState;
  adoptState(state: EngineState): void;
}

export interface JoinStepOptions {
  readonly comm: Communicator;
  readonly engine: JoinEngine;
  /** This rank served continuously since it last joined (false: warmed up alone, or lost its rank since). */
  readonly hasState: boolean;
  readonly generation: number;
  /** The view's epoch (the communicator's key folds build attempts into its epoch). */
  readonly epoch: number;
  /** Deadline of each collective of the step. */
  readonly deadlineMs: number;
}

export interface JoinOutcome {
  readonly plan: JoinPlan;
  /** The mesh rank whose state this rank adopted, or null (it kept its own). */
  readonly adoptedFrom: number | null;
  /** Bytes of the state broadcast (0 when nothing was adopted by anyone). */
  readonly stateBytes: number;
  readonly ms: number;
}

/** State from the source that fails its checksum, or describes another model or epoch. */
export class JoinStateError extends Error {
  override readonly name = 'JoinStateError';
}

/** The state a joiner adopts, as the source sends it. */
export interface JoinState {
  readonly generation: number;
  readonly epoch: number;
  readonly sourceRank: number;
  /** Mesh ranks of the epoch's mask, ascending. */
  readonly meshRanks: readonly number[];
  readonly engine: EngineState;
  /** SHA-256 (hex) of the model's weights: a joiner must hold the same model. */
  readonly modelDigest: string;
}

/** Largest state accepted from a source. */
export const JOIN_STATE_BYTES_MAX = 1 << 20;

/**
 * Runs the join step on `comm`; every rank of the communicator must call it with its own
 * view of itself. Rejects with CommAbortedError when the communicator fails and with
 * JoinStateError when adopted state does not verify (nothing was adopted then).
 */
export async function runJoinStep(options: JoinStepOptions): Promise<JoinOutcome> {
  const { comm, engine } = options;
  const started = performance.now();
  const opts = { deadlineMs: options.deadlineMs };
  const own = engine.exportState();
  const mine = options.hasState ? encodeJoinState(stateOf(options, own)) : new Uint8Array(0);
  const header = await comm.allGather(new Int32Array([options.hasState ? 1 : 0, own.iteration, mine.length]), opts);
  const candidates = comm.meshRanks.map((rank, i) => ({ rank, hasState: header[3 * i] === 1, progress: header[3 * i + 1]! }));
  const plan = joinPlan(candidates);
  if (plan.kind !== 'adopt') return { plan, adoptedFrom: null, stateBytes: 0, ms: performance.now() - started };

  const root = comm.meshRanks.indexOf(plan.source);
  const length = header[3 * root + 2]!;
  if (length <= 0 || length > JOIN_STATE_BYTES_MAX) throw new JoinStateError(`source rank ${plan.source} announced ${length} bytes of state`);
  const buffer = comm.rank === root ? mine : new Uint8Array(length);
  const received = await comm.broadcast(buffer, root, opts);
  const self = comm.meshRanks[comm.rank]!;
  if (!plan.joiners.includes(self)) return { plan, adoptedFrom: null, stateBytes: length, ms: performance.now() - started };
  // A joiner never adopts from itself (joinPlan picks a rank with state; a joiner has none).
  if (plan.source === self) throw new JoinStateError(`rank ${self} would adopt its own state`);
  const state = decodeJoinState(received);
  if (state.generation !== options.generation || state.epoch !== options.epoch || state.sourceRank !== plan.source) {
    throw new JoinStateError(`state is for ${state.generation}:${state.epoch} from rank ${state.sourceRank}, expected ${options.generation}:${options.epoch} from rank ${plan.source}`);
  }
  if (state.meshRanks.length !== comm.meshRanks.length || state.meshRanks.some((r, i) => r !== comm.meshRanks[i])) {
    throw new JoinStateError(`state's mask ${state.meshRanks.join(',')} is not the communicator's ${comm.meshRanks.join(',')}`);
  }
  const digest = modelDigest(engine.model);
  if (state.modelDigest !== digest) throw new JoinStateError(`rank ${plan.source} runs another model (weights digest ${state.modelDigest.slice(0, 12)}…, this node ${digest.slice(0, 12)}…): check engineModelSeed`);
  engine.adoptState(state.engine);
  return { plan, adoptedFrom: plan.source, stateBytes: length, ms: performance.now() - started };
}

/** State bytes: the JSON of the state and its SHA-256, so a damaged transfer is refused. */
export function encodeJoinState(state: JoinState): Uint8Array {
  const body = JSON.stringify(state);
  return new TextEncoder().encode(JSON.stringify({ body, sha256: sha256(body) }));
}

/** Parses and verifies state bytes; throws JoinStateError on anything but intact state. */
export function decodeJoinState(bytes: Uint8Array): JoinState {
  let outer: { body?: unknown; sha256?: unknown };
  try {
    outer = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as typeof outer;
  } catch {
    throw new JoinStateError('state is not valid JSON');
  }
  if (typeof outer !== 'object' || outer === null || typeof outer.body !== 'string' || typeof outer.sha256 !== 'string') throw new JoinStateError('state has no body or checksum');
  if (sha256(outer.body) !== outer.sha256) throw new JoinStateError('state checksum does not match its body');
  let s: JoinState;
  try {
    s = JSON.parse(outer.body) as JoinState;
  } catch {
    throw new JoinStateError('state body is not valid JSON');
  }
  const ints = (xs: unknown) => Array.isArray(xs) && xs.every((x) => Number.isInteger(x) && x >= 0);
  if (typeof s !== 'object' || s === null) throw new JoinStateError('state is missing fields');
  if (!Number.isInteger(s.generation) || !Number.isInteger(s.epoch) || !Number.isInteger(s.sourceRank) || !ints(s.meshRanks) || typeof s.modelDigest !== 'string' || !ints(s.engine?.placement) || !Number.isInteger(s.engine?.iteration)) {
    throw new JoinStateError('state is missing fields');
  }
  return s;
}

const digests = new Map<string, string>();

/**
 * SHA-256 over every weight of the model (embedding, router, each expert), memoised per
 * model configuration. Weights come from the seed, so equal digests mean equal models.
 */
export function modelDigest(model: ModelConfig): string {
  const key = JSON.stringify(model);
  const known = digests.get(key);
  if (known !== undefined) return known;
  const hash = createHash('sha256');
  const add = (a: Float32Array) => hash.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  add(embedding(model));
  add(router(model));
  for (let e = 0; e < model.experts; e++) {
    const w = expertWeights(model, e);
    add(w.w1);
    add(w.w2);
  }
  const digest = hash.digest('hex');
  digests.set(key, digest);
  return digest;
}

function stateOf(options: JoinStepOptions, engine: EngineState): JoinState {
  const { comm } = options;
  return {
    generation: options.generation,
    epoch: options.epoch,
    sourceRank: comm.meshRanks[comm.rank]!,
    meshRanks: [...comm.meshRanks],
    engine,
    modelDigest: modelDigest(options.engine.model),
  };
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
