// Bearer-token guard for mutating routes. The comparison runs over SHA-256 digests of equal
// length with timingSafeEqual, so its time does not depend on how much of a guess is right.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import { ApiError } from './errors.ts';

const readOnlyMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Requires `Authorization: Bearer <token>` on every request that may change state. */
export function requireTokenForMutations(token: string): MiddlewareHandler {
  const expected = digest(token);
  return async (c, next) => {
    if (readOnlyMethods.has(c.req.method)) return next();
    const header = c.req.header('authorization') ?? '';
    const match = /^Bearer\s+(.+)$/i.exec(header);
    if (match === null) throw new ApiError(401, 'unauthorized', 'missing bearer token');
    if (!timingSafeEqual(digest(match[1]!.trim()), expected)) throw new ApiError(401, 'unauthorized', 'wrong bearer token');
    return next();
  };
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
