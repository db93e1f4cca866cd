// The compiled expert kernels (moe.cu) bound through bun:ffi.
import { dlopen, FFIType, type Library } from 'bun:ffi';
import { KernelBuildError } from '../errors.ts';
import type { LooseSymbols } from '../ffi-types.ts';

const { i32, ptr } = FFIType;

/** Must equal rankmesh_moe_abi_version() in moe.cu. */
export const MOE_ABI_VERSION = 1;

const MOE_SYMBOLS = {
  rankmesh_moe_abi_version: { args: [], returns: i32 },
  // (x, w1, w2, hid, y, rows, d, h, stream) → cudaError_t
  rankmesh_moe_expert_forward: { args: [ptr, ptr, ptr, ptr, ptr, i32, i32, i32, ptr], returns: i32 },
} as const;

export interface ExpertKernels {
  readonly path: string;
  /** Enqueues y = relu(x·w1)·w2 on `stream` (device addresses); returns the launch's cudaError_t. */
  forward(x: number, w1: number, w2: number, hid: number, y: number, rows: number, d: number, h: number, stream: number): number;
  close(): void;
}

/** Opens a built kernel library; KernelBuildError if it will not load or is another ABI. */
export function loadExpertKernels(path: string): ExpertKernels {
  let lib: Library<typeof MOE_SYMBOLS>;
  try {
    lib = dlopen(path, MOE_SYMBOLS);
  } catch (err) {
    throw new KernelBuildError(`cannot load expert kernels ${path}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const fn = lib.symbols as unknown as LooseSymbols<typeof MOE_SYMBOLS>;
  const abi = fn.rankmesh_moe_abi_version();
  if (abi !== MOE_ABI_VERSION) {
    lib.close();
    throw new KernelBuildError(`expert kernels ${path} have ABI ${abi}, expected ${MOE_ABI_VERSION}`);
  }
  return {
    path,
    forward: (x, w1, w2, hid, y, rows, d, h, stream) => fn.rankmesh_moe_expert_forward(x, w1, w2, hid, y, rows, d, h, stream),
    close: () => lib.close(),
  };
}
