// A looser view of a bound symbol table: pointer arguments may be plain numbers (how this
// code keeps device addresses and handles), bigints, typed arrays or null. bun:ffi accepts
// all of these for `ptr` arguments; only its TypeScript types insist on branded pointers.
import type { CString, FFIFunction, FFIType } from 'bun:ffi';

export type NativeArg = number | bigint | NodeJS.TypedArray | null;

export type LooseSymbols<T extends Record<string, FFIFunction>> = {
  [K in keyof T]: (...args: NativeArg[]) => T[K]['returns'] extends typeof FFIType.cstring ? CString : number;
};
