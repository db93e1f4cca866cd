// POST /v1/rank/infer runs one request on this node's rank; GET /v1/rank shows the rank's
// state. This is the rank-side entry that ingress forwards to, so it stays small: validate,
// hand to the RankHost, map its typed errors to statuses.
import { Hono } from 'hono';
import { z } from 'zod';
import { NoRankError, RankBusyError, RankDeadlineError, RankFailedError, RankInputError, RankNotReadyError } from '../rank/errors.ts';
import type { InferRequest, InferResult, RankStatus } from '../rank/host.ts';
import { ApiError, validBody } from './errors.ts';
import { describeRoutes } from './openapi.ts';

/** What the routes need of the RankHost. */
export interface RankService {
  rankStatus(): RankStatus;
  infer(req: InferRequest): Promise<InferResult>;
}

/** Tokens in one request, at most, before the engine's own (smaller) limit is asked. */
const tokensMax = 1 << 16;

export const inferBodySchema = z.strictObject({
  id: z.string().min(1).max(128).optional(),
  input: z.array(z.number().int().min(0)).min(1).max(tokensMax),
  pipeline: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'expected 1-64 letters, digits, _ . : or -').optional(),
});

/** The documented shape of RankStatus (a test checks real answers against it). */
export const rankStatusSchema = z.looseObject({
  rank: z.number().int().nullable().describe('The mesh rank this incarnation holds in the committed view, or null'),
  generation: z.number().int().nullable(),
  epoch: z.number().int().nullable(),
  attempt: z.number().int().nullable(),
  serving: z.boolean(),
  queueLength: z.number().int(),
  iterations: z.number().int(),
  warmUp: z.object({ phase: z.string(), fraction: z.number() }),
  requests: z.object({ accepted: z.number().int(), completed: z.number().int(), failed: z.number().int(), timedOut: z.number().int() }),
  lastError: z.string().nullable(),
});

export const inferResultSchema = z.object({ id: z.string(), output: z.array(z.number().int()), rank: z.number().int(), epoch: z.number().int() });

export function rankRoutes(rank: RankService): Hono {
  return describeRoutes(rankModule(rank), [
    {
      method: 'get',
      path: '/v1/rank',
      tag: 'rank',
      summary: 'This node\'s rank and its engine loop',
      responses: { 200: { description: 'The rank\'s state', schema: rankStatusSchema } },
    },
    {
      method: 'post',
      path: '/v1/rank/infer',
      tag: 'rank',
      summary: 'Runs one request on this node\'s rank',
      description: 'The rank-side entry that ingress forwards to. Tokens are 0..255 for the reference model.',
      body: inferBodySchema,
      responses: {
        200: { description: 'The result', schema: inferResultSchema },
        400: { description: 'bad-request: the body or its input is invalid; nothing was queued' },
        409: { description: 'no-rank: this node holds no active rank' },
        429: { description: 'queue-full: the rank\'s queue is full (Retry-After)' },
        503: { description: 'not-ready: warming up or building its first communicator (Retry-After)' },
        504: { description: 'deadline: no result within rankRequestTimeoutMs; the request stays queued' },
      },
    },
  ]);
}

function rankModule(rank: RankService): Hono {
  return new Hono()
    .get('/v1/rank', (c) => c.json(rank.rankStatus()))
    .post('/v1/rank/infer', async (c) => {
      let raw: unknown;
      try {
        raw = await c.req.json();
      } catch {
        throw new ApiError(400, 'bad-request', 'the body must be JSON: { "input": [token, ...], "id"?: string, "pipeline"?: string }');
      }
      const body = validBody(inferBodySchema, raw);
      try {
        return c.json(await rank.infer(body));
      } catch (err) {
        throw toApiError(err, (s) => c.header('Retry-After', String(s)));
      }
    });
}

function toApiError(err: unknown, retryAfter: (seconds: number) => void): unknown {
  if (err instanceof RankInputError) return new ApiError(400, 'bad-request', `input: ${err.message}`);
  if (err instanceof NoRankError) return new ApiError(409, 'no-rank', err.message);
  if (err instanceof RankBusyError) {
    retryAfter(err.retryAfterS);
    return new ApiError(429, 'queue-full', err.message);
  }
  if (err instanceof RankNotReadyError) {
    retryAfter(1);
    return new ApiError(503, 'not-ready', err.message);
  }
  if (err instanceof RankDeadlineError) return new ApiError(504, 'deadline', err.message);
  if (err instanceof RankFailedError) return new ApiError(500, 'rank-failed', err.message);
  return err;
}
