// The node's identity: an Ed25519 key kept in the data directory, so a restarted host keeps
// its PeerId, and a bootId drawn fresh at every start, so each start is a new incarnation.
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { PeerId, PrivateKey } from '@libp2p/interface';
import { join } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { SecretFileError, writeSecretFile } from './secrets.ts';

export interface Identity {
  readonly privateKey: PrivateKey;
  readonly peerId: PeerId;
  /** True when this call created the key. */
  readonly created: boolean;
}

export const identityFileName = 'identity.key';

/** Loads the key of `dataDir`, creating it on first use. */
export async function loadOrCreateIdentity(dataDir: string): Promise<Identity> {
  const path = join(dataDir, identityFileName);
  if (existsSync(path)) {
    let privateKey: PrivateKey;
    try {
      privateKey = privateKeyFromProtobuf(new Uint8Array(readFileSync(path)));
    } catch (err) {
      throw new SecretFileError(`identity key ${path} cannot be read: ${(err as Error).message}`);
    }
    if (privateKey.type !== 'Ed25519') throw new SecretFileError(`identity key ${path} is ${privateKey.type}, expected Ed25519`);
    return { privateKey, peerId: peerIdFromPrivateKey(privateKey), created: false };
  }
  const privateKey = await generateKeyPair('Ed25519');
  writeSecretFile(path, privateKeyToProtobuf(privateKey));
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey), created: true };
}

/** A new incarnation id: 128 random bits as a UUID. */
export function newBootId(): string {
  return crypto.randomUUID();
}
