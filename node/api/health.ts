// GET /healthz: answers 200 while the process serves HTTP; for load balancers and scripts.
import { Hono } from 'hono';
import { z } from 'zod';
import { describeRoutes } from './openapi.ts';

export function healthRoutes(): Hono {
  return describeRoutes(new Hono().get('/healthz', (c) => c.json({ ok: true })), [
    {
      method: 'get',
      path: '/healthz',
      tag: 'node',
      summary: 'Liveness: 200 while the process serves HTTP',
      responses: { 200: { description: 'The node serves HTTP', schema: z.object({ ok: z.literal(true) }) } },
    },
  ]);
}
