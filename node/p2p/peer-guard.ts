// The peer guard: counts the invalid messages each peer sends on the mesh's gossip channels
// and, past a threshold per minute, disconnects the peer and refuses it for a while. It plugs
// into libp2p twice: as gossipsub topic validators (a rejected message also lowers the
// forwarding peer's gossipsub score) and as a connection gater (a blocked peer cannot dial
// back in). Honest nodes never send a message the validators refuse, so the threshold only
// has to tell a burst of version skew from a peer that keeps trying.
import type { ConnectionGater, PeerId } from '@libp2p/interface';
import { TopicValidatorResult, type TopicValidatorFn } from '@libp2p/gossipsub';
import { decodeDemandMessage } from '../../mesh/demand.ts';
import { DEMAND_CHANNEL } from '../demand/service.ts';
import { decodeCoreOnce } from '../mesh/decode-once.ts';
import { CORE_CHANNEL } from '../mesh/driver.ts';

export interface PeerGuardOptions {
  /** Invalid messages one peer may send within a minute; one more disconnects and blocks it. */
  invalidPerMinuteMax: number;
  /** How long a blocked peer is refused. */
  blockMs: number;
}

export const peerGuardDefaults: PeerGuardOptions = { invalidPerMinuteMax: 20, blockMs: 60_000 };

/** Checks one gossip payload: null when valid, else why it is not. Never throws. */
export type ChannelValidator = (bytes: Uint8Array) => string | null;

/**
 * The gossip channels whose payloads the guard checks, by channel name (the topic is
 * /rankmesh/<meshId>/<channel>). Adding a channel's decoder here is all it takes.
 */
export const channelValidators: Readonly<Record<string, ChannelValidator>> = {
  [CORE_CHANNEL]: (bytes) => {
    const decoded = decodeCoreOnce(bytes);
    return decoded.ok ? null : decoded.reason;
  },
  [DEMAND_CHANNEL]: (bytes) => {
    const decoded = decodeDemandMessage(bytes);
    return decoded.ok ? null : decoded.reason;
  },
};

export interface PeerGuardCounters {
  /** Invalid messages, by channel. */
  invalid: Record<string, number>;
  /** Messages dropped because their forwarding peer is blocked. */
  fromBlocked: number;
  /** Times a peer was blocked. */
  blocks: number;
}

export interface PeerGuardHooks {
  /** Hangs up every connection to the peer (called when it is blocked). */
  disconnect?: (peerId: string) => Promise<void>;
  /** Called when a peer is blocked, with the last reason (for a log line). */
  blocked?: (peerId: string, reason: string, untilMs: number) => void;
  /** Wall clock in ms; tests pass their own. */
  nowMs?: () => number;
}

/** Peers with an open window kept at most; the least recently seen goes first beyond it. */
const TRACKED_PEERS_MAX = 4096;
/** The window invalid messages are counted over: one minute, in whole seconds. */
const WINDOW_SECONDS = 60;

export class PeerGuard {
  readonly counters: PeerGuardCounters = { invalid: {}, fromBlocked: 0, blocks: 0 };
  readonly options: PeerGuardOptions;
  /**
   * Each peer's recent invalid messages, counted per second: [second, count] pairs, oldest
   * first. Invariant: at most WINDOW_SECONDS pairs each, so counting costs the same whatever
   * the threshold.
   */
  private readonly recent = new Map<string, [number, number][]>();
  private readonly blockedUntilMs = new Map<string, number>();
  private hooks: PeerGuardHooks;

  constructor(options: Partial<PeerGuardOptions> = {}, hooks: PeerGuardHooks = {}) {
    this.options = { ...peerGuardDefaults, ...options };
    if (!Number.isInteger(this.options.invalidPerMinuteMax) || this.options.invalidPerMinuteMax < 0) {
      throw new RangeError(`invalidPerMinuteMax must be a non-negative integer, got ${this.options.invalidPerMinuteMax}`);
    }
    if (!(this.options.blockMs >= 0)) throw new RangeError(`blockMs must be non-negative, got ${this.options.blockMs}`);
    this.hooks = hooks;
  }

  /** Adds hooks known only once the libp2p node exists (its hangUp). */
  attach(hooks: PeerGuardHooks): void {
    this.hooks = { ...this.hooks, ...hooks };
  }

  /** Refuses connections either way with a blocked peer. */
  readonly gater: ConnectionGater = {
    denyDialPeer: (peer: PeerId) => this.isBlocked(peer.toString()),
    denyInboundEncryptedConnection: (peer: PeerId) => this.isBlocked(peer.toString()),
    denyOutboundEncryptedConnection: (peer: PeerId) => this.isBlocked(peer.toString()),
  };

  isBlocked(peerId: string): boolean {
    const until = this.blockedUntilMs.get(peerId);
    if (until === undefined) return false;
    if (this.now() < until) return true;
    this.blockedUntilMs.delete(peerId);
    return false;
  }

  /** Blocked peers, sorted. */
  blocked(): string[] {
    return [...this.blockedUntilMs.keys()].filter((id) => this.isBlocked(id)).sort();
  }

  /**
   * Counts one invalid message from `peerId` on `channel`. Returns true when this message
   * took the peer over the threshold: it is then blocked and disconnected.
   */
  invalid(peerId: string, channel: string, reason: string): boolean {
    this.counters.invalid[channel] = (this.counters.invalid[channel] ?? 0) + 1;
    const now = this.now();
    const second = Math.floor(now / 1000);
    const counts = (this.recent.get(peerId) ?? []).filter(([s]) => second - s < WINDOW_SECONDS);
    const last = counts[counts.length - 1];
    if (last !== undefined && last[0] === second) last[1]++;
    else counts.push([second, 1]);
    this.recent.delete(peerId);
    const total = counts.reduce((sum, [, n]) => sum + n, 0);
    if (total <= this.options.invalidPerMinuteMax) {
      this.recent.set(peerId, counts);
      if (this.recent.size > TRACKED_PEERS_MAX) this.recent.delete(this.recent.keys().next().value as string);
      return false;
    }
    const untilMs = now + this.options.blockMs;
    this.blockedUntilMs.set(peerId, untilMs);
    this.counters.blocks++;
    this.hooks.blocked?.(peerId, reason, untilMs);
    void this.hooks.disconnect?.(peerId).catch(() => undefined);
    return true;
  }

  /** A gossipsub topic validator for one channel: Reject (counted against the forwarder) or Accept. */
  validator(channel: string, check: ChannelValidator): TopicValidatorFn {
    return (propagationSource, message) => {
      const peerId = propagationSource.toString();
      if (this.isBlocked(peerId)) {
        this.counters.fromBlocked++;
        return TopicValidatorResult.Ignore;
      }
      let reason: string | null;
      try {
        reason = check(message.data);
      } catch (err) {
        reason = `validator threw: ${(err as Error).message}`;
      }
      if (reason === null) return TopicValidatorResult.Accept;
      this.invalid(peerId, channel, reason);
      return TopicValidatorResult.Reject;
    };
  }

  private now(): number {
    return this.hooks.nowMs?.() ?? Date.now();
  }
}
