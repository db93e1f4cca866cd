// One NCCL communicator, always non-blocking (blocking = 0): init, enqueue and finalize
// return at once (possibly with ncclInProgress) and this class polls
// ncclCommGetAsyncError with short async sleeps against a deadline, so the JS thread is
// never stuck inside NCCL. A failed or expired wait aborts the communicator.
//
// Buffers and streams are device addresses and cudaStream_t values; this layer does not
// allocate them (see ffi/comm/nccl.ts).
import { pollUntil, type WaitOptions } from '../cuda/runtime.ts';
import { DeadlineExceededError, FfiArgumentError } from '../errors.ts';
import {
  NCCL_SHRINK_DEFAULT,
  NCCL_UNIQUE_ID_BYTES,
  NcclResult,
  type NcclDataType,
  type NcclRedOp,
} from './codes.ts';
import { buildNcclConfig, type NcclConfigOptions } from './config.ts';
import type { NcclLibrary } from './library.ts';

export interface NcclInitOptions extends WaitOptions {
  readonly nranks: number;
  readonly rank: number;
  readonly uniqueId: Uint8Array;
  /** Extra ncclConfig_t fields; `blocking` is always 0 here. */
  readonly config?: Omit<NcclConfigOptions, 'blocking'>;
}

/** Creates a communicator and waits (polling) until it is ready; aborts it on failure. */
export async function initNcclComm(nccl: NcclLibrary, opts: NcclInitOptions): Promise<NcclComm> {
  const { nranks, rank, uniqueId } = opts;
  if (!Number.isInteger(nranks) || nranks < 1) throw new FfiArgumentError(`nranks must be ≥ 1, got ${nranks}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= nranks) throw new FfiArgumentError(`rank ${rank} not in 0..${nranks - 1}`);
  if (uniqueId.byteLength !== NCCL_UNIQUE_ID_BYTES) {
    throw new FfiArgumentError(`unique id must be ${NCCL_UNIQUE_ID_BYTES} bytes, got ${uniqueId.byteLength}`);
  }
  const config = buildNcclConfig(nccl.version, { ...opts.config, blocking: 0 });
  const { rc, comm } = nccl.commInitRank(nranks, rank, uniqueId, config.bytes);
  const handle = new NcclComm(nccl, comm, nranks, rank);
  if (rc !== NcclResult.Success && rc !== NcclResult.InProgress) {
    handle.abort();
    throw nccl.error('ncclCommInitRank', rc, comm);
  }
  try {
    await handle.waitReady('ncclCommInitRank', opts);
  } catch (err) {
    handle.abort();
    throw err;
  }
  // The config's strings stay referenced until here: NCCL's init thread may still read them.
  void config.keepAlive;
  return handle;
}

export class NcclComm {
  private state: 'live' | 'finalized' | 'destroyed' | 'aborted' = 'live';

  constructor(
    readonly nccl: NcclLibrary,
    /** The ncclComm_t. */
    readonly handle: number,
    readonly nranks: number,
    readonly rank: number,
  ) {}

  get live(): boolean {
    return this.state === 'live';
  }

  /** Raw async state: Success, InProgress or an error code. */
  asyncError(): number {
    return this.nccl.asyncError(this.handle);
  }

  /** Polls the async state until it leaves InProgress; an error state throws NcclError. */
  async waitReady(what: string, opts: WaitOptions = {}): Promise<void> {
    let state: number = NcclResult.InProgress;
    await pollUntil(
      what,
      () => {
        state = this.asyncError();
        return state !== NcclResult.InProgress;
      },
      opts,
    );
    this.nccl.check(what, state, this.handle);
  }

  /** Throws if the communicator has hit an asynchronous error; false while work is in progress. */
  healthy(what: string): boolean {
    const state = this.asyncError();
    if (state === NcclResult.InProgress) return false;
    this.nccl.check(what, state, this.handle);
    return true;
  }

  // ---- collectives: enqueue on `stream`, then wait for the stream elsewhere -----------

  async allReduce(send: number, recv: number, count: number, type: NcclDataType, op: NcclRedOp, stream: number, opts?: WaitOptions): Promise<void> {
    await this.enqueue('ncclAllReduce', this.nccl.fn.ncclAllReduce(send, recv, count, type, op, this.handle, stream), opts);
  }

  async broadcast(send: number, recv: number, count: number, type: NcclDataType, root: number, stream: number, opts?: WaitOptions): Promise<void> {
    this.requireRank('root', root);
    await this.enqueue('ncclBroadcast', this.nccl.fn.ncclBroadcast(send, recv, count, type, root, this.handle, stream), opts);
  }

  /** `sendCount` elements per rank; recv holds nranks × sendCount. */
  async allGather(send: number, recv: number, sendCount: number, type: NcclDataType, stream: number, opts?: WaitOptions): Promise<void> {
    await this.enqueue('ncclAllGather', this.nccl.fn.ncclAllGather(send, recv, sendCount, type, this.handle, stream), opts);
  }

  /** `recvCount` elements per rank; send holds nranks × recvCount. */
  async reduceScatter(send: number, recv: number, recvCount: number, type: NcclDataType, op: NcclRedOp, stream: number, opts?: WaitOptions): Promise<void> {
    await this.enqueue('ncclReduceScatter', this.nccl.fn.ncclReduceScatter(send, recv, recvCount, type, op, this.handle, stream), opts);
  }

  /** Point-to-point; pair with recv on the peer, usually inside a group. */
  async send(buf: number, count: number, type: NcclDataType, peer: number, stream: number, opts?: WaitOptions): Promise<void> {
    this.requireRank('peer', peer);
    await this.enqueue('ncclSend', this.nccl.fn.ncclSend(buf, count, type, peer, this.handle, stream), opts);
  }

  async recv(buf: number, count: number, type: NcclDataType, peer: number, stream: number, opts?: WaitOptions): Promise<void> {
    this.requireRank('peer', peer);
    await this.enqueue('ncclRecv', this.nccl.fn.ncclRecv(buf, count, type, peer, this.handle, stream), opts);
  }

  /** ncclGroupStart: calls until groupEnd are fused (they return at once). */
  groupStart(): void {
    this.nccl.check('ncclGroupStart', this.nccl.fn.ncclGroupStart());
  }

  /** ncclGroupEnd: issues the group; polls while a non-blocking comm reports InProgress. */
  async groupEnd(opts?: WaitOptions): Promise<void> {
    await this.enqueue('ncclGroupEnd', this.nccl.fn.ncclGroupEnd(), opts);
  }

  // ---- membership changes --------------------------------------------------------------

  /** A new communicator without `excludeRanks` (NCCL ≥ 2.27.3); this one stays usable unless flags abort it. */
  async shrink(excludeRanks: readonly number[], opts: WaitOptions & { flags?: number } = {}): Promise<NcclComm> {
    for (const r of excludeRanks) this.requireRank('excluded rank', r);
    const config = buildNcclConfig(this.nccl.version, { blocking: 0 });
    const { rc, comm } = this.nccl.commShrink(this.handle, excludeRanks, config.bytes, opts.flags ?? NCCL_SHRINK_DEFAULT);
    const excluded = new Set(excludeRanks);
    const newRank = this.rank - excludeRanks.filter((r) => r < this.rank).length;
    const child = new NcclComm(this.nccl, comm, this.nranks - excluded.size, newRank);
    if (rc !== NcclResult.Success && rc !== NcclResult.InProgress) {
      child.abort();
      throw this.nccl.error('ncclCommShrink', rc, this.handle);
    }
    try {
      await child.waitReady('ncclCommShrink', opts);
    } catch (err) {
      child.abort();
      throw err;
    }
    return child;
  }

  /**
   * ncclCommGrow (NCCL ≥ 2.29.2). Existing ranks call it on their comm (`uniqueId` only on
   * the root, from ncclCommGetUniqueId); joiners use growJoin.
   */
  async grow(nranks: number, uniqueId: Uint8Array | null, opts: WaitOptions = {}): Promise<NcclComm> {
    const config = buildNcclConfig(this.nccl.version, { blocking: 0 });
    const { rc, comm } = this.nccl.commGrow(this.handle, nranks, uniqueId, -1, config.bytes);
    return finishGrow(this.nccl, rc, comm, nranks, this.rank, opts);
  }

  // ---- teardown ------------------------------------------------------------------------

  /** Flushes outstanding work and waits until globally quiescent, then destroys. */
  async close(opts: WaitOptions = {}): Promise<void> {
    if (this.state !== 'live') return;
    const rc = this.nccl.fn.ncclCommFinalize(this.handle);
    this.state = 'finalized';
    try {
      if (rc !== NcclResult.Success && rc !== NcclResult.InProgress) throw this.nccl.error('ncclCommFinalize', rc, this.handle);
      await this.waitReady('ncclCommFinalize', opts);
    } catch (err) {
      this.abort();
      throw err;
    }
    this.state = 'destroyed';
    this.nccl.check('ncclCommDestroy', this.nccl.fn.ncclCommDestroy(this.handle), 0);
  }

  /** Stops running kernels and frees the communicator. Idempotent; never throws. */
  abort(): void {
    if (this.state === 'aborted' || this.state === 'destroyed') return;
    this.state = 'aborted';
    if (this.handle !== 0) this.nccl.fn.ncclCommAbort(this.handle);
  }

  private async enqueue(call: string, rc: number, opts: WaitOptions = {}): Promise<void> {
    if (rc === NcclResult.Success) return;
    if (rc !== NcclResult.InProgress) throw this.nccl.error(call, rc, this.handle);
    try {
      await this.waitReady(call, opts);
    } catch (err) {
      if (err instanceof DeadlineExceededError) this.abort();
      throw err;
    }
  }

  private requireRank(what: string, r: number): void {
    if (!Number.isInteger(r) || r < 0 || r >= this.nranks) throw new FfiArgumentError(`${what} ${r} not in 0..${this.nranks - 1}`);
  }
}

/** A joining process's side of ncclCommGrow: no parent comm, the root's id and its new rank. */
export async function growJoin(nccl: NcclLibrary, nranks: number, uniqueId: Uint8Array, rank: number, opts: WaitOptions = {}): Promise<NcclComm> {
  const config = buildNcclConfig(nccl.version, { blocking: 0 });
  const { rc, comm } = nccl.commGrow(0, nranks, uniqueId, rank, config.bytes);
  return finishGrow(nccl, rc, comm, nranks, rank, opts);
}

async function finishGrow(nccl: NcclLibrary, rc: number, comm: number, nranks: number, rank: number, opts: WaitOptions): Promise<NcclComm> {
  const child = new NcclComm(nccl, comm, nranks, rank);
  if (rc !== NcclResult.Success && rc !== NcclResult.InProgress) {
    child.abort();
    throw nccl.error('ncclCommGrow', rc, comm);
  }
  try {
    await child.waitReady('ncclCommGrow', opts);
  } catch (err) {
    child.abort();
    throw err;
  }
  return child;
}
