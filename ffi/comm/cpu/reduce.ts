// Element-wise reductions for the CPU collectives. Each call folds `src` into `dst` in
// place; the ring algorithm fixes which rank's contribution is folded in when, so the
// result does not depend on arrival order.
import type { CollectiveArray, ReduceOp } from '../communicator.ts';

/** dst[i] = op(dst[i], src[i]) for every i. Both arrays have the same type and length. */
export function reduceInto<T extends CollectiveArray>(dst: T, src: T, op: ReduceOp): void {
  const n = dst.length;
  if (src.length !== n) throw new RangeError(`reduceInto: length ${src.length} != ${n}`);
  if (dst instanceof Uint8Array) {
    // Uint8 sums wrap modulo 256, the same as NCCL's ncclUint8.
    const s = src as Uint8Array;
    if (op === 'sum') for (let i = 0; i < n; i++) dst[i] = (dst[i]! + s[i]!) & 0xff;
    else if (op === 'max') for (let i = 0; i < n; i++) dst[i] = Math.max(dst[i]!, s[i]!);
    else for (let i = 0; i < n; i++) dst[i] = Math.min(dst[i]!, s[i]!);
    return;
  }
  if (dst instanceof Int32Array) {
    // Int32 sums wrap modulo 2^32, as the hardware and NCCL do.
    const d = dst as Int32Array;
    const s = src as Int32Array;
    if (op === 'sum') for (let i = 0; i < n; i++) d[i] = (d[i]! + s[i]!) | 0;
    else if (op === 'max') for (let i = 0; i < n; i++) d[i] = d[i]! > s[i]! ? d[i]! : s[i]!;
    else for (let i = 0; i < n; i++) d[i] = d[i]! < s[i]! ? d[i]! : s[i]!;
    return;
  }
  // Float32Array and Float64Array: the typed-array store rounds each sum to the element
  // type, so a float32 sum is the float32 sum, not a float64 one rounded later.
  const d = dst as Float32Array | Float64Array;
  const s = src as Float32Array | Float64Array;
  if (op === 'sum') for (let i = 0; i < n; i++) d[i] = d[i]! + s[i]!;
  else if (op === 'max') for (let i = 0; i < n; i++) d[i] = maxNaN(d[i]!, s[i]!);
  else for (let i = 0; i < n; i++) d[i] = minNaN(d[i]!, s[i]!);
}

/** A view of `bytes` typed like `like` (bytes must be aligned to the element size). */
export function viewLike<T extends CollectiveArray>(like: T, bytes: Uint8Array): T {
  const ctor = like.constructor as new (buffer: ArrayBufferLike, byteOffset: number, length: number) => T;
  return new ctor(bytes.buffer, bytes.byteOffset, bytes.byteLength / like.BYTES_PER_ELEMENT);
}

/** The raw bytes of a typed array, without copying. */
export function bytesOf(a: CollectiveArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

// NaN wins: a NaN in any rank's input makes the result NaN, whatever order the operands
// meet in, so every rank and every ring size agree.
function maxNaN(a: number, b: number): number {
  return a > b || a !== a ? a : b;
}
function minNaN(a: number, b: number): number {
  return a < b || a !== a ? a : b;
}
