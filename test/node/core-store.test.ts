// The core's durable state on a real SQLite file: a committed view is recorded in the same
// transaction as the state that holds it, and both survive a reopen.
import { afterAll, expect, test } from 'bun:test';
import type { PersistentState } from '../../mesh/rawnode.ts';
import { applyChange, firstView } from '../../mesh/view.ts';
import { CoreStore } from '../../node/mesh/store.ts';
import { openStorage } from '../../node/storage/database.ts';
import { tempDir } from './helpers.ts';

const dir = tempDir();
afterAll(() => dir.remove());

const first = firstView('m', 1, ['a', 'b', 'c'].map((peerId) => ({ peerId, bootId: 'b1' })));
const second = applyChange(first, { remove: [{ peerId: 'c', bootId: 'b1' }], admit: [], addSpares: [], close: false });
const stateWith = (view: typeof first): PersistentState => ({ meshId: 'm', generation: 1, view, rememberedRank: 0, acceptor: null, form: null });

test('save records the committed views of its batch with the state; a view is recorded once; both survive a reopen', () => {
  const storage = openStorage(dir.path);
  const store = new CoreStore(storage.db, 'm');
  store.save(stateWith(first), 1_000, [first]);
  store.save(stateWith(second), 2_000, [second]);
  // The same view again (a batch that re-installs it) keeps the first record.
  store.save(stateWith(second), 3_000, [second]);
  // A vote or a promise alone: no view to record.
  store.save(stateWith(second), 4_000);
  storage.close();

  const reopened = openStorage(dir.path);
  const again = new CoreStore(reopened.db, 'm');
  expect(again.load()?.view).toEqual(second);
  expect(again.history()).toEqual([
    { view: first, committedAtMs: 1_000 },
    { view: second, committedAtMs: 2_000 },
  ]);
  // recordView alone (a commit with no state change to save) adds to the same history.
  const third = applyChange(second, { remove: [{ peerId: 'b', bootId: 'b1' }], admit: [], addSpares: [], close: false });
  again.recordView(third, 5_000);
  expect(again.history().map((h) => h.view.epoch)).toEqual([first.epoch, second.epoch, third.epoch]);
  reopened.close();
});
