// The rank side of forwarding: answers FORWARD_REQUEST by running the request on this
// node's rank. A bounded table of recent request ids (least recently used dropped first)
// holds each request's pending or finished answer, so a forward repeated after a broken
// stream, a timeout or a "pending" reply returns the stored answer instead of running the
// request again. A refusal that changed nothing (no rank, not ready, queue full) is not
// remembered: asking again may succeed.
import type { Logger } from 'pino';
import { NoRankError, RankBusyError, RankDeadlineError, RankFailedError, RankInputError, RankNotReadyError } from '../rank/errors.ts';
import type { InferRequest, InferResult } from '../rank/host.ts';
import type { Transport } from '../p2p/transport.ts';
import { decodeForwardRequest, encodeForwardReply, FORWARD_REQUEST, type ForwardReply } from './wire.ts';

export interface ForwardServerOptions {
  readonly transport: Pick<Transport, 'handle'>;
  readonly rank: { infer(req: InferRequest): Promise<InferResult> };
  /** Request ids remembered with their answer, at most. */
  readonly dedupeEntries: number;
  /**
   * Longest a forward is held open waiting for its result before the rank answers
   * "pending"; below the transport's request timeout, so a slow result never breaks the stream.
   */
  readonly holdMs: number;
  readonly log: Logger;
}

export interface ForwardServerCounters {
  /** Forwards answered, by kind of answer. */
  done: number;
  pending: number;
  errors: number;
  /** Forwards of an id already known here, answered from the table. */
  deduped: number;
  /** Requests actually handed to the rank. */
  runs: number;
}

export class ForwardServer {
  readonly counters: ForwardServerCounters = { done: 0, pending: 0, errors: 0, deduped: 0, runs: 0 };
  /** Invariant: size <= dedupeEntries; Map order is least recently used first. */
  private readonly recent = new Map<string, Promise<ForwardReply>>();
  private registered = false;

  constructor(private readonly options: ForwardServerOptions) {}

  /** Registers the handler on the transport (once; the transport keeps it across its restarts). */
  async start(): Promise<void> {
    if (this.registered) return;
    await this.options.transport.handle(FORWARD_REQUEST, (_from, bytes) => this.serve(bytes));
    this.registered = true;
  }

  /** Answers one forward (exposed for tests and the benchmark; the transport calls it). */
  async serve(bytes: Uint8Array): Promise<Uint8Array> {
    const req = decodeForwardRequest(bytes);
    if (typeof req === 'string') {
      this.counters.errors++;
      return encodeForwardReply({ kind: 'error', id: '', code: 'bad-request', message: `malformed forward: ${req}` });
    }
    let answer = this.recent.get(req.id);
    if (answer !== undefined) {
      this.counters.deduped++;
      this.recent.delete(req.id);
      this.recent.set(req.id, answer);
    } else {
      answer = this.run(req.id, req.pipeline, req.input);
      this.remember(req.id, answer);
    }
    const reply = await holdFor(answer, this.options.holdMs, { kind: 'pending', id: req.id });
    if (reply.kind === 'done') this.counters.done++;
    else if (reply.kind === 'pending') this.counters.pending++;
    else this.counters.errors++;
    return encodeForwardReply(reply);
  }

  private async run(id: string, pipeline: string, input: readonly number[]): Promise<ForwardReply> {
    this.counters.runs++;
    try {
      const result = await this.options.rank.infer({ id, pipeline, input });
      return { kind: 'done', id, output: [...result.output], rank: result.rank, epoch: result.epoch };
    } catch (err) {
      const reply = toReply(id, err);
      // Only refusals that left nothing queued are forgotten; a deadline means the request
      // is still queued on this rank, and the next ask should wait for that run rather than start another.
      if (reply.kind === 'error' && reply.code !== 'deadline') this.forget(id);
      if (reply.kind === 'error' && reply.code === 'failed') this.options.log.warn({ id, message: reply.message }, 'forwarded request failed on this rank');
      return reply;
    }
  }

  private remember(id: string, answer: Promise<ForwardReply>): void {
    this.recent.set(id, answer);
    while (this.recent.size > this.options.dedupeEntries) {
      const oldest = this.recent.keys().next().value;
      if (oldest === undefined) break;
      this.recent.delete(oldest);
    }
  }

  private forget(id: string): void {
    this.recent.delete(id);
  }
}

function toReply(id: string, err: unknown): ForwardReply {
  const message = (err as Error).message ?? String(err);
  if (err instanceof RankInputError) return { kind: 'error', id, code: 'bad-input', message };
  if (err instanceof NoRankError) return { kind: 'error', id, code: 'no-rank', message };
  if (err instanceof RankNotReadyError) return { kind: 'error', id, code: 'not-ready', message, retryAfterS: 1 };
  if (err instanceof RankBusyError) return { kind: 'error', id, code: 'busy', message, retryAfterS: err.retryAfterS };
  if (err instanceof RankDeadlineError) return { kind: 'error', id, code: 'deadline', message };
  if (err instanceof RankFailedError) return { kind: 'error', id, code: 'failed', message };
  return { kind: 'error', id, code: 'failed', message };
}

/** The answer if it comes within `ms`, else `timeout` (the answer keeps its place in the table). */
async function holdFor<T>(answer: Promise<T>, ms: number, timeout: T): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(timeout), ms);
  });
  try {
    return await Promise.race([answer, late]);
  } finally {
    clearTimeout(timer);
  }
}
