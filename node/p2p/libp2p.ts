// The libp2p node of one rankmesh host: TCP, the pre-shared-key private network, noise,
// yamux, identify, ping and gossipsub, configured for meshes whose hosts may share an address.
import { noise } from '@chainsafe/libp2p-noise';
import { asCrypto, defaultCrypto } from '@chainsafe/libp2p-noise/crypto';
import { yamux } from '@chainsafe/libp2p-yamux';
import { gossipsub, StrictSign, type GossipSub } from '@libp2p/gossipsub';
import { createTopicScoreParams } from '@libp2p/gossipsub/score';
import { identify } from '@libp2p/identify';
import { AbortError, type ConnectionGater, type PrivateKey } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { ping, type Ping } from '@libp2p/ping';
import { preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { createLibp2p, type Libp2p } from 'libp2p';
import { ConnectionWatch, type ConnectionWatchComponents } from './connection-watch.ts';
import { channelValidators, PeerGuard, type PeerGuardOptions } from './peer-guard.ts';
import { installYamuxHalfWindowUpdates } from './yamux-window.ts';

export type MeshLibp2p = Libp2p<{ identify: unknown; ping: Ping; pubsub: GossipSub; guard: PeerGuard; connectionWatch: ConnectionWatch }>;

export interface MeshLibp2pOptions {
  privateKey: PrivateKey;
  /** The swarm.key bytes shared by every node of the mesh. */
  swarmKey: Uint8Array;
  listen: readonly string[];
  connectionGater: ConnectionGater;
  gossipHeartbeatIntervalMs: number;
  /**
   * gossipsub mesh degree D (default 3). Publishing floods to every peer, so the mesh only adds
   * relayed copies for peers whose direct link lost a message: each node receives about D + 1
   * copies of every message, and every copy costs decryption and decoding. gossipsub's own
   * default (6, up to 12) makes a 32-node mesh on small hosts spend its CPU on duplicates.
   */
  gossipMeshDegree?: number;
  ipColocationFactorWeight: number;
  /** Largest gossip message, in bytes. */
  gossipBytesMax: number;
  /** Names the gossip topics whose payloads the peer guard validates (/rankmesh/<meshId>/<channel>). */
  meshId?: string;
  /** Thresholds of the peer guard (defaults: peerGuardDefaults). */
  peerGuard?: Partial<PeerGuardOptions>;
}

/** The gossip topic of a mesh channel. */
export function meshTopic(meshId: string, channel: string): string {
  return `/rankmesh/${meshId}/${channel}`;
}

/**
 * Bun's node:crypto has no chacha20-poly1305, which noise's default crypto uses for frames of
 * 1200 bytes or more: those writes would throw and gossip of large messages would vanish
 * silently. The AssemblyScript implementation from the same package covers every size.
 */
const noiseCrypto = {
  ...defaultCrypto,
  chaCha20Poly1305Encrypt: asCrypto.chaCha20Poly1305Encrypt,
  chaCha20Poly1305Decrypt: asCrypto.chaCha20Poly1305Decrypt,
};

/**
 * Builds (does not start) the node. When `meshId` is given, every channel of
 * channelValidators gets a topic validator: an invalid payload is rejected before delivery
 * or forwarding, lowers the forwarding peer's gossipsub score, and counts towards the peer
 * guard's threshold, past which the peer is disconnected and refused for a while.
 */
export async function createMeshLibp2p(options: MeshLibp2pOptions): Promise<MeshLibp2p> {
  installYamuxHalfWindowUpdates();
  const guard = new PeerGuard(options.peerGuard);
  const gater = options.connectionGater;
  const topics = options.meshId === undefined ? [] : Object.keys(channelValidators).map((c) => meshTopic(options.meshId as string, c));
  const node = await createLibp2p({
    privateKey: options.privateKey,
    start: false,
    addresses: { listen: [...options.listen] },
    transports: [tcpWithSafeAbort()],
    connectionProtector: preSharedKey({ psk: options.swarmKey }),
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    // yamux's keep-alive only measures a round trip and never acts on a lost one; the
    // connection monitor below is what closes dead connections, so the keep-alive would only
    // add a ping per connection every 30 s (31 connections a node in a 32-node mesh).
    streamMuxers: [yamux({ enableKeepAlive: false })],
    connectionGater: {
      ...gater,
      denyDialPeer: async (peer) => guard.isBlocked(peer.toString()) || ((await gater.denyDialPeer?.(peer)) ?? false),
      denyInboundEncryptedConnection: async (peer, conn) => guard.isBlocked(peer.toString()) || ((await gater.denyInboundEncryptedConnection?.(peer, conn)) ?? false),
      denyOutboundEncryptedConnection: async (peer, conn) => guard.isBlocked(peer.toString()) || ((await gater.denyOutboundEncryptedConnection?.(peer, conn)) ?? false),
    },
    // The defaults (a few inbound connections per second per host) refuse the burst of
    // dials that a cluster on one address makes at start, and the refused dialer then
    // reports a misleading encryption error.
    connectionManager: {
      inboundConnectionThreshold: 1000,
      maxIncomingPendingConnections: 256,
      maxConnections: 1024,
    },
    // libp2p's connection monitor pings every connection every 10 s, all at the same moment,
    // and aborts one whose ping takes longer than an adaptive timeout of at least 5 s. Hosts
    // whose event loop stalls that long (many nodes starting on one small host, a CPU-bound
    // neighbour) then lose healthy connections, and every loss makes the membership layer probe
    // the peer; and nodes started together ping all their peers in the same second. Liveness is
    // the membership layer's job: connectionWatch below only closes connections to hosts that
    // vanished without a FIN, pinging each connection every 30 s (a 20 s timeout), spread out.
    connectionMonitor: { enabled: false },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        globalSignaturePolicy: StrictSign,
        // Without a fast id, gossipsub verifies a message's signature before its seen-cache
        // check, so every duplicate copy (one per mesh peer that forwards it) costs a verify.
        fastMsgIdFn: fastMessageId,
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        heartbeatInterval: options.gossipHeartbeatIntervalMs,
        floodPublish: true,
        ...meshDegrees(options.gossipMeshDegree ?? 3),
        maxInboundDataLength: options.gossipBytesMax,
        scoreParams: {
          IPColocationFactorWeight: options.ipColocationFactorWeight,
          // Only invalid messages count on the mesh's topics: three in quick succession take a
          // peer below the graylist threshold (-80), so gossipsub ignores it until they decay.
          topics: Object.fromEntries(topics.map((t) => [t, scoreInvalidOnly])),
        },
      }),
      guard: () => guard,
      connectionWatch: (components: ConnectionWatchComponents) => new ConnectionWatch(components, { intervalMs: 30_000, timeoutMs: 20_000 }),
    },
  });
  guard.attach({ disconnect: (peer) => node.hangUp(peerIdFromString(peer)) });
  if (options.meshId !== undefined) {
    for (const [channel, check] of Object.entries(channelValidators)) {
      node.services.pubsub.topicValidators.set(meshTopic(options.meshId, channel), guard.validator(channel, check));
    }
  }
  return node;
}

/**
 * @libp2p/tcp passes the dial's AbortSignal on to net.connect, which destroys the socket with
 * an AbortError when the signal fires, after tcp's own abort handler has removed the socket's
 * error listener: the AbortError is then uncaught and ends the process. That happens whenever
 * a request or probe with a deadline dials a peer it is not connected to and the deadline
 * passes mid-connect. Here net.connect gets a signal that never fires; the caller's abort
 * rejects the dial at once, and a socket that connects afterwards is closed.
 */
export function tcpWithSafeAbort(): ReturnType<typeof tcp> {
  const make = tcp();
  return (components) => {
    const transport = make(components);
    type Connect = (ma: unknown, options: { signal: AbortSignal }) => Promise<{ destroy(): void }>;
    const inner = transport as unknown as { _connect: Connect };
    const connect = inner._connect.bind(inner);
    inner._connect = (ma, options) =>
      new Promise((resolve, reject) => {
        const signal = options.signal;
        if (signal.aborted) return reject(new AbortError());
        let settled = false;
        const onAbort = () => {
          if (settled) return;
          settled = true;
          reject(new AbortError());
        };
        signal.addEventListener('abort', onAbort, { once: true });
        connect(ma, { ...options, signal: new AbortController().signal }).then(
          (socket) => {
            signal.removeEventListener('abort', onAbort);
            if (settled) return socket.destroy();
            settled = true;
            resolve(socket);
          },
          (err: unknown) => {
            signal.removeEventListener('abort', onAbort);
            if (settled) return;
            settled = true;
            reject(err);
          },
        );
      });
    return transport;
  };
}

/**
 * gossipsub's degree parameters derived from D, within its rules: Dlo ≤ D ≤ Dhi, Dout < Dlo and
 * Dout ≤ D/2, Dscore ≤ D. Gossip (IHAVE) goes to one peer outside the mesh a topic at each
 * heartbeat (Dlazy 1, gossipFactor 0). gossipsub's default (a quarter of the peers outside the
 * mesh) sent IHAVE to 7 peers a topic in a 32-node mesh, a third of an idle node's messages, to
 * repair losses that flooding over TCP rarely leaves (0.1 IWANT a second per idle N=32 node
 * against 13.5 IHAVE at Dlazy 3). None at all (Dlazy 0) is too few where nodes keep only some
 * peers: 64 in-process nodes keeping 8 each did not form a view within 300 s.
 */
export function meshDegrees(d: number): { D: number; Dlo: number; Dhi: number; Dout: number; Dscore: number; Dlazy: number; gossipFactor: number } {
  if (!Number.isInteger(d) || d < 1) throw new RangeError(`gossip mesh degree must be a positive integer, got ${d}`);
  const Dlo = Math.max(1, d - 1);
  return { D: d, Dlo, Dhi: d + 2, Dout: Math.min(Dlo - 1, Math.floor(d / 2)), Dscore: Math.max(1, Math.floor(d / 2)), Dlazy: 1, gossipFactor: 0 };
}

/**
 * A local de-duplication key over everything a message carries. Gossipsub records a fast id
 * only after the message's signature verified, so a forged copy (any byte different) gets a
 * different key and can never make the genuine message look like a duplicate.
 */
export function fastMessageId(msg: { topic: string; from?: Uint8Array; seqno?: Uint8Array; data?: Uint8Array; signature?: Uint8Array }): string {
  let h = Bun.hash(msg.topic) as bigint | number;
  for (const part of [msg.from, msg.seqno, msg.data, msg.signature]) h = Bun.hash(part ?? empty, h);
  return h.toString(36);
}
const empty = new Uint8Array(0);

/** Topic score: -10 per invalid message delivered, decaying by a tenth each second; nothing else scored. */
const scoreInvalidOnly = createTopicScoreParams({
  topicWeight: 1,
  timeInMeshWeight: 0,
  firstMessageDeliveriesWeight: 0,
  meshMessageDeliveriesWeight: 0,
  meshFailurePenaltyWeight: 0,
  invalidMessageDeliveriesWeight: -10,
  invalidMessageDeliveriesDecay: 0.9,
});
