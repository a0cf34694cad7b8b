#!/usr/bin/env node
/**
 * The CISO Assistant profile end to end beside the core's generic Kafka path (`node bench/ciso.js`):
 * observations waiting in Kafka (librdkafka's mock cluster, started with kcat, or `BENCH_KAFKA_BROKERS`) →
 * consumed by a `dispatcher serve` child process on SQLite → applied to a fake CISO Assistant API in this
 * process, which answers every request after about 1 ms (`setTimeout(1)`). Three paths, each in a server of
 * its own, one after the other in every round, on the same machine:
 *
 * - profile: `profiles: { ciso-assistant: {…} }` (its own Kafka input, decoder and routes; `kafka.maxWait`
 *   100ms), every observation `update_applied_control` `{selector: {ref_id}, values: {status: active}}`:
 *   two API calls each, `GET /api/applied-controls/?ref_id=…` (one object) then `PATCH
 *   /api/applied-controls/<id>/`;
 * - http: the core's generic path with the same messages: a Kafka input (`decoder: json`, type from
 *   `message_type`, each message its own event id, the broker's `topic/partition/offset`; `maxWait` 100ms)
 *   and a route whose core `http` action PATCHes the same object of the same fake API: one call each;
 * - noop: the same input, the route running `noop`: what consuming and storing cost without any call.
 *
 * Each path: `BENCH_WARM` (500) + `BENCH_MESSAGES` (15,000) messages produced to a fresh topic first, then the
 * server started. The first `BENCH_WARM` runs to end are the warm-up (connecting, joining the group, the code
 * compiled); the rate is counted from the moment they had ended to the last run's end, on the store's own
 * clock (`finished_at`): messages/s, end to end through Kafka, the store and the API. The server's CPU (from
 * /proc/<pid>/stat), this process's (the fake API and the poll of the store), the broker's (kcat) and the rest
 * of the machine's (from /proc/stat) are counted over the same stretch, per message. Every message is checked:
 * its run ended `success` in one attempt, the API got exactly one PATCH for its object (and, on the profile
 * path, one GET for its selector), nothing went to dead letters; a lost or doubled message exits 1.
 *
 * `BENCH_REPEAT` (3) rounds, the medians printed, with each round's ratios profile ÷ http and profile ÷ noop
 * (rate, and server CPU per message). `BENCH_PATHS` (`profile,http,noop`) picks paths. `BENCH_SERVER_ARGS`
 * adds Node flags to the servers (e.g. `--cpu-prof --cpu-prof-dir=.prof`: one profile per path and round);
 * then each phase also prints its measured stretch on the monotonic clock (µs), the clock of a profile's
 * timestamps, so that the warm-up can be left out of its samples. Keep `BENCH_WARM + BENCH_MESSAGES` at or
 * under 100,000: the mock cluster drops the oldest messages of a partition past that (bench/README.md).
 */

import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Kafka, logLevel } from 'kafkajs';
import { countLogged, cpuSeconds, DISPATCHER_MAIN, dispatcherNodeFlags, freePort, kafkaBrokers, kafkaMockPid, machineBusy, median, waitServing } from './common.js';

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 15_000);
const WARM = Number(process.env.BENCH_WARM ?? 500);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
const PATHS = (process.env.BENCH_PATHS ?? 'profile,http,noop').split(',').filter((p) => p !== '');
const SERVER_ARGS = (process.env.BENCH_SERVER_ARGS ?? '').split(' ').filter((a) => a !== '');
/** A phase in which no run ends for this long has stalled: it fails instead of waiting for ever. */
const STALL_MS = 60_000;
const KEY = 'benchKey0123456789abcdefABCDEF';
const TOKEN = 'bench-personal-access-token';
const TYPE = 'update_applied_control';
const TOTAL = WARM + MESSAGES;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** The monotonic clock in µs: V8's profile timestamps are on it. */
const monotonic = () => Number(process.hrtime.bigint() / 1000n);

let failed = false;
function fail(message) {
  process.stderr.write(`[ciso] ERROR: ${message}\n`);
  failed = true;
}

/**
 * A fake CISO Assistant API (the shapes of test/fake-ciso.ts, nothing else): `GET
 * /api/applied-controls/?ref_id=X` → one object `{id: c-X, ref_id: X}`, DRF-paginated; `PATCH
 * /api/applied-controls/<id>/` → the object; each after `setTimeout(1)`, with `Authorization: Token <TOKEN>`
 * (401 otherwise). Counts GETs by ref_id, PATCHes by id, the connections opened to it and the most requests
 * it held at once.
 */
function fakeCiso() {
  const counts = { gets: new Map(), patches: new Map(), refused: 0, other: 0, connections: 0, inFlight: 0, maxInFlight: 0 };
  const bump = (map, key) => map.set(key, (map.get(key) ?? 0) + 1);
  const server = createServer((req, res) => {
    counts.maxInFlight = Math.max(counts.maxInFlight, ++counts.inFlight);
    res.once('finish', () => (counts.inFlight -= 1));
    req.resume();
    req.on('end', () => {
      const answer = (status, body) => {
        const text = JSON.stringify(body);
        setTimeout(() => res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text), 1);
      };
      if (req.headers.authorization !== `Token ${TOKEN}`) {
        counts.refused += 1;
        return answer(401, { detail: 'Invalid token.' });
      }
      const url = new URL(req.url, 'http://fake');
      const ref = url.searchParams.get('ref_id');
      if (req.method === 'GET' && url.pathname === '/api/applied-controls/' && ref !== null) {
        bump(counts.gets, ref);
        return answer(200, { count: 1, next: null, previous: null, results: [{ id: `c-${ref}`, ref_id: ref }] });
      }
      const m = /^\/api\/applied-controls\/c-([^/]+)\/$/.exec(url.pathname);
      if (req.method === 'PATCH' && m !== null) {
        bump(counts.patches, `c-${m[1]}`);
        return answer(200, { id: `c-${m[1]}`, ref_id: m[1], status: 'active' });
      }
      counts.other += 1;
      return answer(404, { detail: 'Not found.' });
    });
  });
  server.on('connection', () => (counts.connections += 1));
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}/api`,
        counts,
        reset() {
          counts.gets = new Map();
          counts.patches = new Map();
          counts.refused = 0;
          counts.other = 0;
          counts.connections = 0;
          counts.maxInFlight = 0;
        },
        close: () => new Promise((r) => server.close(r)),
      });
    });
  });
}

/** The observation of message `i` of a phase: the original's `update_applied_control`, its own selector. */
const refOf = (tag, i) => `${tag}-${i}`;
const observation = (tag, i) => Buffer.from(JSON.stringify({ message_type: TYPE, selector: { ref_id: refOf(tag, i) }, values: { status: 'active' } }));

/** Each path's part of the server's configuration, for a topic. */
function pathConfig(path, topic, brokers, api) {
  if (path === 'profile') {
    return {
      routes: [],
      profiles: { 'ciso-assistant': { api: { url: api, token: TOKEN }, kafka: { bootstrapServers: brokers, topic, groupId: `${topic}-group`, maxWait: '100ms' }, errorsTopic: `${topic}-errors` } },
    };
  }
  const action =
    path === 'http'
      ? { http: { url: `${api}/applied-controls/c-{{ data.selector.ref_id }}/`, method: 'PATCH', headers: { authorization: `Token ${TOKEN}` }, body: '{{ data.values }}' } }
      : { noop: {} };
  return {
    inputs: { bench: { kafka: { brokers, topics: [topic], groupId: `${topic}-group`, fromBeginning: true, maxWait: '100ms' }, decoder: { format: 'json', typeField: 'message_type' } } },
    routes: [{ name: 'bench', match: { type: TYPE }, actions: [action] }],
  };
}

async function startServer(dir, config) {
  const port = await freePort();
  const file = join(dir, 'dispatcher.json');
  writeFileSync(
    file,
    JSON.stringify({
      server: { host: '127.0.0.1', port },
      store: { url: `sqlite:${join(dir, 'dispatcher.db')}` },
      log: { level: 'warn' },
      auth: { psk: [{ service: 'bench', key: KEY }], keyFile: '' },
      actions: { http: { allow: ['127.0.0.1'] } },
      ...config,
    }),
  );
  const child = spawn(process.execPath, [...dispatcherNodeFlags(), ...SERVER_ARGS, DISPATCHER_MAIN, 'serve', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b) => (stderr = (stderr + b).slice(-4000)));
  const logged = countLogged(child.stdout);
  await waitServing(`http://127.0.0.1:${port}`, child, () => stderr);
  return {
    child,
    logged,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)));
    },
  };
}

/**
 * One path: its messages produced, a server started on them, the runs followed to their end through the
 * store (read-only: the runs inserted, by rowid, less those still queued or running), then every message
 * checked.
 */
async function phase(path, round, ctx) {
  const { producer, brokers, api } = ctx;
  const tag = `r${round}-${path}`;
  const topic = `ciso-bench-${process.pid}-${tag}`;
  for (let from = 0; from < TOTAL; from += 1000) {
    const messages = [];
    for (let i = from; i < Math.min(TOTAL, from + 1000); i++) messages.push({ key: `k${i % 64}`, value: observation(tag, i) });
    await producer.send({ topic, acks: -1, messages });
  }
  api.reset();
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-bench-ciso-'));
  let server;
  let db;
  try {
    server = await startServer(dir, pathConfig(path, topic, brokers, api.url));
    db = new Database(join(dir, 'dispatcher.db'), { readonly: true, fileMustExist: true });
    const inserted = db.prepare('SELECT coalesce(max(rowid), 0) AS n FROM runs').pluck();
    const unfinished = db.prepare(`SELECT count(*) FROM runs WHERE status IN ('queued', 'running')`).pluck();
    const ended = () => inserted.get() - unfinished.get();
    // Who used the machine's cores over the measured stretch: this server, this process (the fake API), the broker.
    const broker = ctx.brokerPid === undefined ? () => 0 : () => cpuSeconds(ctx.brokerPid);
    const reading = () => ({ at: performance.now(), mono: monotonic(), server: cpuSeconds(server.child.pid), bench: process.cpuUsage(), broker: broker(), busy: machineBusy() });
    let mark;
    let progress = { n: -1, at: performance.now() };
    for (;;) {
      const n = ended();
      if (mark === undefined && n >= WARM) mark = { n, ...reading() };
      if (n >= TOTAL) break;
      if (n !== progress.n) progress = { n, at: performance.now() };
      else if (performance.now() - progress.at > STALL_MS) throw new Error(`${path}: no run ended for ${STALL_MS / 1000} s, ${n} of ${TOTAL} ended`);
      await sleep(20);
    }
    const end = reading();
    const seconds = (end.at - mark.at) / 1000;
    const n = TOTAL - mark.n;
    if (n < MESSAGES / 2) process.stderr.write(`[ciso] ${path}: the CPU was counted over ${n} runs only (${mark.n} had ended at the first look past the warm-up): more BENCH_MESSAGES\n`);
    const serverCpu = end.server - mark.server;
    const b = process.cpuUsage(mark.bench);
    const benchCpu = (b.user + b.system) / 1e6;
    const brokerCpu = end.broker - mark.broker;
    const others = (end.busy - mark.busy - serverCpu - benchCpu - brokerCpu) / seconds;

    // The rate, on the store's clock: from the WARM-th run's end to the last one's.
    const finished = db.prepare(`SELECT finished_at FROM runs WHERE finished_at IS NOT NULL ORDER BY finished_at LIMIT 1 OFFSET ?`).pluck();
    const from = finished.get(WARM - 1);
    const to = db.prepare('SELECT max(finished_at) FROM runs').pluck().get();
    const rate = MESSAGES / ((to - from) / 1000);

    // Every message: one run, ended success in one attempt, one PATCH of its object (and one GET on the profile's path).
    const q = (sql) => db.prepare(sql).pluck().get();
    const store = {
      events: q('SELECT count(*) FROM events'),
      runs: q('SELECT count(*) FROM runs'),
      success: q(`SELECT count(*) FROM runs WHERE status = 'success'`),
      attempts: q('SELECT count(*) FROM attempts'),
      deadLetters: q('SELECT count(*) FROM dead_letters'),
    };
    if (store.events !== TOTAL || store.runs !== TOTAL || store.success !== TOTAL || store.attempts !== TOTAL || store.deadLetters !== 0) {
      fail(`${path}, round ${round + 1}: ${TOTAL} messages gave ${JSON.stringify(store)}`);
    }
    const { counts } = api;
    const calls = { patches: 0, gets: 0 };
    const wrong = { lostPatch: 0, doubledPatch: 0, lostGet: 0, doubledGet: 0 };
    for (let i = 0; i < TOTAL; i++) {
      const ref = refOf(tag, i);
      const p = counts.patches.get(`c-${ref}`) ?? 0;
      const g = counts.gets.get(ref) ?? 0;
      calls.patches += p;
      calls.gets += g;
      if (path === 'noop') continue;
      if (p === 0) wrong.lostPatch += 1;
      if (p > 1) wrong.doubledPatch += 1;
      if (path !== 'profile') continue;
      if (g === 0) wrong.lostGet += 1;
      if (g > 1) wrong.doubledGet += 1;
    }
    const expected = path === 'profile' ? { patches: TOTAL, gets: TOTAL } : path === 'http' ? { patches: TOTAL, gets: 0 } : { patches: 0, gets: 0 };
    if (Object.values(wrong).some((x) => x > 0) || calls.patches !== expected.patches || calls.gets !== expected.gets || counts.patches.size !== expected.patches || counts.refused + counts.other > 0) {
      fail(`${path}, round ${round + 1}: the API got ${JSON.stringify({ ...calls, ...wrong, refused: counts.refused, other: counts.other, objects: counts.patches.size })} for ${TOTAL} messages`);
    }
    return {
      path,
      rate,
      n,
      seconds,
      cpu: (serverCpu * 1e6) / n,
      bench: (benchCpu * 1e6) / n,
      broker: (brokerCpu * 1e6) / n,
      cores: { server: serverCpu / seconds, bench: benchCpu / seconds, broker: brokerCpu / seconds, others },
      requests: (calls.patches + calls.gets) / TOTAL,
      connections: counts.connections,
      maxInFlight: counts.maxInFlight,
      bounds: [mark.mono, end.mono],
      logged: server.logged,
    };
  } finally {
    db?.close();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const fmt = (x, digits = 0) => x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`);
console.log(`each round: ${PATHS.join(', ')}, each ${fmt(WARM)} messages of warm-up + ${fmt(MESSAGES)} measured, through Kafka (${process.env.BENCH_KAFKA_BROKERS ? process.env.BENCH_KAFKA_BROKERS : "librdkafka's mock cluster"}); medians of ${REPEAT} rounds\n`);

const brokers = await kafkaBrokers();
const producer = new Kafka({ brokers, clientId: 'ciso-bench', logLevel: logLevel.NOTHING }).producer({ allowAutoTopicCreation: true, idempotent: false });
await producer.connect();
const brokerPid = await kafkaMockPid();
const api = await fakeCiso();
const rounds = [];
try {
  for (let r = 0; r < REPEAT; r++) {
    const round = {};
    for (const path of PATHS) round[path] = await phase(path, r, { producer, brokers, api, brokerPid });
    rounds.push(round);
    const parts = PATHS.map((p) => {
      const x = round[p];
      return `${p} ${fmt(x.rate)} messages/s (${fmt(x.cpu)} µs server CPU, ${fmt(x.bench)} µs bench, ${fmt(x.broker)} µs broker per message)`;
    });
    console.log(`round ${r + 1}: ${parts.join('; ')}`);
    console.log(
      `  cores in use (of ${cpus().length}): ${PATHS.map((p) => {
        const c = round[p].cores;
        return `${p}: server ${fmt(c.server, 2)}, bench ${fmt(c.bench, 2)}, broker ${fmt(c.broker, 2)}, the rest of the machine ${fmt(Math.max(0, c.others), 2)}`;
      }).join('; ')}`,
    );
    for (const p of PATHS) {
      const l = round[p].logged;
      if (l.errors + l.warnings > 0) console.log(`  ${p}: the server logged ${l.errors} errors and ${l.warnings} warnings${l.first ? ` (first error: ${l.first})` : ''}`);
    }
    if (SERVER_ARGS.length > 0) console.log(`  measured stretches on the monotonic clock (µs): ${PATHS.map((p) => `${p} ${round[p].bounds[0]}–${round[p].bounds[1]}`).join(', ')}`);
  }
} finally {
  await producer.disconnect().catch(() => {});
  await api.close();
}

const m = (pick) => median(rounds.map(pick));
console.log(`\nmedians of ${REPEAT} rounds (${fmt(MESSAGES)} messages each, from the end of the ${fmt(WARM)}th run to the last):`);
const label = { profile: 'profile (GET by selector + PATCH, 1 ms each)', http: 'core Kafka input → http PATCH (1 ms)', noop: 'core Kafka input → noop' };
for (const p of PATHS) {
  console.log(
    `  ${label[p].padEnd(46)} ${fmt(m((r) => r[p].rate)).padStart(7)} messages/s   server CPU ${fmt(m((r) => r[p].cpu)).padStart(5)} µs per message   bench (fake API) ${fmt(m((r) => r[p].bench))} µs   broker ${fmt(m((r) => r[p].broker))} µs   API requests per message ${fmt(m((r) => r[p].requests), 2)} (connections ${fmt(m((r) => r[p].connections))}, at most ${fmt(m((r) => r[p].maxInFlight))} in flight)`,
  );
}
for (const ref of ['http', 'noop']) {
  if (!PATHS.includes('profile') || !PATHS.includes(ref)) continue;
  const rate = (r) => r.profile.rate / r[ref].rate;
  const cpu = (r) => r.profile.cpu / r[ref].cpu;
  console.log(
    `  profile ÷ ${ref.padEnd(4)}: ${fmt(m(rate), 2)}× the rate (rounds ${rounds.map((r) => fmt(rate(r), 2)).join(', ')}), ${fmt(m(cpu), 2)}× the server CPU per message (rounds ${rounds.map((r) => fmt(cpu(r), 2)).join(', ')})`,
  );
}
console.log(`  the rest of the machine (cores, by round and path): ${rounds.map((r) => PATHS.map((p) => fmt(Math.max(0, r[p].cores.others), 2)).join('/')).join(', ')}`);
if (failed) console.log('\nFAILED: a message was lost or doubled, or a run did not end in success (above)');
// The Kafka mock cluster (a child process) would keep the event loop alive; the exit handler stops it.
process.exit(failed ? 1 : 0);
