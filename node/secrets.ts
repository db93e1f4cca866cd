// Files that hold secrets in the data directory: written once, owner-only, atomically (a
// crash mid-write leaves either no file or the whole file, never half a key).
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { generateKey } from '@libp2p/pnet';

/** A secret file that must exist but does not, or cannot be used. */
export class SecretFileError extends Error {
  override readonly name = 'SecretFileError';
}

/** Reads `path`, or creates it with `make()` first when missing. */
export function loadOrCreateSecret(path: string, make: () => Uint8Array): { bytes: Uint8Array; created: boolean } {
  if (existsSync(path)) return { bytes: new Uint8Array(readFileSync(path)), created: false };
  const bytes = make();
  writeSecretFile(path, bytes);
  return { bytes, created: true };
}

export function writeSecretFile(path: string, bytes: Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true });
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, bytes, { mode: 0o600 });
  chmodSync(temporary, 0o600);
  renameSync(temporary, path);
}

/** A new pre-shared key for libp2p's private network, in the swarm.key text format. */
export function newSwarmKey(): Uint8Array {
  const key = new Uint8Array(95);
  generateKey(key);
  return key;
}

/**
 * The mesh's pre-shared key. A key file named explicitly must exist (a silently generated key
 * would split the mesh); the default file in the data directory is created on first start.
 */
export function loadSwarmKey(path: string, createIfMissing: boolean): { key: Uint8Array; created: boolean } {
  if (!createIfMissing && !existsSync(path)) {
    throw new SecretFileError(`pre-shared key file ${path} does not exist (keyFile); create it with the cluster script or copy it from another node`);
  }
  const { bytes, created } = loadOrCreateSecret(path, newSwarmKey);
  const text = new TextDecoder().decode(bytes);
  if (!/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\s*$/.test(text)) {
    throw new SecretFileError(`pre-shared key file ${path} is not a swarm key (/key/swarm/psk/1.0.0/, /base16/, 64 hex digits)`);
  }
  return { key: bytes, created };
}

/** The HTTP bearer token: 32 random bytes as hex, in a file of the data directory. */
export function loadOrCreateToken(path: string): { token: string; created: boolean } {
  const { bytes, created } = loadOrCreateSecret(path, () => {
    const raw = crypto.getRandomValues(new Uint8Array(32));
    return new TextEncoder().encode(Buffer.from(raw).toString('hex'));
  });
  const token = new TextDecoder().decode(bytes).trim();
  if (token === '') throw new SecretFileError(`token file ${path} is empty`);
  return { token, created };
}
