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

  /**
   * Saves the core's state and records the views it committed in the same batch, in one
   * transaction: one disk sync per batch instead of one per write, which matters when a view
   * change has every process of a host syncing at once.
   */
  save(state: PersistentState, nowMs: number, committed: readonly View[] = []): void {
    this.db.transaction((tx) => {
      tx.insert(coreState)
        .values({ id: 1, meshId: this.meshId, state, updatedAtMs: nowMs })
        .onConflictDoUpdate({ target: coreState.id, set: { meshId: this.meshId, state, updatedAtMs: nowMs } })
        .run();
      for (const view of committed) this.insertView(tx, view, nowMs);
    });
  }

  /** Records a committed view; a view already recorded for its (generation, epoch) is kept. */
  recordView(view: View, nowMs: number): void {
    this.insertView(this.db, view, nowMs);
  }

  private insertView(db: Pick<Db, 'insert'>, view: View, nowMs: number): void {
    db.insert(viewHistory)
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
