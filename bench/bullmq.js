#!/usr/bin/env node
/**
 * The yardstick of the bus benchmark: BullMQ with Redis doing the same job end to end on this machine, so
 * that `bench/bus.js` can be compared with it measured the same way, at the same time.
 *
 *   node bench/bullmq.js                 the default cases: 1:1, 1:512 and 3:512
 *   node bench/bullmq.js 1:100 3:512     chosen cases: worker processes:concurrency of each
 *
 * Method, the same as bench/bus.js: this process first adds BENCH_BUS_EVENTS jobs (default 50,000; the
 * CloudEvents the bus benchmark publishes, as job data) in bulks of 1,000 and waits for Redis to take
 * them; then it starts the worker processes, each a BullMQ `Worker` whose processor does nothing (as
 * `noop`), and waits until every job is completed. Every job is kept (`removeOnComplete: false`), as the
 * dispatcher keeps every run. The rate is jobs / (the last job's `finishedOn` − the first job's
 * `processedOn`), as the workers saw them: consumption, not process start. The rate counting from the
 * processes' start is printed beside it, and the workers' CPU per job.
 *
 * A worker's concurrency is how many jobs it runs at once: 1 is BullMQ's default, 512 the dispatcher's
 * `runner.concurrency`.
 *
 * Redis keeps its data in memory; the dispatcher's stores write theirs to disk. BENCH_REDIS_AOF=1 starts a
 * Redis of its own (`redis-server` on a free port, in a temporary folder) that logs every write to its
 * append-only file and syncs it every second, Redis's durable setting, to compare like with like.
 *
 * BullMQ and ioredis are not dependencies of the project: install them beside it first, without saving
 * them (`npm ci` removes them again):
 *
 *   npm install --no-save bullmq@6 ioredis@5
 *
 * Options (environment): BENCH_BUS_EVENTS, BENCH_REPEAT (default 3), BENCH_REDIS_URL (default
 * redis://127.0.0.1:6379; each run uses its own queue, deleted afterwards), BENCH_REDIS_AOF.
 */

import { fork, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSeconds, freePort, median } from './common.js';

const EVENTS = Number(process.env.BENCH_BUS_EVENTS ?? 50_000);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
let REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A module the project does not depend on: a clear message when it is not installed. */
async function load(name) {
  try {
    return await import(name);
  } catch (err) {
    if (err?.code !== 'ERR_MODULE_NOT_FOUND') throw err;
    console.error(`bench/bullmq.js needs ${name}, which the project does not depend on: npm install --no-save bullmq@6 ioredis@5`);
    process.exit(2);
  }
}

async function connection() {
  const { Redis } = await load('ioredis');
  // BullMQ's workers block on Redis: it asks for no per-request retry limit.
  return new Redis(REDIS_URL, { maxRetriesPerRequest: null });
}

/** A worker process: runs jobs of the queue named in argv until told to report, then reports and exits. */
async function worker(queueName, concurrency) {
  const { Worker } = await load('bullmq');
  let first = Infinity;
  let last = 0;
  const w = new Worker(
    queueName,
    async () => {
      if (first === Infinity) first = Date.now();
    },
    { connection: await connection(), concurrency, autorun: true },
  );
  w.on('completed', (job) => {
    if (job.finishedOn !== undefined && job.finishedOn > last) last = job.finishedOn;
  });
  w.on('error', (err) => console.error(`worker ${process.pid}: ${err.message}`));
  process.on('message', async (m) => {
    if (m !== 'report') return;
    await w.close();
    process.send({ first, last }, () => process.exit(0));
  });
  process.send('ready');
}

async function once(processes, concurrency, run) {
  const { Queue } = await load('bullmq');
  const name = `bench-${process.pid}-${run}-${processes}-${concurrency}`;
  const redis = await connection();
  const queue = new Queue(name, { connection: redis, defaultJobOptions: { removeOnComplete: false, removeOnFail: false } });
  const children = [];
  try {
    for (let from = 0; from < EVENTS; from += 1000) {
      const jobs = [];
      for (let i = from; i < Math.min(EVENTS, from + 1000); i++) {
        jobs.push({ name: 'bench.bus', data: { specversion: '1.0', id: `b${run}-${i}`, source: 'urn:bench', type: 'bench.bus', data: { n: i } } });
      }
      await queue.addBulk(jobs);
    }
    const startedAt = Date.now();
    const self = fileURLToPath(import.meta.url);
    for (let n = 0; n < processes; n++) {
      const child = fork(self, ['--worker', name, String(concurrency)], { env: { ...process.env, BENCH_REDIS_URL: REDIS_URL }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      children.push(child);
      await new Promise((resolve, reject) => {
        child.once('message', resolve);
        child.once('exit', (code) => reject(new Error(`a worker exited with ${code} before it was ready`)));
      });
    }
    const cpuFrom = new Map();
    let seen = -1;
    let movedAt = Date.now();
    for (;;) {
      const completed = await queue.getCompletedCount();
      if (cpuFrom.size === 0 && completed >= EVENTS / 10) for (const c of children) cpuFrom.set(c, cpuSeconds(c.pid));
      if (completed >= EVENTS) break;
      const failed = await queue.getFailedCount();
      if (failed > 0) throw new Error(`${failed} jobs failed`);
      if (children.some((c) => c.exitCode !== null)) throw new Error('a worker exited before the jobs were done');
      if (completed !== seen) [seen, movedAt] = [completed, Date.now()];
      else if (Date.now() - movedAt > 60_000) throw new Error(`stalled at ${completed} of ${EVENTS} jobs completed`);
      await sleep(20);
    }
    const endedAt = Date.now();
    let cpu = 0;
    for (const c of children) cpu += cpuSeconds(c.pid) - (cpuFrom.get(c) ?? 0);
    const reports = await Promise.all(
      children.map(
        (c) =>
          new Promise((resolve) => {
            c.once('message', resolve);
            c.send('report');
          }),
      ),
    );
    const first = Math.min(...reports.map((r) => r.first));
    const last = Math.max(...reports.map((r) => r.last));
    return {
      rate: Math.round(EVENTS / ((last - first) / 1000)),
      withStart: Math.round(EVENTS / ((endedAt - startedAt) / 1000)),
      cpuPerEvent: (cpu * 1e6) / (EVENTS * 0.9),
    };
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close();
    redis.disconnect();
  }
}

/** A Redis of this benchmark's own that appends every write to its log and syncs it every second. */
async function durableRedis() {
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-bench-redis-'));
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', ''], { stdio: 'ignore' });
  await new Promise((resolve, reject) => {
    child.once('error', (err) => reject(new Error(`redis-server could not be started (${err.message}): apt-get install redis-server`)));
    child.once('spawn', resolve);
  });
  process.once('exit', () => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const url = `redis://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      const { Redis } = await load('ioredis');
      const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      await r.connect();
      await r.quit();
      return url;
    } catch (err) {
      if (i > 100) throw err;
      await sleep(50);
    }
  }
}

async function main() {
  if (process.env.BENCH_REDIS_AOF === '1') REDIS_URL = await durableRedis();
  const named = process.argv.slice(2);
  const cases = (named.length > 0 ? named : ['1:1', '1:512', '3:512']).map((c) => c.split(':').map(Number));
  if (cases.some(([p, c]) => !(p >= 1 && c >= 1))) throw new Error('a case is processes:concurrency, e.g. 3:512');
  console.log(`machine: ${cpus().length} × ${cpus()[0]?.model.trim()}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`);
  console.log(`BullMQ with Redis (${REDIS_URL}${process.env.BENCH_REDIS_AOF === '1' ? ', append-only file synced every second' : ''}): ${EVENTS} jobs per run, median of ${REPEAT}`);
  for (const [processes, concurrency] of cases) {
    const results = [];
    for (let run = 0; run < REPEAT; run++) results.push(await once(processes, concurrency, run));
    const rates = results.map((r) => r.rate);
    console.log(
      `bullmq:redis:${processes}, concurrency ${concurrency}`.padEnd(32) +
        ` ${String(median(rates)).padStart(7)} events/s   runs: ${rates.join(', ')}   counting the processes' start: ${median(results.map((r) => r.withStart))} events/s   worker CPU: ${median(results.map((r) => r.cpuPerEvent)).toFixed(1)} µs per event`,
    );
  }
}

if (process.argv[2] === '--worker') await worker(process.argv[3], Number(process.argv[4]));
else {
  await main();
  process.exit(0);
}
