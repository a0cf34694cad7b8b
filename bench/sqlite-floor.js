#!/usr/bin/env node
/**
 * Prints the floor under the embedded store (bench/floor.js says what it writes): µs per event, median of runs.
 *
 * BENCH_FLOOR_BATCH sets the events per transaction: 10 is what a commit holds when single events are posted
 * over 10 connections, the floor under the single-POST mode of `npm run bench`. BENCH_FLOOR_JOURNAL=1
 * measures instead one journal row per transaction: what a 202 would cost per event if it waited only for
 * that, on top of the rows written later.
 *
 *   node bench/sqlite-floor.js        (after npm run build; BENCH_EVENTS, default 100000; BENCH_REPEAT, default 3;
 *                                      BENCH_FLOOR_BATCH, default 1000; BENCH_FLOOR_JOURNAL)
 */

import { median } from './common.js';
import { sqliteFloor } from './floor.js';

const N = Number(process.env.BENCH_EVENTS ?? 100_000);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
const BATCH = Number(process.env.BENCH_FLOOR_BATCH ?? 1000);
const JOURNAL = process.env.BENCH_FLOOR_JOURNAL === '1';

const runs = [];
for (let i = 0; i < REPEAT; i++) runs.push(await sqliteFloor({ events: N, batch: BATCH, journal: JOURNAL }));
const us = median(runs);
const what = JOURNAL ? 'one journal row per transaction' : '6 rows written';
console.log(`SQLite floor: ${us.toFixed(1)} µs per event (${what}, ${BATCH.toLocaleString('en-US')} event${BATCH === 1 ? '' : 's'} per transaction), at most ${Math.round(1e6 / us).toLocaleString('en-US')} events/s on one core`);
console.log(`  runs: ${runs.map((r) => r.toFixed(1)).join(', ')} µs`);
