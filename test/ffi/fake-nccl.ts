// Builds the stand-in libnccl (fixtures/fake-nccl.c) with gcc into a temp dir and binds its
// recording hooks, plus a host-memory DeviceMemory whose streams are the fake's streams.
import { dlopen, FFIType, toArrayBuffer, type Pointer } from 'bun:ffi';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { processAlive } from '../node/helpers.ts';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DeviceMemory } from '../../ffi/comm/nccl.ts';

const SOURCE = join(import.meta.dir, 'fixtures', 'fake-nccl.c');
const { i32, i64, u64, ptr: p, void: none } = FFIType;

const HOOKS = {
  fake_reset: { args: [], returns: none },
  fake_set_inprogress_polls: { args: [i32], returns: none },
  fake_set_hang: { args: [i32], returns: none },
  fake_last_config: { args: [p, u64], returns: u64 },
  fake_last_id: { args: [p], returns: none },
  fake_last_init: { args: [p], returns: i32 },
  fake_last_op: { args: [p], returns: none },
  fake_counters: { args: [p], returns: none },
  fake_last_shrink: { args: [p], returns: none },
  fake_stream_create: { args: [], returns: p },
  fake_stream_query: { args: [p], returns: i32 },
  fake_stream_destroy: { args: [p], returns: none },
  fake_memcpy_async: { args: [p, p, u64, p], returns: i32 },
  fake_host_alloc: { args: [u64], returns: p },
  fake_host_free: { args: [p], returns: none },
  fake_config_sizeof: { args: [], returns: u64 },
  fake_config_offsetof: { args: [p], returns: i64 },
  fake_enum_value: { args: [p], returns: i64 },
} as const;

export interface FakeVariant {
  /** ncclGetVersion's code; default 23007. */
  readonly version?: number;
  /** Leave out ncclCommInitRankScalable (libraries before 2.23.4). */
  readonly noScalable?: boolean;
}

export interface FakeNccl {
  /** Directory holding lib/libnccl.so.2 (an NCCL_HOME). */
  readonly home: string;
  readonly path: string;
  reset(): void;
  setInProgressPolls(n: number): void;
  setHang(hang: boolean): void;
  lastConfig(): Uint8Array;
  lastId(): Uint8Array;
  /** api: 1 InitRankScalable, 2 InitRankConfig (id by value). */
  lastInit(): { api: number; nranks: number; rank: number; nId: number };
  lastOp(): { kind: number; count: number; type: number; op: number; root: number; groupDepth: number };
  counters(): { aborts: number; destroys: number; finalizes: number; groupStarts: number; groupEnds: number; asyncPolls: number; shrinks: number; grows: number };
  lastShrink(): { excluded: number[]; flags: number };
  configSizeof(): number;
  configOffsetof(field: string): number;
  enumValue(name: string): number;
  /** DeviceMemory on plain host memory; its streams are the fake's streams. */
  hostMemory(): DeviceMemory & { liveAllocations(): number };
}

const built = new Map<string, FakeNccl>();

/**
 * Fake libraries live under one directory, a folder per test process; folders of processes
 * that are gone are removed here, so runs do not pile up builds in the temp directory.
 */
function fakeRoot(): string {
  const root = join(tmpdir(), 'rankmesh-fake-nccl');
  mkdirSync(root, { recursive: true });
  for (const name of readdirSync(root)) {
    const pid = Number(name.split('-')[0]);
    if (pid !== process.pid && !processAlive(pid)) rmSync(join(root, name), { recursive: true, force: true });
  }
  return root;
}

export function buildFakeNccl(variant: FakeVariant = {}): FakeNccl {
  const version = variant.version ?? 23007;
  const key = `${version}-${variant.noScalable === true}`;
  const cached = built.get(key);
  if (cached !== undefined) return cached;
  const home = mkdtempSync(join(fakeRoot(), `${process.pid}-`));
  mkdirSync(join(home, 'lib'));
  const path = join(home, 'lib', 'libnccl.so.2');
  const args = ['gcc', '-shared', '-fPIC', '-O1', `-DFAKE_VERSION=${version}`, '-o', path, SOURCE];
  if (variant.noScalable === true) args.splice(4, 0, '-DFAKE_NO_SCALABLE');
  const res = Bun.spawnSync(args, { stderr: 'pipe' });
  if (res.exitCode !== 0) throw new Error(`gcc failed: ${res.stderr.toString()}`);
  const fn = dlopen(path, HOOKS).symbols;
  const cstr = (s: string): Uint8Array => new TextEncoder().encode(`${s}\0`);
  const fake: FakeNccl = {
    home,
    path,
    reset: () => fn.fake_reset(),
    setInProgressPolls: (n) => fn.fake_set_inprogress_polls(n),
    setHang: (h) => fn.fake_set_hang(h ? 1 : 0),
    lastConfig: () => {
      const buf = new Uint8Array(256);
      const n = Number(fn.fake_last_config(buf, 256));
      return buf.slice(0, n);
    },
    lastId: () => {
      const buf = new Uint8Array(128);
      fn.fake_last_id(buf);
      return buf;
    },
    lastInit: () => {
      const out = new Int32Array(3);
      const api = fn.fake_last_init(out);
      return { api, nranks: out[0] ?? -1, rank: out[1] ?? -1, nId: out[2] ?? -1 };
    },
    lastOp: () => {
      const o = new BigInt64Array(7);
      fn.fake_last_op(o);
      const n = (i: number): number => Number(o[i]);
      return { kind: n(0), count: n(1), type: n(2), op: n(3), root: n(4), groupDepth: n(5) };
    },
    counters: () => {
      const c = new Int32Array(8);
      fn.fake_counters(c);
      const n = (i: number): number => c[i] ?? 0;
      return { aborts: n(0), destroys: n(1), finalizes: n(2), groupStarts: n(3), groupEnds: n(4), asyncPolls: n(5), shrinks: n(6), grows: n(7) };
    },
    lastShrink: () => {
      const s = new Int32Array(10);
      fn.fake_last_shrink(s);
      const count = s[0] ?? 0;
      return { excluded: [...s.subarray(2, 2 + count)], flags: s[1] ?? 0 };
    },
    configSizeof: () => Number(fn.fake_config_sizeof()),
    configOffsetof: (field) => Number(fn.fake_config_offsetof(cstr(field))),
    enumValue: (name) => Number(fn.fake_enum_value(cstr(name))),
    hostMemory: () => hostMemory(fn),
  };
  built.set(key, fake);
  return fake;
}

function hostMemory(fn: ReturnType<typeof dlopen<typeof HOOKS>>['symbols']): DeviceMemory & { liveAllocations(): number } {
  // malloc'd outside the JS heap, where the garbage collector can neither move nor free it.
  const live = new Map<number, number>();
  const alloc = (bytes: number): number => {
    const addr = Number(fn.fake_host_alloc(bytes));
    live.set(addr, bytes);
    return addr;
  };
  const release = (addr: number): void => {
    if (!live.delete(addr)) throw new Error(`free of unknown address ${addr}`);
    fn.fake_host_free(addr as Pointer);
  };
  return {
    setDevice: () => undefined,
    createStream: () => Number(fn.fake_stream_create()),
    destroyStream: (s) => fn.fake_stream_destroy(s as Pointer),
    streamDone: (s) => fn.fake_stream_query(s as Pointer) === 0,
    allocDevice: alloc,
    freeDevice: release,
    allocHost: (bytes) => {
      const addr = alloc(bytes);
      return { ptr: addr, view: new Uint8Array(toArrayBuffer(addr as Pointer, 0, bytes)) };
    },
    freeHost: release,
    copyAsync: (dst, src, bytes, _kind, stream) => {
      if (fn.fake_memcpy_async(dst as Pointer, src as Pointer, bytes, stream as Pointer) !== 0) throw new Error('fake stream copy queue full');
    },
    liveAllocations: () => live.size,
  };
}
