// libnccl through bun:ffi: the symbols every supported version has are bound together;
// those that arrived later (InitRankScalable, Shrink, Grow, GetLastError, the by-value
// InitRankConfig) are bound one at a time, because dlopen fails outright when any listed
// symbol is missing. Calls return the raw ncclResult_t; check() turns it into NcclError.
import { dlopen, FFIType, type FFIFunction, type Library } from 'bun:ffi';
import { findNccl, type DiscoveryOptions } from '../discovery.ts';
import type { LooseSymbols } from '../ffi-types.ts';
import { LibraryNotFoundError, NcclError } from '../errors.ts';
import {
  formatNcclVersion,
  NCCL_MIN_GROW,
  NCCL_MIN_INIT_SCALABLE,
  NCCL_MIN_NONBLOCKING,
  NCCL_MIN_SHRINK,
  NCCL_UNIQUE_ID_BYTES,
  ncclResultName,
  NcclResult,
} from './codes.ts';

const { i32, u64, ptr, cstring } = FFIType;

const REQUIRED = {
  ncclGetVersion: { args: [ptr], returns: i32 }, // (int*)
  ncclGetUniqueId: { args: [ptr], returns: i32 }, // (ncclUniqueId*)
  ncclGetErrorString: { args: [i32], returns: cstring },
  ncclCommFinalize: { args: [ptr], returns: i32 },
  ncclCommDestroy: { args: [ptr], returns: i32 },
  ncclCommAbort: { args: [ptr], returns: i32 },
  ncclCommGetAsyncError: { args: [ptr, ptr], returns: i32 }, // (comm, ncclResult_t*)
  ncclCommCount: { args: [ptr, ptr], returns: i32 }, // (comm, int*)
  ncclCommUserRank: { args: [ptr, ptr], returns: i32 }, // (comm, int*)
  // (sendbuff, recvbuff, count, datatype, op, comm, stream)
  ncclAllReduce: { args: [ptr, ptr, u64, i32, i32, ptr, ptr], returns: i32 },
  // (sendbuff, recvbuff, count, datatype, root, comm, stream)
  ncclBroadcast: { args: [ptr, ptr, u64, i32, i32, ptr, ptr], returns: i32 },
  // (sendbuff, recvbuff, sendcount, datatype, comm, stream)
  ncclAllGather: { args: [ptr, ptr, u64, i32, ptr, ptr], returns: i32 },
  // (sendbuff, recvbuff, recvcount, datatype, op, comm, stream)
  ncclReduceScatter: { args: [ptr, ptr, u64, i32, i32, ptr, ptr], returns: i32 },
  // (sendbuff, count, datatype, peer, comm, stream)
  ncclSend: { args: [ptr, u64, i32, i32, ptr, ptr], returns: i32 },
  ncclRecv: { args: [ptr, u64, i32, i32, ptr, ptr], returns: i32 },
  ncclGroupStart: { args: [], returns: i32 },
  ncclGroupEnd: { args: [], returns: i32 },
} as const satisfies Record<string, FFIFunction>;

/**
 * ncclCommInitRankConfig(ncclComm_t*, int nranks, ncclUniqueId id, int rank, ncclConfig_t*)
 * passes the 128-byte id by value. On x86-64 SysV a struct over 16 bytes is MEMORY class:
 * it goes on the stack while the integer arguments keep their registers (comm rdi,
 * nranks rsi, rank rdx, config rcx). So the call is declared with rank and config moved
 * forward, two padding words for r8/r9, and the id as 16 stack words.
 */
const INIT_RANK_CONFIG_SYSV: FFIFunction = {
  args: [ptr, i32, i32, ptr, u64, u64, ...new Array<typeof u64>(16).fill(u64)],
  returns: i32,
};

const OPTIONAL = {
  ncclGetLastError: { args: [ptr], returns: cstring }, // (comm, unused)
  // (newcomm*, nranks, myrank, nId, ncclUniqueId* ids, config*)
  ncclCommInitRankScalable: { args: [ptr, i32, i32, i32, ptr, ptr], returns: i32 },
  // (comm, int* exclude, excludeCount, newcomm*, config*, shrinkFlags)
  ncclCommShrink: { args: [ptr, ptr, i32, ptr, ptr, i32], returns: i32 },
  // (comm, nRanks, const ncclUniqueId*, rank, newcomm*, config*)
  ncclCommGrow: { args: [ptr, i32, ptr, i32, ptr, ptr], returns: i32 },
} as const satisfies Record<string, FFIFunction>;

type Fn = (...args: unknown[]) => unknown;

export interface NcclLoadOptions extends DiscoveryOptions {
  /** Refuse InitRankScalable even when present (tests the by-value path). */
  readonly avoidInitRankScalable?: boolean;
}

/** Opens libnccl (found by discovery unless a path is given); needs NCCL ≥ 2.14.3. */
export function loadNccl(opts: NcclLoadOptions = {}): NcclLibrary {
  const found = findNccl(opts);
  let lib: Library<typeof REQUIRED>;
  try {
    lib = dlopen(found.path, REQUIRED);
  } catch (err) {
    throw new LibraryNotFoundError('libnccl', [
      ...found.rejected,
      { path: found.path, source: found.source, reason: `missing required symbols: ${String(err)}` },
    ]);
  }
  const out = new Int32Array(1);
  const rc = lib.symbols.ncclGetVersion(out);
  const version = out[0] ?? 0;
  if (rc !== NcclResult.Success || version < NCCL_MIN_NONBLOCKING) {
    lib.close();
    throw new LibraryNotFoundError('libnccl', [
      ...found.rejected,
      {
        path: found.path,
        source: found.source,
        reason: `version ${formatNcclVersion(version)} (rc ${rc}) is older than ${formatNcclVersion(NCCL_MIN_NONBLOCKING)}, which non-blocking communicators need`,
      },
    ]);
  }
  return new NcclLibrary(found.path, version, lib, opts.avoidInitRankScalable ?? false);
}

export class NcclLibrary {
  readonly fn: LooseSymbols<typeof REQUIRED>;
  private readonly optional = new Map<string, Library<Record<string, FFIFunction>>>();

  constructor(
    readonly path: string,
    /** ncclGetVersion's code, e.g. 23007. */
    readonly version: number,
    private readonly lib: Library<typeof REQUIRED>,
    avoidInitRankScalable: boolean,
  ) {
    this.fn = lib.symbols as unknown as LooseSymbols<typeof REQUIRED>;
    for (const [name, def] of Object.entries(OPTIONAL)) {
      if (name === 'ncclCommInitRankScalable' && avoidInitRankScalable) continue;
      this.bindOptional(name, name, def);
    }
    this.bindOptional('initRankConfigSysV', 'ncclCommInitRankConfig', INIT_RANK_CONFIG_SYSV);
  }

  get versionString(): string {
    return formatNcclVersion(this.version);
  }

  /** Whether the library exports ncclCommInitRankScalable (the id is passed by pointer). */
  get hasInitRankScalable(): boolean {
    return this.optional.has('ncclCommInitRankScalable') && this.version >= NCCL_MIN_INIT_SCALABLE;
  }

  get hasShrink(): boolean {
    return this.optional.has('ncclCommShrink') && this.version >= NCCL_MIN_SHRINK;
  }

  get hasGrow(): boolean {
    return this.optional.has('ncclCommGrow') && this.version >= NCCL_MIN_GROW;
  }

  /** A fresh ncclUniqueId (128 bytes) to ship to the other ranks. */
  getUniqueId(): Uint8Array {
    const id = new Uint8Array(NCCL_UNIQUE_ID_BYTES);
    this.check('ncclGetUniqueId', this.fn.ncclGetUniqueId(id));
    return id;
  }

  /**
   * Starts communicator init for `rank` of `nranks` with the given id and config bytes;
   * returns the raw result (InProgress is normal for a non-blocking config) and the handle.
   */
  commInitRank(nranks: number, rank: number, uniqueId: Uint8Array, config: Uint8Array): { rc: number; comm: number } {
    const out = new BigUint64Array(1);
    let rc: number;
    if (this.hasInitRankScalable) {
      rc = this.call('ncclCommInitRankScalable', out, nranks, rank, 1, uniqueId, config) as number;
    } else if (process.arch === 'x64' && this.optional.has('initRankConfigSysV')) {
      const words = new BigUint64Array(uniqueId.buffer.slice(uniqueId.byteOffset, uniqueId.byteOffset + NCCL_UNIQUE_ID_BYTES));
      rc = this.call('initRankConfigSysV', out, nranks, rank, config, 0n, 0n, ...words) as number;
    } else {
      throw new NcclError(
        'ncclCommInitRank',
        NcclResult.InvalidUsage,
        ncclResultName(NcclResult.InvalidUsage),
        `NCCL ${this.versionString} lacks ncclCommInitRankScalable and the by-value id call is only laid out for x86-64`,
      );
    }
    return { rc, comm: Number(out[0]) };
  }

  /** ncclCommShrink; returns the raw result and the new handle. */
  commShrink(comm: number, excludeRanks: readonly number[], config: Uint8Array | null, flags: number): { rc: number; comm: number } {
    this.requireOptional('ncclCommShrink', this.hasShrink);
    const out = new BigUint64Array(1);
    const exclude = new Int32Array(excludeRanks.length === 0 ? 1 : excludeRanks.length);
    exclude.set(excludeRanks);
    const rc = this.call('ncclCommShrink', comm, exclude, excludeRanks.length, out, config, flags) as number;
    return { rc, comm: Number(out[0]) };
  }

  /** ncclCommGrow; `uniqueId` null for existing non-root ranks, `rank` -1 for existing ranks. */
  commGrow(comm: number, nranks: number, uniqueId: Uint8Array | null, rank: number, config: Uint8Array | null): { rc: number; comm: number } {
    this.requireOptional('ncclCommGrow', this.hasGrow);
    const out = new BigUint64Array(1);
    const rc = this.call('ncclCommGrow', comm, nranks, uniqueId, rank, out, config) as number;
    return { rc, comm: Number(out[0]) };
  }

  /** The comm's async state: Success, InProgress, or the error that broke it. */
  asyncError(comm: number): number {
    const out = new Int32Array(1);
    const rc = this.fn.ncclCommGetAsyncError(comm, out);
    this.check('ncclCommGetAsyncError', rc, comm);
    return out[0] ?? 0;
  }

  /** Throws NcclError for anything but Success (InProgress included: callers handle it first). */
  check(call: string, rc: number, comm = 0): void {
    if (rc === NcclResult.Success) return;
    throw this.error(call, rc, comm);
  }

  error(call: string, rc: number, comm = 0): NcclError {
    let description = String(this.fn.ncclGetErrorString(rc));
    if (this.optional.has('ncclGetLastError')) {
      const last = String(this.call('ncclGetLastError', comm) ?? '');
      if (last !== '' && last !== 'null') description += ` (last error: ${last})`;
    }
    return new NcclError(call, rc, ncclResultName(rc), description);
  }

  close(): void {
    for (const lib of this.optional.values()) lib.close();
    this.optional.clear();
    this.lib.close();
  }

  private bindOptional(key: string, symbol: string, def: FFIFunction): void {
    try {
      this.optional.set(key, dlopen(this.path, { [symbol]: def }));
    } catch {
      // Absent in this version: the has* getters report it and callers take another path.
    }
  }

  private call(key: string, ...args: unknown[]): unknown {
    const lib = this.optional.get(key);
    const symbol = key === 'initRankConfigSysV' ? 'ncclCommInitRankConfig' : key;
    const fn = lib?.symbols[symbol] as Fn | undefined;
    if (fn === undefined) throw new NcclError(symbol, NcclResult.InvalidUsage, 'ncclInvalidUsage', 'symbol not in this library');
    return fn(...args);
  }

  private requireOptional(symbol: string, present: boolean): void {
    if (!present) {
      throw new NcclError(symbol, NcclResult.InvalidUsage, 'ncclInvalidUsage', `not available in NCCL ${this.versionString}`);
    }
  }
}
