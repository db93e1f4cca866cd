// Peer exchange: when a connection opens, each side asks the other for the peers it is
// connected to and their addresses, and dials those it does not know. Bootstrapping every node
// to one seed is then enough for a fully connected mesh, which direct probes and requests to
// any member rely on. Transitive: every new connection repeats the exchange.
import { z } from 'zod';

/** The request name this module serves on every node. */
export const peerExchangeName = 'peer-exchange';

export interface KnownPeer {
  peerId: string;
  addresses: string[];
}

/** Bounds the answer so one peer cannot make another dial without limit. */
export const peersPerAnswerMax = 256;

const answerSchema = z
  .array(z.object({ peerId: z.string().min(1).max(128), addresses: z.array(z.string().max(512)).max(16) }))
  .max(peersPerAnswerMax);

export function encodePeers(peers: readonly KnownPeer[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(peers.slice(0, peersPerAnswerMax)));
}

/** The peers in an answer, or an Error naming what is wrong with it. */
export function decodePeers(bytes: Uint8Array): KnownPeer[] | Error {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    return new Error(`peer-exchange answer is not JSON: ${(err as Error).message}`);
  }
  const parsed = answerSchema.safeParse(value);
  return parsed.success ? parsed.data : new Error(`peer-exchange answer is malformed: ${parsed.error.issues[0]?.message}`);
}
