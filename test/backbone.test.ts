/**
 * The Communications Backbone profile at its own paths, on SQLite and PostgreSQL: clients (`/client`),
 * tokens (`/token`), send, notify and receive, acknowledgement, the delivery runs, bad input, and the
 * adapter's flow end to end over a real socket (token grant, send, poll, broadcast), as the original's
 * README and the backbone adapters use them.
 */

import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { POSTGRES_URL, probePostgres, startDispatcher, waitFor, waitForRun, type TestDispatcher } from './helpers.js';

const ADMIN = 'backboneAdmin0123456789';
const ADMIN_AUTH = { authorization: `PSK ${ADMIN}` };

const pgProblem = await probePostgres();
if (pgProblem !== null) {
  if (process.env.CI === 'true') throw new Error(`PostgreSQL is needed under CI: ${pgProblem}`);
  console.log(`communications-backbone on PostgreSQL skipped: ${pgProblem}`);
}
const pgSchema = `dispatcher_backbone_${randomBytes(4).toString('hex')}`;
const pgUrl = (() => {
  const url = new URL(POSTGRES_URL);
  url.searchParams.set('schema', pgSchema);
  return url.toString();
})();
const backends: Array<[string, string | undefined]> = [['sqlite', undefined], ...(pgProblem === null ? [['postgres', pgUrl] as [string, string]] : [])];
afterAll(async () => {
  if (pgProblem !== null) return;
  const admin = new pg.Client({ connectionString: POSTGRES_URL });
  await admin.connect();
  try {
    await admin.query(`DROP SCHEMA IF EXISTS "${pgSchema}" CASCADE`);
  } finally {
    await admin.end();
  }
});

interface Registered {
  client_id: string;
  client_name: string;
  subscription: string;
  secret: string;
}

interface Received {
  id: string;
  topic: string | null;
  body: unknown;
  sender: string;
  time: string;
  deliveries?: number;
}

const unique = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;

for (const [backend, storeUrl] of backends) {
  describe(`communications-backbone profile (${backend})`, () => {
    let t: TestDispatcher;
    let app: FastifyInstance;

    beforeAll(async () => {
      t = await startDispatcher(
        {
          auth: { keyFile: '', psk: [{ service: 'admin', key: ADMIN }], tokens: { rateLimit: { perAddress: 1000 } } },
          inboxes: { lease: '400ms', maxReceive: 500 },
          profiles: { 'communications-backbone': { maxBodyBytes: '4KiB' } },
        },
        storeUrl === undefined ? {} : { storeUrl },
      );
      app = await t.d.app();
    });
    afterAll(async () => {
      await t?.close();
    });

    const register = async (subscription: string, id = unique('client'), name = `Client ${id}`): Promise<Registered> => {
      const res = await app.inject({ method: 'POST', url: '/client', headers: { ...ADMIN_AUTH, 'content-type': 'application/json' }, payload: { client_id: id, client_name: name, subscription } });
      expect(res.statusCode, res.body).toBe(201);
      return res.json() as Registered;
    };
    const token = async (c: Pick<Registered, 'client_id' | 'secret'>): Promise<string> => {
      const res = await app.inject({ method: 'GET', url: `/token?client_id=${encodeURIComponent(c.client_id)}&secret=${encodeURIComponent(c.secret)}` });
      expect(res.statusCode, res.body).toBe(200);
      return (res.json() as { token: string }).token;
    };
    const bearer = (tok: string) => ({ authorization: `Bearer ${tok}` });
    const send = (tok: string, body: unknown) => app.inject({ method: 'POST', url: '/send', headers: { ...bearer(tok), 'content-type': 'application/json' }, payload: JSON.stringify(body) });
    const notify = (tok: string, body: unknown) => app.inject({ method: 'POST', url: '/notify', headers: { ...bearer(tok), 'content-type': 'application/json' }, payload: JSON.stringify(body) });
    const receive = async (tok: string, query = ''): Promise<Received[]> => {
      const res = await app.inject({ method: 'GET', url: `/receive${query}`, headers: bearer(tok) });
      expect(res.statusCode, res.body).toBe(200);
      return res.json() as Received[];
    };
    /** Waits until the run the send made has ended (its messages are then in the inboxes). */
    const delivered = async (res: { statusCode: number; body: string; json(): unknown }) => {
      expect(res.statusCode, res.body).toBe(200);
      const { run } = res.json() as { run: string };
      return waitForRun(t.d, run, ['success', 'failure']);
    };

    describe('clients', () => {
      it('registers a client and shows its secret once', async () => {
        const id = unique('noc-c2');
        const made = await register('soar.*.noc.#', id, 'NOC C2');
        expect(made).toEqual({ client_id: id, client_name: 'NOC C2', subscription: 'soar.*.noc.#', secret: expect.stringMatching(/^[A-Za-z0-9]{20,}$/) });
        const one = await app.inject({ method: 'GET', url: `/client/${id}`, headers: ADMIN_AUTH });
        expect(one.json()).toEqual({ client_id: id, client_name: 'NOC C2', subscription: 'soar.*.noc.#' });
        const all = await app.inject({ method: 'GET', url: '/client', headers: ADMIN_AUTH });
        expect(all.statusCode).toBe(200);
        const listed = (all.json() as Array<Record<string, unknown>>).find((c) => c.client_id === id);
        expect(listed).toEqual({ client_id: id, client_name: 'NOC C2', subscription: 'soar.*.noc.#' });
        expect(all.body).not.toContain(made.secret);
      });

      it('generates a client_id when none is given', async () => {
        const res = await app.inject({ method: 'POST', url: '/client', headers: ADMIN_AUTH, payload: { client_name: 'Anonymous', subscription: '#' } });
        expect(res.statusCode).toBe(201);
        expect((res.json() as Registered).client_id).toMatch(/^[0-9a-f-]{36}$/);
      });

      it.each([
        [{ client_name: 'x', subscription: 'a..b' }, /empty word/],
        [{ client_name: 'x', subscription: 'a.b*' }, /must be whole words/],
        [{ client_name: 'x' }, /subscription/],
        [{ subscription: '#' }, /client_name/],
        [{ client_id: 'has space', client_name: 'x', subscription: '#' }, /client_id/],
      ])('refuses a bad registration %j', async (body, message) => {
        const res = await app.inject({ method: 'POST', url: '/client', headers: ADMIN_AUTH, payload: body });
        expect(res.statusCode).toBe(400);
        expect((res.json() as { message: string; code: string }).message).toMatch(message);
        expect((res.json() as { code: string }).code).toBe('bad_request');
      });

      it('refuses a client_id that exists (409)', async () => {
        const c = await register('#');
        const res = await app.inject({ method: 'POST', url: '/client', headers: ADMIN_AUTH, payload: { client_id: c.client_id, client_name: 'again', subscription: '#' } });
        expect(res.statusCode).toBe(409);
      });

      it('lets only an administrator manage clients', async () => {
        const none = await app.inject({ method: 'GET', url: '/client' });
        expect(none.statusCode).toBe(401);
        const c = await register('#');
        const asClient = await app.inject({ method: 'GET', url: '/client', headers: bearer(await token(c)) });
        expect(asClient.statusCode).toBe(403);
        const make = await app.inject({ method: 'POST', url: '/client', headers: bearer(await token(c)), payload: { client_name: 'x', subscription: '#' } });
        expect(make.statusCode).toBe(403);
      });

      it('changes a subscription: messages follow the new pattern', async () => {
        const listener = await register('alpha.#');
        const senderC = await register('none.none');
        const tl = await token(listener);
        const ts = await token(senderC);
        const changed = await app.inject({ method: 'PATCH', url: `/client/${listener.client_id}`, headers: ADMIN_AUTH, payload: { subscription: 'beta.*' } });
        expect(changed.statusCode, changed.body).toBe(200);
        expect(changed.json()).toMatchObject({ subscription: 'beta.*' });
        await delivered(await send(ts, { topic: 'alpha.one', body: 'old pattern' }));
        await delivered(await send(ts, { topic: 'beta.two', body: 'new pattern' }));
        expect((await receive(tl)).map((m) => m.body)).toEqual(['new pattern']);
        // The token stays valid across an update.
        const renamed = await app.inject({ method: 'PUT', url: `/client/${listener.client_id}`, headers: ADMIN_AUTH, payload: { client_name: 'Renamed' } });
        expect(renamed.json()).toMatchObject({ client_name: 'Renamed', subscription: 'beta.*' });
        expect((await app.inject({ method: 'GET', url: '/receive', headers: bearer(tl) })).statusCode).toBe(200);
      });

      it('rotating the secret revokes the old tokens; the new secret works', async () => {
        const c = await register('#');
        const old = await token(c);
        const res = await app.inject({ method: 'POST', url: `/client/${c.client_id}/rotate-secret`, headers: ADMIN_AUTH });
        expect(res.statusCode).toBe(200);
        const { secret } = res.json() as { secret: string };
        expect(secret).not.toBe(c.secret);
        expect((await app.inject({ method: 'GET', url: '/receive', headers: bearer(old) })).statusCode).toBe(401);
        expect((await app.inject({ method: 'GET', url: `/token?client_id=${c.client_id}&secret=${c.secret}` })).statusCode).toBe(401);
        const fresh = await token({ client_id: c.client_id, secret });
        expect((await app.inject({ method: 'GET', url: '/receive', headers: bearer(fresh) })).statusCode).toBe(200);
      });

      it('deleting a client revokes its tokens and empties its inbox', async () => {
        const c = await register('gone.#');
        const tc = await token(c);
        const other = await token(await register('x.y'));
        await delivered(await send(other, { topic: 'gone.soon', body: 1 }));
        expect((await t.d.store.inboxes.counts([c.client_id]))[0]?.messages).toBe(1);
        const res = await app.inject({ method: 'DELETE', url: `/client/${c.client_id}`, headers: ADMIN_AUTH });
        expect(res.statusCode).toBe(200);
        expect((await app.inject({ method: 'GET', url: '/receive', headers: bearer(tc) })).statusCode).toBe(401);
        await waitFor(async () => (await t.d.store.inboxes.counts([c.client_id]))[0]?.messages ?? 0, (n) => n === 0, 5000, 'the inbox to be emptied');
        expect((await app.inject({ method: 'GET', url: `/client/${c.client_id}`, headers: ADMIN_AUTH })).statusCode).toBe(404);
      });
    });

    describe('tokens', () => {
      it('grants a token by GET query, by POST JSON and by POST form', async () => {
        const c = await register('#');
        const byGet = await app.inject({ method: 'GET', url: `/token?client_id=${c.client_id}&secret=${c.secret}` });
        const byJson = await app.inject({ method: 'POST', url: '/token', payload: { client_id: c.client_id, secret: c.secret } });
        const byForm = await app.inject({
          method: 'POST',
          url: '/token',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          payload: new URLSearchParams({ client_id: c.client_id, secret: c.secret }).toString(),
        });
        for (const res of [byGet, byJson, byForm]) {
          expect(res.statusCode, res.body).toBe(200);
          const body = res.json() as { token: string; expiry: string };
          expect(Object.keys(body).sort()).toEqual(['expiry', 'token']);
          // The profile's default lifetime: a day.
          expect(Date.parse(body.expiry) - Date.now()).toBeGreaterThan(23 * 3600_000);
          expect(Date.parse(body.expiry) - Date.now()).toBeLessThanOrEqual(24 * 3600_000 + 1000);
          expect((await app.inject({ method: 'GET', url: '/receive', headers: bearer(body.token) })).statusCode).toBe(200);
        }
      });

      it('refuses a wrong secret, an unknown client and a missing field alike, without saying which', async () => {
        const c = await register('#');
        const wrong = await app.inject({ method: 'GET', url: `/token?client_id=${c.client_id}&secret=nope` });
        const unknown = await app.inject({ method: 'GET', url: `/token?client_id=${unique('nobody')}&secret=${c.secret}` });
        expect(wrong.statusCode).toBe(401);
        expect(unknown.statusCode).toBe(401);
        expect((wrong.json() as { message: string }).message).toBe((unknown.json() as { message: string }).message);
        expect((await app.inject({ method: 'GET', url: `/token?client_id=${c.client_id}` })).statusCode).toBe(400);
      });

      it('refuses unknown and malformed bearer tokens', async () => {
        for (const authorization of ['Bearer nonsense', 'Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc', 'Token abc']) {
          const res = await app.inject({ method: 'GET', url: '/receive', headers: { authorization } });
          expect(res.statusCode, authorization).toBe(401);
          expect(res.json()).toMatchObject({ code: 'unauthorized' });
        }
        expect((await app.inject({ method: 'GET', url: '/receive' })).statusCode).toBe(401);
      });
    });

    describe('send, notify, receive', () => {
      it('delivers a topic to every matching subscriber, the sender too when its pattern matches', async () => {
        const tag = randomBytes(3).toString('hex');
        const a = await register(`soar.${tag}.noc.#`);
        const b = await register(`soar.${tag}.*.status`);
        const c = await register(`soar.${tag}.other`);
        const [ta, tb, tc] = await Promise.all([token(a), token(b), token(c)]);
        const res = await send(ta, { topic: `soar.${tag}.noc.status`, body: { platform: 'slocum', battery: 0.8 } });
        const run = await delivered(res);
        expect(run.status).toBe('success');
        expect(run.actionType).toBe('deliver');
        // Every client whose pattern matches (clients of other cases subscribed to `#` too), not c.
        const result = run.result as { delivered: number; clients: string[]; topic: string };
        expect(result.topic).toBe(`soar.${tag}.noc.status`);
        expect(result.clients).toEqual(expect.arrayContaining([a.client_id, b.client_id]));
        expect(result.clients).not.toContain(c.client_id);
        expect(result.delivered).toBe(result.clients.length);
        const [ra, rb, rc] = await Promise.all([receive(ta), receive(tb), receive(tc)]);
        expect(rc).toEqual([]);
        for (const got of [ra, rb]) {
          expect(got).toHaveLength(1);
          expect(got[0]).toEqual({ id: expect.any(String), topic: `soar.${tag}.noc.status`, body: { platform: 'slocum', battery: 0.8 }, sender: a.client_id, time: expect.any(String) });
          expect(Math.abs(Date.parse(got[0]!.time) - Date.now())).toBeLessThan(60_000);
        }
        // Popped: received once.
        expect(await receive(ta)).toEqual([]);
        // The run is the core's: read through the core API, with its event.
        const core = await app.inject({ method: 'GET', url: `/v1/runs/${run.id}`, headers: ADMIN_AUTH });
        expect(core.statusCode).toBe(200);
      });

      it('broadcasts to every client with topic null', async () => {
        const clients = await Promise.all([register('x.y.z'), register('#'), register('q')]);
        const tokens = await Promise.all(clients.map(token));
        const run = await delivered(await notify(tokens[0]!, { body: 'all hands' }));
        expect((run.result as { delivered: number }).delivered).toBeGreaterThanOrEqual(3);
        for (const [i, tok] of tokens.entries()) {
          const got = await receive(tok);
          const mine = got.filter((m) => m.body === 'all hands');
          expect(mine, `client ${i}`).toHaveLength(1);
          expect(mine[0]).toMatchObject({ topic: null, sender: clients[0]!.client_id });
        }
      });

      it('receives the oldest first, max_messages at a time (default 10)', async () => {
        const tag = randomBytes(3).toString('hex');
        const r = await register(`order.${tag}`);
        const tr = await token(r);
        const ts = await token(await register('none'));
        for (let i = 0; i < 13; i++) await delivered(await send(ts, { topic: `order.${tag}`, body: i }));
        expect((await receive(tr, '?max_messages=2')).map((m) => m.body)).toEqual([0, 1]);
        expect((await receive(tr)).map((m) => m.body)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        expect((await receive(tr, '?max_messages=100')).map((m) => m.body)).toEqual([12]);
      });

      it('with acknowledgement: leased until acknowledged, received again when not', async () => {
        const tag = randomBytes(3).toString('hex');
        const r = await register(`acked.${tag}`);
        const tr = await token(r);
        const ts = await token(await register('none'));
        await delivered(await send(ts, { topic: `acked.${tag}`, body: 'one' }));
        await delivered(await send(ts, { topic: `acked.${tag}`, body: 'two' }));
        const first = await receive(tr, '?ack=true');
        expect(first.map((m) => [m.body, m.deliveries])).toEqual([
          ['one', 1],
          ['two', 1],
        ]);
        // Hidden while leased.
        expect(await receive(tr, '?ack=true')).toEqual([]);
        const acked = await app.inject({ method: 'POST', url: '/ack', headers: bearer(tr), payload: { ids: [first[0]!.id] } });
        expect(acked.json()).toEqual({ acknowledged: 1 });
        // The lease (400 ms) ends: the unacknowledged one comes again.
        const again = await waitFor(() => receive(tr, '?ack=true'), (m) => m.length > 0, 5000, 'the lease to end');
        expect(again.map((m) => [m.id, m.body, m.deliveries])).toEqual([[first[1]!.id, 'two', 2]]);
        await app.inject({ method: 'POST', url: '/ack', headers: bearer(tr), payload: { ids: [first[1]!.id] } });
        await new Promise((resolve) => setTimeout(resolve, 500));
        expect(await receive(tr, '?ack=true')).toEqual([]);
      });

      it('never shows one client another client’s messages, nor lets it acknowledge them', async () => {
        const tag = randomBytes(3).toString('hex');
        const mine = await register(`private.${tag}`);
        const thief = await register(`elsewhere.${tag}`);
        const [tm, tt] = await Promise.all([token(mine), token(thief)]);
        await delivered(await send(tt, { topic: `private.${tag}`, body: 'secret plan' }));
        const leased = await receive(tm, '?ack=true');
        expect(leased).toHaveLength(1);
        const stolen = await app.inject({ method: 'POST', url: '/ack', headers: bearer(tt), payload: { ids: [leased[0]!.id] } });
        expect(stolen.json()).toEqual({ acknowledged: 0 });
        expect(await receive(tt)).toEqual([]);
        expect((await app.inject({ method: 'POST', url: '/ack', headers: bearer(tm), payload: { ids: [leased[0]!.id] } })).json()).toEqual({ acknowledged: 1 });
      });

      it('is the core inbox: GET /v1/inbox reads the same messages', async () => {
        const tag = randomBytes(3).toString('hex');
        const r = await register(`core.${tag}`);
        const tr = await token(r);
        await delivered(await send(tr, { topic: `core.${tag}`, body: { via: 'backbone' } }));
        const res = await app.inject({ method: 'GET', url: '/v1/inbox?max=5', headers: bearer(tr) });
        expect(res.statusCode, res.body).toBe(200);
        expect((res.json() as { data: Received[] }).data.map((m) => m.body)).toEqual([{ via: 'backbone' }]);
        // A pre-shared key has no inbox.
        expect((await app.inject({ method: 'GET', url: '/v1/inbox', headers: ADMIN_AUTH })).statusCode).toBe(403);
      });

      it('delivers events of its type from the core API too (any input reaches the inboxes)', async () => {
        const tag = randomBytes(3).toString('hex');
        const r = await register(`bus.${tag}.#`);
        const tr = await token(r);
        const res = await app.inject({
          method: 'POST',
          url: '/v1/events',
          headers: { ...ADMIN_AUTH, 'content-type': 'application/cloudevents+json' },
          payload: { specversion: '1.0', id: unique('e'), source: 'urn:kafka:observations', type: 'communications-backbone.message', subject: `bus.${tag}.obs`, data: { depth: 12 } },
        });
        expect(res.statusCode, res.body).toBe(202);
        const got = await waitFor(() => receive(tr), (m) => m.length > 0, 5000, 'the delivery');
        expect(got[0]).toMatchObject({ topic: `bus.${tag}.obs`, body: { depth: 12 }, sender: 'urn:kafka:observations' });
      });
    });

    describe('bad input', () => {
      let tok: string;
      beforeAll(async () => {
        tok = await token(await register('bad.#'));
      });

      it.each([
        [{ topic: 'a.*.b', body: 1 }, 'bad_request', /belong in subscriptions/],
        [{ topic: 'a..b', body: 1 }, 'bad_request', /empty word/],
        [{ topic: '', body: 1 }, 'bad_request', /topic/],
        [{ topic: 12, body: 1 }, 'bad_request', /topic/],
        [{ body: 1 }, 'bad_request', /topic: missing/],
        [{ topic: 'a.b' }, 'bad_request', /body: the message is missing/],
        [{ topic: 'a.b', body: null }, 'bad_request', /empty/],
        [{ topic: 'a.b', body: '' }, 'bad_request', /empty/],
        [{ topic: 'a.b', body: 'x'.repeat(5000) }, 'payload_too_large', /larger than 4096/],
      ])('refuses to send a bad message (case %#)', async (body, code, message) => {
        const res = await send(tok, body);
        expect(res.statusCode).toBe(code === 'payload_too_large' ? 413 : 400);
        expect(res.json()).toMatchObject({ code });
        expect((res.json() as { message: string }).message).toMatch(message);
      });

      it('refuses a body that is not JSON, or not an object', async () => {
        for (const payload of ['{"topic":', '[1,2]', '"text"']) {
          const res = await app.inject({ method: 'POST', url: '/send', headers: { ...bearer(tok), 'content-type': 'application/json' }, payload });
          expect(res.statusCode, payload).toBe(400);
        }
        const xml = await app.inject({ method: 'POST', url: '/send', headers: { ...bearer(tok), 'content-type': 'application/xml' }, payload: '<a/>' });
        expect(xml.statusCode).toBe(415);
      });

      it.each(['0', '-1', '501', 'ten', '1.5'])('refuses max_messages=%s', async (value) => {
        const res = await app.inject({ method: 'GET', url: `/receive?max_messages=${value}`, headers: bearer(tok) });
        expect(res.statusCode).toBe(400);
        expect((res.json() as { message: string }).message).toMatch(/max_messages: an integer from 1 to 500/);
      });

      it('refuses a malformed acknowledgement', async () => {
        for (const payload of [{}, { ids: [] }, { ids: 'x' }, { ids: [1] }]) {
          const res = await app.inject({ method: 'POST', url: '/ack', headers: bearer(tok), payload });
          expect(res.statusCode, JSON.stringify(payload)).toBe(400);
        }
      });

      it('is still serving after all of it', async () => {
        expect((await app.inject({ method: 'GET', url: '/receive', headers: bearer(tok) })).statusCode).toBe(200);
      });
    });

    describe('the served OpenAPI document', () => {
      it('has every route of the profile with its request and response schemas', async () => {
        const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json() as { paths: Record<string, Record<string, { responses?: Record<string, unknown>; parameters?: unknown[] }>> };
        for (const [path, method] of [
          ['/client', 'post'],
          ['/client', 'get'],
          ['/client/{id}', 'get'],
          ['/client/{id}', 'patch'],
          ['/client/{id}', 'delete'],
          ['/client/{id}/rotate-secret', 'post'],
          ['/token', 'get'],
          ['/token', 'post'],
          ['/send', 'post'],
          ['/notify', 'post'],
          ['/receive', 'get'],
          ['/ack', 'post'],
          ['/ws', 'get'],
        ] as const) {
          const op = doc.paths[path]?.[method];
          expect(op, `${method} ${path}`).toBeDefined();
          expect(Object.keys(op!.responses ?? {}).length, `${method} ${path} responses`).toBeGreaterThan(0);
        }
        expect(JSON.stringify(doc.paths['/receive']!.get!.parameters)).toContain('max_messages');
      });
    });
  });
}
