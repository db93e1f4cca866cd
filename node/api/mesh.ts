// GET /v1/view and GET /v1/members: the committed view with its active-rank mask, and every
// peer this node knows with its liveness. Both read the protocol core; neither changes it.
import { Hono } from 'hono';
import { z } from 'zod';
import type { RawNode, ViewSummary } from '../../mesh/rawnode.ts';
import { ApiError } from './errors.ts';
import { describeRoutes } from './openapi.ts';

/** The committed view as the core summarises it, plus the mesh's name. */
export type ViewBody = ViewSummary & { meshId: string };

export interface MemberBody {
  peerId: string;
  bootId: string;
  role: string;
  liveness: string;
  ready: boolean;
  /** Milliseconds since this node last heard the peer. */
  lastHeardAgoMs: number;
  /** Rank the peer's incarnation holds in the committed view, -1 if none. */
  rank: number;
}

/** The documented shape of ViewBody (a test checks real answers against it). */
export const viewBodySchema = z.looseObject({
  meshId: z.string(),
  generation: z.number().int().describe('Cold starts of the whole mesh'),
  epoch: z.number().int().describe('Committed views within the generation'),
  worldSize: z.number().int(),
  mask: z.string().describe('Active-rank bitset as hex, bit r = rank r'),
  ranks: z.array(z.object({ rank: z.number().int(), peerId: z.string().nullable(), bootId: z.string().nullable(), active: z.boolean() })),
  spares: z.array(z.object({ peerId: z.string(), bootId: z.string(), ready: z.boolean() })),
  closed: z.boolean(),
});

export const membersBodySchema = z.object({
  members: z.array(
    z.looseObject({
      peerId: z.string(),
      bootId: z.string(),
      role: z.string().describe('member, spare, outsider or forming'),
      liveness: z.string().describe('alive, suspected or reported'),
      ready: z.boolean(),
      lastHeardAgoMs: z.number(),
      rank: z.number().int().describe('Rank the peer\'s incarnation holds in the committed view, -1 if none'),
    }),
  ),
});

export function meshRoutes(core: RawNode, tickMs: number): Hono {
  return describeRoutes(meshModule(core, tickMs), [
    {
      method: 'get',
      path: '/v1/view',
      tag: 'mesh',
      summary: 'The committed view with its active-rank mask',
      responses: {
        200: { description: 'The view', schema: viewBodySchema },
        503: { description: 'no-view: the first view is still forming' },
      },
    },
    {
      method: 'get',
      path: '/v1/members',
      tag: 'mesh',
      summary: 'Every peer this node has heard, with its liveness and rank',
      responses: { 200: { description: 'The peers (not this node)', schema: membersBodySchema } },
    },
  ]);
}

function meshModule(core: RawNode, tickMs: number): Hono {
  return new Hono()
    .get('/v1/view', (c) => {
      const summary = core.summary();
      if (summary === null) {
        throw new ApiError(
          503,
          'no-view',
          `no view yet: generation ${core.generationNumber()} forms when ${core.config.worldSize} nodes are present`,
        );
      }
      const body: ViewBody = { meshId: core.config.meshId, ...summary };
      return c.json(body);
    })
    .get('/v1/members', (c) => {
      const view = core.view();
      const now = core.currentTick();
      const body: MemberBody[] = core.members().map((m) => ({
        peerId: m.peerId,
        bootId: m.bootId,
        role: m.role,
        liveness: m.liveness,
        ready: m.ready,
        lastHeardAgoMs: Math.max(0, now - m.lastHeardTick) * tickMs,
        rank: view === null ? -1 : view.ranks.findIndex((h) => h?.peerId === m.peerId && h.bootId === m.bootId),
      }));
      return c.json({ members: body });
    });
}
