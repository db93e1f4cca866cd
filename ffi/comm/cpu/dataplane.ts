// The CPU data plane of one node: a single long-lived TCP listener that serves every epoch's
// communicators, and the dialing side of the same handshake. A connection is handed to a
// communicator only after both ends proved they hold the mesh key and the connection named
// an epoch and ring edge that a communicator on this node is waiting for.
import type { Socket, TCPSocketListener } from 'bun';
import type { EpochKey } from '../communicator.ts';
import {
  challengeSchema,
  freshNonce,
  HandshakeProtocolError,
  type HandshakeResult,
  helloSchema,
  parseJson,
  proofFor,
  proofSchema,
  proofsEqual,
  readMessage,
  type RefusalCode,
  resultSchema,
  writeJson,
} from './handshake.ts';
import { ByteReader, ByteWriter, LinkClosedError, type SocketSlot, socketHandlers } from './link.ts';

export interface CpuDataPlaneOptions {
  readonly meshId: string;
  /** The mesh's pre-shared key; every connection proves knowledge of it both ways. */
  readonly meshKey: Uint8Array;
  /** Loopback or a host address the mesh advertises. Default 127.0.0.1. */
  readonly hostname?: string;
  /** 0 picks a free port. */
  readonly port?: number;
  /** An unauthenticated connection gets this long to finish the handshake. Default 5000. */
  readonly handshakeTimeoutMs?: number;
  /** An authenticated connection for an epoch not yet built here waits this long. Default 10000. */
  readonly parkTimeoutMs?: number;
  /** Bound on connections in handshake or parked at once. Default 64. */
  readonly pendingConnectionsMax?: number;
  /** Bytes a link keeps unread before it pauses its socket. Default 256 MiB. */
  readonly bufferedBytesMax?: number;
}

/** One directed ring edge of one epoch's communicator. */
export interface Edge {
  readonly key: EpochKey;
  readonly fromMeshRank: number;
  readonly toMeshRank: number;
}

export interface DataPlaneStats {
  readonly accepted: number;
  /** Refused because the peer could not prove it holds the mesh key. */
  readonly refusedAuth: number;
  /** Refused because the epoch, mesh or edge was not one this node serves. */
  readonly refusedEpoch: number;
  /** Refused for malformed messages, timeouts or too many pending connections. */
  readonly refusedProtocol: number;
  /** Times a link stopped reading because `bufferedBytesMax` unread bytes were waiting. */
  readonly readPauses: number;
}

/** The dialer was refused by the peer, or could not reach it in time. */
export class DataPlaneConnectError extends Error {
  override readonly name = 'DataPlaneConnectError';
  constructor(
    readonly code: RefusalCode | 'unreachable' | 'timeout' | 'closed',
    message: string,
  ) {
    super(message);
  }
}

/** An authenticated connection; collective frames flow on it. */
export class DataLink {
  readonly reader: ByteReader;
  readonly writer: ByteWriter;
  private closeListeners: ((reason: string) => void)[] = [];
  private closedReason: string | null = null;
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  constructor(
    private readonly socket: Socket<SocketSlot>,
    bufferedBytesMax: number,
    onPause?: () => void,
  ) {
    this.reader = new ByteReader(socket, bufferedBytesMax, onPause);
    this.writer = new ByteWriter(socket);
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
    socket.data.events = {
      onData: (chunk) => this.reader.push(chunk),
      onDrain: () => this.writer.flush(),
      onClose: (reason) => this.closed(reason),
    };
  }

  get isClosed(): boolean {
    return this.closedReason !== null;
  }

  /** Called once when the socket closes, for whatever reason. */
  onClose(listener: (reason: string) => void): void {
    if (this.closedReason !== null) listener(this.closedReason);
    else this.closeListeners.push(listener);
  }

  /** Ends the socket and waits (bounded) until it is gone. */
  async close(reason: string, waitMs = 1000): Promise<void> {
    if (this.closedReason === null) {
      this.writer.close(reason);
      this.socket.end();
    }
    const timer = setTimeout(() => this.socket.terminate(), waitMs);
    await this.closedPromise;
    clearTimeout(timer);
  }

  /** Drops the connection at once (an unauthenticated peer gets no graceful close). */
  terminate(): void {
    this.socket.terminate();
  }

  /**
   * Ends the socket now without waiting. A peer that never answers the FIN (dead host,
   * half-open socket) is dropped a second later, so no socket outlives its use.
   */
  end(reason: string): void {
    if (this.closedReason !== null) return;
    this.writer.close(reason);
    this.socket.end();
    const timer = setTimeout(() => {
      if (this.closedReason === null) this.socket.terminate();
    }, 1000);
    timer.unref();
  }

  private closed(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    this.reader.end(reason);
    this.writer.close(reason);
    const listeners = this.closeListeners;
    this.closeListeners = [];
    for (const l of listeners) l(reason);
    this.resolveClosed();
  }
}

export class CpuDataPlane {
  /** Starts the listener. */
  static async listen(options: CpuDataPlaneOptions): Promise<CpuDataPlane> {
    if (options.meshKey.length < 16) throw new RangeError('meshKey must be at least 16 bytes');
    const plane = new CpuDataPlane(options);
    plane.start();
    return plane;
  }

  readonly meshId: string;
  private readonly meshKey: Uint8Array;
  private readonly handshakeTimeoutMs: number;
  private readonly parkTimeoutMs: number;
  private readonly pendingConnectionsMax: number;
  readonly bufferedBytesMax: number;
  private listener: TCPSocketListener<SocketSlot> | null = null;
  private readonly hostnameOption: string;
  private readonly portOption: number;
  private pendingConnections = 0;
  private readonly counts = { accepted: 0, refusedAuth: 0, refusedEpoch: 0, refusedProtocol: 0, readPauses: 0 };
  /** Edges a communicator here waits for, by edge id. */
  private readonly expected = new Map<string, { resolve: (link: DataLink) => void; reject: (e: Error) => void }>();
  /** Authenticated connections that arrived before their communicator, by edge id. */
  private readonly parked = new Map<string, { link: DataLink; timer: ReturnType<typeof setTimeout>; proof: string }>();
  /** The newest epoch a communicator was built for here; older ones are refused. */
  private newest: { generation: number; epoch: number } | null = null;
  /** Edge ids of the newest epoch that were already claimed (a second connection is refused). */
  private readonly claimed = new Set<string>();
  private readonly live = new Set<DataLink>();
  private readonly handshaking = new Set<Socket<SocketSlot>>();

  private constructor(options: CpuDataPlaneOptions) {
    this.meshId = options.meshId;
    this.meshKey = options.meshKey;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? 5000;
    this.parkTimeoutMs = options.parkTimeoutMs ?? 10_000;
    this.pendingConnectionsMax = options.pendingConnectionsMax ?? 64;
    this.bufferedBytesMax = options.bufferedBytesMax ?? 256 * 1024 * 1024;
    this.hostnameOption = options.hostname ?? '127.0.0.1';
    this.portOption = options.port ?? 0;
  }

  get hostname(): string {
    return this.hostnameOption;
  }

  get port(): number {
    if (!this.listener) throw new Error('CpuDataPlane is closed');
    return this.listener.port;
  }

  stats(): DataPlaneStats {
    return { ...this.counts };
  }

  /**
   * Waits for the peer named by `edge` to connect here. Registering marks the edge's epoch
   * as the newest this node serves, so connections of older epochs are refused from now on.
   */
  expect(edge: Edge): { link: Promise<DataLink>; cancel: () => void } {
    if (!this.listener) throw new DataPlaneConnectError('closed', 'the data plane is closed');
    const id = edgeId(edge);
    const k = edge.key;
    if (k.meshId !== this.meshId) throw new RangeError(`edge of mesh ${k.meshId}, this data plane serves ${this.meshId}`);
    if (this.newest === null || compareEpoch(k, this.newest) > 0) {
      this.newest = { generation: k.generation, epoch: k.epoch };
      this.claimed.clear();
      this.refuseOlderParked();
    }
    let cancel = () => {};
    const link = new Promise<DataLink>((resolve, reject) => {
      const parked = this.parked.get(id);
      if (parked) {
        this.parked.delete(id);
        clearTimeout(parked.timer);
        this.claimed.add(id);
        this.sendResult(parked.link, { ok: true, proof: parked.proof });
        this.counts.accepted += 1;
        resolve(parked.link);
        return;
      }
      this.expected.set(id, { resolve, reject });
      cancel = () => {
        if (this.expected.delete(id)) reject(new DataPlaneConnectError('closed', `stopped waiting for ${id}`));
      };
    });
    return { link, cancel: () => cancel() };
  }

  /** Dials a peer's data plane and runs the client side of the handshake. */
  async connect(edge: Edge, hostname: string, port: number, timeoutMs: number): Promise<DataLink> {
    if (!this.listener) throw new DataPlaneConnectError('closed', 'the data plane is closed');
    const deadline = performance.now() + timeoutMs;
    let backoffMs = 5;
    for (;;) {
      try {
        return await this.dialOnce(edge, hostname, port, Math.max(1, deadline - performance.now()));
      } catch (e) {
        // Only an unreachable listener is worth retrying: a refusal is the peer's answer.
        if (!(e instanceof DataPlaneConnectError) || e.code !== 'unreachable') throw e;
        if (performance.now() + backoffMs >= deadline) {
          throw new DataPlaneConnectError('timeout', `could not reach ${hostname}:${port} within ${timeoutMs} ms: ${e.message}`);
        }
        await Bun.sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, 200);
      }
    }
  }

  /** Stops the listener and closes every connection it accepted or parked. */
  async close(): Promise<void> {
    const listener = this.listener;
    this.listener = null;
    if (!listener) return;
    for (const [id, waiter] of this.expected) {
      this.expected.delete(id);
      waiter.reject(new DataPlaneConnectError('closed', `data plane closed while waiting for ${id}`));
    }
    for (const { link, timer } of this.parked.values()) {
      clearTimeout(timer);
      link.end('data plane closed');
    }
    this.parked.clear();
    for (const s of this.handshaking) s.terminate();
    listener.stop(true);
    await Promise.all([...this.live].map((l) => l.close('data plane closed')));
  }

  private start(): void {
    this.listener = Bun.listen<SocketSlot>({
      hostname: this.hostnameOption,
      port: this.portOption,
      data: { events: null },
      socket: {
        ...socketHandlers,
        open: (socket) => {
          socket.data = { events: null };
          void this.serve(socket);
        },
      },
    });
  }

  /** The server side of the handshake for one accepted socket. */
  private async serve(socket: Socket<SocketSlot>): Promise<void> {
    if (this.pendingConnections >= this.pendingConnectionsMax) {
      this.counts.refusedProtocol += 1;
      socket.terminate();
      return;
    }
    this.pendingConnections += 1;
    this.handshaking.add(socket);
    const link = new DataLink(socket, this.bufferedBytesMax, () => (this.counts.readPauses += 1));
    this.track(link);
    const timer = setTimeout(() => link.terminate(), this.handshakeTimeoutMs);
    try {
      const helloBytes = await readMessage(link.reader);
      const hello = parseJson(helloSchema, helloBytes);
      const serverNonce = freshNonce();
      writeJson(link.writer, { nonce: serverNonce });
      const { proof } = parseJson(proofSchema, await readMessage(link.reader));
      if (!proofsEqual(proof, proofFor('client', this.meshKey, helloBytes, serverNonce))) {
        this.counts.refusedAuth += 1;
        this.refuse(link, 'auth', 'the peer did not prove it holds the mesh key');
        return;
      }
      clearTimeout(timer);
      const serverProof = proofFor('server', this.meshKey, helloBytes, serverNonce);
      this.route(link, serverProof, {
        key: { meshId: hello.meshId, generation: hello.generation, epoch: hello.epoch },
        fromMeshRank: hello.fromMeshRank,
        toMeshRank: hello.toMeshRank,
      });
    } catch (e) {
      // A peer that closed or broke the protocol before proving the key: refused, counted.
      this.counts.refusedProtocol += 1;
      if (e instanceof HandshakeProtocolError) this.refuse(link, 'protocol', e.message);
      else link.end(e instanceof LinkClosedError ? e.reason : String(e));
    } finally {
      clearTimeout(timer);
      this.handshaking.delete(socket);
      this.pendingConnections -= 1;
    }
  }

  /** An authenticated connection: hand it to its communicator, park it, or refuse it. */
  private route(link: DataLink, serverProof: string, edge: Edge): void {
    const id = edgeId(edge);
    const waiting = this.expected.get(id);
    if (waiting) {
      this.expected.delete(id);
      this.claimed.add(id);
      this.counts.accepted += 1;
      this.sendResult(link, { ok: true, proof: serverProof });
      waiting.resolve(link);
      return;
    }
    const refusal = this.epochRefusal(edge, id);
    if (refusal) {
      this.counts.refusedEpoch += 1;
      this.refuse(link, refusal.code, refusal.reason);
      return;
    }
    if (this.parked.has(id) || this.parked.size >= this.pendingConnectionsMax) {
      this.counts.refusedProtocol += 1;
      this.refuse(link, 'busy', `a connection for ${id} is already waiting, or too many are`);
      return;
    }
    const timer = setTimeout(() => {
      this.parked.delete(id);
      this.counts.refusedEpoch += 1;
      this.refuse(link, 'no-communicator', `no communicator for ${id} within ${this.parkTimeoutMs} ms`);
    }, this.parkTimeoutMs);
    this.parked.set(id, { link, timer, proof: serverProof });
    link.onClose(() => {
      const entry = this.parked.get(id);
      if (entry?.link === link) {
        clearTimeout(entry.timer);
        this.parked.delete(id);
      }
    });
  }

  private epochRefusal(edge: Edge, id: string): { code: RefusalCode; reason: string } | null {
    if (edge.key.meshId !== this.meshId) return { code: 'wrong-mesh', reason: `this node serves mesh ${this.meshId}, not ${edge.key.meshId}` };
    if (this.newest !== null) {
      const order = compareEpoch(edge.key, this.newest);
      if (order < 0) {
        return { code: 'stale-epoch', reason: `epoch ${edge.key.generation}/${edge.key.epoch} is older than ${this.newest.generation}/${this.newest.epoch}` };
      }
      if (order === 0 && this.claimed.has(id)) return { code: 'unexpected-edge', reason: `edge ${id} is already connected` };
    }
    return null;
  }

  private refuseOlderParked(): void {
    for (const [id, { link, timer }] of this.parked) {
      const k = parseEdgeKey(id);
      if (this.newest && compareEpoch(k, this.newest) < 0) {
        clearTimeout(timer);
        this.parked.delete(id);
        this.counts.refusedEpoch += 1;
        this.refuse(link, 'stale-epoch', `epoch ${k.generation}/${k.epoch} was superseded while waiting`);
      }
    }
  }

  private refuse(link: DataLink, code: RefusalCode, reason: string): void {
    this.sendResult(link, { ok: false, code, reason });
    // The refusal is sent and the socket ended; a peer that never closes its side is
    // dropped a little later, so it cannot keep a connection here.
    void link.writer
      .idle()
      .catch(() => {})
      .finally(() => link.end(`refused: ${reason}`));
  }

  private sendResult(link: DataLink, result: HandshakeResult): void {
    writeJson(link.writer, result);
  }

  private track(link: DataLink): void {
    this.live.add(link);
    link.onClose(() => this.live.delete(link));
  }

  private async dialOnce(edge: Edge, hostname: string, port: number, timeoutMs: number): Promise<DataLink> {
    let socket: Socket<SocketSlot>;
    try {
      socket = await Bun.connect<SocketSlot>({
        hostname,
        port,
        data: { events: null },
        socket: { ...socketHandlers, connectError() {} },
      });
    } catch (e) {
      throw new DataPlaneConnectError('unreachable', `connect to ${hostname}:${port}: ${(e as Error).message}`);
    }
    const link = new DataLink(socket, this.bufferedBytesMax, () => (this.counts.readPauses += 1));
    this.track(link);
    const timer = setTimeout(() => link.terminate(), timeoutMs);
    try {
      const k = edge.key;
      const helloBytes = writeJson(link.writer, {
        v: 1,
        meshId: k.meshId,
        generation: k.generation,
        epoch: k.epoch,
        fromMeshRank: edge.fromMeshRank,
        toMeshRank: edge.toMeshRank,
        nonce: freshNonce(),
      });
      const challenge = parseJson(challengeSchema, await readMessage(link.reader));
      writeJson(link.writer, { proof: proofFor('client', this.meshKey, helloBytes, challenge.nonce) });
      const result = parseJson(resultSchema, await readMessage(link.reader));
      if (!result.ok) {
        link.end(`refused: ${result.reason}`);
        throw new DataPlaneConnectError(result.code, `${hostname}:${port} refused ${edgeId(edge)}: ${result.reason}`);
      }
      if (!proofsEqual(result.proof, proofFor('server', this.meshKey, helloBytes, challenge.nonce))) {
        link.end('the listener did not prove it holds the mesh key');
        throw new DataPlaneConnectError('auth', `${hostname}:${port} did not prove it holds the mesh key`);
      }
      return link;
    } catch (e) {
      link.end('handshake failed');
      if (e instanceof DataPlaneConnectError) throw e;
      if (e instanceof LinkClosedError) throw new DataPlaneConnectError('closed', `${hostname}:${port} closed during the handshake: ${e.reason}`);
      throw new DataPlaneConnectError('protocol', `handshake with ${hostname}:${port}: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }
}

function edgeId(edge: Edge): string {
  const k = edge.key;
  return `${k.meshId}|${k.generation}|${k.epoch}|${edge.fromMeshRank}>${edge.toMeshRank}`;
}

function parseEdgeKey(id: string): { generation: number; epoch: number } {
  const parts = id.split('|');
  return { generation: Number(parts[parts.length - 3]), epoch: Number(parts[parts.length - 2]) };
}

function compareEpoch(a: { generation: number; epoch: number }, b: { generation: number; epoch: number }): number {
  return a.generation !== b.generation ? a.generation - b.generation : a.epoch - b.epoch;
}
