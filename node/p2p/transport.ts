// The mesh transport: what the protocol driver uses to talk to other nodes. It hides libp2p
// behind a small API of strings and bytes — gossip on the mesh's topics, direct requests to
// one peer, ping, peer events — plus the partition hook that tests use to cut links.
import { peerIdFromString } from '@libp2p/peer-id';
import type { PeerId, PrivateKey, StreamMessageEvent } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import type { Logger } from 'pino';
import { PING_BYTES, PING_PROTOCOL } from './connection-watch.ts';
import { PeerGate } from './gate.ts';
import { createMeshLibp2p, type MeshLibp2p } from './libp2p.ts';
import { channelValidators, type PeerGuardCounters, type PeerGuardOptions } from './peer-guard.ts';
import { decodePeers, encodePeers, peerExchangeName } from './peer-exchange.ts';
import { type OnDropped, PushSender, receiveFrames } from './push.ts';
import { Redialer } from './redial.ts';
import { exchange, serveRequest, type RequestFailure, type RequestHandler, type RequestResult } from './rpc.ts';

export type { RequestFailure, RequestHandler, RequestResult } from './rpc.ts';

export interface TransportOptions {
  privateKey: PrivateKey;
  swarmKey: Uint8Array;
  meshId: string;
  listen: readonly string[];
  /** Bootstrap multiaddrs. */
  peers: readonly string[];
  gossipHeartbeatIntervalMs: number;
  /**
   * Peers learned through peer exchange that this node dials and keeps connected, at most
   * (bootstrap peers included; inbound connections are not counted or refused). Default 24.
   * The rest are remembered and dialled when a request or probe needs them; gossip reaches
   * them through relays. Up to 25 nodes the mesh is fully connected.
   */
  peerConnectionsTarget?: number;
  /** gossipsub mesh degree D (default 3; see createMeshLibp2p). */
  gossipMeshDegree?: number;
  ipColocationFactorWeight: number;
  requestTimeoutMs: number;
  requestBytesMax: number;
  redialMinMs: number;
  redialMaxMs: number;
  /** Largest gossip message; defaults to requestBytesMax. */
  gossipBytesMax?: number;
  /** When a peer sending invalid gossip is disconnected and blocked (see peer-guard.ts). */
  peerGuard?: Partial<PeerGuardOptions>;
  log: Logger;
}

/** Receives a gossip message whose signature verified; `fromPeerId` is its signer. */
export type GossipHandler = (fromPeerId: string, bytes: Uint8Array) => void;

/** `refused`: the peer's host refused the connection — its process is not running. */
export type PingResult = { ok: true; rttMs: number } | { ok: false; error: string; refused: boolean };

export type PeerEvent = { type: 'connect' | 'disconnect'; peerId: string };

export type TransportStatus = { code: 'stopped' } | { code: 'started'; startedAtMs: number };

/** Not started, already stopped, or a bad argument: nothing was sent. */
export class TransportError extends Error {
  override readonly name = 'TransportError';
}

export class Transport {
  readonly peerId: string;
  readonly meshId: string;
  private state: TransportStatus = { code: 'stopped' };
  private readonly gossipHandlers = new Map<string, Set<GossipHandler>>();
  private readonly requestHandlers = new Map<string, RequestHandler>();
  private readonly peerListeners = new Set<(event: PeerEvent) => void>();
  private readonly redialer: Redialer;
  /**
   * Peers heard through gossip relays (signers of messages on our topics) that this node has no
   * connection to: it looks for their addresses and dials them while it keeps fewer than
   * peerConnectionsTarget peers. Without this, a node whose first peer exchange came before
   * its seed knew everyone's addresses stays connected to some peers only, and a partition
   * of those cuts it off from peers it could still reach directly.
   */
  private readonly sought = new Set<string>();
  /** Every signer ever heard, so a message costs one set lookup after the first. */
  private readonly heard = new Set<string>();
  private seekTimer: ReturnType<typeof setTimeout> | undefined;
  private seekDelayMs = SEEK_FIRST_MS;
  /** Outbound push streams, by request name (see push()). */
  private readonly pushers = new Map<string, PushSender>();
  /** Pushed messages not written, by reason (see push()). */
  readonly pushDropped: Record<string, number> = {};

  private constructor(
    private readonly node: MeshLibp2p,
    private readonly options: TransportOptions,
    private readonly gate: PeerGate,
  ) {
    this.peerId = node.peerId.toString();
    this.meshId = options.meshId;
    this.redialer = new Redialer({
      dial: async (target, signal) => {
        const to = 'address' in target ? multiaddr(target.address) : peerIdFromString(target.peerId);
        const connection = await this.node.dial(to, { signal });
        return connection.remotePeer.toString();
      },
      isConnected: (id) => this.isConnected(id),
      isBlocked: (id) => this.gate.isBlocked(id),
      selfPeerId: this.peerId,
      bootstrap: options.peers,
      redialMinMs: options.redialMinMs,
      redialMaxMs: options.redialMaxMs,
      log: options.log,
    });
  }

  /** Builds the libp2p node; nothing listens until start(). */
  static async create(options: TransportOptions): Promise<Transport> {
    const gate = new PeerGate();
    const node = await createMeshLibp2p({
      privateKey: options.privateKey,
      swarmKey: options.swarmKey,
      listen: options.listen,
      connectionGater: gate.gater,
      gossipHeartbeatIntervalMs: options.gossipHeartbeatIntervalMs,
      gossipMeshDegree: options.gossipMeshDegree,
      ipColocationFactorWeight: options.ipColocationFactorWeight,
      gossipBytesMax: options.gossipBytesMax ?? options.requestBytesMax,
      meshId: options.meshId,
      peerGuard: options.peerGuard,
    });
    return new Transport(node, options, gate);
  }

  status(): TransportStatus {
    return this.state;
  }

  async start(): Promise<void> {
    if (this.state.code === 'started') return;
    this.node.addEventListener('peer:connect', this.onConnect);
    this.node.addEventListener('peer:disconnect', this.onDisconnect);
    this.node.services.pubsub.addEventListener('message', this.onMessage);
    await this.node.start();
    await this.register(peerExchangeName, async () => encodePeers(await this.knownPeers()));
    for (const [name, handler] of this.requestHandlers) await this.register(name, handler);
    for (const topic of this.gossipHandlers.keys()) this.node.services.pubsub.subscribe(topic);
    this.state = { code: 'started', startedAtMs: Date.now() };
    this.redialer.start();
  }

  /** Stops redialling, closes every connection and listener. Idempotent. */
  async stop(): Promise<void> {
    if (this.state.code === 'stopped') return;
    this.state = { code: 'stopped' };
    this.redialer.stop();
    for (const pusher of this.pushers.values()) pusher.stop();
    this.pushers.clear();
    clearTimeout(this.seekTimer);
    this.seekTimer = undefined;
    this.node.services.pubsub.removeEventListener('message', this.onMessage);
    await this.node.stop();
    cancelAddressUpdate(this.node);
    this.node.removeEventListener('peer:connect', this.onConnect);
    this.node.removeEventListener('peer:disconnect', this.onDisconnect);
  }

  /** Listen addresses, each ending in /p2p/<peerId>. */
  addresses(): string[] {
    return this.node.getMultiaddrs().map((a) => a.toString());
  }

  /** PeerIds with at least one open connection, sorted. */
  connectedPeers(): string[] {
    return this.node.getPeers().map((p) => p.toString()).sort();
  }

  /** The gossip topic of a channel: /rankmesh/<meshId>/<channel>. */
  topic(channel: string): string {
    if (!/^[A-Za-z0-9_.-]+$/.test(channel)) throw new TransportError(`bad channel name ${JSON.stringify(channel)}`);
    return `/rankmesh/${this.meshId}/${channel}`;
  }

  /** Signs and gossips `bytes` on the channel; resolves to how many peers it was sent to. */
  async publish(channel: string, bytes: Uint8Array): Promise<{ recipients: number }> {
    this.requireStarted();
    const result = await this.node.services.pubsub.publish(this.topic(channel), bytes);
    return { recipients: result.recipients.length };
  }

  /** Subscribes to a channel; returns the function that unsubscribes this handler. */
  subscribe(channel: string, handler: GossipHandler): () => void {
    const topic = this.topic(channel);
    let handlers = this.gossipHandlers.get(topic);
    if (handlers === undefined) {
      handlers = new Set();
      this.gossipHandlers.set(topic, handlers);
      if (this.state.code === 'started') this.node.services.pubsub.subscribe(topic);
    }
    handlers.add(handler);
    return () => {
      const set = this.gossipHandlers.get(topic);
      if (set === undefined || !set.delete(handler) || set.size > 0) return;
      this.gossipHandlers.delete(topic);
      if (this.state.code === 'started') this.node.services.pubsub.unsubscribe(topic);
    };
  }

  /** Peers known to be subscribed to the channel, sorted (gossip reaches them directly). */
  subscribers(channel: string): string[] {
    if (this.state.code !== 'started') return [];
    return this.node.services.pubsub.getSubscribers(this.topic(channel)).map((p) => p.toString()).sort();
  }

  /**
   * Peers this node relays the channel's gossip to (its gossipsub mesh for the topic), sorted.
   * A message that arrives before a peer joins the mesh is not relayed to that peer later.
   */
  meshPeers(channel: string): string[] {
    if (this.state.code !== 'started') return [];
    // The GossipSub class has getMeshPeers; the interface libp2p types its service with does not.
    const pubsub = this.node.services.pubsub as unknown as { getMeshPeers?(topic: string): string[] };
    return [...(pubsub.getMeshPeers?.(this.topic(channel)) ?? [])].sort();
  }

  /** Serves direct requests named `name` (one handler per name). */
  async handle(name: string, handler: RequestHandler): Promise<void> {
    this.protocol(name);
    if (name === peerExchangeName || this.requestHandlers.has(name)) throw new TransportError(`a handler for ${name} is already registered`);
    this.requestHandlers.set(name, handler);
    if (this.state.code === 'started') await this.register(name, handler);
  }

  /**
   * Sends `bytes` to the handler of `name` at `peerId` (see handle()) and does not wait for an
   * answer: over one long-lived stream per peer and name, so a message to a peer whose stream
   * is open is one write, not a stream opened and a protocol negotiated. Messages to one peer
   * arrive in order. Best effort: a message that cannot be written (no connection, the stream
   * lost, too many waiting) is counted in pushDropped by reason, logged at debug level, and
   * reported to `onDropped`.
   */
  push(peerId: string, name: string, bytes: Uint8Array, onDropped?: OnDropped): void {
    const refuse = (reason: string) => {
      this.pushDroppedFor(peerId, name, reason);
      onDropped?.(reason);
    };
    if (this.state.code !== 'started') return refuse('transport is not started');
    if (bytes.byteLength > this.options.requestBytesMax) return refuse(`larger than ${this.options.requestBytesMax} bytes`);
    if (this.gate.isBlocked(peerId)) return refuse('peer is blocked');
    this.pusher(name).send(peerId, bytes, onDropped);
  }

  /** Opens the push stream for `name` to `peerId` ahead of the first push (see PushSender.warm). */
  warmPush(peerId: string, name: string): void {
    if (this.state.code !== 'started' || peerId === this.peerId || this.gate.isBlocked(peerId)) return;
    this.pusher(name).warm(peerId);
  }

  /** Whether this node's push stream for `name` to `peerId` is open. */
  pushStreamOpen(peerId: string, name: string): boolean {
    return this.pushers.get(name)?.isOpen(peerId) ?? false;
  }

  private pusher(name: string): PushSender {
    let pusher = this.pushers.get(name);
    if (pusher) return pusher;
    const protocol = this.pushProtocol(name);
    pusher = new PushSender({
      open: (peer) =>
        this.node.dialProtocol(parsePeerId(peer), protocol, { signal: AbortSignal.timeout(this.options.requestTimeoutMs) }).catch((err: Error) => {
          if (err.name === NO_ADDRESSES_ERROR) this.seekPeer(peer);
          throw err;
        }),
      dropped: (peer, reason) => this.pushDroppedFor(peer, name, reason),
    });
    this.pushers.set(name, pusher);
    return pusher;
  }

  private pushDroppedFor(peer: string, name: string, reason: string): void {
    this.pushDropped[reason] = (this.pushDropped[reason] ?? 0) + 1;
    this.options.log.debug({ peer, name, reason }, 'pushed message not sent');
  }

  /** Sends one request to `peerId` and waits for its response; failures are values. */
  async request(peerId: string, name: string, bytes: Uint8Array, options: { timeoutMs?: number } = {}): Promise<RequestResult> {
    const protocol = this.protocol(name);
    if (this.state.code !== 'started') return fail('stopped', 'transport is not started');
    if (bytes.byteLength > this.options.requestBytesMax) return fail('too-large', `request larger than ${this.options.requestBytesMax} bytes`);
    if (this.gate.isBlocked(peerId)) return fail('blocked', `peer ${peerId} is blocked`);
    const timeoutMs = options.timeoutMs ?? this.options.requestTimeoutMs;
    const signal = AbortSignal.timeout(timeoutMs);
    let stream;
    try {
      stream = await this.node.dialProtocol(parsePeerId(peerId), protocol, { signal });
    } catch (err) {
      if (signal.aborted) return fail('timeout', `no connection to ${peerId} within ${timeoutMs} ms`);
      const name = (err as Error).name;
      if (name === 'UnsupportedProtocolError') return fail('unsupported', `${peerId} does not serve ${protocol}`);
      if (name === NO_ADDRESSES_ERROR) this.seekPeer(peerId);
      return fail('unreachable', (err as Error).message);
    }
    const onAbort = (): void => stream.abort(new Error('request timed out'));
    signal.addEventListener('abort', onAbort);
    try {
      return await exchange(stream, bytes, this.options.requestBytesMax);
    } catch (err) {
      if (signal.aborted) return fail('timeout', `no response from ${peerId} within ${timeoutMs} ms`);
      return fail('unreachable', (err as Error).message);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /** Round-trip time to `peerId` over libp2p ping, dialling it if needed. */
  async ping(peerId: string, options: { timeoutMs?: number } = {}): Promise<PingResult> {
    if (this.state.code !== 'started') return { ok: false, error: 'transport is not started', refused: false };
    if (this.gate.isBlocked(peerId)) return { ok: false, error: `peer ${peerId} is blocked`, refused: false };
    const timeoutMs = options.timeoutMs ?? this.options.requestTimeoutMs;
    try {
      const rttMs = await this.node.services.ping.ping(parsePeerId(peerId), { signal: AbortSignal.timeout(timeoutMs) });
      return { ok: true, rttMs };
    } catch (err) {
      const error = (err as Error).message;
      if ((err as Error).name === NO_ADDRESSES_ERROR) this.seekPeer(peerId);
      return { ok: false, error, refused: /ECONNREFUSED/.test(error) };
    }
  }

  /**
   * `count` libp2p pings in a row on one ping stream (the protocol echoes every 32 bytes until
   * the stream ends), each answered within `roundTripMs` — the first one including opening
   * the stream. Fails at the first late, lost or wrong echo. One stream instead of one per
   * ping: opening and negotiating a stream costs several encrypted frames each way.
   */
  async pingSeries(peerId: string, count: number, roundTripMs: number): Promise<PingResult> {
    if (this.state.code !== 'started') return { ok: false, error: 'transport is not started', refused: false };
    if (this.gate.isBlocked(peerId)) return { ok: false, error: `peer ${peerId} is blocked`, refused: false };
    const started = performance.now();
    let signal = AbortSignal.timeout(roundTripMs);
    let stream;
    try {
      stream = await this.node.dialProtocol(parsePeerId(peerId), PING_PROTOCOL, { signal });
    } catch (err) {
      const error = signal.aborted ? `round trip 1 of ${count}: no stream within ${roundTripMs} ms` : (err as Error).message;
      if ((err as Error).name === NO_ADDRESSES_ERROR) this.seekPeer(peerId);
      return { ok: false, error, refused: /ECONNREFUSED/.test(error) };
    }
    // Echoed bytes not yet matched to a ping (a ping is 32 bytes; frames may split or join them).
    let received = new Uint8Array(0);
    let arrived: (() => void) | null = null;
    const onMessage = (event: StreamMessageEvent): void => {
      const data = event.data instanceof Uint8Array ? event.data : event.data.subarray();
      const joined = new Uint8Array(received.byteLength + data.byteLength);
      joined.set(received);
      joined.set(data, received.byteLength);
      received = joined;
      arrived?.();
    };
    stream.addEventListener('message', onMessage);
    try {
      for (let i = 0; i < count; i++) {
        if (i > 0) signal = AbortSignal.timeout(roundTripMs);
        const data = crypto.getRandomValues(new Uint8Array(PING_BYTES));
        const echoed = new Promise<boolean>((resolve) => {
          const done = (ok: boolean): void => {
            arrived = null;
            signal.removeEventListener('abort', late);
            stream.removeEventListener('close', late);
            resolve(ok);
          };
          const late = (): void => done(false);
          arrived = () => {
            if (received.byteLength >= PING_BYTES) done(true);
          };
          signal.addEventListener('abort', late);
          stream.addEventListener('close', late);
        });
        try {
          stream.send(data);
        } catch (err) {
          // The stream closed between two round trips (the peer went away, or the connection
          // was closed): a failed round trip like a missing echo, not an error of this node.
          stream.abort(err as Error);
          return { ok: false, error: `round trip ${i + 1} of ${count}: ${(err as Error).message}`, refused: false };
        }
        if (!(await echoed)) {
          const why = signal.aborted ? `no echo within ${roundTripMs} ms` : 'the stream closed';
          stream.abort(new Error(why));
          return { ok: false, error: `round trip ${i + 1} of ${count}: ${why}`, refused: false };
        }
        const echo = received.subarray(0, PING_BYTES);
        received = received.subarray(PING_BYTES);
        if (!equalBytes(echo, data)) {
          stream.abort(new Error('wrong ping echo'));
          return { ok: false, error: `round trip ${i + 1} of ${count}: wrong echo`, refused: false };
        }
      }
      await stream.close({ signal: AbortSignal.timeout(roundTripMs) }).catch(() => stream.abort(new Error('ping stream close timed out')));
      return { ok: true, rttMs: performance.now() - started };
    } finally {
      stream.removeEventListener('message', onMessage);
    }
  }

  /** Dials a multiaddr now; resolves to the remote PeerId, rejects if it cannot connect. */
  async dial(address: string, options: { timeoutMs?: number } = {}): Promise<string> {
    this.requireStarted();
    const signal = AbortSignal.timeout(options.timeoutMs ?? this.options.requestTimeoutMs);
    const connection = await this.node.dial(multiaddr(address), { signal });
    return connection.remotePeer.toString();
  }

  /** Calls `listener` when a peer's first connection opens or its last one closes. */
  onPeer(listener: (event: PeerEvent) => void): () => void {
    this.peerListeners.add(listener);
    return () => this.peerListeners.delete(listener);
  }

  /**
   * Cuts this node's links to `peerIds`: new connections either way are refused and open
   * ones are closed. For a symmetric cut, block on both sides.
   */
  async block(peerIds: Iterable<string>): Promise<void> {
    const added = this.gate.block(peerIds);
    await Promise.all(added.map((id) => this.node.hangUp(parsePeerId(id)).catch(() => undefined)));
  }

  /** Lifts the cut; the redial loop reconnects the peers it knows at once. */
  unblock(peerIds: Iterable<string>): void {
    this.redialer.retryNow(this.gate.unblock(peerIds));
  }

  blockedPeers(): string[] {
    return this.gate.blocked();
  }

  /** Invalid gossip counted by the peer guard, and the peers it blocks now. */
  guardStatus(): PeerGuardCounters & { blocked: string[] } {
    const guard = this.node.services.guard;
    return { ...guard.counters, invalid: { ...guard.counters.invalid }, blocked: guard.blocked() };
  }

  private protocol(name: string): string {
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new TransportError(`bad request name ${JSON.stringify(name)}`);
    return `/rankmesh/${this.meshId}/rpc/${name}/1.0.0`;
  }

  private pushProtocol(name: string): string {
    this.protocol(name);
    return `/rankmesh/${this.meshId}/push/${name}/1.0.0`;
  }

  private async register(name: string, handler: RequestHandler): Promise<void> {
    // A direct request on a channel the peer guard validates counts against its sender like
    // invalid gossip does; the handler still sees it and refuses it in its own way.
    const check = channelValidators[name];
    const guarded: RequestHandler =
      check === undefined
        ? handler
        : (from, bytes) => {
            const reason = check(bytes);
            if (reason !== null) this.node.services.guard.invalid(from, name, reason);
            return handler(from, bytes);
          };
    await this.node.handle(this.protocol(name), (stream, connection) =>
      serveRequest(stream, connection.remotePeer.toString(), guarded, this.options.requestBytesMax, this.options.requestTimeoutMs),
    );
    // Pushed messages reach the same handler; its answer has nowhere to go and is dropped.
    const pushed = (from: string, bytes: Uint8Array): void => {
      try {
        const answer = guarded(from, bytes);
        if (answer instanceof Promise) answer.catch(() => undefined);
      } catch {
        // A handler that throws on one message refuses that message only.
      }
    };
    await this.node.handle(this.pushProtocol(name), (stream, connection) => receiveFrames(stream, connection.remotePeer.toString(), pushed, this.options.requestBytesMax));
  }

  private requireStarted(): void {
    if (this.state.code !== 'started') throw new TransportError('transport is not started');
  }

  private readonly onMessage = (event: CustomEvent<import('@libp2p/gossipsub').Message>): void => {
    const message = event.detail;
    // StrictSign makes gossipsub reject unsigned messages and bad signatures before this point;
    // the type check keeps that guarantee visible here.
    if (message.type !== 'signed') return;
    const handlers = this.gossipHandlers.get(message.topic);
    if (handlers === undefined) return;
    const from = message.from.toString();
    if (!this.heard.has(from)) this.heardOf(from);
    for (const handler of handlers) {
      try {
        handler(from, message.data);
      } catch (err) {
        this.options.log.error({ err, topic: message.topic }, 'gossip handler threw');
      }
    }
  };

  private readonly onConnect = (event: CustomEvent<PeerId>): void => {
    const peerId = event.detail.toString();
    this.redialer.connected(peerId);
    this.emitPeer({ type: 'connect', peerId });
    void this.exchangePeers(peerId);
  };

  /**
   * Connected peers with their listen addresses as identify reported them to the peer store
   * (an inbound connection's remote address is an ephemeral port nobody can dial), falling back
   * to the remote address of an outbound connection.
   */
  private async knownPeers(): Promise<Array<{ peerId: string; addresses: string[] }>> {
    const peers: Array<{ peerId: string; addresses: string[] }> = [];
    for (const peer of this.node.getPeers()) {
      const stored = await this.node.peerStore.get(peer).catch(() => undefined);
      const addresses = stored?.addresses.map((a) => a.multiaddr.toString()) ?? [];
      if (addresses.length === 0) {
        for (const connection of this.node.getConnections(peer)) {
          if (connection.direction === 'outbound') addresses.push(connection.remoteAddr.toString());
        }
      }
      if (addresses.length > 0) peers.push({ peerId: peer.toString(), addresses: addresses.slice(0, 16) });
    }
    return peers;
  }

  /** A signer heard for the first time: seek it when it is not connected. */
  private heardOf(peerId: string): void {
    if (this.heard.size >= HEARD_MAX) return;
    this.heard.add(peerId);
    this.seekPeer(peerId);
  }

  /** Looks for `peerId`'s addresses (it was heard of, or a dial found none) unless connected. */
  private seekPeer(peerId: string): void {
    if (peerId === this.peerId || this.state.code !== 'started' || this.sought.size >= HEARD_MAX || this.isConnected(peerId)) return;
    this.sought.add(peerId);
    this.seekDelayMs = SEEK_FIRST_MS;
    if (this.seekTimer === undefined) this.seekTimer = setTimeout(() => void this.seek(), SEEK_FIRST_MS);
  }

  /** Whether a connection to `peerId` is open (false for a malformed id). */
  private isConnected(peerId: string): boolean {
    try {
      return this.node.getConnections(peerIdFromString(peerId)).length > 0;
    } catch {
      return false;
    }
  }

  /**
   * One round of seeking: sought peers whose addresses the peer store holds are dialled (the
   * redial loop keeps them); for the rest, a connected peer is asked whom it knows. Rounds
   * repeat with a growing pause until every sought peer is connected or dialled, or this node
   * keeps peerConnectionsTarget peers.
   */
  private async seek(): Promise<void> {
    this.seekTimer = undefined;
    if (this.state.code !== 'started') return;
    const target = this.options.peerConnectionsTarget ?? 24;
    const unknown: string[] = [];
    for (const peerId of [...this.sought]) {
      if (this.redialer.kept >= target) break;
      if (this.isConnected(peerId) || this.gate.isBlocked(peerId)) {
        this.sought.delete(peerId);
        continue;
      }
      const stored = await this.node.peerStore.get(peerIdFromString(peerId)).catch(() => undefined);
      if (stored !== undefined && stored.addresses.length > 0) {
        this.sought.delete(peerId);
        this.redialer.learned(peerId);
      } else {
        unknown.push(peerId);
      }
    }
    if (this.redialer.kept >= target) this.sought.clear();
    if (this.sought.size === 0 || this.state.code !== 'started') return;
    const connected = this.node.getPeers();
    if (connected.length > 0) await this.exchangePeers(connected[Math.floor(Math.random() * connected.length)]!.toString());
    if (this.state.code !== 'started') return;
    this.seekTimer = setTimeout(() => void this.seek(), this.seekDelayMs);
    this.seekDelayMs = Math.min(SEEK_MAX_MS, this.seekDelayMs * 2);
    this.options.log.debug({ unknown: unknown.length }, 'seeking the addresses of peers heard through relays');
  }

  /** Asks `peerId` whom it knows and dials the ones this node is not connected to. */
  private async exchangePeers(peerId: string): Promise<void> {
    const answer = await this.request(peerId, peerExchangeName, new Uint8Array());
    if (!answer.ok) {
      this.options.log.debug({ peer: peerId, error: answer.error, message: answer.message }, 'peer exchange failed');
      return;
    }
    const peers = decodePeers(answer.bytes);
    if (peers instanceof Error) {
      this.options.log.warn({ peer: peerId, err: peers.message }, 'bad peer-exchange answer');
      return;
    }
    // Shuffled, so that nodes bootstrapped to one seed do not all keep the same first peers.
    for (const peer of shuffled(peers)) {
      if (peer.peerId === this.peerId || this.gate.isBlocked(peer.peerId) || this.state.code !== 'started') continue;
      let id: PeerId;
      try {
        id = peerIdFromString(peer.peerId);
      } catch {
        continue;
      }
      if (this.node.getConnections(id).length > 0) continue;
      const addresses = peer.addresses.flatMap((a) => {
        try {
          return [multiaddr(a)];
        } catch {
          return [];
        }
      });
      await this.node.peerStore.merge(id, { multiaddrs: addresses }).catch(() => undefined);
      if (this.redialer.kept < (this.options.peerConnectionsTarget ?? 24)) this.redialer.learned(peer.peerId);
    }
  }

  private readonly onDisconnect = (event: CustomEvent<PeerId>): void => {
    const peerId = event.detail.toString();
    if (this.state.code === 'started') this.redialer.disconnected(peerId);
    this.emitPeer({ type: 'disconnect', peerId });
  };

  private emitPeer(event: PeerEvent): void {
    for (const listener of this.peerListeners) {
      try {
        listener(event);
      } catch (err) {
        this.options.log.error({ err, event }, 'peer listener threw');
      }
    }
  }
}

/** First pause before seeking a peer heard through a relay, and the longest between rounds. */
const SEEK_FIRST_MS = 100;
const SEEK_MAX_MS = 10_000;

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** What libp2p names a dial to a peer whose addresses the peer store lacks. */
const NO_ADDRESSES_ERROR = 'NoValidAddressesError';
/** Distinct gossip signers remembered (a mesh's nodes; bounded against a flood of identities). */
const HEARD_MAX = 4096;

function shuffled<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function fail(error: RequestFailure, message: string): RequestResult {
  return { ok: false, error, message };
}

/**
 * libp2p 3.3's address manager debounces a peer-store update by 1 s when a listener closes
 * and has no stop() that cancels it, so every stopped node would hold its process for a
 * second. Cancel it; the update is moot once the node is stopped.
 */
function cancelAddressUpdate(node: MeshLibp2p): void {
  const components = (node as unknown as { components?: { addressManager?: { _updatePeerStoreAddresses?: { stop?: () => void } } } }).components;
  components?.addressManager?._updatePeerStoreAddresses?.stop?.();
}

function parsePeerId(id: string): PeerId {
  try {
    return peerIdFromString(id);
  } catch {
    throw new TransportError(`not a PeerId: ${JSON.stringify(id)}`);
  }
}
