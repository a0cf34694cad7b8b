/**
 * Scale-out: three `dispatcher serve` processes on one PostgreSQL store and one RabbitMQ queue (competing
 * consumers; claims with FOR UPDATE SKIP LOCKED; the sweeper under an advisory lock). One is SIGKILLed
 * mid-load. Every event sent ends with exactly its runs, every run ends in success, and each process took a
 * share of the work before the kill.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import amqp from 'amqplib';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ensureBuilt, freePort, kill, startChild, waitHealthy, type Child } from './child.js';
import { POSTGRES_URL, probePostgres, waitFor } from './helpers.js';

const AMQP_URL = process.env.DISPATCHER_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const KEY = 'scaleOutKey0123456789';
const TOTAL = 6000;
const requireServices = process.env.CI === 'true';

async function probeAmqp(): Promise<string | null> {
  try {
    await (await amqp.connect(AMQP_URL, { timeout: 3000 })).close();
    return null;
  } catch (err) {
    return (err as Error).message || String(err);
  }
}

const missing = [await probePostgres().then((m) => m && `PostgreSQL: ${m}`), await probeAmqp().then((m) => m && `RabbitMQ: ${m}`)].filter(Boolean).join('; ');
if (missing !== '' && !requireServices) console.warn(`scale-out.test.ts skipped: ${missing}. Start them, or set CI=true to make this a failure.`);

const schema = `dispatcher_scale_out_${process.pid}`;
const queue = `dispatcher-scale-out-${process.pid}`;
let dir: string;
let admin: pg.Client;
const children: Child[] = [];

beforeAll(async () => {
  if (missing !== '') throw new Error(`scale-out.test.ts: ${missing}; with CI=true it must run`);
  ensureBuilt();
  dir = mkdtempSync(join(tmpdir(), 'dispatcher-scale-out-'));
  admin = new pg.Client({ connectionString: POSTGRES_URL });
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
}, 120_000);

afterAll(async () => {
  for (const c of children) await kill(c);
  await admin?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
  await admin?.end();
  const c = await amqp.connect(AMQP_URL).catch(() => undefined);
  if (c) {
    const ch = await c.createChannel();
    await ch.deleteQueue(queue).catch(() => {});
    await c.close();
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

it.skipIf(missing !== '' && !requireServices)('three processes share the work; one SIGKILLed mid-load loses nothing and doubles nothing', async () => {
  const url = new URL(POSTGRES_URL);
  url.searchParams.set('schema', schema);
  const ports = [await freePort(), await freePort(), await freePort()];
  const configs = ports.map((port, i) => {
    const file = join(dir, `d${i}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        server: { host: '127.0.0.1', port },
        store: { url: url.toString(), poolSize: 4 },
        log: { level: 'warn' },
        runner: { lease: '2s', poll: '200ms', sweepInterval: '500ms' },
        auth: { psk: [{ service: 'test', key: KEY }], keyFile: '' },
        inputs: { bus: { amqp: { url: AMQP_URL, queue, prefetch: 100 } } },
        routes: [{ name: 'all', match: { type: '**' }, actions: [{ name: 'first', noop: {} }, { name: 'second', noop: {} }] }],
      }),
    );
    return file;
  });
  const get = async (port: number, path: string) => {
    const r = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { authorization: `PSK ${KEY}` }, signal: AbortSignal.timeout(3000) });
    return r;
  };
  const total = async (port: number, path: string) => ((await (await get(port, path)).json()) as { meta: { total: number } }).meta.total;
  const accepted = async (port: number) => {
    const text = await (await get(port, '/metrics')).text();
    const m = /dispatcher_events_received_total\{input="bus",outcome="accepted"\} (\d+)/.exec(text);
    return m ? Number(m[1]) : 0;
  };

  // The schema is migrated by the first; the others start together.
  children.push(startChild(configs[0]!, dir));
  await waitHealthy(children[0]!, ports[0]!);
  children.push(startChild(configs[1]!, dir), startChild(configs[2]!, dir));
  await waitHealthy(children[1]!, ports[1]!);
  await waitHealthy(children[2]!, ports[2]!);

  const connection = await amqp.connect(AMQP_URL);
  const channel = await connection.createConfirmChannel();
  await channel.assertQueue(queue, { durable: true });
  const sending = (async () => {
    for (let from = 0; from < TOTAL; from += 200) {
      for (let i = from; i < from + 200; i++) {
        const body = JSON.stringify({ specversion: '1.0', id: `s-${i}`, source: 'urn:scale-out', type: 'scale.out', data: { n: i } });
        channel.sendToQueue(queue, Buffer.from(body), { persistent: true, contentType: 'application/cloudevents+json' });
      }
      await channel.waitForConfirms();
      await new Promise((r) => setTimeout(r, 20));
    }
  })();

  // Every process takes a share before one of them is killed.
  const shares = await waitFor(() => Promise.all(ports.map(accepted)), (a) => a.every((n) => n > 0) && a.reduce((x, y) => x + y, 0) >= TOTAL / 4, 60_000, 'each process to take events');
  await kill(children[1]);
  await sending;
  await connection.close();

  const live = ports[0]!;
  await waitFor(() => total(live, '/v1/events?limit=1'), (n) => n >= TOTAL, 90_000, `all ${TOTAL} events`);
  await waitFor(() => total(live, '/v1/runs?limit=1&filter[status]=success'), (n) => n >= 2 * TOTAL, 90_000, 'every run to succeed');
  await new Promise((r) => setTimeout(r, 1000));
  expect(await total(live, '/v1/events?limit=1')).toBe(TOTAL);
  expect(await total(live, '/v1/runs?limit=1')).toBe(2 * TOTAL);
  // Exactly its runs: two per event, one per action.
  const perEvent = await admin.query(
    `SELECT count(*)::int AS n FROM (SELECT event_key FROM ${schema}.runs GROUP BY event_key HAVING count(*) <> 2 OR count(DISTINCT action) <> 2) AS odd`,
  );
  expect(perEvent.rows[0].n).toBe(0);
  console.log(`scale-out: events accepted per process before the kill: ${shares.join(', ')}`);
}, 240_000);
