// The rank side of forwarding: answers FORWARD_REQUEST by running each request of the
// batch on this node's rank. A bounded table of recent request ids (least recently used dropped first)
// holds each request's pending or finished answer, so a forward repeated after a broken
// stream, a timeout or a "pending" reply returns the stored answer instead of running the
// request again. A refusal that changed nothing (no rank, not ready, queue full) is not
// remembered: asking again may succeed.
import type { Logger } from 'pino';
import { NoRankError, RankBusyError, RankDeadlineError, RankFailedError, RankInputError, RankNotReadyError } from '../rank/errors.ts';
import type { InferRequest, InferResult } from '../rank/host.ts';
import type { Transport } from '../p2p/transport.ts';
import { decodeForwardBatch, encodeForwardReplies, FORWARD_REQUEST, type ForwardReply, type ForwardRequest } from './wire.ts';

export interface ForwardServerOptions {
  readonly transport: Pick<Transport, 'handle'>;
  readonly rank: { infer(req: InferRequest, options?: { readonly timeoutMs?: number }): Promise<InferResult> };
  /** Request ids remembered with their answer, at most. */
  readonly dedupeEntries: number;
  /**
   * Longest a forward is held open waiting for its result before the rank answers
   * "pending"; below the transport's request timeout, so a slow result never breaks the stream.
   */
  readonly holdMs: number;
  /**
   * Longest a forwarded request's run waits for its result on this rank (the ingress's own
   * request deadline). A run's answer is what every later ask of the id gets, so it must be
   * the request's real outcome — not a shorter wait's "no result yet", which would answer
   * every re-ask at once while the request still sits in the queue.
   */
  readonly resultTimeoutMs: number;
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
  private readonly recent = new Map<string, Answer>();
  private registered = false;

  constructor(private readonly options: ForwardServerOptions) {}

  /** Registers the handler on the transport (once; the transport keeps it across its restarts). */
  async start(): Promise<void> {
    if (this.registered) return;
    await this.options.transport.handle(FORWARD_REQUEST, (_from, bytes) => this.serve(bytes));
    this.registered = true;
  }

  /**
   * Answers one batch: every request's answer once all are there or the hold time passed.
   * Throws (the requester sees a remote error) on a malformed batch.
   */
  async serve(bytes: Uint8Array): Promise<Uint8Array> {
    const requests = decodeForwardBatch(bytes);
    if (typeof requests === 'string') {
      this.counters.errors++;
      throw new Error(`malformed forward: ${requests}`);
    }
    const answers = requests.map((req) => this.answerOf(req));
    await holdFor(Promise.all(answers.map((a) => a.promise)), this.options.holdMs);
    const replies = answers.map((a, i): ForwardReply => a.reply ?? { kind: 'pending', id: requests[i]!.id });
    for (const reply of replies) {
      if (reply.kind === 'done') this.counters.done++;
      else if (reply.kind === 'pending') this.counters.pending++;
      else this.counters.errors++;
    }
    return encodeForwardReplies(replies);
  }

  /** The request's answer from the table, or a new run of it. */
  private answerOf(req: ForwardRequest): Answer {
    const known = this.recent.get(req.id);
    if (known !== undefined) {
      this.counters.deduped++;
      this.recent.delete(req.id);
      this.recent.set(req.id, known);
      return known;
    }
    const answer: Answer = { promise: this.run(req.id, req.pipeline, req.input), reply: null };
    // Registered before anyone awaits the promise, so `reply` is set when they resume.
    void answer.promise.then((reply) => {
      answer.reply = reply;
    });
    this.remember(req.id, answer);
    return answer;
  }

  private async run(id: string, pipeline: string, input: readonly number[]): Promise<ForwardReply> {
    this.counters.runs++;
    try {
      const result = await this.options.rank.infer({ id, pipeline, input }, { timeoutMs: Math.min(this.options.resultTimeoutMs, TIMER_MS_MAX) });
      return { kind: 'done', id, output: [...result.output], rank: result.rank, epoch: result.epoch };
    } catch (err) {
      const reply = toReply(id, err);
      // Only refusals that left nothing queued are forgotten; a deadline means the request
      // is still queued on this rank, and the next ask should wait for that run rather than start another.
      if (reply.kind === 'error' && reply.code !== 'deadline') this.recent.delete(id);
      if (reply.kind === 'error' && reply.code === 'failed') this.options.log.warn({ id, message: reply.message }, 'forwarded request failed on this rank');
      return reply;
    }
  }

  private remember(id: string, answer: Answer): void {
    this.recent.set(id, answer);
    while (this.recent.size > this.options.dedupeEntries) {
      const oldest = this.recent.keys().next().value;
      if (oldest === undefined) break;
      this.recent.delete(oldest);
    }
  }
}

/** Longest delay a timer takes (larger ones fire at once). */
const TIMER_MS_MAX = 2 ** 31 - 1;

/** A request's answer: pending until `promise` settles, then also in `reply`. */
interface Answer {
  readonly promise: Promise<ForwardReply>;
  reply: ForwardReply | null;
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

/** Resolves when `settles` does or after `ms`, whichever comes first. */
async function holdFor(settles: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  try {
    await Promise.race([settles, late]);
  } finally {
    clearTimeout(timer);
  }
}
