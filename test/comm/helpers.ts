// Builds in-process CPU communicators over real loopback sockets for the tests.
import { type CpuCommunicator, CpuDataPlane, createCpuCommunicator } from '../../ffi/comm/cpu.ts';
import type { EpochKey } from '../../ffi/comm/communicator.ts';

export const meshId = 'test-mesh';
export const meshKey = new Uint8Array(32).fill(7);

export function epochKey(epoch: number, generation = 1): EpochKey {
  return { meshId, generation, epoch };
}

/** One data plane per simulated node. */
export async function planes(n: number, key: Uint8Array = meshKey): Promise<CpuDataPlane[]> {
  return Promise.all(Array.from({ length: n }, () => CpuDataPlane.listen({ meshId, meshKey: key, handshakeTimeoutMs: 2000, parkTimeoutMs: 2000 })));
}

/** Communicators for every rank of `meshRanks`, node i hosting meshRanks[i]. */
export async function ring(
  nodes: readonly CpuDataPlane[],
  key: EpochKey,
  meshRanks: readonly number[] = nodes.map((_, i) => i),
  extra: { pieceBytes?: number; connectTimeoutMs?: number } = {},
): Promise<CpuCommunicator[]> {
  const peers = meshRanks.map((m, i) => ({ meshRank: m, host: nodes[i]!.hostname, port: nodes[i]!.port }));
  return Promise.all(
    meshRanks.map((_, i) =>
      createCpuCommunicator({ dataPlane: nodes[i]!, key, rank: i, meshRanks, peers, connectTimeoutMs: 3000, ...extra }),
    ),
  );
}

export async function closeAll(comms: readonly { close(): Promise<void> }[]): Promise<void> {
  await Promise.all(comms.map((c) => c.close()));
}

/** Deterministic pseudo-random float32 data, different per rank. */
export function dataFor(rank: number, length: number): Float32Array {
  const a = new Float32Array(length);
  let x = (rank + 1) * 2654435761;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    a[i] = (x / 2 ** 32 - 0.5) * 1000;
  }
  return a;
}
