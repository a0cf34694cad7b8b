/**
 * The whole dispatcher on PostgreSQL, through its HTTP API: the same behaviour as on the embedded default.
 * Each run uses a fresh schema in the `test` database (`?schema=` in the store URL), dropped afterwards.
 * Without a reachable server the file is skipped with a printed reason; with CI=true it fails.
 */

import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { event, POSTGRES_URL, probePostgres, startDispatcher, startReceiver, waitFor, waitForRun, type Receiver, type TestDispatcher, authed } from './helpers.js';

const BASE_URL = POSTGRES_URL;
const SCHEMA = `dispatcher_e2e_${randomBytes(4).toString('hex')}`;

const unreachable = await probePostgres();
const required = process.env.CI === 'true';
if (unreachable !== null && !required) {
  console.warn(`postgres-e2e.test.ts skipped: PostgreSQL at ${BASE_URL.replace(/:[^:@/]*@/, ':***@')} is unreachable (${unreachable}).`);
}

describe.skipIf(unreachable !== null && !required)('the dispatcher on PostgreSQL', () => {
  let t: TestDispatcher;
  let app: FastifyInstance;
  let receiver: Receiver;

  beforeAll(async () => {
    if (unreachable !== null) throw new Error(`PostgreSQL is unreachable (${unreachable}); with CI=true this suite must run`);
    receiver = await startReceiver((_req, _body, res, n) => {
      // The first request of each run fails with 503, the next succeeds: every run retries once.
      res.statusCode = n % 2 === 1 ? 503 : 200;
      res.end(res.statusCode === 200 ? 'ok' : 'busy');
    });
    const url = new URL(BASE_URL);
    url.searchParams.set('schema', SCHEMA);
    t = await startDispatcher(
      {
        actions: { http: { allow: ['127.0.0.1/32'] } },
        routes: [
          { name: 'example', match: { type: 'example.*' }, actions: [{ noop: {} }], labels: { team: '{{ data.team }}' } },
          { name: 'hook', match: { type: 'hook.*' }, actions: [{ http: { url: `${receiver.url}/hook` } }], retry: { attempts: 3, backoff: '10ms', maxBackoff: '20ms' } },
        ],
      },
      { storeUrl: url.toString() },
    );
    app = authed(await t.d.app());
  });

  afterAll(async () => {
    await t?.close();
    await receiver?.close();
    const admin = new pg.Client({ connectionString: BASE_URL });
    await admin.connect();
    await admin.query(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`);
    await admin.end();
  });

  it('reports the PostgreSQL store as ready', async () => {
    const res = await app.inject({ method: 'GET', url: '/readyz' });
    expect(res.statusCode).toBe(200);
    expect(res.json().store).toBe('postgres');
  });

  it('accepts a batch, answers duplicates, and every run succeeds', async () => {
    const events = [event({ data: { team: 'a' } }), event({ data: { team: 'b' } })];
    const res = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/cloudevents-batch+json' }, payload: JSON.stringify(events) });
    expect(res.statusCode).toBe(202);
    const body = res.json();
    expect(body.accepted).toBe(2);
    for (const e of body.events) await waitForRun(t.d, e.runs[0], ['success']);
    const again = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/cloudevents+json' }, payload: JSON.stringify(events[0]) });
    expect(again.json().events[0]).toEqual({ id: body.events[0].id, status: 'duplicate', runs: [] });
    const listed = await app.inject({ method: 'GET', url: '/v1/runs?filter[labels][team]=b&filter[status]=success' });
    expect(listed.json().data.map((r: { id: string }) => r.id)).toEqual([body.events[1].runs[0]]);
  });

  it('retries an http action after a 503 and records both attempts', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/cloudevents+json' }, payload: JSON.stringify(event({ type: 'hook.fired' })) });
    const runId = res.json().events[0].runs[0];
    await waitForRun(t.d, runId, ['success']);
    const run = (await app.inject({ method: 'GET', url: `/v1/runs/${runId}` })).json();
    expect(run.attempts_log.map((a: { outcome: string; http_status: number }) => [a.outcome, a.http_status])).toEqual([
      ['retry', 503],
      ['success', 200],
    ]);
    const ids = receiver.requests.filter((r) => r.headers['webhook-id'] === runId);
    expect(ids).toHaveLength(2);
  });

  it('keeps a bad request as a dead letter and replays it', async () => {
    const bad = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/cloudevents+json' }, payload: '{"specversion":"1.0"' });
    expect(bad.statusCode).toBe(400);
    const list = (await app.inject({ method: 'GET', url: '/v1/dead-letters?filter[reason]=invalid_json' })).json();
    expect(list.meta.total).toBeGreaterThan(0);
    const dl = list.data[0];
    expect(dl.raw).toBe('{"specversion":"1.0"');
    const replay = await app.inject({ method: 'POST', url: `/v1/dead-letters/${dl.id}/replay` });
    expect(replay.statusCode).toBe(400);
    const after = (await app.inject({ method: 'GET', url: `/v1/dead-letters/${dl.id}` })).json();
    expect(after.attempts).toBe(dl.attempts + 1);
  });

  it('streams the run events of a run, in order', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/cloudevents+json' }, payload: JSON.stringify(event()) });
    const runId = res.json().events[0].runs[0];
    await waitForRun(t.d, runId, ['success']);
    const events = await waitFor(
      async () => (await t.d.store.readRunEvents(0, 10_000)).filter((e) => e.runId === runId),
      (list) => list.length >= 2,
      5000,
      'the run events',
    );
    expect(events.map((e) => e.status)).toEqual(['running', 'success']);
    expect(events[1]!.payload).toMatchObject({ id: runId, route: 'example', status: 'success' });
  });

  it('hands run events out in seq order even when a later seq commits first', async () => {
    const got: number[] = [];
    const unsubscribe = await t.d.feed.subscribe((events) => got.push(...events.map((e) => e.seq)));
    const url = new URL(BASE_URL);
    const slow = new pg.Client({ connectionString: url.toString(), options: `-c search_path="${SCHEMA}"` });
    await slow.connect();
    try {
      // A writer takes the next seq and holds its transaction open...
      await slow.query('BEGIN');
      const held = Number((await slow.query(`INSERT INTO run_events (run_id, event_type, status, service, org_id, at, payload) VALUES ('held', 'update', 'running', 's', 'o', 0, '{}') RETURNING seq`)).rows[0].seq);
      // ...while the dispatcher commits later ones.
      const res = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/cloudevents+json' }, payload: JSON.stringify(event()) });
      await waitForRun(t.d, res.json().events[0].runs[0], ['success']);
      t.d.feed.poke();
      await new Promise((r) => setTimeout(r, 300));
      // Nothing past the open gap was handed out.
      expect(got.filter((seq) => seq > held)).toEqual([]);
      await slow.query('COMMIT');
      t.d.feed.poke();
      await waitFor(async () => got, (list) => list.includes(held) && list.some((seq) => seq > held), 5000, 'the held and later run events');
      expect(got).toEqual([...got].sort((a, b) => a - b));
      expect(new Set(got).size).toBe(got.length);
    } finally {
      await slow.end();
      unsubscribe();
    }
  });
});
