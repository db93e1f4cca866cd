// GET /v1/status: who this node is, where it listens, whom it is connected to.
import { Hono } from 'hono';
import type { Db } from '../storage/database.ts';
import { readMeta } from '../storage/meta.ts';

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
}

export function statusRoutes(info: NodeInfo, db: Db): Hono {
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
    };
    return c.json(body);
  });
}
