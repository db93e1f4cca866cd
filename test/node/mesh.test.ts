// Covers real libp2p nodes on loopback: 2 and 3 nodes connect through bootstrap addresses and
// gossip small and 4 KB messages to every node, a node with another pre-shared key cannot
// connect, and direct requests, ping and the partition hook behave as the driver expects.
import { afterEach, describe, expect, test } from 'bun:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import pino from 'pino';
import { Transport } from '../../node/p2p/transport.ts';
import { newSwarmKey } from '../../node/secrets.ts';
import { waitFor } from './helpers.ts';

const log = pino({ level: 'silent' });
/** Bounds each test; the waits inside are bounded tighter (helpers.waitFor). */
const testTimeoutMs = 20_000;
const running: Transport[] = [];

async function startNode(swarmKey: Uint8Array, peers: string[] = [], reuse?: { privateKey: PrivateKey; listen: string }): Promise<Transport> {
  const transport = await Transport.create({
    privateKey: reuse?.privateKey ?? (await generateKeyPair('Ed25519')),
    swarmKey,
    meshId: 'mesh-test',
    listen: [reuse?.listen ?? '/ip4/127.0.0.1/tcp/0'],
    peers,
    gossipHeartbeatIntervalMs: 100,
    ipColocationFactorWeight: 0,
    requestTimeoutMs: 2000,
    requestBytesMax: 64 * 1024,
    redialMinMs: 20,
    redialMaxMs: 200,
    log,
  });
  running.push(transport);
  await transport.start();
  return transport;
}

afterEach(async () => {
  await Promise.all(running.splice(0).map((t) => t.stop()));
});

/** Subscribes every node to `channel` and records what each receives. */
function listen(nodes: Transport[], channel: string): Map<string, Array<{ from: string; bytes: Uint8Array }>> {
  const inbox = new Map<string, Array<{ from: string; bytes: Uint8Array }>>();
  for (const node of nodes) {
    const received: Array<{ from: string; bytes: Uint8Array }> = [];
    inbox.set(node.peerId, received);
    node.subscribe(channel, (from, bytes) => received.push({ from, bytes }));
  }
  return inbox;
}

async function expectDeliveredToAll(nodes: Transport[], sender: Transport, channel: string, inbox: ReturnType<typeof listen>, bytes: Uint8Array): Promise<void> {
  const before = new Map(nodes.map((n) => [n.peerId, inbox.get(n.peerId)!.length]));
  await sender.publish(channel, bytes);
  const receivers = nodes.filter((n) => n !== sender);
  await waitFor(`a ${bytes.byteLength}-byte message at every node`, () => receivers.every((n) => inbox.get(n.peerId)!.length > before.get(n.peerId)!));
  for (const node of receivers) {
    const last = inbox.get(node.peerId)!.at(-1)!;
    expect(last.from).toBe(sender.peerId);
    expect(Buffer.from(last.bytes).equals(Buffer.from(bytes))).toBe(true);
  }
  // emitSelf is off: the sender does not hear its own message.
  expect(inbox.get(sender.peerId)!.length).toBe(before.get(sender.peerId)!);
}

const small = new TextEncoder().encode('hello mesh');
// Over the 1200-byte frame size at which noise's default crypto would need Bun's missing
// chacha20-poly1305; a 4 KB message proves the AssemblyScript cipher is in use.
const large = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7) % 251);

describe('mesh over libp2p', () => {
  test('two nodes connect via bootstrap and gossip small and 4 KB messages both ways', async () => {
    const key = newSwarmKey();
    const a = await startNode(key);
    const b = await startNode(key, a.addresses());
    const nodes = [a, b];
    const inbox = listen(nodes, 'membership');
    await waitFor('a and b connected and subscribed', () => a.subscribers('membership').includes(b.peerId) && b.subscribers('membership').includes(a.peerId));
    expect(a.connectedPeers()).toEqual([b.peerId]);
    await expectDeliveredToAll(nodes, a, 'membership', inbox, small);
    await expectDeliveredToAll(nodes, b, 'membership', inbox, large);
  }, testTimeoutMs);

  test('three nodes bootstrapped to one relay gossip from a leaf reaches every node', async () => {
    const key = newSwarmKey();
    const hub = await startNode(key);
    const left = await startNode(key, hub.addresses());
    const right = await startNode(key, hub.addresses());
    const nodes = [hub, left, right];
    const inbox = listen(nodes, 'membership');
    await waitFor('hub sees both leaves subscribed', () => hub.subscribers('membership').length === 2 && left.subscribers('membership').length >= 1 && right.subscribers('membership').length >= 1);
    // The hub relays to its gossip mesh, which takes both leaves in at its next heartbeat: a
    // message it received before that would reach a leaf only if the leaves were connected.
    await waitFor("both leaves in the hub's gossip mesh", () => hub.meshPeers('membership').length === 2);
    await expectDeliveredToAll(nodes, left, 'membership', inbox, small);
    await expectDeliveredToAll(nodes, right, 'membership', inbox, large);
    await expectDeliveredToAll(nodes, hub, 'membership', inbox, large);
    // Peer exchange through the hub connects the leaves to each other.
    await waitFor('leaves connected to each other', () => left.connectedPeers().includes(right.peerId) && right.connectedPeers().includes(left.peerId));
  }, testTimeoutMs);

  test('a node with another pre-shared key cannot connect', async () => {
    const a = await startNode(newSwarmKey());
    const stranger = await startNode(newSwarmKey());
    let dialError: unknown;
    await stranger.dial(a.addresses()[0]!, { timeoutMs: 1000 }).catch((err: unknown) => (dialError = err));
    expect(dialError).toBeInstanceOf(Error);
    expect(stranger.connectedPeers()).toEqual([]);
    expect(a.connectedPeers()).toEqual([]);
    const ping = await stranger.ping(a.peerId, { timeoutMs: 500 });
    expect(ping.ok).toBe(false);
  }, testTimeoutMs);

  test('direct request/response, size limit, unknown protocol, and ping', async () => {
    const key = newSwarmKey();
    const a = await startNode(key);
    const b = await startNode(key, a.addresses());
    await a.handle('echo', (from, request) => new TextEncoder().encode(`${from}:${request.byteLength}`));
    await a.handle('fail', () => {
      throw new Error('refused on purpose');
    });
    await waitFor('b connected to a', () => b.connectedPeers().includes(a.peerId));

    const answer = await b.request(a.peerId, 'echo', large);
    expect(answer).toEqual({ ok: true, bytes: new TextEncoder().encode(`${b.peerId}:4096`) });
    expect(await b.request(a.peerId, 'fail', small)).toEqual({ ok: false, error: 'remote-error', message: 'refused on purpose' });
    expect((await b.request(a.peerId, 'absent', small)).ok).toBe(false);
    expect((await b.request(a.peerId, 'echo', new Uint8Array(64 * 1024 + 1))).ok).toBe(false);

    const ping = await b.ping(a.peerId);
    expect(ping.ok && ping.rttMs >= 0).toBe(true);
    // Three round trips on one ping stream.
    const series = await b.pingSeries(a.peerId, 3, 1000);
    expect(series.ok && series.rttMs >= 0).toBe(true);
    // A round-trip budget too short for any echo fails, naming the round trip.
    const late = await b.pingSeries(a.peerId, 3, 0);
    expect(late.ok).toBe(false);
    expect(!late.ok && late.error).toMatch(/^round trip 1 of 3/);
  }, testTimeoutMs);

  test('a ping stream that closes before a round trip is sent fails the probe instead of throwing', async () => {
    const key = newSwarmKey();
    const a = await startNode(key);
    const b = await startNode(key, a.addresses());
    await waitFor('b connected to a', () => b.connectedPeers().includes(a.peerId));
    // The connection closing between the dial and the next ping (seen with 128 nodes on one
    // event loop) leaves pingSeries a closed stream, whose send throws.
    type Dial = (...args: unknown[]) => Promise<{ abort(err: Error): void }>;
    const node = (b as unknown as { node: { dialProtocol: Dial } }).node;
    const dial = node.dialProtocol.bind(node);
    node.dialProtocol = async (...args) => {
      const stream = await dial(...args);
      stream.abort(new Error('closed under the prober'));
      return stream;
    };
    const series = await b.pingSeries(a.peerId, 3, 1000);
    expect(series).toEqual({ ok: false, error: expect.stringMatching(/^round trip 1 of 3: Cannot write to a stream that is closed/), refused: false });
  }, testTimeoutMs);

  test('block cuts a link both ways and unblock lets the redial loop restore it', async () => {
    const key = newSwarmKey();
    const a = await startNode(key);
    const b = await startNode(key, a.addresses());
    const events: string[] = [];
    a.onPeer((e) => events.push(`${e.type}:${e.peerId}`));
    await waitFor('b connected to a', () => a.connectedPeers().includes(b.peerId));

    await a.block([b.peerId]);
    await b.block([a.peerId]);
    await waitFor('link cut on both sides', () => a.connectedPeers().length === 0 && b.connectedPeers().length === 0);
    expect(events).toContain(`disconnect:${b.peerId}`);
    expect((await b.ping(a.peerId, { timeoutMs: 500 })).ok).toBe(false);
    expect(await b.pingSeries(a.peerId, 3, 500)).toEqual({ ok: false, error: `peer ${a.peerId} is blocked`, refused: false });
    expect((await b.request(a.peerId, 'echo', small)).ok).toBe(false);
    expect(a.blockedPeers()).toEqual([b.peerId]);

    a.unblock([b.peerId]);
    b.unblock([a.peerId]);
    await waitFor('link restored by redial', () => a.connectedPeers().includes(b.peerId));
    expect(events.at(-1)).toBe(`connect:${b.peerId}`);
  }, testTimeoutMs);

  test('a bootstrap peer that goes away and comes back is redialled', async () => {
    const key = newSwarmKey();
    const privateKey = await generateKeyPair('Ed25519');
    const first = await startNode(key, [], { privateKey, listen: '/ip4/127.0.0.1/tcp/0' });
    const address = first.addresses()[0]!;
    const b = await startNode(key, [address]);
    await waitFor('b connected to its bootstrap peer', () => b.connectedPeers().includes(first.peerId));
    await first.stop();
    await waitFor('b saw the bootstrap peer go', () => b.connectedPeers().length === 0);
    // Same key, same port: the host restarted. Nothing dials b; b's redial loop must find it.
    const port = address.split('/')[4]!;
    const again = await startNode(key, [], { privateKey, listen: `/ip4/127.0.0.1/tcp/${port}` });
    await waitFor('b redialled the restarted peer', () => b.connectedPeers().includes(again.peerId));
  }, testTimeoutMs);
});

describe('push: one-way messages over a long-lived stream', () => {
  test('messages pushed in a burst arrive whole, in order, from their sender; a stream lost with its peer is reopened', async () => {
    const key = newSwarmKey();
    const aKey = await generateKeyPair('Ed25519');
    const a = await startNode(key, [], { privateKey: aKey, listen: '/ip4/127.0.0.1/tcp/0' });
    const b = await startNode(key, a.addresses());
    const got: Array<{ from: string; bytes: Uint8Array }> = [];
    await a.handle('note', (from, bytes) => {
      got.push({ from, bytes });
      return new Uint8Array(0);
    });
    await waitFor('b connected to a', () => b.connectedPeers().includes(a.peerId));
    // Warming opens the stream before any message needs it.
    expect(b.pushStreamOpen(a.peerId, 'note')).toBe(false);
    b.warmPush(a.peerId, 'note');
    await waitFor("b's push stream to a open", () => b.pushStreamOpen(a.peerId, 'note'));
    expect(got).toEqual([]);
    const dropped: string[] = [];
    const message = (i: number) => Uint8Array.from({ length: i === 7 ? 4096 : 8 }, (_, j) => (i + j) % 251);
    for (let i = 0; i < 200; i++) b.push(a.peerId, 'note', message(i), (reason) => dropped.push(reason));
    await waitFor('200 pushed messages at a', () => got.length === 200);
    expect(dropped).toEqual([]);
    for (let i = 0; i < 200; i++) {
      expect(got[i]!.from).toBe(b.peerId);
      expect(Buffer.from(got[i]!.bytes).equals(Buffer.from(message(i)))).toBe(true);
    }
    // a restarts on the same key and port: b's stream died with the connection, and the next
    // push opens a new one (a push written into the dying stream may be lost, never duplicated).
    const port = a.addresses()[0]!.split('/')[4]!;
    await a.stop();
    const again = await startNode(key, [], { privateKey: aKey, listen: `/ip4/127.0.0.1/tcp/${port}` });
    const after: Uint8Array[] = [];
    await again.handle('note', (_from, bytes) => {
      after.push(bytes);
      return new Uint8Array(0);
    });
    // Pushed again at every poll until one arrives: pushes made while b still holds the dead
    // stream are lost with it.
    await waitFor('a pushed message at the restarted node', () => {
      if (after.length === 0) b.push(again.peerId, 'note', message(1));
      return after.length > 0;
    });
    expect(Buffer.from(after[0]!).equals(Buffer.from(message(1)))).toBe(true);
  }, testTimeoutMs);

  test('a push that cannot be sent is reported and sends nothing: too large, or a peer that is not there', async () => {
    const key = newSwarmKey();
    const a = await startNode(key);
    const b = await startNode(key, a.addresses());
    const got: Uint8Array[] = [];
    await a.handle('note', (_from, bytes) => {
      got.push(bytes);
      return new Uint8Array(0);
    });
    const reasons: string[] = [];
    b.push(a.peerId, 'note', new Uint8Array(64 * 1024 + 1), (reason) => reasons.push(reason));
    expect(reasons).toEqual(['larger than 65536 bytes']);
    const gone = await startNode(key);
    const absent = gone.peerId;
    await gone.stop();
    b.push(absent, 'note', small, (reason) => reasons.push(reason));
    await waitFor('the push to an unknown peer reported', () => reasons.length === 2);
    expect(b.pushDropped['larger than 65536 bytes']).toBe(1);
    // The link still works afterwards.
    b.push(a.peerId, 'note', small);
    await waitFor('a later push delivered', () => got.length === 1);
    expect(Buffer.from(got[0]!).equals(Buffer.from(small))).toBe(true);
  }, testTimeoutMs);
});
