// Requests accepted at this node's edge (POST /v1/generate). A row is written before the
// request is forwarded to any rank, so a restarted node finds its unfinished requests here
// and dispatches them again; finished rows keep the result for GET /v1/requests/:id.
import { index, integer, sqliteTable, text } from 'drizzle-orm/sqlite-core';

export const ingressRequests = sqliteTable(
  'ingress_requests',
  {
    id: text('id').primaryKey(),
    /** The client's idempotency key: a second POST with it gets this request back. */
    idempotencyKey: text('idempotency_key').unique(),
    pipeline: text('pipeline').notNull(),
    /** Input tokens, as a JSON array. */
    input: text('input', { mode: 'json' }).$type<number[]>().notNull(),
    /** 'sync' | 'async': how the client asked to be answered. */
    mode: text('mode').notNull(),
    /** 'queued' until it finishes, then 'done' or 'failed'. */
    status: text('status').notNull(),
    output: text('output', { mode: 'json' }).$type<number[]>(),
    /** Mesh rank and epoch that produced the output. */
    rank: integer('rank'),
    epoch: integer('epoch'),
    /** Why a failed request failed: a code (deadline, stopped, bad-input, rank-failed) and a sentence. */
    errorCode: text('error_code'),
    errorMessage: text('error_message'),
    /** Forwards sent for it (re-dispatches and re-sends included). */
    attempts: integer('attempts').notNull(),
    acceptedAtMs: integer('accepted_at_ms').notNull(),
    finishedAtMs: integer('finished_at_ms'),
  },
  (t) => [index('ingress_requests_status').on(t.status), index('ingress_requests_finished').on(t.finishedAtMs)],
);
