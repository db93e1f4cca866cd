// Covers the connection watch (node/p2p/connection-watch.ts): it spreads its pings over the
// interval instead of pinging every connection at once, aborts a connection whose peer stops
// echoing, and leaves alone one that answers or lacks the ping protocol.
import { afterEach, describe, expect, test } from 'bun:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { Connection } from '@libp2p/interface';
import { defaultLogger } from '@libp2p/logger';
import { PING_PROTOCOL, ConnectionWatch } from '../../node/p2p/connection-watch.ts';
import { createMeshLibp2p, type MeshLibp2p } from '../../node/p2p/libp2p.ts';
import { newSwarmKey } from '../../node/secrets.ts';
import { waitFor } from './helpers.ts';

/** A connection whose ping streams fail at once with an error of the given name. */
function fakeConnection(errorName: string): Connection & { aborted: number; pinged: number } {
  const conn = {
    status: 'open',
    remotePeer: 'fake',
    aborted: 0,
    pinged: 0,
    newStream: async () => {
      conn.pinged++;
      const err = new Error('fake');
      err.name = errorName;
      throw err;
    },
    abort: () => {
      conn.aborted++;
      conn.status = 'closed';
    },
  };
  return conn as unknown as Connection & { aborted: number; pinged: number };
}

describe('ConnectionWatch scheduling', () => {
  test('30 connections opened together are pinged one a step, each once an interval', async () => {
    const conns = Array.from({ length: 30 }, () => fakeConnection('UnsupportedProtocolError'));
    const watch = new ConnectionWatch({ connectionManager: { getConnections: () => conns }, logger: defaultLogger() }, { intervalMs: 3000, timeoutMs: 1000, stepMs: 100 });
    let most = 0;
    for (let t = 0; t <= 9000; t += 100) {
      const before = conns.reduce((s, c) => s + c.pinged, 0);
      await watch.step(t);
      most = Math.max(most, conns.reduce((s, c) => s + c.pinged, 0) - before);
    }
    // libp2p's monitor would have pinged all 30 in one step.
    expect(most).toBe(1);
    // Three intervals: every connection pinged two to four times, never aborted (a peer
    // without the ping protocol still answered multistream-select).
    for (const c of conns) {
      expect(c.pinged).toBeGreaterThanOrEqual(2);
      expect(c.pinged).toBeLessThanOrEqual(4);
      expect(c.aborted).toBe(0);
    }
  });

  test('a connection whose ping fails is aborted; the others are not', async () => {
    const good = fakeConnection('UnsupportedProtocolError');
    const bad = fakeConnection('Error');
    const watch = new ConnectionWatch({ connectionManager: { getConnections: () => [good, bad] }, logger: defaultLogger() }, { intervalMs: 200, timeoutMs: 100, stepMs: 100 });
    for (let t = 0; t <= 1000; t += 100) await watch.step(t);
    expect(bad.aborted).toBe(1);
    expect(good.aborted).toBe(0);
    expect(watch.counts.aborted).toBe(1);
  });

  test('intervals that are not positive are refused', () => {
    const components = { connectionManager: { getConnections: () => [] }, logger: defaultLogger() };
    expect(() => new ConnectionWatch(components, { intervalMs: 0, timeoutMs: 10 })).toThrow(RangeError);
    expect(() => new ConnectionWatch(components, { intervalMs: 10, timeoutMs: -1 })).toThrow(RangeError);
  });
});

describe('ConnectionWatch on real libp2p connections', () => {
  const nodes: MeshLibp2p[] = [];
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.stop()));
  });

  async function pair(): Promise<[MeshLibp2p, MeshLibp2p]> {
    const swarmKey = newSwarmKey();
    const make = async () => {
      const node = await createMeshLibp2p({
        privateKey: await generateKeyPair('Ed25519'),
        swarmKey,
        listen: ['/ip4/127.0.0.1/tcp/0'],
        connectionGater: {},
        gossipHeartbeatIntervalMs: 1000,
        ipColocationFactorWeight: 0,
        gossipBytesMax: 64 * 1024,
      });
      nodes.push(node);
      await node.start();
      return node;
    };
    const a = await make();
    const b = await make();
    await a.dial(b.getMultiaddrs()[0]!);
    return [a, b];
  }

  test('a peer that echoes keeps its connection; one that stops echoing loses it', async () => {
    const [a, b] = await pair();
    const watch = new ConnectionWatch({ connectionManager: { getConnections: () => a.getConnections() }, logger: defaultLogger() }, { intervalMs: 100, timeoutMs: 300, stepMs: 50 });
    watch.start();
    try {
      await waitFor('three pings answered', () => watch.counts.pings >= 3 && a.getConnections().length === 1, 5000);
      expect(watch.counts.aborted).toBe(0);
      expect(a.getConnections(b.peerId)).toHaveLength(1);

      // b's process is up but its ping handler swallows every ping: a host that stopped
      // answering without closing the socket, as far as a's pings can tell.
      await b.unhandle(PING_PROTOCOL);
      await b.handle(PING_PROTOCOL, () => {});
      await waitFor('the silent connection aborted', () => watch.counts.aborted >= 1, 5000);
      await waitFor('a no longer connected to b', () => a.getConnections(b.peerId).length === 0, 5000);
    } finally {
      watch.stop();
    }
  }, 20_000);
});
