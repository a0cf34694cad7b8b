/**
 * Secrets never reach the logs: credentials in request headers (pre-shared keys, bearer tokens), client
 * secrets, the token and webhook signing secrets, and secrets inside URLs the http action calls. The dispatcher logs at `trace` into a buffer that the test reads.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { createDispatcher, type Dispatcher } from '../src/dispatcher.js';
import { event, logSink, startReceiver, waitForRun, type Receiver } from './helpers.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SIGNING_SECRET = 'whsec_' + Buffer.from('a-very-secret-signing-key-123456').toString('base64');
const HEADER_SECRET = 'PSK s3cr3tK3yV4lu3';
const URL_SECRET = 'tok3nInTh3Qu3ry';
const TOKEN_SIGNING_SECRET = 'token-signing-secret-0123456789-abcdefghij';

let d: Dispatcher;
let dir: string;
let receiver: Receiver;
const log = logSink();
const lines = log.chunks;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'dispatcher-logs-'));
  receiver = await startReceiver((_req, _body, res) => {
    res.statusCode = 500;
    res.end("failed");
  });
  const config = await loadConfig({
    env: { PSK_AUTH_LOGS: HEADER_SECRET.slice(4) },
    overrides: {
      store: { url: `sqlite:${join(dir, 'd.db')}` },
      log: { level: 'trace' },
      runner: { poll: '100ms' },
      auth: { keyFile: '', tokens: { secrets: [TOKEN_SIGNING_SECRET] } },
      actions: { http: { allow: ['127.0.0.1/32'], signingSecret: SIGNING_SECRET } },
      routes: [
        { name: 'hook', match: { type: 'hook.*' }, actions: [{ http: { url: `${receiver.url}/x?token=${URL_SECRET}` } }], retry: { attempts: 2, backoff: '10ms', maxBackoff: '20ms' } },
      ],
    } as never,
  });
  // The dispatcher's own logger (its redaction included), writing into the buffer.
  d = await createDispatcher({ config, logDestination: log.sink });
  d.start();
});

afterAll(async () => {
  await d?.close();
  await receiver?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('logs', () => {
  it('hold no credential, signing secret or URL secret, whatever happened', async () => {
    const app = await d.app();
    // Requests with credentials: accepted, refused, failing.
    const ok = await app.inject({ method: 'POST', url: '/v1/events', headers: { authorization: HEADER_SECRET, 'content-type': 'application/cloudevents+json' }, payload: JSON.stringify(event({ type: 'hook.fired' })) });
    expect(ok.statusCode).toBe(202);
    await app.inject({ method: 'POST', url: '/v1/events', headers: { authorization: HEADER_SECRET, 'content-type': 'application/cloudevents+json' }, payload: '{broken' });
    await app.inject({ method: 'GET', url: '/v1/runs?filter[nope]=1', headers: { authorization: HEADER_SECRET } });
    await app.inject({ method: 'GET', url: '/v1/runs', headers: { authorization: 'PSK wrongKeyWrongKey123' } });
    // A client: its secret (shown once), a token exchange, the token in use, and a wrong secret.
    const created = await app.inject({ method: 'POST', url: '/v1/clients', headers: { authorization: HEADER_SECRET, 'content-type': 'application/json' }, payload: JSON.stringify({ name: 'logs-client', permissions: ['dispatcher:runs:read'] }) });
    expect(created.statusCode).toBe(201);
    const { id: clientId, secret: clientSecret } = created.json();
    const token = await app.inject({ method: 'POST', url: '/v1/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: `grant_type=client_credentials&client_id=${clientId}&client_secret=${clientSecret}` });
    expect(token.statusCode).toBe(200);
    const accessToken = token.json().access_token as string;
    expect((await app.inject({ method: 'GET', url: '/v1/runs', headers: { authorization: `Bearer ${accessToken}` } })).statusCode).toBe(200);
    expect((await app.inject({ method: 'POST', url: '/v1/token', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ client_id: clientId, client_secret: 'not-it' }) })).statusCode).toBe(401);
    // A run whose webhook fails on every attempt: errors and retries get logged.
    const run = await waitForRun(d, ok.json().events[0].runs[0], ['failure'], 10_000);
    expect(run.error?.code).toBe('http_status');
    // The receiver really got signed requests (the secret was in use).
    expect(receiver.requests[0]?.headers['webhook-signature']).toMatch(/^v1,/);

    const text = lines.join('');
    expect(lines.length).toBeGreaterThan(0);
    for (const secret of [HEADER_SECRET, 's3cr3tK3yV4lu3', 'wrongKeyWrongKey123', SIGNING_SECRET, SIGNING_SECRET.slice(6), URL_SECRET, clientSecret, accessToken, TOKEN_SIGNING_SECRET]) {
      expect(text.includes(secret), `the logs hold ${secret}`).toBe(false);
    }
    // Nor do the stored run, its attempts or its dead letter (they are shown by the API).
    const stored = JSON.stringify([run, await d.store.getAttempts(run.id), await d.store.listDeadLetters({ runId: run.id, limit: 10, offset: 0 })]);
    for (const secret of [SIGNING_SECRET, URL_SECRET]) expect(stored.includes(secret), `the store holds ${secret}`).toBe(false);
    // Nor does the audit log, which records the client's creation and the token exchanges.
    const audit = JSON.stringify(await d.store.access.listAudit({ limit: 1000, offset: 0 }));
    expect(audit).toContain('token.issue');
    for (const secret of ['s3cr3tK3yV4lu3', clientSecret, accessToken]) expect(audit.includes(secret), `the audit log holds ${secret}`).toBe(false);
  });
});
