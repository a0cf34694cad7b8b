#!/usr/bin/env node
/**
 * The Communications Backbone profile end to end over HTTP, beside the core's generic batch path, in one
 * `dispatcher serve` child process per store (`node bench/backbone.js`), on SQLite and on PostgreSQL:
 *
 * - set-up (not measured): `BENCH_CLIENTS` clients (default 1,000) registered with `POST /client`, their
 *   subscriptions varied over the topic space `fleet.<region>.<platform>.<kind>` (6 × 12 × 8 topics): a few
 *   `#`, some `fleet.<region>.#`, `fleet.*.*.<kind>`, `fleet.*.<platform>.<kind>`, `fleet.<region>.<platform>.*`,
 *   and most one exact topic; each client's token from `GET /token`. Every secret costs a scrypt hash twice
 *   (made, then checked), so this takes about four minutes per store on 2 cores, and the one server of a store
 *   serves all its rounds (bench/playbook.js starts one per round);
 * - backbone: `BENCH_MESSAGES` messages (default 5,000), each a random topic from a random client, `POST /send`
 *   with its bearer token, 8 in flight over 8 connections, the body carrying its send time. Meanwhile 8
 *   receivers, over 8 connections of their own, `GET /receive?max_messages=100` round robin over the clients
 *   that still have a delivery to come (counted from the subscriptions by a matcher of this script, for each
 *   message once its send was answered); a client whose poll came back full (100) is polled again first, as a
 *   client drains its inbox before it waits, and one whose poll came back empty waits `BENCH_POLL_BACKOFF_MS`
 *   (20) before it is polled again. The phase ends when every expected delivery was received. Deliveries/s
 *   from the first send to the last receive, messages/s from the first send to the last answer, send-to-receive
 *   latency (the receive's answer minus the send time in the body: it includes waiting for the poll), the
 *   server's CPU per delivery. Each delivery must arrive exactly once (by message and client, and by inbox
 *   message id), with nothing unexpected; afterwards each message's run is read (`GET /v1/runs/{id}`) and its
 *   `delivered` checked against the matcher. Anything lost, doubled or stray stops the bench with exit code 1;
 * - core (the reference, same server, same round, right after): as many CloudEvents as that round delivered,
 *   each with a body like a message's, `POST /v1/events` in batches of 50 with the admin PSK, 4 in flight,
 *   routed to `noop`; runs/s from the first POST until no run is left queued or running (read from the store,
 *   as bench/playbook.js does), the server's CPU per run.
 *
 * Then, per round and as medians, the backbone's deliveries/s over the core's runs/s and its CPU per delivery
 * over the core's CPU per run. One warm-up round of each path (500 messages, then the core as usual) runs
 * first, unmeasured. On PostgreSQL the database's CPU for the dispatcher (its backends, told apart by their
 * `application_name`, from /proc) is printed beside the dispatcher's; on either store, the cores the rest of
 * the machine used meanwhile (PostgreSQL's background processes included).
 *
 * Environment: `BENCH_STORE` (`sqlite`, `postgres` or `both`, the default), `BENCH_REPEAT` (3), `BENCH_CLIENTS`
 * (1,000), `BENCH_MESSAGES` (5,000), `BENCH_POLL_BACKOFF_MS` (20), `BENCH_SERVER_ARGS` (Node flags for the
 * dispatcher, e.g. `--cpu-prof --cpu-prof-dir=.prof`; then each round also prints its phases' bounds on the
 * monotonic clock, in µs, the clock of the profile's timestamps), `DISPATCHER_TEST_POSTGRES_URL` (default
 * postgres://postgres@127.0.0.1:5432/test; a fresh schema there, dropped after).
 */

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { Pool } from 'undici';
import { cpuSeconds, DISPATCHER_MAIN, dispatcherNodeFlags, dropPostgresSchema, freePort, machineBusy, median, PG_URL, postgresSchemaUrl, waitServing } from './common.js';

const STORES = (process.env.BENCH_STORE ?? 'both') === 'both' ? ['sqlite', 'postgres'] : [process.env.BENCH_STORE];
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 1000);
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 5000);
const POLL_BACKOFF_MS = Number(process.env.BENCH_POLL_BACKOFF_MS ?? 20);
const SERVER_ARGS = (process.env.BENCH_SERVER_ARGS ?? '').split(' ').filter((a) => a !== '');
const WARM_MESSAGES = Math.min(500, MESSAGES);
const SEND_IN_FLIGHT = 8;
const RECEIVE_IN_FLIGHT = 8;
const RECEIVE_MAX = 100;
const CORE_BATCH = 50;
const CORE_IN_FLIGHT = 4;
/** Registrations and token grants in flight: each costs a scrypt hash on libuv's pool of 4 threads. */
const SETUP_IN_FLIGHT = 4;
/** A phase in which nothing is received (or no run ends) for this long has stalled: it fails with what it got. */
const STALL_MS = 30_000;
const KEY = 'benchKey0123456789abcdefABCDEF';
const ADMIN = { authorization: `PSK ${KEY}` };
const REF_TYPE = 'bench.ref';
/** The dispatcher's PostgreSQL connections are told apart by it: their CPU is the database's share of the work. */
const APP_NAME = `dispatcher-bench-backbone-${process.pid}`;

function withAppName(url) {
  const u = new URL(url);
  u.searchParams.set('application_name', APP_NAME);
  return u.toString();
}

for (const s of STORES) if (s !== 'sqlite' && s !== 'postgres') throw new Error(`BENCH_STORE: sqlite, postgres or both, not ${s}`);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const progress = (line) => process.stderr.write(`[backbone] ${line}\n`);
/** Wall-clock time in ms with µs resolution: the send time in a body, and the receive time it is compared with. */
const now = () => performance.timeOrigin + performance.now();
/** The monotonic clock in µs: V8's profile timestamps are on it. */
const monotonic = () => Number(process.hrtime.bigint() / 1000n);

// ------------------------------------------------------------------------------------ the topic space

/** A small seeded generator (mulberry32): the same clients and messages in every run of the bench. */
function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CLASSES = ['#', 'fleet.<region>.#', 'fleet.*.*.<kind>', 'fleet.*.<platform>.<kind>', 'fleet.<region>.<platform>.*', 'exact'];
const REGIONS = ['eu', 'us', 'ap', 'af', 'sa', 'arctic'];
const PLATFORMS = ['glider', 'buoy', 'ship', 'drone', 'auv', 'uav', 'mooring', 'float', 'station', 'satellite', 'lander', 'profiler'];
const KINDS = ['status', 'position', 'alert', 'telemetry', 'log', 'mission', 'health', 'ack'];
const pick = (rnd, list) => list[Math.floor(rnd() * list.length)];
const randomTopic = (rnd) => `fleet.${pick(rnd, REGIONS)}.${pick(rnd, PLATFORMS)}.${pick(rnd, KINDS)}`;

/**
 * Each client's subscription. Per 1,000 clients: 2 `#`, 6 `fleet.<region>.#`, 4 `fleet.*.*.<kind>`, 48
 * `fleet.*.<platform>.<kind>`, 72 `fleet.<region>.<platform>.*`, the rest one exact topic; a random topic
 * reaches about 6.5 of them on average (2 + 6/6 + 4/8 + 48/96 + 72/72 + 868/576).
 */
function subscriptions(n) {
  const rnd = random(23);
  const share = (per1000, min = 0) => Math.max(min, Math.round((n * per1000) / 1000));
  const out = [];
  const add = (count, make) => {
    for (let i = 0; i < count && out.length < n; i++) out.push(make());
  };
  add(share(2, 1), () => '#');
  add(share(6), () => `fleet.${pick(rnd, REGIONS)}.#`);
  add(share(4), () => `fleet.*.*.${pick(rnd, KINDS)}`);
  add(share(48), () => `fleet.*.${pick(rnd, PLATFORMS)}.${pick(rnd, KINDS)}`);
  add(share(72), () => `fleet.${pick(rnd, REGIONS)}.${pick(rnd, PLATFORMS)}.*`);
  add(n - out.length, () => randomTopic(rnd));
  return out;
}

/** AMQP topic matching, written here independently of the server's trie: `*` one word, `#` zero or more. */
function matches(pattern, topic, p = 0, t = 0) {
  if (p === pattern.length) return t === topic.length;
  const w = pattern[p];
  if (w === '#') {
    for (let k = t; k <= topic.length; k++) if (matches(pattern, topic, p + 1, k)) return true;
    return false;
  }
  if (t === topic.length) return false;
  return (w === '*' || w === topic[t]) && matches(pattern, topic, p + 1, t + 1);
}

// --------------------------------------------------------------------------------------- the server

/** Runs unfinished and ended in success, read from the server's store (SQLite read-only, or PostgreSQL). */
async function storeCounter(store, dbPath, schema) {
  if (store === 'sqlite') {
    const db = new Database(dbPath, { readonly: true, fileMustExist: true });
    const left = db.prepare(`SELECT count(*) AS n FROM runs WHERE status IN ('queued', 'running')`);
    const succeeded = db.prepare(`SELECT count(*) AS n FROM runs WHERE status = 'success'`);
    return { unfinished: async () => left.get().n, succeeded: async () => succeeded.get().n, backends: async () => [], close: async () => db.close() };
  }
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  await client.query(`SET search_path TO ${schema}`);
  const count = async (where) => Number((await client.query(`SELECT count(*) AS n FROM runs WHERE ${where}`)).rows[0].n);
  // The dispatcher's own connections (its application_name), so that other users of the database are not counted.
  const backends = async () => (await client.query(`SELECT pid FROM pg_stat_activity WHERE application_name = $1`, [APP_NAME])).rows.map((r) => r.pid);
  return { unfinished: () => count(`status IN ('queued', 'running')`), succeeded: () => count(`status = 'success'`), backends, close: () => client.end() };
}

async function startServer(store) {
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-bench-backbone-'));
  const schema = `dispatcher_bench_backbone_${process.pid}`;
  const dbPath = join(dir, 'dispatcher.db');
  const port = await freePort();
  const config = join(dir, 'dispatcher.json');
  writeFileSync(
    config,
    JSON.stringify({
      server: { port, rateLimit: { max: 0 } },
      store: { url: store === 'sqlite' ? `sqlite:${dbPath}` : withAppName(postgresSchemaUrl(schema)) },
      log: { level: 'warn' },
      auth: { keyFile: '', psk: [{ service: 'bench', key: KEY }], tokens: { rateLimit: { perAddress: 0, perClient: 0 } } },
      inboxes: { maxMessages: 1_000_000, maxReceive: 1000 },
      routes: [{ name: 'bench-ref', match: { type: REF_TYPE }, actions: [{ noop: {} }] }],
      profiles: { 'communications-backbone': {} },
    }),
  );
  if (store === 'postgres') await dropPostgresSchema(schema);
  let stderr = '';
  const child = spawn(process.execPath, [...dispatcherNodeFlags(), ...SERVER_ARGS, DISPATCHER_MAIN, 'serve', '--config', config], { cwd: process.cwd(), stdio: ['ignore', 'inherit', 'pipe'] });
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
    process.stderr.write(chunk);
  });
  const url = `http://127.0.0.1:${port}`;
  await waitServing(url, child, () => stderr);
  const runs = await storeCounter(store, dbPath, schema);
  return {
    url,
    pid: child.pid,
    runs,
    cpu: () => cpuSeconds(child.pid),
    warnings: () => stderr,
    async stop() {
      await runs.close();
      child.kill('SIGTERM');
      await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)));
      rmSync(dir, { recursive: true, force: true });
      if (store === 'postgres') await dropPostgresSchema(schema);
    },
  };
}

async function request(pool, method, path, headers, body, expected) {
  const res = await pool.request({ path, method, headers, body });
  const text = await res.body.text();
  if (res.statusCode !== expected) throw new Error(`${method} ${path}: HTTP ${res.statusCode} ${text.slice(0, 300)}`);
  return text === '' ? null : JSON.parse(text);
}

/** `count` jobs, `n` at a time. */
async function inFlight(n, count, job) {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < count) await job(next++);
    }),
  );
}

/** The clients, registered, each with its token and its subscription's words. */
async function register(server, pool) {
  const subs = subscriptions(CLIENTS);
  const clients = subs.map((subscription, i) => ({ id: `bench-${String(i).padStart(5, '0')}`, subscription, kind: classify(subscription), words: subscription.split('.'), secret: '', auth: {} }));
  let t0 = performance.now();
  await inFlight(SETUP_IN_FLIGHT, clients.length, async (i) => {
    const c = clients[i];
    const answer = await request(pool, 'POST', '/client', { ...ADMIN, 'content-type': 'application/json' }, JSON.stringify({ client_id: c.id, client_name: `bench client ${i}`, subscription: c.subscription }), 201);
    c.secret = answer.secret;
    if ((i + 1) % 250 === 0) progress(`  ${i + 1} clients registered`);
  });
  progress(`${clients.length} clients registered in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  t0 = performance.now();
  await inFlight(SETUP_IN_FLIGHT, clients.length, async (i) => {
    const c = clients[i];
    const answer = await request(pool, 'GET', `/token?client_id=${encodeURIComponent(c.id)}&secret=${encodeURIComponent(c.secret)}`, {}, undefined, 200);
    c.auth = { authorization: `Bearer ${answer.token}` };
  });
  progress(`${clients.length} tokens granted in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return clients;
}

// ----------------------------------------------------------------------------------------- a phase

/** CPU seconds of each of the dispatcher's PostgreSQL backends so far. */
async function backendCpu(server) {
  return new Map((await server.runs.backends()).map((pid) => [pid, cpuSeconds(pid)]));
}

/**
 * Server, client (this process), PostgreSQL (the dispatcher's backends: those present at the end, from the
 * start or from their birth) and machine CPU from here on; `end()` gives what each used.
 */
async function meter(server) {
  const backends = await backendCpu(server);
  const serverCpu = server.cpu();
  const client = process.cpuUsage();
  const busy = machineBusy();
  const from = monotonic();
  return {
    async end(seconds) {
      const c = process.cpuUsage(client);
      const server2 = server.cpu() - serverCpu;
      const busy2 = machineBusy();
      const clientCpu = (c.user + c.system) / 1e6;
      let postgres = 0;
      for (const [pid, cpu] of await backendCpu(server)) if (Number.isFinite(cpu)) postgres += cpu - (backends.get(pid) ?? 0);
      // Whatever else ran on the machine meanwhile (other processes, the kernel's threads), in cores.
      const others = (busy2 - busy - server2 - clientCpu - postgres) / seconds;
      return { cpu: server2, clientCpu, postgres, others, from, to: monotonic() };
    },
  };
}

/** Percentile (0–100) of sorted values, nearest rank. */
function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

let failed = false;

function fail(message) {
  if (!failed) process.stderr.write(`\n[backbone] ERROR: ${message}\n\n`);
  failed = true;
  const err = new Error(message);
  err.benchFailure = true;
  throw err;
}

/**
 * `n` messages sent and every delivery received. `tag` sets the messages' phase (a message of another phase
 * received here is an error), `seed` their topics and senders.
 */
async function backbone(server, pools, clients, n, tag, seed) {
  const rnd = random(seed);
  const topicWords = new Map();
  const messages = Array.from({ length: n }, (_, seq) => {
    const topic = randomTopic(rnd);
    let recipients = topicWords.get(topic);
    if (recipients === undefined) {
      const words = topic.split('.');
      recipients = [];
      clients.forEach((c, i) => {
        if (matches(c.words, words)) recipients.push(i);
      });
      topicWords.set(topic, recipients);
    }
    return { seq, topic, sender: Math.floor(rnd() * clients.length), recipients, run: null, got: new Uint8Array(recipients.length) };
  });
  const expectedTotal = messages.reduce((sum, m) => sum + m.recipients.length, 0);
  /** Deliveries each client is owed by messages whose send was answered, not yet received. */
  const pending = new Int32Array(clients.length);
  const busy = new Uint8Array(clients.length);
  const notBefore = new Float64Array(clients.length);
  const inboxIds = new Set();
  const latencies = [];
  const byClass = CLASSES.map(() => []);
  let received = 0;
  let polls = 0;
  let emptyPolls = 0;
  let sent = 0;
  let sendsDone = false;
  let lastAnswer = 0;
  let lastReceive = 0;
  let lastProgress = performance.now();
  let wake = () => {};
  let aborted = false;
  const errors = [];

  const m = await meter(server);
  const t0 = now();

  const senders = inFlight(SEND_IN_FLIGHT, n, async (seq) => {
    if (aborted) return;
    const msg = messages[seq];
    const sentAt = now();
    const body = { phase: tag, seq, sentAt, vehicle: `${msg.topic.split('.')[2]}-${seq % 97}`, lat: 43.7 + (seq % 50) / 100, lon: 7.4 - (seq % 30) / 100, battery: 80 - (seq % 60) };
    const answer = await request(pools.send, 'POST', '/send', { ...clients[msg.sender].auth, 'content-type': 'application/json' }, JSON.stringify({ topic: msg.topic, body }), 200);
    if (typeof answer.run !== 'string') fail(`/send answered ${JSON.stringify(answer)}`);
    msg.run = answer.run;
    // A delivery may be received before its send's answer is read here (the run starts at intake): owed only the rest.
    msg.recipients.forEach((c, k) => {
      if (msg.got[k] === 0) pending[c]++;
    });
    sent++;
    lastAnswer = now();
    wake();
  }).then(
    () => {
      sendsDone = true;
      wake();
    },
    (err) => {
      aborted = true;
      throw err;
    },
  );

  let cursor = 0;
  /** Clients whose last poll came back full: polled again first, as a client drains its inbox before it waits. */
  const again = [];
  /** The next client owed a delivery, not being polled and not backing off; -1 when none is now. */
  const nextClient = () => {
    while (again.length > 0) {
      const c = again.shift();
      if (pending[c] > 0 && busy[c] === 0) return c;
    }
    const t = performance.now();
    for (let k = 0; k < clients.length; k++) {
      const c = (cursor + k) % clients.length;
      if (pending[c] > 0 && busy[c] === 0 && notBefore[c] <= t) {
        cursor = (c + 1) % clients.length;
        return c;
      }
    }
    return -1;
  };

  const receivers = Array.from({ length: RECEIVE_IN_FLIGHT }, async () => {
    while (received < expectedTotal || !sendsDone) {
      if (errors.length > 0 || aborted) return;
      if (performance.now() - lastProgress > STALL_MS) fail(`stalled: ${received} of ${expectedTotal} deliveries received, ${sent} of ${n} messages sent, nothing received for ${STALL_MS / 1000} s`);
      const c = nextClient();
      if (c === -1) {
        await Promise.race([new Promise((resolve) => (wake = resolve)), sleep(2)]);
        continue;
      }
      busy[c] = 1;
      let list;
      try {
        list = await request(pools.receive, 'GET', `/receive?max_messages=${RECEIVE_MAX}`, clients[c].auth, undefined, 200);
      } finally {
        busy[c] = 0;
      }
      const at = now();
      polls++;
      if (list.length === 0) {
        emptyPolls++;
        notBefore[c] = performance.now() + POLL_BACKOFF_MS;
        continue;
      }
      if (list.length === RECEIVE_MAX) again.push(c);
      for (const item of list) {
        if (inboxIds.has(item.id)) errors.push(`inbox message ${item.id} received twice (client ${clients[c].id})`);
        inboxIds.add(item.id);
        const body = item.body;
        const msg = body?.phase === tag ? messages[body.seq] : undefined;
        if (msg === undefined) {
          errors.push(`client ${clients[c].id} received a message of another phase or an unknown one: ${JSON.stringify(item).slice(0, 200)}`);
          continue;
        }
        const k = msg.recipients.indexOf(c);
        if (k === -1) {
          errors.push(`client ${clients[c].id} (${clients[c].subscription}) received message ${msg.seq} (${msg.topic}), which its subscription does not match`);
          continue;
        }
        if (msg.got[k] !== 0) {
          errors.push(`client ${clients[c].id} received message ${msg.seq} twice`);
          continue;
        }
        if (item.topic !== msg.topic) errors.push(`message ${msg.seq} received with topic ${item.topic}, sent with ${msg.topic}`);
        msg.got[k] = 1;
        if (msg.run !== null) pending[c]--;
        received++;
        latencies.push(at - body.sentAt);
        byClass[clients[c].kind].push(at - body.sentAt);
      }
      lastReceive = at;
      lastProgress = performance.now();
      if (errors.length > 0) fail(`${errors.length} deliveries wrong; the first: ${errors[0]}`);
    }
  }).map((p) =>
    p.catch((err) => {
      aborted = true;
      throw err;
    }),
  );
  await Promise.all([senders, ...receivers]);
  const seconds = (lastReceive - t0) / 1000;
  const used = await m.end(seconds);
  if (errors.length > 0) fail(`${errors.length} deliveries wrong; the first: ${errors[0]}`);
  const lost = messages.reduce((sum, msg) => sum + msg.got.reduce((s, g) => s + (g === 0 ? 1 : 0), 0), 0);
  if (received !== expectedTotal || lost !== 0) fail(`${lost} deliveries lost: ${received} of ${expectedTotal} received`);

  // Nothing more may come: every inbox polled once more must be empty (a doubled message would be there now).
  await waitEnded(server, 'the deliver runs');
  let strays = 0;
  await inFlight(RECEIVE_IN_FLIGHT, clients.length, async (c) => {
    const list = await request(pools.receive, 'GET', `/receive?max_messages=${RECEIVE_MAX}`, clients[c].auth, undefined, 200);
    strays += list.length;
  });
  if (strays !== 0) fail(`${strays} messages were still in the inboxes after every expected delivery was received (doubled or unexpected)`);
  // And the server's own count: each message's run ended `success` having delivered to as many inboxes as the matcher says.
  let serverDelivered = 0;
  await inFlight(RECEIVE_IN_FLIGHT, n, async (seq) => {
    const msg = messages[seq];
    const run = await request(pools.receive, 'GET', `/v1/runs/${msg.run}`, ADMIN, undefined, 200);
    if (run.status !== 'success' || run.result?.delivered !== msg.recipients.length) {
      fail(`message ${seq} (${msg.topic}): its run ${msg.run} is ${run.status} having delivered ${run.result?.delivered}, the subscriptions give ${msg.recipients.length}`);
    }
    serverDelivered += run.result.delivered;
  });
  latencies.sort((a, b) => a - b);
  for (const l of byClass) l.sort((a, b) => a - b);
  return {
    byClass: byClass.map((l) => ({ deliveries: l.length, p50: percentile(l, 50), p99: percentile(l, 99) })),
    n,
    deliveries: expectedTotal,
    serverDelivered,
    seconds,
    sendSeconds: (lastAnswer - t0) / 1000,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: latencies[latencies.length - 1],
    polls,
    emptyPolls,
    ...used,
  };
}

/** Waits until no run is left queued or running in the store. */
async function waitEnded(server, what) {
  const since = performance.now();
  while ((await server.runs.unfinished()) > 0) {
    if (performance.now() - since > STALL_MS) fail(`${what}: runs still unfinished after ${STALL_MS / 1000} s`);
    await sleep(20);
  }
}

/** `n` CloudEvents (batches of 50) to `noop`, until every run ended; each must end in success. */
async function core(server, pool, n, tag) {
  const batches = Math.ceil(n / CORE_BATCH);
  const bodies = Array.from({ length: batches }, (_, b) =>
    JSON.stringify(
      Array.from({ length: Math.min(CORE_BATCH, n - b * CORE_BATCH) }, (_, i) => {
        const seq = b * CORE_BATCH + i;
        return {
          specversion: '1.0',
          id: `${tag}-${seq}`,
          source: 'urn:bench',
          type: REF_TYPE,
          subject: `fleet.eu.glider.status`,
          data: { phase: tag, seq, sentAt: now(), vehicle: `glider-${seq % 97}`, lat: 43.7 + (seq % 50) / 100, lon: 7.4 - (seq % 30) / 100, battery: 80 - (seq % 60) },
        };
      }),
    ),
  );
  await waitEnded(server, 'before the core phase');
  const before = await server.runs.succeeded();
  const m = await meter(server);
  const t0 = performance.now();
  await inFlight(CORE_IN_FLIGHT, batches, (b) => request(pool, 'POST', '/v1/events', { ...ADMIN, 'content-type': 'application/cloudevents-batch+json' }, bodies[b], 202));
  await waitEnded(server, 'the core phase');
  const seconds = (performance.now() - t0) / 1000;
  const used = await m.end(seconds);
  const ended = (await server.runs.succeeded()) - before;
  if (ended !== n) fail(`core: ${ended} of ${n} runs ended in success`);
  return { n, seconds, ...used };
}

// ------------------------------------------------------------------------------------------ a store

const fmt = (x, digits = 0) => x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const us = (seconds, n) => (seconds * 1e6) / n;

async function runStore(store) {
  progress(`${store}: starting dispatcher serve`);
  const server = await startServer(store);
  const setupPool = new Pool(server.url, { connections: SETUP_IN_FLIGHT, pipelining: 1 });
  const pools = {
    send: new Pool(server.url, { connections: SEND_IN_FLIGHT, pipelining: 1 }),
    receive: new Pool(server.url, { connections: RECEIVE_IN_FLIGHT, pipelining: 1 }),
    core: new Pool(server.url, { connections: CORE_IN_FLIGHT, pipelining: 1 }),
  };
  try {
    const clients = await register(server, setupPool);
    progress(`${store}: warm-up (${WARM_MESSAGES} messages, then their deliveries' count of core runs), unmeasured`);
    const w = await backbone(server, pools, clients, WARM_MESSAGES, 'warm', 1000);
    await core(server, pools.core, w.deliveries, 'warm');
    const rounds = [];
    for (let r = 0; r < REPEAT; r++) {
      progress(`${store}: round ${r + 1} of ${REPEAT}: backbone, ${MESSAGES} messages`);
      const b = await backbone(server, pools, clients, MESSAGES, `r${r}`, 2000 + r);
      progress(`${store}: round ${r + 1}: ${fmt(b.deliveries / b.seconds)} deliveries/s; core, ${b.deliveries} runs`);
      const c = await core(server, pools.core, b.deliveries, `r${r}`);
      rounds.push({ b, c });
      const pgLine = (x, per) => (store === 'postgres' ? ` + PostgreSQL ${fmt(us(x.postgres, per))}` : '');
      console.log(
        `${store} round ${r + 1}: backbone ${fmt(b.n / b.sendSeconds)} messages/s sent, ${fmt(b.deliveries / b.seconds)} deliveries/s end to end ` +
          `(fan-out ${fmt(b.deliveries / b.n, 2)}), send→receive p50 ${fmt(b.p50, 1)} ms p99 ${fmt(b.p99, 1)} ms (max ${fmt(b.max, 1)}), ` +
          `server CPU ${fmt(us(b.cpu, b.deliveries))} µs${pgLine(b, b.deliveries)} per delivery; ${fmt(b.polls)} polls, ${fmt((100 * b.emptyPolls) / b.polls, 1)} % empty`,
      );
      console.log(
        `${store} round ${r + 1}: send→receive p50/p99 by subscription: ${b.byClass
          .map((x, i) => `${CLASSES[i]} ${x.deliveries === 0 ? '-' : `${fmt(x.p50, 0)}/${fmt(x.p99, 0)} ms (${fmt((100 * x.deliveries) / b.deliveries, 0)} %)`}`)
          .join(', ')}`,
      );
      console.log(`${store} round ${r + 1}: core ${fmt(c.n / c.seconds)} runs/s, server CPU ${fmt(us(c.cpu, c.n))} µs${pgLine(c, c.n)} per run`);
      console.log(
        `${store} round ${r + 1}: backbone ÷ core: ${fmt(b.deliveries / b.seconds / (c.n / c.seconds), 3)}× the rate, ${fmt(us(b.cpu, b.deliveries) / us(c.cpu, c.n), 2)}× the server CPU per unit; ` +
          `the rest of the machine: ${fmt(Math.max(0, b.others), 2)} / ${fmt(Math.max(0, c.others), 2)} cores`,
      );
      if (SERVER_ARGS.length > 0) console.log(`${store} round ${r + 1}: phases on the monotonic clock (µs): backbone ${b.from}–${b.to}, core ${c.from}–${c.to}`);
    }
    return { store, rounds };
  } finally {
    await Promise.all([setupPool.close(), ...Object.values(pools).map((p) => p.close())]);
    await server.stop();
  }
}

// --------------------------------------------------------------------------------------------- main

const subs = subscriptions(CLIENTS);
const expectedFanOut = (() => {
  let sum = 0;
  const words = subs.map((s) => s.split('.'));
  let topics = 0;
  for (const r of REGIONS)
    for (const p of PLATFORMS)
      for (const k of KINDS) {
        const t = ['fleet', r, p, k];
        topics++;
        for (const w of words) if (matches(w, t)) sum++;
      }
  return sum / topics;
})();
console.log(`machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`);
console.log(
  `each store: ${fmt(CLIENTS)} clients (subscriptions: ${CLASSES.map((label, i) => `${subs.filter((s) => classify(s) === i).length} ${label}`).join(', ')}; ` +
    `mean fan-out over the ${REGIONS.length * PLATFORMS.length * KINDS.length} topics ${fmt(expectedFanOut, 2)})`,
);
console.log(
  `each round: ${fmt(MESSAGES)} messages, ${SEND_IN_FLIGHT} sends and ${RECEIVE_IN_FLIGHT} receives (max_messages=${RECEIVE_MAX}) in flight; core: as many events as deliveries, batches of ${CORE_BATCH}, ${CORE_IN_FLIGHT} in flight; medians of ${REPEAT} rounds\n`,
);

/** The kinds of subscription, as `classify` numbers them. */
function classify(s) {
  if (s === '#') return 0;
  if (s.endsWith('.#')) return 1;
  if (s.startsWith('fleet.*.*.')) return 2;
  if (s.startsWith('fleet.*.')) return 3;
  if (s.endsWith('.*')) return 4;
  return 5;
}

const results = [];
try {
  for (const store of STORES) results.push(await runStore(store));
} catch (err) {
  if (!err.benchFailure) process.stderr.write(`\n[backbone] ERROR: ${err.stack ?? err}\n`);
  process.exitCode = 1;
}

if (results.length > 0) {
  console.log(`\nmedians of ${REPEAT} rounds (each ratio: the median of the rounds' own ratios, each round against its own reference):\n`);
  console.log('| store | messages/s sent | deliveries/s end to end | fan-out | send→receive p50 / p99 | server CPU per delivery | core: runs/s | core: CPU per run | rate ratio | CPU ratio |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const { store, rounds } of results) {
    const m = (f) => median(rounds.map(f));
    const pgCpu = (x, per) => (store === 'postgres' ? ` + ${fmt(m((r) => us(r[x].postgres, r[x][per])))} PG` : '');
    console.log(
      `| ${store} | ${fmt(m((r) => r.b.n / r.b.sendSeconds))} | ${fmt(m((r) => r.b.deliveries / r.b.seconds))} | ${fmt(m((r) => r.b.deliveries / r.b.n), 2)} | ` +
        `${fmt(m((r) => r.b.p50), 1)} / ${fmt(m((r) => r.b.p99), 1)} ms | ${fmt(m((r) => us(r.b.cpu, r.b.deliveries)))} µs${pgCpu('b', 'deliveries')} | ` +
        `${fmt(m((r) => r.c.n / r.c.seconds))} | ${fmt(m((r) => us(r.c.cpu, r.c.n)))} µs${pgCpu('c', 'n')} | ` +
        `${fmt(m((r) => r.b.deliveries / r.b.seconds / (r.c.n / r.c.seconds)), 3)}× | ${fmt(m((r) => us(r.b.cpu, r.b.deliveries) / us(r.c.cpu, r.c.n)), 2)}× |`,
    );
  }
  for (const { store, rounds } of results) {
    console.log(
      `${store}: rounds' rate ratios ${rounds.map((r) => fmt(r.b.deliveries / r.b.seconds / (r.c.n / r.c.seconds), 3)).join(', ')}; CPU ratios ${rounds.map((r) => fmt(us(r.b.cpu, r.b.deliveries) / us(r.c.cpu, r.c.n), 2)).join(', ')}; ` +
        `server CPU per message sent ${fmt(median(rounds.map((r) => us(r.b.cpu, r.b.n))))} µs; client CPU per delivery ${fmt(median(rounds.map((r) => us(r.b.clientCpu, r.b.deliveries))))} µs; ` +
        `the rest of the machine ${rounds.map((r) => fmt(Math.max(0, r.b.others), 2)).join(', ')} cores (backbone), ${rounds.map((r) => fmt(Math.max(0, r.c.others), 2)).join(', ')} (core)`,
    );
    if (store === 'postgres') {
      const withDb = (r) => (r.b.cpu + r.b.postgres) / r.b.deliveries / ((r.c.cpu + r.c.postgres) / r.c.n);
      console.log(`${store}: CPU ratio with the database's (dispatcher + its backends): ${fmt(median(rounds.map(withDb)), 2)}× (rounds ${rounds.map((r) => fmt(withDb(r), 2)).join(', ')})`);
    }
  }
}
