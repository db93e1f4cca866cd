// How long a node whose mesh closed (STOP) keeps running before it exits 0. Its engine is
// already torn down; what stays up is the gossip, the closed record and HTTP, so that a peer
// that missed the close (cut off by a partition, a joiner still warming up) hears a closed
// heartbeat, fetches the closed view by catch-up and exits too. The node lingers until every
// peer it knows of in the closed generation has shown it holds the closed view (the core's
// closeAcks()), for at least closedGraceMs and at most closeLingerMs:
//
//   closed ──┬─ grace passed, nobody waited for, no new ack for settleMs ──> exit 0 ('acknowledged')
//            └─ closeLingerMs passed (a peer never came back) ─────────────> exit 0 ('bound')
//
// settleMs (two heartbeats) after the last new acknowledgement lets this node's own closed
// heartbeat reach the peer that acknowledged last, which is waiting for this node in turn.
import type { Logger } from 'pino';
import type { CloseAcks } from '../../mesh/rawnode.ts';

export interface LingerSettings {
  /** Least time a closed node lingers (fresh nodes starting meanwhile still learn the close). */
  readonly graceMs: number;
  /** Most time a closed node lingers waiting for peers that do not acknowledge. */
  readonly lingerMaxMs: number;
  /** Quiet time after the last new acknowledgement before leaving. */
  readonly settleMs: number;
}

/** Why a closed node left. */
export type LingerReason = 'acknowledged' | 'bound';

export type LingerDecision = { readonly exit: false } | { readonly exit: true; readonly reason: LingerReason };

/** Where a node stands with its close (GET /v1/lifecycle/close). */
export type LingerStatus =
  | { readonly code: 'open' }
  | {
      readonly code: 'lingering' | 'exiting';
      readonly generation: number;
      readonly epoch: number;
      readonly closedForMs: number;
      readonly acknowledged: readonly string[];
      readonly waitingFor: readonly string[];
      readonly reason: LingerReason | null;
    };

export interface CloseLingerOptions {
  /** The core's view of who holds the closed view; null once the core left the closed generation. */
  readonly acks: () => CloseAcks | null;
  readonly settings: LingerSettings;
  /** How often acknowledgements are looked at (the protocol tick). */
  readonly pollMs: number;
  readonly log: Logger;
  /** While still waiting, a reminder of whom for is logged this often. */
  readonly remindEveryMs?: number;
}

/**
 * The linger rule as a pure function of elapsed times: leave at the bound whatever happens;
 * before it, leave once the grace passed, nobody is waited for and the last new
 * acknowledgement is settleMs old.
 */
export function lingerDecision(settings: LingerSettings, sinceCloseMs: number, sinceLastAckMs: number, waitingFor: number): LingerDecision {
  if (sinceCloseMs >= Math.max(settings.graceMs, settings.lingerMaxMs)) return { exit: true, reason: 'bound' };
  if (sinceCloseMs < settings.graceMs || waitingFor > 0 || sinceLastAckMs < settings.settleMs) return { exit: false };
  return { exit: true, reason: 'acknowledged' };
}

/** Watches the core's acknowledgements after the close and settles `done` when the node may exit. */
export class CloseLinger {
  private timer: ReturnType<typeof setInterval> | undefined;
  private began = false;
  private closedAtMs = 0;
  private lastAckAtMs = 0;
  private lastRemindMs = 0;
  private last: CloseAcks | null = null;
  private outcome: LingerReason | null = null;
  private readonly finished = Promise.withResolvers<LingerReason>();

  constructor(private readonly options: CloseLingerOptions) {}

  /** Settles with the reason once the node may exit 0. */
  get done(): Promise<LingerReason> {
    return this.finished.promise;
  }

  /** The mesh closed: starts lingering. Idempotent. */
  begin(): void {
    if (this.began) return;
    this.began = true;
    const nowMs = performance.now();
    this.closedAtMs = nowMs;
    this.lastAckAtMs = nowMs;
    this.lastRemindMs = nowMs;
    const acks = this.options.acks();
    this.last = acks;
    const { graceMs, lingerMaxMs } = this.options.settings;
    this.options.log.info(
      { generation: acks?.generation, epoch: acks?.epoch, waitingFor: acks?.waitingFor ?? [], acknowledged: acks?.acknowledged ?? [], graceMs, lingerMaxMs },
      `the mesh is closed; gossiping the closed record until the ${acks?.waitingFor.length ?? 0} peer(s) not yet known to hold it do (at least ${graceMs} ms, at most ${Math.max(graceMs, lingerMaxMs)} ms)`,
    );
    this.timer = setInterval(() => this.poll(), this.options.pollMs);
    this.poll();
  }

  /** Stops watching (the runtime is stopping); `done` settles no more. Idempotent. */
  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  status(): LingerStatus {
    const acks = this.last;
    if (!this.began) return { code: 'open' };
    return {
      code: this.outcome === null ? 'lingering' : 'exiting',
      generation: acks?.generation ?? 0,
      epoch: acks?.epoch ?? 0,
      closedForMs: Math.round(performance.now() - this.closedAtMs),
      acknowledged: acks?.acknowledged ?? [],
      waitingFor: acks?.waitingFor ?? [],
      reason: this.outcome,
    };
  }

  private poll(): void {
    const nowMs = performance.now();
    // Null: the core left the closed generation (an operator's --new-generation elsewhere
    // started the next one and this node follows it); nobody is left to wait for here.
    const current = this.options.acks();
    const acks = current ?? (this.last === null ? null : { ...this.last, waitingFor: [] });
    const before = new Set(this.last?.acknowledged ?? []);
    const fresh = (acks?.acknowledged ?? []).filter((p) => !before.has(p));
    if (fresh.length > 0) {
      this.lastAckAtMs = nowMs;
      this.options.log.info({ peers: fresh, waitingFor: acks?.waitingFor ?? [] }, `${fresh.length} peer(s) acknowledged the close; waiting for ${acks?.waitingFor.length ?? 0} more`);
    }
    if (acks !== null) this.last = acks;
    const waitingFor = acks?.waitingFor ?? [];
    const decision = lingerDecision(this.options.settings, nowMs - this.closedAtMs, nowMs - this.lastAckAtMs, waitingFor.length);
    if (decision.exit) {
      this.outcome = decision.reason;
      this.stop();
      const lingeredMs = Math.round(nowMs - this.closedAtMs);
      if (decision.reason === 'bound') {
        this.options.log.warn({ waitingFor, lingeredMs }, `closeLingerMs passed with ${waitingFor.length} peer(s) not known to hold the closed record; exiting 0 anyway (they learn the close only from a node still running)`);
      } else {
        this.options.log.info({ lingeredMs }, 'every peer known in the closed generation holds the closed record; exiting 0');
      }
      this.finished.resolve(decision.reason);
      return;
    }
    const remindEveryMs = this.options.remindEveryMs ?? 10_000;
    if (waitingFor.length > 0 && nowMs - this.lastRemindMs >= remindEveryMs) {
      this.lastRemindMs = nowMs;
      const leftMs = Math.max(this.options.settings.graceMs, this.options.settings.lingerMaxMs) - (nowMs - this.closedAtMs);
      this.options.log.info({ waitingFor, leftMs: Math.round(leftMs) }, `still waiting for ${waitingFor.length} peer(s) to learn that the mesh closed (at most ${Math.round(leftMs / 1000)} s more)`);
    }
  }
}
