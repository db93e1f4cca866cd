// A steady stream of inference requests through every reachable node's edge (POST
// /v1/generate, async) while faults happen, with every request followed to its end by polling
// GET /v1/requests/:id at the node that accepted it — also across that node's crash and
// restart, since an accepted request is stored before anything else happens to it. Fates:
// refused at the door (no id given), completed (output checked against every other answer for
// the same input), failed (the node reported it failed), or lost (accepted, then never
// finished nor failed within the deadline).
import { chaosToken, type NsNode } from './ns-cluster.ts';

export type RequestFate = 'completed' | 'refused' | 'failed' | 'lost' | 'wrong';

export interface RequestRecord {
  readonly key: string;
  readonly entry: string;
  readonly inputIndex: number;
  readonly sentAtMs: number;
  /** The id the entry node gave the request when it accepted it. */
  id?: string;
  fate: RequestFate | 'pending';
  status?: number;
  detail?: string;
  /** Dispatches to a rank the entry reported at the end (more than 1: it was re-dispatched). */
  attempts?: number;
}

export interface LoadSummary {
  sent: number;
  /** Refused at the door (429/503/4xx, or no answer to the POST): no id, nothing to follow. */
  refused: number;
  /** Given an id by the entry node. */
  accepted: number;
  completed: number;
  /** Reported failed by the entry node (deadline, stopped, rank-failed). */
  failed: number;
  /** Accepted and never finished nor reported failed within the deadline. */
  lost: number;
  /** Completed with an output that differs from another answer for the same input. */
  wrong: number;
  /** Completed after more than one dispatch (a rank left or a stream broke). */
  redispatched: number;
}

/**
 * Which door requests use: `generate` is the edge (POST /v1/generate, stored, forwarded,
 * followed by polling); `rank` is a node's own rank (POST /v1/rank/infer, answered on the
 * same connection; no answer within the deadline is lost, a broken connection is failed).
 */
export type LoadDoor = 'generate' | 'rank';

export interface LoadOptions {
  door: LoadDoor;
  /** The nodes new requests may be sent to now (running and reachable). */
  entries: () => NsNode[];
  intervalMs?: number;
  /** Unfinished requests at once, at most; a tick with this many sends nothing. */
  pendingMax?: number;
  /** An accepted request unfinished this long after acceptance is lost; keep it above the nodes' ingressRequestTimeoutMs. */
  finishDeadlineMs: number;
  /** Prefix of idempotency keys, so keys never repeat across loads of one run. */
  keyPrefix: string;
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

const pollIntervalMs = 200;
const httpTimeoutMs = 2000;

export class RequestLoad {
  readonly records: RequestRecord[] = [];
  private readonly outputs = new Map<number, string>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private next = 0;
  private pending = 0;
  private readonly settled = new Set<Promise<void>>();

  constructor(private readonly options: LoadOptions) {}

  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => this.tick(), this.options.intervalMs ?? 100);
  }

  /** Stops sending and waits until every request has settled (each is bounded by the deadline). */
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
      failed: count('failed'),
      lost: count('lost'),
      wrong: count('wrong'),
      redispatched: this.records.filter((r) => r.fate === 'completed' && (r.attempts ?? 0) > 1).length,
    };
  }

  private tick(): void {
    if (this.pending >= (this.options.pendingMax ?? 64)) return;
    const entries = this.options.entries();
    if (entries.length === 0) return;
    const n = this.next++;
    const node = entries[n % entries.length]!;
    const record: RequestRecord = { key: `${this.options.keyPrefix}-${n}`, entry: node.name, inputIndex: n % inputs.length, sentAtMs: Date.now(), fate: 'pending' };
    this.records.push(record);
    this.pending += 1;
    const done = this.follow(record, node).finally(() => {
      this.pending -= 1;
      this.settled.delete(done);
    });
    this.settled.add(done);
  }

  private async follow(record: RequestRecord, node: NsNode): Promise<void> {
    if (this.options.door === 'rank') return this.infer(record, node);
    let view = await this.post(record, node);
    if (view === undefined) return;
    const deadline = Date.now() + this.options.finishDeadlineMs;
    while (view.status !== 'done' && view.status !== 'failed') {
      if (Date.now() > deadline) {
        record.fate = 'lost';
        record.detail = `still ${view.status} after ${this.options.finishDeadlineMs} ms`;
        return;
      }
      await Bun.sleep(pollIntervalMs);
      // The entry may be cut off or restarting: keep asking until the deadline.
      view = (await this.poll(node, record.id!)) ?? view;
    }
    this.finish(record, view);
  }

  /** Sends the request; returns its view if accepted, undefined (fate set) if refused. */
  private async post(record: RequestRecord, node: NsNode): Promise<RequestView | undefined> {
    try {
      const res = await fetch(`${node.httpUrl}/v1/generate`, {
        method: 'POST',
        headers: { authorization: `Bearer ${chaosToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ input: inputs[record.inputIndex], mode: 'async', idempotencyKey: record.key }),
        signal: AbortSignal.timeout(httpTimeoutMs),
      });
      record.status = res.status;
      const body = (await res.json()) as RequestView & { error?: { code: string } };
      if ((res.status === 200 || res.status === 202) && typeof body.id === 'string') {
        record.id = body.id;
        return body;
      }
      record.fate = 'refused';
      record.detail = JSON.stringify(body).slice(0, 200);
    } catch (err) {
      // No answer: the client cannot know whether the node stored it; it was never acknowledged.
      record.fate = 'refused';
      record.detail = (err as Error).message;
    }
    return undefined;
  }

  private async infer(record: RequestRecord, node: NsNode): Promise<void> {
    let res: Response;
    let body: string;
    try {
      res = await fetch(`${node.httpUrl}/v1/rank/infer`, {
        method: 'POST',
        headers: { authorization: `Bearer ${chaosToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ id: record.key, input: inputs[record.inputIndex] }),
        signal: AbortSignal.timeout(this.options.finishDeadlineMs),
      });
      body = await res.text();
    } catch (err) {
      record.detail = (err as Error).message;
      const code = (err as { code?: unknown }).code;
      // Nothing listening: refused at the door. No answer at all: lost. A connection the
      // harness broke (killed or cut off the node): the client was told it failed.
      record.fate = code === 'ConnectionRefused' ? 'refused' : (err as Error).name === 'TimeoutError' ? 'lost' : 'failed';
      return;
    }
    record.status = res.status;
    if (res.status === 409 || res.status === 429 || res.status === 503) {
      record.fate = 'refused';
      return;
    }
    record.id = record.key;
    if (res.status !== 200) {
      this.finish(record, { id: record.key, status: 'failed', error: { code: String(res.status), message: body.slice(0, 200) } });
      return;
    }
    const answer = JSON.parse(body) as { id?: unknown; output?: number[] };
    if (answer.id !== record.key) {
      record.fate = 'wrong';
      record.detail = `answer for id ${String(answer.id)}`;
      return;
    }
    this.finish(record, { id: record.key, status: 'done', output: answer.output, attempts: 1 });
  }

  private async poll(node: NsNode, id: string): Promise<RequestView | undefined> {
    try {
      const res = await fetch(`${node.httpUrl}/v1/requests/${encodeURIComponent(id)}`, { signal: AbortSignal.timeout(httpTimeoutMs) });
      return res.status === 200 ? ((await res.json()) as RequestView) : undefined;
    } catch {
      return undefined;
    }
  }

  private finish(record: RequestRecord, view: RequestView): void {
    record.attempts = view.attempts;
    if (view.status === 'failed') {
      record.fate = 'failed';
      record.detail = `${view.error?.code ?? '?'}: ${view.error?.message ?? ''}`;
      return;
    }
    const output = JSON.stringify(view.output);
    const known = this.outputs.get(record.inputIndex);
    if (!Array.isArray(view.output) || (known !== undefined && known !== output)) {
      record.fate = 'wrong';
      record.detail = `output ${output}, other answers ${known ?? '-'}`;
      return;
    }
    this.outputs.set(record.inputIndex, output);
    record.fate = 'completed';
  }
}

/** The part of GET /v1/requests/:id this load reads. */
interface RequestView {
  id: string;
  status: 'queued' | 'running' | 'done' | 'failed';
  output?: number[];
  attempts?: number;
  error?: { code: string; message: string };
}
