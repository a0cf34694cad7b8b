/** The delivery suite against the real NATS JetStream on this machine (DISPATCHER_TEST_NATS_URL to use another), and the nats output. */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { transport } from '../src/transports/nats/index.js';
import { missingProgram, privatePort } from './brokers.js';
import { waitFor } from './helpers.js';
import { restartUnderInput } from './restart.js';
import { describeDeliveries, reportMissingPeer, type PeerMessage } from './transport.suite.js';

const URL = process.env.DISPATCHER_TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

async function probe(): Promise<string | null> {
  let nc: NatsConnection | undefined;
  try {
    nc = await connect({ servers: URL, timeout: 3000, maxReconnectAttempts: 0 });
    await (await jetstreamManager(nc)).getAccountInfo();
    return null;
  } catch (err) {
    return `${URL}: ${(err as Error).message || String(err)} (NATS with JetStream enabled, -js)`;
  } finally {
    await nc?.close().catch(() => {});
  }
}

await describeDeliveries({
  transport: 'nats',
  probe,
  async place(name) {
    const nc = await connect({ servers: URL });
    const jsm = await jetstreamManager(nc);
    // The stream exists before anything is sent, as a producer's would; the input creates its consumer.
    await jsm.streams.add({ name, subjects: [`${name}.>`] });
    const js = jetstream(nc);
    return {
      input: { servers: URL, stream: name, consumer: 'dispatcher', subjects: [`${name}.>`], create: true, ackWait: '2s', maxAckPending: 200 },
      async send(messages: PeerMessage[]) {
        const acks = messages.map((m) => {
          const h = natsHeaders();
          for (const [k, v] of Object.entries(m.headers ?? {})) h.set(k, v);
          if (m.contentType) h.set('content-type', m.contentType);
          return js.publish(`${name}.events`, Buffer.from(m.body), { headers: h });
        });
        await Promise.all(acks);
      },
      async close() {
        await jsm.streams.delete(name).catch(() => {});
        await nc.close().catch(() => {});
      },
    };
  },
  binary(attributes) {
    return Object.fromEntries(Object.entries(attributes).map(([k, v]) => [`ce-${k}`, v]));
  },
});

describe('nats output', () => {
  let unreachable: string | null = null;
  let nc: NatsConnection | undefined;
  const stream = `dispatcher-test-out-${process.pid}`;
  beforeAll(async () => {
    unreachable = await probe();
    reportMissingPeer('transport-nats.test.ts (output)', unreachable);
    if (unreachable !== null) return;
    nc = await connect({ servers: URL });
    await (await jetstreamManager(nc)).streams.add({ name: stream, subjects: [`${stream}.>`] });
  });
  afterAll(async () => {
    if (nc === undefined) return;
    await (await jetstreamManager(nc)).streams.delete(stream).catch(() => {});
    await nc.close();
  });
  const context = { name: 'out', log: pino({ level: 'silent' }) };

  it('publishes through JetStream with headers, content type and the key as Nats-Msg-Id (a repeated key is dropped)', async (t) => {
    if (unreachable !== null) t.skip();
    const out = transport.createOutput!({ servers: URL, subject: `${stream}.default` }, context);
    await out.start();
    try {
      await out.publish([
        { topic: `${stream}.runs`, key: 'run-1', headers: { event_type: 'create', org_id: '42' }, body: Buffer.from('{"a":1}'), contentType: 'application/json' },
        { topic: `${stream}.runs`, key: 'run-1', headers: { event_type: 'create', org_id: '42' }, body: Buffer.from('{"a":1}'), contentType: 'application/json' },
        { headers: {}, body: Buffer.from('plain') },
      ]);
      expect((await out.health()).connected).toBe(true);
    } finally {
      await out.stop();
    }
    const jsm = await jetstreamManager(nc!);
    expect((await jsm.streams.info(stream)).state.messages).toBe(2);
    const first = await jsm.streams.getMessage(stream, { seq: 1 });
    expect(first!.subject).toBe(`${stream}.runs`);
    expect(first!.header.get('event_type')).toBe('create');
    expect(first!.header.get('org_id')).toBe('42');
    expect(first!.header.get('content-type')).toBe('application/json');
    expect(first!.header.get('Nats-Msg-Id')).toBe('run-1');
    expect(first!.json()).toEqual({ a: 1 });
    const second = await jsm.streams.getMessage(stream, { seq: 2 });
    expect(second!.subject).toBe(`${stream}.default`);
    expect(second!.string()).toBe('plain');
  });

  it('publishes on core NATS with jetstream: false', async (t) => {
    if (unreachable !== null) t.skip();
    const subject = `dispatcher-test-core-${process.pid}`;
    const sub = nc!.subscribe(subject, { max: 1 });
    const out = transport.createOutput!({ servers: URL, jetstream: false }, context);
    await out.start();
    try {
      await out.publish([{ topic: subject, headers: { status: 'success' }, body: Buffer.from('hello'), contentType: 'text/plain' }]);
    } finally {
      await out.stop();
    }
    for await (const m of sub) {
      expect(m.subject).toBe(subject);
      expect(m.headers!.get('status')).toBe('success');
      expect(m.headers!.get('content-type')).toBe('text/plain');
      expect(m.string()).toBe('hello');
    }
    expect(sub.getProcessed()).toBe(1);
  });
});

describe('nats input across a server restart', () => {
  // A server of this test's own (the shared one is not restarted): the same binary, JetStream on a temporary folder.
  const missing = missingProgram('nats-server');

  it('consumes on after the server was killed and started again, losing nothing', async (t) => {
    reportMissingPeer('transport-nats.test.ts (restart)', missing);
    if (missing !== null) t.skip();
    const dir = mkdtempSync(join(tmpdir(), 'dispatcher-nats-restart-'));
    const port = await privatePort();
    const url = `nats://127.0.0.1:${port}`;
    const input = transport.createInput!({ servers: url, stream: 'RESTART', consumer: 'dispatcher', subjects: ['restart.>'], create: true, ackWait: 2000, reconnectWait: 200 }, {
      name: 'restart',
      log: pino({ level: 'silent' }),
    });
    try {
      // SIGKILL: an acknowledgement the killed server had not kept brings its message again (intake's
      // deduplication absorbs it); those sent after the restart are acknowledged once and come once.
      const topics = await restartUnderInput({
        command: ['nats-server', '-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir],
        signal: 'SIGKILL',
        ready: async () => (await probeAt(url)) === null,
        input,
        async publish(from, to) {
          const nc = await connect({ servers: url });
          const js = jetstream(nc);
          for (let i = from; i < to; i++) await js.publish('restart.x', String(i));
          await nc.close();
        },
        settleMs: 2500,
        // The consumer's pending count, asked for again once the cached one is a few seconds old.
        after: () => waitFor(() => input.health(), (h) => h.lag === 0 && h.connected, 10_000, 'no lag').then(() => {}),
      });
      expect([...topics]).toEqual(['restart.x']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

async function probeAt(url: string): Promise<string | null> {
  const nc = await connect({ servers: url, timeout: 1000, maxReconnectAttempts: 0 }).catch((err: Error) => err);
  if (nc instanceof Error) return nc.message;
  await nc.close();
  return null;
}
