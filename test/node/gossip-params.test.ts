// Covers the gossipsub settings derived in node/p2p/libp2p.ts: the fast de-duplication key
// and the mesh degrees derived from one D, the TCP dial's abort, and yamux window updates.
import { describe, expect, test } from 'bun:test';
import { fastMessageId, meshDegrees, tcpWithSafeAbort } from '../../node/p2p/libp2p.ts';
import { waitFor } from './helpers.ts';
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream';
import { installYamuxHalfWindowUpdates, windowUpdateDue } from '../../node/p2p/yamux-window.ts';

describe('fastMessageId', () => {
  const msg = {
    topic: '/rankmesh/m/core',
    from: new Uint8Array([0, 36, 8, 1, 18, 32, 7]),
    seqno: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]),
    data: new TextEncoder().encode('{"hb":1}'),
    signature: new Uint8Array(64).fill(9),
  };

  test('every copy of one message gets one key', () => {
    const copy = { ...msg, from: msg.from.slice(), seqno: msg.seqno.slice(), data: msg.data.slice(), signature: msg.signature.slice() };
    expect(fastMessageId(copy)).toBe(fastMessageId(msg));
  });

  test('a change to any byte of any field gives another key, so a forgery cannot shadow the genuine message', () => {
    const key = fastMessageId(msg);
    for (const field of ['from', 'seqno', 'data', 'signature'] as const) {
      for (let i = 0; i < msg[field].length; i++) {
        const bytes = msg[field].slice();
        bytes[i] = bytes[i]! ^ 1;
        expect(fastMessageId({ ...msg, [field]: bytes })).not.toBe(key);
      }
    }
    expect(fastMessageId({ ...msg, topic: '/rankmesh/m/demand' })).not.toBe(key);
  });

  test('bytes moved from one field to the next give another key', () => {
    const moved = { ...msg, from: msg.from.subarray(0, -1), seqno: new Uint8Array([msg.from.at(-1)!, ...msg.seqno]) };
    expect(fastMessageId(moved)).not.toBe(fastMessageId(msg));
  });
});

describe('meshDegrees', () => {
  test("every D from 1 to 12 satisfies gossipsub's rules", () => {
    for (let d = 1; d <= 12; d++) {
      const p = meshDegrees(d);
      expect(p.D).toBe(d);
      expect(p.Dlo).toBeLessThanOrEqual(p.D);
      expect(p.D).toBeLessThanOrEqual(p.Dhi);
      expect(p.Dlo).toBeGreaterThanOrEqual(1);
      expect(p.Dout).toBeLessThan(p.Dlo);
      expect(p.Dout).toBeLessThanOrEqual(p.D / 2);
      expect(p.Dscore).toBeLessThanOrEqual(p.D);
      // IHAVE to one peer a topic: repair where flooding cannot reach, at a third of the cost.
      expect(p.Dlazy).toBe(1);
      expect(p.gossipFactor).toBe(0);
    }
  });

  test('a degree that is not a positive integer is refused', () => {
    expect(() => meshDegrees(0)).toThrow(RangeError);
    expect(() => meshDegrees(2.5)).toThrow(RangeError);
  });
});

describe('tcpWithSafeAbort', () => {
  test('a dial aborted mid-connect rejects with AbortError, throws nothing uncaught, and closes its socket', async () => {
    const { createServer } = await import('node:net');
    const { defaultLogger } = await import('@libp2p/logger');
    const { multiaddr } = await import('@multiformats/multiaddr');
    let closed = 0;
    const server = createServer((socket) => socket.on('close', () => (closed += 1)).on('error', () => {}));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const transport = tcpWithSafeAbort()({ logger: defaultLogger() } as never) as unknown as {
      _connect(ma: unknown, options: { signal: AbortSignal }): Promise<unknown>;
    };
    try {
      for (let i = 0; i < 5; i++) {
        const controller = new AbortController();
        // net.connect runs synchronously inside the call; the abort comes before 'connect'.
        const dial = transport._connect(multiaddr(`/ip4/127.0.0.1/tcp/${port}`), { signal: controller.signal });
        controller.abort();
        await expect(dial).rejects.toThrow('aborted');
      }
      await waitFor('the late sockets to be closed', () => closed === 5, 5000);
    } finally {
      server.close();
    }
  });
});

describe('yamux window updates', () => {
  test('credit is granted once half the window is used, and always during the handshake', () => {
    const window = 256 * 1024;
    const at = (state: StreamState, capacity: number) => windowUpdateDue({ state, recvWindow: window, recvWindowCapacity: capacity });
    expect(at(StreamState.Established, window - 100)).toBe(false);
    expect(at(StreamState.Established, window / 2 + 1)).toBe(false);
    expect(at(StreamState.Established, window / 2)).toBe(true);
    expect(at(StreamState.Established, 0)).toBe(true);
    expect(at(StreamState.SYNSent, window - 100)).toBe(false);
    // The handshake's ACK rides on a window update; a paused stream is the library's call.
    expect(at(StreamState.SYNReceived, window - 100)).toBe(true);
    expect(at(StreamState.Init, window)).toBe(true);
    expect(at(StreamState.Paused, window - 100)).toBe(true);
  });

  test('installed on YamuxStream, the library sends an update only when one is due', () => {
    installYamuxHalfWindowUpdates();
    installYamuxHalfWindowUpdates();
    const frames: { length: number }[] = [];
    const window = 256 * 1024;
    const stream = Object.create(YamuxStream.prototype) as Record<string, unknown> & { sendWindowUpdate(): void };
    Object.assign(stream, {
      state: StreamState.Established,
      recvWindow: window,
      recvWindowCapacity: window - 500,
      maxStreamWindowSize: 16 * 1024 * 1024,
      epochStart: Date.now(),
      getRTT: () => -1,
      sendFrame: (frame: { length: number }) => frames.push(frame),
    });
    stream.sendWindowUpdate();
    expect(frames).toEqual([]);
    stream.recvWindowCapacity = window / 2 - 10;
    stream.sendWindowUpdate();
    expect(frames).toHaveLength(1);
    expect(frames[0]!.length).toBe(window / 2 + 10);
    expect(stream.recvWindowCapacity).toBe(window);
  });
});
