// POST /v1/generate accepts an inference request at this node and forwards it to a rank;
// GET /v1/requests/:id shows a request's status and result. The routes parse and map errors;
// the Ingress validates, stores and routes (node/ingress/ingress.ts).
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { z } from 'zod';
import {
  IdempotencyConflictError,
  IngressBusyError,
  IngressInputError,
  IngressTooLargeError,
  IngressUnavailableError,
  UnknownPipelineError,
} from '../ingress/errors.ts';
import type { Accepted, GenerateInput, RequestView } from '../ingress/ingress.ts';
import { ApiError, validBody } from './errors.ts';
import { describeRoutes, type RouteDoc } from './openapi.ts';

/** What the routes need of the Ingress. */
export interface IngressService {
  accept(req: GenerateInput): Promise<Accepted>;
  get(id: string): RequestView | undefined;
  wait(id: string, timeoutMs: number): Promise<RequestView | undefined>;
}

export interface IngressRouteOptions {
  /** A sync request waits this long for its result, then is answered 202 with its id. */
  readonly syncWaitMs: number;
  /** Tokens in one input, at most: bounds the body size too. */
  readonly inputTokensMax: number;
}

/** Types only: ranges, lengths, names and modes are judged by the Ingress, in one place. */
export const generateBodySchema = z.strictObject({
  input: z.array(z.number()),
  pipeline: z.string().optional(),
  idempotencyKey: z.string().optional(),
  mode: z.enum(['sync', 'async']).optional(),
});

const bodyShape = '{ "input": [token, ...], "pipeline"?: string, "idempotencyKey"?: string, "mode"?: "sync" | "async" }';

/** The documented shape of RequestView (a test checks real answers against it). */
export const requestViewSchema = z.looseObject({
  id: z.string(),
  status: z.string().describe('queued, running, done or failed'),
  pipeline: z.string(),
  mode: z.enum(['sync', 'async']),
  idempotencyKey: z.string().nullable(),
  output: z.array(z.number()).optional().describe('Present when done'),
  rank: z.number().int().optional(),
  epoch: z.number().int().optional(),
  error: z.object({ code: z.string(), message: z.string() }).optional().describe('Present when failed: deadline, stopped, bad-input or rank-failed'),
  attempts: z.number().int().describe('Dispatches to a rank so far'),
  acceptedAtMs: z.number(),
  finishedAtMs: z.number().optional(),
});

/** The OpenAPI descriptions of the routes below. */
export const ingressRouteDocs: readonly RouteDoc[] = [
  {
    method: 'post',
    path: '/v1/generate',
    tag: 'requests',
    summary: 'Accepts an inference request at this node and forwards it to a rank serving its pipeline',
    description: 'Stored before it is forwarded; re-dispatched if its rank leaves the view; held while the mesh is paused. mode sync (default) waits up to ingressSyncWaitMs for the result, async answers at once with the id (Location: /v1/requests/{id}).',
    body: generateBodySchema,
    responses: {
      200: { description: 'Done: the result', schema: requestViewSchema },
      202: { description: 'Accepted and not finished yet: poll GET /v1/requests/{id}', schema: requestViewSchema },
      400: { description: 'bad-request: the body or its input is invalid' },
      404: { description: 'unknown-pipeline' },
      409: { description: 'idempotency-conflict: the key names a different request' },
      413: { description: 'too-large' },
      429: { description: 'busy: queues full (Retry-After)' },
      502: { description: 'The request failed on its rank' },
      503: { description: 'unavailable: no rank serves now, or the mesh stopped' },
      504: { description: 'The request passed its deadline' },
    },
  },
  {
    method: 'get',
    path: '/v1/requests/:id',
    tag: 'requests',
    summary: 'A request\'s status and result (on the node that accepted it)',
    params: z.object({ id: z.string().describe('The id POST /v1/generate answered') }),
    responses: {
      200: { description: 'The request', schema: requestViewSchema },
      404: { description: 'not-found: no such request on this node' },
    },
  },
];

export function ingressRoutes(ingress: IngressService, options: IngressRouteOptions): Hono {
  return describeRoutes(ingressModule(ingress, options), ingressRouteDocs);
}

function ingressModule(ingress: IngressService, options: IngressRouteOptions): Hono {
  // A token is at most 5 digits and a comma; the rest of the body is small.
  const bodyBytesMax = options.inputTokensMax * 8 + 4096;
  return new Hono()
    .post(
      '/v1/generate',
      bodyLimit({
        maxSize: bodyBytesMax,
        onError: () => {
          throw new ApiError(413, 'too-large', `the body is larger than ${bodyBytesMax} bytes (at most ${options.inputTokensMax} tokens)`);
        },
      }),
      async (c) => {
        let raw: unknown;
        try {
          raw = await c.req.json();
        } catch {
          throw new ApiError(400, 'bad-request', `the body must be JSON: ${bodyShape}`);
        }
        const body = validBody(generateBodySchema, raw, bodyShape);
        let accepted: Accepted;
        try {
          accepted = await ingress.accept(body);
        } catch (err) {
          throw toApiError(err, (s) => c.header('Retry-After', String(s)));
        }
        const { request } = accepted;
        c.header('Location', `/v1/requests/${request.id}`);
        // The mode of this POST decides how it is answered (a repeated key may ask differently).
        if (body.mode === 'async') return c.json(request, finished(request) ? 200 : 202);
        const now = finished(request) ? request : await ingress.wait(request.id, options.syncWaitMs);
        const view = now ?? request;
        return c.json(view, statusOf(view));
      },
    )
    .get('/v1/requests/:id', (c) => {
      const id = c.req.param('id');
      const view = ingress.get(id);
      if (view === undefined) throw new ApiError(404, 'not-found', `no request ${JSON.stringify(id)} on this node (requests are kept by the node that accepted them)`);
      return c.json(view);
    });
}

function finished(view: RequestView): boolean {
  return view.status === 'done' || view.status === 'failed';
}

/** The HTTP status of a request's answer: done 200, unfinished 202, failed by its reason. */
function statusOf(view: RequestView): ContentfulStatusCode {
  if (view.status === 'done') return 200;
  if (view.status !== 'failed') return 202;
  switch (view.error?.code) {
    case 'deadline':
      return 504;
    case 'stopped':
      return 503;
    case 'bad-input':
      return 400;
    default:
      return 502;
  }
}

function toApiError(err: unknown, retryAfter: (seconds: number) => void): unknown {
  if (err instanceof IngressInputError) return new ApiError(400, 'bad-request', err.message);
  if (err instanceof IngressTooLargeError) return new ApiError(413, 'too-large', err.message);
  if (err instanceof UnknownPipelineError) return new ApiError(404, 'unknown-pipeline', err.message);
  if (err instanceof IdempotencyConflictError) return new ApiError(409, 'idempotency-conflict', err.message);
  if (err instanceof IngressBusyError) {
    retryAfter(err.retryAfterS);
    return new ApiError(429, 'busy', err.message);
  }
  if (err instanceof IngressUnavailableError) {
    if (err.retryAfterS !== null) retryAfter(err.retryAfterS);
    return new ApiError(503, 'unavailable', err.message);
  }
  return err;
}
