/**
 * What the dispatcher lends to its API and to the profiles (`Services`), against a real dispatcher: the
 * guarded HTTP client (the address policy of `actions.http.allow`, coded failures, bounded answers), the
 * named decoders, answers for waiting runs and hosts through the services, and host events on the
 * server-sent event stream.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ActionType } from '../src/core/action.js';
import { AUTH, event, startDispatcher, startReceiver, waitFor, type Receiver, type TestDispatcher } from './helpers.js';

/** An action that creates two hosts for its run and waits under the correlation id the event's data gives. */
const waitingAction: ActionType = {
  type: 'wait-here',
  create: () => ({
    async execute(ctx) {
      const at = Date.now();
      await ctx.services.upsertHosts!([
        { runId: ctx.runId, name: 'a', at },
        { runId: ctx.runId, name: 'b', at },
      ]);
      return { status: 'waiting', correlationId: (ctx.event.data as { correlation: string }).correlation };
    },
  }),
};

describe('the guarded HTTP client', () => {
  let receiver: Receiver;
  let blocked: TestDispatcher;
  let allowed: TestDispatcher;

  beforeAll(async () => {
    receiver = await startReceiver(async (req, _body, res) => {
      if (req.url === '/slow') await new Promise((r) => setTimeout(r, 500));
      if (req.url === '/big') return void res.end('x'.repeat(10_000));
      res.setHeader('x-seen', String(req.headers['user-agent']));
      res.end(`${req.method} ${req.url}`);
    });
    blocked = await startDispatcher({}, { start: false });
    allowed = await startDispatcher({ actions: { http: { allow: ['127.0.0.1'], userAgent: 'test-agent' } } }, { start: false });
  });

  afterAll(async () => {
    await blocked?.close();
    await allowed?.close();
    await receiver?.close();
  });

  it('refuses loopback targets unless allowed, as webhooks are', async () => {
    await expect(blocked.d.services.http.request(`${receiver.url}/x`)).rejects.toMatchObject({ code: 'address_blocked' });
    expect(receiver.requests).toHaveLength(0);
    const answer = await allowed.d.services.http.request(`${receiver.url}/hello?q=1`, { method: 'POST', body: 'hi', headers: { 'content-type': 'text/plain' } });
    expect(answer.status).toBe(200);
    expect(answer.body.toString()).toBe('POST /hello?q=1');
    expect(answer.headers['x-seen']).toBe('test-agent');
    expect(receiver.requests.at(-1)).toMatchObject({ method: 'POST', body: 'hi' });
  });

  it('codes its failures: a slow answer, an answer too large, a bad URL, nothing listening', async () => {
    const http = allowed.d.services.http;
    await expect(http.request(`${receiver.url}/slow`, { timeoutMs: 100 })).rejects.toMatchObject({ code: 'attempt_timeout' });
    await expect(http.request(`${receiver.url}/big`, { maxBytes: 1000 })).rejects.toMatchObject({ code: 'action_failed', message: expect.stringContaining('more than 1000 bytes') });
    expect((await http.request(`${receiver.url}/big`, { maxBytes: 10_000 })).body.length).toBe(10_000);
    await expect(http.request('ftp://127.0.0.1/x')).rejects.toMatchObject({ code: 'action_failed' });
    await expect(http.request('not a url')).rejects.toMatchObject({ code: 'action_failed' });
    await expect(http.request('http://127.0.0.1:1/')).rejects.toMatchObject({ code: 'network_error' });
  });
});

describe('the services, on a running dispatcher', () => {
  let t: TestDispatcher;

  beforeAll(async () => {
    t = await startDispatcher(
      { server: { port: 0 }, routes: [{ name: 'waits', match: { type: 'wait.*' }, actions: [{ 'wait-here': {} }] }] },
      { actionTypes: [waitingAction] },
    );
  });
  afterAll(async () => t?.close());

  it('takes a message in through a named decoder, and refuses a name it does not know', async () => {
    const message = { input: 'test', raw: Buffer.from(JSON.stringify(event())), contentType: 'application/cloudevents+json', headers: {}, service: 'svc', orgId: 'default' };
    const answer = await t.d.services.receive(message);
    expect(answer.results[0]).toMatchObject({ status: 'accepted' });
    await expect(t.d.services.receive(message, 'nobody.decoder')).rejects.toMatchObject({ code: 'internal', message: expect.stringContaining('no decoder "nobody.decoder"') });
  });

  it('resolves a waiting run and updates its hosts; streams their events as server-sent events', async () => {
    const address = await t.d.listen();
    const controller = new AbortController();
    const stream = await fetch(`${address}/v1/stream?filter[kind]=host`, { headers: AUTH, signal: controller.signal });
    const [runId] = (await t.d.send([event({ type: 'wait.here', data: { correlation: 'corr-s' } }) as never])).results[0]!.runIds;
    await waitFor(() => t.d.store.getRun(runId!), (r) => r?.correlationId === 'corr-s', 10_000, 'the run to wait');
    const [resolved] = await t.d.services.resolveRuns([{ orgId: 'default', correlationId: 'corr-s', status: 'failure', at: Date.now() }]);
    expect(resolved).toMatchObject({ outcome: 'resolved', run: { id: runId, status: 'failure', error: { code: 'action_failed' } } });
    const hosts = await t.d.services.upsertHosts([{ runId: runId!, name: 'a', status: 'failure', at: Date.now(), log: { append: 'no' } }]);
    expect(hosts[0]).toMatchObject({ outcome: 'updated', host: { status: 'failure', log: 'no' } });

    const reader = stream.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    const until = Date.now() + 10_000;
    while ((text.match(/event: host\./g) ?? []).length < 3 && Date.now() < until) {
      const chunk = await reader.read();
      if (chunk.done) break;
      text += decoder.decode(chunk.value, { stream: true });
    }
    controller.abort();
    const messages = text.split('\n\n').filter((m) => m.startsWith('id:'));
    expect(messages.map((m) => m.split('\n')[1])).toEqual(['event: host.create', 'event: host.create', 'event: host.update']);
    const last = JSON.parse(messages[2]!.split('\ndata: ')[1]!) as { host: { run: string; name: string; status: string; log: string } };
    expect(last.host).toMatchObject({ run: runId, name: 'a', status: 'failure', log: 'no' });
    // Only host events asked for: no run event came.
    expect(text).not.toContain('event: run.');
    const bad = await fetch(`${address}/v1/stream?filter[kind]=job&after=0`, { headers: AUTH });
    expect(bad.status).toBe(400);
  });
});
