/**
 * The `http` action against real sockets: node:http servers on 127.0.0.1, port 0. Loopback is what the
 * address policy refuses by default, so tests that need to reach their server allowlist 127.0.0.1/32.
 */

import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { Webhook } from 'standardwebhooks';
import { afterEach, describe, expect, it } from 'vitest';
import type { Action, ActionContext, ActionOutcome } from '../src/core/action.js';
import { DispatcherError } from '../src/core/errors.js';
import { TemplateEngine } from '../src/core/template.js';
import type { CloudEvent } from '../src/core/types.js';
import { httpAction, parseRetryAfter } from '../src/actions/http/index.js';
import { addressRange, createAddressGuard } from '../src/actions/http/guard.js';

const log = pino({ level: 'silent' });
const engine = new TemplateEngine();
const LOOPBACK = ['127.0.0.1/32'];
const SECRET = `whsec_${Buffer.from('a-test-signing-key-of-32-bytes!!').toString('base64')}`;

interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

interface TestServer {
  base: string;
  port: number;
  received: Received[];
  /** TCP connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** A server that records every request (with its full body) and then lets `handle` answer it. */
async function startServer(handle: (req: Received, res: ServerResponse, raw: IncomingMessage) => void): Promise<TestServer> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r = { method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      received.push(r);
      handle(r, res, req);
    });
  });
  let connections = 0;
  server.on('connection', () => (connections += 1));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const close = async (): Promise<void> => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  cleanups.push(close);
  return { base: `http://127.0.0.1:${port}`, port, received, connections: () => connections, close };
}

function answer(status: number, body = '', headers: Record<string, string> = {}) {
  return (_req: Received, res: ServerResponse): void => {
    res.writeHead(status, headers);
    res.end(body);
  };
}

async function makeAction(params: Record<string, unknown>, settings: Record<string, unknown> = {}): Promise<Action> {
  const action = await httpAction.create(params, {
    settings: { allow: LOOPBACK, timeout: 5000, maxResponseBytes: 4096, userAgent: 'dispatcher-test', ...settings },
    compile: (value, options = {}) => engine.compile(value, options.at ?? [], options),
    log,
  });
  cleanups.push(async () => action.close?.());
  return action;
}

const event: CloudEvent = {
  specversion: '1.0',
  id: 'evt-1',
  source: '/shop',
  type: 'order.created',
  time: '2024-05-01T12:00:00Z',
  tenant: 'acme',
  data: { customer: 'c42', count: 3, price: 9.5, paid: true, title: 'Blue shoes', tags: ['a', 'b'] },
};

function makeCtx(overrides: Partial<ActionContext> = {}): ActionContext {
  return {
    event,
    runId: '0190d6c2-7b1e-7c3a-9f00-000000000001',
    run: { orgId: 'acme', service: 'shop', createdAt: Date.parse('2024-05-01T12:00:00Z'), labels: {} },
    attempt: 1,
    signal: new AbortController().signal,
    hops: 0,
    log,
    render: (t) => t.render({ ...event, event }),
    services: { publish: async () => {} },
    ...overrides,
  };
}

/** The DispatcherError an attempt failed with; fails the test if the attempt succeeded. */
async function failure(promise: Promise<ActionOutcome>): Promise<DispatcherError> {
  let outcome: ActionOutcome;
  try {
    outcome = await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(DispatcherError);
    return err as DispatcherError;
  }
  throw new Error(`expected the attempt to fail, it ended with ${JSON.stringify(outcome)}`);
}

async function configError(params: Record<string, unknown>, settings: Record<string, unknown> = {}): Promise<DispatcherError> {
  try {
    await makeAction(params, settings);
  } catch (err) {
    expect(err).toBeInstanceOf(DispatcherError);
    return err as DispatcherError;
  }
  throw new Error('expected create to reject the parameters');
}

describe('http action: requests', () => {
  it('renders url, query, headers and a JSON body from the event, keeping number types', async () => {
    const server = await startServer(answer(200, 'thanks'));
    const action = await makeAction({
      url: `${server.base}/hooks/{{ data.customer }}?fixed=1`,
      query: { n: '{{ data.count }}', tag: ['{{ data.tags[0] }}', 'z'] },
      headers: { 'X-Tenant': '{{ tenant }}', Authorization: 'Bearer t0ken' },
      body: { count: '{{ data.count }}', price: '{{ data.price }}', paid: '{{ data.paid }}', title: 'Order: {{ data.title }}', tags: '{{ data.tags }}' },
    });

    const outcome = await action.execute(makeCtx());

    expect(outcome).toEqual({ status: 'success', httpStatus: 200, response: 'thanks' });
    expect(server.received).toHaveLength(1);
    const req = server.received[0]!;
    expect(req.method).toBe('POST');
    expect(req.url).toBe('/hooks/c42?fixed=1&n=3&tag=a&tag=z');
    expect(req.headers['x-tenant']).toBe('acme');
    expect(req.headers.authorization).toBe('Bearer t0ken');
    expect(req.headers['user-agent']).toBe('dispatcher-test');
    expect(req.headers['content-type']).toBe('application/json');
    expect(JSON.parse(req.body)).toStrictEqual({ count: 3, price: 9.5, paid: true, title: 'Order: Blue shoes', tags: ['a', 'b'] });
  });

  it('sends a string body as text/plain, or with the content-type the route sets', async () => {
    const server = await startServer(answer(204));
    const plain = await makeAction({ url: `${server.base}/a`, body: 'Order {{ data.title }}' });
    const custom = await makeAction({ url: `${server.base}/b`, method: 'put', headers: { 'Content-Type': 'application/xml' }, body: '<n>{{ data.count }}</n>' });

    await plain.execute(makeCtx());
    await custom.execute(makeCtx());

    expect(server.received.map((r) => [r.method, r.headers['content-type'], r.body])).toEqual([
      ['POST', 'text/plain; charset=utf-8', 'Order Blue shoes'],
      ['PUT', 'application/xml', '<n>3</n>'],
    ]);
  });

  it('sends the whole CloudEvent as application/cloudevents+json when there is no body', async () => {
    const server = await startServer(answer(202));
    const action = await makeAction({ url: `${server.base}/events` });

    const outcome = await action.execute(makeCtx());

    expect(outcome).toMatchObject({ status: 'success', httpStatus: 202 });
    expect(server.received[0]!.headers['content-type']).toBe('application/cloudevents+json');
    expect(JSON.parse(server.received[0]!.body)).toStrictEqual(event);
  });

  it('sends no body for a GET without one', async () => {
    const server = await startServer(answer(200, 'here'));
    const action = await makeAction({ url: `${server.base}/status`, method: 'GET' });

    await action.execute(makeCtx());

    expect(server.received[0]!.method).toBe('GET');
    expect(server.received[0]!.body).toBe('');
    expect(server.received[0]!.headers['content-type']).toBeUndefined();
  });

  it('carries the run id as idempotency-key and webhook-id, the same on every attempt', async () => {
    const server = await startServer(answer(200));
    const action = await makeAction({ url: `${server.base}/h` });
    const before = Math.floor(Date.now() / 1000);

    await action.execute(makeCtx({ attempt: 1 }));
    await action.execute(makeCtx({ attempt: 2 }));
    await action.execute(makeCtx({ attempt: 1, runId: 'another-run' }));

    const ids = server.received.map((r) => [r.headers['idempotency-key'], r.headers['webhook-id']]);
    expect(ids).toEqual([
      [makeCtx().runId, makeCtx().runId],
      [makeCtx().runId, makeCtx().runId],
      ['another-run', 'another-run'],
    ]);
    // Keep-alive: connections are reused. (undici may open a second one for a request sent the moment the
    // first answer ends, before that connection is back in its pool; without keep-alive there would be 3.)
    expect(server.connections()).toBeLessThan(3);
    for (const r of server.received) {
      const ts = Number(r.headers['webhook-timestamp']);
      expect(Number.isInteger(ts)).toBe(true);
      expect(ts).toBeGreaterThanOrEqual(before);
      expect(ts).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
      // No secret configured: no signature.
      expect(r.headers['webhook-signature']).toBeUndefined();
    }
  });

  it('signs with the whsec_ secret from the settings; standardwebhooks verifies the signature', async () => {
    const server = await startServer(answer(200));
    const action = await makeAction({ url: `${server.base}/signed`, body: { n: '{{ data.count }}', note: 'ünïcödé' } }, { signingSecret: SECRET });

    await action.execute(makeCtx());

    const req = server.received[0]!;
    expect(req.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    const headers = req.headers as Record<string, string>;
    expect(new Webhook(SECRET).verify(req.body, headers)).toEqual({ n: 3, note: 'ünïcödé' });
    // A different key, or a changed body, does not verify.
    const otherKey = `whsec_${Buffer.from('another-key-of-32-bytes-length!!').toString('base64')}`;
    expect(() => new Webhook(otherKey).verify(req.body, headers)).toThrow(/signature/i);
    expect(() => new Webhook(SECRET).verify(req.body.replace('3', '4'), headers)).toThrow(/signature/i);
  });

  it('signs the CloudEvent body with a raw secret given in the route, overriding the settings', async () => {
    const server = await startServer(answer(200));
    const action = await makeAction({ url: `${server.base}/signed`, signingSecret: 'route-secret-plain-text' }, { signingSecret: SECRET });

    await action.execute(makeCtx());

    const req = server.received[0]!;
    const headers = req.headers as Record<string, string>;
    expect(new Webhook('route-secret-plain-text', { format: 'raw' }).verify(req.body, headers)).toStrictEqual(event);
    expect(() => new Webhook(SECRET).verify(req.body, headers)).toThrow(/signature/i);
  });

  it('shares one agent between actions of the same settings until the last one closes', async () => {
    const server = await startServer(answer(200));
    const settings = { allow: LOOPBACK };
    const compile = (value: unknown) => engine.compile(value);
    const a = await httpAction.create({ url: `${server.base}/a` }, { settings, compile, log });
    const b = await httpAction.create({ url: `${server.base}/b` }, { settings, compile, log });

    await a.execute(makeCtx());
    await a.close?.();
    await a.close?.(); // twice is harmless, and must not close b's agent
    await b.execute(makeCtx());
    await b.close?.();

    expect(server.received.map((r) => r.url)).toEqual(['/a', '/b']);
    await expect(b.execute(makeCtx())).rejects.toThrow();
  });
});

describe('http action: outcomes', () => {
  it('treats 500 as a retryable http_status, with the answer and no secret or header in the error', async () => {
    const server = await startServer(answer(500, 'database down'));
    const action = await makeAction(
      { url: `${server.base}/fail?token=query-secret`, headers: { authorization: 'Bearer header-secret' } },
      { signingSecret: SECRET },
    );

    const err = await failure(action.execute(makeCtx()));

    expect(err.code).toBe('http_status');
    expect(err.retryable).toBe(true);
    expect(err.httpStatus).toBe(500);
    expect(err.response).toBe('database down');
    expect(err.message).toBe(`HTTP 500 from POST ${server.base}/fail`);
    const shown = JSON.stringify({ message: err.message, response: err.response, err });
    for (const secret of [SECRET, SECRET.slice(6), 'header-secret', 'query-secret']) expect(shown).not.toContain(secret);
  });

  it('treats 404 as a http_status that a retry will not mend', async () => {
    const server = await startServer(answer(404, 'no such hook'));
    const action = await makeAction({ url: `${server.base}/gone` });

    const err = await failure(action.execute(makeCtx()));

    expect(err).toMatchObject({ code: 'http_status', retryable: false, httpStatus: 404, response: 'no such hook' });
    expect(err.retryAfterMs).toBeUndefined();
  });

  it.each([408, 425, 502, 503])('treats %i as retryable', async (status) => {
    const server = await startServer(answer(status));
    const action = await makeAction({ url: `${server.base}/x` });
    expect(await failure(action.execute(makeCtx()))).toMatchObject({ code: 'http_status', retryable: true, httpStatus: status });
  });

  it('reads Retry-After in seconds from a 429', async () => {
    const server = await startServer(answer(429, 'slow down', { 'Retry-After': '2' }));
    const action = await makeAction({ url: `${server.base}/busy` });

    const err = await failure(action.execute(makeCtx()));

    expect(err).toMatchObject({ code: 'http_status', retryable: true, httpStatus: 429 });
    expect(err.retryAfterMs).toBe(2000);
  });

  it('reads Retry-After as an HTTP-date', async () => {
    const at = new Date(Math.ceil(Date.now() / 1000) * 1000 + 30_000);
    const server = await startServer(answer(503, '', { 'Retry-After': at.toUTCString() }));
    const action = await makeAction({ url: `${server.base}/busy` });

    const err = await failure(action.execute(makeCtx()));

    expect(err.code).toBe('http_status');
    expect(err.retryAfterMs).toBeGreaterThan(28_000);
    expect(err.retryAfterMs).toBeLessThanOrEqual(31_000);
  });

  it('parses Retry-After forms and ignores garbage', () => {
    const now = Date.parse('2024-05-01T12:00:00Z');
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter('Wed, 01 May 2024 12:01:00 GMT', now)).toBe(60_000);
    expect(parseRetryAfter('Wed, 01 May 2024 11:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('Wednesday, 01-May-24 12:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter(['5', '7'], now)).toBe(5000);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter('-5', now)).toBeUndefined();
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
  });

  it('honours successStatus', async () => {
    const server = await startServer((req, res) => {
      res.writeHead(Number(req.url!.slice(1)));
      res.end();
    });
    const only404 = await makeAction({ url: `${server.base}/{{ data.status }}`, successStatus: [404, '200-201'] });
    const ctxFor = (status: number) => makeCtx({ render: (t) => t.render({ ...event, data: { status }, event }) });

    expect(await only404.execute(ctxFor(404))).toMatchObject({ status: 'success', httpStatus: 404 });
    expect(await only404.execute(ctxFor(201))).toMatchObject({ status: 'success', httpStatus: 201 });
    expect(await failure(only404.execute(ctxFor(204)))).toMatchObject({ code: 'http_status', httpStatus: 204 });

    const defaults = await makeAction({ url: `${server.base}/{{ data.status }}` });
    expect(await defaults.execute(ctxFor(204))).toMatchObject({ status: 'success', httpStatus: 204 });
    expect(await failure(defaults.execute(ctxFor(304)))).toMatchObject({ code: 'http_status', retryable: false });
  });

  it('does not follow redirects', async () => {
    const server = await startServer((req, res) => {
      if (req.url === '/old') res.writeHead(302, { Location: '/new' }).end('moved');
      else res.writeHead(200).end('followed');
    });
    const action = await makeAction({ url: `${server.base}/old` });

    const err = await failure(action.execute(makeCtx()));

    expect(err).toMatchObject({ code: 'http_status', httpStatus: 302, retryable: false, response: 'moved' });
    expect(server.received.map((r) => r.url)).toEqual(['/old']);
  });

  it('keeps only maxResponseBytes of a large answer', async () => {
    const big = 'x'.repeat(100_000);
    const server = await startServer(answer(200, big));
    const action = await makeAction({ url: `${server.base}/big` }, { maxResponseBytes: 1000 });

    const outcome = await action.execute(makeCtx());

    expect(outcome).toMatchObject({ status: 'success', httpStatus: 200 });
    expect(outcome.response).toBe('x'.repeat(1000));
  });

  it('stops reading an endless answer instead of buffering it', async () => {
    let written = 0;
    const server = await startServer((_req, res) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      const chunk = Buffer.alloc(64 * 1024, 'y');
      const pump = (): void => {
        while (!res.destroyed && written < 1024 ** 3) {
          written += chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
    const action = await makeAction({ url: `${server.base}/endless` }, { maxResponseBytes: 10 });
    const started = Date.now();

    const err = await failure(action.execute(makeCtx()));

    expect(err).toMatchObject({ code: 'http_status', httpStatus: 500, response: 'y'.repeat(10) });
    expect(Date.now() - started).toBeLessThan(3000);
    expect(written).toBeLessThan(64 * 1024 ** 2);
  });

  it('does not cut a multi-byte character in half at the limit', async () => {
    const server = await startServer(answer(200, 'aé'));
    const action = await makeAction({ url: `${server.base}/utf8` }, { maxResponseBytes: 2 });
    expect((await action.execute(makeCtx())).response).toBe('a');
  });

  it('ends a request the receiver never answers with attempt_timeout', async () => {
    const server = await startServer(() => {
      /* never answers */
    });
    const action = await makeAction({ url: `${server.base}/hang`, timeout: '200ms' });
    const started = Date.now();

    const err = await failure(action.execute(makeCtx()));

    expect(err).toMatchObject({ code: 'attempt_timeout', retryable: true });
    expect(Date.now() - started).toBeLessThan(2000);
    expect(server.received).toHaveLength(1);
  });

  it('ends the attempt with attempt_timeout when the runner aborts it', async () => {
    const server = await startServer(() => {
      /* never answers */
    });
    const action = await makeAction({ url: `${server.base}/hang` });
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('run canceled')), 100);

    const err = await failure(action.execute(makeCtx({ signal: controller.signal })));

    expect(err).toMatchObject({ code: 'attempt_timeout', retryable: true });
  });

  it('reports a refused connection as a retryable network_error', async () => {
    const server = await startServer(answer(200));
    const { base } = server;
    await server.close();
    const action = await makeAction({ url: `${base}/nobody` });

    const err = await failure(action.execute(makeCtx()));

    expect(err).toMatchObject({ code: 'network_error', retryable: true });
    expect(err.message).toContain('ECONNREFUSED');
  });

  it('reports a name that does not resolve as a network_error', async () => {
    const action = await makeAction({ url: 'http://does-not-exist.invalid/hook' });
    expect(await failure(action.execute(makeCtx()))).toMatchObject({ code: 'network_error', retryable: true });
  });

  it('reports a url that does not render to an http URL as template_error', async () => {
    const action = await makeAction({ url: '{{ data.title }}' });
    const err = await failure(action.execute(makeCtx()));
    expect(err).toMatchObject({ code: 'template_error', retryable: false });
  });

  it('percent-encodes event data rendered into the URL, so that it stays a value in its path or query; | raw keeps a trusted whole URL', async () => {
    const server = await startServer(answer(200));
    const render = (data: unknown) => (t: import('../src/core/template.js').Template) => t.render({ ...event, data, event });
    const action = await makeAction({ url: `${server.base}/orders/{{ data.customer }}?note={{ data.note }}` });
    await action.execute(makeCtx({ render: render({ customer: '../admin/delete?all=1#', note: 'a&b=c d' }) }));
    expect(server.received[0]!.url).toBe('/orders/..%2Fadmin%2Fdelete%3Fall%3D1%23?note=a%26b%3Dc%20d');
    // A whole URL from the event is refused unless the route trusts it with | raw.
    const whole = await makeAction({ url: '{{ data.url }}' });
    const refused = await failure(whole.execute(makeCtx({ render: render({ url: `${server.base}/cb` }) })));
    expect(refused).toMatchObject({ code: 'template_error', message: expect.stringContaining('| raw') });
    const trusted = await makeAction({ url: '{{ data.url | raw }}' });
    await trusted.execute(makeCtx({ render: render({ url: `${server.base}/cb?x=1` }) }));
    expect(server.received[1]!.url).toBe('/cb?x=1');
    // A value that is a dot segment would move the path: refused.
    const dots = await failure(action.execute(makeCtx({ render: render({ customer: '..', note: 'x' }) })));
    expect(dots).toMatchObject({ code: 'template_error', message: expect.stringContaining('dot segment') });
    expect(server.received).toHaveLength(2);
  });

  it('reports a header that renders to a line break as template_error, without its value', async () => {
    const action = await makeAction({ url: 'http://127.0.0.1:9/x', headers: { 'x-note': '{{ data.note }}' } });
    const ctx = makeCtx({ render: (t) => t.render({ ...event, data: { note: 'a\r\nx-injected: secret-value' }, event }) });
    const err = await failure(action.execute(ctx));
    expect(err.code).toBe('template_error');
    expect(err.message).not.toContain('secret-value');
  });
});

describe('http action: address policy', () => {
  it.each([
    ['127.0.0.1', (port: number) => `http://127.0.0.1:${port}/x`],
    ['localhost', (port: number) => `http://localhost:${port}/x`],
    ['[::1]', (port: number) => `http://[::1]:${port}/x`],
    ['169.254.169.254', () => 'http://169.254.169.254/latest/meta-data/'],
    ['10.1.2.3', () => 'http://10.1.2.3/x'],
    ['[::ffff:127.0.0.1]', (port: number) => `http://[::ffff:127.0.0.1]:${port}/x`],
    ['0x7f.1 (127.0.0.1 spelt in hex)', (port: number) => `http://0x7f.1:${port}/x`],
  ])('refuses %s without an allowlist', async (_name, url) => {
    const server = await startServer(answer(200));
    const action = await makeAction({ url: url(server.port) }, { allow: [] });

    const err = await failure(action.execute(makeCtx()));

    expect(err).toMatchObject({ code: 'address_blocked', retryable: false });
    expect(server.received).toHaveLength(0);
  });

  it('refuses a host name at connect time, after resolving it (localhost → loopback)', async () => {
    const server = await startServer(answer(200));
    const action = await makeAction({ url: `http://localhost:${server.port}/x` }, { allow: [] });

    const err = await failure(action.execute(makeCtx()));

    expect(err.code).toBe('address_blocked');
    expect(err.message).toMatch(/^localhost \((127\.0\.0\.1|::1)\) is a loopback address/);
    expect(server.received).toHaveLength(0);
  });

  it('lets allowlisted CIDRs and host names through, and only the allowlisted addresses of a name', async () => {
    const server = await startServer(answer(200));
    // localhost resolves to 127.0.0.1 and ::1; the lookup keeps 127.0.0.1 only, where the server listens.
    const byCidr = await makeAction({ url: `http://localhost:${server.port}/cidr` }, { allow: ['127.0.0.0/8'] });
    const byName = await makeAction({ url: `http://LOCALHOST:${server.port}/name` }, { allow: ['localhost'] });
    const byAddress = await makeAction({ url: `http://127.0.0.1:${server.port}/address` }, { allow: ['127.0.0.1'] });
    const byMapped = await makeAction({ url: `http://[::ffff:127.0.0.1]:${server.port}/mapped` }, { allow: ['127.0.0.1/32'] });

    for (const action of [byCidr, byName, byAddress, byMapped]) {
      expect(await action.execute(makeCtx())).toMatchObject({ status: 'success', httpStatus: 200 });
    }
    expect(server.received.map((r) => r.url)).toEqual(['/cidr', '/name', '/address', '/mapped']);
  });

  it('filters a DNS answer at lookup: refused addresses are dropped, an all-refused answer is address_blocked', async () => {
    const answers: Record<string, Array<{ address: string; family: number }>> = {
      'mixed.test': [
        { address: '10.0.0.7', family: 4 },
        { address: '93.184.216.34', family: 4 },
        { address: 'fd00::7', family: 6 },
      ],
      'rebound.test': [{ address: '127.0.0.1', family: 4 }],
    };
    const guard = createAddressGuard([], { resolveAll: async (host) => answers[host] ?? [] });
    const lookup = (host: string, all: boolean) =>
      new Promise<unknown>((resolve, reject) =>
        guard.lookup(host, { all }, (err, address, family) => (err ? reject(err) : resolve(all ? address : [address, family]))),
      );

    expect(await lookup('mixed.test', true)).toEqual([{ address: '93.184.216.34', family: 4 }]);
    expect(await lookup('mixed.test', false)).toEqual(['93.184.216.34', 4]);
    await expect(lookup('rebound.test', true)).rejects.toMatchObject({ code: 'address_blocked' });
    await expect(lookup('nothing.test', false)).rejects.toMatchObject({ code: 'ENOTFOUND' });
  });

  it('refuses blocked IP-literal hosts in the connector itself', async () => {
    const server = await startServer(answer(200));
    const guard = createAddressGuard(['127.0.0.1/32']);
    const connect = (hostname: string) =>
      new Promise<string>((resolve, reject) =>
        guard.connector({ hostname, protocol: 'http:', port: String(server.port) }, (err, socket) => {
          if (err) return reject(err);
          socket!.destroy();
          resolve('connected');
        }),
      );
    await expect(connect('169.254.169.254')).rejects.toMatchObject({ code: 'address_blocked' });
    await expect(connect('::1')).rejects.toMatchObject({ code: 'address_blocked' });
    await expect(connect('127.0.0.2')).rejects.toMatchObject({ code: 'address_blocked' });
    // Allowlisted: the connector connects.
    await expect(connect('127.0.0.1')).resolves.toBe('connected');
  });

  it.each([
    ['127.0.0.1', 'loopback'],
    ['0.0.0.0', 'unspecified'],
    ['10.1.2.3', 'private'],
    ['172.16.5.4', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'carrierGradeNat'],
    ['169.254.169.254', 'linkLocal'],
    ['224.0.0.1', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['240.0.0.1', 'reserved'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fe80::1', 'linkLocal'],
    ['fd12:3456::1', 'uniqueLocal'],
    ['ff02::1', 'multicast'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:10.0.0.1', 'private'],
    ['64:ff9b::a9fe:a9fe', 'linkLocal'],
    ['2002:7f00:1::1', 'loopback'],
    ['::7f00:1', 'reserved'],
    ['2001:db8::1', 'reserved'],
    ['8.8.8.8', 'unicast'],
    ['::ffff:8.8.8.8', 'unicast'],
    ['2606:4700:4700::1111', 'unicast'],
  ])('classifies %s as %s', (address, range) => {
    expect(addressRange(address)).toBe(range);
  });
});

describe('http action: configuration', () => {
  it.each([
    [{ url: 'http://x.test', bogus: 1 }, /bogus/],
    [{}, /url/],
    [{ url: 'ftp://x.test/file' }, /scheme/],
    [{ url: 'http://user:pw@x.test/' }, /credentials/],
    [{ url: 'http://x.test', method: 'BREW' }, /method/],
    [{ url: 'http://x.test', headers: { 'webhook-id': 'x' } }, /webhook-id/],
    [{ url: 'http://x.test', headers: { 'bad header': 'x' } }, /header name/],
    [{ url: 'http://x.test', method: 'GET', body: 'x' }, /body/],
    [{ url: 'http://x.test', timeout: 'soon' }, /timeout/],
    [{ url: 'http://x.test', successStatus: ['2xx', '299-200'] }, /successStatus/],
    [{ url: 'http://x.test', signingSecret: 'whsec_not base64!' }, /base64/],
  ])('rejects %j', async (params, message) => {
    const err = await configError(params as Record<string, unknown>);
    expect(err.code).toBe('config_invalid');
    expect(err.message).toMatch(message);
  });

  it('rejects a bad allowlist entry, naming it', async () => {
    const err = await configError({ url: 'http://x.test' }, { allow: ['10.0.0.0/8', '10.0.0.0/99'] });
    expect(err.code).toBe('config_invalid');
    expect(err.message).toContain('actions.http.allow/1');
  });

  it('declares a JSON Schema for its parameters', () => {
    expect(httpAction.type).toBe('http');
    expect(httpAction.paramsSchema).toMatchObject({ type: 'object', required: ['url'], additionalProperties: false });
  });
});
