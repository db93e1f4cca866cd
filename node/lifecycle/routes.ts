// GET /v1/lifecycle/close: where this node stands with the close of its mesh. While the mesh is
// open: { state: 'open' }. After a STOP: 'lingering' with the peers known to hold the closed
// record and those still waited for, then 'exiting' with why (every peer acknowledged, or
// closeLingerMs passed).
import { Hono } from 'hono';
import { z } from 'zod';
import { describeRoutes } from '../api/openapi.ts';
import type { CloseLinger, LingerSettings } from './linger.ts';

/** The documented shape of the body (a test checks real answers against it). */
export const closeBodySchema = z.object({
  state: z.enum(['open', 'lingering', 'exiting']).describe('open: the mesh is not closed; lingering: closed, gossiping the closed record until the peers below hold it; exiting: about to exit 0'),
  generation: z.number().int().nullable().describe('Generation of the closed view (null while open)'),
  epoch: z.number().int().nullable().describe('Epoch of the closed view (null while open)'),
  closedForMs: z.number().nullable().describe('Time since this node learned the close'),
  graceMs: z.number().int().describe('closedGraceMs: the least time a closed node lingers'),
  lingerMaxMs: z.number().int().describe('closeLingerMs: the most time a closed node lingers for peers that do not acknowledge'),
  acknowledged: z.array(z.string()).describe('Peers known to hold the closed record'),
  waitingFor: z.array(z.string()).describe('Peers of the closed generation not yet known to hold it'),
  reason: z.enum(['acknowledged', 'bound']).nullable().describe('Why the node exits: every peer acknowledged, or closeLingerMs passed'),
});

export type CloseBody = z.infer<typeof closeBodySchema>;

export function closeRoutes(linger: Pick<CloseLinger, 'status'>, settings: LingerSettings): Hono {
  return describeRoutes(
    new Hono().get('/v1/lifecycle/close', (c) => c.json(closeBody(linger, settings))),
    [
      {
        method: 'get',
        path: '/v1/lifecycle/close',
        tag: 'lifecycle',
        summary: 'After STOP: which peers hold the closed record and which this node still waits for before it exits 0',
        responses: { 200: { description: 'This node\'s close', schema: closeBodySchema } },
      },
    ],
  );
}

function closeBody(linger: Pick<CloseLinger, 'status'>, settings: LingerSettings): CloseBody {
  const status = linger.status();
  const bounds = { graceMs: settings.graceMs, lingerMaxMs: settings.lingerMaxMs };
  if (status.code === 'open') return { state: 'open', generation: null, epoch: null, closedForMs: null, ...bounds, acknowledged: [], waitingFor: [], reason: null };
  return {
    state: status.code,
    generation: status.generation,
    epoch: status.epoch,
    closedForMs: status.closedForMs,
    ...bounds,
    acknowledged: [...status.acknowledged],
    waitingFor: [...status.waitingFor],
    reason: status.reason,
  };
}
