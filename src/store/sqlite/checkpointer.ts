/**
 * WAL checkpoints off the event loop. A checkpoint copies the write-ahead log into the database file and
 * syncs it; done by SQLite's automatic checkpoint, that work lands on whichever commit crosses the
 * threshold, and stalls intake for milliseconds. Here a worker thread with its own connection runs
 * PASSIVE checkpoints (which never block the writer) on a timer, and the main connection's automatic
 * checkpoint is raised to a safety net far above what the worker lets the WAL grow to.
 */

import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

// The worker is plain JavaScript evaluated from a string, so that it runs the same from the compiled
// package and from TypeScript sources under test.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.path);
db.pragma('busy_timeout = 1000');
let timer = setInterval(() => {
  try { db.pragma('wal_checkpoint(PASSIVE)'); } catch (err) { parentPort.postMessage({ error: String(err && err.message || err) }); }
}, workerData.intervalMs);
parentPort.on('message', (m) => {
  if (m === 'stop') {
    clearInterval(timer);
    try { db.pragma('wal_checkpoint(PASSIVE)'); } catch {}
    db.close();
    parentPort.postMessage('stopped');
  }
});
`;

export class Checkpointer {
  readonly #worker: Worker;
  #stopped = false;

  constructor(path: string, intervalMs: number, onError: (message: string) => void) {
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    this.#worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { path, driver, intervalMs } });
    this.#worker.on('message', (m: unknown) => {
      if (typeof m === 'object' && m !== null && 'error' in m) onError(String((m as { error: unknown }).error));
    });
    this.#worker.on('error', (err) => onError(err.message));
    this.#worker.unref();
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => void this.#worker.terminate().then(() => resolve()), 2000);
      this.#worker.once('message', () => {
        clearTimeout(timer);
        void this.#worker.terminate().then(() => resolve());
      });
      this.#worker.postMessage('stop');
    });
  }
}
