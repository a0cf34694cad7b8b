/**
 * The Communications Backbone profile over real sockets: the backbone adapter's flow end to end over HTTP
 * (register, `soar-config.json`, token grant, send, poll, broadcast), the WebSocket push endpoint (handshake,
 * push, send, acknowledgement, and every way a socket is refused), `dispatcher backbone client-config`,
 * full inboxes (`refuse`, then the retry; `drop-oldest`, counted), the original's environment variables, and
 * a property test of topic routing against an independent model.
 */

import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { loadConfig } from '../src/config/load.js';
import { buildProgram } from '../src/cli/program.js';
import { startDispatcher, waitFor, waitForRun, type TestDispatcher } from './helpers.js';

const ADMIN = 'backboneAdmin0123456789';

interface Registered {
  client_id: string;
  client_name: string;
  subscription: string;
  secret: string;
}

/** A dispatcher listening on a free port, and the admin's fetch. */
async function listening(overrides: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = {}): Promise<{ t: TestDispatcher; url: string }> {
  const t = await startDispatcher(
    {
    server: { port: 0, host: '127.0.0.1' },
    auth: { keyFile: '', psk: [{ service: 'admin', key: ADMIN }], tokens: { rateLimit: { perAddress: 1000 } } },
    ...overrides,
    profiles: { 'communications-backbone': { websocket: { handshakeTimeout: '500ms', maxMessagesPerSecond: 20, recheck: '300ms' }, ...((overrides.profiles as Record<string, Record<string, unknown>> | undefined)?.['communications-backbone'] ?? {}) } },
    },
    { env },
  );
  const address = await t.d.listen();
  return { t, url: address.replace('0.0.0.0', '127.0.0.1') };
}

async function call(url: string, path: string, init: { method?: string; body?: unknown; token?: string; psk?: string } = {}): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {};
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  if (init.psk !== undefined) headers.authorization = `PSK ${init.psk}`;
  const res = await fetch(`${url}${path}`, { method: init.method ?? 'GET', headers, ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }) });
  const text = await res.text();
  return { status: res.status, body: text === '' ? null : JSON.parse(text) };
}

let n = 0;
const id = (prefix: string) => `${prefix}-${process.pid}-${++n}`;

describe('communications-backbone over real sockets', () => {
  let t: TestDispatcher;
  let url: string;

  beforeAll(async () => {
    ({ t, url } = await listening());
  });
  afterAll(async () => {
    await t?.close();
  });

  const register = async (subscription: string, clientId = id('c')): Promise<Registered> => {
    const res = await call(url, '/client', { method: 'POST', psk: ADMIN, body: { client_id: clientId, client_name: `Name of ${clientId}`, subscription } });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body as Registered;
  };
  const tokenOf = async (c: { client_id: string; secret: string }) => {
    const res = await call(url, `/token?client_id=${encodeURIComponent(c.client_id)}&secret=${encodeURIComponent(c.secret)}`);
    expect(res.status).toBe(200);
    return res.body.token as string;
  };

  it('plays the adapter’s flow: config file, token grant, send, poll, broadcast', async () => {
    // The administrator registers two clients, as `POST /client` in the README, and hands each its soar-config.json.
    const c2 = await register('soar.*.noc.#', id('noc-c2'));
    const sfmc = await register('soar.*.noc.slocum.#', id('noc-sfmc'));
    const configs = [c2, sfmc].map((c) => ({ api: url, client_id: c.client_id, client_name: c.client_name, subscription: c.subscription, secret: c.secret }));
    // Each adapter: the client credentials grant from its config, then send, poll and broadcast with the bearer token.
    const adapters = await Promise.all(
      configs.map(async (config) => {
        const res = await fetch(`${config.api}/token?client_id=${config.client_id}&secret=${config.secret}`);
        expect(res.status).toBe(200);
        const { token, expiry } = (await res.json()) as { token: string; expiry: string };
        expect(Date.parse(expiry)).toBeGreaterThan(Date.now());
        return { config, token };
      }),
    );
    const [a, b] = adapters as [(typeof adapters)[0], (typeof adapters)[0]];
    const mission = { message_type: 'mission_plan', plan: [{ lat: 50.1, lon: -4.2 }] };
    const sent = await call(url, '/send', { method: 'POST', token: a.token, body: { topic: 'soar.eu.noc.slocum.mission', body: mission } });
    expect(sent.status).toBe(200);
    expect(sent.body).toEqual({ id: expect.any(String), run: expect.any(String) });
    // Polling, as the adapters do, until it arrives.
    const poll = async (token: string) => {
      const res = await call(url, '/receive?max_messages=10', { token });
      expect(res.status).toBe(200);
      return res.body as Array<{ topic: string | null; body: unknown; sender: string }>;
    };
    const atB = await waitFor(() => poll(b.token), (m) => m.length > 0, 5000, 'the message at noc-sfmc');
    expect(atB).toEqual([{ id: expect.any(String), topic: 'soar.eu.noc.slocum.mission', body: mission, sender: a.config.client_id, time: expect.any(String) }]);
    // The sender's own pattern (soar.*.noc.#) matches too.
    const atA = await waitFor(() => poll(a.token), (m) => m.length > 0, 5000, 'the message at noc-c2');
    expect(atA.map((m) => m.body)).toEqual([mission]);
    // A broadcast reaches both, with topic null.
    expect((await call(url, '/notify', { method: 'POST', token: b.token, body: { body: { message_type: 'acknowledgement' } } })).status).toBe(200);
    for (const adapter of [a, b]) {
      const got = await waitFor(() => poll(adapter.token), (m) => m.length > 0, 5000, 'the broadcast');
      expect(got.filter((m) => m.topic === null).map((m) => m.body)).toEqual([{ message_type: 'acknowledgement' }]);
    }
    // The deliveries are runs of the core, audited: the audit log has the sends.
    const audit = await call(url, `/v1/audit?filter[action]=messages.send&filter[actor]=client:${a.config.client_id}`, { psk: ADMIN });
    expect(audit.status).toBe(200);
    expect(audit.body.data.length).toBe(1);
    const run = await call(url, `/v1/runs/${sent.body.run}`, { psk: ADMIN });
    expect(run.body).toMatchObject({ action_type: 'deliver', status: 'success' });
  });

  it('delivers to the backbone’s clients only, not to other clients of the tenant; refuses a client id RabbitMQ would refuse', async () => {
    const member = await register('only.#', id('member'));
    const token = await tokenOf(member);
    const { orgId } = (await t.d.store.access.getClient(member.client_id))!;
    // A client of the tenant that is not the backbone's (made through the core API, by another profile, …).
    const outsider = id('outsider');
    await t.d.store.access.createClient({ id: outsider, name: outsider, service: 'another-service', orgId, permissions: [], secretHash: 'unused', secretVersion: 1, createdAt: 0, updatedAt: 0, subscription: '#' });
    t.d.inboxes.clientsChanged(orgId);
    const sent = await call(url, '/send', { method: 'POST', token, body: { topic: 'only.backbone', body: 'topic' } });
    const told = await call(url, '/notify', { method: 'POST', token, body: { body: 'broadcast' } });
    await waitForRun(t.d, sent.body.run, ['success']);
    await waitForRun(t.d, told.body.run, ['success']);
    const got = await waitFor(async () => (await call(url, '/receive', { token })).body as Array<{ body: unknown }>, (m) => m.length >= 2, 5000, 'both at the member');
    expect(got.map((m) => m.body).sort()).toEqual(['broadcast', 'topic']);
    expect(await t.d.inboxes.receive(outsider, { max: 10 })).toEqual([]);

    // `message` for `body`, as the original's command-line client wrote it; a topic is counted in bytes.
    const viaMessage = await call(url, '/send', { method: 'POST', token, body: { topic: 'only.cli', message: 'via message' } });
    expect(viaMessage.status).toBe(200);
    await waitForRun(t.d, viaMessage.body.run, ['success']);
    expect((await call(url, '/receive', { token })).body.map((m: { body: unknown }) => m.body)).toEqual(['via message']);
    const wide = await call(url, '/send', { method: 'POST', token, body: { topic: `only.${'é'.repeat(126)}`, body: 'x' } });
    expect([wide.status, wide.body.message]).toEqual([400, 'topic: a dotted topic of 1 to 255 bytes (UTF-8), e.g. soar.noc.slocum.status']);

    const refused = await call(url, '/client', { method: 'POST', psk: ADMIN, body: { client_id: 'amq.reserved', client_name: 'Reserved', subscription: 'x' } });
    expect(refused.status).toBe(400);
    expect(refused.body.message).toMatch(/client_id: client id "amq\.reserved" starts with "amq\.", which RabbitMQ reserves/);
    expect(await t.d.store.access.getClient('amq.reserved')).toBeNull();
  });

  describe('the WebSocket', () => {
    const open = (path = '/ws') =>
      new Promise<{ ws: WebSocket; frames: any[]; closed: Promise<{ code: number; reason: string }> }>((resolve, reject) => {
        const ws = new WebSocket(`${url.replace('http', 'ws')}${path}`);
        const frames: any[] = [];
        const closed = new Promise<{ code: number; reason: string }>((done) => ws.on('close', (code, reason) => done({ code, reason: reason.toString() })));
        ws.on('message', (data) => frames.push(JSON.parse(data.toString())));
        ws.on('open', () => resolve({ ws, frames, closed }));
        ws.on('error', reject);
      });

    it('pushes inbox messages as they arrive, and publishes what the client sends', async () => {
      const tag = id('ws');
      const me = await register(`${tag}.#`);
      const other = await register('nothing.here');
      const { ws, frames } = await open();
      ws.send(JSON.stringify({ token: await tokenOf(me) }));
      await waitFor(async () => frames.length, (k) => k > 0, 3000, 'ready');
      expect(frames[0]).toEqual({ type: 'ready', client_id: me.client_id, ack: false });
      // Sent over HTTP by another client: pushed.
      await call(url, '/send', { method: 'POST', token: await tokenOf(other), body: { topic: `${tag}.status`, body: { ok: true } } });
      await waitFor(async () => frames.filter((f) => f.type === 'message').length, (k) => k >= 1, 5000, 'the push');
      expect(frames.find((f) => f.type === 'message')).toMatchObject({ type: 'message', topic: `${tag}.status`, body: { ok: true }, sender: other.client_id });
      // Sent over the socket: answered once committed, and (its own pattern matches) pushed back.
      ws.send(JSON.stringify({ type: 'send', topic: `${tag}.echo`, body: 'over the socket', ref: 7 }));
      await waitFor(async () => frames.filter((f) => f.type === 'message').length, (k) => k >= 2, 5000, 'the echo');
      expect(frames.find((f) => f.type === 'sent')).toMatchObject({ type: 'sent', id: expect.any(String), ref: 7 });
      expect(frames.filter((f) => f.type === 'message')[1]).toMatchObject({ topic: `${tag}.echo`, body: 'over the socket', sender: me.client_id });
      // A bad frame is answered, and the socket stays open.
      ws.send(JSON.stringify({ type: 'send', topic: 'a.*', body: 1, ref: 'bad' }));
      ws.send('not json');
      await waitFor(async () => frames.filter((f) => f.type === 'error').length, (k) => k >= 2, 3000, 'the errors');
      expect(frames.find((f) => f.type === 'error' && f.ref === 'bad')).toMatchObject({ code: 'bad_request' });
      expect(frames.find((f) => f.type === 'error' && f.ref === undefined)).toMatchObject({ code: 'invalid_json' });
      expect(ws.readyState).toBe(WebSocket.OPEN);
      // Popped as pushed: nothing is left to receive.
      expect((await call(url, '/receive', { token: await tokenOf(me) })).body).toEqual([]);
      ws.close();
    });

    it('with ack: leases what it pushes until acknowledged', async () => {
      const tag = id('wsack');
      const me = await register(`${tag}`);
      const token = await tokenOf(me);
      const { ws, frames } = await open();
      ws.send(JSON.stringify({ token, ack: true }));
      await waitFor(async () => frames.length, (k) => k > 0, 3000, 'ready');
      expect(frames[0]).toMatchObject({ type: 'ready', ack: true });
      await call(url, '/send', { method: 'POST', token, body: { topic: tag, body: 'keep me' } });
      await waitFor(async () => frames.filter((f) => f.type === 'message').length, (k) => k >= 1, 5000, 'the push');
      const pushed = frames.find((f) => f.type === 'message');
      expect(pushed.deliveries).toBe(1);
      expect((await t.d.store.inboxes.counts([me.client_id]))[0]?.messages).toBe(1);
      ws.send(JSON.stringify({ type: 'ack', ids: [pushed.id], ref: 1 }));
      await waitFor(async () => frames.filter((f) => f.type === 'acked').length, (k) => k >= 1, 3000, 'the ack');
      expect(frames.find((f) => f.type === 'acked')).toEqual({ type: 'acked', acknowledged: 1, ref: 1 });
      expect((await t.d.store.inboxes.counts([me.client_id]))[0]?.messages ?? 0).toBe(0);
      ws.close();
    });

    it('survives what a client sends: a deeply nested ref or body, a second handshake', async () => {
      const me = await register('deep');
      const token = await tokenOf(me);
      const s = await open();
      s.ws.send(JSON.stringify({ token }));
      s.ws.send(JSON.stringify({ token }));
      await waitFor(async () => s.frames, (f) => f.some((x) => x.type === 'ready'), 5000, 'the handshake');
      expect(s.frames.filter((f) => f.type === 'ready')).toHaveLength(1);
      const deep = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
      s.ws.send(`{"type":"x","ref":${deep(6000)}}`);
      s.ws.send(`{"type":"send","topic":"deep","body":${deep(5000)},"ref":"r2"}`);
      const answers = await waitFor(async () => s.frames.filter((f) => f.type === 'error'), (e) => e.length >= 3, 5000, 'the answers');
      expect(answers.slice(-2)).toEqual([
        { type: 'error', code: 'bad_request', message: 'unknown message type "x": send, notify or ack' },
        { type: 'error', code: 'too_deep', message: 'body: the message nests deeper than 31 levels', ref: 'r2' },
      ]);
      // Still served: the same socket sends.
      s.ws.send(JSON.stringify({ type: 'send', topic: 'deep', body: 'fine', ref: 'r3' }));
      await waitFor(async () => s.frames, (f) => f.some((x) => x.type === 'sent' && x.ref === 'r3'), 5000, 'the send');
      s.ws.close();
      const http = await call(url, '/send', { method: 'POST', token, body: JSON.parse(`{"topic":"deep","body":${deep(100)}}`) });
      expect([http.status, http.body.code]).toEqual([400, 'too_deep']);
    });

    it('closes with 4401 for a bad token, 4408 without a handshake, 1008 for a flood, 1009 for a frame too large', async () => {
      const bad = await open();
      bad.ws.send(JSON.stringify({ token: 'not-a-token' }));
      expect((await bad.closed).code).toBe(4401);
      expect(bad.frames[0]).toMatchObject({ type: 'error', code: 'unauthorized' });

      const silent = await open();
      expect((await silent.closed).code).toBe(4408);

      const me = await register('flood');
      const flood = await open();
      flood.ws.send(JSON.stringify({ token: await tokenOf(me) }));
      await waitFor(async () => flood.frames.length, (k) => k > 0, 3000, 'ready');
      // 20 per second, 100 at once at most.
      for (let i = 0; i < 150; i++) flood.ws.send(JSON.stringify({ type: 'ack', ids: ['x'] }));
      expect((await flood.closed).code).toBe(1008);

      const big = await open();
      big.ws.send(JSON.stringify({ token: 'x'.repeat(300 * 1024) }));
      expect((await big.closed).code).toBe(1009);

      // The server is still there.
      expect((await call(url, '/client', { psk: ADMIN })).status).toBe(200);
    });

    it('closes a socket whose client is deleted (at its next check) and refuses its token at once', async () => {
      const me = await register('gone');
      const token = await tokenOf(me);
      const open1 = await open();
      open1.ws.send(JSON.stringify({ token }));
      await waitFor(async () => open1.frames, (f) => f.some((x) => x.type === 'ready'), 5000, 'the handshake');
      await call(url, `/client/${me.client_id}`, { method: 'DELETE', psk: ADMIN });
      // The open socket, at its next check (websocket.recheck: 300ms here).
      expect((await open1.closed).code).toBe(4401);
      const s = await open();
      s.ws.send(JSON.stringify({ token }));
      expect((await s.closed).code).toBe(4401);
    });
  });

  describe('dispatcher backbone client-config', () => {
    let dir: string;
    const env = { ...process.env };
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'backbone-cli-'));
      process.env.DISPATCHER_URL = url;
      process.env.DISPATCHER_PSK = ADMIN;
      delete process.env.DISPATCHER_TOKEN;
    });
    afterAll(() => {
      process.env = env;
      rmSync(dir, { recursive: true, force: true });
    });

    /** `dispatcher backbone client-config …`, through the program's own parsing. */
    const clientConfig = (...args: string[]) => buildProgram().parseAsync(['node', 'dispatcher', 'backbone', 'client-config', ...args]);

    it('creates a client and writes the soar-config.json an adapter reads; the secret works', async () => {
      const file = join(dir, 'soar-config.json');
      const clientId = id('cli');
      await clientConfig(clientId, '--create', '--name', 'CLI Client', '--subscription', 'soar.#', '-o', file, '--api', 'https://backbone.example.org/');
      const config = JSON.parse(readFileSync(file, 'utf8'));
      expect(config).toEqual({ api: 'https://backbone.example.org', client_id: clientId, client_name: 'CLI Client', subscription: 'soar.#', secret: expect.any(String) });
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(await tokenOf(config)).toMatch(/\./);

      // Without --create or --rotate: no secret to give.
      const again = join(dir, 'again.json');
      await clientConfig(clientId, '-o', again);
      expect(JSON.parse(readFileSync(again, 'utf8'))).toEqual({ api: url, client_id: clientId, client_name: 'CLI Client', subscription: 'soar.#' });

      // --rotate: a new secret, the old one refused.
      const rotated = join(dir, 'rotated.json');
      await clientConfig(clientId, '--rotate', '-o', rotated);
      const fresh = JSON.parse(readFileSync(rotated, 'utf8'));
      expect(fresh.secret).not.toBe(config.secret);
      expect((await call(url, `/token?client_id=${clientId}&secret=${config.secret}`)).status).toBe(401);
      expect(await tokenOf(fresh)).toMatch(/\./);
    });

    it('says what went wrong for an unknown client and for missing options', async () => {
      await expect(clientConfig(id('nobody'), '-o', join(dir, 'x.json'))).rejects.toThrow(/404|no client/);
      await expect(clientConfig('x', '--create', '-o', '-')).rejects.toThrow(/--name and --subscription/);
    });
  });
});

describe('communications-backbone: full inboxes', () => {
  it('refuse: the run fails for the full inbox, and its retry delivers once the client has received', async () => {
    const { t, url } = await listening({ inboxes: { maxMessages: 2, whenFull: 'refuse' } });
    try {
      const reg = await call(url, '/client', { method: 'POST', psk: ADMIN, body: { client_id: 'small', client_name: 'Small', subscription: 'fill' } });
      const token = (await call(url, `/token?client_id=small&secret=${reg.body.secret}`)).body.token as string;
      for (const i of [1, 2]) await waitForRun(t.d, (await call(url, '/send', { method: 'POST', token, body: { topic: 'fill', body: i } })).body.run, ['success']);
      const third = await call(url, '/send', { method: 'POST', token, body: { topic: 'fill', body: 3 } });
      const failing = await waitFor(() => t.d.store.getAttempts(third.body.run), (a) => a.length > 0, 5000, 'the first attempt');
      expect(failing[0]).toMatchObject({ errorCode: 'inbox_full' });
      expect((await t.d.store.getRun(third.body.run))?.status).toBe('queued');
      // The client reads; the retry (1 s later) fits.
      expect((await call(url, '/receive', { token })).body.map((m: { body: number }) => m.body)).toEqual([1, 2]);
      await waitForRun(t.d, third.body.run, ['success'], 10_000);
      expect((await call(url, '/receive', { token })).body.map((m: { body: number }) => m.body)).toEqual([3]);
      const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: `PSK ${ADMIN}` } })).text();
      expect(metrics).toMatch(/dispatcher_inbox_messages_total\{outcome="refused"\} 1/);
    } finally {
      await t.close();
    }
  });

  it('drop-oldest: the oldest make room, counted', async () => {
    const { t, url } = await listening({ inboxes: { maxMessages: 2, whenFull: 'drop-oldest' } });
    try {
      const reg = await call(url, '/client', { method: 'POST', psk: ADMIN, body: { client_id: 'small', client_name: 'Small', subscription: 'fill' } });
      const token = (await call(url, `/token?client_id=small&secret=${reg.body.secret}`)).body.token as string;
      for (const i of [1, 2, 3, 4]) {
        const run = await waitForRun(t.d, (await call(url, '/send', { method: 'POST', token, body: { topic: 'fill', body: i } })).body.run, ['success']);
        if (i > 2) expect(run.result).toMatchObject({ dropped: { small: 1 } });
      }
      expect((await call(url, '/receive', { token })).body.map((m: { body: number }) => m.body)).toEqual([3, 4]);
      const metrics = await (await fetch(`${url}/metrics`, { headers: { authorization: `PSK ${ADMIN}` } })).text();
      expect(metrics).toMatch(/dispatcher_inbox_messages_total\{outcome="dropped"\} 2/);
    } finally {
      await t.close();
    }
  });
});

describe('communications-backbone: the original’s environment variables', () => {
  const on = { profiles: { 'communications-backbone': {} } };

  it('reads SOAR_TOKEN_LIFETIME (hours) and SOAR_TOKEN_SECRET while the profile is on', async () => {
    const config = await loadConfig({ env: { SOAR_TOKEN_LIFETIME: '2', SOAR_TOKEN_SECRET: 'a-secret-of-enough-length-0123456789' }, overrides: on as never });
    expect(config.profiles['communications-backbone']).toMatchObject({ token: { lifetime: 7_200_000, secret: 'a-secret-of-enough-length-0123456789' } });
  });

  it('leaves them alone while the profile is off, and names the variable when it does not parse', async () => {
    const off = await loadConfig({ env: { SOAR_TOKEN_LIFETIME: 'soon' } });
    expect(off.profiles['communications-backbone']).toBeUndefined();
    await expect(loadConfig({ env: { SOAR_TOKEN_LIFETIME: 'soon' }, overrides: on as never })).rejects.toThrow(/SOAR_TOKEN_LIFETIME.*must be a number/s);
  });

  it('issues tokens for SOAR_TOKEN_LIFETIME hours, signed with SOAR_TOKEN_SECRET', async () => {
    // The original's variables, as its deployment sets them: the lifetime in hours.
    const { t, url } = await listening({}, { SOAR_TOKEN_LIFETIME: '2', SOAR_TOKEN_SECRET: 'a-secret-of-enough-length-0123456789' });
    try {
      const reg = await call(url, '/client', { method: 'POST', psk: ADMIN, body: { client_name: 'Timed', subscription: '#' } });
      const got = await call(url, `/token?client_id=${reg.body.client_id}&secret=${reg.body.secret}`);
      const left = Date.parse(got.body.expiry) - Date.now();
      expect(left).toBeGreaterThan(2 * 3600_000 - 60_000);
      expect(left).toBeLessThanOrEqual(2 * 3600_000 + 1000);
      // Its own secret: the core's token endpoint's tokens are not its tokens, and the other way round.
      expect((await call(url, '/receive', { token: got.body.token })).status).toBe(200);
      expect((await call(url, '/v1/inbox', { token: got.body.token })).status).toBe(401);
    } finally {
      await t.close();
    }
  });
});

describe('communications-backbone: tokens end', () => {
  it('refuses a token once it expired, and limits grants per address', { timeout: 20_000 }, async () => {
    const { t, url } = await listening({
      auth: { keyFile: '', psk: [{ service: 'admin', key: ADMIN }], tokens: { rateLimit: { perAddress: 5, perClient: 0 } } },
      profiles: { 'communications-backbone': { token: { lifetime: '1s' } } },
    });
    try {
      const reg = await call(url, '/client', { method: 'POST', psk: ADMIN, body: { client_name: 'Brief', subscription: '#' } });
      const got = await call(url, `/token?client_id=${reg.body.client_id}&secret=${reg.body.secret}`);
      expect((await call(url, '/receive', { token: got.body.token })).status).toBe(200);
      // Past its expiry and the 5 s of clock tolerance tokens are given.
      await new Promise((resolve) => setTimeout(resolve, 7100));
      const late = await call(url, '/receive', { token: got.body.token });
      expect(late.status).toBe(401);
      expect(late.body.message).toMatch(/expired/);
      // Four more grants, then the address is refused for the window.
      const codes: number[] = [];
      for (let i = 0; i < 6; i++) codes.push((await call(url, `/token?client_id=${reg.body.client_id}&secret=${reg.body.secret}`)).status);
      expect(codes).toEqual([200, 200, 200, 200, 429, 429]);
    } finally {
      await t.close();
    }
  });
});

describe('communications-backbone: the RabbitMQ layout through the profile', () => {
  const AMQP = process.env.DISPATCHER_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
  let problem: string | null = null;
  beforeAll(async () => {
    const amqp = await import('amqplib');
    try {
      const c = await amqp.connect(AMQP);
      await c.close();
    } catch (err) {
      problem = `RabbitMQ at ${AMQP}: ${(err as Error).message}`;
      if (process.env.CI === 'true') throw new Error(`RabbitMQ is needed under CI: ${problem}`);
      console.log(`the profile's RabbitMQ layout skipped: ${problem}`);
    }
  });

  it('declares the client queues, mirrors deliveries into them, and takes outbox messages in', async (ctx) => {
    if (problem !== null) return ctx.skip();
    const amqp = await import('amqplib');
    const suffix = `${process.pid}-${Date.now().toString(36)}`;
    const publishExchange = `bb-publish-${suffix}`;
    const broadcastExchange = `bb-broadcast-${suffix}`;
    const { t, url } = await listening({ profiles: { 'communications-backbone': { amqp: { url: AMQP, publishExchange, broadcastExchange } } } });
    const conn = await amqp.connect(AMQP);
    const ch = await conn.createChannel();
    const a = `bb-a-${suffix}`;
    const b = `bb-b-${suffix}`;
    try {
      const ra = (await call(url, '/client', { method: 'POST', psk: ADMIN, body: { client_id: a, client_name: 'A', subscription: 'mirror.#' } })).body;
      const rb = (await call(url, '/client', { method: 'POST', psk: ADMIN, body: { client_id: b, client_name: 'B', subscription: 'other' } })).body;
      // Declared as the client was registered.
      await waitFor(async () => ch.checkQueue(`${a}-inbox`).then(() => true, () => false), (ok) => ok, 5000, 'the inbox queue');
      for (const q of [`${a}-outbox`, `${a}-broadcast`, `${b}-inbox`]) expect((await ch.checkQueue(q)).queue).toBe(q);
      // A delivery is mirrored into the matching inbox queue.
      const tb = (await call(url, `/token?client_id=${b}&secret=${rb.secret}`)).body.token;
      await call(url, '/send', { method: 'POST', token: tb, body: { topic: 'mirror.one', body: { n: 1 } } });
      const mirrored = await waitFor(() => ch.get(`${a}-inbox`, { noAck: true }), (m) => m !== false, 5000, 'the mirrored message');
      expect(JSON.parse((mirrored as { content: Buffer }).content.toString())).toMatchObject({ topic: 'mirror.one', body: { n: 1 }, sender: b });
      expect(await ch.get(`${b}-inbox`, { noAck: true })).toBe(false);
      // What another system writes to b's outbox is b's /send: it reaches a's inbox in the store.
      ch.sendToQueue(`${b}-outbox`, Buffer.from(JSON.stringify({ topic: 'mirror.two', body: 'from the queue' })), { persistent: true });
      const ta = (await call(url, `/token?client_id=${a}&secret=${ra.secret}`)).body.token;
      const got = await waitFor(async () => (await call(url, '/receive', { token: ta })).body as Array<{ body: unknown }>, (m) => m.some((x) => x.body === 'from the queue'), 5000, 'the outbox message');
      expect(got.find((x) => x.body === 'from the queue')).toMatchObject({ topic: 'mirror.two', sender: b });
      // Not JSON: a dead letter, named by its queue.
      ch.sendToQueue(`${b}-outbox`, Buffer.from('not json'));
      const dead = await waitFor(() => t.d.store.listDeadLetters({ limit: 10, offset: 0 }), (l) => l.items.some((d) => d.source === `amqp://${b}-outbox`), 5000, 'the dead letter');
      expect(dead.items.find((d) => d.source === `amqp://${b}-outbox`)?.raw.toString()).toBe('not json');
      // Deleting a client deletes its queues.
      await call(url, `/client/${a}`, { method: 'DELETE', psk: ADMIN });
      await waitFor(async () => {
        const probe = await conn.createChannel();
        probe.on('error', () => {});
        return probe.checkQueue(`${a}-inbox`).then(
          async () => {
            await probe.close();
            return true;
          },
          () => false,
        );
      }, (exists) => !exists, 5000, 'the queues to go');
    } finally {
      await t.close();
      const cleanup = await conn.createChannel();
      cleanup.on('error', () => {});
      for (const q of [`${a}-inbox`, `${a}-outbox`, `${a}-broadcast`, `${b}-inbox`, `${b}-outbox`, `${b}-broadcast`]) await cleanup.deleteQueue(q).catch(() => {});
      await cleanup.deleteExchange(publishExchange).catch(() => {});
      await cleanup.deleteExchange(broadcastExchange).catch(() => {});
      await conn.close().catch(() => {});
    }
  });
});

describe('communications-backbone: the RabbitMQ copy of a retried delivery', () => {
  const AMQP = process.env.DISPATCHER_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

  it('is published once: a retry that fills an inbox that was full puts no second copy in the other queues', async (ctx) => {
    const amqp = await import('amqplib');
    const conn = await amqp.connect(AMQP).catch((err: Error) => {
      if (process.env.CI === 'true') throw new Error(`RabbitMQ is needed under CI: ${err.message}`);
      console.log(`the RabbitMQ copy of a retry skipped: RabbitMQ at ${AMQP}: ${err.message}`);
      return null;
    });
    if (conn === null) return ctx.skip();
    const suffix = `${process.pid}-${Date.now().toString(36)}`;
    const publishExchange = `bb-publish-r-${suffix}`;
    const broadcastExchange = `bb-broadcast-r-${suffix}`;
    const { t, url } = await listening({ inboxes: { maxMessages: 1, whenFull: 'refuse' }, profiles: { 'communications-backbone': { amqp: { url: AMQP, publishExchange, broadcastExchange } } } });
    const ch = await conn.createChannel();
    ch.on('error', () => {});
    const small = `bb-small-${suffix}`;
    const other = `bb-other-${suffix}`;
    try {
      const rs = (await call(url, '/client', { method: 'POST', psk: ADMIN, body: { client_id: small, client_name: 'Small', subscription: 'dup' } })).body;
      await call(url, '/client', { method: 'POST', psk: ADMIN, body: { client_id: other, client_name: 'Other', subscription: 'dup' } });
      // Checked on a channel of its own: a queue not there yet closes the channel that asked.
      const exists = async (queue: string) => {
        const probe = await conn.createChannel();
        probe.on('error', () => {});
        return probe.checkQueue(queue).then(
          async () => {
            await probe.close();
            return true;
          },
          () => false,
        );
      };
      await waitFor(async () => (await exists(`${other}-inbox`)) && (await exists(`${small}-inbox`)), (ok) => ok, 5000, 'the inbox queues');
      const token = (await call(url, `/token?client_id=${small}&secret=${rs.secret}`)).body.token as string;
      await waitForRun(t.d, (await call(url, '/send', { method: 'POST', token, body: { topic: 'dup', body: 1 } })).body.run, ['success']);
      // Both inboxes in the store hold 1 (the most they take): 2 is refused for both, then taken by "small" only
      // after it reads, and "other" still refuses it. Make room at "other" too, so that the retry fills both.
      const second = (await call(url, '/send', { method: 'POST', token, body: { topic: 'dup', body: 2 } })).body.run as string;
      await waitFor(() => t.d.store.getAttempts(second), (a) => a.length > 0, 5000, 'the first attempt');
      await t.d.inboxes.receive(other, { max: 10 });
      await waitFor(() => t.d.store.getAttempts(second), (a) => a.length > 1, 10_000, 'the retry');
      await t.d.inboxes.receive(small, { max: 10 });
      await waitForRun(t.d, second, ['success'], 15_000);
      // Each queue has each message once.
      const bodies = async (queue: string) => {
        const out: unknown[] = [];
        for (;;) {
          const m = await ch.get(queue, { noAck: true });
          if (m === false) return out;
          out.push(JSON.parse(m.content.toString()).body);
        }
      };
      await new Promise((r) => setTimeout(r, 300));
      expect(await bodies(`${other}-inbox`)).toEqual([1, 2]);
      expect(await bodies(`${small}-inbox`)).toEqual([1, 2]);
    } finally {
      await t.close();
      const cleanup = await conn.createChannel();
      cleanup.on('error', () => {});
      for (const c of [small, other]) for (const q of ['inbox', 'outbox', 'broadcast']) await cleanup.deleteQueue(`${c}-${q}`).catch(() => {});
      await cleanup.deleteExchange(publishExchange).catch(() => {});
      await cleanup.deleteExchange(broadcastExchange).catch(() => {});
      await conn.close().catch(() => {});
    }
  }, 60_000);
});

describe('communications-backbone: topic routing against an independent model', () => {
  let t: TestDispatcher;
  beforeAll(async () => {
    t = await startDispatcher({ auth: { keyFile: '', psk: [{ service: 'admin', key: ADMIN }], tokens: { rateLimit: { perAddress: 1000 } } }, profiles: { 'communications-backbone': {} } });
  });
  afterAll(async () => {
    await t?.close();
  });

  /** The model: AMQP topic matching by backtracking over the words (`*` one word, `#` zero or more), no trie. */
  function matches(pattern: string, topic: string): boolean {
    const p = pattern.split('.');
    const w = topic === '' ? [] : topic.split('.');
    const go = (i: number, j: number): boolean => {
      if (i === p.length) return j === w.length;
      if (p[i] === '#') return go(i + 1, j) || (j < w.length && go(i, j + 1));
      if (j === w.length) return false;
      return (p[i] === '*' || p[i] === w[j]) && go(i + 1, j + 1);
    };
    return go(0, 0);
  }

  it('delivers each topic to exactly the clients whose pattern matches', async () => {
    const word = fc.constantFrom('soar', 'noc', 'eu', 'x');
    const patternWord = fc.constantFrom('soar', 'noc', 'eu', '*', '#');
    const pattern = fc.array(patternWord, { minLength: 1, maxLength: 4 }).map((w) => w.join('.'));
    const topic = fc.array(word, { minLength: 1, maxLength: 5 }).map((w) => w.join('.'));
    let round = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(pattern, { minLength: 1, maxLength: 6 }), fc.array(topic, { minLength: 1, maxLength: 4 }), async (patterns, topics) => {
        round += 1;
        const orgId = `model-${round}`;
        const ids = patterns.map((_, i) => `m${round}-${i}`);
        // Straight into the store: a secret's hash per client would make the rounds slow, and is not what is tested.
        for (const [i, p] of patterns.entries()) {
          await t.d.store.access.createClient({ id: ids[i]!, name: ids[i]!, service: 'model', orgId, permissions: [], secretHash: 'unused', secretVersion: 1, createdAt: 0, updatedAt: 0, subscription: p });
        }
        for (const [k, tp] of topics.entries()) {
          const result = await t.d.inboxes.deliver({ runId: `${orgId}-run-${k}`, orgId, topic: tp, body: '1', sender: 'model', to: 'subscribers' });
          const expected = ids.filter((_, i) => matches(patterns[i]!, tp)).sort();
          expect([...result.delivered].sort(), `${tp} against ${JSON.stringify(patterns)}`).toEqual(expected);
        }
      }),
      { numRuns: 60 },
    );
  });

  it('the model agrees with hand-checked cases', () => {
    expect(matches('soar.*.noc.#', 'soar.eu.noc')).toBe(true);
    expect(matches('soar.*.noc.#', 'soar.eu.noc.disk.full')).toBe(true);
    expect(matches('soar.*.noc.#', 'soar.noc')).toBe(false);
    expect(matches('#', 'a.b')).toBe(true);
    expect(matches('#.a', 'a')).toBe(true);
    expect(matches('#.a', 'b.a')).toBe(true);
    expect(matches('*', 'a.b')).toBe(false);
    expect(matches('a.#.b', 'a.b')).toBe(true);
  });
});
