/**
 * The CISO Assistant profile end to end: observations produced to Kafka (librdkafka's mock cluster, started
 * by kcat: test/kafka-mock.ts), consumed by the profile's own input, applied to a fake CISO Assistant API
 * over a real socket (test/fake-ciso.ts), files read from a real S3-compatible server (s3rver), and every
 * failure produced on the errors topic as the original's `{"message", "error"}`. The original's sample
 * messages and README examples (test/fixtures/ciso-assistant/) are the first cases.
 */

import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Kafka, logLevel, type Consumer, type Producer } from 'kafkajs';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Run } from '../src/core/types.js';
import { privatePort } from './brokers.js';
import { startFakeCiso, type FakeCiso } from './fake-ciso.js';
import { startDispatcher, waitFor, type TestDispatcher } from './helpers.js';
import { fileMockCluster } from './kafka-mock.js';

const { cluster } = await fileMockCluster('ciso-assistant.test.ts', 1);

const FIXTURES = new URL('./fixtures/ciso-assistant/', import.meta.url);
const fixture = (path: string) => JSON.parse(readFileSync(new URL(path, FIXTURES), 'utf8')) as Record<string, any>;
const TOKEN = 'pat-0123456789';
const S3_KEY = { accessKey: 'S3RVER', secretKey: 'S3RVER' };
const MiB = 1024 * 1024;

interface ErrorMessage {
  message: unknown;
  error: string;
}

/** How an errors-topic message came: its key and headers (not part of the JSON). */
const envelopes = new WeakMap<ErrorMessage, { key: string | null; headers: Record<string, string> }>();

describe.skipIf(cluster === undefined)('ciso-assistant profile (Kafka → CISO Assistant API)', () => {
  const topic = `observation-${randomBytes(3).toString('hex')}`;
  const errorsTopic = `errors-${randomBytes(3).toString('hex')}`;
  let t: TestDispatcher;
  let api: FakeCiso;
  let s3: S3rver;
  let s3Dir: string;
  let s3Url: string;
  let producer: Producer;
  let consumer: Consumer;
  const errors: ErrorMessage[] = [];
  const kafka = () => new Kafka({ brokers: cluster!.brokers, clientId: 'ciso-test', logLevel: logLevel.NOTHING });

  const profile = () => ({
    api: { url: api.url, token: TOKEN },
    kafka: { bootstrapServers: cluster!.brokers, topic, groupId: `ciso-${topic}`, maxWait: '100ms' },
    errorsTopic,
    s3: { url: s3Url, ...S3_KEY },
    maxFileBytes: MiB,
    messageTypes: { update_risk_scenario: { resource: 'risk-scenarios' }, create_risk_scenario: { resource: 'risk-scenarios', method: 'POST' } },
  });

  const start = async (dir?: string) =>
    startDispatcher(
      { actions: { http: { allow: ['127.0.0.1'] } }, runner: { poll: '100ms', sweepInterval: '200ms' }, profiles: { 'ciso-assistant': profile() } },
      dir === undefined ? {} : { storeUrl: `sqlite:${join(dir, 'dispatcher.db')}` },
    );

  beforeAll(async () => {
    s3Dir = mkdtempSync(join(tmpdir(), 'ciso-s3-'));
    const port = await privatePort();
    s3 = new S3rver({ address: '127.0.0.1', port, silent: true, directory: s3Dir });
    await s3.run();
    s3Url = `http://127.0.0.1:${port}`;
    const client = new S3Client({ endpoint: s3Url, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: S3_KEY.accessKey, secretAccessKey: S3_KEY.secretKey } });
    await client.send(new CreateBucketCommand({ Bucket: 'bucket' }));
    await client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'sample.jpeg', Body: Buffer.from('JPEG bytes from S3') }));
    await client.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'huge.bin', Body: randomBytes(2 * MiB) }));
    client.destroy();

    api = await startFakeCiso({
      tokens: [TOKEN],
      pageSize: 2,
      objects: {
        'applied-controls': [
          { id: 'ac-foo', ref_id: 'foo', name: 'Foo', priority: 3, evidences: [{ id: 'ev-old' }] },
          ...Array.from({ length: 5 }, (_, i) => ({ id: `ac-many-${i}`, ref_id: `many-${i}`, folder: 'many', priority: 0, evidences: [] })),
        ],
        'requirement-assessments': [
          { id: 'ra-1', compliance_assessment__ref_id: 'ISO_001', requirement__ref_id: 'A.5.1', result: 'not_assessed' },
          { id: 'ra-2', compliance_assessment__ref_id: 'ISO_001', requirement__ref_id: 'A.5.2', result: 'not_assessed' },
        ],
        evidences: [{ id: 'ev-bar', name: 'Sample evidence', ref_id: 'bar' }],
        'risk-scenarios': [{ id: 'rs-1', ref_id: 'R.1', treatment: 'open' }],
      },
    });

    // Topics exist once something is produced to them (the mock cluster names no controller).
    producer = kafka().producer({ allowAutoTopicCreation: true, idempotent: false });
    await producer.connect();
    await producer.send({ topic: errorsTopic, acks: -1, messages: [{ value: '{"warm":"up"}' }] });
    consumer = kafka().consumer({ groupId: `errors-reader-${errorsTopic}`, sessionTimeout: 6000, rebalanceTimeout: 3000, heartbeatInterval: 500, maxWaitTimeInMs: 100 });
    await consumer.connect();
    await consumer.subscribe({ topics: [errorsTopic], fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const value = JSON.parse(message.value!.toString()) as ErrorMessage & { warm?: string };
        if (value.warm !== undefined) return;
        const headers = Object.fromEntries(Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)]));
        envelopes.set(value, { key: message.key === null ? null : message.key.toString(), headers });
        errors.push(value);
      },
    });
    t = await start();
    await waitFor(async () => (await t.d.inputHealth())[0]!, (h) => h.connected, 60_000, 'the observation input to join its group');
  }, 120_000);

  afterAll(async () => {
    await consumer?.disconnect();
    await producer?.disconnect();
    await t?.close();
    await api?.close();
    await s3?.close();
    if (s3Dir !== undefined) rmSync(s3Dir, { recursive: true, force: true });
  });

  const produce = async (value: unknown) => {
    await producer.send({ topic, acks: -1, messages: [{ value: typeof value === 'string' ? value : JSON.stringify(value) }] });
  };
  /** The run of the event made from the observation whose data matches `match`. */
  const runFor = async (route: string, match: (data: any) => boolean): Promise<Run> => {
    const found = await waitFor(
      async () => {
        const runs = (await t.d.store.listRuns({ route: [route], limit: 100, offset: 0 })).items;
        for (const run of runs) {
          const event = await t.d.store.getEvent(run.eventKey);
          if (event !== null && match(event.event.data) && run.finishedAt !== null) return run;
        }
        return null;
      },
      (r) => r !== null,
      30_000,
      `an ended run of ${route}`,
    );
    return found!;
  };
  const errorFor = (match: (e: ErrorMessage) => boolean) => waitFor(async () => errors.find(match), (e) => e !== undefined, 30_000, 'the errors-topic message');

  it('applies the README’s update_applied_control: the selector’s one target PATCHed with the values', async () => {
    const message = fixture('samples-from-readme/update_applied_control.json');
    await produce(message);
    const run = await runFor('ciso-assistant.update_applied_control', (d) => d.selector?.ref_id === 'foo' && d.values?.priority === '1');
    expect(run.status).toBe('success');
    const patch = api.requests.find((r) => r.method === 'PATCH' && r.path === '/api/applied-controls/ac-foo/');
    expect(JSON.parse(patch!.body.toString())).toEqual({ priority: '1' });
    expect(patch!.headers.authorization).toBe(`Token ${TOKEN}`);
    const hosts = (await t.d.store.listHosts({ runId: [run.id], limit: 10, offset: 0 })).items;
    expect(hosts.map((h) => [h.name, h.status])).toEqual([['applied-controls/ac-foo', 'success']]);
  });

  it('applies the original’s sample update_requirement_assessment (a selector of two lookups)', async () => {
    await produce(fixture('samples/update_requirement_assessment.json'));
    const run = await runFor('ciso-assistant.update_requirement_assessment', (d) => d.selector?.requirement__ref_id === 'A.5.1');
    expect(run.status).toBe('success');
    expect(api.objects['requirement-assessments']!.find((o) => o.id === 'ra-1')).toMatchObject({ result: 'compliant' });
    expect(api.objects['requirement-assessments']!.find((o) => o.id === 'ra-2')).toMatchObject({ result: 'not_assessed' });
  });

  it('selector with many matches over several pages: target multiple PATCHes each; single refuses with the original’s words', async () => {
    await produce({ message_type: 'update_applied_control', selector: { folder: 'many', target: 'multiple' }, values: { priority: 2 } });
    const run = await runFor('ciso-assistant.update_applied_control', (d) => d.selector?.target === 'multiple');
    expect(run.status).toBe('success');
    for (let i = 0; i < 5; i++) expect(api.objects['applied-controls']!.find((o) => o.id === `ac-many-${i}`)).toMatchObject({ priority: 2 });
    expect(api.requests.filter((r) => r.method === 'GET' && r.path === '/api/applied-controls/' && r.query.get('folder') === 'many').length).toBeGreaterThanOrEqual(3);

    const single = { message_type: 'update_applied_control', selector: { folder: 'many' }, values: { priority: 9 } };
    await produce(single);
    const e = await errorFor((m) => JSON.stringify(m.message) === JSON.stringify(single));
    expect(e).toEqual({
      message: single,
      error: 'Expected a single object, but got 5 objects. Please refine the selector or set the selector to target \'multiple\' if you expect multiple objects.',
    });
    expect(api.objects['applied-controls']!.some((o) => o.priority === 9)).toBe(false);
  });

  it('no match: the errors topic gets exactly the original’s message, and a dead letter keeps it', async () => {
    const message = { message_type: 'update_applied_control', selector: { ref_id: 'nothing-like-it' }, values: { priority: '1' } };
    await produce(message);
    const e = await errorFor((m) => JSON.stringify(m.message) === JSON.stringify(message));
    expect(Object.keys(e!)).toEqual(['message', 'error']);
    expect(e).toEqual({ message, error: 'No objects match the given selector.' });
    // No key, as in the original; one header, the content type.
    expect(envelopes.get(e!)).toEqual({ key: null, headers: { 'content-type': 'application/json' } });
    const dead = (await t.d.store.listDeadLetters({ limit: 100, offset: 0 })).items.find((d) => d.error === 'No objects match the given selector.');
    expect(dead).toMatchObject({ origin: 'run', reason: 'action_failed' });
  });

  it('uploads an attachment from base64: the evidence found by its selector, the file uploaded, the applied control linked', async () => {
    const message = fixture('samples-from-readme/upload_attachment_base64.json');
    message.values.file_content = Buffer.from('PNG bytes in base64').toString('base64');
    await produce(message);
    const run = await runFor('ciso-assistant.upload_attachment', (d) => d.values?.file_content === message.values.file_content);
    expect(run.status, JSON.stringify(run.error)).toBe('success');
    const upload = api.uploads.find((u) => u.bytes.toString() === 'PNG bytes in base64');
    expect(upload).toMatchObject({ evidence: 'ev-bar', filename: 'sample.jpeg' });
    expect(api.objects['applied-controls']!.find((o) => o.id === 'ac-foo')!.evidences).toEqual(['ev-old', 'ev-bar']);
    const hosts = (await t.d.store.listHosts({ runId: [run.id], limit: 10, offset: 0 })).items.map((h) => h.name).sort();
    expect(hosts).toEqual(['applied-controls/ac-foo', 'evidences/ev-bar']);
  });

  it('uploads an attachment from S3, creating the evidence when there is no selector', async () => {
    const message = fixture('samples-from-readme/upload_attachment_s3.json');
    delete message.selector;
    message.values.name = `From S3 ${randomBytes(2).toString('hex')}`;
    await produce(message);
    const run = await runFor('ciso-assistant.upload_attachment', (d) => d.values?.name === message.values.name);
    expect(run.status, JSON.stringify(run.error)).toBe('success');
    const made = api.objects.evidences!.find((o) => o.name === message.values.name);
    expect(made).toBeDefined();
    expect(api.uploads.find((u) => u.evidence === made!.id)?.bytes.toString()).toBe('JPEG bytes from S3');
  });

  it('a configured POST type creates an object when it has no selector, and still refuses an empty one', async () => {
    await produce({ message_type: 'create_risk_scenario', values: { ref_id: 'R.new', treatment: 'open' } });
    const run = await runFor('ciso-assistant.create_risk_scenario', (d) => d.values?.ref_id === 'R.new');
    expect(run.status, JSON.stringify(run.error)).toBe('success');
    expect(api.objects['risk-scenarios']!.filter((o) => o.ref_id === 'R.new')).toMatchObject([{ treatment: 'open' }]);
    const empty = { message_type: 'create_risk_scenario', selector: {}, values: { ref_id: 'R.empty' } };
    await produce(empty);
    const e = await errorFor((m) => JSON.stringify(m.message) === JSON.stringify(empty));
    expect(e!.error).toMatch(/No selector provided/);
  });

  it('a retried upload goes to the evidence its own earlier attempt made, never to another of the same name; the file name quoted as the original did', async () => {
    const name = `Same name ${randomBytes(2).toString('hex')}`;
    api.objects.evidences!.push({ id: 'ev-somebody-elses', name });
    // Attempt 1 cannot make the evidence (an earlier fix looked one up by name then, and found somebody
    // else's); attempt 2 makes it and cannot upload; attempt 3 uploads to the one attempt 2 made.
    api.failNext({ status: 503, retryAfter: 1, method: 'POST', path: '/api/evidences/', times: 1 });
    api.failNext({ status: 503, retryAfter: 1, method: 'POST', path: /^\/api\/evidences\/[^/]+\/upload\/$/, times: 1 });
    const fileName = 'report (1)/ü.pdf';
    await produce({ message_type: 'upload_attachment', values: { name, file_name: fileName, file_content: Buffer.from('retried bytes').toString('base64') } });
    const run = await runFor('ciso-assistant.upload_attachment', (d) => d.values?.name === name);
    expect([run.status, run.attempts], JSON.stringify(run.error)).toEqual(['success', 3]);
    const mine = api.objects.evidences!.filter((o) => o.name === name && o.id !== 'ev-somebody-elses');
    expect(mine).toHaveLength(1);
    const uploads = api.uploads.filter((u) => u.bytes.toString() === 'retried bytes');
    expect(uploads.map((u) => u.evidence)).toEqual([mine[0]!.id]);
    expect(api.uploads.some((u) => u.evidence === 'ev-somebody-elses')).toBe(false);
    // Python's quote: '(' and ')' encoded, '/' kept, UTF-8.
    expect(uploads[0]!.contentDisposition).toBe('attachment; filename=report%20%281%29/%C3%BC.pdf');
  });

  it('the README’s base64 example as it is (not base64) and a missing S3 object: errors-topic messages, nothing uploaded', async () => {
    const readme = fixture('samples-from-readme/upload_attachment_base64.json');
    await produce(readme);
    const bad = await errorFor((m) => (m.message as any)?.values?.file_content === 'base64_encoded_data');
    expect(bad!.error).toMatch(/not valid base64/);
    const missing = fixture('samples-from-readme/upload_attachment_s3.json');
    missing.values.file_name = 'no-such-file.pdf';
    await produce(missing);
    const gone = await errorFor((m) => (m.message as any)?.values?.file_name === 'no-such-file.pdf');
    expect(gone!.error).toMatch(/^Failed to open file from S3: s3:\/\/bucket\/no-such-file\.pdf/);
    const huge = fixture('samples-from-readme/upload_attachment_s3.json');
    huge.values.file_name = 'huge.bin';
    await produce(huge);
    const big = await errorFor((m) => (m.message as any)?.values?.file_name === 'huge.bin');
    expect(big!.error).toMatch(/maxBytes|larger|more than/);
    expect(api.uploads.some((u) => u.filename === 'no-such-file.pdf' || u.filename === 'huge.bin')).toBe(false);
  });

  it('what the original skipped silently is a dead letter with its reason, and on the errors topic', async () => {
    const cases: Array<[string, RegExp, string]> = [
      ['{"message_type": ', /not valid JSON/, 'invalid_json'],
      [JSON.stringify({ selector: { ref_id: 'x' }, values: { a: 1 }, tag: 'no-type' }), /Message type is missing/, 'invalid_event'],
      [JSON.stringify({ message_type: 'delete_everything', selector: {}, values: {} }), /Message type not supported: delete_everything/, 'unknown_type'],
      [JSON.stringify({ message_type: 'update_applied_control', selector: { ref_id: 'foo' }, values: { priority: { nested: true } } }), /does not match its schema/, 'schema_violation'],
      [JSON.stringify({ message_type: 'update_applied_control', selector: { ref_id: 'foo' }, values: {} }), /^No update values provided in the message\.$/, 'invalid_event'],
      [JSON.stringify({ message_type: 'update_applied_control', values: { priority: 1 } }), /^No selector provided\.$/, 'invalid_event'],
    ];
    for (const [raw] of cases) await produce(raw);
    for (const [raw, error, reason] of cases) {
      const e = await errorFor((m) => error.test(m.error) && (typeof m.message === 'string' ? m.message === raw : JSON.stringify(m.message) === raw));
      expect(e!.message).toEqual(reason === 'invalid_json' ? raw : JSON.parse(raw));
      const dead = (await t.d.store.listDeadLetters({ limit: 200, offset: 0 })).items.find((d) => d.raw.toString() === raw);
      expect(dead, raw).toMatchObject({ origin: 'intake', reason, source: 'ciso-assistant.observation' });
    }
    // The consumer went on: a good message after them is applied.
    await produce({ message_type: 'update_risk_scenario', selector: { ref_id: 'R.1' }, values: { treatment: 'mitigated' } });
    const run = await runFor('ciso-assistant.update_risk_scenario', (d) => d.values?.treatment === 'mitigated');
    expect(run.status).toBe('success');
    expect(api.objects['risk-scenarios']![0]).toMatchObject({ treatment: 'mitigated' });
  });

  it('an API error no longer stops the consumer: a 503 is retried, a 400 fails at once, an HTML answer is refused', async () => {
    api.failNext({ status: 503, retryAfter: 1, method: 'PATCH', times: 1 });
    await produce({ message_type: 'update_applied_control', selector: { ref_id: 'many-0' }, values: { name: 'after a 503' } });
    const retried = await runFor('ciso-assistant.update_applied_control', (d) => d.values?.name === 'after a 503');
    expect(retried.status).toBe('success');
    expect(retried.attempts).toBe(2);

    api.failNext({ status: 400, body: { priority: ['A valid integer is required.'] }, method: 'PATCH', times: 1 });
    const refused = { message_type: 'update_applied_control', selector: { ref_id: 'many-1' }, values: { name: 'refused by a 400' } };
    await produce(refused);
    const e = await errorFor((m) => JSON.stringify(m.message) === JSON.stringify(refused));
    expect(e!.error).toMatch(/400/);
    const run = await runFor('ciso-assistant.update_applied_control', (d) => d.values?.name === 'refused by a 400');
    expect(run.attempts).toBe(1);

    api.failNext({ html: true, status: 200, method: 'GET', times: 1 });
    const html = { message_type: 'update_applied_control', selector: { ref_id: 'many-2' }, values: { name: 'html' } };
    await produce(html);
    const he = await errorFor((m) => JSON.stringify(m.message) === JSON.stringify(html));
    expect(he!.error).toMatch(/where JSON was expected/);
  });

  it('updates with the same selector are applied in the topic\'s order, even when the first is retried', async () => {
    api.failNext({ status: 503, retryAfter: 1, method: 'PATCH', path: '/api/applied-controls/ac-many-4/', times: 1 });
    await producer.send({
      topic,
      acks: -1,
      // One partition: Kafka orders messages within a partition only.
      messages: ['first', 'second'].map((name) => ({ partition: 0, value: JSON.stringify({ message_type: 'update_applied_control', selector: { ref_id: 'many-4' }, values: { name } }) })),
    });
    const second = await runFor('ciso-assistant.update_applied_control', (d) => d.selector?.ref_id === 'many-4' && d.values?.name === 'second');
    const first = await runFor('ciso-assistant.update_applied_control', (d) => d.selector?.ref_id === 'many-4' && d.values?.name === 'first');
    expect([first.status, first.attempts, second.status]).toEqual(['success', 2, 'success']);
    expect(api.objects['applied-controls']!.find((o) => o.id === 'ac-many-4')!.name).toBe('second');
    // This test's PATCHes only: an earlier test set ac-many-4's priority.
    const patches = api.requests
      .filter((r) => r.method === 'PATCH' && r.path === '/api/applied-controls/ac-many-4/')
      .map((r) => (JSON.parse(r.body.toString()) as { name?: string }).name)
      .filter((name) => name === 'first' || name === 'second');
    expect(patches).toEqual(['first', 'first', 'second']);
  });

  it('a 401 is reported as an expired token', async () => {
    api.expireToken(TOKEN);
    try {
      const message = { message_type: 'update_applied_control', selector: { ref_id: 'many-3' }, values: { name: 'expired' } };
      await produce(message);
      const e = await errorFor((m) => JSON.stringify(m.message) === JSON.stringify(message));
      expect(e!.error).toMatch(/401.*expired.*Personal Access Token/);
    } finally {
      api.tokens.add(TOKEN);
    }
  });
});

describe.skipIf(cluster === undefined)('ciso-assistant profile: a restart mid-stream', () => {
  it('loses and doubles nothing', { timeout: 120_000 }, async () => {
    const topic = `observation-restart-${randomBytes(3).toString('hex')}`;
    const N = 30;
    const api = await startFakeCiso({
      tokens: [TOKEN],
      objects: { 'applied-controls': Array.from({ length: N }, (_, i) => ({ id: `c-${i}`, ref_id: `r-${i}`, priority: 0 })) },
      delayMs: 200,
    });
    const dir = mkdtempSync(join(tmpdir(), 'ciso-restart-'));
    const producer = new Kafka({ brokers: cluster!.brokers, clientId: 'ciso-restart', logLevel: logLevel.NOTHING }).producer({ allowAutoTopicCreation: true, idempotent: false });
    await producer.connect();
    const config = {
      actions: { http: { allow: ['127.0.0.1'] } },
      profiles: { 'ciso-assistant': { api: { url: api.url, token: TOKEN }, kafka: { bootstrapServers: cluster!.brokers, topic, groupId: `g-${topic}`, maxWait: '100ms' }, errorsTopic: `errors-${topic}` } },
    };
    const storeUrl = `sqlite:${join(dir, 'dispatcher.db')}`;
    let t: TestDispatcher | undefined;
    const send = (from: number, to: number) =>
      producer.send({
        topic,
        acks: -1,
        messages: Array.from({ length: to - from }, (_, k) => ({ value: JSON.stringify({ message_type: 'update_applied_control', selector: { ref_id: `r-${from + k}` }, values: { priority: from + k + 1 } }) })),
      });
    try {
      await send(0, N / 2);
      t = await startDispatcher(config, { storeUrl });
      // Stopped while the first half is being applied: some runs done, others in flight or queued.
      await waitFor(async () => api.requests.filter((r) => r.method === 'PATCH').length, (n) => n >= 3, 60_000, 'some PATCHes');
      await t.close();
      t = undefined;
      const before = api.requests.filter((r) => r.method === 'PATCH').length;
      // The second half arrives while no dispatcher runs.
      await send(N / 2, N);
      t = await startDispatcher(config, { storeUrl });
      await waitFor(async () => api.objects['applied-controls']!.filter((o) => o.priority !== 0).length, (n) => n === N, 60_000, 'every observation applied');
      // A moment more, for anything doubled to show.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const patches = api.requests.filter((r) => r.method === 'PATCH').map((r) => r.path);
      expect(patches.length - before).toBeGreaterThanOrEqual(N / 2);
      const counts = new Map<string, number>();
      for (const p of patches) counts.set(p, (counts.get(p) ?? 0) + 1);
      expect([...counts].filter(([, n]) => n > 1)).toEqual([]);
      expect(counts.size).toBe(N);
      for (let i = 0; i < N; i++) expect(api.objects['applied-controls']!.find((o) => o.id === `c-${i}`)).toMatchObject({ priority: i + 1 });
    } finally {
      await t?.close();
      await producer.disconnect();
      await api.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(cluster === undefined)('ciso-assistant profile: auto-renew (AUTO_RENEW_SESSION)', () => {
  it('logs in again with the email and password when the token expired, once for every run, and applies the observation', { timeout: 60_000 }, async () => {
    const topic = `observation-renew-${randomBytes(3).toString('hex')}`;
    const user = { username: 'admin@tests.com', password: 'badpass12345' };
    const api = await startFakeCiso({ tokens: ['stale'], users: [user], objects: { 'applied-controls': [{ id: 'c-1', ref_id: 'r-1' }, { id: 'c-2', ref_id: 'r-2' }] } });
    api.expireToken('stale');
    const producer = new Kafka({ brokers: cluster!.brokers, clientId: 'ciso-renew', logLevel: logLevel.NOTHING }).producer({ allowAutoTopicCreation: true, idempotent: false });
    await producer.connect();
    const t = await startDispatcher({
      actions: { http: { allow: ['127.0.0.1'] } },
      profiles: {
        'ciso-assistant': {
          api: { url: api.url, token: 'stale', email: user.username, password: user.password, autoRenew: true },
          kafka: { bootstrapServers: cluster!.brokers, topic, groupId: `g-${topic}`, maxWait: '100ms' },
          errorsTopic: `errors-${topic}`,
        },
      },
    });
    try {
      await producer.send({
        topic,
        acks: -1,
        messages: ['r-1', 'r-2'].map((ref) => ({ partition: 0, value: JSON.stringify({ message_type: 'update_applied_control', selector: { ref_id: ref }, values: { status: 'active' } }) })),
      });
      await waitFor(async () => api.objects['applied-controls']!.filter((o) => o.status === 'active').length, (n) => n === 2, 30_000, 'both controls updated');
      expect(api.issued).toHaveLength(1);
      const logins = api.requests.filter((r) => r.path === '/api/iam/login/');
      expect(JSON.parse(logins[0]!.body.toString())).toEqual({ username: user.username, password: user.password });
      const patches = api.requests.filter((r) => r.method === 'PATCH');
      expect(patches.map((r) => r.headers.authorization)).toEqual([`Token ${api.issued[0]}`, `Token ${api.issued[0]}`]);
    } finally {
      await t.close();
      await producer.disconnect();
      await api.close();
    }
  });
});
