/** The Store contract against SQLite: a fresh database file in a temporary folder for every test. */

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect } from 'vitest';
import { SqliteStore } from '../src/store/sqlite/index.js';
import { defineStoreSuite } from './store.suite.js';

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

afterAll(() => {
  // Every test gave its database back.
  expect(dirs.filter((dir) => existsSync(dir))).toEqual([]);
});
