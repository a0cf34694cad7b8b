#!/usr/bin/env node
/**
 * The Playbook Dispatcher profile beside the core's generic batch path, in one run of one `dispatcher serve`
 * child process on SQLite (`node bench/playbook.js`), every phase over HTTP from this process:
 *
 * - core: `POST /v1/events`, batches of 50 events to a `noop` route; runs/s from the first POST until no run
 *   is left queued or running (as `bench/run.js throughput` measures, at this batch size);
 * - dispatch: `POST /internal/v2/dispatch`, 50 items per request (each `{recipient, org_id, principal, url,
 *   name}`), to recipients connected over the built-in connector: WebSocket clients of this script that
 *   answer every directive `accepted` at once. Runs/s until every 207 came back with its 50 `{code: 201, id}`
 *   (each run is stored waiting by then);
 * - upload: for each run, one gzip JSON Lines file of 100 Ansible Runner events (built from
 *   test/fixtures/playbook-dispatcher/examples/events-success.jsonl, its correlation id the one the recipient
 *   got in the directive's metadata) as multipart/form-data to `POST /api/ingress/v1/upload` with a `System`
 *   identity header; each ends its run `success`. Uploads/s.
 *
 * A playbook run costs one dispatch and one upload; its time and the server's CPU per run are set beside the
 * core's (the issue's target: at most twice). Each phase is `BENCH_RUNS` runs (default 2,000), 4 requests in
 * flight over 4 connections; the whole is repeated `BENCH_REPEAT` times (default 3), a new server each time,
 * and the medians printed. `BENCH_SERVER_ARGS` adds Node flags to the dispatcher (e.g. `--cpu-prof
 * --cpu-prof-dir=.prof`); then each round also prints its phases' bounds on the monotonic clock (µs), which is
 * the clock of the profile's timestamps, so that its samples can be told apart by phase.
 */

import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { Pool } from 'undici';
import WebSocket from 'ws';
import { cpuSeconds, DISPATCHER_MAIN, dispatcherNodeFlags, freePort, machineBusy, median, waitServing } from './common.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 2000);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
const SERVER_ARGS = (process.env.BENCH_SERVER_ARGS ?? '').split(' ').filter((a) => a !== '');
const BATCH = 50;
/** Runs of each path before the measured ones, in each round. */
const WARM = 500;
const IN_FLIGHT = 4;
const AGENTS = 8;
const KEY = 'benchKey0123456789abcdef';
const AUTH = { authorization: `PSK ${KEY}` };
// The PSK principal has no orgId of its own: its tenant is `default`, and so must the items' and the uploader's be.
const ORG = 'default';
const IDENTITY = Buffer.from(JSON.stringify({ identity: { org_id: ORG, type: 'System', system: { cn: 'bench' } } })).toString('base64');
const FIXTURE = readFileSync(new URL('../test/fixtures/playbook-dispatcher/examples/events-success.jsonl', import.meta.url), 'utf8')
  .split('\n')
  .filter((l) => l.trim() !== '')
  .map((l) => JSON.parse(l));

/** The monotonic clock in µs: V8's profile timestamps are on it. */
const monotonic = () => Number(process.hrtime.bigint() / 1000n);

/** `count` jobs, `IN_FLIGHT` at a time. */
async function inFlight(count, job) {
  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < count) await job(next++);
    }),
  );
}

/**
 * A Runner upload of 100 events from the fixture: its `executor_on_start` with this correlation id, its
 * playbook and play starts, then its task (task start, runner start, ok) again and again with increasing
 * counters and lines, and its `playbook_on_stats` last (counter 99).
 */
function runnerFile(correlationId) {
  const [start, playbook, play, task, runnerStart, ok, stats] = FIXTURE;
  const events = [{ ...start, uuid: randomUUID(), event_data: { ...start.event_data, crc_dispatcher_correlation_id: correlationId } }, playbook, play];
  let line = 2;
  while (events.length < 99) {
    const e = [task, runnerStart, ok][(events.length - 3) % 3];
    const lines = e.end_line - e.start_line;
    events.push({ ...e, uuid: randomUUID(), counter: events.length, start_line: line, end_line: line + lines });
    line += lines;
  }
  events.push({ ...stats, uuid: randomUUID(), counter: 99, start_line: line, end_line: line + stats.end_line - stats.start_line });
  return gzipSync(events.map((e) => JSON.stringify(e)).join('\n') + '\n');
}

function multipart(file) {
  const boundary = `----bench${randomUUID()}`;
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="events.jsonl.gz"\r\nContent-Type: application/vnd.redhat.playbook.v1+gzip\r\n\r\n`),
    file,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return { body, type: `multipart/form-data; boundary=${boundary}` };
}

/** Each request's time (ms) in the phase under way. */
let latencies = [];

async function post(pool, path, headers, body, expected) {
  const t0 = performance.now();
  const res = await pool.request({ path, method: 'POST', headers, body });
  const text = await res.body.text();
  latencies.push(performance.now() - t0);
  if (res.statusCode !== expected) throw new Error(`${path}: HTTP ${res.statusCode} ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

/** Runs by status, read from the server's database (read-only, through the index of unfinished runs for the poll). */
function counter(dbPath) {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  const left = db.prepare(`SELECT count(*) AS n FROM runs WHERE status IN ('queued', 'running')`);
  const succeeded = db.prepare(`SELECT count(*) AS n FROM runs WHERE status = 'success'`);
  return { unfinished: () => left.get().n, succeeded: () => succeeded.get().n, close: () => db.close() };
}

async function startServer() {
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-bench-playbook-'));
  const port = await freePort();
  const config = join(dir, 'dispatcher.json');
  writeFileSync(
    config,
    JSON.stringify({
      server: { port, rateLimit: { max: 0 } },
      store: { url: `sqlite:${join(dir, 'dispatcher.db')}` },
      log: { level: 'warn' },
      auth: { keyFile: '', psk: [{ service: 'bench', key: KEY }], identityHeader: { enabled: true } },
      actions: { playbook: { rps: 1e6, bucket: 100000 } },
      routes: [{ name: 'bench', match: { type: 'bench.*' }, actions: [{ noop: {} }] }],
      profiles: { 'playbook-dispatcher': {} },
    }),
  );
  const child = spawn(process.execPath, [...dispatcherNodeFlags(), ...SERVER_ARGS, DISPATCHER_MAIN, 'serve', '--config', config], { cwd: process.cwd(), stdio: ['ignore', 'inherit', 'inherit'] });
  const url = `http://127.0.0.1:${port}`;
  await waitServing(url, child);
  return {
    url,
    port,
    db: join(dir, 'dispatcher.db'),
    cpu: () => cpuSeconds(child.pid),
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * One phase's wall time, server CPU, client CPU (this process: the client shares the machine's cores) and
 * median request time.
 */
async function phase(server, work) {
  latencies = [];
  const cpu = server.cpu();
  const busy = machineBusy();
  const client = process.cpuUsage();
  const from = monotonic();
  const t0 = performance.now();
  await work();
  const seconds = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(client);
  const serverCpu = server.cpu() - cpu;
  const clientCpu = (c.user + c.system) / 1e6;
  // Whatever else ran on the machine meanwhile (other processes, the kernel's threads), in cores.
  const others = (machineBusy() - busy - serverCpu - clientCpu) / seconds;
  return { seconds, cpu: serverCpu, clientCpu, others, latency: median(latencies), from, to: monotonic() };
}

async function once(round) {
  const server = await startServer();
  const pool = new Pool(server.url, { connections: IN_FLIGHT, pipelining: 1 });
  const agents = [];
  const runs = counter(server.db);
  try {
    // Recipients that take every directive at once, and keep its correlation id for the upload.
    let correlations = [];
    const recipients = Array.from({ length: AGENTS }, () => randomUUID());
    for (const id of recipients) {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/v1/recipients/${id}/connect`, { headers: AUTH });
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      ws.on('message', (data) => {
        const m = JSON.parse(String(data));
        if (m.type !== 'directive') return;
        correlations.push(m.metadata.crc_dispatcher_correlation_id);
        ws.send(JSON.stringify({ type: 'accepted', id: m.id }));
      });
      agents.push(ws);
    }
    let ended = 0;

    /** `n` runs through the core's batch path, until every one ended. */
    const core = async (n, tag) => {
      const batches = Math.ceil(n / BATCH);
      const bodies = Array.from({ length: batches }, (_, b) =>
        JSON.stringify(
          Array.from({ length: Math.min(BATCH, n - b * BATCH) }, (_, i) => ({ specversion: '1.0', id: `${tag}-${round}-${b}-${i}`, source: 'urn:bench', type: 'bench.run', data: { n: b * BATCH + i, host: 'web-1' } })),
        ),
      );
      const p = await phase(server, async () => {
        await inFlight(batches, (b) => post(pool, '/v1/events', { ...AUTH, 'content-type': 'application/cloudevents-batch+json' }, bodies[b], 202));
        while (runs.unfinished() > 0) await new Promise((resolve) => setTimeout(resolve, 20));
      });
      ended += n;
      if (runs.succeeded() !== ended) throw new Error(`${runs.succeeded()} of ${ended} runs ended in success`);
      return { ...p, n };
    };

    /** `n` runs dispatched 50 items a request: every item answered 201 with its run's id. */
    const dispatch = async (n) => {
      const batches = Math.ceil(n / BATCH);
      const bodies = Array.from({ length: batches }, (_, b) =>
        JSON.stringify(
          Array.from({ length: Math.min(BATCH, n - b * BATCH) }, (_, i) => ({ recipient: recipients[(b * BATCH + i) % AGENTS], org_id: ORG, principal: 'bench', url: 'https://example.com/bench.yml', name: 'bench' })),
        ),
      );
      correlations = [];
      const p = await phase(server, () =>
        inFlight(batches, async (b) => {
          const answers = await post(pool, '/internal/v2/dispatch', { ...AUTH, 'content-type': 'application/json' }, bodies[b], 207);
          if (answers.length !== Math.min(BATCH, n - b * BATCH)) throw new Error(`a dispatch of ${Math.min(BATCH, n - b * BATCH)} items answered ${answers.length}`);
          for (const a of answers) if (a.code !== 201 || typeof a.id !== 'string') throw new Error(`dispatch answered ${JSON.stringify(a)}`);
        }),
      );
      if (correlations.length !== n || runs.unfinished() !== n) throw new Error(`${correlations.length} directives taken, ${runs.unfinished()} runs waiting, for ${n} dispatched`);
      return { ...p, n, correlations };
    };

    /** One upload of 100 Runner events per correlation id, each ending its run `success`. */
    const upload = async (ids) => {
      const files = ids.map((id) => multipart(runnerFile(id)));
      const p = await phase(server, () =>
        inFlight(files.length, async (i) => {
          const answer = await post(pool, '/api/ingress/v1/upload', { 'x-rh-identity': IDENTITY, 'content-type': files[i].type }, files[i].body, 202);
          if (answer.run?.status !== 'success') throw new Error(`an upload answered ${JSON.stringify(answer)}`);
        }),
      );
      ended += ids.length;
      if (runs.unfinished() !== 0 || runs.succeeded() !== ended) throw new Error(`after the uploads: ${runs.unfinished()} runs unfinished, ${runs.succeeded()} of ${ended} in success`);
      return { ...p, n: ids.length, gzipBytes: files[0].body.length };
    };

    // Each path once, unmeasured, so that the measured phases find the server's code compiled.
    await core(WARM, 'w');
    await upload((await dispatch(WARM)).correlations);
    const c = await core(RUNS, 'e');
    const d = await dispatch(RUNS);
    const u = await upload(d.correlations);
    return { core: c, dispatch: d, upload: u };
  } finally {
    runs.close();
    for (const ws of agents) ws.terminate();
    await pool.close();
    await server.stop();
  }
}

const fmt = (n, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const us = (seconds, n) => (seconds * 1e6) / n;

console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`);
console.log(`each round: ${fmt(RUNS)} runs per phase, batches of ${BATCH}, ${IN_FLIGHT} requests in flight; figures: median of ${REPEAT} rounds\n`);

const rounds = [];
for (let r = 0; r < REPEAT; r++) {
  const x = await once(r);
  rounds.push(x);
  const line = (p, n, unit) => `${fmt(n / p.seconds)} ${unit}/s (${fmt(us(p.cpu, n))} µs server CPU, ${fmt(us(p.clientCpu, n))} µs client CPU each)`;
  console.log(`round ${r + 1}: core ${line(x.core, RUNS, 'runs')}; dispatch ${line(x.dispatch, RUNS, 'runs')}; upload ${line(x.upload, RUNS, 'uploads')}`);
  console.log(`  the rest of the machine meanwhile: ${['core', 'dispatch', 'upload'].map((k) => `${k} ${fmt(Math.max(0, x[k].others), 2)}`).join(', ')} cores`);
  if (SERVER_ARGS.length > 0) console.log(`  phases on the monotonic clock (µs): core ${x.core.from}–${x.core.to}, dispatch ${x.dispatch.from}–${x.dispatch.to}, upload ${x.upload.from}–${x.upload.to}`);
}

const m = (pick) => median(rounds.map(pick));
const perRun = (p) => p.seconds / RUNS;
const timeRatio = (r) => (perRun(r.dispatch) + perRun(r.upload)) / perRun(r.core);
const cpuRatio = (r) => (r.dispatch.cpu + r.upload.cpu) / r.core.cpu;
const show = (label, key, unit) =>
  console.log(
    `  ${label.padEnd(48)} ${fmt(m((r) => RUNS / r[key].seconds))} ${unit}/s, ${fmt(m((r) => r[key].latency), 1)} ms per request; server CPU ${fmt(m((r) => us(r[key].cpu, RUNS)))} µs per ${unit === 'uploads' ? 'upload' : 'run'}, client ${fmt(m((r) => us(r[key].clientCpu, RUNS)))}`,
  );

console.log(`\nmedians of ${REPEAT} rounds (ms per request: the median time of one request, ${IN_FLIGHT} in flight; upload file: 100 events, ${fmt(rounds[0].upload.gzipBytes)} bytes gzip with its multipart envelope):`);
show('core batch path (POST /v1/events, 50 → noop):', 'core', 'runs');
show('dispatch (POST /internal/v2/dispatch, 50 items):', 'dispatch', 'runs');
show('upload (100 Runner events, gzip, multipart):', 'upload', 'uploads');
console.log(`  ${'a playbook run (one dispatch item + one upload):'.padEnd(48)} ${fmt(m((r) => 1 / (perRun(r.dispatch) + perRun(r.upload))))} runs/s`);
// Each round's own ratio (its reference measured beside it), then their median.
console.log(
  `  ${'profile ÷ core, per run (target ≤ 2):'.padEnd(48)} ${fmt(m(timeRatio), 2)}× the time, ${fmt(m(cpuRatio), 2)}× the server CPU; the dispatch alone ${fmt(m((r) => perRun(r.dispatch) / perRun(r.core)), 2)}×, ${fmt(m((r) => r.dispatch.cpu / r.core.cpu), 2)}×`,
);
console.log(`  ${''.padEnd(48)} (rounds: time ${rounds.map((r) => fmt(timeRatio(r), 2)).join(', ')}; CPU ${rounds.map((r) => fmt(cpuRatio(r), 2)).join(', ')})`);
