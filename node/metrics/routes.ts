// GET /metrics: the node's Prometheus exposition (text format 0.0.4), for a scraper.
import { Hono } from 'hono';
import { describeRoutes } from '../api/openapi.ts';
import type { NodeMetrics } from './metrics.ts';

export function metricsRoutes(metrics: NodeMetrics): Hono {
  const module = new Hono().get('/metrics', async (c) => c.body(await metrics.render(), 200, { 'Content-Type': metrics.contentType }));
  return describeRoutes(module, [
    {
      method: 'get',
      path: '/metrics',
      tag: 'node',
      summary: 'Prometheus metrics of this node',
      description:
        'View changes, suspicions, gossip in/out, rejected messages by reason, lifecycle transition and barrier latencies, HTTP request rates and latencies, queue depths, engine iteration time and collective bytes and latency.',
      responses: { 200: { description: 'Prometheus text exposition format 0.0.4', contentType: 'text/plain' } },
    },
  ]);
}
