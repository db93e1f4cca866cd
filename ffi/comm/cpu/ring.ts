// Ring collectives over two authenticated links: every rank sends only to the next rank and
// receives only from the previous one. Data moves in pieces so that a piece received (and
// reduced) is forwarded while the next one is still arriving; each rank moves about
// 2·(n−1)/n of the buffer per all-reduce whatever n is.
//
// Frames: a 16-byte header [payload bytes u32][collective seq u32][kind u8][dtype u8][0 u16]
// [total elements u32], then the payload. The receiver checks every header field against
// the collective it is running, so ranks that called different collectives fail loudly
// instead of mixing data.
import type { CollectiveArray, ReduceOp } from '../communicator.ts';
import type { DataLink } from './dataplane.ts';
import { bytesOf, reduceInto } from './reduce.ts';

export const frameHeaderBytes = 16;

export type CollectiveKind = 'allReduce:sum' | 'allReduce:max' | 'allReduce:min' | 'broadcast' | 'allGather' | 'barrier';

const kindCodes: Record<CollectiveKind, number> = {
  'allReduce:sum': 1,
  'allReduce:max': 2,
  'allReduce:min': 3,
  broadcast: 4,
  allGather: 5,
  barrier: 6,
};

/** A frame did not match what this rank expected: the ranks disagree on the collective. */
export class RingProtocolError extends Error {
  override readonly name = 'RingProtocolError';
}

/** The running collective's identity, checked on every frame. */
export interface FrameTag {
  readonly seq: number;
  readonly kind: CollectiveKind;
  readonly dtype: number;
  readonly totalElements: number;
}

export interface RingOptions {
  /** Largest piece payload sent in one frame. */
  readonly pieceBytes: number;
  /** Frames above this are refused (a peer cannot make this rank allocate without bound). */
  readonly frameBytesMax: number;
}

export class Ring {
  private readonly header = new Uint8Array(frameHeaderBytes);
  private readonly headerView = new DataView(this.header.buffer);
  private scratch: ArrayBuffer | null = null;

  constructor(
    readonly rank: number,
    readonly size: number,
    private readonly next: DataLink,
    private readonly prev: DataLink,
    private readonly options: RingOptions,
  ) {}

  /**
   * Ring all-reduce of `data` into `result` (same type and length). `result` may be `data`
   * itself: each segment's own contribution is read just before the same place is written,
   * and a piece sent from `data` is overwritten only by the segment's final value, which
   * cannot arrive before the next rank has received that piece.
   */
  async allReduce<T extends CollectiveArray>(data: T, result: T, op: ReduceOp, tag: FrameTag): Promise<void> {
    if (data.byteLength * this.size <= smallAllReduceBytesMax) return this.allReduceSmall(data, result, op, tag);
    const n = this.size;
    const r = this.rank;
    const pieceElems = this.pieceElems(result);
    const scratch = this.scratchLike(result, Math.min(pieceElems, result.length));
    // Reduce-scatter: segment r starts here, straight from the caller's array; after n−1
    // steps segment r+1 is complete here. Each segment is combined with this rank's data
    // exactly once, so result = data ∘ incoming needs no initial copy of data.
    this.sendSegment(data, r, pieceElems, tag);
    for (let s = 0; s < n - 1; s++) {
      const seg = mod(r - s - 1, n);
      for (const [lo, hi] of pieces(result.length, seg, n, pieceElems)) {
        const incoming = scratch.subarray(0, hi - lo) as T;
        await this.recv(bytesOf(incoming), tag);
        const out = result.subarray(lo, hi) as T;
        reduceInto(out, data.subarray(lo, hi) as T, incoming, op);
        // The reduced piece goes on at once: it is the next step's input on the next rank
        // (after the last step it is the first all-gather piece).
        this.send(bytesOf(out), tag);
      }
    }
    // All-gather of the completed segments; the last one received is not forwarded.
    for (let t = 0; t < n - 1; t++) {
      const seg = mod(r - t, n);
      for (const [lo, hi] of pieces(result.length, seg, n, pieceElems)) {
        const piece = bytesOf(result.subarray(lo, hi));
        await this.recv(piece, tag);
        if (t < n - 2) this.send(piece, tag);
      }
    }
    await this.next.writer.idle();
  }

  /**
   * All-reduce for small arrays (the engine loop's per-iteration flags, barrier-like
   * votes): every rank's whole array goes once around the ring, then each rank folds the n
   * arrays in compact rank order, so every rank computes the same result. n − 1 sequential
   * hops instead of the 2(n − 1) of reduce-scatter + all-gather, and every rank sends at the
   * start, so a rank that starts first wakes its neighbour at once (the ring split would
   * leave some segments empty and some ranks silent until they receive).
   */
  private async allReduceSmall<T extends CollectiveArray>(data: T, result: T, op: ReduceOp, tag: FrameTag): Promise<void> {
    const n = this.size;
    const len = data.length;
    const all = this.scratchLike(result, len * n);
    const block = (b: number) => all.subarray(b * len, (b + 1) * len) as T;
    block(this.rank).set(data);
    this.send(bytesOf(block(this.rank)), tag);
    for (let t = 0; t < n - 1; t++) {
      const piece = bytesOf(block(mod(this.rank - t - 1, n)));
      await this.recv(piece, tag);
      if (t < n - 2) this.send(piece, tag);
    }
    result.set(block(0));
    for (let b = 1; b < n; b++) reduceInto(result, result, block(b), op);
    await this.next.writer.idle();
  }

  /**
   * Calls `onActivity` once, when the previous rank has sent bytes that no collective here has read: it has
   * begun a collective this rank has not called yet (or the link ended). Every collective
   * reads from the previous rank, so a rank that starts one wakes its ring neighbour, which
   * starts it too and wakes the next. Returns a cancel function.
   */
  watchPeerActivity(onActivity: () => void): () => void {
    return this.prev.reader.watchReadable(onActivity);
  }

  /** Pipelined ring broadcast from `root`; `result` holds the root's data on the root. */
  async broadcast<T extends CollectiveArray>(result: T, root: number, tag: FrameTag): Promise<void> {
    const pieceElems = this.pieceElems(result);
    const forward = mod(this.rank + 1, this.size) !== root;
    for (let lo = 0; lo < result.length; lo += pieceElems) {
      const piece = bytesOf(result.subarray(lo, Math.min(result.length, lo + pieceElems)));
      if (this.rank !== root) await this.recv(piece, tag);
      if (forward) this.send(piece, tag);
    }
    await this.next.writer.idle();
  }

  /** Ring all-gather: `result` holds this rank's block at rank·block on entry. */
  async allGather<T extends CollectiveArray>(result: T, blockElems: number, tag: FrameTag): Promise<void> {
    const n = this.size;
    const pieceElems = this.pieceElems(result);
    const blockPieces = (block: number): [number, number][] => {
      const out: [number, number][] = [];
      const start = block * blockElems;
      for (let lo = 0; lo < blockElems; lo += pieceElems) out.push([start + lo, start + Math.min(blockElems, lo + pieceElems)]);
      return out;
    };
    for (const [lo, hi] of blockPieces(this.rank)) this.send(bytesOf(result.subarray(lo, hi)), tag);
    for (let t = 0; t < n - 1; t++) {
      for (const [lo, hi] of blockPieces(mod(this.rank - t - 1, n))) {
        const piece = bytesOf(result.subarray(lo, hi));
        await this.recv(piece, tag);
        if (t < n - 2) this.send(piece, tag);
      }
    }
    await this.next.writer.idle();
  }

  /** A reused receive buffer for one piece, typed like `a` (one per ring, never shared). */
  private scratchLike<T extends CollectiveArray>(a: T, length: number): T {
    const bytes = length * a.BYTES_PER_ELEMENT;
    if (!this.scratch || this.scratch.byteLength < bytes) this.scratch = new ArrayBuffer(Math.max(bytes, 8));
    return new (a.constructor as new (buffer: ArrayBuffer, byteOffset: number, length: number) => T)(this.scratch, 0, length);
  }

  private pieceElems(a: CollectiveArray): number {
    return Math.max(1, Math.floor(this.options.pieceBytes / a.BYTES_PER_ELEMENT));
  }

  private sendSegment(a: CollectiveArray, seg: number, pieceElems: number, tag: FrameTag): void {
    for (const [lo, hi] of pieces(a.length, seg, this.size, pieceElems)) this.send(bytesOf(a.subarray(lo, hi)), tag);
  }

  /** Queues one frame; `payload` is referenced until the writer is idle. */
  private send(payload: Uint8Array, tag: FrameTag): void {
    const header = new Uint8Array(frameHeaderBytes);
    const v = new DataView(header.buffer);
    v.setUint32(0, payload.length);
    v.setUint32(4, tag.seq >>> 0);
    v.setUint8(8, kindCodes[tag.kind]);
    v.setUint8(9, tag.dtype);
    v.setUint32(12, tag.totalElements >>> 0);
    this.next.writer.write(header);
    this.next.writer.write(payload);
  }

  /** Receives the next frame's payload into `target`, checking its header. */
  private async recv(target: Uint8Array, tag: FrameTag): Promise<void> {
    await this.prev.reader.read(this.header);
    const v = this.headerView;
    const bytes = v.getUint32(0);
    const seq = v.getUint32(4);
    const kind = v.getUint8(8);
    const dtype = v.getUint8(9);
    const total = v.getUint32(12);
    if (bytes > this.options.frameBytesMax) throw new RingProtocolError(`frame of ${bytes} bytes exceeds the ${this.options.frameBytesMax}-byte limit`);
    if (seq !== tag.seq >>> 0 || kind !== kindCodes[tag.kind] || dtype !== tag.dtype || total !== tag.totalElements >>> 0 || bytes !== target.length) {
      throw new RingProtocolError(
        `collective mismatch: this rank runs ${tag.kind} #${tag.seq} (dtype ${tag.dtype}, ${tag.totalElements} elements, piece ${target.length} B); ` +
          `the previous rank sent ${kindName(kind)} #${seq} (dtype ${dtype}, ${total} elements, piece ${bytes} B)`,
      );
    }
    await this.prev.reader.read(target);
  }
}

/** The [lo, hi) element ranges of segment `seg` of `n`, cut into pieces of at most pieceElems. */
/**
 * All-reduces of at most this many bytes times the ring size take the one-pass path
 * (allReduceSmall): each rank then moves n copies of its array instead of two, which for a
 * few KiB costs less than the n − 1 extra sequential hops it saves.
 */
export const smallAllReduceBytesMax = 64 * 1024;

export function pieces(length: number, seg: number, n: number, pieceElems: number): [number, number][] {
  const start = Math.floor((seg * length) / n);
  const end = Math.floor(((seg + 1) * length) / n);
  const out: [number, number][] = [];
  for (let lo = start; lo < end; lo += pieceElems) out.push([lo, Math.min(end, lo + pieceElems)]);
  return out;
}

function mod(a: number, n: number): number {
  return ((a % n) + n) % n;
}

function kindName(code: number): string {
  for (const [name, c] of Object.entries(kindCodes)) if (c === code) return name;
  return `unknown kind ${code}`;
}
