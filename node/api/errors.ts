// HTTP errors are values with a status: routes throw ApiError (Hono's HTTPException) and one
// handler turns every error into the same JSON shape, { error: { code, message, ...details } }.
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Logger } from 'pino';

export class ApiError extends HTTPException {
  constructor(
    status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    /** Extra fields for the error body (e.g. the lifecycle state and the commands allowed in it). */
    readonly details: Record<string, unknown> = {},
  ) {
    super(status, { message });
  }
}

export function errorHandler(log: Logger) {
  return (err: Error, c: Context): Response => {
    if (err instanceof ApiError) return c.json({ error: { ...err.details, code: err.code, message: err.message } }, err.status as ContentfulStatusCode);
    if (err instanceof HTTPException) return c.json({ error: { code: 'http', message: err.message } }, err.status as ContentfulStatusCode);
    log.error({ err, path: c.req.path }, 'unhandled error in HTTP route');
    return c.json({ error: { code: 'internal', message: 'internal error' } }, 500);
  };
}

export function notFound(c: Context): Response {
  return c.json({ error: { code: 'not-found', message: `no route ${c.req.method} ${c.req.path}` } }, 404);
}
