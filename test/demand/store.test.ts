// The demand store on a real SQLite file: merged records survive a reopen oldest first, rows that no longer parse are skipped and counted, other meshes' rows are not read.
import { afterEach, expect, test } from 'bun:test';
import type { DemandRecord } from '../../mesh/demand.ts';
import { demandRecords } from '../../schema/index.ts';
import { DemandStore } from '../../node/demand/store.ts';
import { openStorage } from '../../node/storage/database.ts';
import { tempDir } from '../node/helpers.ts';

const dirs: { remove(): void }[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) d.remove();
});

const rec = (id: string, extra: Partial<DemandRecord> = {}): DemandRecord => ({ id, pipeline: 'p', steps: 10, priority: 0, done: {}, closed: false, ...extra });

test('records survive a reopen, oldest first, with their merged state', () => {
  const dir = tempDir('rankmesh-demand-');
  dirs.push(dir);
  let storage = openStorage(dir.path);
  const store = new DemandStore(storage.db, 'm');
  store.save(rec('a'), 1);
  store.save(rec('b', { done: { n1: 4 } }), 2);
  store.save(rec('a', { closed: true }), 3);
  new DemandStore(storage.db, 'other').save(rec('x'), 4);
  storage.db.insert(demandRecords).values({ meshId: 'm', id: 'bad', pipeline: 'p', record: { id: 'bad', steps: -1 }, closed: false, createdAtMs: 0, updatedAtMs: 0 }).run();
  storage.close();
  storage = openStorage(dir.path);
  const loaded = new DemandStore(storage.db, 'm').load();
  storage.close();
  expect(loaded.malformed).toBe(1);
  expect(loaded.records).toEqual([rec('b', { done: { n1: 4 } }), rec('a', { closed: true })]);
});
