/**
 * The built-in connector: recipients (agents) connect to a real dispatcher serving HTTP on a free port, with
 * a real `ws` client, authenticated by pre-shared keys of two tenants; directives sent through the
 * dispatcher's hub reach them, and their answers (or silence, or a dropped connection) end the send.
 */

import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { loadConfig } from '../src/config/load.js';
import type { RecipientMessage } from '../src/core/connector.js';
import { DispatcherError } from '../src/core/errors.js';
import type { RecipientHubSettings } from '../src/core/recipients.js';
import { createDispatcher, type Dispatcher } from '../src/dispatcher.js';
import { waitFor } from './helpers.js';

const KEY_A = 'agentsOfOrgA0123456789abcdef';
const KEY_A_READER = 'readerOfOrgA0123456789abcdef';
const KEY_A_NOTHING = 'nothingOfOrgA0123456789abcde';
const KEY_B = 'agentsOfOrgB0123456789abcdef';
const CONNECT = ['dispatcher:recipients:connect', 'dispatcher:recipients:read'];

const ACK_TIMEOUT_MS = 300;
const HEARTBEAT_MS = 150;
const MAX_PENDING = 3;

interface Served {
  d: Dispatcher;
  address: string;
  close(): Promise<void>;
}

async function serve(recipients: Partial<RecipientHubSettings> = {}): Promise<Served> {
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-recipients-'));
  const config = await loadConfig({
    env: {},
    overrides: {
      store: { url: `sqlite:${join(dir, 'dispatcher.db')}` },
      log: { level: 'silent' },
      server: { port: 0 },
      runner: { poll: '100ms', sweepInterval: '200ms' },
      auth: {
        keyFile: '',
        psk: [
          { service: 'agents-a', key: KEY_A, orgId: 'org-a', permissions: CONNECT },
          { service: 'reader-a', key: KEY_A_READER, orgId: 'org-a', permissions: ['dispatcher:recipients:read'] },
          { service: 'nothing-a', key: KEY_A_NOTHING, orgId: 'org-a', permissions: ['dispatcher:runs:read'] },
          { service: 'agents-b', key: KEY_B, orgId: 'org-b', permissions: CONNECT },
        ],
      },
    } as never,
  });
  const d = await createDispatcher({ config, logger: pino({ level: 'silent' }), recipients });
  const address = await d.listen();
  return {
    d,
    address,
    async close() {
      await d.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A connected agent: what it received, in order, and how its connection ended. */
interface Agent {
  ws: WebSocket;
  /** The next message not yet taken (waits for it). */
  next(): Promise<Record<string, unknown>>;
  closed: Promise<{ code: number; reason: string }>;
  answer(message: Record<string, unknown>): void;
}

function agentOf(ws: WebSocket): Agent {
  const queue: Array<Record<string, unknown>> = [];
  const waiting: Array<(m: Record<string, unknown>) => void> = [];
  ws.on('message', (data) => {
    const m = JSON.parse(String(data)) as Record<string, unknown>;
    const w = waiting.shift();
    if (w === undefined) queue.push(m);
    else w(m);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  return {
    ws,
    next: () => {
      const m = queue.shift();
      return m === undefined ? new Promise((resolve) => waiting.push(resolve)) : Promise.resolve(m);
    },
    closed,
    answer: (message) => ws.send(JSON.stringify(message)),
  };
}

function connectUrl(address: string, id: string): string {
  return `${address.replace(/^http/, 'ws')}/v1/recipients/${id}/connect`;
}

async function connect(s: Served, id: string, key = KEY_A, options: WebSocket.ClientOptions = {}): Promise<Agent> {
  const ws = new WebSocket(connectUrl(s.address, id), { headers: { authorization: `PSK ${key}` }, ...options });
  const agent = agentOf(ws);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return agent;
}

/** A connection the server refuses before the upgrade: its HTTP status and body. */
async function refused(s: Served, id: string, headers: Record<string, string>): Promise<{ status: number; body: Record<string, unknown>; upgraded: boolean }> {
  const ws = new WebSocket(connectUrl(s.address, id), { headers });
  ws.on('error', () => {});
  return new Promise((resolve) => {
    // Upgraded after all: the assertions on the answer fail at once.
    ws.once('open', () => {
      ws.terminate();
      resolve({ status: 101, body: {}, upgraded: true });
    });
    ws.once('unexpected-response', (req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        req.destroy();
        resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>, upgraded: false });
      });
    });
  });
}

const DIRECTIVE: RecipientMessage = { directive: 'rhc-worker-playbook', metadata: { return_url: 'https://example.test/upload', correlation_id: 'c-1' }, payload: 'https://example.test/playbook.yml' };

async function failure(work: Promise<unknown>): Promise<DispatcherError> {
  const err = await work.then(
    () => {
      throw new Error('expected the send to fail');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DispatcherError);
  return err as DispatcherError;
}

describe('recipients connected over a WebSocket', () => {
  let s: Served;

  beforeAll(async () => {
    s = await serve({ ackTimeoutMs: ACK_TIMEOUT_MS, heartbeatMs: HEARTBEAT_MS, maxPending: MAX_PENDING });
  });
  afterAll(async () => s?.close());

  it('delivers a directive, and "accepted" resolves the send with its id; status says connected', async () => {
    const id = randomUUID();
    const hub = s.d.services.recipients;
    expect(await hub.status(id, { orgId: 'org-a' })).toEqual({ connected: false });
    const agent = await connect(s, id);
    expect(await hub.status(id, { orgId: 'org-a' })).toEqual({ connected: true });
    // The same recipient id of another tenant is another recipient.
    expect(await hub.status(id, { orgId: 'org-b' })).toEqual({ connected: false });

    const sent = hub.send(id, DIRECTIVE, { orgId: 'org-a' });
    const directive = await agent.next();
    expect(directive).toEqual({ type: 'directive', id: expect.any(String), ...DIRECTIVE });
    agent.answer({ type: 'accepted', id: directive.id });
    expect(await sent).toEqual({ id: directive.id });

    // The action services get the same hub.
    expect(s.d.services.recipients).toBe(s.d.recipients);
    agent.ws.close();
    await agent.closed;
    await waitFor(() => hub.status(id, { orgId: 'org-a' }), (x) => !x.connected, 2000, 'the recipient to be gone');
  });

  it('a "refused" answer fails the send with action_failed, not retryable, with the reason', async () => {
    const id = randomUUID();
    const agent = await connect(s, id);
    const sent = s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a' });
    const directive = await agent.next();
    agent.answer({ type: 'refused', id: directive.id, reason: 'unknown directive' });
    const err = await failure(sent);
    expect([err.code, err.retryable]).toEqual(['action_failed', false]);
    expect(err.message).toContain('unknown directive');
    agent.ws.close();
  });

  it('no answer within the ack timeout is a network_error; a late answer changes nothing', async () => {
    const id = randomUUID();
    const agent = await connect(s, id);
    const started = Date.now();
    const sent = s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a' });
    const directive = await agent.next();
    const err = await failure(sent);
    expect([err.code, err.retryable]).toEqual(['network_error', true]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(ACK_TIMEOUT_MS - 5);
    agent.answer({ type: 'accepted', id: directive.id });
    // Still connected, still served.
    const again = s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a' });
    const second = await agent.next();
    agent.answer({ type: 'accepted', id: second.id });
    expect(await again).toEqual({ id: second.id });
    agent.ws.close();
  });

  it('the connection closing before the answer is a network_error', async () => {
    const id = randomUUID();
    const agent = await connect(s, id);
    const sent = s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a' });
    await agent.next();
    const started = Date.now();
    agent.ws.close(1000, 'bye');
    const err = await failure(sent);
    expect([err.code, err.retryable]).toEqual(['network_error', true]);
    expect(err.message).toContain('closed');
    // Failed by the close, not by the ack timeout.
    expect(Date.now() - started).toBeLessThan(ACK_TIMEOUT_MS);
  });

  it('an aborted signal ends the send as its reason says: canceled, or attempt_timeout', async () => {
    const id = randomUUID();
    const agent = await connect(s, id);
    const cancel = new AbortController();
    const canceled = s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a', signal: cancel.signal });
    await agent.next();
    cancel.abort(new DispatcherError('canceled', 'the run was canceled'));
    expect((await failure(canceled)).code).toBe('canceled');

    const timeout = new AbortController();
    const timedOut = s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a', signal: timeout.signal });
    await agent.next();
    timeout.abort(new DispatcherError('attempt_timeout', 'the attempt took longer than 10 ms'));
    expect((await failure(timedOut)).code).toBe('attempt_timeout');
    // Aborted before it started: nothing is sent.
    expect((await failure(s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a', signal: AbortSignal.abort() }))).code).toBe('attempt_timeout');
    agent.ws.close();
  });

  it('bounds the directives awaiting an answer per connection', async () => {
    const id = randomUUID();
    const agent = await connect(s, id);
    const sends = Array.from({ length: MAX_PENDING }, () => s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a' }));
    const over = await failure(s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a' }));
    expect(over.code).toBe('network_error');
    expect(over.message).toContain('too many directives awaiting an answer');
    for (let i = 0; i < MAX_PENDING; i++) agent.answer({ type: 'accepted', id: (await agent.next()).id });
    expect(await Promise.all(sends)).toHaveLength(MAX_PENDING);
    agent.ws.close();
  });

  it('the last connection wins: the first is closed with 4000 and its pending sends fail', async () => {
    const id = randomUUID();
    const first = await connect(s, id);
    const pending = failure(s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a' }));
    await first.next();
    const second = await connect(s, id);
    expect(await first.closed).toEqual({ code: 4000, reason: 'replaced by a newer connection' });
    expect((await pending).code).toBe('network_error');
    // The old connection's close does not take the new one with it.
    expect(await s.d.recipients.status(id, { orgId: 'org-a' })).toEqual({ connected: true });
    expect(s.d.recipients.list('org-a').filter((r) => r.recipient === id)).toHaveLength(1);
    const sent = s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a' });
    const directive = await second.next();
    second.answer({ type: 'accepted', id: directive.id });
    expect(await sent).toEqual({ id: directive.id });
    second.ws.close();
  });

  it("another tenant's send finds no recipient: recipient_not_found, retryable", async () => {
    const id = randomUUID();
    const agent = await connect(s, id, KEY_B);
    const err = await failure(s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a' }));
    expect([err.code, err.retryable]).toEqual(['recipient_not_found', true]);
    expect((await failure(s.d.recipients.send(randomUUID(), DIRECTIVE, { orgId: 'org-b' }))).code).toBe('recipient_not_found');
    // Its own tenant reaches it.
    const sent = s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-b' });
    agent.answer({ type: 'accepted', id: (await agent.next()).id });
    await sent;
    agent.ws.close();
  });

  it("GET /v1/recipients lists only the caller's tenant's recipients", async () => {
    const a = randomUUID();
    const b = randomUUID();
    const agentA = await connect(s, a);
    const agentB = await connect(s, b, KEY_B);
    const list = async (key: string) => {
      const res = await fetch(`${s.address}/v1/recipients`, { headers: { authorization: `PSK ${key}` } });
      expect(res.status).toBe(200);
      return ((await res.json()) as { data: Array<Record<string, unknown>> }).data;
    };
    const ofA = await list(KEY_A_READER);
    expect(ofA.map((r) => r.recipient)).toContain(a);
    expect(ofA.map((r) => r.recipient)).not.toContain(b);
    expect(ofA.find((r) => r.recipient === a)).toEqual({ recipient: a, org_id: 'org-a', service: 'agents-a', connected_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT.*Z$/), address: '127.0.0.1' });
    const ofB = await list(KEY_B);
    expect(ofB.map((r) => r.recipient)).toEqual([b]);
    expect((await fetch(`${s.address}/v1/recipients`)).status).toBe(401);
    expect((await fetch(`${s.address}/v1/recipients`, { headers: { authorization: `PSK ${KEY_A_NOTHING}` } })).status).toBe(403);
    expect(await s.d.metrics.registry.getSingleMetricAsString('dispatcher_recipients_connected')).toMatch(/^dispatcher_recipients_connected [1-9]\d*$/m);
    agentA.ws.close();
    agentB.ws.close();
  });

  it('refuses before the upgrade: 401 without or with wrong credentials, 403 without the permission, 400 for an id that is not a UUID', async () => {
    const id = randomUUID();
    const none = await refused(s, id, {});
    expect([none.status, none.body.code, none.upgraded]).toEqual([401, 'unauthorized', false]);
    const wrong = await refused(s, id, { authorization: 'PSK notAKeyOfAnyone0123456789' });
    expect([wrong.status, wrong.body.code]).toEqual([401, 'unauthorized']);
    const reader = await refused(s, id, { authorization: `PSK ${KEY_A_READER}` });
    expect([reader.status, reader.body.code]).toEqual([403, 'forbidden']);
    expect(reader.body.message).toContain('dispatcher:recipients:connect');
    const bad = await refused(s, 'not-a-uuid', { authorization: `PSK ${KEY_A}` });
    expect([bad.status, bad.body.code]).toEqual([400, 'bad_request']);
    expect(s.d.recipients.list().map((r) => r.recipient)).not.toContain(id);
    // A plain GET (no upgrade) is told what the route takes.
    const plain = await fetch(`${s.address}/v1/recipients/${id}/connect`, { headers: { authorization: `PSK ${KEY_A}` } });
    expect(plain.status).toBe(400);
    expect(((await plain.json()) as { message: string }).message).toContain('WebSocket');
  });

  it('answers a ping with a pong', async () => {
    const agent = await connect(s, randomUUID());
    agent.answer({ type: 'ping' });
    expect(await agent.next()).toEqual({ type: 'pong' });
    agent.ws.close();
  });

  it.each([
    ['not JSON', 'this is not json', 'message is not JSON'],
    ['an unknown type', JSON.stringify({ type: 'hello' }), 'unknown message type "hello"'],
    ['an answer without id', JSON.stringify({ type: 'accepted' }), "accepted needs the directive's id"],
    ['over 64 KiB', JSON.stringify({ type: 'ping', pad: 'x'.repeat(64 * 1024) }), 'message larger than 65536 bytes'],
    // A close frame's reason holds 123 bytes: cut, not refused by the socket (which would leave it open).
    ['an unknown type of long multibyte text', JSON.stringify({ type: '€'.repeat(60) }), `unknown message type "${'€'.repeat(32)}…`],
  ])('a message that is %s closes the connection with 1008; the dispatcher still serves', async (_what, message, reason) => {
    const id = randomUUID();
    const agent = await connect(s, id);
    const pending = failure(s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a' }));
    await agent.next();
    agent.ws.send(message);
    expect(await agent.closed).toEqual({ code: 1008, reason });
    expect((await pending).code).toBe('network_error');
    expect(await s.d.recipients.status(id, { orgId: 'org-a' })).toEqual({ connected: false });
    // Others still connect and are served.
    const other = await connect(s, id);
    other.answer({ type: 'ping' });
    expect(await other.next()).toEqual({ type: 'pong' });
    expect((await fetch(`${s.address}/healthz`)).status).toBe(200);
    other.ws.close();
  });

  it('a binary message closes the connection with 1008', async () => {
    const agent = await connect(s, randomUUID());
    agent.ws.send(Buffer.from('{"type":"ping"}'), { binary: true });
    expect((await agent.closed).code).toBe(1008);
  });

  it('the heartbeat terminates a connection that does not answer pings, and keeps one that does', async () => {
    const mute = randomUUID();
    const lively = randomUUID();
    const silent = await connect(s, mute, KEY_A, { autoPong: false });
    const answering = await connect(s, lively);
    let pings = 0;
    answering.ws.on('ping', () => pings++);
    const started = Date.now();
    // Terminated, without a closing handshake.
    expect((await silent.closed).code).toBe(1006);
    expect(Date.now() - started).toBeLessThan(HEARTBEAT_MS * 2 + 500);
    expect(await s.d.recipients.status(mute, { orgId: 'org-a' })).toEqual({ connected: false });
    // The one that answers outlives several pings.
    await waitFor(async () => pings, (n) => n >= 3, 5000, 'three pings');
    expect(await s.d.recipients.status(lively, { orgId: 'org-a' })).toEqual({ connected: true });
    answering.ws.close();
  });
});

describe('stopping', () => {
  it('close() closes every connection with 1001 and fails pending sends with shutting_down', async () => {
    const s = await serve({ ackTimeoutMs: 10_000 });
    try {
      const id = randomUUID();
      const agent = await connect(s, id);
      const pending = s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a' });
      await agent.next();
      s.d.recipients.close();
      const err = await failure(pending);
      expect([err.code, err.retryable]).toEqual(['shutting_down', true]);
      expect(await agent.closed).toEqual({ code: 1001, reason: 'dispatcher stopping' });
      expect((await failure(s.d.recipients.send(id, DIRECTIVE, { orgId: 'org-a' }))).code).toBe('shutting_down');
      // A connection after it is told at once.
      const late = await connect(s, randomUUID());
      expect((await late.closed).code).toBe(1001);
    } finally {
      await s.close();
    }
  });

  it('the dispatcher stopping closes its recipients with 1001 before the server goes', async () => {
    const s = await serve();
    const agent = await connect(s, randomUUID());
    await s.close();
    expect(await agent.closed).toEqual({ code: 1001, reason: 'dispatcher stopping' });
  });
});
