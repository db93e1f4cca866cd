// One-way messages to one peer over a long-lived libp2p stream: each message is a frame of a
// 4-byte big-endian length and the bytes. A request (rpc.ts) opens a stream, negotiates its
// protocol and waits for an answer, which on a host starved of CPU costs round trips to the
// peer's event loop before the message is even read; a push to a peer whose stream is open is
// one write. Delivery is best effort, like gossip: a frame written when the stream or its
// connection dies is lost, and the sender's own protocol sends again what matters.
import type { Stream } from '@libp2p/interface';

/** Length prefix of one frame. */
export const FRAME_HEADER_BYTES = 4;

/** Frames held for one peer while its stream opens or drains; more are dropped. */
export const PUSH_QUEUE_MAX = 256;

export type PushHandler = (fromPeerId: string, bytes: Uint8Array) => void;

export interface PushOptions {
  /** Opens a stream of the push protocol to `peerId`, dialling it if needed. */
  open(peerId: string): Promise<Stream>;
  /** Called once per frame that was not written, with the reason (besides the frame's own onDropped). */
  dropped(peerId: string, reason: string): void;
}

/** Called when this one message could not be written. */
export type OnDropped = (reason: string) => void;

interface Pending {
  frame: Uint8Array;
  onDropped?: OnDropped;
}

interface Outbound {
  stream: Stream | null;
  /** Frames waiting for the stream to open or drain, in order. */
  queue: Pending[];
}

/** This node's outbound push streams, one per peer, opened on first use and after a loss. */
export class PushSender {
  private readonly peers = new Map<string, Outbound>();
  private stopped = false;

  constructor(private readonly options: PushOptions) {}

  /** Queues `bytes` for `peerId`; frames to one peer are written in order. */
  send(peerId: string, bytes: Uint8Array, onDropped?: OnDropped): void {
    const pending: Pending = { frame: encodeFrame(bytes), onDropped };
    if (this.stopped) return this.drop(peerId, pending, 'stopped');
    this.warm(peerId);
    const out = this.peers.get(peerId) as Outbound;
    if (out.stream && out.queue.length === 0 && !out.stream.writableNeedsDrain) return this.write(peerId, out, pending);
    if (out.queue.length >= PUSH_QUEUE_MAX) return this.drop(peerId, pending, `more than ${PUSH_QUEUE_MAX} frames waiting`);
    out.queue.push(pending);
  }

  /**
   * Opens the stream to `peerId` now if there is none, so that a later send is one write: the
   * first send on a new stream waits for a protocol negotiation with the peer, which on a
   * starved host is the slow part.
   */
  warm(peerId: string): void {
    if (this.stopped || this.peers.has(peerId)) return;
    const fresh: Outbound = { stream: null, queue: [] };
    this.peers.set(peerId, fresh);
    this.open(peerId, fresh);
  }

  /** Whether a stream to `peerId` is open (not merely opening). */
  isOpen(peerId: string): boolean {
    return this.peers.get(peerId)?.stream?.status === 'open';
  }

  /** Closes every stream; later sends are dropped. */
  stop(): void {
    this.stopped = true;
    for (const [peerId, out] of this.peers) {
      for (const pending of out.queue) this.drop(peerId, pending, 'stopped');
      out.stream?.abort(new Error('push sender stopped'));
    }
    this.peers.clear();
  }

  private open(peerId: string, out: Outbound): void {
    this.options.open(peerId).then(
      (stream) => {
        if (this.stopped || this.peers.get(peerId) !== out) return stream.abort(new Error('push stream no longer wanted'));
        out.stream = stream;
        stream.addEventListener('close', () => this.lost(peerId, out), { once: true });
        this.flush(peerId, out);
      },
      (err: Error) => this.lost(peerId, out, err.message),
    );
  }

  /** The stream closed or never opened: its waiting frames are dropped, the next send reopens. */
  private lost(peerId: string, out: Outbound, reason = 'stream closed'): void {
    if (this.peers.get(peerId) !== out) return;
    this.peers.delete(peerId);
    for (const pending of out.queue) this.drop(peerId, pending, reason);
    out.queue.length = 0;
  }

  private drop(peerId: string, pending: Pending, reason: string): void {
    this.options.dropped(peerId, reason);
    pending.onDropped?.(reason);
  }

  private flush(peerId: string, out: Outbound): void {
    const stream = out.stream;
    while (stream && out.queue.length > 0 && this.peers.get(peerId) === out) {
      if (stream.writableNeedsDrain) {
        stream.onDrain().then(() => this.flush(peerId, out), () => this.lost(peerId, out));
        return;
      }
      this.write(peerId, out, out.queue.shift() as Pending);
    }
  }

  private write(peerId: string, out: Outbound, pending: Pending): void {
    try {
      out.stream?.send(pending.frame);
    } catch (err) {
      this.drop(peerId, pending, (err as Error).message);
      out.stream?.abort(err as Error);
      this.lost(peerId, out);
    }
  }
}

export function encodeFrame(bytes: Uint8Array): Uint8Array {
  const frame = new Uint8Array(FRAME_HEADER_BYTES + bytes.byteLength);
  new DataView(frame.buffer).setUint32(0, bytes.byteLength);
  frame.set(bytes, FRAME_HEADER_BYTES);
  return frame;
}

/**
 * The receiving half: reads frames from `stream` until it ends and hands each to `handler`.
 * A frame longer than `bytesMax` aborts the stream (its sender reopens one for later frames).
 * Never throws.
 */
export async function receiveFrames(stream: Stream, fromPeerId: string, handler: PushHandler, bytesMax: number): Promise<void> {
  let pending: Uint8Array = new Uint8Array(0);
  try {
    for await (const chunk of stream) {
      const bytes = chunk.subarray();
      pending = pending.byteLength === 0 ? bytes : concat(pending, bytes);
      let offset = 0;
      while (pending.byteLength - offset >= FRAME_HEADER_BYTES) {
        const length = new DataView(pending.buffer, pending.byteOffset + offset).getUint32(0);
        if (length > bytesMax) {
          stream.abort(new Error(`push frame of ${length} bytes, more than ${bytesMax}`));
          return;
        }
        if (pending.byteLength - offset < FRAME_HEADER_BYTES + length) break;
        const start = offset + FRAME_HEADER_BYTES;
        handler(fromPeerId, pending.slice(start, start + length));
        offset = start + length;
      }
      pending = offset === pending.byteLength ? new Uint8Array(0) : pending.slice(offset);
    }
  } catch (err) {
    stream.abort(err as Error);
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}
