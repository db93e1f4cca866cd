// GET /v1/status: who this node is, where it listens, whom it is connected to, and where it
// stands on its way to serving a rank (a joiner's phase and warm-up progress).
import { Hono } from 'hono';
import { z } from 'zod';
import type { Db } from '../storage/database.ts';
import { readMeta } from '../storage/meta.ts';
import { describeRoutes } from './openapi.ts';

/** What the status route reads from the running node. */
export interface NodeInfo {
  peerId: string;
  bootId: string;
  meshId: string;
  worldSize: number;
  version: string;
  startedAtMs: number;
  addresses(): string[];
  connectedPeers(): string[];
  /** The rank side's join phase and warm-up progress; absent on a gateway (no rank side). */
  join?: () => JoinInfo;
}

/** A node's way to serving: phase (cold, warming, ready, spare, joining, serving, closed, failed) and warm-up progress. */
export interface JoinInfo {
  phase: string;
  /** The mesh rank held in the committed view, or null. */
  rank: number | null;
  warmUp: { phase: string; fraction: number };
}

export interface StatusBody {
  peerId: string;
  bootId: string;
  meshId: string;
  worldSize: number;
  version: string;
  uptimeMs: number;
  /** How many times a node has started on this data directory. */
  starts: number;
  addresses: string[];
  connectedPeers: string[];
  /** Null on a gateway. */
  join: JoinInfo | null;
}

/** The documented shape of StatusBody (a test checks real answers against it). */
export const statusBodySchema = z.looseObject({
  peerId: z.string(),
  bootId: z.string(),
  meshId: z.string(),
  worldSize: z.number().int(),
  version: z.string(),
  uptimeMs: z.number(),
  starts: z.number().int().describe('How many times a node has started on this data directory'),
  addresses: z.array(z.string()).describe('libp2p listen multiaddrs'),
  connectedPeers: z.array(z.string()),
  join: z
    .object({
      phase: z.string().describe('cold, warming, ready (waiting for admission), spare, joining (admitted, building the epoch), serving, closed or failed'),
      rank: z.number().int().nullable(),
      warmUp: z.object({ phase: z.string(), fraction: z.number().min(0).max(1) }),
    })
    .nullable()
    .describe("The node's way to serving a rank; null on a gateway"),
});

export function statusRoutes(info: NodeInfo, db: Db): Hono {
  return describeRoutes(statusModule(info, db), [
    {
      method: 'get',
      path: '/v1/status',
      tag: 'node',
      summary: 'Who this node is, where it listens, whom it is connected to',
      responses: { 200: { description: 'This node', schema: statusBodySchema } },
    },
  ]);
}

function statusModule(info: NodeInfo, db: Db): Hono {
  return new Hono().get('/v1/status', (c) => {
    const body: StatusBody = {
      peerId: info.peerId,
      bootId: info.bootId,
      meshId: info.meshId,
      worldSize: info.worldSize,
      version: info.version,
      uptimeMs: Date.now() - info.startedAtMs,
      starts: readMeta(db)?.starts ?? 0,
      addresses: info.addresses(),
      connectedPeers: info.connectedPeers(),
      join: info.join?.() ?? null,
    };
    return c.json(body);
  });
}
