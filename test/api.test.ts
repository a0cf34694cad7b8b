/**
 * The HTTP API against a real dispatcher on SQLite: intake in every mode, bad input, reads, cancel and
 * retry, dead letters, health, metrics and the OpenAPI document. Requests go through Fastify's inject (in
 * process); the stream test listens on a real port.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { event, startDispatcher, waitForRun, type TestDispatcher, authed, AUTH } from './helpers.js';

let t: TestDispatcher;
let app: FastifyInstance;

const CE = 'application/cloudevents+json';
const BATCH = 'application/cloudevents-batch+json';

beforeAll(async () => {
  t = await startDispatcher({
    server: { bodyLimit: '64KiB' },
    deadLetters: { maxBytes: '1KiB' },
    intake: { maxBatch: 50, maxDepth: 8 },
    types: {
      'alert.raised': {
        schema: {
          type: 'object',
          required: ['severity', 'title'],
          properties: { severity: { enum: ['low', 'high', 'critical'] }, title: { type: 'string' } },
        },
      },
    },
    routes: [
      { name: 'example', match: { type: 'example.*' }, actions: [{ noop: {} }], labels: { team: '{{ data.team }}' } },
      {
        name: 'page-critical',
        match: { type: 'alert.raised', topic: 'soar.*.noc.#', data: { severity: ['critical'] } },
        actions: [{ noop: {}, name: 'page' }, { noop: {}, name: 'ticket' }],
      },
    ],
  });
  app = authed(await t.d.app());
});

afterAll(async () => {
  await t?.close();
});

async function post(body: unknown, contentType = CE, headers: Record<string, string> = {}) {
  return app.inject({
    method: 'POST',
    url: '/v1/events',
    headers: { 'content-type': contentType, ...headers },
    payload: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
  });
}

async function deadLetterFor(reason: string) {
  const res = await app.inject({ method: 'GET', url: `/v1/dead-letters?filter[reason]=${reason}&filter[origin]=intake` });
  expect(res.statusCode).toBe(200);
  return res.json().data as Array<Record<string, any>>;
}

describe('intake', () => {
  it('accepts a structured event, and its run succeeds', async () => {
    const e = event({ data: { team: 'noc' } });
    const res = await post(e);
    expect(res.statusCode).toBe(202);
    const body = res.json();
    expect(body.accepted).toBe(1);
    expect(body.events[0].status).toBe('accepted');
    expect(body.events[0].runs).toHaveLength(1);
    const run = await waitForRun(t.d, body.events[0].runs[0], ['success']);
    expect(run.route).toBe('example');
    expect(run.labels).toEqual({ team: 'noc' });

    const got = await app.inject({ method: 'GET', url: `/v1/runs/${run.id}` });
    expect(got.statusCode).toBe(200);
    const r = got.json();
    expect(r.status).toBe('success');
    expect(r.attempts_log).toHaveLength(1);
    expect(r.attempts_log[0].outcome).toBe('success');

    const ev = await app.inject({ method: 'GET', url: `/v1/events/${body.events[0].id}` });
    expect(ev.statusCode).toBe(200);
    expect(ev.json().event.id).toBe(e.id);
    expect(ev.json().runs.map((x: { id: string }) => x.id)).toEqual([run.id]);
  });

  it('answers duplicate for the same (source, id) and makes no new runs', async () => {
    const e = event();
    const first = (await post(e)).json();
    const again = await post({ ...e, data: { other: true } });
    expect(again.statusCode).toBe(202);
    expect(again.json().events[0]).toEqual({ index: 0, id: first.events[0].id, status: 'duplicate', runs: [] });
    const runs = await app.inject({ method: 'GET', url: `/v1/runs?filter[event]=${first.events[0].id}` });
    expect(runs.json().meta.total).toBe(1);
    // Same id from another source is another event.
    const other = await post({ ...e, source: 'urn:other' });
    expect(other.json().events[0].status).toBe('accepted');
  });

  it('takes a batch, routes by type, topic and content, and plans one run per action', async () => {
    const events = [
      event({ type: 'alert.raised', topic: 'soar.eu.noc.disk', data: { severity: 'critical', title: 'disk full' } }),
      event({ type: 'alert.raised', topic: 'soar.eu.noc.disk', data: { severity: 'low', title: 'meh' } }),
      event({ type: 'alert.raised', topic: 'soar.eu.sec', data: { severity: 'critical', title: 'wrong topic' } }),
    ];
    const res = await post(events, BATCH);
    expect(res.statusCode).toBe(202);
    const body = res.json();
    expect(body.accepted).toBe(3);
    expect(body.events.map((e: { runs: string[] }) => e.runs.length)).toEqual([2, 0, 0]);
    const unrouted = await app.inject({ method: 'GET', url: '/v1/events?filter[routed]=false&filter[type]=alert.raised' });
    const ids = unrouted.json().data.map((e: { id: string }) => e.id);
    expect(ids).toContain(body.events[1].id);
    expect(ids).toContain(body.events[2].id);
    expect(ids).not.toContain(body.events[0].id);
    for (const id of body.events[0].runs) await waitForRun(t.d, id, ['success']);
  });

  it('takes binary mode: ce-* headers, the body is data', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/events',
      headers: { 'content-type': 'application/json', 'ce-specversion': '1.0', 'ce-id': 'bin-1', 'ce-source': 'urn:bin', 'ce-type': 'example.binary', 'ce-subject': 'caf%C3%A9' },
      payload: JSON.stringify({ team: 'bin' }),
    });
    expect(res.statusCode).toBe(202);
    const stored = (await app.inject({ method: 'GET', url: `/v1/events/${res.json().events[0].id}` })).json();
    expect(stored.event).toMatchObject({ id: 'bin-1', source: 'urn:bin', type: 'example.binary', subject: 'café', data: { team: 'bin' } });
  });

  it('keeps the good events of a batch: 207, each refused one with its index, code and problems, kept as a dead letter that replays alone', async () => {
    const body = [event(), { specversion: '1.0', id: 'x-partial', source: 'urn:test' }, event(), event({ type: 'alert.raised', data: { severity: 'urgent' } })];
    const res = await post(body, BATCH);
    expect(res.statusCode).toBe(207);
    const answer = res.json();
    expect(answer).toMatchObject({ accepted: 2, duplicates: 0, refused: 2 });
    expect(answer.events.map((e: { index: number; status: string }) => [e.index, e.status])).toEqual([
      [0, 'accepted'],
      [1, 'refused'],
      [2, 'accepted'],
      [3, 'refused'],
    ]);
    expect(answer.events[1]).toMatchObject({ code: 'invalid_event', problems: [expect.objectContaining({ pointer: '/1/type' })] });
    expect(answer.events[3].code).toBe('schema_violation');
    expect(answer.events[3].problems.map((p: { pointer: string }) => p.pointer)).toContain('/3/data/severity');
    for (const i of [0, 2]) {
      const stored = await app.inject({ method: 'GET', url: `/v1/events?filter[id]=${(body[i] as { id: string }).id}` });
      expect(stored.json().meta.total).toBe(1);
    }
    // The dead letter keeps the refused event alone, its problems pointing into it.
    const dl = (await app.inject({ method: 'GET', url: `/v1/dead-letters/${answer.events[3].dead_letter}` })).json();
    expect(JSON.parse(dl.raw)).toEqual(body[3]);
    expect(dl).toMatchObject({ origin: 'intake', reason: 'schema_violation', content_type: 'application/cloudevents+json', source: 'http' });
    expect(dl.details.index).toBe(3);
    expect(dl.details.problems.map((p: { pointer: string }) => p.pointer)).toContain('/data/severity');
    expect(dl.error).toMatch(/^\/data/);
    // Replayed, it goes through intake alone: refused again, as the single event it is, one more attempt.
    const replay = await app.inject({ method: 'POST', url: `/v1/dead-letters/${dl.id}/replay` });
    expect(replay.statusCode).toBe(400);
    expect(replay.json().problems.map((p: { pointer: string }) => p.pointer)).toContain('/data/severity');
    expect((await app.inject({ method: 'GET', url: `/v1/dead-letters/${dl.id}` })).json().attempts).toBe(2);
  });

  it('rejects a batch whose every event is bad whole, naming each problem, and keeps it as a dead letter', async () => {
    const body = [{ specversion: '1.0', id: 'x', source: 'urn:test' }, event({ time: 'yesterday', Bad: 1 })];
    const res = await post(body, BATCH);
    expect(res.statusCode).toBe(400);
    const err = res.json();
    expect(err.code).toBe('invalid_event');
    const pointers = err.problems.map((p: { pointer: string }) => p.pointer);
    expect(pointers).toEqual(expect.arrayContaining(['/0/type', '/1/time', '/1/Bad']));
    // Nothing of it was accepted.
    const second = await app.inject({ method: 'GET', url: `/v1/events?filter[id]=${(body[1] as { id: string }).id}` });
    expect(second.json().meta.total).toBe(0);
    const dls = await deadLetterFor('invalid_event');
    const dl = dls.find((d) => d.raw === JSON.stringify(body));
    expect(dl).toBeDefined();
    expect(dl!.details.problems.length).toBe(err.problems.length);
  });

  it('rejects data that fails its type schema with schema_violation and the validator messages', async () => {
    const res = await post(event({ type: 'alert.raised', data: { severity: 'urgent' } }));
    expect(res.statusCode).toBe(400);
    const err = res.json();
    expect(err.code).toBe('schema_violation');
    expect(err.problems.map((p: { pointer: string }) => p.pointer)).toEqual(expect.arrayContaining(['/data', '/data/severity']));
    expect((await deadLetterFor('schema_violation')).length).toBeGreaterThan(0);
  });

  const badInputs: Array<[string, () => ReturnType<typeof post>, number, string]> = [
    ['malformed JSON', () => post('{"specversion": "1.0",', CE), 400, 'invalid_json'],
    ['an empty body', () => post('', CE), 400, 'invalid_json'],
    ['a wrong content type', () => post('hello', 'text/plain'), 415, 'unsupported_media_type'],
    ['a batch that is not an array', () => post(event(), BATCH), 400, 'invalid_event'],
    ['a body over the limit', () => post(JSON.stringify(event({ data: { pad: 'x'.repeat(80 * 1024) } })), CE), 413, 'payload_too_large'],
    ['deep nesting', () => post(event({ data: JSON.parse('{"a":'.repeat(20) + '1' + '}'.repeat(20)) })), 400, 'too_deep'],
    ['a __proto__ key', () => post(`{"specversion":"1.0","id":"p","source":"s","type":"example.x","data":{"__proto__":{"polluted":true}}}`), 400, 'forbidden_key'],
    ['invalid UTF-8', () => post(Buffer.concat([Buffer.from('{"specversion":"1.0","id":"'), Buffer.from([0xff, 0xfe]), Buffer.from('","source":"s","type":"t"}')])), 400, 'invalid_utf8'],
    ['a batch over the count limit', () => post(Array.from({ length: 51 }, () => event()), BATCH), 413, 'batch_too_large'],
    ['an event that is not an object', () => post('42', CE), 400, 'invalid_event'],
  ];
  for (const [what, send, status, code] of badInputs) {
    it(`answers ${status} ${code} for ${what}, keeps a dead letter, and stays up`, async () => {
      const before = (await deadLetterFor(code)).reduce((n, d) => n + d.attempts, 0);
      const res = await send();
      expect(res.statusCode).toBe(status);
      expect(res.json().code).toBe(code);
      expect(JSON.stringify(res.json())).not.toMatch(/at .*\.ts:\d+/);
      const after = await deadLetterFor(code);
      expect(after.reduce((n, d) => n + d.attempts, 0)).toBe(before + 1);
      for (const d of after) expect(Buffer.byteLength(d.raw ?? Buffer.from(d.raw_base64 ?? '', 'base64'))).toBeLessThanOrEqual(1024);
      expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    });
  }

  it('refuses strings no store can keep (U+0000, unpaired surrogates), naming where they are', async () => {
    for (const [body, pointer] of [
      ['{"specversion":"1.0","id":"nul-1","source":"s","type":"example.x","data":{"a":["ok","x\\u0000y"]}}', '/data/a/1'],
      ['{"specversion":"1.0","id":"sur-1","source":"s","type":"example.x","data":{"k\\ud800":1}}', '/data/k\ud800'],
      ['{"specversion":"1.0","id":"sub\\u0000","source":"s","type":"example.x"}', '/id'],
    ] as const) {
      const res = await post(body);
      expect(res.statusCode, body).toBe(400);
      expect(res.json().code).toBe('invalid_event');
      expect(res.json().problems[0].pointer).toBe(pointer);
    }
    // A surrogate pair written as escapes is a well-formed string, and accepted.
    const ok = await post('{"specversion":"1.0","id":"pair-1","source":"s","type":"example.x","data":{"smile":"\\ud83d\\ude00"}}');
    expect(ok.statusCode).toBe(202);
  });

  it('refuses numbers parsing would change (too large for a double, integers beyond 2^53), naming where they are; keeps the largest exact ones', async () => {
    for (const [body, pointer, what] of [
      ['{"specversion":"1.0","id":"big-1","source":"s","type":"example.x","data":{"n":1e400}}', '/data/n', /too large to be represented/],
      ['{"specversion":"1.0","id":"big-2","source":"s","type":"example.x","data":{"list":[1,-1e999]}}', '/data/list/1', /too large/],
      ['{"specversion":"1.0","id":"big-3","source":"s","type":"example.x","data":{"id":9007199254740993}}', '/data/id', /beyond 2\^53/],
      ['{"specversion":"1.0","id":"big-4","source":"s","type":"example.x","count":12345678901234567890}', '/count', /beyond 2\^53/],
    ] as const) {
      const res = await post(body);
      expect(res.statusCode, body).toBe(400);
      expect(res.json().code).toBe('invalid_event');
      expect(res.json().problems[0]).toMatchObject({ pointer, message: expect.stringMatching(what) });
    }
    // The largest integer a double keeps exactly, a long string of digits, and a large finite float pass as they are.
    const ok = await post('{"specversion":"1.0","id":"big-ok","source":"s","type":"example.x","data":{"max":9007199254740991,"s":"123456789012345678901","f":1.5e300}}');
    expect(ok.statusCode, ok.body).toBe(202);
    const stored = await app.inject({ method: 'GET', url: `/v1/events/${ok.json().events[0].id}` });
    expect(stored.json().event.data).toEqual({ max: 9007199254740991, s: '123456789012345678901', f: 1.5e300 });
  });

  it('keeps only the configured bytes of an oversized body', async () => {
    const dls = await deadLetterFor('payload_too_large');
    expect(dls.length).toBeGreaterThan(0);
    expect(dls[0]!.raw_truncated).toBe(true);
    expect(dls[0]!.raw.length).toBe(1024);
  });

  it('has no prototype pollution after a __proto__ body', () => {
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('strict intake', () => {
  it('rejects an unknown type with unknown_type when strict is on', async () => {
    const s = await startDispatcher({ intake: { strict: true } });
    try {
      const res = await authed(await s.d.app()).inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': CE }, payload: JSON.stringify(event({ type: 'nobody.knows' })) });
      expect(res.statusCode).toBe(400);
      expect(res.json().code).toBe('unknown_type');
      expect(res.json().problems[0].pointer).toBe('/type');
    } finally {
      await s.close();
    }
  });
});

describe('reads', () => {
  const ids: string[] = [];
  beforeAll(async () => {
    for (const team of ['a', 'b', 'a']) {
      const res = await post(event({ type: 'example.read', data: { team } }));
      ids.push(res.json().events[0].runs[0]);
    }
    for (const id of ids) await waitForRun(t.d, id, ['success']);
  });

  it('filters runs by status, type, route and labels', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/runs?filter[type]=example.read&filter[labels][team]=a&filter[status]=success&filter[route]=example' });
    expect(res.statusCode).toBe(200);
    const got = res.json().data.map((r: { id: string }) => r.id).sort();
    expect(got).toEqual([ids[0], ids[2]].sort());
    const none = await app.inject({ method: 'GET', url: '/v1/runs?filter[type]=example.read&filter[status]=failure' });
    expect(none.json().meta.total).toBe(0);
  });

  it('sorts, pages with links, and returns sparse fieldsets', async () => {
    const asc = (await app.inject({ method: 'GET', url: '/v1/runs?filter[type]=example.read&sort=created_at' })).json();
    expect(asc.data.map((r: { id: string }) => r.id)).toEqual(ids);
    const desc = (await app.inject({ method: 'GET', url: '/v1/runs?filter[type]=example.read&sort=-created_at' })).json();
    expect(desc.data.map((r: { id: string }) => r.id)).toEqual([...ids].reverse());
    const page = (await app.inject({ method: 'GET', url: '/v1/runs?filter[type]=example.read&sort=created_at&limit=1&offset=1&fields[data]=id,status' })).json();
    expect(page.data).toEqual([{ id: ids[1], status: 'success' }]);
    expect(page.meta).toEqual({ count: 1, total: 3 });
    expect(page.links.next).toContain('offset=2');
    expect(page.links.previous).toContain('offset=0');
    expect(page.links.last).toContain('offset=2');
  });

  it('filters by time range', async () => {
    const future = new Date(Date.now() + 60_000).toISOString();
    const res = await app.inject({ method: 'GET', url: `/v1/runs?filter[type]=example.read&filter[created_at][gte]=${future}` });
    expect(res.json().meta.total).toBe(0);
    const past = await app.inject({ method: 'GET', url: `/v1/runs?filter[type]=example.read&filter[created_at][lt]=${future}` });
    expect(past.json().meta.total).toBe(3);
  });

  it('answers 400 naming the parameter for bad queries', async () => {
    for (const [url, param] of [
      ['/v1/runs?filter[status]=done', 'filter[status]'],
      ['/v1/runs?filter[colour]=red', 'filter[colour]'],
      ['/v1/runs?sort=salad', 'sort'],
      ['/v1/runs?limit=0', 'limit'],
      ['/v1/runs?limit=abc', 'limit'],
      ['/v1/runs?offset=-1', 'offset'],
      ['/v1/runs?fields[data]=salad', 'fields[data]'],
      ['/v1/runs?filter[created_at][soon]=1', 'filter[created_at][soon]'],
    ]) {
      const res = await app.inject({ method: 'GET', url: url! });
      expect(res.statusCode, url).toBe(400);
      expect(res.json().code).toBe('bad_request');
      expect(res.json().message).toContain(param);
    }
  });

  it('answers 404 for unknown records', async () => {
    for (const url of ['/v1/runs/nope', '/v1/events/nope', '/v1/dead-letters/nope']) {
      const res = await app.inject({ method: 'GET', url });
      expect(res.statusCode).toBe(404);
      expect(res.json().code).toBe('not_found');
    }
    expect((await app.inject({ method: 'GET', url: '/v1/nothing-here' })).json().code).toBe('not_found');
  });

  it('answers 405 with the allowed methods for a known path asked with another method', async () => {
    const res = await app.inject({ method: 'DELETE', url: '/v1/events' });
    expect(res.statusCode).toBe(405);
    expect(res.json().code).toBe('method_not_allowed');
    expect(String(res.headers.allow).split(', ')).toEqual(expect.arrayContaining(['GET', 'POST']));
    const cancel = await app.inject({ method: 'GET', url: '/v1/runs/some-id/cancel' });
    expect(cancel.statusCode).toBe(405);
    expect(cancel.headers.allow).toBe('POST');
  });
});

describe('cancel, retry and dead letters', () => {
  it('refuses to cancel a finished run and to retry a successful one', async () => {
    const id = (await post(event())).json().events[0].runs[0];
    await waitForRun(t.d, id, ['success']);
    const cancel = await app.inject({ method: 'POST', url: `/v1/runs/${id}/cancel` });
    expect(cancel.statusCode).toBe(409);
    expect(cancel.json().code).toBe('invalid_state');
    const retry = await app.inject({ method: 'POST', url: `/v1/runs/${id}/retry` });
    expect(retry.statusCode).toBe(409);
  });

  it('cancels a queued run, retries it, and it succeeds', async () => {
    const s = await startDispatcher({}, { start: false });
    try {
      const a = authed(await s.d.app());
      const id = (await a.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': CE }, payload: JSON.stringify(event()) })).json().events[0].runs[0];
      const cancel = await a.inject({ method: 'POST', url: `/v1/runs/${id}/cancel` });
      expect(cancel.statusCode).toBe(200);
      expect(cancel.json().status).toBe('canceled');
      const retry = await a.inject({ method: 'POST', url: `/v1/runs/${id}/retry` });
      expect(retry.statusCode).toBe(200);
      expect(retry.json().status).toBe('queued');
      s.d.start();
      await waitForRun(s.d, id, ['success']);
      const events = await s.d.store.readRunEvents(0, 100);
      expect(events.filter((e) => e.runId === id).map((e) => e.status)).toEqual(['queued', 'canceled', 'queued', 'running', 'success']);
    } finally {
      await s.close();
    }
  });

  it('replays an intake dead letter, and deletes one', async () => {
    const e = event();
    // A dead letter whose bytes are a valid event (kept because the batch it came in was over the limit
    // at the time): replayed, it is accepted now.
    const dlId = (await t.d.store.addDeadLetters([
      { origin: 'intake', source: 'http', reason: 'batch_too_large', error: 'x', raw: Buffer.from(JSON.stringify(e)), contentType: CE, headers: { 'content-type': CE }, service: 'anonymous', orgId: 'default', at: Date.now() },
    ]))[0];
    const replay = await app.inject({ method: 'POST', url: `/v1/dead-letters/${dlId}/replay` });
    expect(replay.statusCode).toBe(200);
    expect(replay.json().events[0].status).toBe('accepted');
    const dl = (await app.inject({ method: 'GET', url: `/v1/dead-letters/${dlId}` })).json();
    expect(dl.replayed_at).not.toBeNull();
    const del = await app.inject({ method: 'DELETE', url: `/v1/dead-letters/${dlId}` });
    expect(del.statusCode).toBe(204);
    expect((await app.inject({ method: 'GET', url: `/v1/dead-letters/${dlId}` })).statusCode).toBe(404);
  });

  it('replaying a dead letter that is still bad answers with the error and counts an attempt', async () => {
    const before = await deadLetterFor('invalid_json');
    const target = before[0]!;
    const res = await app.inject({ method: 'POST', url: `/v1/dead-letters/${target.id}/replay` });
    expect(res.statusCode).toBe(400);
    const after = (await app.inject({ method: 'GET', url: `/v1/dead-letters/${target.id}` })).json();
    expect(after.attempts).toBe(target.attempts + 1);
  });
});

describe('health, metrics, OpenAPI', () => {
  it('reports liveness and readiness with the backlog', async () => {
    expect((await app.inject({ method: 'GET', url: '/healthz' })).json()).toEqual({ status: 'ok' });
    const ready = await app.inject({ method: 'GET', url: '/readyz' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toMatchObject({ status: 'ready', store: 'sqlite' });
    expect(typeof ready.json().oldest_queued_age_seconds).toBe('number');
    expect(typeof ready.json().runs.queued).toBe('number');
  });

  it('serves Prometheus metrics that count what happened', async () => {
    const res = await app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toContain('text/plain');
    expect(res.body).toMatch(/dispatcher_events_received_total\{input="http",outcome="accepted"\} [1-9]/);
    expect(res.body).toMatch(/dispatcher_events_unrouted_total\{input="http"\} [1-9]/);
    expect(res.body).toMatch(/dispatcher_runs_finished_total\{route="example",status="success"\} [1-9]/);
    expect(res.body).toContain('dispatcher_oldest_queued_age_seconds');
  });

  it('metrics a Prometheus user expects: process and Node.js, HTTP durations by route pattern, dead letters as their own gauge, current at every scrape', async () => {
    const scrape = async () => (await app.inject({ method: 'GET', url: '/metrics' })).body;
    const before = await scrape();
    for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) expect(before, name).toContain(`${name} `);
    // Durations by the route's pattern, never by the id in the path.
    await app.inject({ method: 'GET', url: '/v1/runs/no-such-run', headers: AUTH });
    const after = await scrape();
    expect(after).toMatch(/dispatcher_http_request_duration_seconds_count\{method="GET",route="\/v1\/runs\/:id",status="404"\} [1-9]/);
    expect(after).not.toContain('no-such-run');
    expect(after).not.toContain('state="dead_letters"');
    // A dead letter made between two scrapes shows in the second: the gauges read the store when scraped.
    const kept = (text: string) => Number(/^dispatcher_dead_letters (\d+)$/m.exec(text)![1]);
    const n = kept(after);
    expect((await post(`{"broken-${Date.now()}"`, CE)).statusCode).toBe(400);
    expect(kept(await scrape())).toBe(n + 1);
    expect(await scrape()).toMatch(/^dispatcher_runs\{state="queued"\} \d+$/m);
  });

  it('publishes OpenAPI 3.1 listing every route, and browsable docs', async () => {
    const res = await app.inject({ method: 'GET', url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    const doc = res.json();
    expect(doc.openapi).toBe('3.1.0');
    for (const path of ['/v1/events', '/v1/events/{id}', '/v1/runs', '/v1/runs/{id}', '/v1/runs/{id}/cancel', '/v1/runs/{id}/retry', '/v1/dead-letters', '/v1/dead-letters/{id}', '/v1/dead-letters/{id}/replay', '/v1/stream', '/healthz', '/readyz']) {
      expect(doc.paths[path], path).toBeDefined();
    }
    const docs = await app.inject({ method: 'GET', url: '/docs/' });
    expect(docs.statusCode).toBe(200);
    expect(docs.headers['content-type']).toContain('text/html');
  });

  it('the OpenAPI document is valid OpenAPI 3.1, has every route, and describes inputs and answers', async () => {
    const { Validator } = await import('@seriousme/openapi-schema-validator');
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
    const result = await new Validator().validate(doc);
    expect(result.errors ?? [], JSON.stringify(result.errors ?? []).slice(0, 3000)).toEqual([]);
    expect(result.valid).toBe(true);
    expect(doc.info.license).toEqual({ name: 'Apache-2.0', identifier: 'Apache-2.0' });
    expect(doc.servers).toEqual([{ url: '/', description: 'this dispatcher' }]);
    // Every route the app serves is in it, with that method (the document itself and the docs' files aside).
    const raw = (await t.d.app()) as unknown as { routeTable: Array<{ method: string; url: string; public: boolean }> };
    const operationIds = new Set<string>();
    for (const r of raw.routeTable) {
      if (r.url === '/openapi.json' || r.url.startsWith('/docs') || r.method === 'HEAD') continue;
      const path = r.url.replace(/:([A-Za-z_]+)/g, '{$1}');
      const operation = doc.paths[path]?.[r.method.toLowerCase()];
      expect(operation, `${r.method} ${r.url}`).toBeDefined();
      expect(operation.operationId, `${r.method} ${r.url}`).toMatch(/^[a-z][A-Za-z]+$/);
      expect(operationIds.has(operation.operationId), operation.operationId).toBe(false);
      operationIds.add(operation.operationId);
      if (r.public) expect(operation.security, `${r.method} ${r.url}`).toEqual([]);
      else for (const status of ['401', '403', '429']) expect(operation.responses[status], `${r.method} ${r.url} ${status}`).toBeDefined();
    }
    for (const path of ['/healthz', '/readyz']) expect(doc.paths[path].get.security).toEqual([]);
    // The intake request: structured, batch and binary modes; the answer of a batch taken in part.
    const send = doc.paths['/v1/events'].post;
    expect(send.operationId).toBe('sendEvents');
    expect(Object.keys(send.requestBody.content)).toEqual(['application/cloudevents+json', 'application/cloudevents-batch+json', 'application/json', 'application/octet-stream']);
    expect(send.parameters.filter((p: { in: string }) => p.in === 'header').map((p: { name: string }) => p.name)).toContain('ce-specversion');
    expect(send.responses['207']).toBeDefined();
    // Query parameters from the spec the route parses with: filters, ranges, sort, fields, paging.
    const names = doc.paths['/v1/runs'].get.parameters.map((p: { name: string }) => p.name);
    for (const name of ['filter[status]', 'filter[created_at][gte]', 'sort', 'fields[data]', 'limit', 'offset']) expect(names).toContain(name);
    expect(doc.paths['/v1/runs/{id}'].get.parameters).toEqual([expect.objectContaining({ name: 'id', in: 'path', required: true })]);
    // What /docs sends: the example body, with the credential the security scheme names, to the server listed.
    const example = send.requestBody.content['application/cloudevents+json'].example;
    const res = await app.inject({ method: 'POST', url: `${doc.servers[0].url.replace(/\/$/, '')}/v1/events`, headers: { 'content-type': 'application/cloudevents+json', [doc.components.securitySchemes.psk.name]: AUTH.authorization }, payload: JSON.stringify({ ...example, id: `docs-${Date.now()}` }) });
    expect(res.statusCode, res.body).toBe(202);
  });
});

/** Reads a response body until `done` holds on the text so far. */
async function readUntil(body: ReadableStream<Uint8Array>, done: (text: string) => boolean, what: string): Promise<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  const until = Date.now() + 10_000;
  while (!done(text)) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; got: ${text}`);
    const chunk = await Promise.race([reader.read(), new Promise<null>((r) => setTimeout(() => r(null), 10_000))]);
    if (chunk === null || chunk.done) break;
    text += decoder.decode(chunk.value, { stream: true });
  }
  reader.releaseLock();
  return text;
}

describe('stream', () => {
  it('streams run events as server-sent events, and resumes after Last-Event-ID', async () => {
    const s = await startDispatcher({ server: { port: 0 } });
    try {
      const address = await s.d.listen();
      const controller = new AbortController();
      const res = await fetch(`${address}/v1/stream?filter[route]=example`, { headers: AUTH, signal: controller.signal });
      expect(res.headers.get('content-type')).toContain('text/event-stream');
      // The security headers of every API answer, on the stream too.
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
      expect(res.headers.get('cache-control')).toBe('no-store');
      const posted = await fetch(`${address}/v1/events`, { method: 'POST', headers: { 'content-type': CE, ...AUTH }, body: JSON.stringify(event()) });
      const runId = ((await posted.json()) as { events: Array<{ runs: string[] }> }).events[0]!.runs[0]!;
      const text = await readUntil(res.body!, (x) => x.includes('"status":"success"'), 'the success run event');
      controller.abort();
      const messages = text.split('\n\n').filter((m) => m.startsWith('id:'));
      const runs = messages.map((m) => JSON.parse(m.split('\ndata: ')[1]!).run);
      // Direct dispatch: the worker that took the event in commits its run already claimed, so the run
      // is created `running` (see src/core/runner.ts).
      expect(runs.map((r) => r.status)).toEqual(['running', 'success']);
      expect(messages[0]).toContain('event: run.create');
      expect(messages[1]).toContain('event: run.update');
      // An update carries the whole run, not only what changed.
      expect(runs[1]).toMatchObject({ id: runId, route: 'example', action: 'noop', event_type: 'example.hello', attempts: 1 });
      expect(messages.every((m) => m.includes(runId))).toBe(true);

      // Resume after the first: the two later ones come from the outbox.
      const firstSeq = messages[0]!.split('\n')[0]!.slice(4);
      const resume = new AbortController();
      const again = await fetch(`${address}/v1/stream?filter[run]=${runId}`, { headers: { 'last-event-id': firstSeq, ...AUTH }, signal: resume.signal });
      const text2 = await readUntil(again.body!, (x) => x.includes('"status":"success"'), 'the replayed run events');
      resume.abort();
      const replayed = text2.split('\n\n').filter((m) => m.startsWith('id:')).map((m) => JSON.parse(m.split('\ndata: ')[1]!).run.status);
      expect(replayed).toEqual(['success']);
    } finally {
      await s.close();
    }
  });
});
