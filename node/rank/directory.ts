// Where each node's CPU data plane listens, learned through the mesh. Every node gossips a
// signed claim { peerId, bootId, host, port } on its own channel, periodically and soon after
// a peer connects; receivers keep the latest claim per peer incarnation. A claim counts only
// when the gossip signer is the peer it describes, so no node can redirect another's ranks.
// The claim also carries the communicator build this node is attempting, so peers whose
// build failed can retry on the same attempt (see host.ts).
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Incarnation } from '../../mesh/view.ts';
import type { Transport } from '../p2p/transport.ts';
import { everyJittered } from '../timers.ts';

/** Gossip channel of the data-plane claims. */
export const DATAPLANE_CHANNEL = 'dataplane';

/**
 * A view's first build (attempt 0), or having none, is announced this long after it starts
 * rather than at once: peers assume attempt 0 anyway (only a later attempt makes them join
 * it), and at a view change every rank starts one while the slowest survivors are still
 * deciding the view, which these announcements would delay (one gossip message per rank to
 * every node). The address itself has not changed.
 */
export const FIRST_BUILD_ANNOUNCE_DELAY_MS = 1000;

/** Attempts per epoch that the epoch key can tell apart (see host.ts). */
export const BUILD_ATTEMPTS_MAX = 1000;

/** A communicator build: the view's generation and epoch, and the try within that view. */
export interface BuildAttempt {
  readonly generation: number;
  readonly epoch: number;
  readonly attempt: number;
}

export interface DataPlaneAddress {
  readonly host: string;
  readonly port: number;
}

export interface DirectoryOptions {
  readonly transport: Pick<Transport, 'subscribe' | 'publish' | 'onPeer'>;
  /** This node's incarnation and where its data plane listens. */
  readonly self: Incarnation & DataPlaneAddress;
  readonly announceIntervalMs: number;
  readonly log: Logger;
  /** Delay of a first build's announcement (default FIRST_BUILD_ANNOUNCE_DELAY_MS, at most announceIntervalMs). */
  readonly firstBuildDelayMs?: number;
  /** Claims kept, at most (the oldest received goes first). Default 4096. */
  readonly entriesMax?: number;
  /** Called with each newer claim from a peer: where it listens and the build it attempts. */
  readonly onClaim?: (claim: Incarnation & DataPlaneAddress & { readonly build: BuildAttempt | null }) => void;
}

/** Why received claims were ignored, counted. */
export type IgnoredReason = 'malformed' | 'wrong-signer' | 'stale';

export class DataPlaneDirectory {
  readonly ignored: Record<IgnoredReason, number> = { malformed: 0, 'wrong-signer': 0, stale: 0 };
  private readonly entries = new Map<string, Claim>();
  private readonly waiters = new Set<() => void>();
  private readonly entriesMax: number;
  private seq = 0;
  private build: BuildAttempt | null = null;
  private timer: { stop(): void } | undefined;
  private soon: ReturnType<typeof setTimeout> | undefined;
  /** The pending announcement of a first build (see FIRST_BUILD_ANNOUNCE_DELAY_MS). */
  private deferred: ReturnType<typeof setTimeout> | undefined;
  private unsubscribe: (() => void) | undefined;
  private offPeer: (() => void) | undefined;

  constructor(private readonly options: DirectoryOptions) {
    this.entriesMax = options.entriesMax ?? 4096;
    const { peerId, bootId, host, port } = options.self;
    this.store({ v: 1, peerId, bootId, host, port, seq: 0, build: null });
  }

  /** Subscribes, announces now and every announceIntervalMs, and soon after each new peer. */
  start(): void {
    if (this.timer !== undefined) return;
    const { transport, announceIntervalMs } = this.options;
    this.unsubscribe = transport.subscribe(DATAPLANE_CHANNEL, (from, bytes) => this.receive(from, bytes));
    // A new peer learns of our subscription, and we of its, a moment after it connects; a
    // claim published at once would not reach it, so the announcement waits a little.
    this.offPeer = transport.onPeer((event) => {
      if (event.type === 'connect') this.announceSoon();
    });
    this.timer = everyJittered(announceIntervalMs, () => this.announce());
    this.announce();
  }

  stop(): void {
    this.timer?.stop();
    clearTimeout(this.soon);
    clearTimeout(this.deferred);
    this.timer = undefined;
    this.soon = undefined;
    this.deferred = undefined;
    this.unsubscribe?.();
    this.offPeer?.();
    this.unsubscribe = undefined;
    this.offPeer = undefined;
    for (const wake of this.waiters) wake();
  }

  /** Where the incarnation's data plane listens, if it has told us. */
  lookup(inc: Incarnation): DataPlaneAddress | undefined {
    const claim = this.entries.get(keyOf(inc));
    return claim === undefined ? undefined : { host: claim.host, port: claim.port };
  }

  /** The build the incarnation last announced, or null. */
  buildOf(inc: Incarnation): BuildAttempt | null {
    return this.entries.get(keyOf(inc))?.build ?? null;
  }

  /**
   * Records the build this node attempts. A later attempt is announced now (peers on an
   * earlier one join it); a first attempt, or none, within FIRST_BUILD_ANNOUNCE_DELAY_MS.
   */
  setBuild(build: BuildAttempt | null): void {
    this.build = build;
    if (build !== null && build.attempt > 0) return this.announce();
    if (this.deferred !== undefined || this.timer === undefined) return;
    this.deferred = setTimeout(() => {
      this.deferred = undefined;
      this.announce();
    }, Math.min(this.options.firstBuildDelayMs ?? FIRST_BUILD_ANNOUNCE_DELAY_MS, this.options.announceIntervalMs));
  }

  /**
   * Resolves true once every incarnation's address is known, false when `timeoutMs` passes
   * or `cancelled()` turns true (checked whenever a claim arrives and every 50 ms).
   */
  async waitFor(incs: readonly Incarnation[], timeoutMs: number, cancelled: () => boolean): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (incs.every((i) => this.entries.has(keyOf(i)))) return true;
      const left = deadline - performance.now();
      if (left <= 0 || cancelled() || this.timer === undefined) return false;
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(t);
          this.waiters.delete(done);
          resolve();
        };
        const t = setTimeout(done, Math.min(50, left));
        this.waiters.add(done);
      });
    }
  }

  /** Publishes this node's claim now. */
  announce(): void {
    clearTimeout(this.deferred);
    this.deferred = undefined;
    const { peerId, bootId, host, port } = this.options.self;
    this.seq += 1;
    const claim: Claim = { v: 1, peerId, bootId, host, port, seq: this.seq, build: this.build };
    this.store(claim);
    this.options.transport.publish(DATAPLANE_CHANNEL, new TextEncoder().encode(JSON.stringify(claim))).catch((err: Error) => {
      // With no subscribed peer yet (a lone node, or peers still connecting) there is no one to tell.
      this.options.log.debug({ err: err.message }, 'data-plane claim not sent');
    });
  }

  private announceSoon(): void {
    if (this.soon !== undefined || this.timer === undefined) return;
    this.soon = setTimeout(() => {
      this.soon = undefined;
      this.announce();
    }, Math.min(250, this.options.announceIntervalMs));
  }

  private receive(from: string, bytes: Uint8Array): void {
    let parsed: Claim;
    try {
      const result = claimSchema.safeParse(JSON.parse(new TextDecoder().decode(bytes)));
      if (!result.success) throw new Error(result.error.issues[0]?.message);
      parsed = result.data;
    } catch (err) {
      this.ignored.malformed += 1;
      this.options.log.debug({ from, err: (err as Error).message }, 'ignored a malformed data-plane claim');
      return;
    }
    if (parsed.peerId !== from) {
      this.ignored['wrong-signer'] += 1;
      this.options.log.warn({ from, claimed: parsed.peerId }, 'ignored a data-plane claim signed by another peer');
      return;
    }
    const held = this.entries.get(keyOf(parsed));
    if (held !== undefined && held.seq >= parsed.seq) {
      this.ignored.stale += 1;
      return;
    }
    this.store(parsed);
    for (const wake of [...this.waiters]) wake();
    this.options.onClaim?.(parsed);
  }

  private store(claim: Claim): void {
    const key = keyOf(claim);
    // Re-inserting moves the entry to the end, so the map's order is the order received.
    this.entries.delete(key);
    this.entries.set(key, claim);
    for (const oldest of this.entries.keys()) {
      if (this.entries.size <= this.entriesMax) break;
      this.entries.delete(oldest);
    }
  }
}

const claimSchema = z.strictObject({
  v: z.literal(1),
  peerId: z.string().min(1).max(128),
  bootId: z.string().min(1).max(128),
  host: z.string().regex(/^[A-Za-z0-9.:-]{1,253}$/, 'expected a host name or address'),
  port: z.number().int().min(1).max(65535),
  seq: z.number().int().min(0),
  build: z
    .strictObject({
      generation: z.number().int().min(0),
      epoch: z.number().int().min(0),
      attempt: z.number().int().min(0).max(BUILD_ATTEMPTS_MAX - 1),
    })
    .nullable(),
});

type Claim = z.output<typeof claimSchema>;

function keyOf(inc: Incarnation): string {
  return `${inc.peerId}/${inc.bootId}`;
}
