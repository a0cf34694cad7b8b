/**
 * The delivery suite for the `sqs` input, and the `sns` output, against the local SQS/SNS endpoint of
 * `aws-endpoint.ts` (AWS's JSON protocol for SQS and Query protocol for SNS over a real socket): the one
 * stand-in the tests use, for a service that cannot run here. The suite runs on FIFO queues (the key is the
 * message group), since only they keep an order; the Sesshu path runs on a standard topic and queue.
 */

import { randomUUID } from 'node:crypto';
import {
  CreateQueueCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SendMessageCommand,
  SQSClient,
  DeleteMessageCommand,
} from '@aws-sdk/client-sqs';
import { CreateTopicCommand, PublishCommand, SNSClient, SubscribeCommand } from '@aws-sdk/client-sns';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTransport } from '../src/transports/index.js';
import type { Delivery, InputSink } from '../src/transports/types.js';
import { startAwsEndpoint, type AwsEndpoint } from './aws-endpoint.js';
import { startDispatcher, waitFor, type TestDispatcher } from './helpers.js';
import { describeDeliveries, type PeerMessage } from './transport.suite.js';

let endpoint: AwsEndpoint | undefined;
let starting: Promise<AwsEndpoint> | undefined;

async function aws(): Promise<{ endpoint: AwsEndpoint; sqs: SQSClient; sns: SNSClient; connection: Record<string, string> }> {
  starting ??= startAwsEndpoint();
  endpoint = await starting;
  const connection = { region: endpoint.region, endpoint: endpoint.url, accessKeyId: 'test', secretAccessKey: 'test' };
  const config = { region: connection.region, endpoint: connection.endpoint, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } };
  return { endpoint, sqs: new SQSClient(config), sns: new SNSClient(config), connection };
}

afterAll(async () => {
  await endpoint?.close();
});

function attributes(headers: Record<string, string> = {}, contentType?: string) {
  const all = { ...headers, ...(contentType === undefined ? {} : { 'content-type': contentType }) };
  return Object.fromEntries(Object.entries(all).map(([k, v]) => [k, { DataType: 'String', StringValue: v }]));
}

await describeDeliveries({
  transport: 'sqs',
  async probe() {
    try {
      await aws();
      return null;
    } catch (err) {
      return (err as Error).message;
    }
  },
  async place(name) {
    const { sqs, connection } = await aws();
    const queue = `${name}.fifo`;
    const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: queue, Attributes: { FifoQueue: 'true' } }));
    return {
      // A short visibility timeout, so that what a killed process held comes back within the test.
      input: { ...connection, queueUrl: QueueUrl, visibilityTimeout: 2 },
      async send(messages: PeerMessage[]) {
        for (let i = 0; i < messages.length; i += 10) {
          const out = await sqs.send(
            new SendMessageBatchCommand({
              QueueUrl,
              Entries: messages.slice(i, i + 10).map((m, j) => ({
                Id: String(j),
                MessageBody: Buffer.from(m.body).toString('utf8'),
                MessageAttributes: attributes(m.headers, m.contentType),
                MessageGroupId: m.key ?? 'default',
                MessageDeduplicationId: randomUUID(),
              })),
            }),
          );
          if ((out.Failed ?? []).length > 0) throw new Error(`SendMessageBatch failed: ${JSON.stringify(out.Failed)}`);
        }
      },
      async close() {
        await sqs.send(new DeleteQueueCommand({ QueueUrl })).catch(() => {});
      },
    };
  },
  binary(attrs) {
    return Object.fromEntries(Object.entries(attrs).map(([k, v]) => [`ce-${k}`, v]));
  },
});

const log = pino({ level: 'silent' });

async function depth(sqs: SQSClient, QueueUrl: string): Promise<{ visible: number; inFlight: number }> {
  const a = (await sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['All'] }))).Attributes!;
  return { visible: Number(a.ApproximateNumberOfMessages), inFlight: Number(a.ApproximateNumberOfMessagesNotVisible) };
}

describe('the local SQS endpoint behaves like SQS where delivery depends on it', () => {
  it('a received message comes back after its visibility timeout, with a new receipt handle; only the latest one deletes it', async () => {
    const { sqs } = await aws();
    const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: `visibility-${process.pid}` }));
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'hello' }));
    const first = (await sqs.send(new ReceiveMessageCommand({ QueueUrl, VisibilityTimeout: 1 }))).Messages![0]!;
    expect((await sqs.send(new ReceiveMessageCommand({ QueueUrl, WaitTimeSeconds: 0 }))).Messages ?? []).toEqual([]);
    const second = (await sqs.send(new ReceiveMessageCommand({ QueueUrl, WaitTimeSeconds: 2, MessageSystemAttributeNames: ['ApproximateReceiveCount'] }))).Messages![0]!;
    expect(second.MessageId).toBe(first.MessageId);
    expect(second.ReceiptHandle).not.toBe(first.ReceiptHandle);
    expect(second.Attributes?.ApproximateReceiveCount).toBe('2');
    await sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: first.ReceiptHandle }));
    expect(await depth(sqs, QueueUrl!)).toEqual({ visible: 0, inFlight: 1 });
    await sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: second.ReceiptHandle }));
    expect(await depth(sqs, QueueUrl!)).toEqual({ visible: 0, inFlight: 0 });
    await sqs.send(new DeleteQueueCommand({ QueueUrl }));
  });
});

describe('sqs input driver', () => {
  it('keeps a message invisible while the sink holds it past the visibility timeout, deletes it once it resolves, releases it on stop', async () => {
    const { sqs, connection } = await aws();
    const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: `held-${process.pid}` }));
    const transport = await loadTransport('sqs');
    const seen: Delivery[] = [];
    let release: () => void = () => {};
    const held: InputSink = {
      deliver(d) {
        seen.push(d);
        return new Promise((resolve) => (release = () => resolve('accepted')));
      },
    };
    const driver = transport.createInput!({ ...connection, queueName: `held-${process.pid}`, visibilityTimeout: 1, waitTimeSeconds: 1, pollers: 2 }, { name: 'held', log });
    await driver.start(held);
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: '{"n":1}', MessageAttributes: attributes({ 'X-Trace': 't-1' }) }));
    await waitFor(async () => seen.length, (n) => n === 1, 5000, 'the delivery');
    await new Promise((r) => setTimeout(r, 3500));
    expect(seen).toHaveLength(1);
    expect(seen[0]!.headers).toEqual({ 'x-trace': 't-1' });
    expect(seen[0]!.raw.toString()).toBe('{"n":1}');
    expect(await depth(sqs, QueueUrl!)).toEqual({ visible: 0, inFlight: 1 });
    expect((await waitFor(() => driver.health(), (h) => h.lag === 1, 8000, 'the lag to show the message in flight')).connected).toBe(true);
    release();
    await waitFor(() => depth(sqs, QueueUrl!), (d) => d.inFlight === 0 && d.visible === 0, 5000, 'the message to be deleted');
    expect(seen).toHaveLength(1);
    await driver.stop();

    // Stopping while the sink still holds a message: it rejects, and the message is visible again at once.
    const stopping: InputSink = {
      deliver(d) {
        seen.push(d);
        return new Promise((_, reject) => (release = () => reject(new Error('stopping'))));
      },
    };
    const second = transport.createInput!({ ...connection, queueUrl: QueueUrl, visibilityTimeout: 30, waitTimeSeconds: 20 }, { name: 'held', log });
    await second.start(stopping);
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: '{"n":2}' }));
    await waitFor(async () => seen.length, (n) => n === 2, 5000, 'the second delivery');
    const stopped = second.stop();
    release();
    const t0 = Date.now();
    await stopped;
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(await depth(sqs, QueueUrl!)).toEqual({ visible: 1, inFlight: 0 });
    await sqs.send(new DeleteQueueCommand({ QueueUrl }));
  }, 30_000);
});

describe('Sesshu over SNS and SQS', () => {
  let d: TestDispatcher | undefined;
  afterAll(async () => {
    await d?.close();
  });

  async function subscribed(sns: SNSClient, sqs: SQSClient, topicName: string, queueName: string, raw: boolean, fifo = false) {
    const { TopicArn } = await sns.send(new CreateTopicCommand({ Name: topicName, Attributes: fifo ? { FifoTopic: 'true' } : {} }));
    const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: queueName, Attributes: fifo ? { FifoQueue: 'true' } : {} }));
    await sns.send(new SubscribeCommand({ TopicArn, Protocol: 'sqs', Endpoint: endpoint!.queueArn(queueName), Attributes: raw ? { RawMessageDelivery: 'true' } : {} }));
    return { TopicArn: TopicArn!, QueueUrl: QueueUrl! };
  }

  async function drain(sqs: SQSClient, QueueUrl: string, want: number, ms = 10_000) {
    const out: Array<{ body: string; attributes: Record<string, string | undefined>; group?: string }> = [];
    const until = Date.now() + ms;
    while (out.length < want && Date.now() < until) {
      const r = await sqs.send(
        new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1, MessageAttributeNames: ['All'], MessageSystemAttributeNames: ['MessageGroupId'] }),
      );
      for (const m of r.Messages ?? []) {
        out.push({
          body: m.Body!,
          attributes: Object.fromEntries(Object.entries(m.MessageAttributes ?? {}).map(([k, v]) => [k, v.StringValue])),
          ...(m.Attributes?.MessageGroupId === undefined ? {} : { group: m.Attributes.MessageGroupId }),
        });
        await sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: m.ReceiptHandle }));
      }
    }
    return out;
  }

  it('takes a request published to SNS from the subscribed queue, and keeps a message without the SNS envelope as a dead letter', async () => {
    const { sqs, sns, connection } = await aws();
    const requests = await subscribed(sns, sqs, `sesshu-requests-${process.pid}`, `sesshu-requests-${process.pid}`, false);
    d = await startDispatcher({
      inputs: {
        sesshu: {
          sqs: { ...connection, queueName: `sesshu-requests-${process.pid}`, waitTimeSeconds: 1 },
          decoder: { format: 'sns', message: { format: 'json', type: 'sesshu.request' } },
        },
      },
      routes: [{ name: 'collect', match: { type: 'sesshu.request' }, actions: [{ noop: {} }] }],
    });
    const request = { plugin: 'http_robots', target: 'https://example.com/' };
    const published = await sns.send(new PublishCommand({ TopicArn: requests.TopicArn, Message: JSON.stringify(request) }));
    const listing = await waitFor(() => d!.d.store.listEvents({ limit: 10, offset: 0 }), (l) => l.total === 1, 10_000, 'the request event');
    const e = listing.items[0]!;
    expect(e.event.type).toBe('sesshu.request');
    expect(e.event.id).toBe(published.MessageId);
    expect(e.event.data).toEqual(request);
    expect(e.input).toBe('sesshu');
    await waitFor(() => d!.d.store.listRuns({ limit: 10, offset: 0, status: ['success'] }), (l) => l.total === 1, 10_000, 'the run');

    // The seed crashed on a message that is not an SNS notification; here it is a dead letter, and deleted.
    await sqs.send(new SendMessageCommand({ QueueUrl: requests.QueueUrl, MessageBody: JSON.stringify(request) }));
    const dead = await waitFor(() => d!.d.store.listDeadLetters({ limit: 10, offset: 0 }), (l) => l.total === 1, 10_000, 'the dead letter');
    expect(dead.items[0]!.reason).toBe('invalid_envelope');
    expect(dead.items[0]!.source).toBe('sesshu');
    await waitFor(() => depth(sqs, requests.QueueUrl), (x) => x.visible === 0 && x.inFlight === 0, 5000, 'the queue to be empty');
    expect((await d.d.store.listEvents({ limit: 10, offset: 0 })).total).toBe(1);
  });

  it('publishes responses to SNS: in the envelope, raw, batched by ten, FIFO groups and deduplication; a refused entry rejects', async () => {
    const { sqs, sns, connection, endpoint: aws2 } = await aws();
    const name = `sesshu-responses-${process.pid}`;
    const raw = await subscribed(sns, sqs, name, `${name}-raw`, true);
    const { QueueUrl: wrapped } = await sqs.send(new CreateQueueCommand({ QueueName: `${name}-wrapped` }));
    await sns.send(new SubscribeCommand({ TopicArn: raw.TopicArn, Protocol: 'sqs', Endpoint: aws2.queueArn(`${name}-wrapped`) }));

    // The output as the dispatcher configures and starts it.
    const withOutput = await startDispatcher({ outputs: { responses: { sns: { ...connection, topicArn: raw.TopicArn } } } });
    const output = withOutput.d.outputs.get('responses')!.driver;
    expect(await withOutput.d.outputHealth()).toMatchObject([{ output: 'responses', transport: 'sns', connected: true }]);
    const response = { target: 'https://example.com/', plugin: 'http_robots', result: ['/private', '/tmp'] };
    await output.publish([{ headers: { event_type: 'response' }, body: Buffer.from(JSON.stringify(response)), contentType: 'application/json' }]);
    const [one] = await drain(sqs, raw.QueueUrl, 1);
    expect(JSON.parse(one!.body)).toEqual(response);
    expect(one!.attributes).toEqual({ event_type: 'response', 'content-type': 'application/json' });
    const [env] = await drain(sqs, wrapped!, 1);
    const notification = JSON.parse(env!.body) as Record<string, unknown>;
    expect(Object.keys(notification).sort()).toEqual(
      ['Message', 'MessageAttributes', 'MessageId', 'Signature', 'SignatureVersion', 'SigningCertURL', 'Timestamp', 'TopicArn', 'Type', 'UnsubscribeURL'].sort(),
    );
    expect(notification).toMatchObject({ Type: 'Notification', TopicArn: raw.TopicArn, Message: JSON.stringify(response), SignatureVersion: '1' });
    expect(notification.MessageAttributes).toEqual({ event_type: { Type: 'String', Value: 'response' }, 'content-type': { Type: 'String', Value: 'application/json' } });

    const batches = aws2.calls.get('PublishBatch') ?? 0;
    await output.publish(Array.from({ length: 25 }, (_, i) => ({ headers: {}, body: Buffer.from(JSON.stringify({ n: i })) })));
    expect((aws2.calls.get('PublishBatch') ?? 0) - batches).toBe(3);
    expect((await drain(sqs, raw.QueueUrl, 25)).map((m) => (JSON.parse(m.body) as { n: number }).n)).toEqual(Array.from({ length: 25 }, (_, i) => i));
    await drain(sqs, wrapped!, 25);

    // SNS refuses an entry (an empty message): the publish rejects.
    await expect(output.publish([{ headers: {}, body: Buffer.from('{}') }, { headers: {}, body: Buffer.alloc(0) }])).rejects.toThrow(/InvalidParameter/);
    await expect(output.publish([{ topic: 'no-such-topic', headers: {}, body: Buffer.from('{}') }])).rejects.toThrow();
    await withOutput.close();

    // FIFO: the key is the message group; the same message again within five minutes is dropped.
    const fifo = await subscribed(sns, sqs, `${name}.fifo`, `${name}-q.fifo`, true, true);
    const transport = await loadTransport('sns');
    const out2 = transport.createOutput!({ ...connection, topicArn: fifo.TopicArn }, { name: 'fifo', log });
    await out2.start();
    const m = (key: string, n: number) => ({ key, headers: { run: key }, body: Buffer.from(JSON.stringify({ n })) });
    await out2.publish([m('run-a', 1), m('run-b', 2), m('run-a', 3)]);
    await out2.publish([m('run-a', 1)]);
    const got = await drain(sqs, fifo.QueueUrl, 3);
    const inGroup = (g: string) => got.filter((x) => x.group === g).map((x) => (JSON.parse(x.body) as { n: number }).n);
    expect([inGroup('run-a'), inGroup('run-b'), got.length]).toEqual([[1, 3], [2], 3]);
    expect(await drain(sqs, fifo.QueueUrl, 1, 2000).then((x) => x.length)).toBe(0);
    await out2.stop();
  }, 60_000);
});
