// NCCL enum values and version arithmetic, as nccl.h defines them (values are ABI: they
// never change between releases, new ones are only appended).
import type { CollectiveArray, ReduceOp } from '../comm/communicator.ts';
import { FfiArgumentError } from '../errors.ts';

/** ncclResult_t */
export const NcclResult = {
  Success: 0,
  UnhandledCudaError: 1,
  SystemError: 2,
  InternalError: 3,
  InvalidArgument: 4,
  InvalidUsage: 5,
  RemoteError: 6, // ≥ 2.13
  InProgress: 7, // ≥ 2.14: non-blocking communicators
  Timeout: 8, // ≥ 2.30.3
} as const;

const RESULT_NAMES: readonly string[] = [
  'ncclSuccess',
  'ncclUnhandledCudaError',
  'ncclSystemError',
  'ncclInternalError',
  'ncclInvalidArgument',
  'ncclInvalidUsage',
  'ncclRemoteError',
  'ncclInProgress',
  'ncclTimeout',
];

export function ncclResultName(code: number): string {
  return RESULT_NAMES[code] ?? `ncclResult(${code})`;
}

/** ncclDataType_t */
export const NcclDataType = {
  Int8: 0,
  Uint8: 1,
  Int32: 2,
  Uint32: 3,
  Int64: 4,
  Uint64: 5,
  Float16: 6,
  Float32: 7,
  Float64: 8,
  Bfloat16: 9,
  Float8e4m3: 10, // ≥ 2.24
  Float8e5m2: 11, // ≥ 2.24
} as const;
export type NcclDataType = (typeof NcclDataType)[keyof typeof NcclDataType];

/** ncclRedOp_t (built-in operators) */
export const NcclRedOp = { Sum: 0, Prod: 1, Max: 2, Min: 3, Avg: 4 } as const;
export type NcclRedOp = (typeof NcclRedOp)[keyof typeof NcclRedOp];

/** NCCL_VERSION(X,Y,Z): the code ncclGetVersion reports (2.30.7 → 23007, 2.8.4 → 2804). */
export function ncclVersionCode(major: number, minor: number, patch: number): number {
  return major <= 2 && minor <= 8 ? major * 1000 + minor * 100 + patch : major * 10000 + minor * 100 + patch;
}

/** '2.30.7' for 23007; inverse of ncclVersionCode. */
export function formatNcclVersion(code: number): string {
  if (code < 10000) return `${Math.floor(code / 1000)}.${Math.floor((code % 1000) / 100)}.${code % 100}`;
  return `${Math.floor(code / 10000)}.${Math.floor((code % 10000) / 100)}.${code % 100}`;
}

/** Feature thresholds, as ncclGetVersion codes. */
export const NCCL_MIN_NONBLOCKING = ncclVersionCode(2, 14, 3);
export const NCCL_MIN_INIT_SCALABLE = ncclVersionCode(2, 23, 4);
export const NCCL_MIN_SHRINK = ncclVersionCode(2, 27, 3);
export const NCCL_MIN_GROW = ncclVersionCode(2, 29, 2);

/** NCCL_SHRINK_DEFAULT / NCCL_SHRINK_ABORT */
export const NCCL_SHRINK_DEFAULT = 0x00;
export const NCCL_SHRINK_ABORT = 0x01;

export const NCCL_UNIQUE_ID_BYTES = 128;

export function dataTypeOf(data: CollectiveArray): NcclDataType {
  if (data instanceof Float32Array) return NcclDataType.Float32;
  if (data instanceof Float64Array) return NcclDataType.Float64;
  if (data instanceof Int32Array) return NcclDataType.Int32;
  if (data instanceof Uint8Array) return NcclDataType.Uint8;
  throw new FfiArgumentError('unsupported collective element type');
}

export function redOpOf(op: ReduceOp): NcclRedOp {
  switch (op) {
    case 'sum':
      return NcclRedOp.Sum;
    case 'max':
      return NcclRedOp.Max;
    case 'min':
      return NcclRedOp.Min;
    default:
      throw new FfiArgumentError(`unsupported reduce op ${String(op)}`);
  }
}
