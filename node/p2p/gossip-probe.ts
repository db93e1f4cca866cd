// A diagnostic: one small gossip message, timed from the publish to its arrival at every
// node. It gives operators (and the lifecycle benchmark) the one-message baseline against
// which multi-round protocols are judged. Receipts are logged with sub-millisecond wall
// times, comparable across the processes of one host, and kept in memory for a while.
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Transport } from './transport.ts';

export const PROBE_CHANNEL = 'probe';
/** Receipts kept for GET; older ones are forgotten. */
const RECEIPTS_KEPT = 256;

const probeSchema = z.strictObject({ id: z.string().regex(/^[A-Za-z0-9._:-]{1,64}$/), sentAtMs: z.number().finite() });

export interface ProbeReceipt {
  readonly id: string;
  readonly from: string;
  readonly sentAtMs: number;
  readonly receivedAtMs: number;
}

export class GossipProbe {
  private readonly receipts = new Map<string, ProbeReceipt>();
  private unsubscribe: (() => void) | undefined;
  private counter = 0;

  constructor(
    private readonly transport: Pick<Transport, 'subscribe' | 'publish'>,
    private readonly self: string,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.unsubscribe ??= this.transport.subscribe(PROBE_CHANNEL, (from, bytes) => this.receive(from, bytes));
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
  }

  /** Publishes one probe; returns its id and send time. */
  async send(): Promise<{ id: string; sentAtMs: number }> {
    const id = `${this.self.slice(-8)}.${++this.counter}`;
    const sentAtMs = nowMs();
    await this.transport.publish(PROBE_CHANNEL, new TextEncoder().encode(JSON.stringify({ id, sentAtMs })));
    this.log.info({ probeId: id, sentAtMs }, 'gossip probe sent');
    return { id, sentAtMs };
  }

  receipt(id: string): ProbeReceipt | undefined {
    return this.receipts.get(id);
  }

  private receive(from: string, bytes: Uint8Array): void {
    const receivedAtMs = nowMs();
    let parsed;
    try {
      parsed = probeSchema.safeParse(JSON.parse(new TextDecoder().decode(bytes)));
    } catch {
      parsed = null;
    }
    if (!parsed?.success) {
      this.log.debug({ from }, 'rejected a malformed gossip probe');
      return;
    }
    const receipt: ProbeReceipt = { id: parsed.data.id, from, sentAtMs: parsed.data.sentAtMs, receivedAtMs };
    this.receipts.set(receipt.id, receipt);
    if (this.receipts.size > RECEIPTS_KEPT) this.receipts.delete(this.receipts.keys().next().value!);
    this.log.info({ probeId: receipt.id, from, sentAtMs: receipt.sentAtMs, receivedAtMs, ms: receivedAtMs - receipt.sentAtMs }, 'gossip probe received');
  }
}

function nowMs(): number {
  return performance.timeOrigin + performance.now();
}
