// The libp2p node of one rankmesh host: TCP, the pre-shared-key private network, noise,
// yamux, identify, ping and gossipsub, configured for meshes whose hosts may share an address.
import { noise } from '@chainsafe/libp2p-noise';
import { asCrypto, defaultCrypto } from '@chainsafe/libp2p-noise/crypto';
import { yamux } from '@chainsafe/libp2p-yamux';
import { gossipsub, StrictSign, type GossipSub } from '@libp2p/gossipsub';
import { identify } from '@libp2p/identify';
import type { ConnectionGater, PrivateKey } from '@libp2p/interface';
import { ping, type Ping } from '@libp2p/ping';
import { preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { createLibp2p, type Libp2p } from 'libp2p';

export type MeshLibp2p = Libp2p<{ identify: unknown; ping: Ping; pubsub: GossipSub }>;

export interface MeshLibp2pOptions {
  privateKey: PrivateKey;
  /** The swarm.key bytes shared by every node of the mesh. */
  swarmKey: Uint8Array;
  listen: readonly string[];
  connectionGater: ConnectionGater;
  gossipHeartbeatIntervalMs: number;
  ipColocationFactorWeight: number;
  /** Largest gossip message, in bytes. */
  gossipBytesMax: number;
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

export async function createMeshLibp2p(options: MeshLibp2pOptions): Promise<MeshLibp2p> {
  return createLibp2p({
    privateKey: options.privateKey,
    start: false,
    addresses: { listen: [...options.listen] },
    transports: [tcp()],
    connectionProtector: preSharedKey({ psk: options.swarmKey }),
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [yamux()],
    connectionGater: options.connectionGater,
    // The defaults (a few inbound connections per second per host) refuse the burst of
    // dials that a cluster on one address makes at start, and the refused dialer then
    // reports a misleading encryption error.
    connectionManager: {
      inboundConnectionThreshold: 1000,
      maxIncomingPendingConnections: 256,
      maxConnections: 1024,
    },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        globalSignaturePolicy: StrictSign,
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        heartbeatInterval: options.gossipHeartbeatIntervalMs,
        maxInboundDataLength: options.gossipBytesMax,
        scoreParams: { IPColocationFactorWeight: options.ipColocationFactorWeight },
      }),
    },
  });
}
