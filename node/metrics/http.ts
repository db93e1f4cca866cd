// HTTP request metrics: a Hono middleware that counts every answered request by method, route
// and status and observes its latency. The route label is the registered pattern
// (`/v1/requests/:id`), never the raw path, so the number of series stays bounded; requests
// no route matched are counted under `unmatched`.
import type { MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import type { NodeMetrics } from './metrics.ts';

export function httpMetrics(metrics: NodeMetrics): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now();
    metrics.httpInFlight.inc();
    try {
      await next();
    } finally {
      metrics.httpInFlight.dec();
      // Middleware is registered with method ALL; the last route with a real method answered.
      const route = matchedRoutes(c).findLast((r) => r.method !== 'ALL')?.path ?? 'unmatched';
      const method = c.req.method;
      metrics.httpAnswered += 1;
      metrics.httpRequests.inc({ method, route, status: String(c.res.status) });
      metrics.httpDuration.observe({ method, route }, (performance.now() - started) / 1000);
    }
  };
}
