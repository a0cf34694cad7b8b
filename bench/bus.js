#!/usr/bin/env node
/**
 * End to end through a message bus: events waiting in a broker → consumed by `dispatcher serve` child
 * processes → routed → `noop` → success stored (every event, run, attempt and run event). Figures are the
 * median of several runs.
 *
 *   node bench/bus.js                                  every transport available, every store layout
 *   node bench/bus.js amqp:postgres:3 nats:sqlite:1    chosen cases: transport:store:processes
 *
 * Method: this process first publishes BENCH_BUS_EVENTS events (default 50,000) to the broker and waits for
 * its confirmations; then it starts the processes and waits, through the API, until every run has ended in
 * `success`. The rate is events / (the last run's `finished_at` − the first event's `received_at`), read
 * from the store afterwards: consumption, not process start. The rate counting from the processes' start
 * (Node, migrations, connecting) is printed beside it.
 *
 * Options (environment): BENCH_BUS_EVENTS, BENCH_REPEAT (default 3), DISPATCHER_TEST_POSTGRES_URL (default
 * postgres://postgres@127.0.0.1:5432/test; each run uses a fresh schema), BENCH_AMQP_URL, BENCH_NATS_URL,
 * BENCH_KAFKA_BROKERS (default: a librdkafka mock cluster started with kcat), BENCH_SERVER_ARGS (Node flags for
 * the dispatchers, e.g. `--cpu-prof`), BENCH_PROCESS_CORES (each dispatcher held to that many cores by a cgroup
 * of its own, as if it ran on a machine of that size: how the work spreads over processes when each one's CPU,
 * not the shared machine, is what binds; Linux, as root).
 */

import { spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import {
  coresUsed,
  countLogged,
  cpuByGroup,
  cpuLimitedGroup,
  cpuSeconds,
  DISPATCHER_MAIN,
  dispatcherNodeFlags,
  dropPostgresSchema,
  freePort,
  kafkaBrokers,
  median,
  postgresSchemaUrl,
  runEventsPerRun,
  waitServing,
} from './common.js';

const EVENTS = Number(process.env.BENCH_BUS_EVENTS ?? 50_000);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
/** A run in which no run ends for this long has stalled: it fails instead of waiting for ever. */
const STALL_MS = 60_000;
const KEY = 'benchKey0123456789abcdefABCDEF';
// Extra Node flags for the dispatchers under test, e.g. BENCH_SERVER_ARGS="--cpu-prof --cpu-prof-dir=.prof".
const SERVER_ARGS = (process.env.BENCH_SERVER_ARGS ?? '').split(' ').filter((a) => a !== '');
// Each dispatcher held to this many cores (a cgroup of its own), as if it ran on a machine of that size.
const PROCESS_CORES = process.env.BENCH_PROCESS_CORES === undefined ? undefined : Number(process.env.BENCH_PROCESS_CORES);
let groups = 0;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function eventBody(i, run) {
  return Buffer.from(JSON.stringify({ specversion: '1.0', id: `b${run}-${i}`, source: 'urn:bench', type: 'bench.bus', data: { n: i } }));
}

/** Each transport: the input options for a fresh place, and a producer that publishes `count` events. */
const TRANSPORTS = {
  amqp: {
    async open(place) {
      const { default: amqp } = await import('amqplib');
      const url = process.env.BENCH_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
      const connection = await amqp.connect(url);
      const channel = await connection.createConfirmChannel();
      await channel.assertQueue(place, { durable: true });
      return {
        input: { url, queue: place, prefetch: Number(process.env.BENCH_PREFETCH ?? 2000) },
        async produce(count, run) {
          for (let from = 0; from < count; from += 1000) {
            for (let i = from; i < Math.min(count, from + 1000); i++) {
              channel.sendToQueue(place, eventBody(i, run), { persistent: true, contentType: 'application/cloudevents+json' });
            }
            await channel.waitForConfirms();
          }
        },
        async close() {
          await channel.deleteQueue(place).catch(() => {});
          await connection.close().catch(() => {});
        },
      };
    },
  },
  nats: {
    async open(place) {
      const { connect } = await import('@nats-io/transport-node');
      const { jetstream, jetstreamManager } = await import('@nats-io/jetstream');
      const servers = process.env.BENCH_NATS_URL ?? 'nats://127.0.0.1:4222';
      const nc = await connect({ servers });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: place, subjects: [`${place}.>`] });
      const js = jetstream(nc);
      return {
        input: { servers, stream: place, consumer: 'dispatcher', subjects: [`${place}.>`], create: true, maxAckPending: 2000 },
        async produce(count, run) {
          for (let from = 0; from < count; from += 1000) {
            const acks = [];
            for (let i = from; i < Math.min(count, from + 1000); i++) acks.push(js.publish(`${place}.events`, eventBody(i, run)));
            await Promise.all(acks);
          }
        },
        async close() {
          await jsm.streams.delete(place).catch(() => {});
          await nc.close().catch(() => {});
        },
      };
    },
  },
  kafka: {
    async open(place) {
      const { Kafka, logLevel } = await import('kafkajs');
      const brokers = await kafkaBrokers();
      const producer = new Kafka({ brokers, logLevel: logLevel.NOTHING }).producer({ allowAutoTopicCreation: true, idempotent: false });
      await producer.connect();
      return {
        input: { brokers, topics: [place], groupId: `${place}-group`, fromBeginning: true },
        async produce(count, run) {
          for (let from = 0; from < count; from += 1000) {
            const messages = [];
            for (let i = from; i < Math.min(count, from + 1000); i++) messages.push({ key: `k${i % 64}`, value: eventBody(i, run) });
            await producer.send({ topic: place, acks: -1, messages });
          }
        },
        async close() {
          await producer.disconnect().catch(() => {});
        },
      };
    },
  },
};

async function startProcess(dir, n, input, transport, storeUrl) {
  const port = await freePort();
  const config = join(dir, `d${n}.json`);
  writeFileSync(
    config,
    JSON.stringify({
      server: { host: '127.0.0.1', port },
      store: { url: storeUrl, poolSize: 8 },
      log: { level: process.env.BENCH_LOG_LEVEL ?? 'warn' },
      intake: { maxBatch: 5000 },
      runner: { concurrency: 4096, batchSize: 1024 },
      auth: { psk: [{ service: 'bench', key: KEY }], keyFile: '' },
      inputs: { bus: { [transport]: input } },
      routes: [{ name: 'bench', match: { type: 'bench.*' }, actions: [{ noop: {} }] }],
    }),
  );
  const child = spawn(process.execPath, [...dispatcherNodeFlags(), ...SERVER_ARGS, DISPATCHER_MAIN, 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  if (PROCESS_CORES !== undefined) {
    const group = cpuLimitedGroup(`dispatcher-bench-${process.pid}-${groups++}`, PROCESS_CORES);
    group.add(child.pid);
    child.once('exit', () => group.remove());
  }
  let err = '';
  child.stderr.on('data', (b) => (err = (err + b).slice(-4000)));
  if (process.env.BENCH_LOG_DIR) child.stdout.pipe(createWriteStream(join(process.env.BENCH_LOG_DIR, `d${n}-${Date.now()}.log`)));
  const logged = countLogged(child.stdout);
  await waitServing(`http://127.0.0.1:${port}`, child, () => err);
  return { child, port, logged };
}

/**
 * Runs ended in success, summed over the processes, from their metrics. A scrape also counts the backlog in
 * the store (the gauges), so it is polled every 250 ms: the rate itself comes from the store's clock.
 */
async function succeeded(children) {
  let n = 0;
  for (const c of children) {
    const text = await (await fetch(`http://127.0.0.1:${c.port}/metrics`, { headers: { authorization: `PSK ${KEY}` } })).text();
    const m = /dispatcher_runs_finished_total\{route="bench",status="success"\} (\d+)/.exec(text);
    if (m) n += Number(m[1]);
  }
  return n;
}

async function once(transport, store, processes, run) {
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-bench-bus-'));
  const place = `bench-${process.pid}-${run}`;
  const schema = `dispatcher_bench_${process.pid}_${run}`;
  const storeUrl = store === 'sqlite' ? `sqlite:${join(dir, 'd.db')}` : postgresSchemaUrl(schema);
  const peer = await TRANSPORTS[transport].open(place);
  const children = [];
  let out;
  try {
    await peer.produce(EVENTS, run);
    if (store === 'postgres') {
      // The schema is made before the clock starts, so that several processes do not wait on its migration.
      const { openStore } = await import('../dist/store/index.js');
      const s = await openStore({ url: storeUrl });
      await s.migrate();
      await s.close();
    }
    const t0 = performance.now();
    const started = Array.from({ length: processes }, (_, n) => startProcess(dir, n, peer.input, transport, storeUrl));
    for (const p of started) children.push(await p.catch((err) => ({ error: err })));
    const failed = children.find((c) => c.error);
    if (failed) throw failed.error;
    const startup = (performance.now() - t0) / 1000;
    // CPU per event from the moment a tenth of the runs ended (start-up, connecting and joining left out).
    const cpu = () => children.reduce((sum, c) => sum + cpuSeconds(c.child.pid), 0);
    // And the whole machine's, by process group, over the same stretch: where the cores went.
    const named = new Map([[process.pid, 'bench'], ...children.map((c) => [c.child.pid, 'dispatcher'])]);
    let mark;
    let progress = { n: -1, at: performance.now() };
    for (;;) {
      const n = await succeeded(children);
      if (mark === undefined && n >= EVENTS / 10) mark = { n, cpu: cpu(), machine: cpuByGroup(named), at: performance.now() };
      if (n >= EVENTS) break;
      if (n !== progress.n) progress = { n, at: performance.now() };
      else if (performance.now() - progress.at > STALL_MS) {
        throw new Error(
          `${transport}:${store}:${processes}: no run ended for ${STALL_MS / 1000} s, ${n} of ${EVENTS} done` +
            (transport === 'kafka' ? ' (the mock cluster drops the oldest messages of a partition whose log outgrows its limit: 150,000 events lost some, 100,000 did not)' : ''),
        );
      }
      await sleep(250);
    }
    const cpuPerEvent = ((cpu() - mark.cpu) * 1e6) / (EVENTS - mark.n);
    const machine = coresUsed(mark.machine, cpuByGroup(named), (performance.now() - mark.at) / 1000);
    const seconds = (performance.now() - t0) / 1000;
    // From the store's own clock: the first event taken in, the last run ended.
    const { openStore } = await import('../dist/store/index.js');
    const s = await openStore({ url: storeUrl });
    const first = (await s.listEvents({ limit: 1, offset: 0, sort: { direction: 'asc' } })).items[0].receivedAt;
    const last = (await s.listRuns({ limit: 1, offset: 0, sort: { field: 'finished_at', direction: 'desc' } })).items[0].finishedAt;
    await s.close();
    const runEvents = await runEventsPerRun(store, storeUrl, schema);
    out = { rate: EVENTS / ((last - first) / 1000), withStart: EVENTS / seconds, startup, cpuPerEvent, machine, runEvents };
    return out;
  } finally {
    for (const c of children) {
      if (c.child === undefined) continue;
      c.child.kill('SIGTERM');
      await new Promise((r) => (c.child.exitCode !== null ? r() : c.child.once('exit', r)));
    }
    // Counted once the processes have stopped, so that what they log while stopping is in.
    if (out !== undefined) {
      const all = children.filter((c) => c.logged !== undefined).map((c) => c.logged);
      out.logged = { errors: all.reduce((n, l) => n + l.errors, 0), warnings: all.reduce((n, l) => n + l.warnings, 0), first: all.find((l) => l.first)?.first };
    }
    await peer.close();
    if (store === 'postgres') await dropPostgresSchema(schema);
    rmSync(dir, { recursive: true, force: true });
  }
}

const DEFAULT_CASES = Object.keys(TRANSPORTS).flatMap((t) => [`${t}:sqlite:1`, `${t}:postgres:1`, `${t}:postgres:3`]);
const cases = process.argv.slice(2).length > 0 ? process.argv.slice(2) : DEFAULT_CASES;

console.log(`machine: ${cpus().length} × ${cpus()[0]?.model}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`);
console.log(`${EVENTS} events per run, median of ${REPEAT}${PROCESS_CORES === undefined ? '' : `, each dispatcher held to ${PROCESS_CORES} cores`}`);
for (const c of cases) {
  const [transport, store, processes] = c.split(':');
  if (TRANSPORTS[transport] === undefined) throw new Error(`unknown transport ${transport}: ${Object.keys(TRANSPORTS).join(', ')}`);
  const results = [];
  for (let run = 0; run < REPEAT; run++) results.push(await once(transport, store, Number(processes ?? 1), run));
  const rates = results.map((r) => Math.round(r.rate));
  console.log(
    `${c.padEnd(22)} ${String(Math.round(median(rates))).padStart(7)} events/s   runs: ${rates.join(', ')}   counting the processes' start: ${Math.round(median(results.map((r) => r.withStart)))} events/s   dispatcher CPU: ${median(results.map((r) => r.cpuPerEvent)).toFixed(1)} µs per event   run events per run: ${results.map((r) => r.runEvents.toFixed(2)).join(', ')}`,
  );
  // Where the machine's cores went while the median run consumed (from a tenth of its runs ended to the last).
  const middle = results.find((r) => Math.round(r.rate) === median(rates));
  if (middle.machine.length > 0) {
    console.log(`${''.padEnd(22)} cores in use (of ${cpus().length}): ${middle.machine.map(([group, cores]) => `${group} ${cores.toFixed(2)}`).join(', ')}`);
  }
  const errors = results.reduce((n, r) => n + r.logged.errors, 0);
  const warnings = results.reduce((n, r) => n + r.logged.warnings, 0);
  if (errors + warnings > 0) {
    const first = results.find((r) => r.logged.first)?.logged.first;
    console.log(`${''.padEnd(22)} the dispatchers logged ${errors} errors and ${warnings} warnings in ${REPEAT} runs${first ? ` (first error: ${first})` : ''}`);
  }
}
// The Kafka mock cluster (a child process) would keep the event loop alive; the exit handler stops it.
process.exit(0);
