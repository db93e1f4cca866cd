// A steady stream of inference requests through several entry points while faults happen,
// with every request's fate recorded: completed (and its output checked against every other
// answer for the same input), refused at the door, failed with an answer, failed because the
// harness itself killed or cut off the entry node while the request was in flight, or lost
// (no answer at all within the deadline from an entry that stayed reachable).
import { chaosToken, type NsNode } from './ns-cluster.ts';

export type RequestFate = 'completed' | 'refused' | 'failed' | 'entry-disturbed' | 'lost' | 'wrong';

export interface RequestRecord {
  readonly id: string;
  readonly entry: string;
  readonly inputIndex: number;
  readonly sentAtMs: number;
  fate: RequestFate | 'in-flight';
  status?: number;
  detail?: string;
  /** The entry node was killed or cut off while this request was in flight. */
  disturbed: boolean;
}

export interface LoadSummary {
  sent: number;
  /** Refused before being queued (no rank, not ready, queue full, not listening yet): reported at once. */
  refused: number;
  /** sent − refused. */
  accepted: number;
  completed: number;
  /** Answered with an error, or the connection ended because the harness disturbed the entry. */
  failed: number;
  lost: number;
  /** Answered 200 with a wrong id or an output that differs from another answer for the input. */
  wrong: number;
}

export interface LoadOptions {
  /** The nodes requests may be sent to now (running and reachable). */
  entries: () => NsNode[];
  intervalMs?: number;
  /** Requests in flight at once, at most; a tick with this many in flight sends nothing. */
  inFlightMax?: number;
  /** No answer within this is a lost request; keep it above the nodes' rankRequestTimeoutMs. */
  answerDeadlineMs: number;
  /** Prefix of request ids, so ids never repeat across loads of one run. */
  idPrefix: string;
}

/** Inputs the load cycles through; each has one correct output, whatever rank computes it. */
const inputs: readonly (readonly number[])[] = [
  [1, 2, 3, 4],
  [9, 8, 7],
  [200, 17, 5, 5, 64],
  [0],
  [255, 128, 64, 32, 16, 8],
  [42, 42],
];

export class RequestLoad {
  readonly records: RequestRecord[] = [];
  private readonly inFlight = new Map<string, { record: RequestRecord; node: NsNode }>();
  private readonly outputs = new Map<number, string>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private next = 0;
  private readonly settled = new Set<Promise<void>>();

  constructor(private readonly options: LoadOptions) {}

  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => this.tick(), this.options.intervalMs ?? 100);
  }

  /** Marks requests in flight to `node` as disturbed: call before killing or cutting it off. */
  disturb(node: NsNode): void {
    for (const { record, node: to } of this.inFlight.values()) if (to === node) record.disturbed = true;
  }

  /** Stops sending and waits for every request in flight to settle (each is bounded). */
  async stop(): Promise<LoadSummary> {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    await Promise.all([...this.settled]);
    return this.summary();
  }

  summary(): LoadSummary {
    const count = (fate: RequestFate): number => this.records.filter((r) => r.fate === fate).length;
    const refused = count('refused');
    return {
      sent: this.records.length,
      refused,
      accepted: this.records.length - refused,
      completed: count('completed'),
      failed: count('failed') + count('entry-disturbed'),
      lost: count('lost'),
      wrong: count('wrong'),
    };
  }

  private tick(): void {
    if (this.inFlight.size >= (this.options.inFlightMax ?? 16)) return;
    const entries = this.options.entries();
    if (entries.length === 0) return;
    const n = this.next++;
    const node = entries[n % entries.length]!;
    const inputIndex = n % inputs.length;
    const record: RequestRecord = {
      id: `${this.options.idPrefix}-${n}`,
      entry: node.name,
      inputIndex,
      sentAtMs: Date.now(),
      fate: 'in-flight',
      disturbed: false,
    };
    this.records.push(record);
    this.inFlight.set(record.id, { record, node });
    const done = this.send(record, node).finally(() => {
      this.inFlight.delete(record.id);
      this.settled.delete(done);
    });
    this.settled.add(done);
  }

  private async send(record: RequestRecord, node: NsNode): Promise<void> {
    let res: Response;
    let body: string;
    try {
      res = await fetch(`${node.httpUrl}/v1/rank/infer`, {
        method: 'POST',
        headers: { authorization: `Bearer ${chaosToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ id: record.id, input: inputs[record.inputIndex] }),
        signal: AbortSignal.timeout(this.options.answerDeadlineMs),
      });
      body = await res.text();
    } catch (err) {
      const timedOut = (err as Error).name === 'TimeoutError';
      record.detail = (err as Error).message;
      // A refused connection (a node still starting) reached no node: refused at the door.
      // Without an answer the request is lost, unless the harness itself took its entry away.
      if ((err as { code?: unknown }).code === 'ConnectionRefused') record.fate = 'refused';
      else record.fate = record.disturbed ? 'entry-disturbed' : timedOut ? 'lost' : 'failed';
      return;
    }
    record.status = res.status;
    if (res.status === 409 || res.status === 429 || res.status === 503) {
      record.fate = 'refused';
      return;
    }
    if (res.status !== 200) {
      record.fate = 'failed';
      record.detail = body.slice(0, 200);
      return;
    }
    const answer = JSON.parse(body) as { id?: unknown; output?: unknown };
    const output = JSON.stringify(answer.output);
    const known = this.outputs.get(record.inputIndex);
    if (answer.id !== record.id || !Array.isArray(answer.output) || (known !== undefined && known !== output)) {
      record.fate = 'wrong';
      record.detail = `id ${String(answer.id)}, output ${output}, other answers ${known ?? '-'}`;
      return;
    }
    this.outputs.set(record.inputIndex, output);
    record.fate = 'completed';
  }
}
