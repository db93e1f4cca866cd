// Typed errors of the native layer. Every failure of a CUDA or NCCL call, a library search
// or a kernel build becomes one of these values, so callers can branch on the kind and
// print the reason instead of crashing the node.

/** One place discovery looked, and why it was not used. */
export interface SearchAttempt {
  readonly path: string;
  /** Where the candidate came from: 'explicit', 'CUDA_HOME', 'system', 'pip', ... */
  readonly source: string;
  readonly reason: string;
}

/** No usable copy of a shared library was found; `attempts` lists every path tried. */
export class LibraryNotFoundError extends Error {
  override readonly name = 'LibraryNotFoundError';
  constructor(
    readonly library: string,
    readonly attempts: readonly SearchAttempt[],
  ) {
    super(
      `${library}: no usable library found; searched ${attempts.length} path(s):\n` +
        attempts.map((a) => `  - ${a.path} [${a.source}]: ${a.reason}`).join('\n'),
    );
  }
}

/** cudaError_t values this code branches on (driver_types.h, CUDA 13). */
export const CUDA_SUCCESS = 0;
export const CUDA_ERROR_STUB_LIBRARY = 34;
export const CUDA_ERROR_INSUFFICIENT_DRIVER = 35;
export const CUDA_ERROR_NO_DEVICE = 100;
export const CUDA_ERROR_NOT_READY = 600;

/** A CUDA runtime call returned a status other than cudaSuccess. */
export class CudaError extends Error {
  override readonly name = 'CudaError';
  constructor(
    /** The runtime function that failed, e.g. 'cudaMalloc'. */
    readonly call: string,
    /** The cudaError_t value. */
    readonly code: number,
    /** The enum name from cudaGetErrorName, e.g. 'cudaErrorInsufficientDriver'. */
    readonly codeName: string,
    readonly description: string,
  ) {
    super(`${call} failed: ${codeName} (${code}): ${description}`);
  }

  /** True when the host has no usable CUDA driver or no device: retrying will not help. */
  get noDriver(): boolean {
    return (
      this.code === CUDA_ERROR_INSUFFICIENT_DRIVER ||
      this.code === CUDA_ERROR_STUB_LIBRARY ||
      this.code === CUDA_ERROR_NO_DEVICE
    );
  }
}

/** An NCCL call returned a status other than ncclSuccess (and not ncclInProgress). */
export class NcclError extends Error {
  override readonly name = 'NcclError';
  constructor(
    readonly call: string,
    /** The ncclResult_t value. */
    readonly code: number,
    /** e.g. 'ncclInvalidArgument'. */
    readonly codeName: string,
    /** ncclGetErrorString, plus ncclGetLastError when the library had one. */
    readonly description: string,
  ) {
    super(`${call} failed: ${codeName} (${code}): ${description}`);
  }
}

/** A native operation did not complete by its deadline (the communicator was aborted). */
export class DeadlineExceededError extends Error {
  override readonly name = 'DeadlineExceededError';
  constructor(
    readonly operation: string,
    readonly waitedMs: number,
  ) {
    super(`${operation} did not complete within ${waitedMs} ms`);
  }
}

/** The expert kernels could not be built or loaded (no nvcc, compile error, bad library). */
export class KernelBuildError extends Error {
  override readonly name = 'KernelBuildError';
  constructor(
    message: string,
    /** Compiler output, when a compile ran. */
    readonly output = '',
  ) {
    super(output === '' ? message : `${message}\n${output}`);
  }
}

/** A native API was called with arguments it would reject or misuse; nothing was called. */
export class FfiArgumentError extends Error {
  override readonly name = 'FfiArgumentError';
}
