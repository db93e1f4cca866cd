// The libnccl bindings through bun:ffi against a gcc-built stand-in NCCL: loading and optional symbols, the unique id passed by pointer and by value, non-blocking init polling, deadlines, abort, shrink/grow and error mapping.
import { ptr } from 'bun:ffi';
import { beforeEach, describe, expect, test } from 'bun:test';
import { DeadlineExceededError, FfiArgumentError, LibraryNotFoundError, NcclError } from '../../ffi/errors.ts';
import { NcclDataType, NcclRedOp, NcclResult } from '../../ffi/nccl/codes.ts';
import { growJoin, initNcclComm } from '../../ffi/nccl/comm.ts';
import { buildNcclConfig } from '../../ffi/nccl/config.ts';
import { loadNccl } from '../../ffi/nccl/library.ts';
import { buildFakeNccl } from './fake-nccl.ts';

const fake = buildFakeNccl();
const old = buildFakeNccl({ version: 22105, noScalable: true });
const nccl = loadNccl({ explicitPath: fake.path });
const oldNccl = loadNccl({ env: { NCCL_HOME: old.home }, sitePackages: [], systemDirs: [] });
const fast = { pollIntervalMs: 0.1 };

function idOf(seed: number): Uint8Array {
  return Uint8Array.from({ length: 128 }, (_, i) => (i * 31 + seed) & 0xff);
}

beforeEach(() => {
  fake.reset();
  old.reset();
});

describe('loading', () => {
  test('reports the version and binds optional symbols only where present', () => {
    expect(nccl.version).toBe(23007);
    expect(nccl.versionString).toBe('2.30.7');
    expect([nccl.hasInitRankScalable, nccl.hasShrink, nccl.hasGrow]).toEqual([true, true, true]);
    expect(oldNccl.version).toBe(22105);
    expect(oldNccl.path).toBe(old.path);
    expect([oldNccl.hasInitRankScalable, oldNccl.hasShrink, oldNccl.hasGrow]).toEqual([false, false, false]);
  });

  test('a library older than 2.14.3 is refused with the reason', () => {
    const ancient = buildFakeNccl({ version: 21304, noScalable: true });
    const err = (() => {
      try {
        loadNccl({ explicitPath: ancient.path });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(LibraryNotFoundError);
    expect(String((err as Error).message)).toContain('2.13.4');
  });

  test('unique ids are 128 bytes and differ per call', () => {
    const a = nccl.getUniqueId();
    const b = nccl.getUniqueId();
    expect(a.byteLength).toBe(128);
    expect(a).not.toEqual(b);
  });
});

describe('communicator init', () => {
  test('InitRankScalable receives the id by pointer and a non-blocking config; init polls until ready', async () => {
    fake.setInProgressPolls(4);
    const id = idOf(1);
    const comm = await initNcclComm(nccl, { nranks: 1, rank: 0, uniqueId: id, ...fast });
    expect(fake.lastInit()).toEqual({ api: 1, nranks: 1, rank: 0, nId: 1 });
    expect(fake.lastId()).toEqual(id);
    const cfg = new DataView(fake.lastConfig().buffer);
    expect(fake.lastConfig().byteLength).toBe(96);
    expect(cfg.getUint32(8, true)).toBe(0xcafebeef);
    expect(cfg.getUint32(12, true)).toBe(23007);
    expect(cfg.getInt32(16, true)).toBe(0); // blocking = 0
    expect(fake.counters().asyncPolls).toBeGreaterThanOrEqual(5); // 4 × InProgress, then Success
    expect(comm.asyncError()).toBe(NcclResult.Success);
    await comm.close(fast);
    expect(fake.counters()).toMatchObject({ finalizes: 1, destroys: 1, aborts: 0 });
  });

  test('without InitRankScalable the id goes by value (SysV stack layout) through InitRankConfig', async () => {
    const id = idOf(2);
    const comm = await initNcclComm(oldNccl, { nranks: 1, rank: 0, uniqueId: id, ...fast });
    expect(old.lastInit()).toEqual({ api: 2, nranks: 1, rank: 0, nId: 1 });
    expect(old.lastId()).toEqual(id);
    const cfg = new DataView(old.lastConfig().buffer);
    expect(old.lastConfig().byteLength).toBe(48);
    expect(cfg.getUint32(12, true)).toBe(22105);
    expect(cfg.getInt32(16, true)).toBe(0);
    comm.abort();
  });

  test('the by-value path is also taken on a new library when asked, with the same id bytes', async () => {
    const byValue = loadNccl({ explicitPath: fake.path, avoidInitRankScalable: true });
    const id = idOf(3);
    // Two ranks, so a swapped nranks/rank register or a misplaced config pointer would show.
    const pending0 = initNcclComm(byValue, { nranks: 2, rank: 0, uniqueId: id, ...fast });
    const pending1 = initNcclComm(byValue, { nranks: 2, rank: 1, uniqueId: id, config: { commName: 'by-value' }, ...fast });
    expect(fake.lastInit()).toEqual({ api: 2, nranks: 2, rank: 1, nId: 1 });
    expect(fake.lastId()).toEqual(id);
    const cfg = new DataView(fake.lastConfig().buffer);
    expect(cfg.getUint32(8, true)).toBe(0xcafebeef);
    expect(cfg.getBigUint64(48, true)).not.toBe(0n); // commName pointer arrived in the struct
    const comms = await Promise.all([pending0, pending1]);
    expect(comms.map((c) => [c.rank, c.nranks])).toEqual([[0, 2], [1, 2]]);
    for (const c of comms) c.abort();
  });

  test('a rank that never gets its peers hits the deadline and is aborted', async () => {
    const started = Date.now();
    const err = await initNcclComm(nccl, { nranks: 2, rank: 0, uniqueId: idOf(4), deadlineMs: Date.now() + 50, ...fast }).catch((e) => e);
    expect(err).toBeInstanceOf(DeadlineExceededError);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(fake.counters().aborts).toBe(1);
  });

  test('bad arguments are rejected before any native call', async () => {
    await expect(initNcclComm(nccl, { nranks: 2, rank: 2, uniqueId: idOf(5) })).rejects.toBeInstanceOf(FfiArgumentError);
    await expect(initNcclComm(nccl, { nranks: 1, rank: 0, uniqueId: new Uint8Array(64) })).rejects.toBeInstanceOf(FfiArgumentError);
    expect(fake.lastInit().api).toBe(0);
  });

  test('a library error becomes NcclError with the name, description and last error', async () => {
    const a = await initNcclComm(nccl, { nranks: 1, rank: 0, uniqueId: idOf(6), ...fast });
    const err = await initNcclComm(nccl, { nranks: 1, rank: 0, uniqueId: idOf(6), ...fast }).catch((e) => e);
    expect(err).toBeInstanceOf(NcclError);
    expect(err.code).toBe(NcclResult.InvalidUsage);
    expect(err.codeName).toBe('ncclInvalidUsage');
    expect(err.message).toContain('rank already joined this id');
    a.abort();
  });
});

describe('collectives and groups', () => {
  test('two ranks in one process all-reduce host buffers; args reach NCCL intact', async () => {
    const mem = fake.hostMemory();
    const id = idOf(7);
    const [c0, c1] = await Promise.all([
      initNcclComm(nccl, { nranks: 2, rank: 0, uniqueId: id, ...fast }),
      initNcclComm(nccl, { nranks: 2, rank: 1, uniqueId: id, ...fast }),
    ]);
    const s0 = mem.createStream();
    const s1 = mem.createStream();
    const a = new Float32Array([1, 2, 3]);
    const b = new Float32Array([10, 20, 30]);
    const r0 = new Float32Array(3);
    const r1 = new Float32Array(3);
    await c0.allReduce(ptr(a), ptr(r0), 3, NcclDataType.Float32, NcclRedOp.Sum, s0);
    expect(mem.streamDone(s0)).toBe(false); // rank 1 has not joined the collective yet
    expect(fake.lastOp()).toMatchObject({ kind: 1, count: 3, type: NcclDataType.Float32, op: NcclRedOp.Sum });
    await c1.allReduce(ptr(b), ptr(r1), 3, NcclDataType.Float32, NcclRedOp.Sum, s1);
    expect(mem.streamDone(s0) && mem.streamDone(s1)).toBe(true);
    expect([...r0]).toEqual([11, 22, 33]);
    expect([...r1]).toEqual([11, 22, 33]);
    const rs0 = new Int32Array(2);
    const rs1 = new Int32Array(2);
    const in0 = new Int32Array([1, 2, 3, 4]);
    const in1 = new Int32Array([10, 20, 30, 40]);
    await c0.reduceScatter(ptr(in0), ptr(rs0), 2, NcclDataType.Int32, NcclRedOp.Sum, s0);
    await c1.reduceScatter(ptr(in1), ptr(rs1), 2, NcclDataType.Int32, NcclRedOp.Sum, s1);
    expect(fake.lastOp()).toMatchObject({ kind: 4, count: 2, type: NcclDataType.Int32, op: NcclRedOp.Sum });
    expect([...rs0, ...rs1]).toEqual([11, 22, 33, 44]);
    const g0 = new Float64Array(4);
    const g1 = new Float64Array(4);
    // Sources stay referenced until both ranks have posted: the fake reads them then.
    const src0 = new Float64Array([1, 2]);
    const src1 = new Float64Array([3, 4]);
    await c0.allGather(ptr(src0), ptr(g0), 2, NcclDataType.Float64, s0);
    await c1.allGather(ptr(src1), ptr(g1), 2, NcclDataType.Float64, s1);
    expect([...g0]).toEqual([1, 2, 3, 4]);
    expect([...g1]).toEqual([1, 2, 3, 4]);
    const b0 = new Uint8Array([9, 9]);
    const b1 = new Uint8Array(2);
    await c0.broadcast(ptr(b0), ptr(b0), 2, NcclDataType.Uint8, 0, s0);
    await c1.broadcast(ptr(b1), ptr(b1), 2, NcclDataType.Uint8, 0, s1);
    expect([...b1]).toEqual([9, 9]);
    await expect(c0.broadcast(ptr(b0), ptr(b0), 2, NcclDataType.Uint8, 2, s0)).rejects.toBeInstanceOf(FfiArgumentError);
    c0.groupStart();
    await c0.send(ptr(a), 3, NcclDataType.Float32, 0, s0);
    await c0.recv(ptr(r0), 3, NcclDataType.Float32, 0, s0);
    expect(fake.lastOp()).toMatchObject({ kind: 6, count: 3, root: 0, groupDepth: 1 });
    await c0.groupEnd();
    expect([...r0]).toEqual([1, 2, 3]);
    expect(fake.counters()).toMatchObject({ groupStarts: 1, groupEnds: 1 });
    await expect(c0.send(ptr(a), 3, NcclDataType.Float32, 5, s0)).rejects.toBeInstanceOf(FfiArgumentError);
    c0.abort();
    c1.abort();
    mem.destroyStream(s0);
    mem.destroyStream(s1);
  });

  test('a collective on a communicator still initialising maps to ncclInvalidArgument', async () => {
    fake.setInProgressPolls(1000);
    const { comm } = nccl.commInitRank(1, 0, idOf(8), buildNcclConfig(nccl.version, { blocking: 0 }).bytes);
    const rc = nccl.fn.ncclAllReduce(0, 0, 1, NcclDataType.Float32, NcclRedOp.Sum, comm, 0);
    const err = nccl.error('ncclAllReduce', rc, comm);
    expect(err.codeName).toBe('ncclInvalidArgument');
    expect(err.message).toContain('still initializing');
    nccl.fn.ncclCommAbort(comm);
  });
});

describe('shrink and grow', () => {
  test('shrink excludes ranks and renumbers the survivors', async () => {
    const id = idOf(9);
    const comms = await Promise.all([0, 1, 2].map((rank) => initNcclComm(nccl, { nranks: 3, rank, uniqueId: id, ...fast })));
    const [c0, c1, c2] = comms as [typeof comms[0], typeof comms[0], typeof comms[0]];
    const [n0, n2] = await Promise.all([c0.shrink([1], fast), c2.shrink([1], fast)]);
    expect(fake.lastShrink()).toEqual({ excluded: [1], flags: 0 });
    expect([n0.nranks, n0.rank, n2.nranks, n2.rank]).toEqual([2, 0, 2, 1]);
    await expect(c1.shrink([3])).rejects.toBeInstanceOf(FfiArgumentError);
    for (const c of [...comms, n0, n2]) c.abort();
  });

  test('grow passes the root id by pointer; a joiner needs the id', async () => {
    const c0 = await initNcclComm(nccl, { nranks: 1, rank: 0, uniqueId: idOf(10), ...fast });
    const growId = idOf(11);
    const [g0, g1] = await Promise.all([c0.grow(2, growId, fast), growJoin(nccl, 2, growId, 1, fast)]);
    expect(fake.lastId()).toEqual(growId);
    expect([g0.nranks, g0.rank, g1.rank]).toEqual([2, 0, 1]);
    for (const c of [c0, g0, g1]) c.abort();
  });

  test('shrink and grow are typed errors where the library lacks them', async () => {
    const c = await initNcclComm(oldNccl, { nranks: 1, rank: 0, uniqueId: idOf(12), ...fast });
    await expect(c.shrink([])).rejects.toBeInstanceOf(NcclError);
    await expect(c.grow(2, idOf(13))).rejects.toBeInstanceOf(NcclError);
    c.abort();
  });
});
