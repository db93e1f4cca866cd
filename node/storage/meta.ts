// The node_meta row: which PeerId this data directory belongs to and how often it started.
import { eq } from 'drizzle-orm';
import { nodeMeta } from '../../schema/index.ts';
import type { Db } from './database.ts';

export interface StartRecord {
  /** How many times a node has started on this data directory, this start included. */
  starts: number;
  /** The bootId of the previous start, if any. */
  previousBootId: string | undefined;
  /** The PeerId recorded by the previous start, if it differs from this one (key replaced). */
  previousPeerId: string | undefined;
}

/** Records this start (peerId, bootId) and returns what the previous one left. */
export function recordStart(db: Db, peerId: string, bootId: string, nowMs: number): StartRecord {
  return db.transaction((tx) => {
    const row = tx.select().from(nodeMeta).where(eq(nodeMeta.id, 1)).get();
    if (row === undefined) {
      tx.insert(nodeMeta)
        .values({ id: 1, peerId, lastBootId: bootId, starts: 1, firstStartedAtMs: nowMs, lastStartedAtMs: nowMs })
        .run();
      return { starts: 1, previousBootId: undefined, previousPeerId: undefined };
    }
    const starts = row.starts + 1;
    tx.update(nodeMeta).set({ peerId, lastBootId: bootId, starts, lastStartedAtMs: nowMs }).where(eq(nodeMeta.id, 1)).run();
    return {
      starts,
      previousBootId: row.lastBootId,
      previousPeerId: row.peerId === peerId ? undefined : row.peerId,
    };
  });
}

export function readMeta(db: Db): typeof nodeMeta.$inferSelect | undefined {
  return db.select().from(nodeMeta).where(eq(nodeMeta.id, 1)).get();
}
