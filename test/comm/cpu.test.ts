// The CPU communicator over real loopback sockets: collectives, identical results on every
// rank, the data plane's key and epoch checks, and aborts (peer loss, deadline, mismatch).
import { afterEach, describe, expect, test } from 'bun:test';
import { waitFor } from '../node/helpers.ts';
import { readdirSync } from 'node:fs';
import { CommSetupError, type CpuCommunicator, CpuDataPlane, createCpuCommunicator } from '../../ffi/comm/cpu.ts';
import { CommAbortedError } from '../../ffi/comm/communicator.ts';
import { smallAllReduceBytesMax } from '../../ffi/comm/cpu/ring.ts';
import { closeAll, dataFor, epochKey, meshId, meshKey, planes, ring } from './helpers.ts';

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()));
});

async function cluster(n: number, extra: { pieceBytes?: number } = {}): Promise<CpuCommunicator[]> {
  const nodes = await planes(n);
  const comms = await ring(nodes, epochKey(1), undefined, extra);
  open.push(...comms, ...nodes);
  return comms;
}

function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe('collectives', () => {
  test('all-reduce sum, max and min over 3 ranks, bit-identical on every rank', async () => {
    // A tiny piece size makes every collective run many pipelined frames.
    const comms = await cluster(3, { pieceBytes: 64 });
    // Small arrays take the one-pass path; the longest one here takes reduce-scatter + all-gather.
    const ringLength = Math.floor(smallAllReduceBytesMax / 4 / 3) + 1;
    for (const length of [1, 2, 3, 7, 100, 1001, ringLength]) {
      const ints = comms.map((_, r) => Int32Array.from({ length }, (_, i) => (i * 31 + r * 7) % 50 - 25));
      for (const op of ['sum', 'max', 'min'] as const) {
        const out = await Promise.all(comms.map((c, r) => c.allReduce(ints[r]!, op)));
        const want = Int32Array.from({ length }, (_, i) => {
          const v = ints.map((a) => a[i]!);
          return op === 'sum' ? v.reduce((x, y) => x + y) : op === 'max' ? Math.max(...v) : Math.min(...v);
        });
        for (const o of out) expect([...o]).toEqual([...want]);
      }
      const floats = comms.map((_, r) => dataFor(r, length));
      const sums = await Promise.all(comms.map((c, r) => c.allReduce(floats[r]!, 'sum')));
      expect(sums.every((s) => sameBytes(s, sums[0]!))).toBe(true);
      for (let i = 0; i < length; i++) expect(sums[0]![i]!).toBeCloseTo(floats.reduce((a, f) => a + f[i]!, 0), 1);
      // The inputs are untouched and the results are new arrays.
      expect(sameBytes(floats[0]!, dataFor(0, length))).toBe(true);
      expect(sums[0]).not.toBe(floats[0]);
    }
  });

  test('all-reduce into a caller-owned array, in place or not, matches allReduce', async () => {
    const comms = await cluster(3, { pieceBytes: 128 });
    for (const length of [5, Math.floor(smallAllReduceBytesMax / 4 / 3) + 1]) {
      const want = await Promise.all(comms.map((c, r) => c.allReduce(dataFor(r, length), 'sum')));
      const outs = comms.map(() => new Float32Array(length));
      const got = await Promise.all(comms.map((c, r) => c.allReduceInto(dataFor(r, length), outs[r]!, 'sum')));
      const inPlace = comms.map((_, r) => dataFor(r, length));
      const got2 = await Promise.all(comms.map((c, r) => c.allReduceInto(inPlace[r]!, inPlace[r]!, 'sum')));
      for (let r = 0; r < 3; r++) {
        expect(got[r]).toBe(outs[r]!);
        expect(got2[r]).toBe(inPlace[r]!);
        expect(sameBytes(got[r]!, want[r]!)).toBe(true);
        expect(sameBytes(got2[r]!, want[r]!)).toBe(true);
      }
    }
    const a = new Float32Array(10);
    await expect(comms[0]!.allReduceInto(a, a.subarray(2, 12) as Float32Array, 'sum')).rejects.toThrow('length');
    await expect(comms[0]!.allReduceInto(a.subarray(0, 5), a.subarray(3, 8), 'sum')).rejects.toThrow('overlaps');
    await expect(comms[0]!.allReduceInto(a, new Int32Array(10) as unknown as Float32Array, 'sum')).rejects.toThrow('type');
    // Refused calls changed nothing: the communicator still works.
    await Promise.all(comms.map((c) => c.barrier()));
  });

  test('all-reduce of float64 and uint8 over 4 ranks', async () => {
    const comms = await cluster(4);
    const f64 = await Promise.all(comms.map((c, r) => c.allReduce(new Float64Array([r, 10 - r, 0.5]), 'max')));
    for (const o of f64) expect([...o]).toEqual([3, 10, 0.5]);
    const u8 = await Promise.all(comms.map((c) => c.allReduce(new Uint8Array([100, 1]), 'sum')));
    for (const o of u8) expect([...o]).toEqual([144, 4]); // 400 wraps modulo 256
  });

  test('broadcast from every root and all-gather in compact rank order', async () => {
    const comms = await cluster(3, { pieceBytes: 8 });
    for (let root = 0; root < 3; root++) {
      const out = await Promise.all(comms.map((c, r) => c.broadcast(Float32Array.from({ length: 9 }, (_, i) => (r === root ? i + root * 100 : -1)), root)));
      for (const o of out) expect([...o]).toEqual(Array.from({ length: 9 }, (_, i) => i + root * 100));
    }
    const gathered = await Promise.all(comms.map((c, r) => c.allGather(Int32Array.from([r, r * 10, r * 100]))));
    for (const g of gathered) expect([...g]).toEqual([0, 0, 0, 1, 10, 100, 2, 20, 200]);
  });

  test('barrier completes only once every rank has entered', async () => {
    const comms = await cluster(3);
    let lateEntered = false;
    const early = comms.slice(0, 2).map((c) =>
      c.barrier().then(() => {
        expect(lateEntered).toBe(true);
      }),
    );
    await Bun.sleep(30); // gives the early ranks time to (wrongly) finish; they must not
    lateEntered = true;
    await Promise.all([...early, comms[2]!.barrier()]);
  });

  test('a receiver that falls behind pauses its socket and still gets every byte', async () => {
    const nodes = await Promise.all(
      [0, 1].map(() => CpuDataPlane.listen({ meshId, meshKey, bufferedBytesMax: 64 * 1024 })),
    );
    const comms = await ring(nodes, epochKey(1), [0, 1], { pieceBytes: 256 * 1024 });
    open.push(...comms, ...nodes);
    const data = dataFor(0, 1_000_000);
    const sent = comms[0]!.broadcast(data, 0);
    // Rank 1 has not called broadcast yet: its link stops reading at the limit.
    await waitUntil(() => nodes[1]!.stats().readPauses >= 1);
    const got = await comms[1]!.broadcast(new Float32Array(data.length), 0);
    await sent;
    expect(sameBytes(got, data)).toBe(true);
  });

  test('a one-rank communicator returns copies without sockets', async () => {
    const [plane] = await planes(1);
    open.push(plane!);
    const comm = await createCpuCommunicator({ dataPlane: plane!, key: epochKey(1), rank: 0, meshRanks: [5], peers: [] });
    const a = new Float32Array([1, 2]);
    const r = await comm.allReduce(a, 'sum');
    expect([...r]).toEqual([1, 2]);
    expect(r).not.toBe(a);
    expect([...(await comm.allGather(a))]).toEqual([1, 2]);
    await comm.barrier();
    await comm.close();
    expect(plane!.stats().accepted).toBe(0);
  });

  test('mesh ranks with holes are renumbered compactly', async () => {
    const nodes = await planes(3);
    const comms = await ring(nodes, epochKey(1), [1, 4, 6]);
    open.push(...comms, ...nodes);
    expect(comms.map((c) => c.rank)).toEqual([0, 1, 2]);
    const g = await Promise.all(comms.map((c) => c.allGather(new Int32Array([c.meshRanks[c.rank]!]))));
    expect([...g[2]!]).toEqual([1, 4, 6]);
  });
});

describe('authentication and epochs', () => {
  test('a node without the mesh key is refused and counted', async () => {
    const [good] = await planes(1);
    const [bad] = await planes(1, new Uint8Array(32).fill(9));
    open.push(good!, bad!);
    const peers = [
      { meshRank: 0, host: good!.hostname, port: good!.port },
      { meshRank: 1, host: bad!.hostname, port: bad!.port },
    ];
    const setups = [
      createCpuCommunicator({ dataPlane: good!, key: epochKey(1), rank: 0, meshRanks: [0, 1], peers, connectTimeoutMs: 800 }),
      createCpuCommunicator({ dataPlane: bad!, key: epochKey(1), rank: 1, meshRanks: [0, 1], peers, connectTimeoutMs: 800 }),
    ];
    const results = await Promise.allSettled(setups);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(CommSetupError);
    }
    // Each listener refused the other's proof: the honest one refused the impostor, and the
    // impostor's listener could not check the honest proof either.
    expect(good!.stats()).toMatchObject({ refusedAuth: 1, accepted: 0 });
    expect(bad!.stats()).toMatchObject({ refusedAuth: 1, accepted: 0 });
  });

  test('a listener that cannot prove the key is not trusted', async () => {
    const [node] = await planes(1);
    open.push(node!);
    // A fake listener that answers every handshake message and claims success with a bogus proof.
    const frame = (v: unknown) => {
      const body = new TextEncoder().encode(JSON.stringify(v));
      const f = new Uint8Array(4 + body.length);
      new DataView(f.buffer).setUint32(0, body.length);
      f.set(body, 4);
      return f;
    };
    let seen = 0;
    const fake = Bun.listen({
      hostname: '127.0.0.1',
      port: 0,
      socket: {
        data(socket, chunk: Buffer) {
          for (let at = 0; at < chunk.length; seen++) {
            at += 4 + chunk.readUInt32BE(at);
            socket.write(seen === 0 ? frame({ nonce: '0'.repeat(64) }) : frame({ ok: true, proof: '0'.repeat(64) }));
          }
        },
      },
    });
    try {
      const err = await node!.connect({ key: epochKey(1), fromMeshRank: 0, toMeshRank: 1 }, '127.0.0.1', fake.port, 1000).then(
        () => null,
        (e: Error & { code?: string }) => e,
      );
      expect(err?.code).toBe('auth');
    } finally {
      fake.stop(true);
    }
  });

  test('a connection for an older epoch is refused', async () => {
    const nodes = await planes(2);
    open.push(...nodes);
    const current = await ring(nodes, epochKey(5));
    open.push(...current);
    // Node 0 dials node 1 for epoch 4 after node 1 built epoch 5.
    const stale = await nodes[0]!.connect({ key: epochKey(4), fromMeshRank: 0, toMeshRank: 1 }, nodes[1]!.hostname, nodes[1]!.port, 1000).then(
      () => null,
      (e: Error) => e,
    );
    expect(stale?.message).toContain('older');
    expect(nodes[1]!.stats().refusedEpoch).toBe(1);
    // A second connection for the live epoch's edge is refused too (no replayed edges).
    const dup = await nodes[0]!.connect({ key: epochKey(5), fromMeshRank: 0, toMeshRank: 1 }, nodes[1]!.hostname, nodes[1]!.port, 1000).then(
      () => null,
      (e: Error) => e,
    );
    expect(dup?.message).toContain('already connected');
    // The live communicator is unaffected.
    const out = await Promise.all(current.map((c) => c.allReduce(new Int32Array([1]), 'sum')));
    expect([...out[0]!]).toEqual([2]);
  });

  test('a connection of another mesh, or garbage, is refused', async () => {
    const nodes = await planes(1);
    open.push(...nodes);
    const other = await CpuDataPlane.listen({ meshId: 'other-mesh', meshKey });
    open.push(other);
    const err = await other.connect({ key: { meshId: 'other-mesh', generation: 1, epoch: 1 }, fromMeshRank: 0, toMeshRank: 1 }, nodes[0]!.hostname, nodes[0]!.port, 1000).then(
      () => null,
      (e: Error) => e,
    );
    // Same key, wrong mesh id: authenticated, then refused for the mesh.
    expect(err?.message).toContain(`serves mesh ${meshId}`);
    const socket = await Bun.connect({ hostname: nodes[0]!.hostname, port: nodes[0]!.port, socket: { data() {} } });
    socket.write(new Uint8Array([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    await waitUntil(() => nodes[0]!.stats().refusedProtocol === 1);
    socket.end();
  });
});

describe('aborts', () => {
  test('a deadline rejects with CommAbortedError and the abort spreads to the peer', async () => {
    const comms = await cluster(2);
    const t0 = performance.now();
    const lone = comms[0]!.allReduce(new Float32Array(4), 'sum', { deadlineMs: 150 });
    const error = await lone.then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(CommAbortedError);
    expect((error as CommAbortedError).reason).toContain('deadline');
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(comms[0]!.aborted).toContain('deadline');
    // Later collectives on either rank fail fast instead of waiting.
    await expect(comms[0]!.barrier()).rejects.toBeInstanceOf(CommAbortedError);
    await expect(comms[1]!.allReduce(new Float32Array(4), 'sum')).rejects.toBeInstanceOf(CommAbortedError);
  });

  test('abort() rejects a pending collective at once', async () => {
    const comms = await cluster(3);
    const pending = comms[1]!.allGather(new Int32Array(3));
    comms[1]!.abort('view change to epoch 2');
    await expect(pending).rejects.toThrow('view change to epoch 2');
    // Ranks 0 and 2 see their ring links to rank 1 close.
    await expect(Promise.all([comms[0]!.barrier(), comms[2]!.barrier()])).rejects.toBeInstanceOf(CommAbortedError);
  });

  test('a peer that disappears aborts the others instead of hanging them', async () => {
    const nodes = await planes(3);
    const comms = await ring(nodes, epochKey(1));
    open.push(...comms, nodes[0]!, nodes[1]!);
    await nodes[2]!.close(); // the node's sockets vanish, as when its process dies
    const results = await Promise.allSettled([comms[0]!.allReduce(new Float32Array(8), 'sum'), comms[1]!.allReduce(new Float32Array(8), 'sum')]);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      if (r.status === 'rejected') {
        expect(r.reason).toBeInstanceOf(CommAbortedError);
        expect((r.reason as CommAbortedError).reason).toMatch(/link lost|closed/);
      }
    }
  });

  test('an idle communicator aborts as soon as a neighbour disappears', async () => {
    const nodes = await planes(3);
    const comms = await ring(nodes, epochKey(1));
    open.push(...comms, nodes[0]!, nodes[1]!);
    await nodes[2]!.close();
    // Rank 0 receives from rank 2 and rank 1 sends to it: both learn without calling anything.
    await waitUntil(() => comms[0]!.aborted !== null && comms[1]!.aborted !== null);
    expect(comms[0]!.aborted).toContain('from mesh rank 2 closed');
    expect(comms[1]!.aborted).toContain('to mesh rank 2 closed');
  });

  test('ranks that call different collectives fail loudly', async () => {
    const comms = await cluster(2);
    const results = await Promise.allSettled([comms[0]!.allReduce(new Float32Array(4), 'sum'), comms[1]!.allGather(new Float32Array(2))]);
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    const reasons = results.map((r) => (r.status === 'rejected' ? String((r.reason as Error).message) : ''));
    expect(reasons.some((m) => m.includes('collective mismatch'))).toBe(true);
  });

  test('close() with a collective no peer joins gives up after its grace period', async () => {
    const comms = await cluster(2);
    const lone = comms[0]!.allReduce(new Float32Array(4), 'sum');
    const t0 = performance.now();
    await comms[0]!.close(100);
    await expect(lone).rejects.toBeInstanceOf(CommAbortedError);
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  test('setup fails fast when the next rank cannot be reached', async () => {
    const [plane] = await planes(1);
    open.push(plane!);
    const t0 = performance.now();
    const setup = createCpuCommunicator({
      dataPlane: plane!,
      key: epochKey(1),
      rank: 0,
      meshRanks: [0, 1],
      peers: [{ meshRank: 1, host: '127.0.0.1', port: 1 }],
      connectTimeoutMs: 300,
    });
    await expect(setup).rejects.toBeInstanceOf(CommSetupError);
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  test('close() leaves no socket behind', async () => {
    const before = socketCount();
    const nodes = await planes(3);
    const comms = await ring(nodes, epochKey(1));
    await Promise.all(comms.map((c) => c.allReduce(new Float32Array(1000), 'sum')));
    expect(socketCount()).toBeGreaterThan(before);
    await closeAll(comms);
    await Promise.all(nodes.map((n) => n.close()));
    await waitUntil(() => socketCount() === before);
  });
});

/** Open sockets of this process, from /proc. */
function socketCount(): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (require('node:fs').readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      // the fd closed while listing
    }
  }
  return n;
}

const waitUntil = (cond: () => boolean): Promise<void> => waitFor('the condition', cond, 3000);

describe('peer activity', () => {
  test("a rank hears that its ring neighbour began a collective it has not called, and only then", async () => {
    const comms = await cluster(3);
    // Settled collectives leave nothing unread behind them (every frame sent was read before
    // its receiver's collective settled): no activity is reported, not even on the next turn
    // of the event loop, when a watch over bytes already buffered would have fired.
    await Promise.all(comms.map((c) => c.allReduce(new Int32Array([1, 2]), 'max')));
    const woken: number[] = [];
    const cancels = comms.map((c, i) => c.watchPeerActivity(() => woken.push(i)));
    await new Promise((resolve) => setImmediate(resolve));
    expect(woken).toEqual([]);
    // Rank 0 starts alone: rank 1 (next in the ring) hears of it; rank 2 not yet. (A watch
    // means something only while its rank runs no collective: rank 0 drops its own.)
    cancels[0]!();
    const first = comms[0]!.allReduce(new Int32Array([5, 0]), 'max');
    await waitFor('rank 1 to hear rank 0', () => woken.includes(1), 5000);
    expect(woken).toEqual([1]);
    // Rank 1 joins, which wakes rank 2; then everyone completes with the same result.
    const second = comms[1]!.allReduce(new Int32Array([0, 7]), 'max');
    await waitFor('rank 2 to hear rank 1', () => woken.includes(2), 5000);
    const third = comms[2]!.allReduce(new Int32Array([3, 3]), 'max');
    for (const r of await Promise.all([first, second, third])) expect([...r]).toEqual([5, 7]);
    // Each watch fires once; rank 0's was cancelled unfired.
    expect(woken.toSorted()).toEqual([1, 2]);
  });

  test('an abort counts as activity, and a cancelled watch is never called', async () => {
    const comms = await cluster(2);
    let cancelledCalls = 0;
    const cancel = comms[0]!.watchPeerActivity(() => (cancelledCalls += 1));
    cancel();
    let aborted = 0;
    comms[0]!.watchPeerActivity(() => (aborted += 1));
    comms[0]!.abort('test');
    await waitFor('the watch to fire on abort', () => aborted === 1, 5000);
    // A watch set after the abort fires too (soon, not synchronously).
    let late = 0;
    comms[0]!.watchPeerActivity(() => (late += 1));
    expect(late).toBe(0);
    await waitFor('the late watch to fire', () => late === 1, 5000);
    expect(cancelledCalls).toBe(0);
    expect(aborted).toBe(1);
  });
});
