// Demand records this node knows (opened here or heard by gossip), so a restarted node
// still plans with them. Each row holds the merged record; merges only ever grow it.
import { integer, primaryKey, sqliteTable, text } from 'drizzle-orm/sqlite-core';

/** One row per (mesh, record id): the record as JSON (mesh/demand.ts DemandRecord). */
export const demandRecords = sqliteTable(
  'demand_records',
  {
    meshId: text('mesh_id').notNull(),
    id: text('id').notNull(),
    pipeline: text('pipeline').notNull(),
    record: text('record', { mode: 'json' }).notNull(),
    closed: integer('closed', { mode: 'boolean' }).notNull(),
    /** When this node first stored the record (ms since the epoch). */
    createdAtMs: integer('created_at_ms').notNull(),
    updatedAtMs: integer('updated_at_ms').notNull(),
  },
  (t) => [primaryKey({ columns: [t.meshId, t.id] })],
);
