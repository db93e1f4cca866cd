// A Communicator that measures what goes through it: each collective's bytes (this rank's
// contribution) and latency go to NodeMetrics, from which Prometheus derives bandwidth.
// Everything else is passed straight to the communicator it wraps, so the engine loop and
// the engine see no difference.
import type { CollectiveArray, CollectiveOptions, Communicator, ReduceOp } from '../../ffi/comm/communicator.ts';
import type { CollectiveOp, NodeMetrics } from './metrics.ts';

export function meterCommunicator(comm: Communicator, metrics: Pick<NodeMetrics, 'observeCollective'>): Communicator {
  return new MeteredCommunicator(comm, metrics);
}

class MeteredCommunicator implements Communicator {
  /**
   * Present exactly when the inner communicator has it: the engine loop sleeps up to 5 s
   * between idle all-reduces only where peers can wake it, and polls every 100 ms otherwise.
   */
  readonly watchPeerActivity?: (onActivity: () => void) => () => void;

  constructor(
    private readonly inner: Communicator,
    private readonly metrics: Pick<NodeMetrics, 'observeCollective'>,
  ) {
    if (inner.watchPeerActivity !== undefined) this.watchPeerActivity = (onActivity) => inner.watchPeerActivity!(onActivity);
  }

  get backend(): Communicator['backend'] {
    return this.inner.backend;
  }

  get key(): Communicator['key'] {
    return this.inner.key;
  }

  get rank(): number {
    return this.inner.rank;
  }

  get size(): number {
    return this.inner.size;
  }

  get meshRanks(): readonly number[] {
    return this.inner.meshRanks;
  }

  allReduce<T extends CollectiveArray>(data: T, op: ReduceOp, opts?: CollectiveOptions): Promise<T> {
    return this.timed('allReduce', data.byteLength, this.inner.allReduce(data, op, opts));
  }

  broadcast<T extends CollectiveArray>(data: T, root: number, opts?: CollectiveOptions): Promise<T> {
    return this.timed('broadcast', data.byteLength, this.inner.broadcast(data, root, opts));
  }

  allGather<T extends CollectiveArray>(data: T, opts?: CollectiveOptions): Promise<T> {
    return this.timed('allGather', data.byteLength, this.inner.allGather(data, opts));
  }

  barrier(opts?: CollectiveOptions): Promise<void> {
    return this.timed('barrier', 0, this.inner.barrier(opts));
  }

  abort(reason: string): void {
    this.inner.abort(reason);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  /** Only completed collectives count: an aborted one moved an unknown share of its bytes. */
  private async timed<T>(op: CollectiveOp, bytes: number, pending: Promise<T>): Promise<T> {
    const started = performance.now();
    const result = await pending;
    this.metrics.observeCollective(op, bytes, performance.now() - started);
    return result;
  }
}
