/** The Store contract against SQLite: a fresh database file in a temporary folder for every test. */

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, expect, it } from 'vitest';
import { SqliteStore } from '../src/store/sqlite/index.js';
import { commitOld, defineStoreSuite, expectCreatedById } from './store.suite.js';

const dirs: string[] = [];

defineStoreSuite('sqlite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-store-'));
  dirs.push(dir);
  const path = join(dir, 'dispatcher.db');
  const open = async () => {
    const store = new SqliteStore({ path });
    await store.migrate();
    return store;
  };
  const store = await open();
  return {
    store,
    openPeer: open,
    async cleanup() {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

it('gives runs and events written before migration 0005 the time their id carries, and lists and finds them by id (sqlite)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-store-'));
  dirs.push(dir);
  const path = join(dir, 'dispatcher.db');
  let store = new SqliteStore({ path });
  try {
    await store.migrate();
    const ids = await commitOld(store);
    await store.close();
    // As an older dispatcher left them: the index, and runs whose created_at is a moment before their id's time.
    const db = new Database(path);
    db.exec(`CREATE INDEX runs_created ON runs (created_at);
      DELETE FROM dispatcher_migrations WHERE name = '0005_created_by_id';
      UPDATE runs SET created_at = created_at - 3, updated_at = created_at - 3;
      UPDATE events SET received_at = received_at - 3`);
    db.close();
    store = new SqliteStore({ path });
    await store.migrate();
    const check = new Database(path, { readonly: true });
    const indexes = check.prepare(`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs'`).pluck().all();
    check.close();
    expect(indexes).not.toContain('runs_created');
    await expectCreatedById(store, ids);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

afterAll(() => {
  // Every test gave its database back.
  expect(dirs.filter((dir) => existsSync(dir))).toEqual([]);
});
