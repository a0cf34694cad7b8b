/**
 * `sns`: an Amazon SNS topic as an output, with the AWS SDK v3 (`@aws-sdk/client-sns`).
 *
 * `publish` sends the messages in order, ten to a PublishBatch (one alone with Publish), and resolves once SNS
 * accepted every one of them. Entries SNS failed on its side are sent again (up to five times, with backoff);
 * an entry SNS refused as the sender's fault (a bad attribute, a message too large) rejects the publish at
 * once. The body is the SNS `Message` (UTF-8 text), the headers its String message attributes (at most ten;
 * a name SNS does not allow is left out), the content type the attribute `content-type`.
 *
 * A message's topic is a topic ARN, or a topic name in the configured topic's region and account. FIFO
 * topics (`.fifo`): the key is the MessageGroupId (`messageGroupId` when there is none), and the
 * MessageDeduplicationId is the SHA-256 of key, headers and body, so a message published again (after a
 * crash of the relay) within five minutes is dropped by SNS.
 */

import { createHash } from 'node:crypto';
import { PublishBatchCommand, PublishCommand, SNSClient, type MessageAttributeValue, type PublishBatchRequestEntry } from '@aws-sdk/client-sns';
import { awsClientConfig, pause, type AwsConnectionOptions } from '../aws.js';
import { utf8Text } from '../../core/json.js';
import { HealthTracker, type OutboundMessage, type OutputDriver, type Transport, type TransportContext } from '../types.js';

interface OutputOptions extends AwsConnectionOptions {
  topicArn: string;
  messageGroupId?: string;
}

const ATTEMPTS = 5;
const MAX_ATTRIBUTES = 10;
const ATTRIBUTE_NAME = /^(?!aws\.|amazon\.)(?!.*\.\.)[A-Za-z0-9_-][A-Za-z0-9_.-]{0,255}$/i;

/** SNS message attributes from a message's headers and content type. */
export function attributesOf(m: OutboundMessage): Record<string, MessageAttributeValue> {
  const out: Record<string, MessageAttributeValue> = {};
  const headers: Record<string, string> = { ...m.headers };
  if (m.contentType !== undefined) headers['content-type'] = m.contentType;
  for (const [name, value] of Object.entries(headers)) {
    if (value === '' || !ATTRIBUTE_NAME.test(name) || name.endsWith('.')) continue;
    out[name] = { DataType: 'String', StringValue: value };
  }
  if (Object.keys(out).length > MAX_ATTRIBUTES) {
    throw new Error(`SNS takes at most ${MAX_ATTRIBUTES} message attributes; the message has ${Object.keys(out).length} headers (${Object.keys(out).join(', ')})`);
  }
  return out;
}

function text(body: Buffer): string {
  const s = utf8Text(body);
  if (s === null) throw new Error('an SNS message is UTF-8 text; this body is not');
  return s;
}

class SnsOutput implements OutputDriver {
  readonly #o: OutputOptions;
  readonly #context: TransportContext;
  readonly #health = new HealthTracker();
  #client: SNSClient | undefined;

  constructor(options: OutputOptions, context: TransportContext) {
    this.#o = options;
    this.#context = context;
  }

  async start(): Promise<void> {
    this.#client = new SNSClient(awsClientConfig(this.#o, this.#o.topicArn));
    this.#health.connected = true;
  }

  #topicArn(topic: string | undefined): string {
    if (topic === undefined || topic === '') return this.#o.topicArn;
    if (topic.startsWith('arn:')) return topic;
    return this.#o.topicArn.slice(0, this.#o.topicArn.lastIndexOf(':') + 1) + topic;
  }

  #entry(m: OutboundMessage, id: string, fifo: boolean): PublishBatchRequestEntry {
    const entry: PublishBatchRequestEntry = { Id: id, Message: text(m.body) };
    const attributes = attributesOf(m);
    if (Object.keys(attributes).length > 0) entry.MessageAttributes = attributes;
    if (fifo) {
      const key = m.key ?? this.#o.messageGroupId ?? 'default';
      entry.MessageGroupId = key.length <= 128 ? key : createHash('sha256').update(key).digest('hex');
      const headers = Object.entries(m.headers).sort(([a], [b]) => (a < b ? -1 : 1));
      entry.MessageDeduplicationId = createHash('sha256').update(JSON.stringify([m.key ?? null, headers, m.contentType ?? null])).update(m.body).digest('hex');
    }
    return entry;
  }

  async publish(messages: OutboundMessage[]): Promise<void> {
    if (this.#client === undefined) throw new Error('the SNS output is not started');
    // In order: consecutive messages to one topic share a batch.
    let i = 0;
    while (i < messages.length) {
      const topicArn = this.#topicArn(messages[i]!.topic);
      const fifo = topicArn.endsWith('.fifo');
      const batch: PublishBatchRequestEntry[] = [];
      while (i < messages.length && batch.length < 10 && this.#topicArn(messages[i]!.topic) === topicArn) {
        batch.push(this.#entry(messages[i]!, String(batch.length), fifo));
        i += 1;
      }
      try {
        await this.#send(topicArn, batch);
        this.#health.connected = true;
      } catch (err) {
        this.#health.failed(err);
        if ((err as { $fault?: string }).$fault !== 'client') this.#health.connected = false;
        throw err;
      }
    }
  }

  async #send(topicArn: string, entries: PublishBatchRequestEntry[]): Promise<void> {
    const client = this.#client!;
    let pending = entries;
    for (let attempt = 1; ; attempt++) {
      if (pending.length === 1) {
        const { Id: _id, ...one } = pending[0]!;
        await client.send(new PublishCommand({ TopicArn: topicArn, ...one }));
        return;
      }
      const out = await client.send(new PublishBatchCommand({ TopicArn: topicArn, PublishBatchRequestEntries: pending }));
      const failed = out.Failed ?? [];
      if (failed.length === 0) return;
      const refused = failed.find((f) => f.SenderFault === true);
      if (refused !== undefined) throw Object.assign(new Error(`SNS refused a message: ${refused.Code}: ${refused.Message ?? ''}`), { $fault: 'client' });
      if (attempt >= ATTEMPTS) throw new Error(`SNS failed ${failed.length} of ${pending.length} messages: ${failed[0]!.Code}: ${failed[0]!.Message ?? ''}`);
      this.#context.log.warn({ failed: failed.length, code: failed[0]!.Code }, 'SNS failed some messages of a batch; sending them again');
      const again = new Set(failed.map((f) => f.Id));
      pending = pending.filter((e) => again.has(e.Id));
      await pause(100 * 2 ** attempt);
    }
  }

  async stop(): Promise<void> {
    this.#client?.destroy();
    this.#health.connected = false;
  }

  async health() {
    return this.#health.snapshot();
  }
}

export const transport: Transport = {
  name: 'sns',
  binding: { prefixes: ['ce-', 'ce_'] },
  createOutput: (options, context) => new SnsOutput(options as unknown as OutputOptions, context),
};
