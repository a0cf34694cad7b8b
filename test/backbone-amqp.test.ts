/**
 * The Communications Backbone's RabbitMQ layout (src/profiles/communications-backbone/amqp.ts) against the
 * real RabbitMQ on this machine (DISPATCHER_TEST_AMQP_URL to use another). Every name made here carries this
 * run's random suffix and is deleted in afterAll. Without a broker the tests skip, saying why; with
 * CI=true they fail instead.
 */

import { randomBytes } from 'node:crypto';
import amqp, { type ChannelModel, type GetMessage } from 'amqplib';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DispatcherError } from '../src/core/errors.js';
import { AmqpLayout, queueNames, type AmqpLayoutOptions, type LayoutClient } from '../src/profiles/communications-backbone/amqp.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

const URL = process.env.DISPATCHER_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const requireServices = process.env.CI === 'true';

async function probe(): Promise<string | null> {
  try {
    const c = await amqp.connect(URL, { timeout: 3000 });
    await c.close();
    return null;
  } catch (err) {
    return (err as Error).message || String(err);
  }
}
const unreachable = await probe();
if (unreachable !== null && !requireServices) {
  console.warn(`backbone-amqp.test.ts skipped: RabbitMQ at ${URL} cannot be reached (${unreachable}). Start it, or set CI=true to make this a failure.`);
}

const RUN = randomBytes(4).toString('hex');
const PUBLISH = `bbtest-publish-${RUN}`;
const BROADCAST = `bbtest-broadcast-${RUN}`;
const INPUT = `bbtest-input-${RUN}`;
const id = (name: string) => `bbtest-${name}-${RUN}`;
/** Every client id a test lays out: their queues are deleted in afterAll. */
const made = new Set<string>();

interface Calls {
  sends: Array<[string, string, unknown]>;
  notifies: Array<[string, unknown]>;
  invalids: Array<{ clientId: string; queue: string; raw: string; code: string }>;
}

const layouts: AmqpLayout[] = [];

async function startLayout(clients: LayoutClient[], options: Partial<AmqpLayoutOptions> = {}): Promise<{ layout: AmqpLayout; calls: Calls }> {
  const calls: Calls = { sends: [], notifies: [], invalids: [] };
  for (const c of clients) made.add(c.id);
  const layout = new AmqpLayout({
    url: URL,
    log: pino({ level: 'silent' }),
    publishExchange: PUBLISH,
    broadcastExchange: BROADCAST,
    retryDelayMs: 100,
    onSend: async (clientId, topic, body) => void calls.sends.push([clientId, topic, body]),
    onNotify: async (clientId, body) => void calls.notifies.push([clientId, body]),
    onInvalid: async (clientId, queue, raw, error) => void calls.invalids.push({ clientId, queue, raw: raw.toString('utf8'), code: error.code }),
    ...options,
  });
  layouts.push(layout);
  await layout.start(clients);
  return { layout, calls };
}

async function until<T>(read: () => T | Promise<T>, done: (value: T) => boolean, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(value)?.slice(0, 1000)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe.skipIf(unreachable !== null && !requireServices)('the Communications Backbone RabbitMQ layout', () => {
  let admin: ChannelModel;

  /** Ready messages in the queue, or null when it does not exist (a refused check closes its channel: one per check). */
  async function readyCount(queue: string): Promise<number | null> {
    const channel = await admin.createChannel();
    channel.on('error', () => {});
    try {
      return (await channel.checkQueue(queue)).messageCount;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return null;
      throw err;
    } finally {
      await channel.close().catch(() => {});
    }
  }

  /** Takes every message of an inbox: the parsed items, with their AMQP message. */
  async function drain(queue: string): Promise<Array<{ item: any; message: GetMessage }>> {
    const channel = await admin.createChannel();
    const out: Array<{ item: any; message: GetMessage }> = [];
    for (;;) {
      const message = await channel.get(queue, { noAck: true });
      if (message === false) break;
      out.push({ item: JSON.parse(message.content.toString('utf8')), message });
    }
    await channel.close();
    return out;
  }

  async function write(queue: string, body: string, options: { headers?: Record<string, unknown>; exchange?: string; routingKey?: string } = {}): Promise<void> {
    const channel = await admin.createConfirmChannel();
    channel.publish(options.exchange ?? '', options.routingKey ?? queue, Buffer.from(body), { persistent: true, ...(options.headers ? { headers: options.headers } : {}) });
    await channel.waitForConfirms();
    await channel.close();
  }

  const time = '2024-05-01T12:00:00.000Z';
  let n = 0;
  const message = (topic: string | null) => {
    const mid = `m-${RUN}-${n++}`;
    return { id: mid, topic, body: JSON.stringify({ n, nested: { ok: true } }), sender: 'bbtest-sender', time };
  };

  const A = id('a');
  const B = id('b');
  const C = id('c');
  const D = id('d');
  const E = id('e');
  let main: AmqpLayout;

  beforeAll(async () => {
    if (unreachable !== null) throw new Error(`backbone-amqp.test.ts: RabbitMQ at ${URL} cannot be reached (${unreachable}); with CI=true it must run`);
    admin = await amqp.connect(URL);
    ({ layout: main } = await startLayout([
      { id: A, subscription: 'soar.*.slocum' },
      { id: B, subscription: 'soar.#' },
      { id: C, subscription: 'soar.#.glider' },
      { id: D, subscription: null },
    ]));
  });

  afterAll(async () => {
    await Promise.allSettled(layouts.map((l) => l.close()));
    if (admin === undefined) return;
    for (const client of made) {
      for (const queue of Object.values(queueNames(client))) {
        const channel = await admin.createChannel();
        channel.on('error', () => {});
        await channel.deleteQueue(queue).catch(() => {});
        await channel.close().catch(() => {});
      }
    }
    for (const exchange of [PUBLISH, BROADCAST, INPUT]) {
      const channel = await admin.createChannel();
      channel.on('error', () => {});
      await channel.deleteExchange(exchange).catch(() => {});
      await channel.close().catch(() => {});
    }
    await admin.close();
  });

  it('declares both exchanges and the three durable queues of each client', async () => {
    expect(main.health()).toEqual({ connected: true });
    for (const client of [A, B, C, D]) {
      for (const queue of Object.values(queueNames(client))) expect(await readyCount(queue), queue).toBe(0);
    }
    expect(await readyCount(`${id('never-made')}-inbox`)).toBeNull();
    // Declaring again with the properties we expect is refused (406) when they differ: durable, topic/fanout.
    const channel = await admin.createChannel();
    await channel.assertExchange(PUBLISH, 'topic', { durable: true });
    await channel.assertExchange(BROADCAST, 'fanout', { durable: true });
    await channel.assertQueue(queueNames(A).inbox, { durable: true });
    await channel.close();
    const wrong = await admin.createChannel();
    wrong.on('error', () => {});
    await expect(wrong.assertExchange(BROADCAST, 'topic', { durable: true })).rejects.toMatchObject({ code: 406 });
  });

  it('routes a mirrored topic message to exactly the inboxes whose subscription matches (* one word, # zero or more)', async () => {
    const cases: Array<[string, string[]]> = [
      ['soar.noc.slocum', [A, B]],
      ['soar.slocum', [B]], // `*` is exactly one word: not zero
      ['soar.noc.x.slocum', [B]], // … and not two
      ['soar.glider', [B, C]], // `#` is zero words
      ['soar.noc.x.glider', [B, C]], // … or two
      ['ops.noc.slocum', []],
    ];
    const expected = new Map<string, string[]>([A, B, C, D].map((c) => [c, []]));
    const sent = [];
    for (const [topic, to] of cases) {
      const m = message(topic);
      sent.push(m);
      await main.mirror(m);
      for (const c of to) expected.get(c)!.push(m.id);
    }
    for (const client of [A, B, C, D]) {
      const got = await drain(queueNames(client).inbox);
      expect(
        got.map((g) => g.item.id),
        client,
      ).toEqual(expected.get(client));
    }
    // What an inbox holds is the item /receive answers, the body as JSON (not a string), persistent.
    const first = sent[0]!;
    await main.mirror(first);
    const [item] = await drain(queueNames(A).inbox);
    expect(item!.item).toEqual({ id: first.id, topic: 'soar.noc.slocum', body: JSON.parse(first.body), sender: 'bbtest-sender', time });
    expect(item!.message.properties.deliveryMode).toBe(2);
    expect(item!.message.properties.contentType).toBe('application/json');
    expect(item!.message.fields.routingKey).toBe('soar.noc.slocum');
    await drain(queueNames(B).inbox);
  });

  it('delivers a broadcast to every inbox, the client without a subscription too', async () => {
    const m = message(null);
    await main.mirror(m);
    for (const client of [A, B, C, D]) {
      const got = await drain(queueNames(client).inbox);
      expect(
        got.map((g) => [g.item.id, g.item.topic, g.message.fields.exchange]),
        client,
      ).toEqual([[m.id, null, BROADCAST]]);
    }
  });

  it('rebinds an inbox when a subscription changes: the old pattern no longer delivers; a new client is laid out', async () => {
    await main.clientSaved({ id: A, subscription: 'ops.#' }, { id: A, subscription: 'soar.*.slocum' });
    made.add(E);
    await main.clientSaved({ id: E, subscription: 'ops.*' });
    for (const queue of Object.values(queueNames(E))) expect(await readyCount(queue), queue).toBe(0);

    const old = message('soar.noc.slocum');
    const fresh = message('ops.slocum');
    await main.mirror(old);
    await main.mirror(fresh);
    expect((await drain(queueNames(A).inbox)).map((g) => g.item.id)).toEqual([fresh.id]);
    expect((await drain(queueNames(B).inbox)).map((g) => g.item.id)).toEqual([old.id]); // the old topic was routable
    expect((await drain(queueNames(E).inbox)).map((g) => g.item.id)).toEqual([fresh.id]);

    // To no subscription: broadcasts only.
    await main.clientSaved({ id: A, subscription: null }, { id: A, subscription: 'ops.#' });
    const after = message('ops.x');
    const all = message(null);
    await main.mirror(after);
    await main.mirror(all);
    expect((await drain(queueNames(A).inbox)).map((g) => g.item.id)).toEqual([all.id]);
    expect((await drain(queueNames(E).inbox)).map((g) => g.item.id)).toEqual([after.id, all.id]);
    for (const client of [B, C, D]) await drain(queueNames(client).inbox);
  });

  it('deletes the three queues of a deleted client, and leaves the others', async () => {
    expect(await readyCount(queueNames(E).outbox)).toBe(0);
    await main.clientDeleted(E);
    for (const queue of Object.values(queueNames(E))) expect(await readyCount(queue), queue).toBeNull();
    for (const queue of Object.values(queueNames(D))) expect(await readyCount(queue), queue).toBe(0);
    const m = message(null);
    await main.mirror(m);
    expect((await drain(queueNames(D).inbox)).map((g) => g.item.id)).toEqual([m.id]);
    for (const client of [A, B, C]) await drain(queueNames(client).inbox);
    expect(main.health().connected).toBe(true);
  });

  it('takes what a system wrote to an outbox ({topic, body}, the CLI’s {topic, message}, a topic header, a routing key) and acknowledges it', async () => {
    const S = id('sender');
    const { layout, calls } = await startLayout([{ id: S, subscription: null }]);
    const outbox = queueNames(S).outbox;
    const channel = await admin.createChannel();
    await channel.assertExchange(INPUT, 'topic', { durable: false, autoDelete: false });
    await channel.bindQueue(outbox, INPUT, '#');
    await channel.close();

    await write(outbox, JSON.stringify({ topic: 'soar.s.one', body: { x: 1 } }));
    await write(outbox, JSON.stringify({ topic: 'soar.s.two', message: 'from noc-c2' }));
    await write(outbox, JSON.stringify([1, 2]), { headers: { topic: 'soar.s.three' } });
    await write(outbox, JSON.stringify({ y: 2 }), { exchange: INPUT, routingKey: 'soar.s.four' });
    await until(() => calls.sends.length, (l) => l >= 4, 'four sends');
    expect(calls.sends).toEqual([
      [S, 'soar.s.one', { x: 1 }],
      [S, 'soar.s.two', 'from noc-c2'],
      [S, 'soar.s.three', [1, 2]],
      [S, 'soar.s.four', { y: 2 }],
    ]);
    expect(calls.invalids).toEqual([]);
    // Closing returns what is unacknowledged to the queue: nothing is.
    await layout.close();
    expect(layout.health().connected).toBe(false);
    expect(await readyCount(outbox)).toBe(0);
  });

  it('takes what a system wrote to a broadcast queue as a notify, and acknowledges it', async () => {
    const S = id('notifier');
    const { layout, calls } = await startLayout([{ id: S, subscription: 'soar.#' }]);
    await write(queueNames(S).broadcast, JSON.stringify({ alert: 'all hands' }));
    await until(() => calls.notifies.length, (l) => l >= 1, 'a notify');
    expect(calls.notifies).toEqual([[S, { alert: 'all hands' }]]);
    expect(calls.sends).toEqual([]);
    await layout.close();
    expect(await readyCount(queueNames(S).broadcast)).toBe(0);
  });

  it('hands a message it cannot take to onInvalid (not JSON, no topic), acknowledges it, and goes on', async () => {
    const S = id('invalid');
    const { layout, calls } = await startLayout([{ id: S, subscription: null }]);
    const q = queueNames(S);
    await write(q.outbox, 'not json');
    await write(q.outbox, JSON.stringify({ no: 'topic' }));
    await write(q.broadcast, '{"half":');
    await write(q.outbox, JSON.stringify({ topic: 'soar.ok', body: true }));
    await until(() => calls.invalids.length + calls.sends.length, (l) => l >= 4, 'four outcomes');
    expect(calls.invalids.filter((i) => i.queue === q.outbox)).toEqual([
      { clientId: S, queue: q.outbox, raw: 'not json', code: 'invalid_json' },
      { clientId: S, queue: q.outbox, raw: '{"no":"topic"}', code: 'invalid_envelope' },
    ]);
    expect(calls.invalids.filter((i) => i.queue === q.broadcast)).toEqual([{ clientId: S, queue: q.broadcast, raw: '{"half":', code: 'invalid_json' }]);
    expect(calls.sends).toEqual([[S, 'soar.ok', true]]);
    expect(calls.notifies).toEqual([]);
    await layout.close();
    expect(await readyCount(q.outbox)).toBe(0);
    expect(await readyCount(q.broadcast)).toBe(0);
  });

  it('redelivers a message whose onSend failed (a plain Error), in order, until it succeeds; a final refusal goes to onInvalid', async () => {
    const S = id('retry');
    const q = queueNames(S);
    made.add(S);
    // Written before the layout starts: both are delivered at once, the second waits behind the first.
    const channel = await admin.createChannel();
    await channel.assertQueue(q.outbox, { durable: true });
    await channel.close();
    await write(q.outbox, JSON.stringify({ topic: 'soar.r.one', body: 1 }));
    await write(q.outbox, JSON.stringify({ topic: 'soar.r.two', body: 2 }));
    await write(q.outbox, JSON.stringify({ topic: 'soar.r.bad', body: 3 }));
    const attempts: string[] = [];
    let failures = 1;
    const invalid: Array<[string, string]> = [];
    const { layout, calls } = await startLayout([{ id: S, subscription: null }], {
      onSend: async (_clientId, topic) => {
        attempts.push(topic);
        if (topic === 'soar.r.one' && failures-- > 0) throw new Error('the store is down');
        if (topic === 'soar.r.bad') throw new DispatcherError('payload_too_large', 'too large');
      },
      onInvalid: async (_clientId, _queue, raw, error) => void invalid.push([raw.toString('utf8'), error.code]),
    });
    await until(() => invalid.length, (l) => l >= 1, 'the refused message');
    expect(attempts).toEqual(['soar.r.one', 'soar.r.one', 'soar.r.two', 'soar.r.bad']);
    expect(invalid).toEqual([[JSON.stringify({ topic: 'soar.r.bad', body: 3 }), 'payload_too_large']]);
    expect(calls.sends).toEqual([]); // the override replaced the recorder
    await layout.close();
    expect(await readyCount(q.outbox)).toBe(0);
  });

  it('leaves a message unacknowledged while onInvalid cannot keep it', async () => {
    const S = id('keep');
    const q = queueNames(S);
    let keepFails = true;
    const kept: string[] = [];
    const { layout } = await startLayout([{ id: S, subscription: null }], {
      onInvalid: async (_clientId, _queue, raw) => {
        if (keepFails) throw new DispatcherError('store_unavailable', 'the store is down');
        kept.push(raw.toString('utf8'));
      },
    });
    await write(q.outbox, 'garbage');
    await new Promise((r) => setTimeout(r, 300));
    expect(kept).toEqual([]);
    keepFails = false;
    await until(() => kept.length, (l) => l >= 1, 'the dead letter kept');
    expect(kept).toEqual(['garbage']);
    await layout.close();
    expect(await readyCount(q.outbox)).toBe(0);
  });

  it('uses a queue that already exists with other properties (not durable) as it is', async () => {
    const S = id('legacy');
    const q = queueNames(S);
    made.add(S);
    const channel = await admin.createChannel();
    await channel.assertQueue(q.outbox, { durable: false });
    await channel.close();
    const { layout, calls } = await startLayout([{ id: S, subscription: null }]);
    expect(layout.health()).toEqual({ connected: true });
    await write(q.outbox, JSON.stringify({ topic: 'soar.legacy', body: null }));
    await until(() => calls.sends.length, (l) => l >= 1, 'a send from the legacy queue');
    expect(calls.sends).toEqual([[S, 'soar.legacy', null]]);
    // Still the legacy queue: declaring it durable is refused.
    const check = await admin.createChannel();
    check.on('error', () => {});
    await expect(check.assertQueue(q.outbox, { durable: true })).rejects.toMatchObject({ code: 406 });
    await layout.close();
  });

  it('declares a queue again and consumes it when it is deleted from outside', async () => {
    const S = id('deleted-outside');
    const q = queueNames(S);
    const { layout, calls } = await startLayout([{ id: S, subscription: null }]);
    const channel = await admin.createChannel();
    await channel.deleteQueue(q.broadcast);
    await channel.close();
    await until(() => readyCount(q.broadcast), (c) => c === 0, 'the broadcast queue declared again');
    // The consumer too: a notify written now is taken (left in the queue otherwise, and the wait fails).
    await write(q.broadcast, JSON.stringify({ ping: true }));
    await until(() => calls.notifies.length, (l) => l >= 1, 'a notify after the queue came back');
    expect(calls.notifies).toEqual([[S, { ping: true }]]);
    expect(layout.health().connected).toBe(true);
    await layout.close();
    expect(await readyCount(q.broadcast)).toBe(0);
  });

  it('reconnects after the connection drops: declares again, applies what changed meanwhile, consumes again', async () => {
    const P = id('reconnect');
    const O = id('other');
    const q = queueNames(P);
    const port = Number(new globalThis.URL(URL).port || 5672);
    let proxy: TcpProxy | undefined;
    try {
      proxy = await startTcpProxy(port);
      const via = new globalThis.URL(URL);
      via.port = String(proxy.port);
      via.hostname = '127.0.0.1';
      const { layout, calls } = await startLayout(
        [
          { id: P, subscription: 'soar.old.#' },
          { id: O, subscription: 'soar.#' },
        ],
        { url: via.toString() },
      );
      expect(layout.health().connected).toBe(true);

      proxy.cut();
      await until(() => layout.health(), (h) => !h.connected, 'the layout to see the lost connection');
      expect(layout.health().error).toEqual(expect.any(String));
      const down = await layout.mirror(message('soar.old.x')).then(
        () => null,
        (err: unknown) => err,
      );
      expect(down).toBeInstanceOf(DispatcherError);
      expect(down).toMatchObject({ code: 'network_error', retryable: true });

      // Meanwhile: the outbox vanishes and the subscription changes.
      const channel = await admin.createChannel();
      await channel.deleteQueue(q.outbox);
      await channel.close();
      await layout.clientSaved({ id: P, subscription: 'soar.new.#' }, { id: P, subscription: 'soar.old.#' });

      proxy.restore();
      await until(() => layout.health(), (h) => h.connected, 'the layout to reconnect', 20_000);
      expect(await readyCount(q.outbox)).toBe(0);

      const old = message('soar.old.x');
      const fresh = message('soar.new.x');
      await layout.mirror(old);
      await layout.mirror(fresh);
      expect((await drain(q.inbox)).map((g) => g.item.id)).toEqual([fresh.id]);
      expect((await drain(queueNames(O).inbox)).map((g) => g.item.id)).toEqual([old.id, fresh.id]);

      await write(q.outbox, JSON.stringify({ topic: 'soar.after', body: 'again' }));
      await until(() => calls.sends.length, (l) => l >= 1, 'a send after the reconnect');
      expect(calls.sends).toEqual([[P, 'soar.after', 'again']]);
      await layout.close();
      expect(await readyCount(q.outbox)).toBe(0);
    } finally {
      await proxy?.close();
    }
  }, 60_000);

  it('refuses client ids that cannot name RabbitMQ queues, and a layout whose exchanges clash', async () => {
    for (const bad of ['', 'amq.reserved', 'x'.repeat(246), 'tab\there']) {
      await expect(main.clientSaved({ id: bad, subscription: null }), JSON.stringify(bad)).rejects.toMatchObject({ code: 'bad_request' });
    }
    // The longest id that fits: its `-broadcast` queue name is 255 bytes.
    const longest = `bbtest-${RUN}-`.padEnd(245, 'y');
    made.add(longest);
    await main.clientSaved({ id: longest, subscription: null });
    expect(await readyCount(`${longest}-broadcast`)).toBe(0);
    await expect(main.clientSaved({ id: A, subscription: 's'.repeat(256) })).rejects.toMatchObject({ code: 'bad_request' });
    const clash = () =>
      new AmqpLayout({
        url: URL,
        log: pino({ level: 'silent' }),
        publishExchange: 'same',
        broadcastExchange: 'same',
        onSend: async () => {},
        onNotify: async () => {},
        onInvalid: async () => {},
      });
    expect(clash).toThrow(/must differ/);
  });
});
