// The CPU backend of the Communicator: ranks are processes (or objects, in tests) that move
// bytes over plain TCP sockets between their nodes' data planes, arranged in a ring.
// Authentication is the data plane's job (ffi/comm/cpu/dataplane.ts); this file builds the
// ring for one epoch and runs collectives on it, one at a time, in call order.
//
// Usage, per node and epoch:
//   const plane = await CpuDataPlane.listen({ meshId, meshKey });     // once per process
//   // advertise plane.hostname / plane.port through the mesh, learn the peers' addresses
//   const comm = await createCpuCommunicator({ dataPlane: plane, key, rank, meshRanks, peers });
//   ... collectives ...; on the next view change: comm.abort(reason) or await comm.close().
import {
  type CollectiveArray,
  type CollectiveOptions,
  CommAbortedError,
  type Communicator,
  type EpochKey,
  type ReduceOp,
} from './communicator.ts';
import { CpuDataPlane, DataPlaneConnectError, type DataLink } from './cpu/dataplane.ts';
import { LinkClosedError } from './cpu/link.ts';
import { type CollectiveKind, type FrameTag, Ring, RingProtocolError } from './cpu/ring.ts';

export { CpuDataPlane, DataPlaneConnectError };
export type { CpuDataPlaneOptions, DataPlaneStats } from './cpu/dataplane.ts';

/** Where a mesh rank's data plane listens, as advertised through the mesh. */
export interface CpuPeerAddress {
  readonly meshRank: number;
  readonly host: string;
  readonly port: number;
}

export interface CpuCommunicatorOptions {
  /** This process's long-lived listener (one per node, shared by all epochs). */
  readonly dataPlane: CpuDataPlane;
  readonly key: EpochKey;
  /** This process's compact rank, 0..meshRanks.length-1. */
  readonly rank: number;
  /** Compact rank → mesh rank: the epoch's active ranks, ascending. */
  readonly meshRanks: readonly number[];
  /** Addresses of the other ranks' data planes (at least the next rank's in the ring). */
  readonly peers: readonly CpuPeerAddress[];
  /** Both ring links must be up within this. Default 10000. */
  readonly connectTimeoutMs?: number;
  /** Largest frame payload sent. Default 1 MiB. */
  readonly pieceBytes?: number;
  /** Largest frame payload accepted. Default 16 MiB. */
  readonly frameBytesMax?: number;
}

/** The communicator could not be built (peer unreachable, refused, or too slow). */
export class CommSetupError extends Error {
  override readonly name = 'CommSetupError';
}

/** Builds this rank's communicator for one epoch; resolves once both ring links are up. */
export async function createCpuCommunicator(options: CpuCommunicatorOptions): Promise<CpuCommunicator> {
  const { key, rank, meshRanks, dataPlane } = options;
  const size = meshRanks.length;
  validate(options);
  const pieceBytes = options.pieceBytes ?? 1024 * 1024;
  const frameBytesMax = options.frameBytesMax ?? 16 * 1024 * 1024;
  if (pieceBytes > frameBytesMax) throw new RangeError(`pieceBytes ${pieceBytes} exceeds frameBytesMax ${frameBytesMax}`);
  if (size === 1) return new CpuCommunicator(key, 0, [...meshRanks], null, []);

  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
  const self = meshRanks[rank]!;
  const nextMeshRank = meshRanks[(rank + 1) % size]!;
  const prevMeshRank = meshRanks[(rank - 1 + size) % size]!;
  const nextAddress = options.peers.find((p) => p.meshRank === nextMeshRank)!;

  const inbound = dataPlane.expect({ key, fromMeshRank: prevMeshRank, toMeshRank: self });
  const timer = setTimeout(inbound.cancel, connectTimeoutMs);
  const outbound = dataPlane.connect({ key, fromMeshRank: self, toMeshRank: nextMeshRank }, nextAddress.host, nextAddress.port, connectTimeoutMs);
  // A refused or unreachable next rank fails the setup now, not at the inbound timeout.
  outbound.catch(inbound.cancel);
  const results = await Promise.allSettled([outbound, inbound.link]);
  clearTimeout(timer);
  const [next, prev] = results;
  if (next.status === 'rejected' || prev.status === 'rejected') {
    const links = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    await Promise.all(links.map((l) => l.close('communicator setup failed')));
    const why = [
      next.status === 'rejected' ? `link to mesh rank ${nextMeshRank}: ${(next.reason as Error).message}` : null,
      prev.status === 'rejected' && next.status === 'fulfilled' ? `link from mesh rank ${prevMeshRank}: not connected within ${connectTimeoutMs} ms` : null,
    ].filter((x) => x !== null);
    throw new CommSetupError(`epoch ${key.generation}/${key.epoch} rank ${rank}: ${why.join('; ')}`);
  }
  const ring = new Ring(rank, size, next.value, prev.value, { pieceBytes, frameBytesMax });
  return new CpuCommunicator(key, rank, [...meshRanks], ring, [next.value, prev.value]);
}

export class CpuCommunicator implements Communicator {
  readonly backend = 'cpu' as const;
  readonly size: number;
  private abortReason: string | null = null;
  private closing = false;
  private seq = 0;
  private tail: Promise<unknown> = Promise.resolve();
  private readonly abortWaiters = new Set<(e: CommAbortedError) => void>();
  /** Collectives called and not yet settled. */
  private inFlight = 0;

  constructor(
    readonly key: EpochKey,
    readonly rank: number,
    readonly meshRanks: readonly number[],
    private readonly ring: Ring | null,
    private readonly links: readonly DataLink[],
  ) {
    this.size = meshRanks.length;
    // A ring link that closes while no collective is under way means the neighbour finished
    // for good or died: abort now so the owner hears of it before the next collective.
    // During a collective the collective itself decides: it fails only if it still needed
    // the link (a neighbour that completed the last collective may already have hung up).
    const neighbours = ring ? [meshRanks[(rank + 1) % this.size]!, meshRanks[(rank - 1 + this.size) % this.size]!] : [];
    links.forEach((link, i) =>
      link.onClose((why) => {
        if (this.inFlight === 0 && !this.closing) this.abort(`ring link ${i === 0 ? 'to' : 'from'} mesh rank ${neighbours[i]} closed (${why})`);
      }),
    );
  }

  /** Why the communicator was aborted, or null while it is usable. */
  get aborted(): string | null {
    return this.abortReason;
  }

  allReduce<T extends CollectiveArray>(data: T, op: ReduceOp, opts?: CollectiveOptions): Promise<T> {
    const check = checkArray(data);
    if (check) return Promise.reject(new TypeError(check));
    return this.allReduceInto(data, uninitialized(data, data.length), op, opts);
  }

  /**
   * All-reduce into a caller-owned array, like NCCL's recvbuff: `out` has the type and
   * length of `data` and is either `data` itself (in place) or does not overlap it. Saves
   * allocating (and page-faulting) a result per call, which for large arrays costs about as
   * much as the transfer. Neither array may be touched until the promise settles.
   */
  allReduceInto<T extends CollectiveArray>(data: T, out: T, op: ReduceOp, opts?: CollectiveOptions): Promise<T> {
    if (op !== 'sum' && op !== 'max' && op !== 'min') return Promise.reject(new RangeError(`unknown reduce op ${String(op)}`));
    if (out.constructor !== data.constructor || out.length !== data.length) {
      return Promise.reject(new RangeError('allReduceInto: out must have the type and length of data'));
    }
    if (out !== data && overlaps(out, data)) return Promise.reject(new RangeError('allReduceInto: out overlaps data without being data'));
    return this.run(`allReduce:${op}`, data, opts, async (ring, tag) => {
      if (!ring) {
        if (out !== data) out.set(data);
        return out;
      }
      await ring.allReduce(data, out, op, tag);
      return out;
    });
  }

  broadcast<T extends CollectiveArray>(data: T, root: number, opts?: CollectiveOptions): Promise<T> {
    if (!Number.isInteger(root) || root < 0 || root >= this.size) return Promise.reject(new RangeError(`broadcast root ${root} outside 0..${this.size - 1}`));
    return this.run('broadcast', data, opts, async (ring, tag) => {
      const result = (root === this.rank ? data.slice() : uninitialized(data, data.length)) as T;
      if (ring) await ring.broadcast(result, root, tag);
      return result;
    });
  }

  allGather<T extends CollectiveArray>(data: T, opts?: CollectiveOptions): Promise<T> {
    return this.run('allGather', data, opts, async (ring, tag) => {
      const result = uninitialized(data, data.length * this.size);
      result.set(data, this.rank * data.length);
      if (ring) await ring.allGather(result, data.length, tag);
      return result;
    });
  }

  barrier(opts?: CollectiveOptions): Promise<void> {
    // Completing an all-gather means holding a byte that every rank sent after entering.
    const token = new Uint8Array(1);
    return this.run('barrier', token, opts, async (ring, tag) => {
      if (!ring) return;
      const all = new Uint8Array(this.size);
      await ring.allGather(all, 1, tag);
    });
  }

  watchPeerActivity(onActivity: () => void): () => void {
    if (!this.ring) return () => {};
    if (this.abortReason !== null) {
      let cancelled = false;
      queueMicrotask(() => cancelled || onActivity());
      return () => (cancelled = true);
    }
    let fired = false;
    const once = () => {
      if (fired) return;
      fired = true;
      cancel();
    };
    const onAbort = () => {
      once();
      onActivity();
    };
    this.abortWaiters.add(onAbort);
    const stopWatching = this.ring.watchPeerActivity(() => {
      once();
      onActivity();
    });
    const cancel = () => {
      this.abortWaiters.delete(onAbort);
      stopWatching();
    };
    return once;
  }

  abort(reason: string): void {
    if (this.abortReason !== null) return;
    this.abortReason = reason;
    // Ending our sockets makes both ring neighbours fail their next read or write, so the
    // abort spreads around the ring instead of leaving peers waiting for a deadline.
    for (const link of this.links) link.end(`aborted: ${reason}`);
    const error = new CommAbortedError(reason);
    for (const w of this.abortWaiters) w(error);
    this.abortWaiters.clear();
  }

  /**
   * Lets collectives already called finish for up to `graceMs` (peers may still be
   * completing them), then aborts whatever is left and closes both ring links.
   */
  async close(graceMs = 2000): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    const settled = await Promise.race([this.tail.then(() => true), grace.then(() => false)]);
    clearTimeout(timer);
    if (!settled) this.abort(`closed with a collective still pending after ${graceMs} ms`);
    if (this.abortReason === null) this.abortReason = 'communicator closed';
    await Promise.all(this.links.map((l) => l.close('communicator closed')));
  }

  /** Runs one collective after the ones called before it, under its deadline and abort. */
  private run<R>(kind: CollectiveKind, data: CollectiveArray, opts: CollectiveOptions | undefined, body: (ring: Ring | null, tag: FrameTag) => Promise<R>): Promise<R> {
    const check = checkArray(data);
    if (check) return Promise.reject(new TypeError(check));
    if (this.abortReason !== null) return Promise.reject(new CommAbortedError(this.abortReason));
    if (this.closing) return Promise.reject(new CommAbortedError('communicator is closing'));
    const seq = this.seq++;
    const tag: FrameTag = { seq, kind, dtype: dtypeCode(data), totalElements: data.length };
    const name = `${kind} #${seq}`;
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (opts?.deadlineMs !== undefined) {
      const ms = opts.deadlineMs;
      timer = setTimeout(() => this.abort(`${name} missed its ${ms} ms deadline`), ms);
    }
    this.inFlight += 1;
    const result = this.tail.then(() => this.guarded(name, () => body(this.ring, tag)));
    this.tail = result.catch(() => {});
    return result.finally(() => {
      clearTimeout(timer);
      this.inFlight -= 1;
    });
  }

  private guarded<R>(name: string, body: () => Promise<R>): Promise<R> {
    if (this.abortReason !== null) return Promise.reject(new CommAbortedError(this.abortReason));
    return new Promise<R>((resolve, reject) => {
      const onAbort = (e: CommAbortedError) => reject(e);
      this.abortWaiters.add(onAbort);
      body().then(
        (value) => {
          this.abortWaiters.delete(onAbort);
          if (this.abortReason !== null) reject(new CommAbortedError(this.abortReason));
          else resolve(value);
        },
        (e: unknown) => {
          this.abortWaiters.delete(onAbort);
          if (this.abortReason === null) this.abort(`${name} failed: ${describe(e)}`);
          reject(new CommAbortedError(this.abortReason ?? describe(e)));
        },
      );
    });
  }
}

/**
 * A result array whose memory is not zeroed first. Every collective writes each element of
 * its result before resolving (and a result of a failed collective is never returned), so
 * the zeroing would be wasted: for large arrays it is page-faulting fresh memory that costs
 * more than the data's trip through the socket.
 */
function uninitialized<T extends CollectiveArray>(like: T, length: number): T {
  const ctor = like.constructor as new (buffer: ArrayBufferLike, byteOffset: number, length: number) => T;
  const bytes = Buffer.allocUnsafeSlow(length * like.BYTES_PER_ELEMENT);
  if (bytes.byteOffset % 8 !== 0) return new (like.constructor as new (n: number) => T)(length);
  return new ctor(bytes.buffer, bytes.byteOffset, length);
}

function overlaps(a: CollectiveArray, b: CollectiveArray): boolean {
  return a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

function describe(e: unknown): string {
  if (e instanceof LinkClosedError) return `ring link lost (${e.reason})`;
  if (e instanceof RingProtocolError) return e.message;
  return e instanceof Error ? e.message : String(e);
}

function dtypeCode(a: CollectiveArray): number {
  if (a instanceof Float32Array) return 1;
  if (a instanceof Float64Array) return 2;
  if (a instanceof Int32Array) return 3;
  return 4;
}

function checkArray(a: unknown): string | null {
  if (a instanceof Float32Array || a instanceof Float64Array || a instanceof Int32Array) return null;
  if (a instanceof Uint8Array && a.constructor === Uint8Array) return null;
  return 'collectives take a Float32Array, Float64Array, Int32Array or plain Uint8Array';
}

function validate(o: CpuCommunicatorOptions): void {
  const { rank, meshRanks } = o;
  if (meshRanks.length === 0) throw new RangeError('meshRanks is empty');
  for (let i = 0; i < meshRanks.length; i++) {
    const m = meshRanks[i]!;
    if (!Number.isInteger(m) || m < 0) throw new RangeError(`meshRanks[${i}] = ${m} is not a rank`);
    if (i > 0 && m <= meshRanks[i - 1]!) throw new RangeError('meshRanks must be strictly ascending');
  }
  if (!Number.isInteger(rank) || rank < 0 || rank >= meshRanks.length) throw new RangeError(`rank ${rank} outside 0..${meshRanks.length - 1}`);
  if (meshRanks.length > 1) {
    const next = meshRanks[(rank + 1) % meshRanks.length]!;
    const p = o.peers.find((x) => x.meshRank === next);
    if (!p) throw new RangeError(`no address for mesh rank ${next}, the next rank in the ring`);
    if (!Number.isInteger(p.port) || p.port <= 0 || p.port > 65535) throw new RangeError(`bad port ${p.port} for mesh rank ${next}`);
  }
  if (o.key.meshId !== o.dataPlane.meshId) throw new RangeError(`epoch key of mesh ${o.key.meshId}, data plane of ${o.dataPlane.meshId}`);
}
