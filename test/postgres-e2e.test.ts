/**
 * The whole dispatcher on PostgreSQL, through its HTTP API: the same behaviour as on the embedded default.
 * Each run uses a fresh schema in the `test` database (`?schema=` in the store URL), dropped afterwards.
 * Without a reachable server the file is skipped with a printed reason; with CI=true it fails.
 */

import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { ActionType } from '../src/core/action.js';
import { startTcpProxy } from './tcp-proxy.js';
import { event, POSTGRES_URL, probePostgres, startDispatcher, startReceiver, waitFor, waitForRun, waitingForLock, type Receiver, type TestDispatcher, authed } from './helpers.js';

const BASE_URL = POSTGRES_URL;
const SCHEMA = `dispatcher_e2e_${randomBytes(4).toString('hex')}`;

const unreachable = await probePostgres();
const required = process.env.CI === 'true';
if (unreachable !== null && !required) {
  console.warn(`postgres-e2e.test.ts skipped: PostgreSQL at ${BASE_URL.replace(/:[^:@/]*@/, ':***@')} is unreachable (${unreachable}).`);
}

/** A `gate` action type: each attempt waits until the test opens its run's gate, then ends in success. */
function gateAction(): { type: ActionType; gates: Map<string, () => void>; executions: () => number } {
  const gates = new Map<string, () => void>();
  let executions = 0;
  const type: ActionType = {
    type: 'gate',
    create: () => ({
      execute: (ctx) => {
        executions += 1;
        return new Promise((resolve) => gates.set(ctx.runId, () => resolve({ status: 'success' })));
      },
    }),
  };
  return { type, gates, executions: () => executions };
}

/**
 * A dispatcher of its own on the fresh schema `schema` (through the TCP proxy on `proxyPort` when given), with
 * one route, `gated`, taking `gate.*` events to the `gate` action.
 */
function gatedDispatcher(schema: string, runner: Record<string, unknown>, gate: ActionType, proxyPort?: number): Promise<TestDispatcher> {
  const url = new URL(BASE_URL);
  if (proxyPort !== undefined) url.host = `127.0.0.1:${proxyPort}`;
  url.searchParams.set('schema', schema);
  return startDispatcher(
    { runner: { poll: '100ms', ...runner }, routes: [{ name: 'gated', match: { type: 'gate.*' }, actions: [{ gate: {} }] }] },
    { storeUrl: url.toString(), actionTypes: [gate] },
  );
}

async function dropSchema(schema: string): Promise<void> {
  const admin = new pg.Client({ connectionString: BASE_URL });
  await admin.connect();
  try {
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await admin.end();
  }
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
          { name: 'ordered', match: { type: 'ordered.*' }, actions: [{ noop: {} }], orderingKey: '{{ data.key }}' },
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
    await dropSchema(SCHEMA);
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
    expect(again.json().events[0]).toEqual({ index: 0, id: body.events[0].id, status: 'duplicate', runs: [] });
    const listed = await app.inject({ method: 'GET', url: '/v1/runs?filter[labels][team]=b&filter[status]=success' });
    expect(listed.json().data.map((r: { id: string }) => r.id)).toEqual([body.events[1].runs[0]]);
  });

  it('runs a route with an ordering key (PostgreSQL text holds no U+0000, so the key has none)', async () => {
    const events = [event({ type: 'ordered.a', data: { key: 'k1' } }), event({ type: 'ordered.a', data: { key: 'k1' } })];
    const res = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/cloudevents-batch+json' }, payload: JSON.stringify(events) });
    expect(res.statusCode, res.body).toBe(202);
    for (const e of res.json().events) expect((await waitForRun(t.d, e.runs[0], ['success'])).orderingKey).not.toContain('\u0000');
  });

  it('answers 400, not 500, for a text PostgreSQL cannot hold (U+0000) in a query', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/runs?filter[route]=a%00b' });
    expect([res.statusCode, res.json().code]).toEqual([400, 'bad_request']);
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

  it('records at shutdown the outcomes of attempts that ended, though the store holds them up, instead of putting their runs back', async () => {
    const { type: gate, gates } = gateAction();
    const schema = `${SCHEMA}_stop`;
    const own = await gatedDispatcher(schema, { sweepInterval: '200ms', shutdownTimeout: '200ms' }, gate);
    const locker = new pg.Client({ connectionString: BASE_URL, options: `-c search_path="${schema}"` });
    await locker.connect();
    let closing: Promise<void> | undefined;
    try {
      const { results } = await own.d.send([event({ type: 'gate.a' }), event({ type: 'gate.b' })] as never);
      const [a, b] = results.map((r) => r.runIds[0]!) as [string, string];
      await waitFor(async () => gates.size, (n) => n === 2, 5000, 'both attempts to start');
      // Another transaction holds run a, so the outcome of its attempt cannot be recorded yet...
      await locker.query('BEGIN');
      await locker.query('SELECT id FROM runs WHERE id = $1 FOR UPDATE', [a]);
      const lockerPid = Number((await locker.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
      gates.get(a)!();
      await waitFor(() => waitingForLock(locker, lockerPid), (waiting) => waiting === 1, 5000, "run a's outcome to wait for the lock");
      // ...and run b's attempt ends too: its outcome waits behind a's.
      gates.get(b)!();
      await new Promise((r) => setTimeout(r, 100));
      // The dispatcher stops; past its shutdown timeout, the lock goes.
      closing = own.close();
      await new Promise((r) => setTimeout(r, 600));
      await locker.query('COMMIT');
      await closing;
      const runs = await locker.query('SELECT id, status, attempts FROM runs ORDER BY id');
      expect(runs.rows.map((r) => [r.id, r.status, r.attempts])).toEqual([a, b].sort().map((id) => [id, 'success', 1]));
      const history = await locker.query(`SELECT run_id, status FROM run_events WHERE run_id = $1 ORDER BY seq`, [b]);
      expect(history.rows.map((r) => r.status)).toEqual(['running', 'success']);
    } finally {
      await locker.query('ROLLBACK').catch(() => {});
      await (closing ?? own.close()).catch(() => {});
      await locker.end();
      await dropSchema(schema);
    }
  });

  it('keeps the outcome of an attempt while the store cannot be reached, and records it once it is back: each action runs once', async () => {
    const { type: gate, gates, executions } = gateAction();
    const proxy = await startTcpProxy(Number(new URL(BASE_URL).port || 5432));
    const schema = `${SCHEMA}_away`;
    // A short lease, which the outage outlasts. The test sweeps itself (the sweeper's timer is an hour), at the
    // moment that shows most: as soon as the store is back, before the next try of the outcome or renewal.
    const own = await gatedDispatcher(schema, { lease: '1s', sweepInterval: '1h', shutdownTimeout: '200ms' }, gate, proxy.port);
    try {
      // Run `id` ends while the store is away; run `busy` is still executing when it comes back.
      const { results } = await own.d.send([event({ type: 'gate.away' }), event({ type: 'gate.away' })] as never);
      const [id, busy] = results.map((r) => r.runIds[0]!) as [string, string];
      await waitFor(async () => gates.size, (n) => n === 2, 5000, 'the attempts to start');
      proxy.cut();
      gates.get(id)!();
      // Intake says the store is away, with a code and a time to come back, and the process goes on.
      const http = authed(await own.d.app());
      const refused = await http.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/cloudevents+json' }, payload: JSON.stringify(event({ type: 'gate.later' })) });
      expect(refused.statusCode).toBe(503);
      expect(refused.json().code).toBe('store_unavailable');
      expect(refused.headers['retry-after']).toBe('1');
      // Longer than the lease, with the store away: the outcome waits, and the run keeps its slot.
      await new Promise((r) => setTimeout(r, 1500));
      expect(own.d.runner.inFlight).toBe(2);
      const metric = async (name: string) => own.d.metrics.registry.getSingleMetricAsString(name);
      expect(await metric('dispatcher_outcomes_unrecorded')).toMatch(/^dispatcher_outcomes_unrecorded 1$/m);
      expect(await metric('dispatcher_outcome_record_failures_total')).toMatch(/\{then="retried"\} ([2-9]|\d{2,})$/m);
      proxy.restore();
      // Both leases expired in the store during the outage. A sweep lets this process's own outcomes and
      // leases go first; without that it took both runs back, and both actions ran again.
      const sweptAt = Date.now();
      await own.d.runner.sweep();
      expect(await own.d.store.getRun(id)).toMatchObject({ status: 'success', attempts: 1 });
      expect((await own.d.store.getAttempts(id)).map((a) => a.outcome)).toEqual(['success']);
      const still = await own.d.store.getRun(busy);
      expect(still).toMatchObject({ status: 'running', attempts: 1, leaseOwner: own.d.owner });
      expect(still!.leaseUntil!).toBeGreaterThan(sweptAt);
      expect(await metric('dispatcher_runs_swept_total')).not.toMatch(/outcome="requeued"/);
      gates.get(busy)!();
      expect(await waitForRun(own.d, busy, ['success'], 5000)).toMatchObject({ attempts: 1 });
      await new Promise((r) => setTimeout(r, 500));
      expect(executions()).toBe(2);
      expect(own.d.runner.inFlight).toBe(0);
      expect(await metric('dispatcher_outcomes_unrecorded')).toMatch(/^dispatcher_outcomes_unrecorded 0$/m);
      expect(await metric('dispatcher_outcome_record_failures_total')).not.toMatch(/then="dropped"/);
    } finally {
      proxy.restore();
      await own.close();
      await proxy.close();
      await dropSchema(schema);
    }
  });

  it('a connection that stops answering (accepted, silent, never reset): intake answers 503 within seconds, readiness says so, and all recovers', async () => {
    const proxy = await startTcpProxy(Number(new URL(BASE_URL).port || 5432));
    const schema = `${SCHEMA}_silent`;
    const url = new URL(BASE_URL);
    url.host = `127.0.0.1:${proxy.port}`;
    url.searchParams.set('schema', schema);
    const own = await startDispatcher(
      { store: { url: url.toString(), queryTimeout: '3s' }, intake: { commitTimeout: '1s' }, runner: { poll: '100ms', sweepInterval: '1h' } },
      { storeUrl: url.toString() },
    );
    try {
      const http = authed(await own.d.app());
      const send = (id: string) => http.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/cloudevents+json' }, payload: JSON.stringify(event({ id })) });
      expect((await send('before')).statusCode).toBe(202);
      proxy.stall();
      const began = Date.now();
      const refused = await send('during');
      expect(Date.now() - began).toBeLessThan(3000);
      expect(refused.statusCode).toBe(503);
      expect(refused.json().code).toBe('store_unavailable');
      expect(refused.headers['retry-after']).toBe('1');
      const readyAt = Date.now();
      const ready = await http.inject({ method: 'GET', url: '/readyz' });
      expect(Date.now() - readyAt).toBeLessThan(3000);
      expect(ready.statusCode).toBe(503);
      expect(ready.json()).toMatchObject({ status: 'unavailable', code: 'store_unavailable' });
      // Every statement is bounded: a read of the API answers within the statement timeout, as store_unavailable.
      const readAt = Date.now();
      const read = await http.inject({ method: 'GET', url: '/v1/runs' });
      expect(Date.now() - readAt).toBeLessThan(6000);
      expect(read.statusCode).toBe(503);
      proxy.restore();
      // The silent connections were closed and replaced: the same event again is taken (or was, meanwhile: a duplicate).
      await waitFor(async () => (await send('during')).statusCode, (status) => status === 202, 15_000, 'intake to take events again');
      expect((await http.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
      const stored = await own.d.store.listEvents({ limit: 10, offset: 0 });
      expect(stored.items.map((e) => e.event.id).sort()).toEqual(['before', 'during']);
    } finally {
      proxy.restore();
      await own.close();
      await proxy.close();
      await dropSchema(schema);
    }
  }, 60_000);

  it('stops in bounded time while the store cannot take the outcomes it holds', async () => {
    const { type: gate, gates } = gateAction();
    const proxy = await startTcpProxy(Number(new URL(BASE_URL).port || 5432));
    const schema = `${SCHEMA}_stuck`;
    const own = await gatedDispatcher(schema, { sweepInterval: '200ms', shutdownTimeout: '300ms' }, gate, proxy.port);
    try {
      await own.d.send([event({ type: 'gate.stuck' }), event({ type: 'gate.stuck' })] as never);
      await waitFor(async () => gates.size, (n) => n === 2, 5000, 'the attempts to start');
      proxy.cut();
      // Attempts that end while the store is away: their outcomes wait in the runner, tried again and again.
      for (const open of gates.values()) open();
      await new Promise((r) => setTimeout(r, 300));
      expect(own.d.runner.inFlight).toBe(2);
      const began = Date.now();
      await own.close();
      // The shutdown timeout at most (no attempt is executing) and one last try of the outcomes, not the pauses
      // between tries (up to 5 s) that a running dispatcher would go on with.
      expect(Date.now() - began).toBeLessThan(3000);
    } finally {
      proxy.restore();
      await proxy.close();
      await dropSchema(schema);
    }
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
