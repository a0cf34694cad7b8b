/**
 * Hardening of the HTTP API: security headers, CORS per path, and the rate limit per principal.
 */

import { request } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { ERROR_CODES } from '../src/core/errors.js';
import { startDispatcher, type TestDispatcher, authed, TEST_KEY } from './helpers.js';

const OTHER_KEY = 'otherKey0123456789abcdef';
/** Used by the rate limit test alone, so that other tests' requests do not count against it. */
const LIMITED_KEY = 'limitedKey0123456789abcdef';
let t: TestDispatcher;
let app: FastifyInstance;

beforeAll(async () => {
  t = await startDispatcher({
    server: {
      cors: [
        { path: '/v1/runs', origins: ['https://console.example.com'], credentials: true, maxAge: '1m' },
        { path: '/v1/events', origins: ['*'] },
      ],
      rateLimit: { max: 5, window: '1s' },
    },
    auth: { keyFile: '', psk: [{ service: 'test', key: TEST_KEY }, { service: 'other', key: OTHER_KEY }, { service: 'limited', key: LIMITED_KEY }] },
  });
  app = authed(await t.d.app());
});

afterAll(async () => {
  await t?.close();
});

describe('security headers', () => {
  it('are on API answers, errors included; the browsable docs keep their scripts', async () => {
    for (const url of ['/healthz', '/v1/runs/none']) {
      const res = await app.inject({ method: 'GET', url });
      expect(res.headers['x-content-type-options'], url).toBe('nosniff');
      expect(res.headers['x-frame-options'], url).toBe('DENY');
      expect(res.headers['content-security-policy'], url).toContain("default-src 'none'");
      expect(res.headers['cache-control'], url).toBe('no-store');
    }
    const docs = await app.inject({ method: 'GET', url: '/docs/' });
    expect(docs.headers['x-content-type-options']).toBe('nosniff');
    expect(docs.headers['content-security-policy']).toBeUndefined();
  });
});

describe('CORS per path', () => {
  it('answers an allowed origin on its path, with credentials', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/runs', headers: { origin: 'https://console.example.com' } });
    expect(res.headers['access-control-allow-origin']).toBe('https://console.example.com');
    expect(res.headers['access-control-allow-credentials']).toBe('true');
  });

  it('does not allow another origin on that path', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/runs', headers: { origin: 'https://evil.example.net' } });
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('answers * on a path open to any origin, without credentials', async () => {
    const res = await app.inject({ method: 'OPTIONS', url: '/v1/events', headers: { origin: 'https://anyone.example.org', 'access-control-request-method': 'POST' } });
    expect(res.statusCode).toBe(204);
    expect(res.headers['access-control-allow-origin']).toBe('*');
    expect(String(res.headers['access-control-allow-methods'])).toContain('POST');
    expect(res.headers['access-control-allow-credentials']).toBeUndefined();
  });

  it('answers a preflight with the cache time on a path with a list of origins', async () => {
    const res = await app.inject({ method: 'OPTIONS', url: '/v1/runs', headers: { origin: 'https://console.example.com', 'access-control-request-method': 'GET' } });
    expect(res.statusCode).toBe(204);
    expect(res.headers['access-control-max-age']).toBe('60');
  });

  it('answers no CORS headers on a path no entry covers', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/dead-letters', headers: { origin: 'https://console.example.com' } });
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
  });
});

describe('rate limit', () => {
  it('limits each principal wherever it calls from, with Retry-After, then lets requests through again', async () => {
    const app = authed(await t.d.app(), `PSK ${LIMITED_KEY}`);
    const statuses: number[] = [];
    let limited: Awaited<ReturnType<typeof app.inject>> | undefined;
    for (let i = 0; i < 8; i++) {
      const res = await app.inject({ method: 'GET', url: '/v1/events', remoteAddress: i % 2 === 0 ? '10.9.8.7' : '10.9.8.8' });
      statuses.push(res.statusCode);
      if (res.statusCode === 429) limited ??= res;
    }
    expect(statuses.filter((s) => s === 200)).toHaveLength(5);
    expect(limited).toBeDefined();
    expect(limited!.json().code).toBe('rate_limited');
    expect(Object.keys(ERROR_CODES)).toContain('rate_limited');
    expect(Number(limited!.headers['retry-after'])).toBeGreaterThan(0);
    // Another principal, from the same address, is not held up by the first one's limit.
    const other = authed(await t.d.app(), `PSK ${OTHER_KEY}`);
    expect((await other.inject({ method: 'GET', url: '/v1/events', remoteAddress: '10.9.8.7' })).statusCode).toBe(200);
    // Probes are never limited.
    for (let i = 0; i < 8; i++) expect((await app.inject({ method: 'GET', url: '/healthz', remoteAddress: '10.9.8.7' })).statusCode).toBe(200);
    await new Promise((r) => setTimeout(r, 1100));
    expect((await app.inject({ method: 'GET', url: '/v1/events', remoteAddress: '10.9.8.7' })).statusCode).toBe(200);
  });

  it('limits callers without valid credentials per address, before it looks at their credentials', async () => {
    const raw = await t.d.app();
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) {
      statuses.push((await raw.inject({ method: 'GET', url: '/v1/runs', remoteAddress: '10.7.7.7', headers: { authorization: `PSK wrongKey${i}xxxxxxxx` } })).statusCode);
    }
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429, 429]);
    // Another address still gets its answer; a valid principal from the limited address too.
    expect((await raw.inject({ method: 'GET', url: '/v1/runs', remoteAddress: '10.7.7.8' })).statusCode).toBe(401);
    expect((await raw.inject({ method: 'GET', url: '/v1/runs', remoteAddress: '10.7.7.7', headers: { authorization: `PSK ${OTHER_KEY}` } })).statusCode).toBe(200);
  });
});

describe('answers before any route', () => {
  /** Raw bytes to the listening server; resolves with everything it answered before closing. */
  async function raw(address: string, bytes: string): Promise<{ status: number; headers: Record<string, string>; body: string }> {
    const { port } = new URL(address);
    const text = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1', () => socket.end(bytes));
      let got = '';
      socket.setEncoding('utf8').on('data', (c: string) => (got += c));
      socket.on('close', () => resolve(got));
      socket.on('error', reject);
    });
    const [head, ...rest] = text.split('\r\n\r\n');
    const [statusLine, ...lines] = head!.split('\r\n');
    const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
    return { status: Number(statusLine!.split(' ')[1]), headers, body: rest.join('\r\n\r\n') };
  }

  it('codes a path that is not valid percent-encoding, before authentication, with the security headers', async () => {
    const res = await (await t.d.app()).inject({ method: 'GET', url: '/v1/runs/%zz' });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: 'bad_request', message: expect.stringContaining('not valid') });
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['content-security-policy']).toContain("default-src 'none'");
  });

  it('codes what the HTTP parser refuses (headers too large, a bad request line, two Content-Lengths), with the security headers', async () => {
    const s = await startDispatcher({ server: { port: 0 } });
    try {
      const address = await s.d.listen();
      const big = await raw(address, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
      expect(big.status).toBe(431);
      expect(JSON.parse(big.body)).toEqual({ code: 'headers_too_large', message: expect.any(String) });
      expect(big.headers['x-content-type-options']).toBe('nosniff');
      const line = await raw(address, 'THIS IS NOT HTTP\r\n\r\n');
      expect(line.status).toBe(400);
      expect(JSON.parse(line.body)).toMatchObject({ code: 'bad_request', message: expect.stringContaining('not valid HTTP') });
      const twice = await raw(address, 'POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}');
      expect(twice.status).toBe(400);
      expect(JSON.parse(twice.body).code).toBe('bad_request');
      expect(twice.headers['content-security-policy']).toContain("default-src 'none'");
      // The server goes on answering.
      expect((await fetch(`${address}/healthz`)).status).toBe(200);
    } finally {
      await s.close();
    }
  });
});

describe('oversized bodies', () => {
  /** Sends `total` bytes of a JSON string body, chunked (no Content-Length) or declared; resolves with the status, or null when the connection was closed without one. */
  function send(address: string, total: number, chunked: boolean, fill: string): Promise<number | null> {
    return new Promise((resolve) => {
      const url = new URL('/v1/events', address);
      const req = request(
        { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { 'content-type': 'application/cloudevents+json', authorization: `PSK ${TEST_KEY}`, ...(chunked ? {} : { 'content-length': String(total) }) } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? null);
        },
      );
      req.on('error', () => resolve(null));
      const piece = Buffer.alloc(1024, fill);
      let sent = 0;
      const more = () => {
        while (sent < total) {
          sent += piece.length;
          if (!req.write(piece)) return void req.once('drain', more);
        }
        req.end();
      };
      more();
    });
  }

  it('what each leaves behind: over the limit, a 413 and a truncated dead letter; far over it, a closed connection and a dead letter of what was read (chunked) or of nothing (declared)', async () => {
    const own = await startDispatcher({ server: { port: 0, bodyLimit: '4KiB' }, deadLetters: { maxBytes: '1KiB' } });
    try {
      const address = await own.d.listen();
      const letters = async () => (await own.d.store.listDeadLetters({ limit: 100, offset: 0 })).items.filter((d) => d.reason === 'payload_too_large');
      expect(await send(address, 8 * 1024, true, 'a')).toBe(413);
      let kept = await letters();
      expect(kept).toHaveLength(1);
      expect(kept[0]).toMatchObject({ rawTruncated: true });
      expect(kept[0]!.raw.length).toBe(1024);
      // Chunked, far over the limit (16 times): the connection is dropped, and the dead letter keeps what was read.
      await send(address, 100 * 1024, true, 'b');
      await new Promise((r) => setTimeout(r, 300));
      kept = await letters();
      expect(kept.length).toBe(2);
      expect(kept.every((d) => d.rawTruncated)).toBe(true);
      // Declared far over the limit: refused before reading, the dead letter holds no bytes.
      await send(address, 100 * 1024, false, 'c');
      await new Promise((r) => setTimeout(r, 300));
      kept = await letters();
      expect(kept.length).toBe(3);
      expect(kept.map((d) => d.raw.length).sort((a, b) => a - b)[0]).toBe(0);
    } finally {
      await own.close();
    }
  });
});
