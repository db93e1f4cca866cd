// The collective interface every backend implements. A Communicator is built for one
// epoch over that epoch's active-rank mask and is torn down on the next view change.
//
// Ranks inside a communicator are compact: the active mesh ranks, taken in rank order,
// are renumbered 0..size-1 (Mooncake #2455: holes in the rank space corrupted
// all-gather). `meshRanks[i]` maps compact rank i back to its mesh rank.

/** Element types a collective can move. */
export type CollectiveArray = Float32Array | Float64Array | Int32Array | Uint8Array;

export type ReduceOp = 'sum' | 'max' | 'min';

/** Identifies the epoch a communicator belongs to; records of other epochs are rejected. */
export interface EpochKey {
  readonly meshId: string;
  readonly generation: number;
  readonly epoch: number;
}

export interface CollectiveOptions {
  /**
   * Time budget in milliseconds, counted from the call: if the collective has not completed
   * within it, the communicator is aborted and the call rejects with CommAbortedError.
   */
  readonly deadlineMs?: number;
}

export interface Communicator {
  readonly backend: 'cpu' | 'nccl';
  readonly key: EpochKey;
  /** This process's compact rank, 0..size-1. */
  readonly rank: number;
  readonly size: number;
  /** Compact rank → mesh rank, ascending. */
  readonly meshRanks: readonly number[];

  /** Element-wise reduction over all ranks; every rank gets the same result (a new array). */
  allReduce<T extends CollectiveArray>(data: T, op: ReduceOp, opts?: CollectiveOptions): Promise<T>;
  /** The root's array, delivered to every rank. Non-roots pass an array of the same length. */
  broadcast<T extends CollectiveArray>(data: T, root: number, opts?: CollectiveOptions): Promise<T>;
  /** Every rank's array (all the same length), concatenated in compact rank order. */
  allGather<T extends CollectiveArray>(data: T, opts?: CollectiveOptions): Promise<T>;
  /** Returns once every rank has entered. */
  barrier(opts?: CollectiveOptions): Promise<void>;

  /**
   * Optional. Calls `onActivity` once, when another rank has begun a collective that this
   * rank has not called yet, or the communicator was aborted; never for a communicator of
   * one rank. Meaningful while this rank runs no collective. Returns a cancel function. An idle rank can then sleep long and still join a
   * peer's collective at once. Backends that cannot tell (NCCL) leave it out; callers poll.
   */
  watchPeerActivity?(onActivity: () => void): () => void;

  /**
   * Stop now: pending and future collectives reject with CommAbortedError. Called on a view
   * change or a missed deadline. Idempotent.
   */
  abort(reason: string): void;
  /** Orderly teardown after the last collective. Idempotent. */
  close(): Promise<void>;
}

/** A collective was cut short by abort() (view change, deadline, peer loss). */
export class CommAbortedError extends Error {
  override readonly name = 'CommAbortedError';
  constructor(readonly reason: string) {
    super(`communicator aborted: ${reason}`);
  }
}
