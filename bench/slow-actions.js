#!/usr/bin/env node
/**
 * Intake while the actions are slow: a real `dispatcher serve` on SQLite whose one route calls a local HTTP
 * receiver that answers after BENCH_ACTION_MS (default 200 ms), with `runner.concurrency` at
 * BENCH_CONCURRENCY (default 16): the runner ends at most concurrency / action time runs a second (80 with
 * the defaults). Meanwhile a client sends events as fast as it can over 10 connections, BENCH_BATCH events
 * per POST (default 1: single events), for BENCH_SECONDS (default 8).
 *
 * What it shows is whether intake keeps taking events (queueing their runs durably) while the runner is
 * saturated by slow actions, or holds the senders back: events accepted per second, the 202's p50/p99/max,
 * and how many runs were committed queued and claimed later. `runner.dispatchWait` comes from
 * BENCH_DISPATCH_WAIT (default: the dispatcher's own default).
 *
 *   node bench/slow-actions.js        (after npm run build; BENCH_REPEAT, default 3)
 */

import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Pool } from 'undici';
import { DISPATCHER_MAIN, dispatcherNodeFlags, freePort, median, waitServing } from './common.js';

const ACTION_MS = Number(process.env.BENCH_ACTION_MS ?? 200);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const BATCH = Number(process.env.BENCH_BATCH ?? 1);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
const DISPATCH_WAIT = process.env.BENCH_DISPATCH_WAIT;
const KEY = 'benchKey0123456789abcdefABCDEF';

async function once() {
  const receiver = createServer((req, res) => {
    req.resume();
    setTimeout(() => res.end('ok'), ACTION_MS);
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-bench-slow-'));
  const port = await freePort();
  const config = join(dir, 'dispatcher.yaml');
  writeFileSync(
    config,
    `server: { port: ${port} }
store: { url: "sqlite:${join(dir, 'dispatcher.db')}" }
log: { level: warn }
runner: { concurrency: ${CONCURRENCY}${DISPATCH_WAIT === undefined ? '' : `, dispatchWait: ${DISPATCH_WAIT}`} }
auth: { keyFile: "", psk: [ { service: bench, key: ${KEY} } ] }
actions: { http: { allow: ["127.0.0.1"] } }
routes:
  - name: slow
    match: { type: "bench.*" }
    actions: [ { http: { url: "http://127.0.0.1:${receiver.address().port}/" } } ]
`,
  );
  const child = spawn(process.execPath, [...dispatcherNodeFlags(), DISPATCHER_MAIN, 'serve', '--config', config], { stdio: ['ignore', 'inherit', 'inherit'] });
  try {
    await waitServing(`http://127.0.0.1:${port}`, child);
    const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 10 });
    const latencies = [];
    let seq = 0;
    const until = performance.now() + SECONDS * 1000;
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        while (performance.now() < until) {
          const events = Array.from({ length: BATCH }, () => ({ specversion: '1.0', id: `e-${++seq}`, source: 'urn:bench', type: 'bench.slow' }));
          const started = performance.now();
          const res = await pool.request({
            path: '/v1/events',
            method: 'POST',
            headers: { 'content-type': BATCH === 1 ? 'application/cloudevents+json' : 'application/cloudevents-batch+json', authorization: `PSK ${KEY}` },
            body: JSON.stringify(BATCH === 1 ? events[0] : events),
          });
          await res.body.text();
          if (res.statusCode !== 202) throw new Error(`POST /v1/events answered ${res.statusCode}`);
          latencies.push(performance.now() - started);
        }
      }),
    );
    await pool.close();
    child.kill('SIGTERM');
    await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)));
    latencies.sort((a, b) => a - b);
    const db = new Database(join(dir, 'dispatcher.db'), { readonly: true });
    // A run committed queued and claimed later has an `update` run event with status `running`.
    const claimed = db.prepare(`SELECT count(*) AS n FROM run_events WHERE event_type = 'update' AND status = 'running'`).get().n;
    const runs = db.prepare('SELECT count(*) AS n FROM runs').get().n;
    db.close();
    return {
      accepted: (latencies.length * BATCH) / SECONDS,
      p50: latencies[Math.floor(latencies.length / 2)],
      p99: latencies[Math.floor(latencies.length * 0.99)],
      max: latencies.at(-1),
      runs,
      claimed,
    };
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    receiver.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

console.log(`machine: ${cpus().length} × ${cpus()[0]?.model}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`);
console.log(
  `actions of ${ACTION_MS} ms, concurrency ${CONCURRENCY} (at most ${Math.round((CONCURRENCY * 1000) / ACTION_MS)} runs/s), ${BATCH} event(s) per POST over 10 connections for ${SECONDS} s, ` +
    `dispatchWait ${DISPATCH_WAIT ?? 'default'}; median of ${REPEAT}`,
);
const results = [];
for (let i = 0; i < REPEAT; i++) results.push(await once());
const fmt = (n) => Math.round(n).toLocaleString('en-US');
console.log(`  accepted:  ${fmt(median(results.map((r) => r.accepted)))} events/s   (runs: ${results.map((r) => fmt(r.accepted)).join(', ')})`);
console.log(`  202 after: p50 ${fmt(median(results.map((r) => r.p50)))} ms, p99 ${fmt(median(results.map((r) => r.p99)))} ms, max ${fmt(median(results.map((r) => r.max)))} ms`);
console.log(`  runs claimed from the queue: ${results.map((r) => `${fmt(r.claimed)} of ${fmt(r.runs)}`).join(', ')}`);
