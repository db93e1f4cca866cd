// The Communicator on NCCL. Host arrays are staged through pinned memory into device
// buffers, the collective runs on the communicator's own stream, and the result is copied
// back; the JS thread only enqueues and then polls (stream done? comm healthy?) with short
// async sleeps, so a hung peer costs a deadline, never a frozen event loop.
//
// The unique id is created by the epoch's lowest active rank (createNcclUniqueId) and
// reaches the others through the mesh; every rank then calls createNcclCommunicator with
// the same id. Memory and stream operations go through DeviceMemory, which is CUDA on a
// GPU host (cudaDeviceMemory) and can be host memory where a test drives a stand-in NCCL.
import { loadCudaRuntime, type CudaRuntime, type DevicePtr, type HostPtr, type Stream } from '../cuda/runtime.ts';
import { MemcpyKind } from '../cuda/symbols.ts';
import type { DiscoveryOptions } from '../discovery.ts';
import { DeadlineExceededError, FfiArgumentError } from '../errors.ts';
import { dataTypeOf, NCCL_UNIQUE_ID_BYTES, redOpOf, NcclRedOp, NcclDataType } from '../nccl/codes.ts';
import { initNcclComm, type NcclComm } from '../nccl/comm.ts';
import { loadNccl, type NcclLibrary } from '../nccl/library.ts';
import {
  CommAbortedError,
  type CollectiveArray,
  type CollectiveOptions,
  type Communicator,
  type EpochKey,
  type ReduceOp,
} from './communicator.ts';

/** The device-side operations the NCCL communicator needs. */
export interface DeviceMemory {
  setDevice(device: number): void;
  createStream(): Stream;
  destroyStream(stream: Stream): void;
  /** True once every operation enqueued on the stream has completed. */
  streamDone(stream: Stream): boolean;
  allocDevice(bytes: number): DevicePtr;
  freeDevice(ptr: DevicePtr): void;
  /** Page-locked host memory and a byte view of it. */
  allocHost(bytes: number): { ptr: HostPtr; view: Uint8Array };
  freeHost(ptr: HostPtr): void;
  copyAsync(dst: number, src: number, bytes: number, kind: 'toDevice' | 'toHost', stream: Stream): void;
}

export interface NcclCommunicatorOptions {
  readonly key: EpochKey;
  /** This process's compact rank. */
  readonly rank: number;
  readonly size: number;
  readonly meshRanks: readonly number[];
  /** The 128-byte ncclUniqueId from the lowest active rank. */
  readonly uniqueId: Uint8Array;
  /** CUDA device index this rank uses. */
  readonly device: number;
  /** The NCCL library; default loadNccl(libraries.nccl), opened once per process. */
  readonly nccl?: NcclLibrary;
  /** Device memory and streams; default CUDA via loadCudaRuntime(libraries.cudart). */
  readonly memory?: DeviceMemory;
  /** Library paths from config, used only for the defaults above. */
  readonly libraries?: { readonly cudart?: DiscoveryOptions; readonly nccl?: DiscoveryOptions };
  /** Bound on init when the caller gives no deadline; default 60 s. */
  readonly initTimeoutMs?: number;
  /** Bound on a collective without opts.deadlineMs; default 30 s. */
  readonly collectiveTimeoutMs?: number;
  /** Sleep between completion polls; default 0.2 ms. */
  readonly pollIntervalMs?: number;
}

/** A fresh unique id; only the epoch's lowest active rank calls this. */
export function createNcclUniqueId(nccl: NcclLibrary = defaultNccl()): Uint8Array {
  return nccl.getUniqueId();
}

let sharedNccl: NcclLibrary | undefined;
let sharedCuda: CudaRuntime | undefined;

/** The process-wide libnccl (LibraryNotFoundError when there is none). */
export function defaultNccl(opts: DiscoveryOptions = {}): NcclLibrary {
  sharedNccl ??= loadNccl(opts);
  return sharedNccl;
}

function defaultMemory(opts: DiscoveryOptions = {}): DeviceMemory {
  sharedCuda ??= loadCudaRuntime(opts);
  return cudaDeviceMemory(sharedCuda);
}

/** Initialises the communicator (polling, bounded) and returns it ready for collectives. */
export async function createNcclCommunicator(opts: NcclCommunicatorOptions): Promise<Communicator> {
  const { rank, size, meshRanks } = opts;
  if (!Number.isInteger(size) || size < 1 || meshRanks.length !== size) {
    throw new FfiArgumentError(`size ${size} must match meshRanks (${meshRanks.length} entries)`);
  }
  if (!Number.isInteger(rank) || rank < 0 || rank >= size) throw new FfiArgumentError(`rank ${rank} not in 0..${size - 1}`);
  for (let i = 1; i < meshRanks.length; i++) {
    if ((meshRanks[i] ?? 0) <= (meshRanks[i - 1] ?? 0)) throw new FfiArgumentError('meshRanks must be ascending');
  }
  if (opts.uniqueId.byteLength !== NCCL_UNIQUE_ID_BYTES) {
    throw new FfiArgumentError(`unique id must be ${NCCL_UNIQUE_ID_BYTES} bytes, got ${opts.uniqueId.byteLength}`);
  }
  const nccl = opts.nccl ?? defaultNccl(opts.libraries?.nccl);
  const memory = opts.memory ?? defaultMemory(opts.libraries?.cudart);
  memory.setDevice(opts.device);
  const stream = memory.createStream();
  let comm: NcclComm;
  try {
    comm = await initNcclComm(nccl, {
      nranks: size,
      rank,
      uniqueId: opts.uniqueId,
      deadlineMs: Date.now() + (opts.initTimeoutMs ?? 60_000),
      pollIntervalMs: opts.pollIntervalMs ?? 0.2,
      config: { commName: `rankmesh-${opts.key.meshId}-g${opts.key.generation}-e${opts.key.epoch}` },
    });
  } catch (err) {
    memory.destroyStream(stream);
    throw err;
  }
  return new NcclCommunicator(opts, memory, comm, stream);
}

/** DeviceMemory on the CUDA runtime. */
export function cudaDeviceMemory(rt: CudaRuntime): DeviceMemory {
  return {
    setDevice: (device) => rt.setDevice(device),
    createStream: () => rt.streamCreate(),
    destroyStream: (s) => rt.streamDestroy(s),
    streamDone: (s) => rt.streamQuery(s),
    allocDevice: (bytes) => rt.malloc(bytes),
    freeDevice: (p) => rt.free(p),
    allocHost: (bytes) => {
      const p = rt.mallocHost(bytes);
      return { ptr: p, view: rt.hostView(p, bytes) };
    },
    freeHost: (p) => rt.freeHost(p),
    copyAsync: (dst, src, bytes, kind, s) =>
      rt.memcpyAsync(dst, src, bytes, kind === 'toDevice' ? MemcpyKind.HostToDevice : MemcpyKind.DeviceToHost, s),
  };
}

/** Device and staging buffers, grown on demand and reused across collectives. */
interface Buffers {
  capacityBytes: number;
  send: DevicePtr;
  recv: DevicePtr;
  staging: { ptr: HostPtr; view: Uint8Array };
}

class NcclCommunicator implements Communicator {
  readonly backend = 'nccl' as const;
  readonly key: EpochKey;
  readonly rank: number;
  readonly size: number;
  readonly meshRanks: readonly number[];
  private buffers: Buffers | null = null;
  private abortReason: string | null = null;
  private closed = false;
  /** Collectives run one at a time: they share the stream and the buffers. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly opts: NcclCommunicatorOptions,
    private readonly memory: DeviceMemory,
    private readonly comm: NcclComm,
    private readonly stream: Stream,
  ) {
    this.key = opts.key;
    this.rank = opts.rank;
    this.size = opts.size;
    this.meshRanks = [...opts.meshRanks];
  }

  allReduce<T extends CollectiveArray>(data: T, op: ReduceOp, opts?: CollectiveOptions): Promise<T> {
    const ncclOp = redOpOf(op);
    return this.run('allReduce', data, data.length, opts, (b, type, waitOpts) =>
      this.comm.allReduce(b.send, b.recv, data.length, type, ncclOp, this.stream, waitOpts),
    );
  }

  broadcast<T extends CollectiveArray>(data: T, root: number, opts?: CollectiveOptions): Promise<T> {
    if (!Number.isInteger(root) || root < 0 || root >= this.size) {
      return Promise.reject(new FfiArgumentError(`root ${root} not in 0..${this.size - 1}`));
    }
    return this.run('broadcast', data, data.length, opts, (b, type, waitOpts) =>
      this.comm.broadcast(b.send, b.recv, data.length, type, root, this.stream, waitOpts),
    );
  }

  allGather<T extends CollectiveArray>(data: T, opts?: CollectiveOptions): Promise<T> {
    return this.run('allGather', data, data.length * this.size, opts, (b, type, waitOpts) =>
      this.comm.allGather(b.send, b.recv, data.length, type, this.stream, waitOpts),
    );
  }

  async barrier(opts?: CollectiveOptions): Promise<void> {
    // A one-element all-reduce completes on a rank only after every rank contributed.
    await this.run('barrier', new Int32Array(1), 1, opts, (b, _type, waitOpts) =>
      this.comm.allReduce(b.send, b.recv, 1, NcclDataType.Int32, NcclRedOp.Sum, this.stream, waitOpts),
    );
  }

  abort(reason: string): void {
    if (this.abortReason !== null || this.closed) return;
    this.abortReason = reason;
    this.comm.abort();
    // After ncclCommAbort running kernels have exited, so the buffers can go.
    this.release();
  }

  async close(): Promise<void> {
    if (this.closed || this.abortReason !== null) return;
    await this.tail.catch(() => undefined);
    if (this.abortReason !== null) return;
    this.closed = true;
    try {
      await this.comm.close({ deadlineMs: Date.now() + (this.opts.collectiveTimeoutMs ?? 30_000) });
    } finally {
      this.release();
    }
  }

  /**
   * Stages `input` in, runs `collective`, waits for the stream, and returns the result
   * (`outLength` elements of the input's type). Serialised behind earlier collectives.
   */
  private run<T extends CollectiveArray>(
    what: string,
    input: T,
    outLength: number,
    opts: CollectiveOptions | undefined,
    collective: (b: Buffers, type: NcclDataType, waitOpts: { deadlineMs: number; pollIntervalMs: number; cancelled: () => Error | null }) => Promise<void>,
  ): Promise<T> {
    // CollectiveOptions.deadlineMs is a budget counted from this call (as the CPU backend
    // reads it), so time spent queued behind earlier collectives counts against it.
    const deadlineMs = Date.now() + (opts?.deadlineMs ?? this.opts.collectiveTimeoutMs ?? 30_000);
    const result = this.tail.catch(() => undefined).then(async () => {
      this.ensureUsable();
      const type = dataTypeOf(input);
      const inBytes = input.byteLength;
      const outBytes = outLength * input.BYTES_PER_ELEMENT;
      const b = this.ensureBuffers(Math.max(inBytes, outBytes, 8));
      const waitOpts = {
        deadlineMs,
        pollIntervalMs: this.opts.pollIntervalMs ?? 0.2,
        cancelled: () => (this.abortReason === null ? null : new CommAbortedError(this.abortReason)),
      };
      try {
        b.staging.view.set(new Uint8Array(input.buffer, input.byteOffset, inBytes));
        this.memory.copyAsync(b.send, b.staging.ptr, inBytes, 'toDevice', this.stream);
        await collective(b, type, waitOpts);
        this.ensureUsable(); // abort() may have freed the buffers while the enqueue polled
        this.memory.copyAsync(b.staging.ptr, b.recv, outBytes, 'toHost', this.stream);
        await this.waitDone(what, waitOpts);
      } catch (err) {
        throw this.failed(what, err);
      }
      const out = new (input.constructor as new (n: number) => T)(outLength);
      new Uint8Array(out.buffer).set(b.staging.view.subarray(0, outBytes));
      return out;
    });
    this.tail = result;
    return result;
  }

  /** Polls until the stream has drained, checking the communicator's health each time. */
  private async waitDone(what: string, w: { deadlineMs: number; pollIntervalMs: number; cancelled: () => Error | null }): Promise<void> {
    const startMs = Date.now();
    for (;;) {
      const cancelled = w.cancelled();
      if (cancelled !== null) throw cancelled;
      this.comm.healthy(`nccl ${what}`);
      if (this.memory.streamDone(this.stream)) return;
      if (Date.now() >= w.deadlineMs) throw new DeadlineExceededError(`nccl ${what}`, Date.now() - startMs);
      await Bun.sleep(w.pollIntervalMs);
    }
  }

  /** Any failure mid-collective leaves the comm in an unknown state: abort it. */
  private failed(what: string, err: unknown): Error {
    if (err instanceof CommAbortedError) return err;
    if (err instanceof FfiArgumentError) return err;
    const reason = `${what} failed: ${err instanceof Error ? err.message : String(err)}`;
    this.abort(reason);
    return new CommAbortedError(reason);
  }

  private ensureUsable(): void {
    if (this.abortReason !== null) throw new CommAbortedError(this.abortReason);
    if (this.closed) throw new CommAbortedError('communicator closed');
  }

  private ensureBuffers(bytes: number): Buffers {
    if (this.buffers !== null && this.buffers.capacityBytes >= bytes) return this.buffers;
    this.releaseBuffers();
    // Round up to a power of two so a growing workload reallocates O(log n) times.
    const capacityBytes = 2 ** Math.ceil(Math.log2(bytes));
    const m = this.memory;
    const send = m.allocDevice(capacityBytes);
    const recv = m.allocDevice(capacityBytes);
    const staging = m.allocHost(capacityBytes);
    this.buffers = { capacityBytes, send, recv, staging };
    return this.buffers;
  }

  private releaseBuffers(): void {
    const b = this.buffers;
    if (b === null) return;
    this.buffers = null;
    const m = this.memory;
    bestEffort(() => m.freeDevice(b.send));
    bestEffort(() => m.freeDevice(b.recv));
    bestEffort(() => m.freeHost(b.staging.ptr));
  }

  private release(): void {
    this.releaseBuffers();
    bestEffort(() => this.memory.destroyStream(this.stream));
  }
}

/** Teardown must finish even when one step fails (e.g. the device is already gone). */
function bestEffort(fn: () => void): void {
  try {
    fn();
  } catch {
    // Nothing useful to do: the resource is lost either way.
  }
}
