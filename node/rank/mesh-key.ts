// The data plane's mesh key, derived from the pre-shared swarm key: every member of the
// private network holds the swarm key and so can derive it, no one else can. Deriving
// (rather than reusing the swarm key itself) keeps the two uses apart: a proof made on a
// data-plane connection says nothing about the libp2p private network, and the reverse.
import { hkdfSync } from 'node:crypto';

const label = 'rankmesh data plane mesh key v1';

/** HKDF-SHA256 of the swarm key, salted with the mesh id, 32 bytes. */
export function dataPlaneKey(swarmKey: Uint8Array, meshId: string): Uint8Array {
  if (swarmKey.length < 16) throw new RangeError('the swarm key must be at least 16 bytes');
  return new Uint8Array(hkdfSync('sha256', swarmKey, new TextEncoder().encode(meshId), label, 32));
}
