// Durable demand records: every record this node opened or heard, merged, one row each. A
// restarted node loads them before it takes part in any plan round, so demand signalled
// before the restart still counts. Writes are synchronous SQLite statements.
import { and, asc, eq } from 'drizzle-orm';
import { type DemandRecord, RECORDS_MAX, parseRecord } from '../../mesh/demand.ts';
import { demandRecords } from '../../schema/index.ts';
import type { Db } from '../storage/database.ts';

export class DemandStore {
  constructor(
    private readonly db: Db,
    private readonly meshId: string,
  ) {}

  /**
   * The stored records of this mesh, oldest first (the order a DemandBook forgets closed
   * ones in); beyond RECORDS_MAX the oldest closed rows are deleted. `malformed` counts rows
   * that no longer parse (skipped).
   */
  load(): { records: DemandRecord[]; malformed: number } {
    const rows = this.db.select().from(demandRecords).where(eq(demandRecords.meshId, this.meshId)).orderBy(asc(demandRecords.updatedAtMs)).all();
    const parsed: DemandRecord[] = [];
    let malformed = 0;
    for (const row of rows) {
      const record = parseRecord(row.record);
      if (record === null) malformed++;
      else parsed.push(record);
    }
    let excess = parsed.length - RECORDS_MAX;
    const records: DemandRecord[] = [];
    for (const record of parsed) {
      if (excess > 0 && record.closed) {
        this.delete(record.id);
        excess--;
        continue;
      }
      records.push(record);
    }
    return { records, malformed };
  }

  /** Writes the merged record (insert or replace). */
  save(record: DemandRecord, nowMs: number): void {
    this.db
      .insert(demandRecords)
      .values({ meshId: this.meshId, id: record.id, pipeline: record.pipeline, record, closed: record.closed, createdAtMs: nowMs, updatedAtMs: nowMs })
      .onConflictDoUpdate({ target: [demandRecords.meshId, demandRecords.id], set: { record, closed: record.closed, pipeline: record.pipeline, updatedAtMs: nowMs } })
      .run();
  }

  private delete(id: string): void {
    this.db.delete(demandRecords).where(and(eq(demandRecords.meshId, this.meshId), eq(demandRecords.id, id))).run();
  }
}
