// Real libp2p nodes over loopback, built as the runtime builds them: a node without the mesh key cannot connect; gossip with a tampered or missing signature is dropped; a peer that keeps sending invalid core messages is scored down, disconnected and refused.
import { afterEach, describe, expect, test } from 'bun:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { multiaddr } from '@multiformats/multiaddr';
import { encode, WIRE_VERSION } from '../../mesh/wire.ts';
import { createMeshLibp2p, meshTopic, type MeshLibp2p } from '../../node/p2p/libp2p.ts';
import { Transport } from '../../node/p2p/transport.ts';
import { newSwarmKey } from '../../node/secrets.ts';
import pino from 'pino';
import { waitFor } from '../node/helpers.ts';

const meshId = 'm';
const coreTopic = meshTopic(meshId, 'core');
const started: MeshLibp2p[] = [];

async function meshNode(swarmKey: Uint8Array, invalidPerMinuteMax = 3, gossipBytesMax = 1 << 20): Promise<MeshLibp2p> {
  const node = await createMeshLibp2p({
    privateKey: await generateKeyPair('Ed25519'),
    swarmKey,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    connectionGater: {},
    gossipHeartbeatIntervalMs: 100,
    ipColocationFactorWeight: 0,
    gossipBytesMax,
    meshId,
    peerGuard: { invalidPerMinuteMax, blockMs: 60_000 },
  });
  await node.start();
  started.push(node);
  return node;
}

afterEach(async () => {
  await Promise.all(started.splice(0).map((n) => n.stop()));
});

/** Connects a to b and waits until each knows the other subscribes to the core topic. */
async function linked(a: MeshLibp2p, b: MeshLibp2p): Promise<void> {
  a.services.pubsub.subscribe(coreTopic);
  b.services.pubsub.subscribe(coreTopic);
  await a.dial(b.getMultiaddrs()[0]!);
  const knows = (x: MeshLibp2p, y: MeshLibp2p) => x.services.pubsub.getSubscribers(coreTopic).some((p) => p.equals(y.peerId));
  await waitFor('both ends to see the other subscribed', () => knows(a, b) && knows(b, a), 10_000);
}

/** Core messages the node delivered to its application, as decoded text. */
function received(node: MeshLibp2p): string[] {
  const texts: string[] = [];
  node.services.pubsub.addEventListener('message', (event) => texts.push(new TextDecoder().decode(event.detail.data)));
  return texts;
}

/** gossipsub's score of a peer (the implementation has it; its published interface does not). */
const scoreOf = (node: MeshLibp2p, peerId: string): number => (node.services.pubsub as unknown as { getScore(id: string): number }).getScore(peerId);

const coreMessage = (epoch: number) => encode({ v: WIRE_VERSION, meshId, generation: 1, epoch, body: { type: 'viewReq' } });

describe('peers', () => {
  test('a node without the mesh key cannot connect; one with it can', async () => {
    const key = newSwarmKey();
    const member = await meshNode(key);
    const outsider = await meshNode(newSwarmKey());
    const address = member.getMultiaddrs()[0]!;
    await expect(outsider.dial(address, { signal: AbortSignal.timeout(1000) })).rejects.toThrow();
    expect(outsider.getConnections()).toHaveLength(0);
    expect(member.getConnections()).toHaveLength(0);
    const friend = await meshNode(key);
    const connection = await friend.dial(multiaddr(address.toString()));
    expect(connection.remotePeer.equals(member.peerId)).toBe(true);
  });

  test('gossip with a tampered or a missing signature is dropped; the same sender signing honestly is heard', async () => {
    const key = newSwarmKey();
    const victim = await meshNode(key, 100);
    const attacker = await meshNode(key, 100);
    await linked(attacker, victim);
    const heard = received(victim);
    // The attacker's gossipsub signs as usual; this hook rewrites messages on their way out.
    let rewrite: 'tamper' | 'strip' | 'none' = 'tamper';
    type RpcLike = { messages: Array<{ data?: Uint8Array; signature?: Uint8Array; key?: Uint8Array }> };
    const pubsub = attacker.services.pubsub as unknown as { sendRpc: (id: string, rpc: RpcLike) => boolean };
    const send = pubsub.sendRpc.bind(pubsub);
    pubsub.sendRpc = (id, rpc) =>
      send(id, {
        ...rpc,
        messages: rpc.messages.map((m) => {
          if (rewrite === 'tamper' && m.data) return { ...m, data: coreMessage(7) };
          if (rewrite === 'strip') return { ...m, signature: undefined, key: undefined };
          return m;
        }),
      });
    await attacker.services.pubsub.publish(coreTopic, coreMessage(1));
    rewrite = 'strip';
    await attacker.services.pubsub.publish(coreTopic, coreMessage(2));
    rewrite = 'none';
    await attacker.services.pubsub.publish(coreTopic, coreMessage(3));
    await waitFor('the honest message', () => heard.length > 0);
    expect(heard.map((t) => JSON.parse(t).epoch)).toEqual([3]);
    // The forged ones counted against the sender's score on the core topic (scores are cached
    // for a gossip heartbeat, so the new one shows within a few of them).
    await waitFor('a negative score for the forger', () => scoreOf(victim, attacker.peerId.toString()) < 0, 5000);
  });

  test('a peer that keeps sending invalid core messages is scored down, disconnected and refused', async () => {
    const key = newSwarmKey();
    const victim = await meshNode(key, 3);
    const attacker = await meshNode(key);
    await linked(attacker, victim);
    const heard = received(victim);
    const attackerId = attacker.peerId.toString();
    // Validly signed, but not core messages: the topic validator rejects each one.
    for (let i = 0; i < 3; i++) await attacker.services.pubsub.publish(coreTopic, new TextEncoder().encode(`{"v":1,"junk":${i}}`));
    await waitFor('three rejections', () => (victim.services.guard.counters.invalid.core ?? 0) === 3);
    expect(victim.services.guard.isBlocked(attackerId)).toBe(false);
    await waitFor('a negative score for the sender of invalid messages', () => scoreOf(victim, attackerId) < 0, 5000);
    expect(victim.getConnections(attacker.peerId).length).toBeGreaterThan(0);
    await attacker.services.pubsub.publish(coreTopic, new TextEncoder().encode('not json'));
    await waitFor('the attacker disconnected', () => victim.getConnections(attacker.peerId).length === 0);
    expect(victim.services.guard.isBlocked(attackerId)).toBe(true);
    expect(victim.services.guard.counters.blocks).toBe(1);
    expect(heard).toEqual([]);
    // Refused both ways while blocked: the victim will not dial it, and an inbound connection
    // is closed as soon as the handshake names the peer (the dialer may see it open first).
    await expect(victim.dial(attacker.peerId, { signal: AbortSignal.timeout(3000) })).rejects.toThrow();
    await attacker.dial(victim.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(3000) }).catch(() => undefined);
    await waitFor('the redial closed at both ends', () => victim.getConnections(attacker.peerId).length === 0 && attacker.getConnections(victim.peerId).length === 0, 5000);
    expect(await attacker.services.pubsub.publish(coreTopic, coreMessage(1)).then((r) => r.recipients.length)).toBe(0);
  });

  test('a gossip message over the size limit is not delivered, and costs the sender its gossip stream', async () => {
    const key = newSwarmKey();
    const victim = await meshNode(key, 100, 4096);
    const sender = await meshNode(key, 100);
    await linked(sender, victim);
    const heard = received(victim);
    const big = encode({ v: WIRE_VERSION, meshId, generation: 1, epoch: 0, body: { type: 'cmd', kind: 'PAUSE', id: 'x'.repeat(64) } });
    const padded = new Uint8Array(8192);
    padded.set(big);
    padded.fill(0x20, big.byteLength);
    await sender.services.pubsub.publish(coreTopic, padded);
    // The receiver reads past its limit, drops the frame and closes the sender's gossip stream.
    const inbound = () => (victim.services.pubsub as unknown as { streamsInbound: Map<string, unknown> }).streamsInbound;
    expect(inbound().has(sender.peerId.toString())).toBe(true);
    await waitFor('the oversized frame to close the gossip stream', () => !inbound().has(sender.peerId.toString()), 4000);
    expect(heard).toEqual([]);
  });
});

describe('direct requests', () => {
  const transports: Transport[] = [];
  afterEach(async () => {
    await Promise.all(transports.splice(0).map((t) => t.stop()));
  });

  async function transport(swarmKey: Uint8Array): Promise<Transport> {
    const t = await Transport.create({
      privateKey: await generateKeyPair('Ed25519'),
      swarmKey,
      meshId,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      peers: [],
      gossipHeartbeatIntervalMs: 100,
      ipColocationFactorWeight: 0,
      requestTimeoutMs: 3000,
      requestBytesMax: 1 << 16,
      redialMinMs: 60_000,
      redialMaxMs: 60_000,
      log: pino({ level: 'silent' }),
      peerGuard: { invalidPerMinuteMax: 2, blockMs: 60_000 },
    });
    transports.push(t);
    await t.start();
    return t;
  }

  test('invalid direct core requests count against their sender, who is disconnected past the threshold', async () => {
    const key = newSwarmKey();
    const victim = await transport(key);
    const attacker = await transport(key);
    const seen: string[] = [];
    await victim.handle('core', (_from, bytes) => {
      seen.push(new TextDecoder().decode(bytes));
      return new Uint8Array();
    });
    const address = victim.addresses()[0]!;
    await attacker.dial(address);
    // A valid core message is no strike.
    expect((await attacker.request(victim.peerId, 'core', coreMessage(1))).ok).toBe(true);
    for (let i = 0; i < 2; i++) expect((await attacker.request(victim.peerId, 'core', new TextEncoder().encode(`junk ${i}`))).ok).toBe(true);
    expect(victim.guardStatus()).toEqual({ invalid: { core: 2 }, fromBlocked: 0, blocks: 0, blocked: [] });
    await attacker.request(victim.peerId, 'core', new TextEncoder().encode('junk 3'));
    await waitFor('the sender disconnected', () => !victim.connectedPeers().includes(attacker.peerId), 5000);
    expect(victim.guardStatus().blocked).toEqual([attacker.peerId]);
    // The handler saw every request (it refuses malformed ones in its own way), the last one included.
    expect(seen).toHaveLength(4);
  });
});
