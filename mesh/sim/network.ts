/**
 * The simulator's virtual network: every message between two nodes goes through here and
 * may be delayed, lost, duplicated or reordered, or blocked by a partition. All choices
 * come from the simulator's seeded PRNG, so a seed replays the same deliveries.
 *
 * Time is in steps; a node ticks about every STEPS_PER_TICK steps.
 */
import type { Prng } from '../prng.ts';

export const STEPS_PER_TICK = 10;

export interface NetworkFaults {
  /** Probability that one delivery is lost. */
  lossRate: number;
  /** Probability that one delivery arrives twice. */
  duplicateRate: number;
  /** Delivery delay in steps is drawn uniformly in [1, delayStepsMax]; unequal delays reorder. */
  delayStepsMax: number;
}

export const CALM: NetworkFaults = { lossRate: 0, duplicateRate: 0, delayStepsMax: 3 };

export class VirtualNetwork {
  faults: NetworkFaults = { ...CALM };
  /** Directed links that deliver nothing: `${from}>${to}`. */
  private readonly blocked = new Set<string>();
  /** Extra loss on everything a node sends (asymmetric one-way loss). */
  readonly egressLoss = new Map<string, number>();
  /** Extra loss on everything a node receives. */
  readonly ingressLoss = new Map<string, number>();

  constructor(private readonly prng: Prng) {}

  /** Delays (in steps) for the copies of one message from→to that get through: [] if lost. */
  deliveries(from: string, to: string): number[] {
    if (this.blocked.has(`${from}>${to}`)) return [];
    const loss = 1 - (1 - this.faults.lossRate) * (1 - (this.egressLoss.get(from) ?? 0)) * (1 - (this.ingressLoss.get(to) ?? 0));
    if (this.prng.chance(loss)) return [];
    const first = this.prng.int(1, this.faults.delayStepsMax);
    if (!this.prng.chance(this.faults.duplicateRate)) return [first];
    return [first, this.prng.int(1, this.faults.delayStepsMax * 2)];
  }

  /**
   * Whether a round trip a→b→a gets through within `attempts` tries, and how long it takes
   * (for probes: a real probe rides on TCP, which sends a lost segment again, so one lost
   * packet delays it rather than failing it; a link losing most packets still fails it).
   */
  roundTrip(a: string, b: string, attempts = 1): { ok: boolean; steps: number } {
    let steps = 0;
    for (let i = 0; i < attempts; i++) {
      const there = this.deliveries(a, b);
      const back = this.deliveries(b, a);
      steps += (there[0] ?? this.faults.delayStepsMax) + (back[0] ?? this.faults.delayStepsMax);
      if (there.length > 0 && back.length > 0) return { ok: true, steps };
    }
    return { ok: false, steps };
  }

  block(from: string, to: string): void {
    this.blocked.add(`${from}>${to}`);
  }

  unblock(from: string, to: string): void {
    this.blocked.delete(`${from}>${to}`);
  }

  isBlocked(from: string, to: string): boolean {
    return this.blocked.has(`${from}>${to}`);
  }

  /** Cuts every link between the two sides, both ways. */
  split(sideA: readonly string[], sideB: readonly string[]): void {
    for (const a of sideA) {
      for (const b of sideB) {
        this.block(a, b);
        this.block(b, a);
      }
    }
  }

  /** Removes every partition and every per-node loss. */
  heal(): void {
    this.blocked.clear();
    this.egressLoss.clear();
    this.ingressLoss.clear();
  }
}
