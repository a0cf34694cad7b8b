/**
 * The delivery suite against Kafka: librdkafka's mock cluster, started by `kcat` (DISPATCHER_TEST_KCAT to
 * name another binary). The mock cluster is a real Kafka protocol peer in one process: topics are created on
 * first use, consumer groups join, rebalance, commit and fetch offsets. What it lacks:
 *
 * - Its metadata names no controller broker (controller id 0, while its brokers are 1..n), and kafkajs sends
 *   an idempotent producer's InitProducerId to the controller, so an idempotent producer cannot start
 *   against it: the producers here (the test's and the output under test) set `idempotent: false`.
 * - SASL and TLS: it speaks plaintext only, so those options are checked up to the kafkajs configuration.
 * - A broker restart: the cluster lives and dies with its process, on new ports each time; a lost cluster is
 *   checked to show in health, not the reconnection.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { kafkaConfig, transport } from '../src/transports/kafka/index.js';
import { fileMockCluster, startMockCluster } from './kafka-mock.js';
import { startDispatcher, waitFor, type TestDispatcher } from './helpers.js';
import { describeDeliveries, type PeerMessage } from './transport.suite.js';

const { cluster, error: clusterError } = await fileMockCluster('transport-kafka.test.ts');

const client = () => new Kafka({ brokers: cluster!.brokers, clientId: 'dispatcher-test', logLevel: logLevel.NOTHING });

async function producer(): Promise<Producer> {
  const p = client().producer({ allowAutoTopicCreation: true, idempotent: false });
  await p.connect();
  return p;
}

if (cluster !== undefined) {
  await describeDeliveries({
    transport: 'kafka',
    async probe() {
      return clusterError;
    },
    async place(topic) {
      const p = await producer();
      return {
        input: {
          brokers: cluster!.brokers,
          topics: [topic],
          groupId: `${topic}-group`,
          fromBeginning: true,
          // A process killed mid-stream leaves the group quickly, so the next one gets its partitions soon.
          sessionTimeout: '6s',
          rebalanceTimeout: '3s',
          heartbeatInterval: '500ms',
        },
        async send(messages: PeerMessage[]) {
          await p.send({
            topic,
            acks: -1,
            // Kafka keeps order within a partition only: keyed messages go where their key hashes, and those
            // without a key (which the suite expects in send order) to partition 0, as a producer that needs
            // their order would pin them.
            messages: messages.map((m) => ({
              ...(m.key === undefined ? { partition: 0 } : { key: m.key }),
              value: Buffer.from(m.body),
              headers: { ...(m.headers ?? {}), ...(m.contentType ? { 'content-type': m.contentType } : {}) },
            })),
          });
        },
        async close() {
          await p.disconnect().catch(() => {});
        },
      };
    },
    binary(attributes) {
      return Object.fromEntries(Object.entries(attributes).map(([k, v]) => [`ce_${k}`, v]));
    },
  });
}

describe.skipIf(cluster === undefined)('kafka transport on the mock cluster', () => {
  const dispatchers: TestDispatcher[] = [];
  afterAll(async () => {
    await Promise.allSettled(dispatchers.map((d) => d.close()));
  });
  let n = 0;
  const fresh = () => `dispatcher-kafka-${process.pid}-${Date.now().toString(36)}-${n++}`;

  it('a tombstone (null value) is a dead letter, and the messages after it flow on', async () => {
    const topic = fresh();
    const p = await producer();
    try {
      const d = await startDispatcher({
        inputs: { bus: { kafka: { brokers: cluster!.brokers, topics: [topic], groupId: topic, fromBeginning: true } } },
        routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }],
      });
      dispatchers.push(d);
      const ce = (id: string) => JSON.stringify({ specversion: '1.0', id, source: 'urn:peer', type: 'peer.test', data: {} });
      await p.send({ topic, acks: -1, messages: [{ key: 'a', value: ce('before') }, { key: 'a', value: null }, { key: 'a', value: ce('after') }] });
      const events = await waitFor(() => d.d.store.listEvents({ limit: 10, offset: 0, sort: { direction: 'asc' } }), (l) => l.total === 2, 20_000, 'two events');
      expect(events.items.map((e) => e.event.id)).toEqual(['before', 'after']);
      const dead = await waitFor(() => d.d.store.listDeadLetters({ limit: 10, offset: 0 }), (l) => l.total === 1, 10_000, 'the tombstone as a dead letter');
      expect(dead.items[0]!.reason).toBe('invalid_json');
      expect(dead.items[0]!.source).toBe('bus');
      // Its headers say where it was: topic, key, and the message id `<topic>/<partition>/<offset>`.
      const headers = dead.items[0]!.headers as Record<string, string>;
      expect(headers[':topic']).toBe(topic);
      expect(headers[':key']).toBe('a');
      expect(headers[':message-id']).toMatch(new RegExp(`^${topic}/\\d+/1$`));
      // Health: connected, and the lag drops to 0 once everything is committed.
      const health = await waitFor(async () => (await d.d.inputHealth())[0]!, (h) => h.connected && h.lag === 0, 20_000, 'lag 0');
      expect(health.lastError).toBeNull();
    } finally {
      await p.disconnect();
    }
  }, 60_000);

  it('a lost broker shows in health: not connected, and health still answers promptly', async () => {
    const own = await startMockCluster(1);
    try {
      const topic = fresh();
      const d = await startDispatcher({
        inputs: { bus: { kafka: { brokers: own.brokers, topics: [topic], groupId: topic, fromBeginning: true, sessionTimeout: '3s', heartbeatInterval: '500ms' } } },
        routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }],
      });
      dispatchers.push(d);
      await waitFor(async () => (await d.d.inputHealth())[0]!, (h) => h.connected && h.lag === 0, 20_000, 'connected');
      own.process.kill('SIGKILL');
      const lost = await waitFor(async () => (await d.d.inputHealth())[0]!, (h) => !h.connected, 20_000, 'the input to report the broker lost');
      expect(lost.lastError).not.toBeNull();
      const started = Date.now();
      await d.d.inputHealth();
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      own.process.kill('SIGKILL');
    }
  }, 60_000);

  it('the output publishes with key, headers and body, acknowledged by the brokers', async () => {
    const topic = fresh();
    const other = fresh();
    const output = transport.createOutput!({ brokers: cluster!.brokers, topic, idempotent: false }, { name: 'bus', log: pino({ level: 'silent' }) });
    const consumer = client().consumer({ groupId: `${topic}-reader`, sessionTimeout: 6000, rebalanceTimeout: 3000, heartbeatInterval: 500 });
    try {
      await output.start();
      expect((await output.health()).connected).toBe(true);
      await output.publish([
        { key: 'run-1', headers: { event_type: 'create', service: 'test', status: 'queued', org_id: '1' }, body: Buffer.from('{"n":1}'), contentType: 'application/json' },
        { key: 'run-1', headers: { event_type: 'update', service: 'test', status: 'success', org_id: '1' }, body: Buffer.from('{"n":2}') },
        { topic: other, headers: {}, body: Buffer.from('elsewhere') },
      ]);
      const got: { topic: string; key: string | null; headers: Record<string, string>; body: string }[] = [];
      await consumer.connect();
      await consumer.subscribe({ topics: [topic, other], fromBeginning: true });
      await consumer.run({
        eachMessage: async ({ topic: t, message }) => {
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
          got.push({ topic: t, key: message.key?.toString() ?? null, headers, body: message.value!.toString() });
        },
      });
      await waitFor(async () => got.length, (l) => l >= 3, 20_000, 'the three messages');
      const mine = got.filter((m) => m.topic === topic);
      expect(mine).toEqual([
        { topic, key: 'run-1', headers: { event_type: 'create', service: 'test', status: 'queued', org_id: '1', 'content-type': 'application/json' }, body: '{"n":1}' },
        { topic, key: 'run-1', headers: { event_type: 'update', service: 'test', status: 'success', org_id: '1' }, body: '{"n":2}' },
      ]);
      expect(got.filter((m) => m.topic === other)).toEqual([{ topic: other, key: null, headers: {}, body: 'elsewhere' }]);
    } finally {
      await consumer.disconnect();
      await output.stop();
    }
  }, 60_000);
});

describe('kafka options', () => {
  it('SASL, TLS and timeouts validate and reach the kafkajs client', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dispatcher-kafka-options-'));
    try {
      const ca = join(dir, 'ca.pem');
      writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n');
      for (const mechanism of ['plain', 'scram-sha-256', 'scram-sha-512'] as const) {
        const file = join(dir, `${mechanism}.yaml`);
        writeFileSync(
          file,
          [
            'inputs:',
            '  bus:',
            '    kafka:',
            '      brokers: ["kafka-1:9093"]',
            '      topics: [orders, "/^audit\\\\..*/"]',
            `      tls: { ca: "${ca}" }`,
            `      sasl: { mechanism: ${mechanism}, username: dispatcher, password: "\${KAFKA_PASSWORD}" }`,
            '      connectionTimeout: 3s',
            '      requestTimeout: 45000',
            '      sessionTimeout: 10s',
            '',
          ].join('\n'),
        );
        const config = await loadConfig({ env: { DISPATCHER_CONFIG: file, KAFKA_PASSWORD: 's3cret' } });
        const options = config.inputs[0]!.options as unknown as Parameters<typeof kafkaConfig>[0];
        const k = kafkaConfig(options, pino({ level: 'silent' }));
        expect(k.sasl).toEqual({ mechanism, username: 'dispatcher', password: 's3cret' });
        expect(k.ssl).toMatchObject({ ca: Buffer.from('-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n') });
        expect(k.connectionTimeout).toBe(3000);
        expect(k.requestTimeout).toBe(45000);
        expect(k.brokers).toEqual(['kafka-1:9093']);
      }
      // TLS asked for with nothing else: the system's certificate authorities.
      expect(kafkaConfig({ brokers: ['k:9093'], tls: { enabled: true } }, pino({ level: 'silent' })).ssl).toBe(true);
      expect(kafkaConfig({ brokers: ['k:9092'] }, pino({ level: 'silent' })).ssl).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses an unknown SASL mechanism and an input without topics, naming the path', async () => {
    await expect(
      loadConfig({ env: {}, overrides: { inputs: { bus: { kafka: { brokers: ['k:9092'], topics: ['t'], sasl: { mechanism: 'gssapi', username: 'u', password: 'p' } } } } } as never }),
    ).rejects.toMatchObject({ message: expect.stringContaining('inputs.bus.kafka.sasl.mechanism') });
    await expect(loadConfig({ env: {}, overrides: { inputs: { bus: { kafka: { brokers: ['k:9092'] } } } } as never })).rejects.toMatchObject({
      message: expect.stringContaining('topics'),
    });
  });
});
