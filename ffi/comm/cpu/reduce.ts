// Element-wise reductions for the CPU collectives. Each call combines two arrays in
// one pass; the ring algorithm fixes which rank's contribution is folded in when, so the
// result does not depend on arrival order.
import type { CollectiveArray, ReduceOp } from '../communicator.ts';

/** out[i] = op(a[i], b[i]) for every i. All three have the same type and length; out may be a. */
export function reduceInto<T extends CollectiveArray>(out: T, a: T, b: T, op: ReduceOp): void {
  const n = out.length;
  if (a.length !== n || b.length !== n) throw new RangeError(`reduceInto: lengths ${a.length}, ${b.length} != ${n}`);
  if (out instanceof Uint8Array) {
    // Uint8 sums wrap modulo 256, the same as NCCL's ncclUint8.
    const [o, x, y] = [out as Uint8Array, a as Uint8Array, b as Uint8Array];
    if (op === 'sum') for (let i = 0; i < n; i++) o[i] = (x[i]! + y[i]!) & 0xff;
    else if (op === 'max') for (let i = 0; i < n; i++) o[i] = Math.max(x[i]!, y[i]!);
    else for (let i = 0; i < n; i++) o[i] = Math.min(x[i]!, y[i]!);
    return;
  }
  if (out instanceof Int32Array) {
    // Int32 sums wrap modulo 2^32, as the hardware and NCCL do.
    const [o, x, y] = [out as Int32Array, a as Int32Array, b as Int32Array];
    if (op === 'sum') for (let i = 0; i < n; i++) o[i] = (x[i]! + y[i]!) | 0;
    else if (op === 'max') for (let i = 0; i < n; i++) o[i] = x[i]! > y[i]! ? x[i]! : y[i]!;
    else for (let i = 0; i < n; i++) o[i] = x[i]! < y[i]! ? x[i]! : y[i]!;
    return;
  }
  // Float32Array and Float64Array: the typed-array store rounds each sum to the element
  // type, so a float32 sum is the float32 sum, not a float64 one rounded later.
  const [o, x, y] = [out as Float32Array | Float64Array, a as Float32Array | Float64Array, b as Float32Array | Float64Array];
  if (op === 'sum') for (let i = 0; i < n; i++) o[i] = x[i]! + y[i]!;
  else if (op === 'max') for (let i = 0; i < n; i++) o[i] = maxNaN(x[i]!, y[i]!);
  else for (let i = 0; i < n; i++) o[i] = minNaN(x[i]!, y[i]!);
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
