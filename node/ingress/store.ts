// Durable records of the requests this node accepted. Writes are group-committed: every
// insert and finish asked for in one turn of the event loop goes into one transaction at the
// end of that turn, and each write's promise resolves once its transaction is committed —
// the ingress forwards a request only after its insert resolved. One commit per turn instead
// of one per write is what lets a busy node store every request (a commit costs ~0.2-0.4 ms,
// a row in a shared commit ~0.02 ms).
//
// Durability: the store's own connection to the node's database runs with
// synchronous=NORMAL (WAL). A committed request survives a crash or restart of the node
// process — what "store before forward" is for — but not necessarily a power loss of the
// host; that costs an fsync per write (about 2-10 ms each on this kind of host) for every
// request. The protocol core's connection keeps synchronous=FULL.
import { Database } from 'bun:sqlite';
import { and, asc, count, eq, inArray, isNotNull, lte, sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/bun-sqlite';
import * as schema from '../../schema/index.ts';
import { ingressRequests } from '../../schema/index.ts';
import type { Db } from '../storage/database.ts';

export type RequestMode = 'sync' | 'async';
export type StoredStatus = 'queued' | 'done' | 'failed';

/** A request as stored. */
export interface StoredRequest {
  readonly id: string;
  readonly idempotencyKey: string | null;
  readonly pipeline: string;
  readonly input: readonly number[];
  readonly mode: RequestMode;
  readonly status: StoredStatus;
  readonly output: readonly number[] | null;
  readonly rank: number | null;
  readonly epoch: number | null;
  readonly errorCode: string | null;
  readonly errorMessage: string | null;
  readonly attempts: number;
  readonly acceptedAtMs: number;
  readonly finishedAtMs: number | null;
}

export type NewRequest = Pick<StoredRequest, 'id' | 'idempotencyKey' | 'pipeline' | 'input' | 'mode' | 'acceptedAtMs'>;

export type Outcome =
  | { readonly status: 'done'; readonly output: readonly number[]; readonly rank: number; readonly epoch: number }
  | { readonly status: 'failed'; readonly errorCode: string; readonly errorMessage: string };

/** A group commit failed (e.g. the disk is full): none of its writes is stored. */
export class IngressStoreError extends Error {
  override readonly name = 'IngressStoreError';
}

export class IngressStore {
  private sincePrune = 0;
  private open = true;
  /** Writes of the current turn, committed together by flush(). */
  private writes: (() => void)[] = [];
  private batch: PromiseWithResolvers<void> | null = null;
  /** Idempotency keys inserted but not yet committed (a second use in the same turn must find them). */
  private readonly pendingKeys = new Map<string, StoredRequest>();
  // The hot path (one insert and one update per request) runs prepared statements.
  private readonly insertStatement;
  private readonly finishStatement;
  private readonly getStatement;

  /**
   * Over an open database (tests); close() then leaves it open. The runtime uses
   * IngressStore.open, which owns its connection.
   */
  constructor(
    private readonly db: Db,
    /** Finished rows kept at most; the oldest finished are deleted first. */
    private readonly finishedKeptMax: number,
    private readonly owned: Database | null = null,
  ) {
    const p = (name: string) => sql.placeholder(name);
    this.insertStatement = db
      .insert(ingressRequests)
      .values({ id: p('id'), idempotencyKey: p('idempotencyKey'), pipeline: p('pipeline'), input: p('input'), mode: p('mode'), status: 'queued', attempts: 0, acceptedAtMs: p('acceptedAtMs') })
      .prepare();
    this.finishStatement = db
      .update(ingressRequests)
      .set({
        status: sql`${p('status')}`,
        output: sql`${p('output')}`,
        rank: sql`${p('rank')}`,
        epoch: sql`${p('epoch')}`,
        errorCode: sql`${p('errorCode')}`,
        errorMessage: sql`${p('errorMessage')}`,
        attempts: sql`${p('attempts')}`,
        finishedAtMs: sql`${p('finishedAtMs')}`,
      })
      .where(and(eq(ingressRequests.id, p('id')), eq(ingressRequests.status, 'queued')))
      .prepare();
    this.getStatement = db.select().from(ingressRequests).where(eq(ingressRequests.id, p('id'))).prepare();
  }

  /** Opens its own connection to the node's database file (migrated already) with synchronous=NORMAL. */
  static open(path: string, finishedKeptMax: number): IngressStore {
    const sqlite = new Database(path);
    try {
      sqlite.run('PRAGMA journal_mode = WAL');
      sqlite.run('PRAGMA synchronous = NORMAL');
      // The core's connection may be writing at the same moment only between two of our
      // statements (one thread), but a checkpoint can hold the lock briefly.
      sqlite.run('PRAGMA busy_timeout = 1000');
    } catch (err) {
      sqlite.close();
      throw err;
    }
    return new IngressStore(drizzle({ client: sqlite, schema }), finishedKeptMax, sqlite);
  }

  /** Commits what is pending, then closes the connection if this store opened it. Idempotent. */
  close(): void {
    if (!this.open) return;
    this.flush();
    this.open = false;
    this.owned?.close();
  }

  /** Stores a new request (status queued); resolves once committed, rejects with IngressStoreError. */
  insert(req: NewRequest): Promise<void> {
    const row: StoredRequest = { ...req, input: [...req.input], status: 'queued', attempts: 0, output: null, rank: null, epoch: null, errorCode: null, errorMessage: null, finishedAtMs: null };
    const key = req.idempotencyKey;
    if (key !== null) this.pendingKeys.set(key, row);
    const committed = this.write(() =>
      this.insertStatement.run({ id: req.id, idempotencyKey: key, pipeline: req.pipeline, input: row.input, mode: req.mode, acceptedAtMs: req.acceptedAtMs }),
    );
    if (key !== null) {
      const forget = (): void => {
        if (this.pendingKeys.get(key) === row) this.pendingKeys.delete(key);
      };
      committed.then(forget, forget);
    }
    return committed;
  }

  /**
   * Records how a request ended; a request already finished keeps its first outcome.
   * Resolves once committed.
   */
  finish(id: string, outcome: Outcome, attempts: number, finishedAtMs: number): Promise<void> {
    return this.write(() => this.finishNow(id, outcome, attempts, finishedAtMs));
  }

  /** Commits the writes of this turn now (normally done at the end of the turn). */
  flush(): void {
    const batch = this.batch;
    if (batch === null) return;
    const writes = this.writes;
    this.writes = [];
    this.batch = null;
    if (!this.open) return batch.reject(new IngressStoreError('the ingress store is closed'));
    try {
      this.db.transaction(() => {
        for (const w of writes) w();
      });
      batch.resolve();
    } catch (err) {
      batch.reject(new IngressStoreError(`storing ${writes.length} ingress writes failed: ${(err as Error).message}`));
    }
  }

  private write(op: () => void): Promise<void> {
    if (!this.open) return Promise.reject(new IngressStoreError('the ingress store is closed'));
    this.writes.push(op);
    if (this.batch === null) {
      this.batch = Promise.withResolvers<void>();
      // Unobserved rejections are the callers' to see; the batch itself must not crash the process.
      this.batch.promise.catch(() => {});
      setImmediate(() => this.flush());
    }
    return this.batch.promise;
  }

  private finishNow(id: string, outcome: Outcome, attempts: number, finishedAtMs: number): void {
    const done = outcome.status === 'done';
    this.finishStatement.run({
      id,
      status: outcome.status,
      output: done ? JSON.stringify(outcome.output) : null,
      rank: done ? outcome.rank : null,
      epoch: done ? outcome.epoch : null,
      errorCode: done ? null : outcome.errorCode,
      errorMessage: done ? null : outcome.errorMessage,
      attempts,
      finishedAtMs,
    });
    // Pruning scans an index; doing it every so many finishes keeps its cost per request small.
    if (++this.sincePrune >= 256) {
      this.sincePrune = 0;
      this.prune();
    }
  }

  get(id: string): StoredRequest | undefined {
    const row = this.getStatement.get({ id });
    return row === undefined ? undefined : toStored(row);
  }

  byIdempotencyKey(key: string): StoredRequest | undefined {
    const pending = this.pendingKeys.get(key);
    if (pending !== undefined) return pending;
    const row = this.db.select().from(ingressRequests).where(eq(ingressRequests.idempotencyKey, key)).get();
    return row === undefined ? undefined : toStored(row);
  }

  /** Accepted and not finished, oldest first: what a restarted node dispatches again. */
  unfinished(): StoredRequest[] {
    return this.db
      .select()
      .from(ingressRequests)
      .where(eq(ingressRequests.status, 'queued'))
      .orderBy(asc(ingressRequests.acceptedAtMs), asc(ingressRequests.id))
      .all()
      .map(toStored);
  }

  /** Deletes the oldest finished rows beyond finishedKeptMax; returns how many. */
  prune(): number {
    const finished = this.db.select({ n: count() }).from(ingressRequests).where(isNotNull(ingressRequests.finishedAtMs)).get()?.n ?? 0;
    const excess = finished - this.finishedKeptMax;
    if (excess <= 0) return 0;
    const oldest = this.db
      .select({ id: ingressRequests.id, at: ingressRequests.finishedAtMs })
      .from(ingressRequests)
      .where(isNotNull(ingressRequests.finishedAtMs))
      .orderBy(asc(ingressRequests.finishedAtMs))
      .limit(excess)
      .all();
    const last = oldest.at(-1)?.at;
    if (last === undefined || last === null) return 0;
    const ids = oldest.map((r) => r.id);
    for (let i = 0; i < ids.length; i += 500) {
      this.db.delete(ingressRequests).where(and(inArray(ingressRequests.id, ids.slice(i, i + 500)), lte(ingressRequests.finishedAtMs, last))).run();
    }
    return ids.length;
  }
}

function toStored(row: typeof ingressRequests.$inferSelect): StoredRequest {
  return {
    id: row.id,
    idempotencyKey: row.idempotencyKey,
    pipeline: row.pipeline,
    input: row.input,
    mode: row.mode === 'async' ? 'async' : 'sync',
    status: row.status === 'done' || row.status === 'failed' ? row.status : 'queued',
    output: row.output ?? null,
    rank: row.rank,
    epoch: row.epoch,
    errorCode: row.errorCode,
    errorMessage: row.errorMessage,
    attempts: row.attempts,
    acceptedAtMs: row.acceptedAtMs,
    finishedAtMs: row.finishedAtMs,
  };
}
