// The forward protocol between an ingress node and a rank, over a direct libp2p request
// named FORWARD_REQUEST. One exchange carries a batch of requests (whatever waited for that
// rank when the exchange started: one at low load, many under load, so the per-exchange cost
// of a libp2p stream is shared). The rank answers every request of the batch with its result,
// a typed refusal, or "pending" when the result is not there within its hold time — the
// ingress then asks again with the same id and the rank answers from its dedupe table, so a
// request runs once per rank however often it is asked for.
import { z } from 'zod';

export const FORWARD_REQUEST = 'ingress-forward';
export const FORWARD_VERSION = 1;
/** Requests in one exchange, at most. */
export const FORWARD_BATCH_MAX = 64;

/**
 * Why a rank refused or failed a forward. bad-request / bad-input: the request can never run;
 * no-rank, not-ready, busy: nothing was queued, another rank may take it; deadline: still
 * queued on the rank (ask again); failed: the engine failed it or the node is stopping.
 */
export const FORWARD_ERROR_CODES = ['bad-request', 'bad-input', 'no-rank', 'not-ready', 'busy', 'deadline', 'failed'] as const;
export type ForwardErrorCode = (typeof FORWARD_ERROR_CODES)[number];

const forwardRequestSchema = z.strictObject({
  id: z.string().min(1).max(128),
  pipeline: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/),
  input: z.array(z.int().min(0)).min(1).max(1 << 16),
});
export type ForwardRequest = z.infer<typeof forwardRequestSchema>;

const forwardBatchSchema = z.strictObject({
  v: z.literal(FORWARD_VERSION),
  requests: z.array(forwardRequestSchema).min(1).max(FORWARD_BATCH_MAX),
});

const forwardReplySchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('done'), id: z.string(), output: z.array(z.number()), rank: z.int().min(0), epoch: z.int().min(0) }),
  z.strictObject({ kind: z.literal('pending'), id: z.string() }),
  z.strictObject({ kind: z.literal('error'), id: z.string(), code: z.enum(FORWARD_ERROR_CODES), message: z.string(), retryAfterS: z.number().min(0).optional() }),
]);
export type ForwardReply = z.infer<typeof forwardReplySchema>;

const forwardRepliesSchema = z.strictObject({
  v: z.literal(FORWARD_VERSION),
  replies: z.array(forwardReplySchema).max(FORWARD_BATCH_MAX),
});

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One request's JSON, made once per request and joined into batches by encodeForwardBatch. */
export function forwardRequestJson(req: { readonly id: string; readonly pipeline: string; readonly input: readonly number[] }): string {
  return JSON.stringify({ id: req.id, pipeline: req.pipeline, input: req.input });
}

export function encodeForwardBatch(requestsJson: readonly string[]): Uint8Array {
  return encoder.encode(`{"v":${FORWARD_VERSION},"requests":[${requestsJson.join(',')}]}`);
}

/** The batch's requests, or a sentence saying what is wrong with it. */
export function decodeForwardBatch(bytes: Uint8Array): ForwardRequest[] | string {
  const batch = decodeWith(forwardBatchSchema, bytes);
  return typeof batch === 'string' ? batch : batch.requests;
}

export function encodeForwardReplies(replies: readonly ForwardReply[]): Uint8Array {
  return encoder.encode(JSON.stringify({ v: FORWARD_VERSION, replies }));
}

/** The replies, or a sentence saying what is wrong with them. */
export function decodeForwardReplies(bytes: Uint8Array): ForwardReply[] | string {
  const replies = decodeWith(forwardRepliesSchema, bytes);
  return typeof replies === 'string' ? replies : replies.replies;
}

function decodeWith<T>(schema: z.ZodType<T>, bytes: Uint8Array): T | string {
  let raw: unknown;
  try {
    raw = JSON.parse(decoder.decode(bytes));
  } catch {
    return 'not JSON';
  }
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  return `${issue.path.length === 0 ? 'message' : issue.path.join('.')}: ${issue.message}`;
}
