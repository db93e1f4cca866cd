// GET /v1/view and GET /v1/members: the committed view with its active-rank mask, and every
// peer this node knows with its liveness. Both read the protocol core; neither changes it.
import { Hono } from 'hono';
import type { RawNode } from '../../mesh/rawnode.ts';
import { activeMask } from '../../mesh/view.ts';
import { ApiError } from './errors.ts';

export interface ViewBody {
  meshId: string;
  generation: number;
  epoch: number;
  worldSize: number;
  /** Active-rank bitset as hex, bit r = rank r. */
  mask: string;
  ranks: { rank: number; peerId: string | null; bootId: string | null; active: boolean }[];
  spares: { peerId: string; bootId: string; ready: boolean }[];
  closed: boolean;
}

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
      const view = core.view();
      if (view === null) {
        throw new ApiError(
          503,
          'no-view',
          `no view yet: generation ${core.generationNumber()} forms when ${core.config.worldSize} nodes are present`,
        );
      }
      const mask = activeMask(view);
      const ready = new Map(core.members().map((m) => [`${m.peerId}/${m.bootId}`, m.ready]));
      const body: ViewBody = {
        meshId: view.meshId,
        generation: view.generation,
        epoch: view.epoch,
        worldSize: view.worldSize,
        mask: mask.toHex(),
        ranks: view.ranks.map((holder, rank) => ({
          rank,
          peerId: holder?.peerId ?? null,
          bootId: holder?.bootId ?? null,
          active: mask.has(rank),
        })),
        spares: view.spares.map((s) => ({ peerId: s.peerId, bootId: s.bootId, ready: ready.get(`${s.peerId}/${s.bootId}`) ?? false })),
        closed: view.closed,
      };
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
