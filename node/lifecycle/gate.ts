// How a rank's engine loop follows the agreed lifecycle. The core decides (control rounds);
// this gate carries the decision into the loop and does the rank's local part of each
// transient state while the loop is parked — so offloading, reloading and tearing down never
// overlap a step:
//
//   PAUSING     nothing to do beyond parking: every rank parked on one all-reduce means
//               the mesh is drained, so report PAUSING done
//   SUSPENDING  offload the engine (free device buffers, drop weights), then report done
//   RESUMING    reload what was offloaded, then report done (the mesh returns to PAUSED)
//   STOPPING    fail what is still queued, tear the engine down, then report done (the
//               mesh closes; the node exits after a grace period)
//
// The loop leaves its park when the lifecycle is RUNNING again (UNPAUSE) or when it is asked
// to stop (a view change rebuilds the communicator; the loop parks again on the new one).
import type { Logger } from 'pino';
import type { LoopLifecycle } from '../engine/loop.ts';
import type { LifecycleState } from '../../mesh/rawnode.ts';
import type { MeshDriver } from '../mesh/driver.ts';

/** The rank's local part of the transient states. */
export interface LocalWork {
  offload(): Promise<void>;
  reload(): Promise<void>;
  /** Fails queued requests and tears the engine down. */
  teardown(): Promise<void>;
}

export interface LifecycleGateOptions {
  readonly driver: Pick<MeshDriver, 'on' | 'off' | 'core' | 'localDone'>;
  readonly work: LocalWork;
  readonly log: Logger;
  /** Called on every lifecycle change (the host ends the loop's idle wait so the news travels at once). */
  readonly onChange?: () => void;
}

/** What the gate did last, for GET /v1/lifecycle and tests. */
export interface GateStatus {
  readonly draining: boolean;
  /** The local part finished for this (generation, version), or null. */
  readonly doneFor: { readonly generation: number; readonly version: number; readonly state: LifecycleState } | null;
  /** The last local part that failed (the transition waits; an operator must look), or null. */
  readonly lastError: string | null;
}

export class LifecycleGate implements LoopLifecycle {
  /** Read by the loop once per iteration: a plain field. */
  draining: boolean;
  private changed = Promise.withResolvers<void>();
  private doneFor: GateStatus['doneFor'] = null;
  private lastError: string | null = null;
  private readonly onLifecycle = (): void => {
    this.draining = this.options.driver.core.lifecycleState() !== 'RUNNING';
    this.changed.resolve();
    this.changed = Promise.withResolvers<void>();
    this.options.onChange?.();
  };

  constructor(private readonly options: LifecycleGateOptions) {
    this.draining = options.driver.core.lifecycleState() !== 'RUNNING';
    options.driver.on('lifecycle', this.onLifecycle);
  }

  /** Stops following the driver. */
  close(): void {
    this.options.driver.off('lifecycle', this.onLifecycle);
    this.changed.resolve();
  }

  status(): GateStatus {
    return { draining: this.draining, doneFor: this.doneFor, lastError: this.lastError };
  }

  async parked(stopping: Promise<void>): Promise<void> {
    const { core } = this.options.driver;
    let stopped = false;
    void stopping.then(() => (stopped = true));
    for (;;) {
      const info = core.lifecycle();
      if (info.state === 'RUNNING' || stopped) return;
      // Wait for the next change before doing the work, so a change during the work is seen.
      const next = this.changed.promise;
      if (info.transient) await this.localPart(info.state, info.generation, info.version);
      await Promise.race([next, stopping]);
    }
  }

  private async localPart(state: LifecycleState, generation: number, version: number): Promise<void> {
    const { driver, work, log } = this.options;
    const done = this.doneFor;
    if (done === null || done.generation !== generation || done.version !== version) {
      const startedMs = performance.now();
      try {
        if (state === 'SUSPENDING') await work.offload();
        else if (state === 'RESUMING') await work.reload();
        else if (state === 'STOPPING') await work.teardown();
      } catch (err) {
        this.lastError = `${state}: ${(err as Error).message}`;
        log.error({ err, state, version }, 'the local part of a lifecycle transition failed; the transition waits');
        return;
      }
      this.doneFor = { generation, version, state };
      this.lastError = null;
      log.info({ state, version, ms: Math.round(performance.now() - startedMs), atMs: performance.timeOrigin + performance.now() }, 'local part of the transition done');
    }
    // Reported again on every pass: harmless, and it repairs a report made in an epoch that
    // a view change then replaced.
    driver.localDone(state);
  }
}
