// The data plane's connection handshake: both ends prove they hold the mesh's pre-shared
// key before any collective data flows, and the connecting end names the epoch and the
// ring edge (from → to mesh rank) it is for.
//
//   client → server  HELLO     { meshId, generation, epoch, fromMeshRank, toMeshRank, nonce }
//   server → client  CHALLENGE { nonce }
//   client → server  PROOF     { proof = HMAC(key, "client" ‖ HELLO bytes ‖ server nonce) }
//   server → client  RESULT    { ok, proof = HMAC(key, "server" ‖ HELLO bytes ‖ server nonce) }
//                           or { ok: false, code, reason }
//
// Each side's proof covers a nonce the other side just drew (the client's is inside HELLO),
// so a recorded exchange cannot be replayed, and the labels keep a server proof from
// passing as a client proof. The client proves first so that the listener, which is the
// side strangers reach, sees and counts every peer without the key. Proofs are compared in
// constant time; a client accepts the link only after checking the server's proof.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import type { ByteReader, ByteWriter } from './link.ts';

/** Largest handshake message accepted, in bytes. */
export const handshakeMessageBytesMax = 4096;

export const helloSchema = z.object({
  v: z.literal(1),
  meshId: z.string().min(1).max(256),
  generation: z.number().int().nonnegative(),
  epoch: z.number().int().nonnegative(),
  fromMeshRank: z.number().int().nonnegative(),
  toMeshRank: z.number().int().nonnegative(),
  nonce: z.string().regex(/^[0-9a-f]{64}$/),
});
export type Hello = z.infer<typeof helloSchema>;

export const challengeSchema = z.object({ nonce: z.string().regex(/^[0-9a-f]{64}$/) });
export const proofSchema = z.object({ proof: z.string().regex(/^[0-9a-f]{64}$/) });

/** Why a server refused a connection. */
export type RefusalCode = 'auth' | 'wrong-mesh' | 'stale-epoch' | 'unexpected-edge' | 'no-communicator' | 'protocol' | 'busy';

export const resultSchema = z.union([
  z.object({ ok: z.literal(true), proof: z.string().regex(/^[0-9a-f]{64}$/) }),
  z.object({
    ok: z.literal(false),
    code: z.enum(['auth', 'wrong-mesh', 'stale-epoch', 'unexpected-edge', 'no-communicator', 'protocol', 'busy']),
    reason: z.string().max(512),
  }),
]);
export type HandshakeResult = z.infer<typeof resultSchema>;

export function freshNonce(): string {
  return randomBytes(32).toString('hex');
}

export function proofFor(role: 'server' | 'client', meshKey: Uint8Array, helloBytes: Uint8Array, serverNonce: string): string {
  const mac = createHmac('sha256', meshKey);
  mac.update(role === 'server' ? 'rankmesh-dataplane/server\0' : 'rankmesh-dataplane/client\0');
  mac.update(helloBytes);
  mac.update(serverNonce);
  return mac.digest('hex');
}

/** Constant-time comparison of two hex proofs. */
export function proofsEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

/** Writes one length-prefixed message. */
export function writeMessage(writer: ByteWriter, body: Uint8Array): void {
  const frame = new Uint8Array(4 + body.length);
  new DataView(frame.buffer).setUint32(0, body.length);
  frame.set(body, 4);
  writer.write(frame);
}

export function writeJson(writer: ByteWriter, value: unknown): Uint8Array {
  const body = new TextEncoder().encode(JSON.stringify(value));
  writeMessage(writer, body);
  return body;
}

/** Reads one length-prefixed message; throws HandshakeProtocolError on an oversized one. */
export async function readMessage(reader: ByteReader): Promise<Uint8Array> {
  const header = new Uint8Array(4);
  await reader.read(header);
  const length = new DataView(header.buffer).getUint32(0);
  if (length === 0 || length > handshakeMessageBytesMax) {
    throw new HandshakeProtocolError(`handshake message of ${length} bytes (limit ${handshakeMessageBytesMax})`);
  }
  const body = new Uint8Array(length);
  await reader.read(body);
  return body;
}

/** Parses a message body against a schema; throws HandshakeProtocolError if it does not fit. */
export function parseJson<T>(schema: z.ZodType<T>, body: Uint8Array): T {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(body));
  } catch {
    throw new HandshakeProtocolError('handshake message is not JSON');
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new HandshakeProtocolError(`malformed handshake message: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  return parsed.data;
}

export class HandshakeProtocolError extends Error {
  override readonly name = 'HandshakeProtocolError';
}
