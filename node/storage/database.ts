// The node's SQLite database in its data directory, opened through drizzle and held under an
// exclusive lock for the life of the process.
//
// Why this lock: SQLite in `locking_mode=EXCLUSIVE` keeps the file lock it takes on the
// first write until the connection closes (see takeLock for why it is a separate file). The lock is an OS file lock, so a second process
// on the same directory gets SQLITE_BUSY at once (busy_timeout 0) and a crashed process's
// lock vanishes with it — no stale lock file can block a restart. A pid file written after
// the lock is taken lets the refusal name the other process; it is only informative.
import { Database } from 'bun:sqlite';
import { drizzle, type BunSQLiteDatabase } from 'drizzle-orm/bun-sqlite';
import { migrate } from 'drizzle-orm/bun-sqlite/migrator';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as schema from '../../schema/index.ts';

export type Db = BunSQLiteDatabase<typeof schema>;

export interface Storage {
  readonly db: Db;
  /** Absolute path of the database file. */
  readonly path: string;
  /** Releases the lock and closes the file. Idempotent. */
  close(): void;
}

/** Another live process holds this data directory. */
export class DataDirLockedError extends Error {
  override readonly name = 'DataDirLockedError';
  constructor(
    readonly dataDir: string,
    readonly otherPid: number | undefined,
  ) {
    super(
      `data directory ${dataDir} is in use by another rankmesh process` +
        (otherPid === undefined ? '' : ` (pid ${otherPid})`) +
        '; stop it or choose another dataDir',
    );
  }
}

export const databaseFileName = 'node.sqlite';
const pidFileName = 'node.pid';
const lockFileName = 'node.lock';
const migrationsFolder = join(import.meta.dir, '../../schema/migrations');

/** Opens (creating if needed) the database of `dataDir`, takes the lock, applies migrations. */
export function openStorage(dataDir: string): Storage {
  const dir = resolve(dataDir);
  mkdirSync(dir, { recursive: true });
  const lock = takeLock(dir);
  const pidPath = join(dir, pidFileName);
  writeFileSync(pidPath, `${process.pid}\n`);
  const path = join(dir, databaseFileName);
  const sqlite = new Database(path, { create: true });
  const db = drizzle({ client: sqlite, schema });
  try {
    sqlite.run('PRAGMA journal_mode = WAL');
    sqlite.run('PRAGMA foreign_keys = ON');
    migrate(db, { migrationsFolder });
  } catch (err) {
    sqlite.close();
    lock.close();
    throw err;
  }
  let open = true;
  return {
    db,
    path,
    close() {
      if (!open) return;
      open = false;
      if (readPid(pidPath) === process.pid) rmSync(pidPath, { force: true });
      sqlite.close();
      lock.close();
    },
  };
}

/**
 * The lock lives in its own small database, node.lock, rather than in node.sqlite: drizzle's
 * prepared statements are finalised only by the garbage collector, and SQLite keeps a
 * connection (and so its lock) alive until they are. The lock connection runs no prepared
 * statements, so closing it releases the lock at once and the same process can reopen.
 */
function takeLock(dir: string): Database {
  const lock = new Database(join(dir, lockFileName), { create: true });
  try {
    lock.run('PRAGMA busy_timeout = 0');
    lock.run('PRAGMA locking_mode = EXCLUSIVE');
    // A write takes the exclusive lock, which EXCLUSIVE mode then keeps until close.
    lock.run('BEGIN EXCLUSIVE');
    lock.run('CREATE TABLE IF NOT EXISTS held_by (pid INTEGER)');
    lock.run('COMMIT');
  } catch (err) {
    lock.close();
    if (isBusy(err)) throw new DataDirLockedError(dir, readPid(join(dir, pidFileName)));
    throw err;
  }
  return lock;
}

function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED';
}

function readPid(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
