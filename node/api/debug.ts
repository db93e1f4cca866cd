// Diagnostics: POST /v1/debug/gossip-probe publishes one small gossip message (token
// required); GET /v1/debug/gossip-probe/:id shows when it reached this node. The one-message
// time is the baseline the lifecycle benchmark compares its transitions with.
import { Hono } from 'hono';
import type { GossipProbe } from '../p2p/gossip-probe.ts';
import { ApiError } from './errors.ts';

export function debugRoutes(probe: GossipProbe): Hono {
  return new Hono()
    .post('/v1/debug/gossip-probe', async (c) => c.json(await probe.send()))
    .get('/v1/debug/gossip-probe/:id', (c) => {
      const receipt = probe.receipt(c.req.param('id'));
      if (receipt === undefined) throw new ApiError(404, 'not-found', `no gossip probe ${c.req.param('id')} has reached this node (or it was forgotten)`);
      return c.json(receipt);
    });
}
