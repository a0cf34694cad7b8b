#!/usr/bin/env node
/**
 * PostgreSQL's CPU per event for the two statements every event costs on the PostgreSQL store, at a given batch
 * size: intake (the event, its run claimed at once, the `create` run event) and the outcome (the run's update,
 * its attempt, the `update` run event). It calls the built store itself, so it measures the statements as the
 * dispatcher sends them, without a broker or HTTP in the way; each run uses a fresh schema, as a new
 * installation does (no statistics yet).
 *
 *   node bench/postgres-statements.js            batches of 10, 100 and 1,000
 *   BENCH_PG_BATCHES=100,300 node bench/postgres-statements.js
 *
 * The figure is the CPU time all of PostgreSQL's processes used (from /proc), divided by the events: run it
 * on a quiet machine. Options (environment): BENCH_PG_BATCHES, BENCH_EVENTS (default 20,000), BENCH_REPEAT
 * (default 3), DISPATCHER_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test).
 */

import { cpus, totalmem } from 'node:os';
import { cpuByGroup, dropPostgresSchema, median, postgresSchemaUrl } from './common.js';

const { openStore } = await import('../dist/store/index.js');
const { newId } = await import('../dist/core/ids.js');

const BATCHES = (process.env.BENCH_PG_BATCHES ?? '10,100,1000').split(',').map(Number);
const EVENTS = Number(process.env.BENCH_EVENTS ?? 20_000);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
const OWNER = 'bench-worker';
const HOUR = 3_600_000;

const postgresSeconds = () => cpuByGroup(new Map()).get('postgres') ?? Number.NaN;

let seq = 0;
/** One event as a bus input hands it over, with its run claimed at intake (as the runner does when it has room). */
function item(at) {
  return {
    record: {
      key: newId(at),
      event: { specversion: '1.0', id: `s${seq++}`, source: 'urn:bench', type: 'bench.bus', data: { n: seq } },
      input: 'bench',
      hops: 0,
      service: 'bench',
      orgId: 'default',
      receivedAt: at,
    },
    runs: [
      { id: newId(at), route: 'bench', action: 'noop', actionType: 'noop', maxAttempts: 3, availableAt: at, deadlineAt: at + HOUR, expiresAt: at + HOUR,
        orderingKey: null, labels: {}, claimedBy: { owner: OWNER, leaseUntil: at + HOUR } },
    ],
  };
}

async function once(batch, run) {
  const schema = `dispatcher_bench_statements_${process.pid}_${run}`;
  const store = await openStore({ url: postgresSchemaUrl(schema), poolSize: 1 });
  try {
    await store.migrate();
    const intakeFrom = postgresSeconds();
    for (let i = 0; i < EVENTS; i += batch) {
      const at = Date.now();
      await store.commitIntake(Array.from({ length: Math.min(batch, EVENTS - i) }, () => item(at)));
    }
    const intake = postgresSeconds() - intakeFrom;
    const runs = (await store.listRuns({ limit: EVENTS, offset: 0, filter: {}, sort: { field: 'id', direction: 'asc' } })).items;
    if (runs.length !== EVENTS || runs.some((r) => r.status !== 'running')) throw new Error(`expected ${EVENTS} running runs, found ${runs.length}`);
    const outcomeFrom = postgresSeconds();
    for (let i = 0; i < runs.length; i += batch) {
      const at = Date.now();
      const outcomes = runs.slice(i, i + batch).map((r) => ({
        run: r, owner: OWNER, status: 'success', at,
        attempt: { runId: r.id, n: 1, startedAt: at, endedAt: at, outcome: 'success', errorCode: null, errorMessage: null, httpStatus: null, response: null },
      }));
      const applied = await store.finishRuns(outcomes);
      if (applied.length !== outcomes.length) throw new Error(`${outcomes.length - applied.length} outcomes were not applied`);
    }
    const outcome = postgresSeconds() - outcomeFrom;
    return { intake: (intake * 1e6) / EVENTS, outcome: (outcome * 1e6) / EVENTS };
  } finally {
    await store.close();
    await dropPostgresSchema(schema);
  }
}

console.log(`machine: ${cpus().length} × ${cpus()[0]?.model}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`);
console.log(`${EVENTS} events per run, median of ${REPEAT}; PostgreSQL's CPU (all its processes) per event`);
for (const batch of BATCHES) {
  const results = [];
  for (let run = 0; run < REPEAT; run++) results.push(await once(batch, run));
  const show = (key) => `${median(results.map((r) => r[key])).toFixed(1)} µs (${results.map((r) => r[key].toFixed(1)).join(' / ')})`;
  console.log(`batches of ${String(batch).padEnd(5)}  intake ${show('intake')}   outcome ${show('outcome')}`);
}
