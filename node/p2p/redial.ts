// Keeps this node connected to its bootstrap peers and to every mesh peer it has met: a lost
// peer is redialled with exponential back-off (with jitter, so a restarted mesh does not
// redial in lockstep). Bootstrap peers are redialled for ever; peers met along the way are
// forgotten after `learnedAttemptsMax` failures in a row, so a host that is gone for good
// stops costing dials.
import type { Logger } from 'pino';

export interface RedialOptions {
  /** Dials a bootstrap multiaddr or a known PeerId; resolves to the remote PeerId. */
  dial(target: { address: string } | { peerId: string }, signal: AbortSignal): Promise<string>;
  isConnected(peerId: string): boolean;
  isBlocked(peerId: string): boolean;
  selfPeerId: string;
  bootstrap: readonly string[];
  redialMinMs: number;
  redialMaxMs: number;
  learnedAttemptsMax?: number;
  log: Logger;
}

interface Target {
  /** The bootstrap multiaddr, or undefined for a peer met along the way. */
  address: string | undefined;
  peerId: string | undefined;
  failures: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  dialing: boolean;
}

/** Exported for its table test: the delay before attempt `failures + 1`. */
export function backoffMs(failures: number, minMs: number, maxMs: number, random01: number): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(failures, 30));
  return Math.max(minMs, Math.round(ceiling * (0.5 + random01 / 2)));
}

export class Redialer {
  private readonly targets: Target[] = [];
  private abort = new AbortController();
  private running = false;

  constructor(private readonly options: RedialOptions) {
    for (const address of options.bootstrap) {
      const peerId = peerIdOf(address);
      if (peerId === options.selfPeerId) continue;
      this.targets.push({ address, peerId, failures: 0, timer: undefined, dialing: false });
    }
  }

  start(): void {
    this.running = true;
    this.abort = new AbortController();
    for (const target of this.targets) this.schedule(target, 0);
  }

  stop(): void {
    this.running = false;
    this.abort.abort();
    for (const target of this.targets) {
      clearTimeout(target.timer);
      target.timer = undefined;
    }
  }

  /** A connection to `peerId` opened: it is now a peer to keep. */
  connected(peerId: string): void {
    const target = this.targets.find((t) => t.peerId === peerId);
    if (target === undefined) {
      this.targets.push({ address: undefined, peerId, failures: 0, timer: undefined, dialing: false });
      return;
    }
    target.failures = 0;
    clearTimeout(target.timer);
    target.timer = undefined;
  }

  /** Peers this node keeps connected: bootstrap peers and peers learned and not given up. */
  get kept(): number {
    return this.targets.length;
  }

  /** Another peer told us of `peerId`: dial it now, and keep it like a peer met directly. */
  learned(peerId: string): void {
    if (peerId === this.options.selfPeerId) return;
    let target = this.targets.find((t) => t.peerId === peerId);
    if (target === undefined) {
      target = { address: undefined, peerId, failures: 0, timer: undefined, dialing: false };
      this.targets.push(target);
    }
    if (target.timer === undefined && !target.dialing) this.schedule(target, 0);
  }

  /** The last connection to `peerId` closed: redial it after the first back-off. */
  disconnected(peerId: string): void {
    const target = this.targets.find((t) => t.peerId === peerId);
    if (target !== undefined) this.schedule(target, this.delay(target));
  }

  /** Peers just unblocked: try them now instead of waiting out their back-off. */
  retryNow(peerIds: readonly string[]): void {
    for (const target of this.targets) {
      if (target.peerId !== undefined && peerIds.includes(target.peerId)) {
        target.failures = 0;
        this.schedule(target, 0);
      }
    }
  }

  private schedule(target: Target, delayMs: number): void {
    if (!this.running) return;
    clearTimeout(target.timer);
    target.timer = setTimeout(() => {
      target.timer = undefined;
      void this.attempt(target);
    }, delayMs);
  }

  private async attempt(target: Target): Promise<void> {
    if (!this.running || target.dialing) return;
    const { peerId } = target;
    if (peerId !== undefined && this.options.isConnected(peerId)) return;
    // A blocked peer waits for retryNow(); dialling it would only be refused by the gater.
    if (peerId !== undefined && this.options.isBlocked(peerId)) return;
    target.dialing = true;
    try {
      const dialTarget = target.address !== undefined ? { address: target.address } : { peerId: peerId! };
      const remote = await this.options.dial(dialTarget, this.abort.signal);
      target.peerId = remote;
      target.failures = 0;
      // The connect event may have run first and recorded the same peer as one met along the way.
      const twin = this.targets.findIndex((t) => t !== target && t.peerId === remote && t.address === undefined);
      if (twin >= 0) clearTimeout(this.targets.splice(twin, 1)[0]!.timer);
    } catch (err) {
      if (!this.running) return;
      target.failures += 1;
      const forget = target.address === undefined && target.failures >= (this.options.learnedAttemptsMax ?? 30);
      this.options.log.debug({ peer: target.address ?? peerId, failures: target.failures, err: (err as Error).message, forget }, 'redial failed');
      if (forget) {
        this.targets.splice(this.targets.indexOf(target), 1);
        return;
      }
      this.schedule(target, this.delay(target));
    } finally {
      target.dialing = false;
    }
  }

  private delay(target: Target): number {
    return backoffMs(target.failures, this.options.redialMinMs, this.options.redialMaxMs, Math.random());
  }
}

function peerIdOf(address: string): string | undefined {
  const match = /\/p2p\/([^/]+)$/.exec(address);
  return match?.[1];
}
