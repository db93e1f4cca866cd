// GET /v1/view and GET /v1/members: the committed view with its active-rank mask, and every
// peer this node knows with its liveness. Both read the protocol core; neither changes it.
import { Hono } from 'hono';
import type { RawNode, ViewSummary } from '../../mesh/rawnode.ts';
import { ApiError } from './errors.ts';

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

export function meshRoutes(core: RawNode, tickMs: number): Hono {
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
