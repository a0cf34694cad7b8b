/**
 * Generated requests over every route of the API: random methods, paths (with real and made-up ids),
 * headers, query strings (filters, fields, sort and paging edge cases) and bodies. Whatever comes in, the
 * answer is never a 5xx, every 4xx carries a documented error code, and the process stays up.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { ERROR_CODES } from '../src/core/errors.js';
import { event, startDispatcher, type TestDispatcher, authed, AUTH, TEST_KEY } from './helpers.js';

const REQUESTS = 10_000;

let t: TestDispatcher;
let app: FastifyInstance;
const realIds: { run: string[]; event: string[]; deadLetter: string[]; client: string[] } = { run: [], event: [], deadLetter: [], client: [] };
const secrets: string[] = [];
const clientIds: string[] = [];
const credentials: string[] = [AUTH.authorization];
const identity = (doc: unknown) => Buffer.from(JSON.stringify(doc)).toString('base64');

beforeAll(async () => {
  t = await startDispatcher({
    server: { bodyLimit: '16KiB', rateLimit: { max: 0, window: '1s' } },
    intake: { maxBatch: 20, maxDepth: 6 },
    types: { 'fuzz.typed': { schema: { type: 'object', required: ['n'], properties: { n: { type: 'integer' } } } } },
    auth: { keyFile: '', psk: [{ service: 'test', key: TEST_KEY }], identityHeader: { enabled: true } },
  });
  app = authed(await t.d.app());
  // Credentials of every kind: clients with all or few permissions (their tokens), one to be rotated or deleted.
  for (const [name, permissions] of [['fuzz-all', ['dispatcher:*:*']], ['fuzz-reader', ['dispatcher:runs:read']], ['fuzz-victim', ['dispatcher:*:read']]] as const) {
    const created = (await app.inject({ method: 'POST', url: '/v1/clients', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ name, permissions }) })).json();
    const token = (await app.inject({ method: 'POST', url: '/v1/token', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ client_id: created.id, client_secret: created.secret }) })).json();
    // Only the victim's id is offered to the rotate and delete paths, so that the others' tokens stay good.
    if (name === 'fuzz-victim') realIds.client.push(created.id);
    else clientIds.push(created.id);
    secrets.push(created.secret);
    credentials.push(`Bearer ${token.access_token}`);
  }
  for (let i = 0; i < 5; i++) {
    const res = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/cloudevents+json' }, payload: JSON.stringify(event()) });
    realIds.event.push(res.json().events[0].id);
    realIds.run.push(...res.json().events[0].runs);
  }
  await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': 'application/cloudevents+json' }, payload: '{bad' });
  const dls = await app.inject({ method: 'GET', url: '/v1/dead-letters' });
  realIds.deadLetter.push(...dls.json().data.map((d: { id: string }) => d.id));
});

afterAll(async () => {
  await t?.close();
});

const id = (kind: keyof typeof realIds) =>
  fc.oneof(
    { arbitrary: fc.constantFrom(...realIds[kind]), weight: 4 },
    { arbitrary: fc.string({ maxLength: 40 }), weight: 1 },
    { arbitrary: fc.constantFrom('%00', '..%2F..', '%E0%A4%A'), weight: 1 },
    { arbitrary: fc.uuid(), weight: 1 },
  );

const path = () =>
  fc.oneof(
    fc.constantFrom('/v1/events', '/v1/events', '/v1/runs', '/v1/dead-letters', '/v1/stream?after=abc', '/healthz', '/readyz', '/metrics', '/openapi.json', '/', '/v1', '/v2/x'),
    fc.constantFrom('/v1/token', '/v1/audit', '/v1/clients'),
    id('client').map((x) => `/v1/clients/${encodeURIComponent(x)}`),
    id('client').map((x) => `/v1/clients/${encodeURIComponent(x)}/rotate-secret`),
    id('run').map((x) => `/v1/runs/${encodeURIComponent(x)}`),
    id('run').map((x) => `/v1/runs/${encodeURIComponent(x)}/cancel`),
    id('run').map((x) => `/v1/runs/${encodeURIComponent(x)}/retry`),
    id('event').map((x) => `/v1/events/${encodeURIComponent(x)}`),
    id('deadLetter').map((x) => `/v1/dead-letters/${encodeURIComponent(x)}`),
    id('deadLetter').map((x) => `/v1/dead-letters/${encodeURIComponent(x)}/replay`),
  );

const queryKey = fc.constantFrom(
  'filter[status]', 'filter[type]', 'filter[route]', 'filter[labels][team]', 'filter[labels]', 'filter[created_at][gte]',
  'filter[created_at][lt]', 'filter[created_at][x]', 'filter[updated_at][lte]', 'filter[routed]', 'filter[origin]',
  'filter[reason]', 'filter[replayed]', 'filter[source]', 'filter[id]', 'filter[event]', 'filter[nope]', 'fields[data]',
  'fields[other]', 'sort', 'limit', 'offset', 'after', 'page[size]', '__proto__', 'constructor',
  'filter[actor]', 'filter[action]', 'filter[record]', 'filter[outcome]', 'filter[at][gte]', 'filter[at][zz]',
);
const queryValue = fc.oneof(
  fc.constantFrom('', '0', '-1', '1', '50', '1000', '1001', '99999999999999999999', 'abc', 'success,failure', 'created_at', '-created_at',
    'created_at:desc', 'created_at:up', 'id,status', 'id,,status', 'salad', '2026-11-23T00:00:00Z', 'true', 'false', 'intake', '%', '[]'),
  fc.string({ maxLength: 30 }),
);
const query = fc.array(fc.tuple(queryKey, queryValue), { maxLength: 5 }).map((pairs) => {
  if (pairs.length === 0) return '';
  return '?' + pairs.map(([k, v]) => `${encodeURIComponent(k).replace(/%5B/g, '[').replace(/%5D/g, ']')}=${encodeURIComponent(v)}`).join('&');
});

const contentType = fc.constantFrom(
  undefined, 'application/json', 'application/cloudevents+json', 'application/cloudevents-batch+json', 'text/plain',
  'application/octet-stream', 'application/json; charset=utf-8', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded', '',
);

const jsonValue = fc.jsonValue({ maxDepth: 4 });
const body = fc.oneof(
  fc.constant(undefined),
  jsonValue.map((v) => JSON.stringify(v)),
  fc.constant(undefined).map(() => JSON.stringify(event())),
  fc.constant(undefined).map(() => JSON.stringify([event(), event({ data: { team: 'x' } })])),
  fc.constant(JSON.stringify([event(), event({ type: 'fuzz.typed', data: { n: 'x' } })])),
  fc.record({ specversion: fc.constantFrom('1.0', '0.3', 1), id: fc.string(), source: fc.string(), type: fc.string(), data: jsonValue }).map((v) => JSON.stringify(v)),
  fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
  fc.constant('{"__proto__":{"x":1}}'),
  fc.constant('['.repeat(50) + ']'.repeat(50)),
  fc.constant('x'.repeat(20 * 1024)),
  // Token requests and clients, right and wrong.
  fc.record({ client_id: fc.constantFrom('x', ''), client_secret: fc.string({ maxLength: 20 }), grant_type: fc.constantFrom('client_credentials', 'password') }).map((v) => JSON.stringify(v)),
  fc.constant(undefined).map(() => `client_id=${clientIds[0]}&client_secret=${secrets[0]}`),
  fc.record({ name: fc.string({ maxLength: 10 }), permissions: fc.array(fc.constantFrom('dispatcher:*:*', 'x', 'a:b:c', 'dispatcher:runs:read'), { maxLength: 3 }) }).map((v) => JSON.stringify(v)),
);

const headers = fc.record(
  {
    'ce-specversion': fc.constantFrom('1.0', '2.0', ''),
    'ce-id': fc.string({ maxLength: 10 }),
    'ce-source': fc.string({ maxLength: 10 }),
    'ce-type': fc.constantFrom('example.fuzz', 'fuzz.typed', ''),
    'last-event-id': fc.constantFrom('0', 'x', '-1'),
    authorization: fc.oneof(
      { arbitrary: fc.constant(undefined).map(() => credentials[0]!), weight: 6 },
      { arbitrary: fc.constant(undefined).map(() => credentials[1 + Math.floor(Math.random() * 3)]!), weight: 3 },
      { arbitrary: fc.constant(undefined), weight: 1 },
      { arbitrary: fc.constantFrom('PSK abc', 'PSK ' + 'x'.repeat(300), 'Bearer x.y.z', 'Bearer eyJhbGciOiJub25lIn0.e30.', 'Basic Zm9vOmJhcg==', '', 'PSK', 'psk  ' + TEST_KEY), weight: 2 },
    ),
    'x-rh-identity': fc.oneof(
      fc.constant(identity({ identity: { org_id: 'default', type: 'User', user: { username: 'fuzz' } } })),
      fc.constant(identity({ identity: { org_id: 'default', type: 'System' } })),
      fc.constantFrom('%%%', identity([]), identity({ identity: null }), identity({ identity: { org_id: 5 } })),
    ),
    origin: fc.constantFrom('https://a.example', 'null'),
  },
  { requiredKeys: ['authorization'] },
);

describe('generated requests', () => {
  it(`answers ${REQUESTS} random requests over every route without a 5xx, each 4xx with a documented code`, async () => {
    const codes = new Set(Object.keys(ERROR_CODES));
    const seen = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          { arbitrary: fc.constantFrom('GET', 'POST'), weight: 6 },
          { arbitrary: fc.constantFrom('DELETE', 'PUT', 'PATCH', 'HEAD', 'OPTIONS'), weight: 1 },
        ),
        path(),
        query,
        contentType,
        body,
        headers,
        async (method, p, q, type, payload, extra) => {
          // The stream never ends by itself: ask for it only with a bad cursor (answered at once).
          if (p.startsWith('/v1/stream') && method === 'GET' && !q.includes('after=')) q = `${q ? `${q}&` : '?'}after=bad`;
          // Sent as generated: without an Authorization header, the identity header (or nothing) is all it carries.
          const hdrs: Record<string, string> = {};
          for (const [k, v] of Object.entries(extra)) if (v !== undefined) hdrs[k] = v;
          if (type !== undefined) hdrs['content-type'] = type;
          const res = await (await t.d.app()).inject({
            method: method as 'GET',
            url: p + (p.includes('?') && q.startsWith('?') ? `&${q.slice(1)}` : q),
            headers: hdrs,
            ...(payload !== undefined && method !== 'GET' && method !== 'HEAD' ? { payload } : {}),
          });
          seen.set(res.statusCode, (seen.get(res.statusCode) ?? 0) + 1);
          expect(res.statusCode, `${method} ${p}${q}`).toBeLessThan(500);
          if (res.statusCode >= 400 && method !== 'HEAD') {
            const answer = res.json() as { code?: string };
            expect(codes.has(answer.code ?? ''), `${method} ${p}${q} answered ${res.statusCode} ${res.body.slice(0, 200)}`).toBe(true);
          }
        },
      ),
      { numRuns: REQUESTS, seed: Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31) },
    );
    console.log(`generated requests: ${REQUESTS}; statuses: ${[...seen].sort(([a], [b]) => a - b).map(([s, n]) => `${s}×${n}`).join(', ')}`);
    expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  }, 300_000);
});
