// Closes connections to hosts that vanished without a FIN (power loss, a cut cable): each open
// connection is pinged once every intervalMs and aborted when the ping fails or takes longer
// than timeoutMs. It replaces libp2p's connection monitor, which pings every connection at the
// same moment: the nodes of a cluster started together then all ping all their peers in the
// same second, and in a 32-node mesh on one small host that second (992 pings, each a new
// stream) saturated the cores for 3 s every 30 s. Here the pings are spread: each step pings
// the connections whose turn came, oldest first, at most the share of one step, and every
// process starts at a random phase.
import { AbortError, type ComponentLogger, type Connection, type Logger, type Startable, type StreamMessageEvent } from '@libp2p/interface';

/** libp2p's ping protocol: the peer echoes each PING_BYTES bytes it reads. */
export const PING_PROTOCOL = '/ipfs/ping/1.0.0';
export const PING_BYTES = 32;

export interface ConnectionWatchInit {
  /** Each connection is pinged about once in this interval. */
  intervalMs: number;
  /** A ping unanswered this long aborts its connection. */
  timeoutMs: number;
  /** Time between two steps (default 1000 ms). */
  stepMs?: number;
}

export interface ConnectionWatchComponents {
  connectionManager: { getConnections(): Connection[] };
  logger: ComponentLogger;
}

export class ConnectionWatch implements Startable {
  private readonly log: Logger;
  private readonly stepMs: number;
  /** When each connection was last pinged (or first seen). */
  private readonly lastPinged = new WeakMap<Connection, number>();
  private readonly inFlight = new WeakSet<Connection>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private abort = new AbortController();
  /** Pings sent and connections aborted, for tests and diagnostics. */
  readonly counts = { pings: 0, aborted: 0 };

  constructor(
    private readonly components: ConnectionWatchComponents,
    private readonly init: ConnectionWatchInit,
  ) {
    if (!(init.intervalMs > 0) || !(init.timeoutMs > 0)) throw new RangeError('connection watch: intervalMs and timeoutMs must be positive');
    this.log = components.logger.forComponent('rankmesh:connection-watch');
    this.stepMs = Math.min(init.stepMs ?? 1000, init.intervalMs);
  }

  start(): void {
    if (this.timer !== undefined) return;
    this.abort = new AbortController();
    this.schedule(Math.random() * this.stepMs);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.abort.abort();
  }

  /** Pings the connections whose turn came; resolves when those pings have ended (tests wait on it). */
  step(nowMs = Date.now()): Promise<void> {
    const connections = this.components.connectionManager.getConnections().filter((c) => c.status === 'open');
    const due: { conn: Connection; since: number }[] = [];
    for (const conn of connections) {
      let since = this.lastPinged.get(conn);
      if (since === undefined) {
        // A new connection has just shown it works; its first ping falls at a random point of
        // the next interval, so connections opened together are not pinged together.
        since = nowMs - Math.random() * this.init.intervalMs;
        this.lastPinged.set(conn, since);
      }
      if (nowMs - since >= this.init.intervalMs && !this.inFlight.has(conn)) due.push({ conn, since });
    }
    due.sort((a, b) => a.since - b.since);
    const share = Math.ceil((connections.length * this.stepMs) / this.init.intervalMs);
    const pings: Promise<void>[] = [];
    for (const { conn } of due.slice(0, share)) {
      this.lastPinged.set(conn, nowMs);
      pings.push(this.ping(conn));
    }
    return Promise.all(pings).then(() => undefined);
  }

  private schedule(delayMs: number): void {
    this.timer = setTimeout(() => {
      void this.step();
      if (this.timer !== undefined) this.schedule(this.stepMs);
    }, delayMs);
  }

  private async ping(conn: Connection): Promise<void> {
    this.inFlight.add(conn);
    this.counts.pings++;
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.init.timeoutMs)]);
    try {
      const stream = await conn.newStream(PING_PROTOCOL, { signal, runOnLimitedConnection: true });
      try {
        await new Promise<void>((resolve, reject) => {
          let received = 0;
          const cleanUp = (): void => {
            stream.removeEventListener('message', onMessage);
            stream.removeEventListener('close', onClose);
            signal.removeEventListener('abort', onAbort);
          };
          const onMessage = (event: StreamMessageEvent): void => {
            received += event.data.byteLength;
            if (received < PING_BYTES) return;
            cleanUp();
            resolve();
          };
          const onClose = (): void => {
            cleanUp();
            reject(new Error('the ping stream closed before the echo'));
          };
          const onAbort = (): void => {
            cleanUp();
            reject(new AbortError(`no ping echo within ${this.init.timeoutMs} ms`));
          };
          stream.addEventListener('message', onMessage);
          stream.addEventListener('close', onClose);
          signal.addEventListener('abort', onAbort);
          stream.send(crypto.getRandomValues(new Uint8Array(PING_BYTES)));
        });
        await stream.close({ signal });
      } catch (err) {
        stream.abort(err as Error);
        throw err;
      }
    } catch (err) {
      // Stopping is not a verdict on the peer; a peer without the ping protocol still answered
      // multistream-select, so it is there.
      if (this.abort.signal.aborted || (err as Error).name === 'UnsupportedProtocolError') return;
      if (conn.status !== 'open') return;
      this.counts.aborted++;
      this.log('aborting connection to %p: %s', conn.remotePeer, (err as Error).message);
      conn.abort(err as Error);
    } finally {
      this.inFlight.delete(conn);
    }
  }
}
