/**
 * Failures are logged, one structured line each: a failed attempt (warn), a run that ended in failure
 * (error, with its dead letter), an event refused at intake (warn, with origin and reason), the refused
 * events of a batch; and, with `log.requests`, one line per request.
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { createDispatcher, type Dispatcher } from '../src/dispatcher.js';
import { event, logSink, startReceiver, waitForRun, type Receiver } from './helpers.js';

const KEY = 'loggingKey12345678';
let d: Dispatcher;
let address: string;
let dir: string;
let receiver: Receiver;
const log = logSink();
/** The log lines written so far, parsed. */
function lines(): Array<Record<string, any>> {
  return log.chunks
    .join('')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, any>);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'dispatcher-logging-'));
  receiver = await startReceiver((_req, _body, res) => {
    res.statusCode = 503;
    res.end('down');
  });
  const config = await loadConfig({
    env: { PSK_AUTH_LOGGING: KEY },
    overrides: {
      server: { port: 0 },
      store: { url: `sqlite:${join(dir, 'd.db')}` },
      log: { level: 'info', requests: true },
      runner: { poll: '100ms' },
      auth: { keyFile: '' },
      actions: { http: { allow: ['127.0.0.1/32'] } },
      types: { 'alert.raised': { schema: { type: 'object', required: ['severity'] } } },
      routes: [{ name: 'hook', match: { type: 'hook.*' }, actions: [{ http: { url: `${receiver.url}/x` }, name: 'call' }], retry: { attempts: 2, backoff: '10ms', maxBackoff: '20ms' } }],
    } as never,
  });
  d = await createDispatcher({ config, logDestination: log.sink });
  address = await d.listen();
});

afterAll(async () => {
  await d?.close();
  await receiver?.close();
  rmSync(dir, { recursive: true, force: true });
});

const WARN = 40;
const ERROR = 50;

async function post(body: unknown, contentType = 'application/cloudevents+json'): Promise<Response> {
  return fetch(`${address}/v1/events`, { method: 'POST', headers: { 'content-type': contentType, authorization: `PSK ${KEY}` }, body: JSON.stringify(body) });
}

describe('failure logging', () => {
  it('a failed attempt is a warn line, the run that ends in failure an error line naming its dead letter', async () => {
    const res = await post(event({ type: 'hook.fire' }));
    expect(res.status).toBe(202);
    const runId = ((await res.json()) as { events: Array<{ runs: string[] }> }).events[0]!.runs[0]!;
    await waitForRun(d, runId, ['failure']);
    const attempt = lines().find((l) => l.runId === runId && l.level === WARN);
    expect(attempt).toMatchObject({ msg: 'attempt failed; the run will be tried again', route: 'hook', action: 'call', attempt: 1, code: 'http_status', httpStatus: 503 });
    const ended = lines().find((l) => l.runId === runId && l.level === ERROR);
    expect(ended).toMatchObject({ msg: 'run ended in failure; kept as a dead letter', route: 'hook', action: 'call', attempt: 2, status: 'failure', deadLetter: { origin: 'run' } });
  });

  it('an event refused at intake is a warn line with its origin, reason and dead letter', async () => {
    const res = await post(event({ type: 'alert.raised', data: {} }));
    expect(res.status).toBe(400);
    const line = lines().find((l) => l.msg === 'refused at intake; kept as a dead letter');
    expect(line).toMatchObject({ level: WARN, input: 'http', origin: 'intake', reason: 'schema_violation' });
    expect(typeof line!.deadLetter).toBe('string');
  });

  it('the refused events of a batch are one warn line, with each index, code and dead letter', async () => {
    const res = await post([event(), event({ type: 'alert.raised', data: {} })], 'application/cloudevents-batch+json');
    expect(res.status).toBe(207);
    const line = lines().find((l) => Array.isArray(l.refused));
    expect(line).toMatchObject({ level: WARN, input: 'http', refused: [{ index: 1, code: 'schema_violation' }] });
    expect(line!.msg).toContain("1 of the batch's 2 events refused");
  });

  it('with log.requests, one info line per request: method, path without the query, status, duration, principal', async () => {
    await fetch(`${address}/v1/runs?filter[status]=failure`, { headers: { authorization: `PSK ${KEY}` } });
    const line = lines().find((l) => l.msg === 'request' && l.path === '/v1/runs');
    expect(line).toMatchObject({ level: 30, method: 'GET', status: 200, principal: 'psk:logging' });
    expect(typeof line!.ms).toBe('number');
  });
});
