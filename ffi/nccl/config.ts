// ncclConfig_t built by hand, since bun:ffi has no structs. The struct is append-only and
// versioned: a program compiled against header version V writes sizeof(its struct) into
// `size` and V into `version`, and NCCL copies min(size, its own sizeof) bytes and resets
// every field introduced after `version` to its default. So we write exactly what a
// program compiled against the loaded library's header would write: the layout for
// min(library version, newest layout known here), no field that version does not have.
//
// Offsets are for LP64 (x86-64 and aarch64); test/ffi checks them against gcc's offsetof.
import { ptr } from 'bun:ffi';
import { FfiArgumentError } from '../errors.ts';
import { formatNcclVersion, ncclVersionCode } from './codes.ts';

export type ConfigFieldKind = 'size_t' | 'u32' | 'int' | 'ptr';

export interface ConfigField {
  readonly name: string;
  readonly offset: number;
  readonly kind: ConfigFieldKind;
  /** First ncclGetVersion code whose ncclConfig_t has (and honours) the field. */
  readonly since: number;
}

const v = ncclVersionCode;

/** Every field of ncclConfig_t up to ncclConfig_v23100, in order. */
export const CONFIG_FIELDS: readonly ConfigField[] = [
  { name: 'size', offset: 0, kind: 'size_t', since: v(2, 14, 0) },
  { name: 'magic', offset: 8, kind: 'u32', since: v(2, 14, 0) },
  { name: 'version', offset: 12, kind: 'u32', since: v(2, 14, 0) },
  { name: 'blocking', offset: 16, kind: 'int', since: v(2, 14, 0) },
  { name: 'cgaClusterSize', offset: 20, kind: 'int', since: v(2, 17, 0) },
  { name: 'minCTAs', offset: 24, kind: 'int', since: v(2, 17, 0) },
  { name: 'maxCTAs', offset: 28, kind: 'int', since: v(2, 17, 0) },
  { name: 'netName', offset: 32, kind: 'ptr', since: v(2, 17, 0) },
  { name: 'splitShare', offset: 40, kind: 'int', since: v(2, 18, 0) },
  { name: 'trafficClass', offset: 44, kind: 'int', since: v(2, 26, 0) },
  { name: 'commName', offset: 48, kind: 'ptr', since: v(2, 27, 0) },
  { name: 'collnetEnable', offset: 56, kind: 'int', since: v(2, 27, 0) },
  { name: 'CTAPolicy', offset: 60, kind: 'int', since: v(2, 27, 0) },
  { name: 'shrinkShare', offset: 64, kind: 'int', since: v(2, 27, 0) },
  { name: 'nvlsCTAs', offset: 68, kind: 'int', since: v(2, 27, 0) },
  { name: 'nChannelsPerNetPeer', offset: 72, kind: 'int', since: v(2, 28, 0) },
  { name: 'nvlinkCentricSched', offset: 76, kind: 'int', since: v(2, 28, 0) },
  { name: 'graphUsageMode', offset: 80, kind: 'int', since: v(2, 29, 0) },
  { name: 'numRmaCtx', offset: 84, kind: 'int', since: v(2, 29, 0) },
  { name: 'maxP2pPeers', offset: 88, kind: 'int', since: v(2, 30, 0) },
  { name: 'graphStreamOrdering', offset: 92, kind: 'int', since: v(2, 30, 5) },
  { name: 'launchOrderImplicit', offset: 96, kind: 'int', since: v(2, 31, 0) },
  { name: 'numRmaSig', offset: 100, kind: 'int', since: v(2, 31, 0) },
  { name: 'rmaEagerInit', offset: 104, kind: 'int', since: v(2, 31, 0) },
  { name: 'hostCftMode', offset: 108, kind: 'int', since: v(2, 31, 0) },
  { name: 'nvlsHostMode', offset: 112, kind: 'int', since: v(2, 31, 0) },
];

/** The newest layout described above (ncclConfig_v23100). */
export const CONFIG_LAYOUT_VERSION = v(2, 31, 0);
/** NCCL_API_MAGIC */
export const NCCL_API_MAGIC = 0xcafebeef;
/** NCCL_CONFIG_UNDEF_INT (INT_MIN): "not set, use the library default". */
export const NCCL_CONFIG_UNDEF_INT = -2147483648;

/** User-settable ints; absent means NCCL_CONFIG_UNDEF_INT. */
export type NcclConfigInts = Partial<Record<
  | 'blocking'
  | 'cgaClusterSize'
  | 'minCTAs'
  | 'maxCTAs'
  | 'splitShare'
  | 'trafficClass'
  | 'collnetEnable'
  | 'CTAPolicy'
  | 'shrinkShare'
  | 'nvlsCTAs'
  | 'nChannelsPerNetPeer'
  | 'nvlinkCentricSched'
  | 'graphUsageMode'
  | 'numRmaCtx'
  | 'maxP2pPeers'
  | 'graphStreamOrdering'
  | 'launchOrderImplicit'
  | 'numRmaSig'
  | 'rmaEagerInit'
  | 'hostCftMode'
  | 'nvlsHostMode',
  number
>>;

export interface NcclConfigOptions extends NcclConfigInts {
  /** Pointer fields take C strings; the returned `keepAlive` must outlive the init call. */
  readonly netName?: string;
  readonly commName?: string;
}

export interface BuiltConfig {
  /** The struct bytes; pass `bytes` as the ncclConfig_t* argument. */
  readonly bytes: Uint8Array;
  /** The header version written into `version`. */
  readonly version: number;
  /** Buffers the struct's pointers point into. */
  readonly keepAlive: readonly Uint8Array[];
}

/** sizeof(ncclConfig_t) in the header of the given library version (0: no config struct). */
export function configSizeFor(libraryVersion: number): number {
  let end = 0;
  for (const f of CONFIG_FIELDS) {
    if (f.since <= libraryVersion) end = Math.max(end, f.offset + (f.kind === 'size_t' || f.kind === 'ptr' ? 8 : 4));
  }
  return Math.ceil(end / 8) * 8;
}

/**
 * The ncclConfig_t a program compiled against `libraryVersion`'s header would pass, with
 * NCCL_CONFIG_INITIALIZER defaults and the given fields set. A field the version does not
 * have is a typed error, not a silently ignored setting.
 */
export function buildNcclConfig(libraryVersion: number, opts: NcclConfigOptions = {}): BuiltConfig {
  const version = Math.min(libraryVersion, CONFIG_LAYOUT_VERSION);
  const size = configSizeFor(version);
  if (size === 0) throw new FfiArgumentError(`NCCL ${formatNcclVersion(libraryVersion)} has no ncclConfig_t`);
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  const keepAlive: Uint8Array[] = [];
  const given = opts as Readonly<Record<string, number | string | undefined>>;
  for (const field of CONFIG_FIELDS) {
    const value = given[field.name];
    if (field.since > version) {
      if (value !== undefined) {
        throw new FfiArgumentError(
          `ncclConfig_t.${field.name} needs NCCL ≥ ${formatNcclVersion(field.since)}, library is ${formatNcclVersion(libraryVersion)}`,
        );
      }
      continue;
    }
    switch (field.kind) {
      case 'size_t':
        view.setBigUint64(field.offset, BigInt(size), true);
        break;
      case 'u32':
        view.setUint32(field.offset, field.name === 'magic' ? NCCL_API_MAGIC : version, true);
        break;
      case 'int':
        if (value !== undefined && (typeof value !== 'number' || !Number.isInteger(value))) {
          throw new FfiArgumentError(`ncclConfig_t.${field.name} must be an integer`);
        }
        view.setInt32(field.offset, value ?? NCCL_CONFIG_UNDEF_INT, true);
        break;
      case 'ptr': {
        if (value === undefined) break; // NCCL_CONFIG_UNDEF_PTR is NULL: already zero.
        if (typeof value !== 'string') throw new FfiArgumentError(`ncclConfig_t.${field.name} must be a string`);
        const cstr = new TextEncoder().encode(`${value}\0`);
        keepAlive.push(cstr);
        view.setBigUint64(field.offset, BigInt(ptr(cstr)), true);
        break;
      }
    }
  }
  return { bytes, version, keepAlive };
}
