// libcudart through bun:ffi. Every call's cudaError_t is checked here and turned into a
// CudaError carrying the function, the code, its enum name and its description, so no
// caller ever sees a raw status. Handles (device pointers, streams, events, graphs) are
// plain numbers, the form bun:ffi returns pointers in.
//
// Waiting is never a blocking FFI call on the JS thread: waitStream() polls
// cudaStreamQuery with a short async sleep between polls, against a deadline.
import { dlopen, toArrayBuffer, type Library } from 'bun:ffi';
import { findCudart, type DiscoveryOptions } from '../discovery.ts';
import type { LooseSymbols } from '../ffi-types.ts';
import {
  CUDA_ERROR_NOT_READY,
  CUDA_SUCCESS,
  CudaError,
  DeadlineExceededError,
  FfiArgumentError,
} from '../errors.ts';
import {
  CUDART_SYMBOLS,
  MemcpyKind,
  STREAM_NON_BLOCKING,
  StreamCaptureMode,
} from './symbols.ts';

export { MemcpyKind, StreamCaptureMode } from './symbols.ts';

/** Addresses and opaque handles as bun:ffi passes them. 0 is NULL (and the legacy stream). */
export type DevicePtr = number;
export type HostPtr = number;
export type Stream = number;
export type CudaEvent = number;
export type CudaGraph = number;
export type CudaGraphExec = number;

/** Host memory a copy may read or write: a typed array, or a raw (e.g. pinned) address. */
export type HostMemory = NodeJS.TypedArray | HostPtr;

export interface WaitOptions {
  /** Absolute time (Date.now() ms) after which waiting fails with DeadlineExceededError. */
  readonly deadlineMs?: number;
  /** Sleep between polls; default 0.2 ms is short enough for collectives, long enough to yield. */
  readonly pollIntervalMs?: number;
  /** Checked between polls; when it returns a reason, waiting stops with that error. */
  readonly cancelled?: () => Error | null;
}

export interface CudaVersions {
  /** e.g. 13000 for CUDA 13.0 */
  readonly runtime: number;
  /** 0 when no driver is installed */
  readonly driver: number;
}

/** Opens libcudart (found by discovery unless a path is given) and binds its symbols. */
export function loadCudaRuntime(opts: DiscoveryOptions = {}): CudaRuntime {
  const found = findCudart(opts);
  return new CudaRuntime(found.path, dlopen(found.path, CUDART_SYMBOLS));
}

export class CudaRuntime {
  private readonly fn: LooseSymbols<typeof CUDART_SYMBOLS>;

  constructor(
    readonly path: string,
    private readonly lib: Library<typeof CUDART_SYMBOLS>,
  ) {
    this.fn = lib.symbols as unknown as LooseSymbols<typeof CUDART_SYMBOLS>;
  }

  // ---- errors and versions -------------------------------------------------------------

  /** The enum name of a cudaError_t, e.g. 'cudaErrorInsufficientDriver'. */
  errorName(code: number): string {
    return String(this.fn.cudaGetErrorName(code));
  }

  errorString(code: number): string {
    return String(this.fn.cudaGetErrorString(code));
  }

  /** Returns and clears the last sticky error, as a code (0 = none). */
  getLastError(): number {
    return this.fn.cudaGetLastError();
  }

  versions(): CudaVersions {
    const out = new Int32Array(1);
    this.check('cudaRuntimeGetVersion', this.fn.cudaRuntimeGetVersion(out));
    const runtime = out[0] ?? 0;
    out[0] = 0;
    this.check('cudaDriverGetVersion', this.fn.cudaDriverGetVersion(out));
    return { runtime, driver: out[0] ?? 0 };
  }

  // ---- devices -------------------------------------------------------------------------

  deviceCount(): number {
    const out = new Int32Array(1);
    this.check('cudaGetDeviceCount', this.fn.cudaGetDeviceCount(out));
    return out[0] ?? 0;
  }

  setDevice(device: number): void {
    requireIndex('device', device);
    this.check('cudaSetDevice', this.fn.cudaSetDevice(device));
  }

  getDevice(): number {
    const out = new Int32Array(1);
    this.check('cudaGetDevice', this.fn.cudaGetDevice(out));
    return out[0] ?? 0;
  }

  deviceSynchronize(): void {
    this.check('cudaDeviceSynchronize', this.fn.cudaDeviceSynchronize());
  }

  memGetInfo(): { freeBytes: number; totalBytes: number } {
    const free = new BigUint64Array(1);
    const total = new BigUint64Array(1);
    this.check('cudaMemGetInfo', this.fn.cudaMemGetInfo(free, total));
    return { freeBytes: Number(free[0]), totalBytes: Number(total[0]) };
  }

  // ---- memory --------------------------------------------------------------------------

  malloc(bytes: number): DevicePtr {
    requireBytes(bytes);
    const out = new BigUint64Array(1);
    this.check('cudaMalloc', this.fn.cudaMalloc(out, bytes));
    return Number(out[0]);
  }

  free(ptr: DevicePtr): void {
    this.check('cudaFree', this.fn.cudaFree(ptr));
  }

  /** Page-locked host memory, needed for truly asynchronous copies. */
  mallocHost(bytes: number): HostPtr {
    requireBytes(bytes);
    const out = new BigUint64Array(1);
    this.check('cudaMallocHost', this.fn.cudaMallocHost(out, bytes));
    return Number(out[0]);
  }

  freeHost(ptr: HostPtr): void {
    this.check('cudaFreeHost', this.fn.cudaFreeHost(ptr));
  }

  /** A byte view of pinned host memory from mallocHost; valid until freeHost. */
  hostView(ptr: HostPtr, bytes: number): Uint8Array {
    return new Uint8Array(toArrayBuffer(ptr, 0, bytes));
  }

  memcpy(dst: DevicePtr | HostMemory, src: DevicePtr | HostMemory, bytes: number, kind: MemcpyKind): void {
    requireBytes(bytes);
    requireFits(dst, bytes, 'dst');
    requireFits(src, bytes, 'src');
    this.check('cudaMemcpy', this.fn.cudaMemcpy(dst, src, bytes, kind));
  }

  /** Enqueues a copy on `stream`; host memory must stay alive (and pinned for overlap) until it completes. */
  memcpyAsync(
    dst: DevicePtr | HostMemory,
    src: DevicePtr | HostMemory,
    bytes: number,
    kind: MemcpyKind,
    stream: Stream,
  ): void {
    requireBytes(bytes);
    requireFits(dst, bytes, 'dst');
    requireFits(src, bytes, 'src');
    this.check('cudaMemcpyAsync', this.fn.cudaMemcpyAsync(dst, src, bytes, kind, stream));
  }

  memset(ptr: DevicePtr, value: number, bytes: number): void {
    requireBytes(bytes);
    this.check('cudaMemset', this.fn.cudaMemset(ptr, value & 0xff, bytes));
  }

  // ---- streams and events --------------------------------------------------------------

  /** A non-blocking stream (does not serialize with the legacy default stream). */
  streamCreate(): Stream {
    const out = new BigUint64Array(1);
    this.check('cudaStreamCreateWithFlags', this.fn.cudaStreamCreateWithFlags(out, STREAM_NON_BLOCKING));
    return Number(out[0]);
  }

  streamDestroy(stream: Stream): void {
    this.check('cudaStreamDestroy', this.fn.cudaStreamDestroy(stream));
  }

  /** True when all work on the stream has completed; false while it is still running. */
  streamQuery(stream: Stream): boolean {
    const rc = this.fn.cudaStreamQuery(stream);
    if (rc === CUDA_ERROR_NOT_READY) return false;
    this.check('cudaStreamQuery', rc);
    return true;
  }

  /** Blocks the JS thread until the stream drains: only for scripts, never in the node. */
  streamSynchronize(stream: Stream): void {
    this.check('cudaStreamSynchronize', this.fn.cudaStreamSynchronize(stream));
  }

  /** Polls the stream until it drains, yielding to the event loop between polls. */
  async waitStream(stream: Stream, opts: WaitOptions = {}): Promise<void> {
    await pollUntil('cudaStreamQuery', () => this.streamQuery(stream), opts);
  }

  eventCreate(): CudaEvent {
    const out = new BigUint64Array(1);
    this.check('cudaEventCreate', this.fn.cudaEventCreate(out));
    return Number(out[0]);
  }

  eventRecord(event: CudaEvent, stream: Stream): void {
    this.check('cudaEventRecord', this.fn.cudaEventRecord(event, stream));
  }

  eventQuery(event: CudaEvent): boolean {
    const rc = this.fn.cudaEventQuery(event);
    if (rc === CUDA_ERROR_NOT_READY) return false;
    this.check('cudaEventQuery', rc);
    return true;
  }

  /** Milliseconds between two recorded, completed events. */
  eventElapsedMs(start: CudaEvent, end: CudaEvent): number {
    const out = new Float32Array(1);
    this.check('cudaEventElapsedTime', this.fn.cudaEventElapsedTime(out, start, end));
    return out[0] ?? 0;
  }

  eventDestroy(event: CudaEvent): void {
    this.check('cudaEventDestroy', this.fn.cudaEventDestroy(event));
  }

  // ---- graphs --------------------------------------------------------------------------

  beginCapture(stream: Stream, mode: StreamCaptureMode = StreamCaptureMode.ThreadLocal): void {
    this.check('cudaStreamBeginCapture', this.fn.cudaStreamBeginCapture(stream, mode));
  }

  endCapture(stream: Stream): CudaGraph {
    const out = new BigUint64Array(1);
    this.check('cudaStreamEndCapture', this.fn.cudaStreamEndCapture(stream, out));
    return Number(out[0]);
  }

  graphInstantiate(graph: CudaGraph): CudaGraphExec {
    const out = new BigUint64Array(1);
    this.check('cudaGraphInstantiate', this.fn.cudaGraphInstantiate(out, graph, 0));
    return Number(out[0]);
  }

  graphLaunch(exec: CudaGraphExec, stream: Stream): void {
    this.check('cudaGraphLaunch', this.fn.cudaGraphLaunch(exec, stream));
  }

  graphExecDestroy(exec: CudaGraphExec): void {
    this.check('cudaGraphExecDestroy', this.fn.cudaGraphExecDestroy(exec));
  }

  graphDestroy(graph: CudaGraph): void {
    this.check('cudaGraphDestroy', this.fn.cudaGraphDestroy(graph));
  }

  /** Unloads the library; the object must not be used afterwards. */
  close(): void {
    this.lib.close();
  }

  /** Throws the typed error for a non-success status. */
  check(call: string, code: number): void {
    if (code === CUDA_SUCCESS) return;
    throw new CudaError(call, code, this.errorName(code), this.errorString(code));
  }
}

/**
 * Polls `done` until it returns true, sleeping `pollIntervalMs` between polls, and fails
 * with DeadlineExceededError past the deadline or with the cancellation's error.
 */
export async function pollUntil(what: string, done: () => boolean, opts: WaitOptions = {}): Promise<void> {
  const startMs = Date.now();
  const intervalMs = opts.pollIntervalMs ?? 0.2;
  for (;;) {
    const cancelled = opts.cancelled?.() ?? null;
    if (cancelled !== null) throw cancelled;
    if (done()) return;
    if (opts.deadlineMs !== undefined && Date.now() >= opts.deadlineMs) {
      throw new DeadlineExceededError(what, Date.now() - startMs);
    }
    await Bun.sleep(intervalMs);
  }
}

function requireBytes(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new FfiArgumentError(`byte count must be a non-negative integer, got ${bytes}`);
  }
}

function requireIndex(what: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) throw new FfiArgumentError(`${what} must be a non-negative integer, got ${value}`);
}

/** A typed array passed as host memory must hold the bytes copied, or memory would be overrun. */
function requireFits(mem: DevicePtr | HostMemory, bytes: number, what: string): void {
  if (typeof mem !== 'number' && mem.byteLength < bytes) {
    throw new FfiArgumentError(`${what} holds ${mem.byteLength} bytes, copy needs ${bytes}`);
  }
}
