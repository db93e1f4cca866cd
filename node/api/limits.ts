// Request limits in front of every route: a cap on body size for every request, and a token
// bucket per client address on requests that may change state (429 with Retry-After). They
// run before the token check, so guessing tokens is rate-limited too.
import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { ApiError } from './errors.ts';

export interface RequestLimits {
  /** Largest request body, in bytes; larger ones are answered 413 before any route reads them. */
  bodyBytesMax: number;
  /** Mutating requests one client may make per second, sustained. */
  mutationsPerSecond: number;
  /** Mutating requests one client may make at once before the rate applies. */
  mutationBurst: number;
}

export const requestLimitDefaults: RequestLimits = { bodyBytesMax: 1024 * 1024, mutationsPerSecond: 1000, mutationBurst: 2000 };

const readOnlyMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Both limits as one middleware list, in the order they must run. */
export function requestLimits(limits: RequestLimits, nowMs: () => number = () => performance.now()): MiddlewareHandler[] {
  // The rate comes first, so a flood of oversized bodies is limited like any other flood.
  return [limitMutationRate(new TokenBuckets(limits.mutationsPerSecond, limits.mutationBurst), nowMs), limitBodySize(limits.bodyBytesMax)];
}

export function limitBodySize(bytesMax: number): MiddlewareHandler {
  return bodyLimit({
    maxSize: bytesMax,
    onError: () => {
      throw new ApiError(413, 'too-large', `request body larger than ${bytesMax} bytes`);
    },
  });
}

export function limitMutationRate(buckets: TokenBuckets, nowMs: () => number): MiddlewareHandler {
  return async (c, next) => {
    if (readOnlyMethods.has(c.req.method)) return next();
    const waitMs = buckets.take(clientOf(c), nowMs());
    if (waitMs > 0) {
      c.header('Retry-After', String(Math.max(1, Math.ceil(waitMs / 1000))));
      throw new ApiError(429, 'rate-limited', `too many requests from this client; retry in ${Math.ceil(waitMs)} ms`);
    }
    return next();
  };
}

/**
 * One token bucket per client: `burst` tokens, refilled at `perSecond`. Clients kept are
 * bounded; beyond the bound the least recently seen is forgotten (it starts full again, which
 * costs at most one burst).
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; atMs: number }>();

  constructor(
    readonly perSecond: number,
    readonly burst: number,
    readonly clientsMax = 10_000,
  ) {
    if (!(perSecond > 0) || !(burst >= 1)) throw new RangeError(`rate limit needs perSecond > 0 and burst >= 1, got ${perSecond} and ${burst}`);
  }

  /** Takes one token for `client`; returns 0 when taken, else how many ms until one is due. */
  take(client: string, nowMs: number): number {
    const held = this.buckets.get(client);
    const elapsedMs = held === undefined ? 0 : Math.max(0, nowMs - held.atMs);
    const tokens = held === undefined ? this.burst : Math.min(this.burst, held.tokens + (elapsedMs * this.perSecond) / 1000);
    this.buckets.delete(client);
    if (tokens >= 1) {
      this.buckets.set(client, { tokens: tokens - 1, atMs: nowMs });
      if (this.buckets.size > this.clientsMax) this.buckets.delete(this.buckets.keys().next().value as string);
      return 0;
    }
    this.buckets.set(client, { tokens, atMs: nowMs });
    return ((1 - tokens) * 1000) / this.perSecond;
  }
}

/** The client's address as Bun's server saw it; one key for requests made in-process (app.request). */
function clientOf(c: Context): string {
  const server = c.env as { requestIP?: (req: Request) => { address: string } | null } | undefined;
  if (typeof server?.requestIP !== 'function') return 'in-process';
  return server.requestIP(c.req.raw)?.address ?? 'unknown';
}
