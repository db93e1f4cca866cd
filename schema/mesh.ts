// What the protocol core needs again after a restart, and the history of committed views.
import { integer, primaryKey, sqliteTable, text } from 'drizzle-orm/sqlite-core';

/**
 * One row (id = 1): the core's PersistentState as JSON (generation, last committed view,
 * remembered rank, acceptor promises). Written before any message that depends on it is sent.
 */
export const coreState = sqliteTable('core_state', {
  id: integer('id').primaryKey(),
  meshId: text('mesh_id').notNull(),
  state: text('state', { mode: 'json' }).notNull(),
  updatedAtMs: integer('updated_at_ms').notNull(),
});

/** Every view this node committed or learned, keyed by (generation, epoch). */
export const viewHistory = sqliteTable(
  'view_history',
  {
    meshId: text('mesh_id').notNull(),
    generation: integer('generation').notNull(),
    epoch: integer('epoch').notNull(),
    view: text('view', { mode: 'json' }).notNull(),
    committedAtMs: integer('committed_at_ms').notNull(),
  },
  (t) => [primaryKey({ columns: [t.meshId, t.generation, t.epoch] })],
);
