/**
 * The `rest` action and its client against a fake CISO Assistant API (./fake-ciso.ts): real sockets on
 * 127.0.0.1 (allowlisted), runs made by a real dispatcher from real events, retries by its runner. Also
 * the core HTTP client's `insecure` (a self-signed certificate made by openssl for the test).
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHttpClient } from '../src/actions/http/client.js';
import {
  expectedSingle,
  MISSING_ID,
  NO_MATCH,
  NO_SELECTOR,
  notJson,
  resourcePath,
  RestClient,
  restAction,
  SOME_MISSING_ID,
  TOKEN_REFUSED,
  UNEXPECTED_FORMAT,
  unknownTarget,
  type RestSession,
} from '../src/actions/rest/index.js';
import { DispatcherError } from '../src/core/errors.js';
import { TemplateEngine } from '../src/core/template.js';
import type { Run } from '../src/core/types.js';
import { startFakeCiso, type FakeCiso, type FakeCisoOptions } from './fake-ciso.js';
import { event, startDispatcher, waitFor, waitForRun, type TestDispatcher } from './helpers.js';

const TOKEN = 'test-token';
const USER = { username: 'admin@tests.com', password: 'badpass12345' };

/** Five controls in folder f1 (ac-1 … ac-5), one in f2. */
function controls(): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (let i = 1; i <= 5; i += 1) out.push({ id: `ac-${i}`, ref_id: `AC-${i}`, name: `Control ${i}`, folder: 'f1', status: 'to_do', evidences: [] });
  out.push({ id: 'ac-6', ref_id: 'AC-6', name: 'Control 6', folder: 'f2', status: 'to_do', evidences: [] });
  return out;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

let tls: { key: Buffer; cert: Buffer };
let tlsDir: string;
beforeAll(() => {
  tlsDir = mkdtempSync(join(tmpdir(), 'rest-tls-'));
  const key = join(tlsDir, 'key.pem');
  const cert = join(tlsDir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-days', '1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  tls = { key: readFileSync(key), cert: readFileSync(cert) };
});
afterAll(() => rmSync(tlsDir, { recursive: true, force: true }));

async function fake(options: FakeCisoOptions = {}): Promise<FakeCiso> {
  const f = await startFakeCiso({ objects: { 'applied-controls': controls(), evidences: [] }, ...options });
  cleanups.push(() => f.close());
  return f;
}

/** A dispatcher with one route `ciso` (events of type `ciso.update`) running `rest` with these parameters. */
async function dispatcher(rest: Record<string, unknown>, route: Record<string, unknown> = {}): Promise<TestDispatcher> {
  const t = await startDispatcher({
    actions: { http: { allow: ['127.0.0.1'] } },
    routes: [{ name: 'ciso', match: { type: 'ciso.update' }, actions: [{ rest }], retry: { attempts: 3, backoff: '20ms', maxBackoff: '50ms' }, ...route }],
  });
  cleanups.push(() => t.close());
  return t;
}

/** The parameters of a CISO update: the selector and the values from the event. */
function update(f: { url: string }, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { url: f.url, resource: 'applied-controls', token: TOKEN, selector: '{{ data.selector }}', body: '{{ data.values }}', ...extra };
}

/** Takes an event in; the id of the run it made. */
async function submit(t: TestDispatcher, data: unknown): Promise<string> {
  const raw = Buffer.from(JSON.stringify(event({ type: 'ciso.update', data })));
  const answer = await t.d.receive({ input: 'test', raw, contentType: 'application/cloudevents+json', headers: {}, service: 'test', orgId: 'default' });
  const id = answer.results[0]?.runIds[0];
  expect(id, JSON.stringify(answer)).toBeDefined();
  return id!;
}

async function finished(t: TestDispatcher, id: string): Promise<Run> {
  return waitForRun(t.d, id, ['success', 'failure', 'timeout', 'canceled'], 15_000);
}

async function hostsOf(t: TestDispatcher, id: string): Promise<Array<{ name: string; status: string; details: Record<string, unknown> }>> {
  const listing = await t.d.store.listHosts({ runId: [id], limit: 100, offset: 0 });
  return listing.items.map((h) => ({ name: h.name, status: h.status, details: h.details })).sort((a, b) => a.name.localeCompare(b.name));
}

function control(f: FakeCiso, id: string): Record<string, unknown> | undefined {
  return f.objects['applied-controls']!.find((o) => o.id === id);
}

function httpClient(allow: string[] = ['127.0.0.1']): ReturnType<typeof createHttpClient> {
  const client = createHttpClient({ allow, timeout: 5000, userAgent: 'rest-test' });
  cleanups.push(() => client.close());
  return client;
}

async function rejection(promise: Promise<unknown>): Promise<DispatcherError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(DispatcherError);
    return err as DispatcherError;
  }
  throw new Error('expected a rejection');
}

// ---------------------------------------------------------------------------------------------------

describe('rest: selectors', () => {
  it('finds the one object a single selector matches, PATCHes it with the values, and records it as a host', async () => {
    const f = await fake();
    const t = await dispatcher(update(f));
    const id = await submit(t, { selector: { ref_id: 'AC-2' }, values: { status: 'active', priority: 1 } });
    const run = await finished(t, id);

    expect(run).toMatchObject({ status: 'success', attempts: 1, result: { resource: 'applied-controls', method: 'PATCH', targets: ['ac-2'] } });
    expect(f.calls()).toEqual(['GET /api/applied-controls/', 'PATCH /api/applied-controls/ac-2/']);
    const [get, patch] = f.requests;
    expect(get!.url).toBe('/api/applied-controls/?ref_id=AC-2');
    expect(get!.headers).toMatchObject({ authorization: `Token ${TOKEN}`, accept: 'application/json' });
    expect(patch!.headers).toMatchObject({ authorization: `Token ${TOKEN}`, 'content-type': 'application/json', 'idempotency-key': id });
    expect(JSON.parse(patch!.body.toString())).toEqual({ status: 'active', priority: 1 });
    expect(control(f, 'ac-2')).toMatchObject({ status: 'active', priority: 1 });
    expect(control(f, 'ac-1')).toMatchObject({ status: 'to_do' });
    expect(await hostsOf(t, id)).toEqual([{ name: 'applied-controls/ac-2', status: 'success', details: { method: 'PATCH', httpStatus: 200 } }]);
  });

  it('follows next over several pages for a multiple selector, sending the filters only on the first request, and PATCHes every target', async () => {
    const f = await fake({ pageSize: 2 });
    const t = await dispatcher(update(f));
    const id = await submit(t, { selector: { folder: 'f1', target: 'multiple' }, values: { status: 'in_progress' } });
    const run = await finished(t, id);

    expect(run.status).toBe('success');
    const ids = ['ac-1', 'ac-2', 'ac-3', 'ac-4', 'ac-5'];
    expect(run.result).toEqual({ resource: 'applied-controls', method: 'PATCH', targets: ids });
    expect(f.calls()).toEqual([...Array(3).fill('GET /api/applied-controls/'), ...ids.map((i) => `PATCH /api/applied-controls/${i}/`)]);
    // The first request carries the selector (without its target); the next ones are the API's own links.
    expect(f.requests.slice(0, 3).map((r) => r.url)).toEqual([
      '/api/applied-controls/?folder=f1',
      '/api/applied-controls/?folder=f1&page=2',
      '/api/applied-controls/?folder=f1&page=3',
    ]);
    for (const i of ids) expect(control(f, i)?.status).toBe('in_progress');
    expect(control(f, 'ac-6')?.status).toBe('to_do');
    const hosts = await hostsOf(t, id);
    expect(hosts.map((h) => [h.name, h.status])).toEqual(ids.map((i) => [`applied-controls/${i}`, 'success']));
  });

  it('refuses a single selector that matches several objects, with the original text, changing nothing and not retrying', async () => {
    const f = await fake();
    const t = await dispatcher(update(f));
    const id = await submit(t, { selector: { folder: 'f1' }, values: { status: 'active' } });
    const run = await finished(t, id);

    expect(run).toMatchObject({ status: 'failure', attempts: 1, error: { code: 'action_failed', message: expectedSingle(5) } });
    expect(expectedSingle(5)).toBe(
      "Expected a single object, but got 5 objects. Please refine the selector or set the selector to target 'multiple' if you expect multiple objects.",
    );
    expect(f.calls()).toEqual(['GET /api/applied-controls/']);
  });

  it('fails at once when nothing matches, or the target is unknown, or the selector is empty', async () => {
    const f = await fake();
    const t = await dispatcher(update(f));
    const none = await finished(t, await submit(t, { selector: { ref_id: 'NOPE', target: 'multiple' }, values: { status: 'active' } }));
    expect(none).toMatchObject({ status: 'failure', attempts: 1, error: { code: 'action_failed', message: 'No objects match the given selector.' } });
    expect(NO_MATCH).toBe('No objects match the given selector.');

    const odd = await finished(t, await submit(t, { selector: { ref_id: 'AC-1', target: 'some' }, values: { status: 'active' } }));
    expect(odd).toMatchObject({ status: 'failure', attempts: 1, error: { message: 'Unknown target specified in selector: some' } });
    expect(unknownTarget('some')).toBe('Unknown target specified in selector: some');

    const empty = await finished(t, await submit(t, { selector: { target: 'multiple' }, values: { status: 'active' } }));
    expect(empty).toMatchObject({ status: 'failure', attempts: 1, error: { message: NO_SELECTOR } });
    expect(f.calls()).toEqual(['GET /api/applied-controls/', 'GET /api/applied-controls/']);
    expect(f.objects['applied-controls']!.every((o) => o.status === 'to_do')).toBe(true);
  });

  it("refuses results without an id: single and multiple, with the original's texts", async () => {
    const f = await fake();
    const t = await dispatcher(update(f));
    f.failNext({ method: 'GET', status: 200, body: { count: 1, next: null, results: [{ name: 'no id' }] } });
    const single = await finished(t, await submit(t, { selector: { ref_id: 'AC-1' }, values: { status: 'active' } }));
    expect(single).toMatchObject({ status: 'failure', attempts: 1, error: { code: 'action_failed', message: "API result is missing required 'id' field" } });
    expect(MISSING_ID).toBe("API result is missing required 'id' field");

    f.failNext({ method: 'GET', status: 200, body: { count: 2, next: null, results: [{ id: 'ac-1' }, { name: 'no id' }] } });
    const multiple = await finished(t, await submit(t, { selector: { ref_id: 'AC-1', target: 'multiple' }, values: { status: 'active' } }));
    expect(multiple).toMatchObject({ status: 'failure', attempts: 1, error: { message: "Some API results are missing required 'id' field" } });
    expect(SOME_MISSING_ID).toBe("Some API results are missing required 'id' field");
    expect(f.calls().filter((c) => c.startsWith('PATCH'))).toEqual([]);
  });

  it('takes a plain JSON array as the whole result, and refuses any other shape', async () => {
    const f = await fake();
    const t = await dispatcher(update(f));
    f.failNext({ method: 'GET', status: 200, body: [{ id: 'ac-3', ref_id: 'AC-3' }] });
    const plain = await finished(t, await submit(t, { selector: { ref_id: 'AC-3' }, values: { status: 'active' } }));
    expect(plain).toMatchObject({ status: 'success', result: { targets: ['ac-3'] } });
    expect(control(f, 'ac-3')?.status).toBe('active');

    f.failNext({ method: 'GET', status: 200, body: { detail: 'something else', items: [{ id: 'ac-4' }] } });
    const odd = await finished(t, await submit(t, { selector: { ref_id: 'AC-4' }, values: { status: 'active' } }));
    expect(odd).toMatchObject({ status: 'failure', attempts: 1, error: { code: 'action_failed', message: 'Unexpected API response format' } });
    expect(UNEXPECTED_FORMAT).toBe('Unexpected API response format');
    expect(control(f, 'ac-4')?.status).toBe('to_do');
  });

  it('refuses an HTML page where JSON was expected (url is not the API root), without retrying', async () => {
    const f = await fake();
    f.failNext({ method: 'GET', status: 200, html: true });
    const t = await dispatcher(update(f));
    const run = await finished(t, await submit(t, { selector: { ref_id: 'AC-1' }, values: { status: 'active' } }));
    expect(run).toMatchObject({ status: 'failure', attempts: 1, error: { code: 'action_failed', message: notJson('text/html') } });
    expect(run.error!.message).toBe('the API answered text/html where JSON was expected (is url the API root?)');
    expect(f.calls()).toEqual(['GET /api/applied-controls/']);
  });
});

describe('rest: methods and bodies', () => {
  it('creates an object by POST without a selector, sending the body as a form', async () => {
    const f = await fake();
    const t = await dispatcher({ url: f.url, resource: 'evidences', token: TOKEN, method: 'POST', form: true, body: { name: '{{ data.name }}', description: 'from {{ source }}' } });
    const id = await submit(t, { name: 'Q3 report.pdf' });
    const run = await finished(t, id);

    expect(f.objects.evidences).toHaveLength(1);
    const created = f.objects.evidences![0]!;
    expect(created).toMatchObject({ name: 'Q3 report.pdf', description: 'from urn:test' });
    expect(run).toMatchObject({ status: 'success', result: { resource: 'evidences', method: 'POST', targets: [created.id], created: created.id } });
    expect(await t.d.store.getAttempts(id)).toMatchObject([{ outcome: 'success', httpStatus: 201, response: `POST evidences: created ${String(created.id)}` }]);
    expect(f.calls()).toEqual(['POST /api/evidences/']);
    expect(f.requests[0]!.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(f.requests[0]!.body.toString()).toBe('name=Q3+report.pdf&description=from+urn%3Atest');
    expect(await hostsOf(t, id)).toEqual([{ name: `evidences/${String(created.id)}`, status: 'success', details: { method: 'POST', httpStatus: 201 } }]);
  });

  it('DELETEs every target of a multiple selector (204, no body)', async () => {
    const f = await fake();
    const t = await dispatcher({ url: `${f.url}/`, resource: 'applied-controls', token: TOKEN, method: 'DELETE', selector: { folder: '{{ data.folder }}', target: 'multiple' } });
    const id = await submit(t, { folder: 'f1' });
    const run = await finished(t, id);
    expect(run).toMatchObject({ status: 'success', result: { method: 'DELETE', targets: ['ac-1', 'ac-2', 'ac-3', 'ac-4', 'ac-5'] } });
    expect(await t.d.store.getAttempts(id)).toMatchObject([{ outcome: 'success', httpStatus: 204, response: 'DELETE applied-controls: ac-1, ac-2, ac-3, ac-4, ac-5' }]);
    expect(f.objects['applied-controls']!.map((o) => o.id)).toEqual(['ac-6']);
    expect(f.requests.filter((r) => r.method === 'DELETE').every((r) => r.body.length === 0)).toBe(true);
    expect((await hostsOf(t, id)).every((h) => h.details.httpStatus === 204)).toBe(true);
  });
});

describe('rest: authentication', () => {
  it('fails at once on a 401 without login, saying the token expired or was revoked', async () => {
    const f = await fake();
    f.expireToken(TOKEN);
    const t = await dispatcher(update(f));
    const id = await submit(t, { selector: { ref_id: 'AC-1' }, values: { status: 'active' } });
    const run = await finished(t, id);
    expect(run).toMatchObject({ status: 'failure', attempts: 1, error: { code: 'http_status', message: TOKEN_REFUSED } });
    expect(TOKEN_REFUSED).toBe('the API refused the token (401): it has expired or was revoked — provision a new Personal Access Token');
    const [attempt] = await t.d.store.getAttempts(id);
    expect(attempt).toMatchObject({ httpStatus: 401, response: 'Invalid token.' });
    expect(f.calls()).toEqual(['GET /api/applied-controls/']);
  });

  it('logs in again on a 401 with login, retries the request once, and reuses the new token for later runs', async () => {
    const f = await fake({ users: [USER] });
    const t = await dispatcher(update(f, { login: { username: USER.username, password: '{{ data.password | default: "badpass12345" }}' } }));
    f.expireToken(TOKEN);
    const first = await finished(t, await submit(t, { selector: { ref_id: 'AC-1' }, values: { status: 'active' } }));
    expect(first).toMatchObject({ status: 'success', attempts: 1 });
    expect(f.issued).toHaveLength(1);
    const fresh = `Token ${f.issued[0]}`;
    expect(f.requests.map((r) => `${r.method} ${r.path} ${r.headers.authorization ?? '-'}`)).toEqual([
      `GET /api/applied-controls/ Token ${TOKEN}`,
      'POST /api/iam/login/ -',
      `GET /api/applied-controls/ ${fresh}`,
      `PATCH /api/applied-controls/ac-1/ ${fresh}`,
    ]);
    expect(JSON.parse(f.requests[1]!.body.toString())).toEqual(USER);

    const second = await finished(t, await submit(t, { selector: { ref_id: 'AC-2' }, values: { status: 'active' } }));
    expect(second.status).toBe('success');
    expect(f.issued).toHaveLength(1);
    expect(f.requests.slice(4).map((r) => r.headers.authorization)).toEqual([fresh, fresh]);
  });

  it('logs in first when no token is given, and fails at once when the login is refused', async () => {
    const f = await fake({ users: [USER] });
    const t = await dispatcher(update(f, { token: '{{ data.token }}', login: { username: USER.username, password: '{{ data.password }}' } }));
    const ok = await finished(t, await submit(t, { selector: { ref_id: 'AC-1' }, values: { status: 'active' }, password: USER.password }));
    expect(ok.status).toBe('success');
    expect(f.requests.map((r) => r.path)[0]).toBe('/api/iam/login/');
    expect(f.issued).toHaveLength(1);

    // Another user (a new session): the wrong password is refused, not retried.
    const t2 = await dispatcher(update(f, { token: '{{ data.token }}', login: { username: 'intruder', password: '{{ data.password }}' } }));
    const refused = await finished(t2, await submit(t2, { selector: { ref_id: 'AC-1' }, values: { status: 'active' }, password: 'wrong' }));
    expect(refused).toMatchObject({ status: 'failure', attempts: 1, error: { code: 'http_status' } });
    expect(refused.error!.message).toContain('the login at /iam/login/ was refused (HTTP 400)');
    expect(refused.error!.message).not.toContain('wrong');
    expect(f.issued).toHaveLength(1);
  });
});

describe('rest: failures and retries', () => {
  it('retries a 5xx and then succeeds', async () => {
    const f = await fake();
    f.failNext({ method: 'PATCH', status: 500, body: { detail: 'Server Error' } });
    const t = await dispatcher(update(f));
    const id = await submit(t, { selector: { ref_id: 'AC-1' }, values: { status: 'active' } });
    const run = await finished(t, id);
    expect(run).toMatchObject({ status: 'success', attempts: 2 });
    const attempts = await t.d.store.getAttempts(id);
    expect(attempts.map((a) => [a.outcome, a.errorCode, a.httpStatus])).toEqual([
      ['retry', 'http_status', 500],
      ['success', null, 200],
    ]);
    expect(attempts[0]!.errorMessage).toContain('HTTP 500 from PATCH');
    expect(control(f, 'ac-1')?.status).toBe('active');
  });

  it('honours Retry-After of a 503: the next attempt is not made before it', async () => {
    const f = await fake();
    f.failNext({ method: 'GET', status: 503, retryAfter: 1, body: { detail: 'Maintenance' } });
    const t = await dispatcher(update(f));
    const id = await submit(t, { selector: { ref_id: 'AC-1' }, values: { status: 'active' } });
    const run = await finished(t, id);
    expect(run).toMatchObject({ status: 'success', attempts: 2 });
    const gets = f.requests.filter((r) => r.method === 'GET');
    expect(gets).toHaveLength(2);
    // The route's backoff is 20-50 ms: only Retry-After makes the wait a second.
    expect(gets[1]!.at - gets[0]!.at).toBeGreaterThanOrEqual(990);
  });

  it('fails at once on a 400, with the status and a summary of the answer, recording the failed target', async () => {
    const f = await fake();
    f.failNext({ method: 'PATCH', status: 400, body: { status: ['"bogus" is not a valid choice.'] } });
    const t = await dispatcher(update(f));
    const id = await submit(t, { selector: { ref_id: 'AC-1' }, values: { status: 'bogus' } });
    const run = await finished(t, id);
    expect(run).toMatchObject({ status: 'failure', attempts: 1, error: { code: 'http_status' } });
    expect(run.error!.message).toBe(`HTTP 400 from PATCH ${f.origin}/api/applied-controls/ac-1/: {"status":["\\"bogus\\" is not a valid choice."]}`);
    expect(f.calls()).toEqual(['GET /api/applied-controls/', 'PATCH /api/applied-controls/ac-1/']);
    expect(await hostsOf(t, id)).toEqual([
      { name: 'applied-controls/ac-1', status: 'failure', details: { method: 'PATCH', httpStatus: 400, code: 'http_status', error: run.error!.message } },
    ]);
  });

  it('retries a refused connection until the API is there', async () => {
    // A port nobody listens on (yet).
    const probe = createNetServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));

    const t = await dispatcher(update({ url: `http://127.0.0.1:${port}/api` }), { retry: { attempts: 20, backoff: '100ms', maxBackoff: '200ms' } });
    const id = await submit(t, { selector: { ref_id: 'AC-1' }, values: { status: 'active' } });
    const [first] = await waitFor(() => t.d.store.getAttempts(id), (a) => a.length >= 1, 10_000, 'a first attempt');
    expect(first).toMatchObject({ outcome: 'retry', errorCode: 'network_error' });
    expect(first!.errorMessage).toContain('could not be reached');

    const f = await fake({ port });
    const run = await finished(t, id);
    expect(run.status).toBe('success');
    expect(run.attempts).toBeGreaterThanOrEqual(2);
    expect(control(f, 'ac-1')?.status).toBe('active');
  });

  it('retries a connection closed without an answer', async () => {
    const f = await fake();
    f.failNext({ method: 'PATCH', close: true });
    const t = await dispatcher(update(f));
    const id = await submit(t, { selector: { ref_id: 'AC-1' }, values: { status: 'active' } });
    const run = await finished(t, id);
    expect(run).toMatchObject({ status: 'success', attempts: 2 });
    expect((await t.d.store.getAttempts(id))[0]).toMatchObject({ errorCode: 'network_error' });
  });

  it('records the targets changed so far and the one refused when a target fails midway', async () => {
    const f = await fake();
    f.failNext({ method: 'PATCH', path: '/api/applied-controls/ac-3/', status: 403, body: { detail: 'You do not have permission to perform this action.' } });
    const t = await dispatcher(update(f));
    const id = await submit(t, { selector: { folder: 'f1', target: 'multiple' }, values: { status: 'active' } });
    const run = await finished(t, id);

    expect(run).toMatchObject({ status: 'failure', attempts: 1, error: { code: 'http_status' } });
    expect(run.error!.message).toContain('You do not have permission to perform this action.');
    expect(f.calls().filter((c) => c.startsWith('PATCH'))).toEqual(['ac-1', 'ac-2', 'ac-3'].map((i) => `PATCH /api/applied-controls/${i}/`));
    expect(await hostsOf(t, id)).toEqual([
      { name: 'applied-controls/ac-1', status: 'success', details: { method: 'PATCH', httpStatus: 200 } },
      { name: 'applied-controls/ac-2', status: 'success', details: { method: 'PATCH', httpStatus: 200 } },
      { name: 'applied-controls/ac-3', status: 'failure', details: { method: 'PATCH', httpStatus: 403, code: 'http_status', error: run.error!.message } },
    ]);
    expect([1, 2, 3, 4, 5].map((i) => control(f, `ac-${i}`)?.status)).toEqual(['active', 'active', 'to_do', 'to_do', 'to_do']);
  });

  it('after a retried midway failure, every target ends as a successful host', async () => {
    const f = await fake();
    f.failNext({ method: 'PATCH', path: '/api/applied-controls/ac-2/', status: 502, html: true });
    const t = await dispatcher(update(f));
    const id = await submit(t, { selector: { folder: 'f1', target: 'multiple' }, values: { status: 'active' } });
    const [first] = await waitFor(() => t.d.store.getAttempts(id), (a) => a.length >= 1, 10_000, 'a first attempt');
    expect(first).toMatchObject({ errorCode: 'http_status', httpStatus: 502, response: '(an HTML page of 116 bytes)' });
    const run = await finished(t, id);
    expect(run).toMatchObject({ status: 'success', attempts: 2 });
    const hosts = await hostsOf(t, id);
    expect(hosts.map((h) => [h.name, h.status])).toEqual([1, 2, 3, 4, 5].map((i) => [`applied-controls/ac-${i}`, 'success']));
    // The host that failed first: its error cleared; a host the first attempt never reached: as made by the outcome.
    expect(hosts[1]!.details).toEqual({ method: 'PATCH', httpStatus: 200, error: null, code: null });
    expect(hosts[0]!.details).toEqual({ method: 'PATCH', httpStatus: 200, error: null, code: null });
    expect(hosts[4]!.details).toEqual({ method: 'PATCH', httpStatus: 200 });
  });
});

describe('rest: TLS', () => {
  it('the core client refuses a self-signed certificate unless the request is insecure, and keeps the address guard on it', async () => {
    const server = createHttpsServer({ key: tls.key, cert: tls.cert }, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    );
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/x`;
    const client = httpClient();

    const refused = await rejection(client.request(url));
    expect(refused).toMatchObject({ code: 'network_error', retryable: true });
    expect(refused.message).toMatch(/self[- ]signed certificate/);

    const answer = await client.request(url, { insecure: true });
    expect(answer.status).toBe(200);
    expect(answer.body.toString()).toBe('{"ok":true}');
    // The verified pool still verifies after the insecure one was used.
    expect((await rejection(client.request(url))).code).toBe('network_error');

    const guarded = httpClient([]);
    expect((await rejection(guarded.request(url, { insecure: true }))).code).toBe('address_blocked');
  });

  it('the rest action reaches a self-signed API with verifyTls: false, and not without it', async () => {
    const f = await fake({ tls });
    expect(f.url.startsWith('https://')).toBe(true);
    const strict = await dispatcher(update(f), { retry: { attempts: 1 } });
    const refused = await finished(strict, await submit(strict, { selector: { ref_id: 'AC-1' }, values: { status: 'active' } }));
    expect(refused).toMatchObject({ status: 'failure', error: { code: 'network_error' } });
    expect(f.requests).toHaveLength(0);

    const lax = await dispatcher(update(f, { verifyTls: false }));
    const run = await finished(lax, await submit(lax, { selector: { ref_id: 'AC-1' }, values: { status: 'active' } }));
    expect(run.status).toBe('success');
    expect(control(f, 'ac-1')?.status).toBe('active');
  });
});

describe('rest: configuration', () => {
  const engine = new TemplateEngine();
  const log = pino({ level: 'silent' });
  const create = async (params: Record<string, unknown>) =>
    restAction.create(params, { settings: {}, compile: (value, options = {}) => engine.compile(value, options.at ?? [], options), log });
  const refusal = async (params: Record<string, unknown>): Promise<string> => {
    try {
      await create(params);
    } catch (err) {
      expect(err).toMatchObject({ code: 'config_invalid' });
      return (err as Error).message;
    }
    throw new Error('expected the parameters to be refused');
  };
  const base = { url: 'https://ciso.example.com/api/', resource: 'applied-controls', token: 't' };

  it('accepts the documented shapes', async () => {
    await expect(create({ ...base, selector: { ref_id: '{{ data.ref }}' }, body: { status: 'active' } })).resolves.toBeDefined();
    await expect(create({ ...base, method: 'post', form: true, body: { name: 'x' } })).resolves.toBeDefined();
    await expect(create({ ...base, method: 'DELETE', selector: '{{ data.selector }}', login: { username: 'u', password: 'p' }, verifyTls: false, timeout: '5s' })).resolves.toBeDefined();
  });

  it('refuses what cannot work, naming the parameter', async () => {
    expect(await refusal({ ...base, body: { status: 'x' } })).toBe('rest.selector: is required for PATCH (which objects to change); only POST creates without one');
    expect(await refusal({ ...base, selector: { a: 1 } })).toContain('rest.body: is required for PATCH');
    expect(await refusal({ ...base, method: 'DELETE', selector: { a: 1 }, body: {} })).toContain('rest.body: a DELETE request has no body');
    expect(await refusal({ ...base, method: 'GET', selector: { a: 1 } })).toContain('rest.method: must be one of PATCH, PUT, DELETE, POST');
    expect(await refusal({ ...base, selector: { a: 1 }, body: {}, headers: { Authorization: 'Bearer x' } })).toContain('token both give the authorization header');
    expect(await refusal({ ...base, url: 'ftp://ciso.example.com/api', method: 'POST' })).toContain('rest.url: scheme ftp:');
    expect(await refusal({ ...base, resource: '../admin', method: 'POST' })).toContain('rest.resource:');
    expect(await refusal({ ...base, method: 'POST', form: true })).toContain('rest.form: needs a body');
    expect(await refusal({ ...base, method: 'POST', login: { username: 'u' } })).toContain('rest.login.password: is required');
    expect(await refusal({ ...base, method: 'POST', extra: 1 })).toContain('rest.extra: is not a parameter of the rest action');
  });
});

describe('RestClient: the building blocks for a profile', () => {
  it('does the upload_attachment flow: create an evidence by form, upload raw bytes, add it to a control found by selector', async () => {
    const f = await fake({ objects: { 'applied-controls': controls().map((c) => (c.id === 'ac-2' ? { ...c, evidences: [{ id: 'ev-old', name: 'old' }] } : c)), evidences: [{ id: 'ev-old', name: 'old' }] } });
    const client = new RestClient(httpClient(), { url: f.url, token: TOKEN });
    const created = (await client.request('POST', resourcePath('evidences'), { form: { name: 'scan.txt' } })) as { id: string; name: string };
    expect(created).toMatchObject({ name: 'scan.txt' });
    const bytes = Buffer.from([0, 1, 2, 255, 10]);
    const uploaded = await client.send('POST', `${resourcePath('evidences', created.id)}upload/`, {
      bytes,
      headers: { 'Content-Disposition': `attachment; filename=${encodeURIComponent('scan ü.txt')}` },
      expect: 'any',
    });
    expect(uploaded).toEqual({ status: 200, body: null });
    expect(f.uploads).toEqual([{ evidence: created.id, filename: 'scan ü.txt', contentDisposition: 'attachment; filename=scan%20%C3%BC.txt', bytes }]);
    expect(f.requests[1]!.headers['content-type']).toBe('application/octet-stream');

    const [controlId] = await client.find('applied-controls', { ref_id: 'AC-2' });
    expect(controlId).toBe('ac-2');
    const current = (await client.request('GET', resourcePath('applied-controls', controlId))) as { evidences: Array<{ id: string }> };
    await client.request('PATCH', resourcePath('applied-controls', controlId), { json: { evidences: [...current.evidences.map((e) => e.id), created.id] } });
    expect(control(f, 'ac-2')?.evidences).toEqual(['ev-old', created.id]);
  });

  it('logs in once for clients sharing a session, however many are refused at the same time', async () => {
    const f = await fake({ users: [USER] });
    f.expireToken(TOKEN);
    const session: RestSession = {};
    const http = httpClient();
    const clients = Array.from({ length: 5 }, () => new RestClient(http, { url: f.url, token: TOKEN, login: USER, session }));
    const found = await Promise.all(clients.map((c, i) => c.find('applied-controls', { ref_id: `AC-${i + 1}` })));
    expect(found).toEqual([['ac-1'], ['ac-2'], ['ac-3'], ['ac-4'], ['ac-5']]);
    expect(f.issued).toHaveLength(1);
    expect(session.token).toBe(f.issued[0]);
  });

  it('tells onExchange of every request: method, URL without its query, status (0 when none came), time', async () => {
    const f = await fake({ pageSize: 2 });
    const seen: Array<{ method: string; url: string; status: number; ms: number }> = [];
    const client = new RestClient(httpClient(), { url: f.url, token: TOKEN, onExchange: (e) => seen.push(e) });
    await client.find('applied-controls', { folder: 'f1', target: 'multiple' });
    expect(seen.map((e) => [e.method, e.url, e.status])).toEqual([
      ['GET', `${f.url}/applied-controls/`, 200],
      ['GET', `${f.url}/applied-controls/`, 200],
      ['GET', `${f.url}/applied-controls/`, 200],
    ]);
    expect(seen.every((e) => e.ms >= 0)).toBe(true);
    f.failNext({ method: 'PATCH', status: 503, body: { detail: 'down' } });
    await rejection(client.request('PATCH', resourcePath('applied-controls', 'ac-1'), { json: { status: 'active' } }));
    expect(seen.at(-1)).toMatchObject({ method: 'PATCH', url: `${f.url}/applied-controls/ac-1/`, status: 503 });
    const closed = new RestClient(httpClient(), { url: 'http://127.0.0.1:9/api', token: TOKEN, onExchange: (e) => seen.push(e) });
    await rejection(closed.request('GET', resourcePath('applied-controls')));
    expect(seen.at(-1)).toMatchObject({ method: 'GET', url: 'http://127.0.0.1:9/api/applied-controls/', status: 0 });
  });

  it("bounds the pages it reads, and never sends the token to another origin's next link", async () => {
    const f = await fake({ pageSize: 1 });
    const http = httpClient();
    const bounded = new RestClient(http, { url: f.url, token: TOKEN, maxPages: 3 });
    const err = await rejection(bounded.find('applied-controls', { folder: 'f1', target: 'multiple' }));
    expect(err).toMatchObject({ code: 'action_failed', retryable: false });
    expect(err.message).toBe("the selector's results span more than 3 pages: refine the selector");
    expect(f.requests).toHaveLength(3);

    const few = new RestClient(http, { url: f.url, token: TOKEN, maxResults: 2 });
    expect((await rejection(few.find('applied-controls', { folder: 'f1', target: 'multiple' }))).message).toBe('more than 2 objects match the selector: refine the selector');

    f.failNext({ method: 'GET', status: 200, body: { count: 2, next: 'http://127.0.0.2:9/api/applied-controls/?page=2', results: [{ id: 'ac-1' }] } });
    const client = new RestClient(http, { url: f.url, token: TOKEN });
    const elsewhere = await rejection(client.find('applied-controls', { folder: 'f1', target: 'multiple' }));
    expect(elsewhere.message).toContain('another origin (http://127.0.0.2:9)');
  });
});
