// The join step over real CPU communicators in one process: joiners adopt placement and counters from the lowest-ranked member with current state (not rank 0 when rank 0 is a joiner), a step with everyone current adopts nothing, and damaged state or another model is refused with JoinStateError.
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { CpuDataPlane, createCpuCommunicator } from '../../ffi/comm/cpu.ts';
import type { Communicator } from '../../ffi/comm/communicator.ts';
import { createReferenceEngine, type ReferenceEngine } from '../../node/engine/reference.ts';
import { JoinStateError, decodeJoinState, encodeJoinState, modelDigest, runJoinStep } from '../../node/rank/join.ts';

const meshKey = new Uint8Array(32).fill(7);
let planes: CpuDataPlane[] = [];
let epoch = 0;

beforeAll(async () => {
  planes = await Promise.all(Array.from({ length: 4 }, () => CpuDataPlane.listen({ meshId: 'join', meshKey, hostname: '127.0.0.1' })));
});
afterAll(async () => {
  await Promise.all(planes.map((p) => p.close()));
});

/** A communicator per plane over mesh ranks `meshRanks`, for a fresh epoch. */
async function comms(meshRanks: number[]): Promise<Communicator[]> {
  epoch += 1;
  const key = { meshId: 'join', generation: 1, epoch };
  return Promise.all(
    meshRanks.map((_, i) =>
      createCpuCommunicator({
        dataPlane: planes[i]!,
        key,
        rank: i,
        meshRanks,
        peers: meshRanks.map((r, j) => ({ meshRank: r, host: planes[j]!.hostname, port: planes[j]!.port })).filter((_, j) => j !== i),
        connectTimeoutMs: 5000,
      }),
    ),
  );
}

function engineAt(iteration: number, placement: number[], seed = 1): ReferenceEngine {
  const engine = createReferenceEngine({ model: { seed } });
  engine.adoptState({ placement, iteration });
  return engine;
}

describe('runJoinStep', () => {
  test('the joiner at rank 0 adopts from rank 1, the lowest healthy member; the others keep their state', async () => {
    const cs = await comms([0, 1, 2, 3]);
    const healthy = [1, 2, 3, 0, 1, 2, 3, 1];
    const engines = [engineAt(0, [0, 0, 0, 0, 0, 0, 0, 0]), engineAt(41, healthy), engineAt(41, healthy), engineAt(41, healthy)];
    const outcomes = await Promise.all(cs.map((comm, i) => runJoinStep({ comm, engine: engines[i]!, hasState: i !== 0, generation: 1, epoch: comm.key.epoch, deadlineMs: 5000 })));
    expect(outcomes.map((o) => o.plan)).toEqual(Array(4).fill({ kind: 'adopt', source: 1, joiners: [0] }));
    expect(outcomes.map((o) => o.adoptedFrom)).toEqual([1, null, null, null]);
    expect(engines[0]!.exportState()).toEqual({ placement: healthy, iteration: 41 });
    expect(outcomes[0]!.stateBytes).toBeGreaterThan(0);
    await Promise.all(cs.map((c) => c.close()));
  });

  test('everyone current: a steady step that adopts nothing; nobody current: fresh', async () => {
    for (const hasState of [true, false]) {
      const cs = await comms([0, 2, 5]);
      const engines = cs.map(() => engineAt(7, [0, 2, 5, 0, 2, 5, 0, 2]));
      const outcomes = await Promise.all(cs.map((comm, i) => runJoinStep({ comm, engine: engines[i]!, hasState, generation: 1, epoch: comm.key.epoch, deadlineMs: 5000 })));
      expect(outcomes.every((o) => o.adoptedFrom === null && o.stateBytes === 0)).toBe(true);
      expect(outcomes[0]!.plan).toEqual(hasState ? { kind: 'steady', source: 0 } : { kind: 'fresh' });
      await Promise.all(cs.map((c) => c.close()));
    }
  });

  test('a joiner running another model refuses the state and keeps its own', async () => {
    const cs = await comms([0, 1]);
    const engines = [engineAt(9, [0, 1, 0, 1, 0, 1, 0, 1]), engineAt(0, [1, 1, 1, 1, 1, 1, 1, 1], 2)];
    const settled = await Promise.allSettled(cs.map((comm, i) => runJoinStep({ comm, engine: engines[i]!, hasState: i === 0, generation: 1, epoch: comm.key.epoch, deadlineMs: 5000 })));
    const [source, joiner] = [settled[0]!, settled[1]!];
    expect(source.status).toBe('fulfilled');
    expect(joiner.status).toBe('rejected');
    expect((joiner as PromiseRejectedResult).reason).toBeInstanceOf(JoinStateError);
    expect(String((joiner as PromiseRejectedResult).reason.message)).toContain('another model');
    expect(engines[1]!.exportState().iteration).toBe(0);
    await Promise.all(cs.map((c) => c.close()));
  });
});

describe('join state bytes', () => {
  const state = { generation: 1, epoch: 3, sourceRank: 1, meshRanks: [0, 1, 2], engine: { placement: [0, 1, 2, 0, 1, 2, 0, 1], iteration: 5 }, modelDigest: modelDigest(createReferenceEngine().model) };

  test('round-trip, and any damage is refused', () => {
    const bytes = encodeJoinState(state);
    expect(decodeJoinState(bytes)).toEqual(state);
    const flipped = bytes.slice();
    // The body travels as a JSON string inside the envelope: its quotes are escaped.
    const marker = 'iteration\\":';
    const at = new TextDecoder().decode(bytes).indexOf(marker) + marker.length;
    expect(String.fromCharCode(bytes[at]!)).toBe('5');
    flipped[at] = '6'.charCodeAt(0);
    expect(() => decodeJoinState(flipped)).toThrow(/checksum/);
    expect(() => decodeJoinState(new TextEncoder().encode('not json'))).toThrow(JoinStateError);
    expect(() => decodeJoinState(new Uint8Array([0xff, 0xfe]))).toThrow(JoinStateError);
  });

  test('the model digest depends on the weights seed', () => {
    expect(modelDigest(createReferenceEngine({ model: { seed: 1 } }).model)).not.toBe(modelDigest(createReferenceEngine({ model: { seed: 2 } }).model));
  });
});
