/**
 * The runner against real parts: a dispatcher on a real SQLite file, real HTTP receivers on 127.0.0.1.
 * Retries and backoff, Retry-After, attempt timeouts, dead letters and their replay, ordering keys,
 * concurrency limits, `publish` chains and loops, plugins, waiting runs and deadlines, lease expiry,
 * cancel, shutdown and templates.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ActionType } from '../src/core/action.js';
import type { Attempt, RunEvent } from '../src/core/types.js';
import type { Dispatcher } from '../src/dispatcher.js';
import { event, startDispatcher, startReceiver, waitFor, waitForRun, type Receiver, type TestDispatcher } from './helpers.js';

const ALLOW = { http: { allow: ['127.0.0.1/32'] } };
const FAST_RETRY = { attempts: 5, backoff: '10ms', maxBackoff: '20ms' };

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function receiver(handler?: Parameters<typeof startReceiver>[0]): Promise<Receiver> {
  const r = await startReceiver(handler);
  cleanups.push(() => r.close());
  return r;
}

/** A receiver that answers each request after `ms`, and counts the most requests it held at once. */
async function slowReceiver(ms: number): Promise<{ r: Receiver; most: () => number }> {
  let held = 0;
  let most = 0;
  const r = await receiver((_req, _body, res) => {
    held += 1;
    most = Math.max(most, held);
    setTimeout(() => {
      held -= 1;
      res.end('ok');
    }, ms);
  });
  return { r, most: () => most };
}

async function dispatcher(overrides: Record<string, unknown>, options: Parameters<typeof startDispatcher>[1] = {}): Promise<TestDispatcher> {
  const t = await startDispatcher({ actions: ALLOW, ...overrides }, options);
  cleanups.push(() => t.close());
  return t;
}

/** A route named `hook` taking `hook.*` events to an http action. */
function hookRoute(url: string, extra: Record<string, unknown> = {}, http: Record<string, unknown> = {}): Record<string, unknown> {
  return { name: 'hook', match: { type: 'hook.*' }, actions: [{ http: { url, ...http } }], retry: FAST_RETRY, ...extra };
}

/** Sends events through the embedded input; returns the run ids of each event, in order. */
async function send(d: Dispatcher, events: Array<Record<string, unknown>>): Promise<string[][]> {
  const { results } = await d.send(events as never);
  expect(results.every((r) => r.status === 'accepted')).toBe(true);
  return results.map((r) => r.runIds);
}

/** Waits until `n` runs of the `hook` route have succeeded (up to `ms`); returns how many have. */
function hookSucceeded(t: TestDispatcher, n: number, ms: number): Promise<number> {
  return waitFor(
    async () => (await t.d.store.listRuns({ route: ['hook'], status: ['success'], limit: 1, offset: 0 })).total,
    (done) => done === n,
    ms,
    `all ${n} runs to succeed`,
  );
}

async function sendOne(d: Dispatcher, e: Record<string, unknown>): Promise<string> {
  const [runIds] = await send(d, [e]);
  expect(runIds).toHaveLength(1);
  return runIds![0]!;
}

async function runEvents(d: Dispatcher, runId: string): Promise<RunEvent[]> {
  const out: RunEvent[] = [];
  let after = 0;
  for (;;) {
    const page = await d.store.readRunEvents(after, 1000);
    if (page.length === 0) return out;
    for (const e of page) if (e.kind === 'run' && e.runId === runId) out.push(e);
    after = page[page.length - 1]!.seq;
  }
}

const outcomes = (attempts: Attempt[]) => attempts.map((a) => a.outcome);

/**
 * The statuses a run went through from its first `running`, checking that the history opens with its
 * `create` event: a run is created `queued` and then claimed, or (direct dispatch) created already `running`.
 */
function fromStart(events: RunEvent[]): string[] {
  expect(events[0]?.eventType).toBe('create');
  expect(events.slice(1).every((e) => e.eventType === 'update')).toBe(true);
  const statuses = events.map((e) => e.status as string);
  return statuses[0] === 'queued' ? statuses.slice(1) : statuses;
}

/** Answers after `ms`, recording when each request was being handled. */
function holding(ms: number, log: Array<{ start: number; end: number; body: string }>) {
  return (_req: unknown, body: string, res: ServerResponse) => {
    const start = Date.now();
    setTimeout(() => {
      log.push({ start, end: Date.now(), body });
      res.end('ok');
    }, ms);
  };
}

describe('http action', () => {
  it('records one attempt with the HTTP status on success', async () => {
    const r = await receiver();
    const t = await dispatcher({ routes: [hookRoute(r.url)] });
    const id = await sendOne(t.d, event({ type: 'hook.ok' }));
    const run = await waitForRun(t.d, id, ['success', 'failure']);
    expect(run.status).toBe('success');
    expect(run.attempts).toBe(1);
    const attempts = await t.d.store.getAttempts(id);
    expect(attempts).toHaveLength(1);
    expect(attempts[0]).toMatchObject({ n: 1, outcome: 'success', httpStatus: 200, errorCode: null });
    expect(r.requests).toHaveLength(1);
    expect(r.requests[0]!.headers['webhook-id']).toBe(id);
  });

  it('retries 500s and succeeds on the third attempt, with the same idempotency key every time', async () => {
    const r = await receiver((_req, _body, res, n) => {
      res.statusCode = n <= 2 ? 500 : 200;
      res.end(n <= 2 ? 'boom' : 'ok');
    });
    const t = await dispatcher({ routes: [hookRoute(r.url)] });
    const id = await sendOne(t.d, event({ type: 'hook.flaky' }));
    const run = await waitForRun(t.d, id, ['success', 'failure']);
    expect(run.status).toBe('success');
    expect(run.attempts).toBe(3);
    const attempts = await t.d.store.getAttempts(id);
    expect(outcomes(attempts)).toEqual(['retry', 'retry', 'success']);
    expect(attempts.map((a) => a.httpStatus)).toEqual([500, 500, 200]);
    expect(attempts[0]).toMatchObject({ errorCode: 'http_status', response: 'boom' });
    expect(r.requests).toHaveLength(3);
    for (const req of r.requests) {
      expect(req.headers['webhook-id']).toBe(id);
      expect(req.headers['idempotency-key']).toBe(id);
    }
  });

  it('fails a non-retryable 404 after one attempt, with a run dead letter', async () => {
    const r = await receiver((_req, _body, res) => {
      res.statusCode = 404;
      res.end('no such hook');
    });
    const t = await dispatcher({ routes: [hookRoute(r.url)] });
    const id = await sendOne(t.d, event({ type: 'hook.gone' }));
    const run = await waitForRun(t.d, id, ['success', 'failure']);
    expect(run.status).toBe('failure');
    expect(run.attempts).toBe(1);
    expect(run.error?.code).toBe('http_status');
    const attempts = await t.d.store.getAttempts(id);
    expect(attempts).toHaveLength(1);
    expect(attempts[0]).toMatchObject({ outcome: 'failure', httpStatus: 404, errorCode: 'http_status' });
    const { items } = await t.d.store.listDeadLetters({ origin: 'run', limit: 100, offset: 0 });
    const dl = items.filter((x) => x.runId === id);
    expect(dl).toHaveLength(1);
    expect(dl[0]).toMatchObject({ reason: 'http_status', source: 'hook', eventKey: run.eventKey });
    expect(r.requests).toHaveLength(1);
  });

  it('gives up when retries are exhausted: failure and a dead letter', async () => {
    const r = await receiver((_req, _body, res) => {
      res.statusCode = 503;
      res.end('down');
    });
    const t = await dispatcher({ routes: [hookRoute(r.url, { retry: { ...FAST_RETRY, attempts: 3 } })] });
    const id = await sendOne(t.d, event({ type: 'hook.down' }));
    const run = await waitForRun(t.d, id, ['success', 'failure']);
    expect(run.status).toBe('failure');
    expect(run.attempts).toBe(3);
    expect(run.error?.code).toBe('http_status');
    expect(run.error?.message).toMatch(/gave up after 3 attempts/);
    expect(outcomes(await t.d.store.getAttempts(id))).toEqual(['retry', 'retry', 'failure']);
    expect(r.requests).toHaveLength(3);
    const { items } = await t.d.store.listDeadLetters({ origin: 'run', runId: id, limit: 10, offset: 0 });
    expect(items).toHaveLength(1);
    expect(items[0]!.reason).toBe('http_status');
  });

  it('waits at least Retry-After before the next attempt', async () => {
    const r = await receiver((_req, _body, res, n) => {
      if (n === 1) {
        res.statusCode = 503;
        res.setHeader('retry-after', '1');
      }
      res.end();
    });
    const t = await dispatcher({ routes: [hookRoute(r.url, { retry: { attempts: 3, backoff: '10ms', maxBackoff: '20ms' } })] });
    const id = await sendOne(t.d, event({ type: 'hook.busy' }));
    const run = await waitForRun(t.d, id, ['success', 'failure']);
    expect(run.status).toBe('success');
    expect(r.requests).toHaveLength(2);
    const gap = r.requests[1]!.at - r.requests[0]!.at;
    // The jitter alone would be at most 20 ms.
    expect(gap).toBeGreaterThanOrEqual(950);
    expect(gap).toBeLessThan(5000);
    const attempts = await t.d.store.getAttempts(id);
    expect(outcomes(attempts)).toEqual(['retry', 'success']);
    expect(attempts[1]!.startedAt - attempts[0]!.endedAt).toBeGreaterThanOrEqual(1000);
  });

  it('ends an attempt that outlives the route timeout as `timeout` (attempt_timeout)', async () => {
    const r = await receiver(() => {
      /* never answers */
    });
    const t = await dispatcher({ routes: [hookRoute(r.url, { timeout: '200ms', retry: { attempts: 1 } })] });
    const id = await sendOne(t.d, event({ type: 'hook.slow' }));
    const run = await waitForRun(t.d, id, ['success', 'failure', 'timeout'], 5000);
    expect(run.status).toBe('failure');
    expect(run.error?.code).toBe('attempt_timeout');
    const attempts = await t.d.store.getAttempts(id);
    expect(attempts).toHaveLength(1);
    expect(attempts[0]).toMatchObject({ outcome: 'timeout', errorCode: 'attempt_timeout' });
    const took = attempts[0]!.endedAt - attempts[0]!.startedAt;
    expect(took).toBeGreaterThanOrEqual(190);
    expect(took).toBeLessThan(2000);
    expect(r.requests).toHaveLength(1);
  });

  it('sends templated bodies, keeping the type of a lone expression', async () => {
    const r = await receiver();
    const t = await dispatcher({
      routes: [hookRoute(r.url, {}, { body: { text: '{{ data.title | upcase }}', n: '{{ data.n }}' } })],
    });
    const id = await sendOne(t.d, event({ type: 'hook.tpl', data: { title: 'disk', n: 3 } }));
    expect((await waitForRun(t.d, id, ['success', 'failure'])).status).toBe('success');
    expect(r.requests).toHaveLength(1);
    expect(r.requests[0]!.headers['content-type']).toMatch(/^application\/json/);
    expect(r.requests[0]!.body).toBe('{"text":"DISK","n":3}');
    expect(JSON.parse(r.requests[0]!.body)).toEqual({ text: 'DISK', n: 3 });
  });
});

describe('dead letters', () => {
  it('replaying a run dead letter queues the run again, and it can succeed', async () => {
    let healthy = false;
    const r = await receiver((_req, _body, res) => {
      res.statusCode = healthy ? 200 : 404;
      res.end();
    });
    const t = await dispatcher({ routes: [hookRoute(r.url)] });
    const id = await sendOne(t.d, event({ type: 'hook.later' }));
    expect((await waitForRun(t.d, id, ['success', 'failure'])).status).toBe('failure');
    const { items } = await t.d.store.listDeadLetters({ origin: 'run', runId: id, limit: 10, offset: 0 });
    expect(items).toHaveLength(1);

    healthy = true;
    const replay = await t.d.replayDeadLetter(items[0]!.id);
    expect(replay.run?.id).toBe(id);
    expect(replay.run?.status).toBe('queued');
    const run = await waitForRun(t.d, id, ['success', 'failure']);
    expect(run.status).toBe('success');
    expect(run.error).toBeNull();
    expect(outcomes(await t.d.store.getAttempts(id))).toEqual(['failure', 'success']);
    expect(r.requests.map((q) => q.headers['webhook-id'])).toEqual([id, id]);
    expect((await t.d.store.getDeadLetter(items[0]!.id))?.replayedAt).not.toBeNull();
  });
});

describe('flow control', () => {
  it('runs one at a time, in order, per ordering key; different keys run side by side', async () => {
    const log: Array<{ start: number; end: number; body: string }> = [];
    const r = await receiver(holding(50, log));
    const t = await dispatcher({ routes: [hookRoute(r.url, { orderingKey: '{{ subject }}' })] });
    const events = Array.from({ length: 10 }, (_, i) =>
      event({ type: 'hook.ordered', subject: i % 2 === 0 ? 'a' : 'b', data: { seq: Math.floor(i / 2) } }),
    );
    const runIds = (await send(t.d, events)).flat();
    expect(runIds).toHaveLength(10);
    for (const id of runIds) expect((await waitForRun(t.d, id, ['success', 'failure'])).status).toBe('success');
    expect(log).toHaveLength(10);

    const bySubject = (s: string) =>
      log
        .map((x) => ({ ...x, event: JSON.parse(x.body) as { subject: string; data: { seq: number } } }))
        .filter((x) => x.event.subject === s)
        .sort((x, y) => x.start - y.start);
    for (const s of ['a', 'b']) {
      const calls = bySubject(s);
      expect(calls.map((c) => c.event.data.seq)).toEqual([0, 1, 2, 3, 4]);
      for (let i = 1; i < calls.length; i++) expect(calls[i]!.start).toBeGreaterThanOrEqual(calls[i - 1]!.end);
    }
    const a = bySubject('a');
    const b = bySubject('b');
    const overlaps = a.some((x) => b.some((y) => x.start < y.end && y.start < x.end));
    expect(overlaps).toBe(true);
  });

  it('keeps at most `concurrency` runs of a route in flight, and finishes them all', async () => {
    const { r, most } = await slowReceiver(80);
    const t = await dispatcher({ routes: [hookRoute(r.url, { concurrency: 2 })] });
    const runIds = (await send(t.d, Array.from({ length: 10 }, () => event({ type: 'hook.limited' })))).flat();
    const running: number[] = [];
    const done = await waitFor(
      async () => {
        const { total } = await t.d.store.listRuns({ route: ['hook'], status: ['running'], limit: 1, offset: 0 });
        running.push(total);
        return (await t.d.store.listRuns({ route: ['hook'], status: ['success'], limit: 1, offset: 0 })).total;
      },
      (n) => n === 10,
      15_000,
      'all 10 runs to succeed',
    );
    expect(done).toBe(10);
    for (const id of runIds) expect((await t.d.store.getRun(id))?.status).toBe('success');
    expect(r.requests).toHaveLength(10);
    expect(most()).toBeLessThanOrEqual(2);
    expect(most()).toBe(2);
    expect(Math.max(...running)).toBeLessThanOrEqual(2);
  });

  it('executes at most `runner.concurrency` actions at once in a process, and records every outcome', async () => {
    const { r, most } = await slowReceiver(60);
    const t = await dispatcher({ runner: { concurrency: 2 }, routes: [hookRoute(r.url)] });
    // One call: two runs are committed already claimed (the room there is), the other ten queued and claimed as slots free.
    const runIds = (await send(t.d, Array.from({ length: 12 }, () => event({ type: 'hook.process' })))).flat();
    const done = await hookSucceeded(t, 12, 15_000);
    expect(done).toBe(12);
    for (const id of runIds) expect((await t.d.store.getRun(id))?.attempts).toBe(1);
    expect(r.requests).toHaveLength(12);
    expect(most()).toBe(2);
    await waitFor(async () => t.d.runner.inFlight, (n) => n === 0, 5000, 'nothing left in flight');
  });

  /** The status each run was created with (its `create` run event): `running` when directly dispatched. */
  async function createdAs(d: Dispatcher, runIds: string[]): Promise<string[]> {
    return Promise.all(runIds.map(async (id) => (await runEvents(d, id))[0]!.status));
  }

  /** Sends `n` events and waits for their runs: the runner learns how fast runs end. */
  async function warmUp(t: TestDispatcher, n = 8): Promise<void> {
    const ids = (await send(t.d, Array.from({ length: n }, () => event({ type: 'hook.warm' })))).flat();
    await waitFor(async () => Promise.all(ids.map((id) => t.d.store.getRun(id))), (runs) => runs.every((r) => r?.status === 'success'), 10_000, 'the warm-up runs');
  }

  it('waits briefly for room while runs end fast, so that runs start without being queued and claimed', async () => {
    const { r } = await slowReceiver(10);
    const t = await dispatcher({ runner: { concurrency: 8, dispatchWait: '5s' }, routes: [hookRoute(r.url)] });
    // About 0.6 runs end per ms (8 slots, 10 ms each), well above the one per 10 ms that makes a call wait.
    await warmUp(t, 200);
    const eight = (type: string) => Array.from({ length: 8 }, () => event({ type }));
    const first = (await send(t.d, eight('hook.first'))).flat();
    // No slot is free now; the eight runs in flight end within about 10 ms, and this call, which may wait up
    // to 10 ms per run it wants (80 ms), waits for them.
    const second = (await send(t.d, eight('hook.second'))).flat();
    expect(await createdAs(t.d, first)).toEqual(Array(8).fill('running'));
    expect(await createdAs(t.d, second)).toEqual(Array(8).fill('running'));
    await waitFor(async () => t.d.runner.inFlight, (n) => n === 0, 5000, 'nothing left in flight');
    for (const id of second) expect(fromStart(await runEvents(t.d, id))).toEqual(['running', 'success']);
  });

  it('queues the runs at once when runs end too slowly to make room in time, or when dispatchWait is 0', async () => {
    for (const [ms, wait] of [[300, '500ms'], [50, 0]] as const) {
      const { r } = await slowReceiver(ms);
      const t = await dispatcher({ runner: { concurrency: 2, dispatchWait: wait }, routes: [hookRoute(r.url)] });
      await warmUp(t);
      const first = (await send(t.d, Array.from({ length: 2 }, () => event({ type: 'hook.first' })))).flat();
      // Twenty runs at 2 per `ms` would take ten times longer than the wait allows: nothing waits, and the
      // slots the first two runs free go to the queue, not to this call.
      const second = (await send(t.d, Array.from({ length: 20 }, () => event({ type: 'hook.second' })))).flat();
      expect(await createdAs(t.d, first)).toEqual(['running', 'running']);
      expect(new Set(await createdAs(t.d, second))).toEqual(new Set(['queued']));
      await hookSucceeded(t, 30, 20_000);
    }
  });

  it('does not hold a single event back for long when runs end slowly: its run is queued, and intake keeps pace with the senders', async () => {
    const { r } = await slowReceiver(100);
    const t = await dispatcher({ runner: { concurrency: 2, dispatchWait: '5s' }, routes: [hookRoute(r.url)] });
    // About 0.02 runs end per ms (2 slots, 100 ms each): below the one per 10 ms that makes a call wait.
    await warmUp(t);
    const first = (await send(t.d, Array.from({ length: 2 }, () => event({ type: 'hook.first' })))).flat();
    // No slot is free; one would be within about 100 ms, well inside dispatchWait, but a call may wait only
    // 10 ms per run it wants. Without that bound each of these calls would wait for a slot, and intake would
    // take events no faster than the runs end.
    const singles: string[] = [];
    for (let i = 0; i < 5; i++) singles.push(...(await send(t.d, [event({ type: 'hook.single' })])).flat());
    expect(await createdAs(t.d, first)).toEqual(['running', 'running']);
    expect(await createdAs(t.d, singles)).toEqual(['queued', 'queued', 'queued', 'queued', 'queued']);
    await hookSucceeded(t, 15, 20_000);
  });

  it('does not overtake runs queued longer than dispatchWait: the room that frees up goes to them, and a call only waits', async () => {
    const { r } = await slowReceiver(20);
    const t = await dispatcher({ runner: { concurrency: 8, dispatchWait: '100ms' }, routes: [hookRoute(r.url)] });
    await warmUp(t, 100);
    // A backlog: 8 runs start and 392 are queued, which take about a second to drain at 8 per 20 ms.
    const backlog = (await send(t.d, Array.from({ length: 400 }, () => event({ type: 'hook.backlog' })))).flat();
    await new Promise((resolve) => setTimeout(resolve, 300));
    // The queue is older than 100 ms now (and far from drained): the slots that free up while a call waits
    // go to it, and the call gets none (runs end every 2.5 ms or so, so a call that could take them, which
    // may wait 80 ms for 8, would).
    expect(await t.d.runner.reserveWithin(8)).toBe(0);
    // So a call from intake only waits, and its runs are queued, unless slots happened to be free the moment
    // it came (runs ended, and the claim that fills their slots is still on its way): those it takes.
    await send(t.d, Array.from({ length: 2 }, () => event({ type: 'hook.late' })));
    const left = await Promise.all(backlog.map((id) => t.d.store.getRun(id)));
    expect(left.some((run) => run?.status === 'queued')).toBe(true);
    await hookSucceeded(t, 502, 20_000);
  });
});

describe('publish', () => {
  it('publishes a new event one hop further, which is routed to its own runs', async () => {
    const t = await dispatcher({
      routes: [
        { name: 'A', match: { type: 'chain.start' }, actions: [{ publish: { type: 'chain.next', data: { from: '{{ id }}' } } }] },
        { name: 'B', match: { type: 'chain.next' }, actions: [{ noop: {} }] },
      ],
    });
    const start = event({ type: 'chain.start' });
    const a = await waitForRun(t.d, await sendOne(t.d, start), ['success', 'failure']);
    expect(a.status).toBe('success');
    const published = (a.result as { published: { source: string; id: string; type: string } }).published;
    expect(published.type).toBe('chain.next');

    const { items } = await t.d.store.listEvents({ type: ['chain.next'], limit: 10, offset: 0 });
    expect(items).toHaveLength(1);
    const next = items[0]!;
    expect(next.hops).toBe(1);
    expect(next.event.id).toBe(published.id);
    expect(next.event.data).toEqual({ from: start.id });
    expect(next.event.correlationid).toBe(start.id);
    expect(next.runCount).toBe(1);

    const bRuns = await waitFor(
      () => t.d.store.listRuns({ eventKey: next.key, limit: 10, offset: 0 }),
      (l) => l.items.length === 1 && l.items[0]!.status === 'success',
      5000,
      "B's run to succeed",
    );
    expect(bRuns.items[0]!.route).toBe('B');
  });

  it('stops a route that publishes into itself at intake.maxHops', async () => {
    const t = await dispatcher({
      intake: { maxHops: 3 },
      routes: [{ name: 'loop', match: { type: 'loop.*' }, actions: [{ publish: { type: 'loop.again' } }], retry: FAST_RETRY }],
    });
    await sendOne(t.d, event({ type: 'loop.start' }));
    const failed = await waitFor(
      () => t.d.store.listRuns({ route: ['loop'], status: ['failure'], limit: 10, offset: 0 }),
      (l) => l.total > 0,
      5000,
      'a loop run to fail',
    );
    expect(failed.total).toBe(1);
    expect(failed.items[0]!.error?.code).toBe('hop_limit_exceeded');
    // Non-retryable: one attempt.
    expect(failed.items[0]!.attempts).toBe(1);

    // Nothing else is left to run, and the chain holds hops 0..maxHops.
    await waitFor(async () => (await t.d.store.stats(Date.now())), (s) => s.queued === 0 && s.running === 0, 5000, 'an idle queue');
    const events = await t.d.store.listEvents({ type: ['loop.start', 'loop.again'], limit: 100, offset: 0 });
    expect(events.total).toBe(4);
    expect(events.items.map((e) => e.hops).sort()).toEqual([0, 1, 2, 3]);
    const runs = await t.d.store.listRuns({ route: ['loop'], limit: 100, offset: 0 });
    expect(runs.total).toBe(4);
    expect(runs.items.filter((x) => x.status === 'success')).toHaveLength(3);
    const intakeDl = await t.d.store.listDeadLetters({ origin: 'intake', reason: ['hop_limit_exceeded'], limit: 10, offset: 0 });
    expect(intakeDl.total).toBe(1);
  });
});

describe('plugins', () => {
  function pluginFile(source: string): string {
    const dir = mkdtempSync(join(tmpdir(), 'dispatcher-plugin-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'plugin.mjs');
    writeFileSync(file, source);
    return file;
  }

  it('loads an action type from a module named in the configuration', async () => {
    const file = pluginFile(
      `export default { type: 'echo', create(params) { return { async execute(ctx) { return { status: 'success', result: { got: ctx.event.data } }; } }; } };\n`,
    );
    const t = await dispatcher({
      plugins: { echo: file },
      routes: [{ name: 'echo', match: { type: 'echo.*' }, actions: [{ echo: {} }] }],
    });
    const id = await sendOne(t.d, event({ type: 'echo.me', data: { a: 1, b: ['x'] } }));
    const run = await waitForRun(t.d, id, ['success', 'failure']);
    expect(run.status).toBe('success');
    expect(run.actionType).toBe('echo');
    expect(run.result).toEqual({ got: { a: 1, b: ['x'] } });
  });

  it('refuses a plugin module without create (plugin_invalid)', async () => {
    const file = pluginFile(`export default { type: 'broken' };\n`);
    await expect(
      startDispatcher({ actions: ALLOW, plugins: { broken: file }, routes: [{ name: 'x', match: { type: 'x' }, actions: [{ noop: {} }] }] }),
    ).rejects.toMatchObject({ code: 'plugin_invalid' });
  });
});

describe('waiting, deadlines and leases', () => {
  it('keeps a waiting run `running` with its correlation id until its deadline makes it `timeout`', async () => {
    let deadline = 0;
    const waiting: ActionType = {
      type: 'handoff',
      create: () => ({
        async execute() {
          deadline = Date.now() + 300;
          return { status: 'waiting', correlationId: 'c1', deadlineAt: deadline };
        },
      }),
    };
    const t = await dispatcher(
      { runner: { poll: '100ms', sweepInterval: '100ms' }, routes: [{ name: 'wait', match: { type: 'wait.*' }, actions: [{ handoff: {} }] }] },
      { actionTypes: [waiting] },
    );
    const id = await sendOne(t.d, event({ type: 'wait.please' }));
    const held = await waitFor(
      () => t.d.store.getRun(id),
      (r) => r !== null && r.correlationId === 'c1',
      5000,
      'the run to wait',
    );
    expect(held!.status).toBe('running');
    expect(held!.leaseOwner).toBeNull();
    expect(held!.deadlineAt).toBe(deadline);
    expect(outcomes(await t.d.store.getAttempts(id))).toEqual(['waiting']);

    const run = await waitForRun(t.d, id, ['timeout', 'success', 'failure'], 5000);
    expect(run.status).toBe('timeout');
    expect(run.error?.code).toBe('deadline_exceeded');
    expect(run.finishedAt!).toBeGreaterThanOrEqual(deadline);
    const { items } = await t.d.store.listDeadLetters({ origin: 'run', runId: id, limit: 10, offset: 0 });
    expect(items).toHaveLength(1);
    expect(items[0]!.reason).toBe('deadline_exceeded');
    expect((await runEvents(t.d, id)).at(-1)?.status).toBe('timeout');
    const metrics = await t.d.metrics.registry.metrics();
    expect(metrics).toMatch(/dispatcher_runs_swept_total\{outcome="timed_out"\} 1\b/);
  });

  it('prunes ended runs, their events, run events and dead letters past their retention, a batch at a time', async () => {
    const t = await dispatcher({
      runner: { poll: '100ms', sweepInterval: '100ms' },
      retention: { runs: '50ms', events: '50ms', runEvents: '50ms', deadLetters: '50ms', interval: '100ms', batchSize: 2 },
      routes: [{ name: 'n', match: { type: 'prune.*' }, actions: [{ noop: {} }] }],
    });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await sendOne(t.d, event({ type: 'prune.me' })));
    await t.d.store.addDeadLetters([{ origin: 'intake', source: 'http', reason: 'invalid_json', error: 'x', raw: Buffer.from('{'), service: 's', orgId: 'o', at: Date.now() }]);
    await waitFor(
      async () => [(await t.d.store.listRuns({ limit: 10, offset: 0 })).total, (await t.d.store.listEvents({ limit: 10, offset: 0 })).total, (await t.d.store.listDeadLetters({ limit: 10, offset: 0 })).total, (await t.d.store.readRunEvents(0, 100)).length],
      (counts) => counts.every((n) => n === 0),
      10_000,
      'everything to be pruned',
    );
    for (const id of ids) expect(await t.d.store.getAttempts(id)).toEqual([]);
    const metrics = await t.d.metrics.registry.metrics();
    expect(metrics).toMatch(/dispatcher_pruned_total\{kind="runs"\} 5\b/);
    expect(metrics).toMatch(/dispatcher_pruned_total\{kind="events"\} 5\b/);
  });

  it('requeues a run whose lease expired and completes it', async () => {
    const t = await dispatcher(
      { runner: { poll: '100ms', sweepInterval: '100ms' }, routes: [{ name: 'n', match: { type: 'lease.*' }, actions: [{ noop: {} }] }] },
      { start: false },
    );
    const id = await sendOne(t.d, event({ type: 'lease.lost' }));
    const claimed = await t.d.store.claimRuns({ owner: 'ghost', limit: 10, now: Date.now(), leaseMs: 100, routeLimits: new Map() });
    expect(claimed.map((c) => c.run.id)).toEqual([id]);
    expect((await t.d.store.getRun(id))?.leaseOwner).toBe('ghost');

    t.d.start();
    const run = await waitForRun(t.d, id, ['success', 'failure', 'timeout'], 5000);
    expect(run.status).toBe('success');
    expect(run.attempts).toBe(2);
    const attempts = await t.d.store.getAttempts(id);
    expect(attempts.map((a) => [a.n, a.outcome, a.errorCode])).toEqual([
      [1, 'failure', 'lease_expired'],
      [2, 'success', null],
    ]);
    expect((await runEvents(t.d, id)).map((e) => e.status)).toEqual(['queued', 'running', 'queued', 'running', 'success']);
  });
});

describe('cancel and shutdown', () => {
  it('cancels a running run; it stays canceled', async () => {
    const r = await receiver((_req, _body, res) => {
      setTimeout(() => res.end('late'), 2000).unref();
    });
    const t = await dispatcher({ routes: [hookRoute(r.url)] });
    const id = await sendOne(t.d, event({ type: 'hook.cancel' }));
    await waitFor(async () => r.requests.length, (n) => n === 1, 5000, 'the request to arrive');
    expect((await t.d.store.getRun(id))?.status).toBe('running');

    const canceledAt = Date.now();
    const canceled = await t.d.cancelRun(id);
    expect(canceled.status).toBe('canceled');
    // The attempt in flight is aborted, not left to run until the receiver answers 2 s later.
    await waitFor(async () => t.d.runner.inFlight, (n) => n === 0, 5000, 'the attempt to end');
    expect(Date.now() - canceledAt).toBeLessThan(1000);
    const run = await t.d.store.getRun(id);
    expect(run?.status).toBe('canceled');
    expect(run?.error?.code).toBe('canceled');
    expect(outcomes(await t.d.store.getAttempts(id))).toEqual(['canceled']);
    expect(fromStart(await runEvents(t.d, id))).toEqual(['running', 'canceled']);
    expect(r.requests).toHaveLength(1);
  });

  it('fences out the outcome of an attempt that ends after its run was canceled in the store', async () => {
    // The store alone cancels the run (as another process would): this runner does not know, and its
    // attempt ends normally, later.
    const r = await receiver((_req, _body, res) => {
      setTimeout(() => res.end('late'), 600).unref();
    });
    const t = await dispatcher({ routes: [hookRoute(r.url)] });
    const id = await sendOne(t.d, event({ type: 'hook.cancel' }));
    await waitFor(async () => r.requests.length, (n) => n === 1, 5000, 'the request to arrive');
    await t.d.store.cancelRun(id, Date.now());
    expect(t.d.runner.inFlight).toBe(1);
    await waitFor(async () => t.d.runner.inFlight, (n) => n === 0, 5000, 'the attempt to end');
    const run = await t.d.store.getRun(id);
    expect(run?.status).toBe('canceled');
    expect(run?.result).toBeNull();
    expect(outcomes(await t.d.store.getAttempts(id))).toEqual(['canceled']);
    expect(fromStart(await runEvents(t.d, id))).toEqual(['running', 'canceled']);
  });

  it('releases in-flight runs at shutdown, within the shutdown timeout', async () => {
    const r = await receiver((_req, _body, res) => {
      setTimeout(() => res.end('too late'), 5000).unref();
    });
    const t = await dispatcher({ runner: { poll: '100ms', sweepInterval: '200ms', shutdownTimeout: '200ms' }, routes: [hookRoute(r.url)] });
    const id = await sendOne(t.d, event({ type: 'hook.shutdown' }));
    await waitFor(async () => r.requests.length, (n) => n === 1, 5000, 'the request to arrive');
    expect((await t.d.store.getRun(id))?.status).toBe('running');

    const began = Date.now();
    await t.d.close();
    const took = Date.now() - began;
    expect(took).toBeLessThan(2000);
    expect(took).toBeGreaterThanOrEqual(150);

    // Read the file again with a fresh dispatcher that does not run anything.
    const again = await dispatcher({ routes: [hookRoute(r.url)] }, { start: false, storeUrl: `sqlite:${join(t.dir, 'dispatcher.db')}` });
    const run = await again.d.store.getRun(id);
    expect(run?.status).toBe('queued');
    expect(run?.leaseOwner).toBeNull();
    expect(run?.attempts).toBe(0);
    expect(fromStart(await runEvents(again.d, id))).toEqual(['running', 'queued']);
  });
});
