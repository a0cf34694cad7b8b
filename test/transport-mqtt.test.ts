/**
 * The delivery suite against the real Mosquitto on this machine (DISPATCHER_TEST_MQTT_URL to use another),
 * over MQTT 5, and the mqtt output.
 *
 * Each place is a topic and a persistent session under the input's client id, made before anything is
 * sent (as a subscriber's would be), so that the broker keeps messages for the input while no dispatcher
 * is connected. Mosquitto keeps at most `max_queued_messages` (1000 by default) QoS 1 messages for a
 * session beyond those in flight and drops the rest silently: the kill test sends no more than that.
 */

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectAsync, type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { transport } from '../src/transports/mqtt/index.js';
import { privatePort } from './brokers.js';
import { restartUnderInput } from './restart.js';
import { describeDeliveries, reportMissingPeer, type PeerMessage } from './transport.suite.js';

const URL = process.env.DISPATCHER_TEST_MQTT_URL ?? 'mqtt://127.0.0.1:1883';
const V5: IClientOptions = { protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 3000 };

async function probe(): Promise<string | null> {
  try {
    const c = await connectAsync(URL, V5, false);
    await c.endAsync();
    return null;
  } catch (err) {
    return `${URL}: ${(err as Error).message || String(err)} (an MQTT 5 broker such as Mosquitto 2)`;
  }
}

/** The session of `clientId` made (subscribed, kept for ever) or removed. */
async function session(clientId: string, topic: string | null): Promise<void> {
  const keep = topic !== null;
  const c = await connectAsync(URL, { ...V5, clientId, clean: !keep, properties: { sessionExpiryInterval: keep ? 0xffffffff : 0 } });
  if (keep) await c.subscribeAsync(topic, { qos: 1 });
  await c.endAsync();
}

await describeDeliveries({
  transport: 'mqtt',
  probe,
  maxBacklog: 1000,
  async place(name) {
    const filter = `dispatcher-test/${name}/#`;
    await session(name, filter);
    const producer = await connectAsync(URL, { ...V5, clientId: `${name}-producer` });
    return {
      input: { url: URL, topics: [filter], clientId: name },
      async send(messages: PeerMessage[]) {
        await Promise.all(
          messages.map((m) =>
            producer.publishAsync(`dispatcher-test/${name}/events`, Buffer.from(m.body), {
              qos: 1,
              properties: { ...(m.headers ? { userProperties: m.headers } : {}), ...(m.contentType ? { contentType: m.contentType } : {}) },
            }),
          ),
        );
      },
      async close() {
        await producer.endAsync().catch(() => {});
        await session(name, null).catch(() => {});
      },
    };
  },
  binary: (attributes) => ({ ...attributes }),
});

describe('mqtt output', () => {
  let unreachable: string | null = null;
  let subscriber: MqttClient | undefined;
  const topic = `dispatcher-test/out-${process.pid}/runs`;
  const received: IPublishPacket[] = [];
  beforeAll(async () => {
    unreachable = await probe();
    reportMissingPeer('transport-mqtt.test.ts (output)', unreachable);
    if (unreachable !== null) return;
    subscriber = await connectAsync(URL, V5);
    subscriber.on('message', (_topic, _payload, packet) => received.push(packet));
    await subscriber.subscribeAsync(topic, { qos: 1 });
  });
  afterAll(async () => {
    // Clear the retained message.
    if (subscriber === undefined) return;
    await subscriber.publishAsync(topic, '', { qos: 1, retain: true });
    await subscriber.endAsync();
  });

  it('publishes with QoS 1, user properties, the content type, and retain', async (t) => {
    if (unreachable !== null) t.skip();
    const out = transport.createOutput!({ url: URL, topic, retain: true }, { name: 'out', log: pino({ level: 'silent' }) });
    await out.start();
    try {
      await out.publish([{ headers: { event_type: 'create', org_id: '42' }, body: Buffer.from('{"a":1}'), contentType: 'application/json', key: 'run-1' }]);
      expect((await out.health()).connected).toBe(true);
    } finally {
      await out.stop();
    }
    await expect.poll(() => received.length, { timeout: 5000 }).toBe(1);
    const p = received[0]!;
    expect(p.topic).toBe(topic);
    expect(p.qos).toBe(1);
    expect(p.properties?.userProperties).toEqual({ event_type: 'create', org_id: '42' });
    expect(p.properties?.contentType).toBe('application/json');
    expect(JSON.parse(p.payload.toString())).toEqual({ a: 1 });
    // Retained: a new subscriber gets it at once.
    const late = await connectAsync(URL, V5);
    try {
      const got = new Promise<IPublishPacket>((resolve) => late.on('message', (_t, _m, packet) => resolve(packet)));
      await late.subscribeAsync(topic, { qos: 1 });
      const retained = await got;
      expect(retained.retain).toBe(true);
      expect(retained.payload.toString()).toBe('{"a":1}');
    } finally {
      await late.endAsync();
    }
  });
});

describe('mqtt input across a broker restart', () => {
  // A broker of this test's own (the shared one is not restarted), with persistence, as a production one would have.
  const found = spawnSync('mosquitto', ['-h'], { encoding: 'utf8' });
  const missing = /mosquitto version 2/.test(found.stdout ?? '') ? null : `Mosquitto 2 is not on the PATH (${found.error?.message ?? found.stdout})`;

  it('consumes on after the broker was stopped and started again', async (t) => {
    reportMissingPeer('transport-mqtt.test.ts (restart)', missing);
    if (missing !== null) t.skip();
    const dir = mkdtempSync(join(tmpdir(), 'dispatcher-mqtt-restart-'));
    const port = await privatePort();
    const url = `mqtt://127.0.0.1:${port}`;
    const config = join(dir, 'mosquitto.conf');
    writeFileSync(config, `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location ${dir}/\n`);
    const input = transport.createInput!({ url, topics: ['restart/#'], clientId: 'dispatcher-restart', reconnectPeriod: 200 }, { name: 'restart', log: pino({ level: 'silent' }) });
    try {
      // SIGTERM: Mosquitto writes its persistence file (sessions, subscriptions, queued messages) as it stops.
      const topics = await restartUnderInput({
        command: ['mosquitto', '-c', config],
        signal: 'SIGTERM',
        ready: () => connectAsync(url, V5, false).then((c) => c.endAsync().then(() => true), () => false),
        input,
        async publish(from, to) {
          const c = await connectAsync(url, { ...V5, clientId: 'restart-producer' });
          await Promise.all(Array.from({ length: to - from }, (_, i) => c.publishAsync('restart/x', String(from + i), { qos: 1 })));
          await c.endAsync();
        },
        settleMs: 1000,
      });
      expect([...topics]).toEqual(['restart.x']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
