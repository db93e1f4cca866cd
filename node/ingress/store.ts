// Durable records of the requests this node accepted. Writes are synchronous SQLite
// statements: when accept() returns the request is on disk, and only then is it forwarded.
import { and, asc, count, eq, inArray, isNotNull, lte } from 'drizzle-orm';
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

export class IngressStore {
  private sincePrune = 0;

  constructor(
    private readonly db: Db,
    /** Finished rows kept at most; the oldest finished are deleted first. */
    private readonly finishedKeptMax: number,
  ) {}

  insert(req: NewRequest): StoredRequest {
    const row = { ...req, input: [...req.input], status: 'queued' as const, attempts: 0 };
    this.db.insert(ingressRequests).values(row).run();
    return { ...row, output: null, rank: null, epoch: null, errorCode: null, errorMessage: null, finishedAtMs: null };
  }

  /** Records how a request ended; a request already finished keeps its first outcome. */
  finish(id: string, outcome: Outcome, attempts: number, finishedAtMs: number): void {
    const set =
      outcome.status === 'done'
        ? { status: 'done', output: [...outcome.output], rank: outcome.rank, epoch: outcome.epoch, attempts, finishedAtMs }
        : { status: 'failed', errorCode: outcome.errorCode, errorMessage: outcome.errorMessage, attempts, finishedAtMs };
    this.db.update(ingressRequests).set(set).where(and(eq(ingressRequests.id, id), eq(ingressRequests.status, 'queued'))).run();
    // Pruning scans an index; doing it every so many finishes keeps its cost per request small.
    if (++this.sincePrune >= 256) {
      this.sincePrune = 0;
      this.prune();
    }
  }

  get(id: string): StoredRequest | undefined {
    const row = this.db.select().from(ingressRequests).where(eq(ingressRequests.id, id)).get();
    return row === undefined ? undefined : toStored(row);
  }

  byIdempotencyKey(key: string): StoredRequest | undefined {
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
