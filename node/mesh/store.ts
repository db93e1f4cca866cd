// Durable state of the protocol core: its PersistentState (one row) and the history of the
// views it committed. Writes are synchronous SQLite transactions, so when save() returns the
// state is on disk and the driver may send the messages that depend on it.
import { and, asc, eq } from 'drizzle-orm';
import type { PersistentState, View } from '../../mesh/rawnode.ts';
import { coreState, viewHistory } from '../../schema/index.ts';
import type { Db } from '../storage/database.ts';

export class CoreStore {
  constructor(
    private readonly db: Db,
    private readonly meshId: string,
  ) {}

  /** The state saved by the last run on this data directory, if it was for this mesh. */
  load(): PersistentState | undefined {
    const row = this.db.select().from(coreState).where(eq(coreState.id, 1)).get();
    if (row === undefined || row.meshId !== this.meshId) return undefined;
    return row.state as PersistentState;
  }

  /** The mesh a previous run on this directory belonged to, if any. */
  storedMeshId(): string | undefined {
    return this.db.select({ meshId: coreState.meshId }).from(coreState).where(eq(coreState.id, 1)).get()?.meshId;
  }

  save(state: PersistentState, nowMs: number): void {
    this.db
      .insert(coreState)
      .values({ id: 1, meshId: this.meshId, state, updatedAtMs: nowMs })
      .onConflictDoUpdate({ target: coreState.id, set: { meshId: this.meshId, state, updatedAtMs: nowMs } })
      .run();
  }

  /** Records a committed view; a view already recorded for its (generation, epoch) is kept. */
  recordView(view: View, nowMs: number): void {
    this.db
      .insert(viewHistory)
      .values({ meshId: this.meshId, generation: view.generation, epoch: view.epoch, view, committedAtMs: nowMs })
      .onConflictDoNothing()
      .run();
  }

  /** Views of this mesh in (generation, epoch) order. */
  history(): { view: View; committedAtMs: number }[] {
    return this.db
      .select()
      .from(viewHistory)
      .where(and(eq(viewHistory.meshId, this.meshId)))
      .orderBy(asc(viewHistory.generation), asc(viewHistory.epoch))
      .all()
      .map((row) => ({ view: row.view as View, committedAtMs: row.committedAtMs }));
  }
}
