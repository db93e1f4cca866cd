// Byte streams over one Bun TCP socket: an ordered writer that respects backpressure and a
// reader that copies incoming bytes straight into the caller's buffer. Both the handshake
// and the collectives' data frames run on these.
import type { Socket } from 'bun';

/** What a socket's handlers forward to; set as the socket's `data`. */
export interface SocketEvents {
  onData(chunk: Uint8Array): void;
  onDrain(): void;
  onClose(reason: string): void;
}

/** The per-socket slot the shared Bun handlers dispatch through. */
export interface SocketSlot {
  events: SocketEvents | null;
}

/** Shared Bun socket handlers: everything goes to whatever `socket.data.events` is now. */
export const socketHandlers = {
  binaryType: 'uint8array' as const,
  data(socket: Socket<SocketSlot>, chunk: Uint8Array) {
    socket.data.events?.onData(chunk);
  },
  drain(socket: Socket<SocketSlot>) {
    socket.data.events?.onDrain();
  },
  close(socket: Socket<SocketSlot>, error?: Error) {
    socket.data.events?.onClose(error ? `socket error: ${error.message}` : 'socket closed by peer');
  },
  error(socket: Socket<SocketSlot>, error: Error) {
    socket.data.events?.onClose(`socket error: ${error.message}`);
  },
};

/** A stream ended or failed; `reason` says why in words. */
export class LinkClosedError extends Error {
  override readonly name = 'LinkClosedError';
  constructor(readonly reason: string) {
    super(reason);
  }
}

/**
 * Reads exact byte counts from a socket. One read may be outstanding at a time; bytes that
 * arrive with no read waiting are kept (the socket is paused past `bufferedBytesMax`).
 */
export class ByteReader {
  private readonly chunks: Uint8Array[] = [];
  private bufferedBytes = 0;
  private want: { target: Uint8Array; filled: number; resolve: () => void; reject: (e: Error) => void } | null = null;
  private endReason: string | null = null;
  private paused = false;
  private readonly readableWatchers = new Set<() => void>();

  constructor(
    private readonly socket: Socket<SocketSlot>,
    private readonly bufferedBytesMax: number,
    private readonly onPause: () => void = () => {},
  ) {}

  /** Fills `target` completely with the next bytes of the stream. */
  read(target: Uint8Array): Promise<void> {
    if (this.want) return Promise.reject(new Error('ByteReader: a read is already outstanding'));
    let filled = this.drainInto(target, 0);
    if (filled === target.length) return Promise.resolve();
    if (this.endReason !== null) return Promise.reject(new LinkClosedError(this.endReason));
    return new Promise<void>((resolve, reject) => {
      this.want = { target, filled, resolve, reject };
    });
  }

  /**
   * Calls `onReadable` once, when bytes are waiting that no read has taken yet or the stream
   * ended (at once, in a microtask, if that is so already). Returns a cancel function.
   */
  watchReadable(onReadable: () => void): () => void {
    if (this.bufferedBytes > 0 || this.endReason !== null) {
      let cancelled = false;
      queueMicrotask(() => cancelled || onReadable());
      return () => (cancelled = true);
    }
    this.readableWatchers.add(onReadable);
    return () => this.readableWatchers.delete(onReadable);
  }

  push(chunk: Uint8Array): void {
    let offset = 0;
    const want = this.want;
    if (want) {
      const n = Math.min(chunk.length, want.target.length - want.filled);
      want.target.set(n === chunk.length ? chunk : chunk.subarray(0, n), want.filled);
      want.filled += n;
      offset = n;
      if (want.filled === want.target.length) {
        this.want = null;
        want.resolve();
      }
    }
    if (offset < chunk.length) {
      // Kept for a later read without copying: Bun hands every data event a fresh buffer.
      this.chunks.push(offset === 0 ? chunk : chunk.subarray(offset));
      this.bufferedBytes += chunk.length - offset;
      if (this.bufferedBytes > this.bufferedBytesMax && !this.paused) {
        this.paused = true;
        this.socket.pause();
        this.onPause();
      }
      this.notifyReadable();
    }
  }

  private notifyReadable(): void {
    if (this.readableWatchers.size === 0) return;
    const watchers = [...this.readableWatchers];
    this.readableWatchers.clear();
    for (const w of watchers) w();
  }

  /** No more bytes will come: a read that the kept bytes cannot satisfy fails now. */
  end(reason: string): void {
    if (this.endReason !== null) return;
    this.endReason = reason;
    this.notifyReadable();
    const want = this.want;
    if (want) {
      this.want = null;
      want.reject(new LinkClosedError(reason));
    }
  }

  private drainInto(target: Uint8Array, filled: number): number {
    while (filled < target.length && this.chunks.length > 0) {
      const head = this.chunks[0]!;
      const n = Math.min(head.length, target.length - filled);
      target.set(n === head.length ? head : head.subarray(0, n), filled);
      filled += n;
      this.bufferedBytes -= n;
      if (n === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(n);
    }
    if (this.paused && this.bufferedBytes <= this.bufferedBytesMax / 2) {
      this.paused = false;
      this.socket.resume();
    }
    return filled;
  }
}

/**
 * Writes byte arrays in order. Bun's socket.write is unbuffered, so what the kernel does not
 * take now waits here, referenced (not copied), until the socket drains: callers must not
 * change a written array before `idle()` resolves.
 */
export class ByteWriter {
  private readonly queue: Uint8Array[] = [];
  private idleWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private closedReason: string | null = null;
  /** Set when bytes were written but never reached the kernel. */
  private lostReason: string | null = null;

  constructor(private readonly socket: Socket<SocketSlot>) {}

  write(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (this.closedReason !== null) {
      this.lostReason ??= this.closedReason;
      return;
    }
    this.queue.push(bytes);
    if (this.queue.length === 1) this.flush();
  }

  /**
   * Resolves when every written byte has been handed to the kernel; rejects if some never
   * will be. A socket closed after its last byte went out is not a failure: the peer may
   * well have finished and hung up.
   */
  idle(): Promise<void> {
    if (this.lostReason !== null) return Promise.reject(new LinkClosedError(this.lostReason));
    if (this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => this.idleWaiters.push({ resolve, reject }));
  }

  flush(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const n = this.socket.write(head);
      if (n < 0) {
        this.close('socket closed while writing');
        return;
      }
      if (n < head.length) {
        this.queue[0] = head.subarray(n);
        return; // the drain handler calls flush() again
      }
      this.queue.shift();
    }
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w.resolve();
  }

  close(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    if (this.queue.length > 0) this.lostReason = reason;
    this.queue.length = 0;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w.reject(new LinkClosedError(reason));
  }
}
