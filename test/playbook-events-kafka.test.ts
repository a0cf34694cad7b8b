/**
 * The Playbook Dispatcher's event interface on a real bus: a dispatcher with the profile on and a Kafka output
 * whose two streams use the profile's presenters (`playbook-dispatcher.run` on
 * `platform.playbook-dispatcher.runs`, `playbook-dispatcher.run-host` on `platform.playbook-dispatcher.run-hosts`),
 * both filtered to the profile's runs, against librdkafka's mock cluster (started by `kcat`, as in
 * transport-kafka.test.ts: required under CI=true). Runs are dispatched through the internal API to a fake Cloud
 * Connector and ended by result uploads; what reaches the topics is read back with a kafkajs consumer and held
 * to the original's schemas (run.event.yaml, run.host.event.yaml), keys, headers and per-run order.
 *
 * The mock cluster's metadata names no controller, so the output's producer is not idempotent (see
 * transport-kafka.test.ts).
 */

import { readFileSync } from 'node:fs';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { FastifyInstance } from 'fastify';
import { Kafka, logLevel, type Consumer } from 'kafkajs';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileMockCluster } from './kafka-mock.js';
import { AUTH, startDispatcher, waitFor, waitForRun, type TestDispatcher } from './helpers.js';
import { startFakeCloudConnector, type FakeCloudConnector } from './fake-cloud-connector.js';

const { cluster } = await fileMockCluster('playbook-events-kafka.test.ts');

// The original's schemas, loaded as playbook-events.test.ts loads them: strict Ajv, `javaType` (jsonschema2pojo's
// class name) the one keyword added.
const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;
const ajv = new Ajv({ allErrors: true, strict: true });
addFormats(ajv);
ajv.addKeyword({ keyword: 'javaType', schemaType: 'string' });
for (const file of ['run.event.yaml', 'run.host.event.yaml']) {
  ajv.addSchema(parse(readFileSync(new URL(`./fixtures/playbook-dispatcher/schema/${file}`, import.meta.url), 'utf8')) as object);
}
const runSchema = ajv.getSchema('run') as ValidateFunction;
const hostSchema = ajv.getSchema('runhost') as ValidateFunction;
const invalid = (validate: ValidateFunction, value: unknown): string | null => (validate(value) ? null : ajv.errorsText(validate.errors));

const FIXTURES = new URL('./fixtures/playbook-dispatcher/', import.meta.url);
const fixture = (path: string) => readFileSync(new URL(path, FIXTURES));
const withCorrelation = (file: Buffer, correlationId: string) => Buffer.from(file.toString('utf8').replaceAll('00000000-0000-0000-0000-000000000000', correlationId));

const RUNS_TOPIC = 'platform.playbook-dispatcher.runs';
const HOSTS_TOPIC = 'platform.playbook-dispatcher.run-hosts';
const ORG = '5318290';
const RECIPIENT = '35720ecb-bc23-4b06-a8cd-f0c264edf2c1';
const RECIPIENT_2 = 'dd018b96-da04-4651-84d1-187fa5c23f6c';
const OFFLINE = 'b31955fb-3064-4b08-a9e0-e4d1be8b5a6f';
const INVENTORY = '16372e6f-1c18-4cdb-b780-50ab4b88e74b';

function identity(orgId: string): string {
  return Buffer.from(JSON.stringify({ identity: { org_id: orgId, internal: { org_id: orgId }, type: 'System', system: { cn: 'host' } } })).toString('base64');
}

interface Received {
  topic: string;
  partition: number;
  offset: number;
  key: string | null;
  headers: Record<string, string>;
  value: { event_type: string; payload: Record<string, unknown> };
  text: string;
}

describe.skipIf(cluster === undefined)('Playbook Dispatcher run and run-host events on Kafka (mock cluster)', () => {
  let t: TestDispatcher;
  let app: FastifyInstance;
  let cc: FakeCloudConnector;
  let consumer: Consumer | undefined;
  const kafka = () => new Kafka({ brokers: cluster!.brokers, clientId: 'playbook-events-test', logLevel: logLevel.NOTHING });

  // Filled by the scenario below, read by the checks.
  const ids = { noop: '', success: '', failure: '' };
  const correlation = { success: '', failure: '' };
  let refusedAnswer: unknown;
  const received: Received[] = [];

  beforeAll(async () => {
    cc = await startFakeCloudConnector([RECIPIENT, RECIPIENT_2]);
    t = await startDispatcher({
      actions: { http: { allow: ['127.0.0.1'] }, playbook: { cloudConnector: { url: cc.url, psk: 'ccpsk' } } },
      profiles: { 'playbook-dispatcher': {} },
      routes: [{ name: 'plain', match: { type: 'example.plain' }, actions: [{ noop: {} }] }],
      outputs: {
        bus: {
          kafka: { brokers: cluster!.brokers, idempotent: false },
          streams: [
            { stream: 'runEvents', topic: RUNS_TOPIC, presenter: 'playbook-dispatcher.run', filter: { profile: ['playbook-dispatcher'] } },
            { stream: 'hostEvents', topic: HOSTS_TOPIC, presenter: 'playbook-dispatcher.run-host', filter: { profile: ['playbook-dispatcher'] } },
          ],
        },
      },
    });
    app = await t.d.app();

    // 1. A run of a plain route (noop), ended before the playbook runs start: its run events come first in the
    //    outbox, so once the relays have passed the later ones, they have passed these.
    const plain = await app.inject({
      method: 'POST',
      url: '/v1/events',
      headers: { ...AUTH, 'content-type': 'application/cloudevents+json' },
      payload: JSON.stringify({ specversion: '1.0', id: 'plain-1', source: 'urn:test', type: 'example.plain', data: { hello: 'world' } }),
    });
    expect(plain.statusCode, plain.body).toBe(202);
    ids.noop = (plain.json() as { events: Array<{ runs: string[] }> }).events[0]!.runs[0]!;
    expect(ids.noop).toMatch(/^[0-9a-f-]{36}$/);
    await waitForRun(t.d, ids.noop, ['success'], 10_000);

    const dispatch = (body: unknown) =>
      app.inject({ method: 'POST', url: '/internal/v2/dispatch', headers: { ...AUTH, 'content-type': 'application/json' }, payload: JSON.stringify(body) });

    // 2. A dispatch to a recipient the connector does not know: refused.
    const refused = await dispatch([{ recipient: OFFLINE, org_id: ORG, principal: 'jdoe', url: 'http://example.com/offline.yml', name: 'Offline' }]);
    expect(refused.statusCode).toBe(207);
    refusedAnswer = refused.json();

    // 3. Two runs: one with a host (to end in success), one without (to end in failure).
    const res = await dispatch([
      { recipient: RECIPIENT, org_id: ORG, principal: 'jdoe', url: 'http://example.com/success.yml', name: 'Succeeds', labels: { 'state-id': '1234' }, hosts: [{ ansible_host: 'localhost', inventory_id: INVENTORY }] },
      { recipient: RECIPIENT_2, org_id: ORG, principal: 'jdoe', url: 'http://example.com/failure.yml', name: 'Fails', timeout: 600 },
    ]);
    expect(res.statusCode, res.body).toBe(207);
    const answers = res.json() as Array<{ code: number; id?: string; message?: string }>;
    expect(answers.map((a) => a.code)).toEqual([201, 201]);
    ids.success = answers[0]!.id!;
    ids.failure = answers[1]!.id!;
    for (const [which, recipient] of [['success', RECIPIENT], ['failure', RECIPIENT_2]] as const) {
      const run = await t.d.store.getRun(ids[which]);
      expect(run?.status).toBe('running');
      correlation[which] = run!.correlationId!;
      // The connector got the directive with this correlation id, for this recipient.
      expect(cc.messages.filter((m) => m.recipient === recipient).map((m) => m.body.metadata.crc_dispatcher_correlation_id)).toEqual([correlation[which]]);
    }

    // 4. The results: success for the first, failure for the second.
    const upload = (file: Buffer) => {
      const boundary = '----dispatcher-test';
      const payload = Buffer.concat([
        Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="events"\r\nContent-Type: application/vnd.redhat.playbook.v1+jsonl\r\n\r\n`),
        file,
        Buffer.from(`\r\n--${boundary}--\r\n`),
      ]);
      return app.inject({ method: 'POST', url: '/api/ingress/v1/upload', headers: { 'x-rh-identity': identity(ORG), 'content-type': `multipart/form-data; boundary=${boundary}` }, payload });
    };
    const up1 = await upload(withCorrelation(fixture('examples/events-success.jsonl'), correlation.success));
    expect(up1.statusCode, up1.body).toBe(202);
    expect((up1.json() as { run: { id: string; status: string } }).run).toMatchObject({ id: ids.success, status: 'success' });
    const up2 = await upload(withCorrelation(fixture('examples/events-failure.jsonl'), correlation.failure));
    expect(up2.statusCode, up2.body).toBe(202);
    expect((up2.json() as { run: { id: string; status: string } }).run).toMatchObject({ id: ids.failure, status: 'failure' });

    // 5. Both streams relayed to the end of the outbox, confirmed by the brokers.
    await waitFor(
      async () => (await t.d.outputHealth()).flatMap((o) => o.relays),
      (relays) => relays.length === 2 && relays.every((r) => r.holder && r.lag === 0 && r.lastError === null),
      30_000,
      'both relays to reach the end of the outbox',
    );

    // 6. Everything on both topics, read back to each partition's high watermark (bounded by a deadline).
    const admin = kafka().admin();
    await admin.connect();
    try {
      const ends = new Map<string, Map<number, number>>();
      for (const topic of [RUNS_TOPIC, HOSTS_TOPIC]) {
        ends.set(topic, new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, Number(p.high)])));
      }
      consumer = kafka().consumer({ groupId: `playbook-events-${process.pid}-${Date.now().toString(36)}`, sessionTimeout: 6000, rebalanceTimeout: 3000, heartbeatInterval: 500 });
      await consumer.connect();
      await consumer.subscribe({ topics: [RUNS_TOPIC, HOSTS_TOPIC], fromBeginning: true });
      const next = new Map<string, number>();
      await consumer.run({
        eachMessage: async ({ topic, partition, message }) => {
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
          const text = message.value?.toString('utf8') ?? '';
          received.push({ topic, partition, offset: Number(message.offset), key: message.key?.toString('utf8') ?? null, headers, value: JSON.parse(text) as Received['value'], text });
          next.set(`${topic}/${partition}`, Number(message.offset) + 1);
        },
      });
      await waitFor(
        async () => [...ends].flatMap(([topic, parts]) => [...parts].filter(([p, high]) => (next.get(`${topic}/${p}`) ?? 0) < high).map(([p, high]) => `${topic}/${p} at ${next.get(`${topic}/${p}`) ?? 0} of ${high}`)),
        (behind) => behind.length === 0,
        30_000,
        'the consumer to read both topics to their high watermarks',
      );
    } finally {
      await admin.disconnect();
    }
  }, 120_000);

  afterAll(async () => {
    await consumer?.disconnect().catch(() => {});
    await t?.close();
    await cc?.close();
  });

  const runs = () => received.filter((m) => m.topic === RUNS_TOPIC);
  const hosts = () => received.filter((m) => m.topic === HOSTS_TOPIC);
  const byKey = (list: Received[], key: string) => list.filter((m) => m.key === key).sort((a, b) => a.offset - b.offset);

  it('the schemas as loaded reject what the original would not send (so the checks below can fail)', () => {
    const run = runs()[0];
    const host = hosts()[0];
    expect(run).toBeDefined();
    expect(host).toBeDefined();
    expect(runSchema({ ...run!.value, payload: { ...run!.value.payload, status: 'queued' } })).toBe(false);
    expect(runSchema({ ...run!.value, event_type: 'upsert' })).toBe(false);
    const { recipient: _r, ...noRecipient } = run!.value.payload;
    expect(runSchema({ ...run!.value, payload: noRecipient })).toBe(false);
    expect(hostSchema({ ...host!.value, payload: { ...host!.value.payload, status: 'queued' } })).toBe(false);
    expect(hostSchema({ ...host!.value, payload: { ...host!.value.payload, run_id: 42 } })).toBe(false);
  });

  it('every run event validates against run.event.yaml and every host event against run.host.event.yaml', () => {
    expect(runs().length).toBeGreaterThan(0);
    expect(hosts().length).toBeGreaterThan(0);
    for (const m of runs()) expect(invalid(runSchema, m.value), m.text).toBeNull();
    for (const m of hosts()) expect(invalid(hostSchema, m.value), m.text).toBeNull();
  });

  it('run events: key the run id, headers event_type, service, status and org_id and no others, matching the value', () => {
    for (const m of runs()) {
      expect(m.key, m.text).toBe(m.value.payload.id);
      expect(Object.keys(m.headers).sort(), m.text).toEqual(['event_type', 'org_id', 'service', 'status']);
      expect(m.headers, m.text).toEqual({ event_type: m.value.event_type, service: 'test', status: m.value.payload.status, org_id: ORG });
      expect(Object.keys(m.value)).toEqual(['event_type', 'payload']);
    }
  });

  it('host events: key the host id, headers event_type and status and no others, matching the value', () => {
    for (const m of hosts()) {
      expect(m.key, m.text).toBe(m.value.payload.id);
      expect(Object.keys(m.headers).sort(), m.text).toEqual(['event_type', 'status']);
      expect(m.headers, m.text).toEqual({ event_type: m.value.event_type, status: m.value.payload.status });
      expect(Object.keys(m.value)).toEqual(['event_type', 'payload']);
    }
  });

  it('each run: create (running), then update to its end, with its dispatch in the payload', async () => {
    for (const [which, recipient, url, name, timeout, end, labels] of [
      ['success', RECIPIENT, 'http://example.com/success.yml', 'Succeeds', 3600, 'success', { 'state-id': '1234' }],
      ['failure', RECIPIENT_2, 'http://example.com/failure.yml', 'Fails', 600, 'failure', {}],
    ] as const) {
      const id = ids[which];
      const stored = (await t.d.store.getRun(id))!;
      expect(stored.status).toBe(end);
      const mine = byKey(runs(), id);
      expect(mine.map((m) => [m.value.event_type, m.value.payload.status]), which).toEqual([
        ['create', 'running'],
        ['update', end],
      ]);
      expect(new Set(mine.map((m) => m.partition)).size).toBe(1);
      for (const m of mine) {
        expect(m.value.payload).toMatchObject({
          id,
          org_id: ORG,
          recipient,
          correlation_id: correlation[which],
          service: 'test',
          url,
          labels,
          name,
          recipient_config: {},
          timeout,
          created_at: new Date(stored.createdAt).toISOString(),
        });
      }
      expect(mine[1]!.value.payload.updated_at).toBe(new Date(stored.updatedAt).toISOString());
    }
  });

  it('the dispatched host: create (running, no output yet), then update (success) with the run\'s output as stdout', async () => {
    const listed = await t.d.store.listHosts({ runId: [ids.success], limit: 10, offset: 0 });
    expect(listed.items.map((h) => [h.name, h.status])).toEqual([['localhost', 'success']]);
    const host = listed.items[0]!;
    expect(host.log).toContain('PLAY [ping]');
    const mine = byKey(hosts(), host.id);
    expect(mine.map((m) => [m.value.event_type, m.value.payload.status])).toEqual([
      ['create', 'running'],
      ['update', 'success'],
    ]);
    for (const m of mine) expect(m.value.payload).toMatchObject({ id: host.id, run_id: ids.success, inventory_id: INVENTORY, host: 'localhost' });
    expect(mine[0]!.value.payload.stdout).toBe('');
    expect(mine[1]!.value.payload.stdout).toBe(host.log);
    expect(mine[1]!.value.payload.stdout).toContain('ok: [localhost]');
  });

  it('the failed run\'s host, made by its upload: one create (failure) with its output, no inventory id', async () => {
    const listed = await t.d.store.listHosts({ runId: [ids.failure], limit: 10, offset: 0 });
    expect(listed.items.map((h) => [h.name, h.status])).toEqual([['localhost', 'failure']]);
    const host = listed.items[0]!;
    const mine = byKey(hosts(), host.id);
    expect(mine.map((m) => [m.value.event_type, m.value.payload.status])).toEqual([['create', 'failure']]);
    expect(mine[0]!.value.payload).toEqual({
      id: host.id,
      run_id: ids.failure,
      host: 'localhost',
      stdout: host.log,
      status: 'failure',
      created_at: new Date(host.createdAt).toISOString(),
      updated_at: new Date(host.updatedAt).toISOString(),
    });
    expect(host.log).toContain('FAILED!');
  });

  it('nothing else: only the two playbook runs and their hosts, in exactly these numbers', async () => {
    const hostOf = async (runId: string) => (await t.d.store.listHosts({ runId: [runId], limit: 10, offset: 0 })).items.map((h) => h.id);
    const [successHost] = await hostOf(ids.success);
    const [failureHost] = await hostOf(ids.failure);
    expect(successHost).toBeDefined();
    expect(failureHost).toBeDefined();
    expect(runs().map((m) => m.key).sort()).toEqual([ids.success, ids.success, ids.failure, ids.failure].sort());
    expect(hosts().map((m) => m.key).sort()).toEqual([successHost, successHost, failureHost].sort());
  });

  it('the noop run of a plain route is in the outbox but on neither topic', async () => {
    const outbox = await t.d.store.readRunEvents(0, 10_000);
    // Not vacuous: the plain route's run wrote run events, which the streams passed over.
    expect(outbox.filter((e) => e.kind === 'run' && e.runId === ids.noop).length).toBeGreaterThan(0);
    expect(received.filter((m) => m.key === ids.noop || m.text.includes(ids.noop))).toEqual([]);
    expect(received.filter((m) => m.value.payload.run_id === ids.noop)).toEqual([]);
  });

  it('a dispatch the connector refused (recipient not connected) made no run and no message', async () => {
    expect(refusedAnswer).toEqual([{ code: 404, message: 'Receipient not found' }]);
    // The connector was asked and said no: nothing it recorded.
    expect(cc.messages.filter((m) => m.recipient === OFFLINE)).toEqual([]);
    const outbox = await t.d.store.readRunEvents(0, 10_000);
    const runIds = new Set(outbox.filter((e) => e.kind === 'run').map((e) => e.runId));
    expect([...runIds].sort()).toEqual([ids.noop, ids.success, ids.failure].sort());
    expect(received.filter((m) => m.text.includes(OFFLINE) || m.text.includes('offline.yml'))).toEqual([]);
  });
});
