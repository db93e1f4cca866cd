// HTTP errors are values with a status: routes throw ApiError (Hono's HTTPException) and one
// handler turns every error into the same JSON shape, { error: { code, message, ...details } }.
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Logger } from 'pino';
import type { z } from 'zod';

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

/**
 * `body` checked against `schema`, or a 400 naming the first problem as `where: message`
 * (`expected`, when given, is added as a hint of the body's shape). Nothing is stored before.
 */
export function validBody<T extends z.ZodType>(schema: T, body: unknown, expected?: string): z.output<T> {
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const where = issue.path.length === 0 ? 'body' : issue.path.join('.');
  throw new ApiError(400, 'bad-request', `${where}: ${issue.message}${expected === undefined ? '' : ` (expected ${expected})`}`);
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
