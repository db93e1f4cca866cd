// What one host remembers about itself across restarts: its PeerId and its incarnations.
import { integer, sqliteTable, text } from 'drizzle-orm/sqlite-core';

/** One row (id = 1): the node's identity and a count of its starts. */
export const nodeMeta = sqliteTable('node_meta', {
  id: integer('id').primaryKey(),
  peerId: text('peer_id').notNull(),
  /** The bootId of the latest start; a new one is drawn every start. */
  lastBootId: text('last_boot_id').notNull(),
  starts: integer('starts').notNull(),
  firstStartedAtMs: integer('first_started_at_ms').notNull(),
  lastStartedAtMs: integer('last_started_at_ms').notNull(),
});
