/**
 * The Playbook Dispatcher profile with an ingress service (the original's validator, notes §7.1): the ingress
 * service's announcements on `platform.upload.announce` are taken in by a Kafka input with the
 * `playbook-dispatcher.announce` decoder, each upload is downloaded from a local HTTP server, applied to its run
 * and answered on `platform.upload.validation`, over librdkafka's mock cluster (started by `kcat`, test/kafka-mock.ts;
 * required under CI=true). A run is dispatched through `POST /internal/v2/dispatch`
 * to a fake Cloud Connector first, so that an upload has a run to end.
 */

import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import { Kafka, logLevel, type Consumer, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { profileAdvice } from '../src/cli/advice.js';
import { loadConfig } from '../src/config/load.js';
import type { Run } from '../src/core/types.js';
import { startDispatcher, waitFor, waitForRun, type TestDispatcher } from './helpers.js';
import { startFakeCloudConnector, type FakeCloudConnector } from './fake-cloud-connector.js';
import { fileMockCluster } from './kafka-mock.js';

const { cluster } = await fileMockCluster('playbook-ingress.test.ts', 1);

const ANNOUNCE_TOPIC = 'platform.upload.announce';
const VALIDATION_TOPIC = 'platform.upload.validation';
const PSK = '9yh9WuXWDj';
const RECIPIENT = '35720ecb-bc23-4b06-a8cd-f0c264edf2c1';
const ORG = '5318290';
const ACCOUNT = '0000001';
const BLOCKED = '666';
const ROUTE = 'playbook-dispatcher.ingress';

const FIXTURES = new URL('./fixtures/playbook-dispatcher/examples/', import.meta.url);
const fixture = (path: string) => readFileSync(new URL(path, FIXTURES));
const withCorrelation = (file: Buffer, correlationId: string) => Buffer.from(file.toString('utf8').replaceAll('00000000-0000-0000-0000-000000000000', correlationId));

interface Answer {
  key: string | null;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

/** A local file server: path → bytes, and what was asked of it. */
interface Files {
  url: string;
  files: Map<string, Buffer>;
  requested: string[];
  server: Server;
}

async function startFiles(): Promise<Files> {
  const files = new Map<string, Buffer>();
  const requested: string[] = [];
  const server = createServer((req, res) => {
    const path = req.url ?? '/';
    requested.push(path);
    const file = files.get(path);
    if (file === undefined) {
      res.writeHead(404).end('NoSuchKey');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(file);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, files, requested, server };
}

// The cases run at once: each waits for the consumers' fetches (kafkajs waits up to 5 s on the mock cluster).
describe('playbook-dispatcher ingress: the advice on its input', () => {
  const load = (inputs: Record<string, unknown>) =>
    loadConfig({ env: {}, overrides: { auth: { identityHeader: { enabled: true } }, inputs, outputs: { bus: { kafka: { brokers: ['k:9092'] } } }, profiles: { 'playbook-dispatcher': { ingress: { input: 'announce', output: 'bus' } } } } as never });
  const kafka = { brokers: ['k:9092'], topics: ['platform.upload.announce'], groupId: 'g' };

  it('says nothing of a configured input that decodes announcements', async () => {
    expect(profileAdvice(await load({ announce: { kafka, decoder: { format: 'playbook-dispatcher.announce' } } }))).toEqual([]);
  });

  it('names an input that is missing, or that decodes otherwise', async () => {
    expect(profileAdvice(await load({}))).toEqual([expect.stringMatching(/ingress\.input: no input "announce" is configured/)]);
    expect(profileAdvice(await load({ announce: { kafka } }))).toEqual([expect.stringMatching(/does not decode with playbook-dispatcher\.announce/)]);
  });
});

describe.skipIf(cluster === undefined).concurrent('playbook-dispatcher ingress: announcements in, validation answers out (Kafka)', () => {
  let t: TestDispatcher;
  let app: FastifyInstance;
  let cc: FakeCloudConnector;
  let files: Files;
  let producer: Producer;
  let consumer: Consumer;
  const answers: Answer[] = [];
  const kafka = () => new Kafka({ brokers: cluster!.brokers, clientId: 'dispatcher-ingress-test', logLevel: logLevel.NOTHING });

  beforeAll(async () => {
    // The mock cluster names no controller, so topics are made by producing to them (it creates them on first use):
    // an announcement for another service (skipped) and a message no test waits for.
    producer = kafka().producer({ allowAutoTopicCreation: true, idempotent: false });
    await producer.connect();
    await producer.send({ topic: ANNOUNCE_TOPIC, acks: -1, messages: [{ partition: 0, value: '{"service":"warm-up"}', headers: { service: 'warm-up' } }] });
    await producer.send({ topic: VALIDATION_TOPIC, acks: -1, messages: [{ value: '{}' }] });
    consumer = kafka().consumer({ groupId: 'validation-reader', sessionTimeout: 6000, rebalanceTimeout: 3000, heartbeatInterval: 500, maxWaitTimeInMs: 100 });
    await consumer.connect();
    await consumer.subscribe({ topics: [VALIDATION_TOPIC], fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
        answers.push({ key: message.key?.toString() ?? null, headers, body: JSON.parse(message.value!.toString()) as Record<string, unknown> });
      },
    });

    files = await startFiles();
    cc = await startFakeCloudConnector([RECIPIENT]);
    t = await startDispatcher({
      auth: { keyFile: '', psk: [{ service: 'test02', key: PSK }] },
      inputs: {
        announce: {
          kafka: { brokers: cluster!.brokers, topics: [ANNOUNCE_TOPIC], groupId: 'playbook-dispatcher', fromBeginning: true, sessionTimeout: '6s', rebalanceTimeout: '3s', heartbeatInterval: '500ms' },
          decoder: { format: 'playbook-dispatcher.announce' },
        },
      },
      outputs: { bus: { kafka: { brokers: cluster!.brokers, idempotent: false } } },
      actions: { http: { allow: ['127.0.0.1'] }, playbook: { cloudConnector: { url: cc.url, psk: 'ccpsk' }, rps: 1000, bucket: 100 } },
      profiles: { 'playbook-dispatcher': { blocklist: [BLOCKED], ingress: { input: 'announce', output: 'bus', downloadTimeout: '5s' } } },
    });
    app = await t.d.app();
    await waitFor(async () => (await t.d.inputHealth())[0]!, (h) => h.connected, 30_000, 'the announce input to join its group');
  }, 60_000);

  afterAll(async () => {
    await consumer?.disconnect();
    await producer?.disconnect();
    await t?.close();
    await cc?.close();
    if (files !== undefined) await new Promise((resolve) => files.server.close(resolve));
  });

  /** A playbook run dispatched to the fake Cloud Connector: its id and correlation id. */
  async function dispatchRun(): Promise<{ id: string; correlationId: string }> {
    const res = await app.inject({
      method: 'POST',
      url: '/internal/v2/dispatch',
      headers: { authorization: `PSK ${PSK}`, 'content-type': 'application/json' },
      payload: JSON.stringify([{ recipient: RECIPIENT, org_id: ORG, principal: 'test_user', url: 'http://example.com/playbook.yml', name: 'Red Hat Playbook' }]),
    });
    expect(res.statusCode).toBe(207);
    const [answer] = res.json() as Array<{ code: number; id: string }>;
    expect(answer!.code).toBe(201);
    const run = await t.d.store.getRun(answer!.id);
    expect(cc.messages.map((m) => m.body.metadata.crc_dispatcher_correlation_id)).toContain(run!.correlationId);
    return { id: answer!.id, correlationId: run!.correlationId! };
  }

  /** An announcement as the ingress service writes it, for a file served (or not) at /<request id>. */
  function announcement(overrides: Record<string, unknown> = {}): Record<string, unknown> {
    const requestId = randomUUID().replaceAll('-', '');
    return {
      account: ACCOUNT,
      category: 'playbook',
      metadata: { source: 'test' },
      request_id: requestId,
      org_id: ORG,
      service: 'playbook',
      size: 0,
      url: `${files.url}/${requestId}`,
      id: `id-${requestId}`,
      b64_identity: Buffer.from(JSON.stringify({ identity: { org_id: ORG, type: 'System' } })).toString('base64'),
      timestamp: new Date().toISOString(),
      ...overrides,
    };
  }

  /** Serve `file` at the announcement's URL and give its size. */
  function serve(a: Record<string, unknown>, file: Buffer): Record<string, unknown> {
    files.files.set(new URL(a.url as string).pathname, file);
    return { ...a, size: file.length };
  }

  async function announce(value: Record<string, unknown> | string, service = typeof value === 'string' ? 'playbook' : String(value.service)): Promise<void> {
    await producer.send({
      topic: ANNOUNCE_TOPIC,
      acks: -1,
      messages: [{ partition: 0, value: typeof value === 'string' ? value : JSON.stringify(value), headers: { service } }],
    });
  }

  const answerTo = (requestId: unknown) => waitFor(async () => answers.find((a) => a.body.request_id === requestId), (a) => a !== undefined, 20_000, `the validation answer to ${String(requestId)}`);

  /** The ingress run of the announcement with this request id. */
  async function runOf(requestId: unknown): Promise<Run | undefined> {
    const runs = await t.d.store.listRuns({ route: [ROUTE], limit: 100, offset: 0 });
    for (const run of runs.items) {
      const stored = await t.d.store.getEvent(run.eventKey);
      if ((stored?.event.data as { request_id?: string } | undefined)?.request_id === requestId) return run;
    }
    return undefined;
  }
  const endedRunOf = (requestId: unknown) =>
    waitFor(() => runOf(requestId), (r) => r !== undefined && ['success', 'failure'].includes(r.status), 20_000, `the ingress run of ${String(requestId)}`) as Promise<Run>;

  it('a valid gzip upload is applied (the run ends success), then answered success with the request echoed, key = account', async () => {
    const { id, correlationId } = await dispatchRun();
    const a = serve(announcement(), gzipSync(withCorrelation(fixture('events-success.jsonl'), correlationId)));
    await announce(a);
    const answer = await answerTo(a.request_id);
    // Answered only after it was applied: the run has ended when the answer is there.
    expect((await t.d.store.getRun(id))!.status).toBe('success');
    expect(answer!.key).toBe(ACCOUNT);
    expect(answer!.body).toEqual({ ...a, validation: 'success' });
    expect(answer!.headers['x-rh-insights-request-id']).toBe(a.request_id);
    const hosts = await t.d.store.listHosts({ runId: [id], limit: 10, offset: 0 });
    expect(hosts.items.map((h) => [h.name, h.status])).toEqual([['localhost', 'success']]);
    const ingress = await endedRunOf(a.request_id);
    expect(ingress.status).toBe('success');
    expect(ingress.result).toMatchObject({ validation: 'success', correlationId, runId: id, status: 'success' });
    expect(files.requested).toContain(`/${a.request_id as string}`);
    await waitForRun(t.d, id, ['success']);
  }, 30_000);

  it('an invalid file is answered failure and leaves a dead letter (invalid_upload); its run is untouched', async () => {
    const { id } = await dispatchRun();
    const a = serve(announcement(), Buffer.from('{"event": "x"}\n'));
    await announce(a);
    const answer = await answerTo(a.request_id);
    expect(answer!.body).toEqual({ ...a, validation: 'failure' });
    expect(answer!.key).toBe(ACCOUNT);
    const ingress = await endedRunOf(a.request_id);
    expect(ingress.status).toBe('failure');
    expect(ingress.error).toMatchObject({ code: 'invalid_upload' });
    const letters = await t.d.store.listDeadLetters({ origin: 'run', runId: ingress.id, limit: 10, offset: 0 });
    expect(letters.items).toHaveLength(1);
    expect(letters.items[0]).toMatchObject({ source: ROUTE, reason: 'invalid_upload' });
    expect((await t.d.store.getRun(id))!.status).toBe('running');
  }, 30_000);

  it('size 0 is answered failure without a download', async () => {
    const a = announcement({ size: 0 });
    files.files.set(new URL(a.url as string).pathname, fixture('events-success.jsonl'));
    await announce(a);
    const answer = await answerTo(a.request_id);
    expect(answer!.body).toEqual({ ...a, validation: 'failure' });
    const ingress = await endedRunOf(a.request_id);
    expect(ingress.error).toMatchObject({ code: 'invalid_upload', message: expect.stringContaining('size 0') });
    expect(files.requested).not.toContain(`/${a.request_id as string}`);
  }, 30_000);

  it('a size over upload.maxBytes is answered failure without a download', async () => {
    const a = announcement({ size: 2 * 1024 * 1024 });
    await announce(a);
    expect((await answerTo(a.request_id))!.body.validation).toBe('failure');
    expect(files.requested).not.toContain(`/${a.request_id as string}`);
  }, 30_000);

  it('a URL that answers 404 is answered failure (invalid_upload), without retrying', async () => {
    const a = announcement({ size: 100 });
    await announce(a);
    expect((await answerTo(a.request_id))!.body).toEqual({ ...a, validation: 'failure' });
    const ingress = await endedRunOf(a.request_id);
    expect(ingress.error).toMatchObject({ code: 'invalid_upload', message: expect.stringContaining('404') });
    expect(files.requested.filter((p) => p === `/${a.request_id as string}`)).toHaveLength(1);
  }, 30_000);

  it('a valid upload of no known run is answered success, and its run fails not_found (a dead letter)', async () => {
    const a = serve(announcement(), withCorrelation(fixture('events-success.jsonl'), randomUUID()));
    await announce(a);
    expect((await answerTo(a.request_id))!.body.validation).toBe('success');
    const ingress = await endedRunOf(a.request_id);
    expect(ingress.error).toMatchObject({ code: 'not_found' });
    const letters = await t.d.store.listDeadLetters({ origin: 'run', runId: ingress.id, limit: 10, offset: 0 });
    expect(letters.items[0]).toMatchObject({ source: ROUTE, reason: 'not_found' });
  }, 30_000);

  it('a blocklisted org’s upload is dropped: no download, no answer', async () => {
    const a = serve(announcement({ org_id: BLOCKED }), fixture('events-success.jsonl'));
    await announce(a);
    const ingress = await endedRunOf(a.request_id);
    expect(ingress.status).toBe('success');
    expect(ingress.result).toMatchObject({ dropped: 'blocklist' });
    // An answer after it, with the same key (the same partition): had the drop answered, it would be there first.
    const after = announcement({ size: 0 });
    await announce(after);
    await answerTo(after.request_id);
    expect(answers.find((x) => x.body.request_id === a.request_id)).toBeUndefined();
    expect(files.requested).not.toContain(`/${a.request_id as string}`);
  }, 30_000);

  it('an announcement for another service is skipped (no event, no dead letter); non-JSON is a dead letter', async () => {
    const skipped = serve(announcement({ service: 'advisor' }), fixture('events-success.jsonl'));
    await announce(skipped, 'advisor');
    // After it on the same partition: once its dead letter is there, the skipped one was taken too.
    await announce('not json {', 'playbook');
    const letter = await waitFor(
      async () => (await t.d.store.listDeadLetters({ origin: 'intake', source: 'announce', limit: 10, offset: 0 })).items,
      (items) => items.length > 0,
      20_000,
      'the dead letter of the message that is not JSON',
    );
    expect(letter).toHaveLength(1);
    expect(letter[0]).toMatchObject({ reason: 'invalid_json' });
    expect(letter[0]!.raw.toString()).toBe('not json {');
    const events = await t.d.store.listEvents({ limit: 1000, offset: 0 });
    expect(events.items.filter((e) => (e.event.data as { request_id?: string } | undefined)?.request_id === skipped.request_id)).toEqual([]);
    expect(await runOf(skipped.request_id)).toBeUndefined();
    expect(files.requested).not.toContain(`/${skipped.request_id as string}`);
    expect(answers.find((x) => x.body.request_id === skipped.request_id)).toBeUndefined();
  }, 30_000);
});
