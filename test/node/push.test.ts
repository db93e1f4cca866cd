// Covers the framing of pushed messages (node/p2p/push.ts) on a scripted stream: frames split
// across chunks or sharing one are reassembled exactly, and a frame longer than the limit
// aborts the stream before anything of it reaches the handler.
import { describe, expect, test } from 'bun:test';
import type { Stream } from '@libp2p/interface';
import { encodeFrame, receiveFrames } from '../../node/p2p/push.ts';

/** A stream that yields `chunks` and records an abort. */
function scripted(chunks: Uint8Array[]): { stream: Stream; aborted: () => Error | undefined } {
  let aborted: Error | undefined;
  const stream = {
    async *[Symbol.asyncIterator]() {
      for (const c of chunks) yield c;
    },
    abort(err: Error) {
      aborted = err;
    },
  } as unknown as Stream;
  return { stream, aborted: () => aborted };
}

function joined(parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(parts.flatMap((p) => [...p]));
}

describe('push frames', () => {
  test('frames split across chunks, several in one chunk, and empty frames arrive exactly', async () => {
    const messages = [Uint8Array.of(1, 2, 3), new Uint8Array(0), Uint8Array.from({ length: 300 }, (_, i) => i % 256), Uint8Array.of(9)];
    const wire = joined(messages.map(encodeFrame));
    // Cut the byte stream at awkward places: inside a length prefix, inside a body, and at a frame edge.
    const cuts = [2, 5, 6, 100, 200, wire.byteLength];
    const chunks: Uint8Array[] = [];
    let at = 0;
    for (const cut of cuts) {
      chunks.push(wire.slice(at, cut));
      at = cut;
    }
    const { stream, aborted } = scripted(chunks);
    const got: Array<{ from: string; bytes: Uint8Array }> = [];
    await receiveFrames(stream, 'peer-a', (from, bytes) => got.push({ from, bytes }), 1024);
    expect(aborted()).toBeUndefined();
    expect(got.map((g) => g.from)).toEqual(['peer-a', 'peer-a', 'peer-a', 'peer-a']);
    expect(got.map((g) => [...g.bytes])).toEqual(messages.map((m) => [...m]));
  });

  test('a frame longer than the limit aborts the stream; the frames before it were delivered', async () => {
    const { stream, aborted } = scripted([joined([encodeFrame(Uint8Array.of(7)), encodeFrame(new Uint8Array(65)), encodeFrame(Uint8Array.of(8))])]);
    const got: Uint8Array[] = [];
    await receiveFrames(stream, 'peer-a', (_from, bytes) => got.push(bytes), 64);
    expect(got.map((b) => [...b])).toEqual([[7]]);
    expect(aborted()?.message).toBe('push frame of 65 bytes, more than 64');
  });
});
