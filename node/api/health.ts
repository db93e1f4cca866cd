// GET /healthz: answers 200 while the process serves HTTP; for load balancers and scripts.
import { Hono } from 'hono';

export function healthRoutes(): Hono {
  return new Hono().get('/healthz', (c) => c.json({ ok: true }));
}
