/**
 * Brokers restarted mid-stream. A producer sends numbered events and resends what the broker did not
 * confirm; meanwhile the broker is restarted. The dispatcher's input reconnects with backoff by itself, and
 * in the end every event sent is there exactly once, with exactly one run.
 *
 * The brokers are the tests' own (test/brokers.ts), so restarting them disturbs no other test.
 */

import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import amqp from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { missingProgram, startNats, startRabbitMq, type PrivateBroker } from './brokers.js';
import { startDispatcher, waitFor, type TestDispatcher } from './helpers.js';

const requireServices = process.env.CI === 'true';
const TOTAL = 3000;
const CHUNK = 100;

function ce(i: number): Buffer {
  return Buffer.from(JSON.stringify({ specversion: '1.0', id: `f-${i}`, source: 'urn:faults', type: 'faults.test', data: { n: i } }));
}

/** Sends `total` events in chunks; a chunk the broker did not confirm is sent again after reconnecting. */
async function produce(send: (from: number, to: number) => Promise<void>, total: number, onChunk: (sent: number) => void): Promise<number> {
  let resent = 0;
  for (let from = 0; from < total; from += CHUNK) {
    const to = Math.min(total, from + CHUNK);
    for (;;) {
      try {
        await send(from, to);
        break;
      } catch {
        resent += 1;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    onChunk(to);
    await new Promise((r) => setTimeout(r, 5));
  }
  return resent;
}

async function expectEveryEventOnce(d: TestDispatcher, total: number): Promise<void> {
  const events = await waitFor(() => d.d.store.listEvents({ limit: 1, offset: 0 }), (l) => l.total >= total, 60_000, `${total} events`);
  expect(events.total).toBe(total);
  const runs = await waitFor(() => d.d.store.listRuns({ limit: 1, offset: 0, status: ['success'] }), (l) => l.total >= total, 60_000, `${total} runs`);
  expect(runs.total).toBe(total);
  expect((await d.d.store.listRuns({ limit: 1, offset: 0 })).total).toBe(total);
}

const rabbitMissing = missingProgram('rabbitmq-server') ?? missingProgram('rabbitmqctl');
if (rabbitMissing !== null && !requireServices) console.warn(`faults.test.ts (RabbitMQ) skipped: ${rabbitMissing}. Install rabbitmq-server, or set CI=true to make this a failure.`);

describe.skipIf(rabbitMissing !== null && !requireServices)('RabbitMQ restarted mid-stream', () => {
  let broker: PrivateBroker;
  let d: TestDispatcher | undefined;
  beforeAll(async () => {
    if (rabbitMissing !== null) throw new Error(`faults.test.ts: ${rabbitMissing}; with CI=true it must run`);
    broker = await startRabbitMq();
  }, 90_000);
  afterAll(async () => {
    await d?.close();
    await broker?.stop();
  }, 60_000);

  it('reconnects and loses nothing, doubles nothing', async () => {
    const queue = 'faults';
    d = await startDispatcher({
      inputs: { bus: { amqp: { url: broker.url, queue, prefetch: 200 } } },
      routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }],
    });
    let connection: amqp.ChannelModel | undefined;
    let channel: amqp.ConfirmChannel | undefined;
    const send = async (from: number, to: number) => {
      if (channel === undefined) {
        connection = await amqp.connect(broker.url);
        connection.on('error', () => {});
        connection.on('close', () => (channel = undefined));
        channel = await connection.createConfirmChannel();
        channel.on('error', () => {});
        await channel.assertQueue(queue, { durable: true });
      }
      for (let i = from; i < to; i++) channel.sendToQueue(queue, ce(i), { persistent: true, contentType: 'application/cloudevents+json' });
      await channel.waitForConfirms();
    };
    let restarted: Promise<void> | undefined;
    const resent = await produce(send, TOTAL, (sent) => {
      if (sent === TOTAL / 2) restarted = broker.restart();
    });
    await restarted;
    await connection?.close().catch(() => {});
    await expectEveryEventOnce(d, TOTAL);
    const [health] = await d.d.inputHealth();
    expect(health!.lastError).not.toBeNull();
    await waitFor(async () => (await d!.d.inputHealth())[0]!.connected, (c) => c, 20_000, 'the input to be connected again');
    console.log(`RabbitMQ restart: ${resent} chunks resent by the producer; last input error: ${health!.lastError}`);
  }, 120_000);
});

const natsMissing = missingProgram('nats-server');
if (natsMissing !== null && !requireServices) console.warn(`faults.test.ts (NATS) skipped: ${natsMissing}. Install nats-server, or set CI=true to make this a failure.`);

describe.skipIf(natsMissing !== null && !requireServices)('NATS restarted mid-stream', () => {
  let broker: PrivateBroker;
  let d: TestDispatcher | undefined;
  beforeAll(async () => {
    if (natsMissing !== null) throw new Error(`faults.test.ts: ${natsMissing}; with CI=true it must run`);
    broker = await startNats();
  }, 60_000);
  afterAll(async () => {
    await d?.close();
    await broker?.stop();
  }, 60_000);

  it('reconnects and loses nothing, doubles nothing', async () => {
    const stream = 'faults';
    let nc: NatsConnection | undefined;
    const connectProducer = async () => {
      nc = await connect({ servers: broker.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] }).catch(async () => jsm.streams.info(stream));
    };
    await connectProducer();
    d = await startDispatcher({
      inputs: { bus: { nats: { servers: broker.url, stream, consumer: 'dispatcher', subjects: [`${stream}.>`], create: true, ackWait: '5s', maxAckPending: 500 } } },
      routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }],
    });
    const send = async (from: number, to: number) => {
      const js = jetstream(nc!, { timeout: 2000 });
      await Promise.all(Array.from({ length: to - from }, (_, k) => js.publish(`${stream}.events`, ce(from + k))));
    };
    let restarted: Promise<void> | undefined;
    const resent = await produce(send, TOTAL, (sent) => {
      if (sent === TOTAL / 2) restarted = broker.restart();
    });
    await restarted;
    await expectEveryEventOnce(d, TOTAL);
    await waitFor(async () => (await d!.d.inputHealth())[0]!.connected, (c) => c, 20_000, 'the input to be connected again');
    const [health] = await d.d.inputHealth();
    console.log(`NATS restart: ${resent} chunks resent by the producer; last input error: ${health!.lastError}`);
    await nc?.close();
  }, 120_000);
});
