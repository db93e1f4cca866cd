// The NCCL Communicator end to end through bun:ffi on the stand-in NCCL and host memory: results of every collective across ranks, serialisation, deadline and abort paths, and orderly close.
import { beforeEach, describe, expect, test } from 'bun:test';
import { CommAbortedError, type Communicator, type EpochKey } from '../../ffi/comm/communicator.ts';
import { createNcclCommunicator, createNcclUniqueId, cudaDeviceMemory, type DeviceMemory } from '../../ffi/comm/nccl.ts';
import { loadCudaRuntime } from '../../ffi/cuda/runtime.ts';
import { CudaError, FfiArgumentError } from '../../ffi/errors.ts';
import { loadNccl } from '../../ffi/nccl/library.ts';
import { buildFakeNccl } from './fake-nccl.ts';

const fake = buildFakeNccl();
const nccl = loadNccl({ explicitPath: fake.path });
const key: EpochKey = { meshId: 'm', generation: 1, epoch: 3 };

async function group(size: number, memory: DeviceMemory, collectiveTimeoutMs = 5000): Promise<Communicator[]> {
  const uniqueId = createNcclUniqueId(nccl);
  const meshRanks = Array.from({ length: size }, (_, i) => i * 2 + 1); // holes in the mesh rank space
  return Promise.all(
    meshRanks.map((_, rank) =>
      createNcclCommunicator({ key, rank, size, meshRanks, uniqueId, device: 0, nccl, memory, collectiveTimeoutMs, pollIntervalMs: 0.1 }),
    ),
  );
}

beforeEach(() => fake.reset());

describe('NCCL communicator', () => {
  test('all-reduce, broadcast, all-gather and barrier give every rank the same result', async () => {
    const memory = fake.hostMemory();
    const comms = await group(3, memory);
    expect(comms.map((c) => [c.backend, c.rank, c.size])).toEqual([['nccl', 0, 3], ['nccl', 1, 3], ['nccl', 2, 3]]);
    expect(comms[2]?.meshRanks).toEqual([1, 3, 5]);

    const sums = await Promise.all(comms.map((c, r) => c.allReduce(new Float32Array([r, r * 10, 0.5]), 'sum')));
    for (const s of sums) expect([...s]).toEqual([3, 30, 1.5]);
    expect(sums[0]).toBeInstanceOf(Float32Array);

    const maxes = await Promise.all(comms.map((c, r) => c.allReduce(new Int32Array([r, -r]), 'max')));
    const mins = await Promise.all(comms.map((c, r) => c.allReduce(new Float64Array([r + 0.25]), 'min')));
    for (const m of maxes) expect([...m]).toEqual([2, 0]);
    for (const m of mins) expect([...m]).toEqual([0.25]);

    const bcast = await Promise.all(comms.map((c, r) => c.broadcast(new Uint8Array([r, r, r, 7]), 1)));
    for (const b of bcast) expect([...b]).toEqual([1, 1, 1, 7]);

    const gathered = await Promise.all(comms.map((c, r) => c.allGather(new Int32Array([r * 100, r * 100 + 1]))));
    for (const g of gathered) expect([...g]).toEqual([0, 1, 100, 101, 200, 201]);

    await Promise.all(comms.map((c) => c.barrier()));
    await Promise.all(comms.map((c) => c.close()));
    expect(fake.counters()).toMatchObject({ finalizes: 3, destroys: 3, aborts: 0 });
    expect(memory.liveAllocations()).toBe(0);
  });

  test('collectives issued back to back run in order and reuse grown buffers', async () => {
    const memory = fake.hostMemory();
    const [c0, c1] = (await group(2, memory)) as [Communicator, Communicator];
    const small = [c0.allReduce(new Float32Array([1]), 'sum'), c0.allReduce(new Float32Array(1000).fill(2), 'sum')];
    const other = [c1.allReduce(new Float32Array([5]), 'sum'), c1.allReduce(new Float32Array(1000).fill(3), 'sum')];
    const [a, b] = await Promise.all(small);
    await Promise.all(other);
    expect([...(a as Float32Array)]).toEqual([6]);
    expect((b as Float32Array).every((x) => x === 5)).toBe(true);
    await Promise.all([c0.close(), c1.close()]);
  });

  test('a collective a peer never joins misses its deadline, aborts the comm, and later calls reject', async () => {
    const memory = fake.hostMemory();
    const [c0, c1] = (await group(2, memory, 100)) as [Communicator, Communicator];
    const started = Date.now();
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5); // the event loop must keep turning while NCCL is polled
    const err = await c0.allReduce(new Float32Array([1]), 'sum').catch((e) => e);
    clearInterval(ticker);
    expect(ticks).toBeGreaterThanOrEqual(5);
    expect(err).toBeInstanceOf(CommAbortedError);
    expect(String(err.reason)).toContain('did not complete');
    expect(Date.now() - started).toBeLessThan(3000);
    expect(fake.counters().aborts).toBe(1);
    await expect(c0.barrier()).rejects.toBeInstanceOf(CommAbortedError);
    c1.abort('test over');
    await c0.close(); // idempotent after abort
    expect(memory.liveAllocations()).toBe(0);
  });

  test('a per-call deadline is a budget from the call; missing it aborts the communicator', async () => {
    const memory = fake.hostMemory();
    const [c0, c1] = (await group(2, memory)) as [Communicator, Communicator];
    expect([...(await Promise.all([c0.barrier({ deadlineMs: 1000 }), c1.allReduce(new Int32Array([1]), 'sum', { deadlineMs: 1000 })]))[1]!]).toEqual([1]);
    const started = Date.now();
    await expect(c1.allReduce(new Float32Array([1]), 'max', { deadlineMs: 40 })).rejects.toBeInstanceOf(CommAbortedError);
    expect(Date.now() - started).toBeGreaterThanOrEqual(35);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(fake.counters().aborts).toBe(1);
    c0.abort('test over');
  });

  test('abort() during a pending collective rejects it at once', async () => {
    const memory = fake.hostMemory();
    fake.setHang(true);
    const [c0, c1] = (await group(2, memory)) as [Communicator, Communicator];
    const pending = Promise.all([c0.allReduce(new Float32Array([1]), 'sum'), c1.allReduce(new Float32Array([1]), 'sum')]);
    await Bun.sleep(1); // let both enqueue; completion never comes while the fake hangs
    c0.abort('view change');
    c1.abort('view change');
    c0.abort('again'); // idempotent
    const err = await pending.catch((e) => e);
    expect(err).toBeInstanceOf(CommAbortedError);
    expect(err.reason).toBe('view change');
    expect(fake.counters().aborts).toBe(2);
  });

  test('bad arguments are typed errors that leave the communicator usable', async () => {
    const memory = fake.hostMemory();
    const [c0] = (await group(1, memory)) as [Communicator];
    await expect(c0.broadcast(new Float32Array(1), 3)).rejects.toBeInstanceOf(FfiArgumentError);
    expect([...(await c0.allReduce(new Float32Array([4]), 'sum'))]).toEqual([4]);
    await c0.close();
    const uniqueId = createNcclUniqueId(nccl);
    const bad = { key, rank: 0, size: 2, meshRanks: [3, 1], uniqueId, device: 0, nccl, memory };
    await expect(createNcclCommunicator(bad)).rejects.toBeInstanceOf(FfiArgumentError);
    await expect(createNcclCommunicator({ ...bad, meshRanks: [1, 3], uniqueId: new Uint8Array(12) })).rejects.toBeInstanceOf(FfiArgumentError);
  });

  test('on CUDA memory without a driver, creation fails with the no-driver error before NCCL init', async () => {
    const rt = loadCudaRuntime();
    let gpu = false;
    try {
      gpu = rt.deviceCount() > 0;
    } catch {
      gpu = false;
    }
    if (gpu) {
      console.log('[test/ffi] no-driver communicator case skipped: this host has a GPU');
      return;
    }
    const uniqueId = createNcclUniqueId(nccl);
    const err = await createNcclCommunicator({ key, rank: 0, size: 1, meshRanks: [0], uniqueId, device: 0, nccl, memory: cudaDeviceMemory(rt) }).catch((e) => e);
    expect(err).toBeInstanceOf(CudaError);
    expect(err.noDriver).toBe(true);
    expect(fake.lastInit().api).toBe(0);
  });
});
