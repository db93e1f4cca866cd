// Diagnostics: POST /v1/debug/gossip-probe publishes one small gossip message (token
// required); GET /v1/debug/gossip-probe/:id shows when it reached this node. The one-message
// time is the baseline the lifecycle benchmark compares its transitions with.
import { Hono } from 'hono';
import { z } from 'zod';
import type { GossipProbe } from '../p2p/gossip-probe.ts';
import { ApiError } from './errors.ts';
import { describeRoutes } from './openapi.ts';

export function debugRoutes(probe: GossipProbe): Hono {
  return describeRoutes(debugModule(probe), [
    {
      method: 'post',
      path: '/v1/debug/gossip-probe',
      tag: 'debug',
      summary: 'Publishes one small gossip message (the baseline of the lifecycle benchmark)',
      responses: { 200: { description: 'The probe\'s id and when it was sent', schema: z.object({ id: z.string(), sentAtMs: z.number() }) } },
    },
    {
      method: 'get',
      path: '/v1/debug/gossip-probe/:id',
      tag: 'debug',
      summary: 'When a gossip probe reached this node',
      params: z.object({ id: z.string() }),
      responses: { 200: { description: 'The receipt' }, 404: { description: 'not-found: the probe has not reached this node (or was forgotten)' } },
    },
  ]);
}

function debugModule(probe: GossipProbe): Hono {
  return new Hono()
    .post('/v1/debug/gossip-probe', async (c) => c.json(await probe.send()))
    .get('/v1/debug/gossip-probe/:id', (c) => {
      const receipt = probe.receipt(c.req.param('id'));
      if (receipt === undefined) throw new ApiError(404, 'not-found', `no gossip probe ${c.req.param('id')} has reached this node (or it was forgotten)`);
      return c.json(receipt);
    });
}
