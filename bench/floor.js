/**
 * The floor under the embedded store, as a function (`bench/sqlite-floor.js` prints it; `npm run bench` uses it
 * for the ceilings it prints): the same rows the dispatcher writes for one event with one run (event, run,
 * `create` run event; then the run's update, its attempt, the `update` run event), written with bare
 * better-sqlite3 prepared statements into our schema, `batch` events per transaction, nothing else. No HTTP,
 * no JSON parsing, no routing: what the disk and SQLite cost on this machine.
 *
 * With `journal`, the cheapest durable answer a design could give before folding the rows in large batches:
 * one row per transaction in a table of its own, holding the transaction's envelopes as one text, nothing
 * else (no index but the row id).
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { v7 } from 'uuid';
import { openStore } from '../dist/store/index.js';

/** µs per event, one run of `events` events, `batch` per transaction. */
export async function sqliteFloor({ events, batch, journal: withJournal = false }) {
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-floor-'));
  const file = join(dir, 'd.db');
  // The schema the dispatcher writes into today, made by the store's own migrations.
  const store = await openStore({ url: `sqlite:${file}` });
  await store.migrate();
  await store.close();
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = normal');
  db.pragma('wal_autocheckpoint = 65536');
  const insertEvent = db.prepare(`INSERT INTO events (key, source, id, type, topic, subject, envelope, input, hops, service, org_id, received_at, run_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, id) DO NOTHING`);
  const insertRun = db.prepare(`INSERT INTO runs (id, event_key, event_type, route, action, action_type, status, attempts, max_attempts, created_at, updated_at, available_at, deadline_at, expires_at, lease_owner, lease_until, labels, service, org_id) VALUES (?, ?, 'bench.tick', 'bench', 'noop', 'noop', 'running', 1, 5, ?, ?, ?, ?, ?, 'w', ?, '{}', 's', 'o')`);
  const insertRunEvent = db.prepare('INSERT INTO run_events (run_id, event_type, status, service, org_id, at, payload) VALUES (?, ?, ?, ?, ?, ?, ?)');
  const finish = db.prepare(`UPDATE runs SET status = 'success', updated_at = ?, lease_owner = NULL, lease_until = NULL, finished_at = ? WHERE id = ? AND status = 'running' AND lease_owner = 'w'`);
  const insertAttempt = db.prepare(`INSERT INTO attempts (run_id, n, started_at, ended_at, outcome) VALUES (?, 1, ?, ?, 'success')`);
  const envelope = JSON.stringify({ specversion: '1.0', id: 'x', source: 'urn:bench', type: 'bench.tick', topic: 'bench.eu.tick', data: { n: 1, host: 'web-1' } });
  const created = '{"status":"running","attempts":1,"maxAttempts":5,"updatedAt":1795436184030,"availableAt":1795436184030,"deadlineAt":1795436184030,"expiresAt":1795436184030}';
  const updated = '{"status":"success","attempts":1,"maxAttempts":5,"updatedAt":1795436184030,"availableAt":1795436184030,"deadlineAt":1795436184030,"expiresAt":1795436184030,"finishedAt":1795436184030}';
  let seq = 0;
  const ids = [];
  const intake = db.transaction(() => {
    for (let i = 0; i < batch; i++) {
      const key = v7();
      const id = v7();
      const now = Date.now();
      seq += 1;
      insertEvent.run(key, 'urn:bench', `e-${seq}`, 'bench.tick', 'bench.eu.tick', null, envelope, 'http', 0, 's', 'o', now, 1);
      insertRun.run(id, key, now, now, now, now + 3.6e6, now + 3.6e6, now + 30_000);
      insertRunEvent.run(id, 'create', 'running', 's', 'o', now, created);
      ids.push(id);
    }
  });
  const done = db.transaction((runIds) => {
    for (const id of runIds) {
      const now = Date.now();
      finish.run(now, now, id);
      insertAttempt.run(id, now, now);
      insertRunEvent.run(id, 'update', 'success', 's', 'o', now, updated);
    }
  });
  let journal;
  if (withJournal) {
    db.exec('CREATE TABLE journal (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, body TEXT NOT NULL)');
    const insertJournal = db.prepare('INSERT INTO journal (at, body) VALUES (?, ?)');
    journal = db.transaction((body) => insertJournal.run(Date.now(), body));
  }
  const started = performance.now();
  const batches = Math.ceil(events / batch);
  for (let b = 0; b < batches; b++) {
    if (withJournal) {
      // The envelopes as the request bodies held them, joined: no parsing, no row per event.
      const bodies = [];
      for (let i = 0; i < batch; i++) bodies.push(envelope);
      journal.immediate(`[${bodies.join(',')}]`);
      continue;
    }
    intake.immediate();
    done.immediate(ids.splice(0));
  }
  const us = ((performance.now() - started) * 1000) / (batches * batch);
  db.close();
  rmSync(dir, { recursive: true, force: true });
  return us;
}
