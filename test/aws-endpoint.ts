/**
 * A local stand-in for Amazon SQS and SNS, for tests: one HTTP server on a real socket that speaks the parts
 * of AWS's documented wire protocols the SDK v3 clients send.
 *
 * - SQS, AWS JSON 1.0 (`X-Amz-Target: AmazonSQS.<Action>`, `application/x-amz-json-1.0`; errors carry
 *   `__type` and the `x-amzn-query-error` header): CreateQueue, GetQueueUrl, GetQueueAttributes, SendMessage,
 *   SendMessageBatch, ReceiveMessage (long polling), DeleteMessage(Batch), ChangeMessageVisibility(Batch),
 *   PurgeQueue, DeleteQueue.
 * - SNS, the Query protocol (form-encoded `Action=…`, XML answers): CreateTopic, Subscribe (an SQS queue of
 *   this server, `RawMessageDelivery`), Publish, PublishBatch, DeleteTopic.
 *
 * It behaves like SQS where delivery guarantees depend on it: a received message is invisible for its
 * visibility timeout and then visible again; every receive gives a new receipt handle, and only the latest
 * one deletes the message (an older one is accepted and deletes nothing, as SQS does) or changes its
 * visibility; a FIFO queue hands out a message group's messages in order and none of a group while an
 * earlier one of it is in flight, and drops a deduplication id seen in the last five minutes. SNS wraps a
 * message delivered to a queue in the notification envelope SNS builds (signed, SignatureVersion 1), or
 * passes it as it is with raw message delivery. Requests are not authenticated.
 */

import { createHash, createSign, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

const ACCOUNT = '000000000000';
const DEDUP_WINDOW_MS = 5 * 60_000;

interface AttributeValue {
  DataType: string;
  StringValue?: string;
  BinaryValue?: string;
}

interface Message {
  id: string;
  body: string;
  attributes: Record<string, AttributeValue>;
  groupId?: string;
  dedupId?: string;
  sequence: string;
  sentAt: number;
  visibleAt: number;
  receiveCount: number;
  firstReceiveAt?: number;
  /** The latest receipt handle; only it deletes the message. */
  receipt?: string;
}

interface Queue {
  name: string;
  url: string;
  arn: string;
  fifo: boolean;
  contentDedup: boolean;
  visibilityTimeout: number;
  waitTime: number;
  createdAt: number;
  messages: Message[];
  dedup: Map<string, { id: string; sequence: string; until: number }>;
}

interface Topic {
  name: string;
  arn: string;
  fifo: boolean;
  contentDedup: boolean;
  subscriptions: Array<{ arn: string; queue: string; raw: boolean }>;
  dedup: Map<string, { id: string; until: number }>;
}

class AwsError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly queryCode = code,
    readonly status = 400,
  ) {
    super(message);
  }
}

export interface AwsEndpoint {
  /** The endpoint to give the SDK clients. */
  url: string;
  region: string;
  queueArn(name: string): string;
  /** Requests answered, by action (for tests that check what the client called). */
  calls: Map<string, number>;
  close(): Promise<void>;
}

const md5 = (text: string | Buffer) => createHash('md5').update(text).digest('hex');

/** MD5OfMessageAttributes as SQS computes it: sorted by name, each part length-prefixed. */
function md5OfAttributes(attributes: Record<string, AttributeValue>): string | undefined {
  const names = Object.keys(attributes).sort();
  if (names.length === 0) return undefined;
  const parts: Buffer[] = [];
  const field = (b: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    parts.push(len, b);
  };
  for (const name of names) {
    const a = attributes[name]!;
    field(Buffer.from(name));
    field(Buffer.from(a.DataType));
    if (a.BinaryValue !== undefined) {
      parts.push(Buffer.from([2]));
      field(Buffer.from(a.BinaryValue, 'base64'));
    } else {
      parts.push(Buffer.from([1]));
      field(Buffer.from(a.StringValue ?? ''));
    }
  }
  return md5(Buffer.concat(parts));
}

const xmlEscape = (s: string) => s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);

function xml(value: unknown): string {
  if (value === undefined || value === null) return '';
  if (Array.isArray(value)) return value.map((v) => `<member>${xml(v)}</member>`).join('');
  if (typeof value === 'object') {
    return Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `<${k}>${xml(v)}</${k}>`)
      .join('');
  }
  return xmlEscape(String(value));
}

/** `prefix.1.…`, `prefix.2.…` of a Query request, each as its own flat map of the rest of the names. */
function queryList(params: URLSearchParams, prefix: string): Array<Map<string, string>> {
  const out: Array<Map<string, string>> = [];
  for (let n = 1; ; n++) {
    const head = `${prefix}.${n}.`;
    const entry = new Map<string, string>();
    for (const [k, v] of params) if (k.startsWith(head)) entry.set(k.slice(head.length), v);
    if (entry.size === 0) return out;
    out.push(entry);
  }
}

function queryAttributes(entry: Map<string, string> | URLSearchParams, prefix: string): Record<string, AttributeValue> {
  const params = new URLSearchParams([...entry].filter(([k]) => k.startsWith(`${prefix}.`)));
  const out: Record<string, AttributeValue> = {};
  for (const e of queryList(params, `${prefix}.entry`)) {
    const name = e.get('Name');
    const type = e.get('Value.DataType');
    if (name === undefined || type === undefined) throw new AwsError('InvalidParameterValue', `${prefix}: an attribute needs a Name and a Value.DataType`);
    const value: AttributeValue = { DataType: type };
    if (e.has('Value.StringValue')) value.StringValue = e.get('Value.StringValue')!;
    else if (e.has('Value.BinaryValue')) value.BinaryValue = e.get('Value.BinaryValue')!;
    else throw new AwsError('ParameterValueInvalid', `The message attribute '${name}' must contain non-empty message attribute value`);
    if (value.StringValue === '') throw new AwsError('ParameterValueInvalid', `The message attribute '${name}' must contain non-empty message attribute value for message attribute type '${type}'.`);
    out[name] = value;
  }
  if (Object.keys(out).length > 10) throw new AwsError('InvalidParameterValue', 'Number of message attributes exceeds the limit of 10');
  return out;
}

function queryMap(params: URLSearchParams, prefix: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of queryList(params, `${prefix}.entry`)) out[e.get('key') ?? ''] = e.get('value') ?? '';
  return out;
}

export async function startAwsEndpoint(region = 'us-east-1'): Promise<AwsEndpoint> {
  const queues = new Map<string, Queue>();
  const topics = new Map<string, Topic>();
  const calls = new Map<string, number>();
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  let sequence = 10n ** 19n;
  let url = '';
  const nextSequence = () => String(++sequence);

  const queueArn = (name: string) => `arn:aws:sqs:${region}:${ACCOUNT}:${name}`;

  function queueOf(body: { QueueUrl?: unknown }): Queue {
    const name = typeof body.QueueUrl === 'string' ? body.QueueUrl.split('/').pop() : undefined;
    const q = name === undefined ? undefined : queues.get(name);
    if (q === undefined) throw new AwsError('QueueDoesNotExist', 'The specified queue does not exist.', 'AWS.SimpleQueueService.NonExistentQueue');
    return q;
  }

  function enqueue(q: Queue, m: { body: string; attributes?: Record<string, AttributeValue>; groupId?: string; dedupId?: string; delay?: number }) {
    if (m.body.length === 0) throw new AwsError('InvalidParameterValue', 'The request must contain the parameter MessageBody.', 'MissingParameter');
    const attributes = m.attributes ?? {};
    const now = Date.now();
    let dedupId = m.dedupId;
    if (q.fifo) {
      if (m.groupId === undefined || m.groupId === '') throw new AwsError('MissingParameter', 'The request must contain the parameter MessageGroupId.');
      if (dedupId === undefined && q.contentDedup) dedupId = createHash('sha256').update(m.body).digest('hex');
      if (dedupId === undefined) {
        throw new AwsError('InvalidParameterValue', 'The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly');
      }
      for (const [k, v] of q.dedup) if (v.until < now) q.dedup.delete(k);
      const seen = q.dedup.get(dedupId);
      if (seen !== undefined) return { MessageId: seen.id, MD5OfMessageBody: md5(m.body), MD5OfMessageAttributes: md5OfAttributes(attributes), SequenceNumber: seen.sequence };
    }
    const message: Message = {
      id: randomUUID(),
      body: m.body,
      attributes,
      sequence: nextSequence(),
      sentAt: now,
      visibleAt: now + (m.delay ?? 0) * 1000,
      receiveCount: 0,
    };
    if (q.fifo) {
      message.groupId = m.groupId!;
      message.dedupId = dedupId!;
      q.dedup.set(dedupId!, { id: message.id, sequence: message.sequence, until: now + DEDUP_WINDOW_MS });
    }
    q.messages.push(message);
    return {
      MessageId: message.id,
      MD5OfMessageBody: md5(m.body),
      MD5OfMessageAttributes: md5OfAttributes(attributes),
      ...(q.fifo ? { SequenceNumber: message.sequence } : {}),
    };
  }

  function sqsMessage(m: Record<string, unknown>) {
    return {
      body: m.MessageBody as string,
      attributes: (m.MessageAttributes as Record<string, AttributeValue> | undefined) ?? {},
      groupId: m.MessageGroupId as string | undefined,
      dedupId: m.MessageDeduplicationId as string | undefined,
      delay: m.DelaySeconds as number | undefined,
    };
  }

  /** Up to `max` visible messages, now made invisible with fresh receipt handles. */
  function take(q: Queue, max: number, visibility: number): Message[] {
    const now = Date.now();
    const locked = new Set<string>();
    if (q.fifo) for (const m of q.messages) if (m.visibleAt > now && m.receipt !== undefined) locked.add(m.groupId!);
    let out: Message[] = [];
    if (!q.fifo) {
      for (const m of q.messages) {
        if (out.length >= max) break;
        if (m.visibleAt <= now) out.push(m);
      }
    } else {
      // As many messages of one group as possible first (the group of the oldest message), then the next group.
      const groups = new Map<string, Message[]>();
      for (const m of q.messages) {
        const g = m.groupId!;
        if (locked.has(g)) continue;
        if (m.visibleAt > now) {
          locked.add(g); // a delayed message keeps the group's later ones back
          continue;
        }
        const list = groups.get(g) ?? [];
        if (list.length < max) list.push(m);
        groups.set(g, list);
      }
      for (const list of groups.values()) out.push(...list);
      out = out.slice(0, max);
    }
    for (const m of out) {
      m.visibleAt = now + visibility * 1000;
      m.receipt = Buffer.from(`${m.id}:${randomBytes(12).toString('hex')}`).toString('base64');
      m.receiveCount += 1;
      m.firstReceiveAt ??= now;
    }
    return out;
  }

  function wanted(names: unknown, name: string): boolean {
    if (!Array.isArray(names)) return false;
    return names.some((n) => n === 'All' || n === '.*' || n === name || (typeof n === 'string' && n.endsWith('.*') && name.startsWith(n.slice(0, -1))));
  }

  function received(m: Message, body: Record<string, unknown>) {
    const systemNames = [...((body.AttributeNames as unknown[]) ?? []), ...((body.MessageSystemAttributeNames as unknown[]) ?? [])];
    const system: Record<string, string | undefined> = {
      SenderId: ACCOUNT,
      SentTimestamp: String(m.sentAt),
      ApproximateReceiveCount: String(m.receiveCount),
      ApproximateFirstReceiveTimestamp: String(m.firstReceiveAt),
      MessageGroupId: m.groupId,
      MessageDeduplicationId: m.dedupId,
      SequenceNumber: m.groupId === undefined ? undefined : m.sequence,
    };
    const attributes = Object.fromEntries(Object.entries(system).filter(([k, v]) => v !== undefined && wanted(systemNames, k)));
    const messageAttributes = Object.fromEntries(Object.entries(m.attributes).filter(([k]) => wanted(body.MessageAttributeNames, k)));
    return {
      MessageId: m.id,
      ReceiptHandle: m.receipt,
      MD5OfBody: md5(m.body),
      Body: m.body,
      ...(Object.keys(attributes).length > 0 ? { Attributes: attributes } : {}),
      ...(Object.keys(messageAttributes).length > 0 ? { MessageAttributes: messageAttributes, MD5OfMessageAttributes: md5OfAttributes(messageAttributes) } : {}),
    };
  }

  function inFlight(q: Queue, receipt: unknown): Message {
    const m = q.messages.find((x) => x.receipt === receipt);
    if (m === undefined || m.visibleAt <= Date.now()) {
      throw new AwsError('MessageNotInflight', 'The message referred to is not in flight.', 'AWS.SimpleQueueService.MessageNotInflight');
    }
    return m;
  }

  function changeVisibility(q: Queue, receipt: unknown, seconds: unknown) {
    if (typeof seconds !== 'number' || seconds < 0 || seconds > 43_200) throw new AwsError('InvalidParameterValue', 'VisibilityTimeout must be between 0 and 43200 seconds');
    inFlight(q, receipt).visibleAt = Date.now() + seconds * 1000;
  }

  function deleteMessage(q: Queue, receipt: unknown) {
    if (typeof receipt !== 'string' || receipt === '') throw new AwsError('ReceiptHandleIsInvalid', 'The input receipt handle is invalid.');
    // Only the latest receipt handle deletes; an older one is accepted and does nothing, as in SQS.
    const i = q.messages.findIndex((x) => x.receipt === receipt);
    if (i >= 0) q.messages.splice(i, 1);
  }

  /** Runs each entry of a batch action on its own: `Successful` and `Failed` lists. */
  function batch(entries: unknown, each: (entry: Record<string, unknown>) => Record<string, unknown>) {
    if (!Array.isArray(entries) || entries.length === 0) throw new AwsError('EmptyBatchRequest', 'There should be at least one entry in the request.', 'AWS.SimpleQueueService.EmptyBatchRequest');
    if (entries.length > 10) throw new AwsError('TooManyEntriesInBatchRequest', 'Maximum number of entries per request are 10.', 'AWS.SimpleQueueService.TooManyEntriesInBatchRequest');
    const ids = new Set<string>();
    const Successful: unknown[] = [];
    const Failed: unknown[] = [];
    for (const e of entries as Array<Record<string, unknown>>) {
      const Id = String(e.Id);
      if (ids.has(Id)) throw new AwsError('BatchEntryIdsNotDistinct', 'Two or more batch entries in the request have the same Id.', 'AWS.SimpleQueueService.BatchEntryIdsNotDistinct');
      ids.add(Id);
      try {
        Successful.push({ Id, ...each(e) });
      } catch (err) {
        if (!(err instanceof AwsError)) throw err;
        Failed.push({ Id, SenderFault: true, Code: err.code, Message: err.message });
      }
    }
    return { Successful, Failed };
  }

  async function sqs(action: string, body: Record<string, unknown>, gone: () => boolean): Promise<unknown> {
    switch (action) {
      case 'CreateQueue': {
        const name = String(body.QueueName ?? '');
        const attrs = (body.Attributes as Record<string, string> | undefined) ?? {};
        const fifo = attrs.FifoQueue === 'true';
        if (!/^[A-Za-z0-9_-]{1,80}$/.test(name.replace(/\.fifo$/, '')) || fifo !== name.endsWith('.fifo')) {
          throw new AwsError('InvalidParameterValue', 'Can only include alphanumeric characters, hyphens, or underscores; a FIFO queue name ends in .fifo');
        }
        if (!queues.has(name)) {
          queues.set(name, {
            name,
            url: `${url}/${ACCOUNT}/${name}`,
            arn: queueArn(name),
            fifo,
            contentDedup: attrs.ContentBasedDeduplication === 'true',
            visibilityTimeout: Number(attrs.VisibilityTimeout ?? 30),
            waitTime: Number(attrs.ReceiveMessageWaitTimeSeconds ?? 0),
            createdAt: Date.now(),
            messages: [],
            dedup: new Map(),
          });
        }
        return { QueueUrl: queues.get(name)!.url };
      }
      case 'GetQueueUrl': {
        const q = queues.get(String(body.QueueName));
        if (q === undefined) throw new AwsError('QueueDoesNotExist', 'The specified queue does not exist.', 'AWS.SimpleQueueService.NonExistentQueue');
        return { QueueUrl: q.url };
      }
      case 'GetQueueAttributes': {
        const q = queueOf(body);
        const now = Date.now();
        const all: Record<string, string> = {
          QueueArn: q.arn,
          ApproximateNumberOfMessages: String(q.messages.filter((m) => m.visibleAt <= now).length),
          ApproximateNumberOfMessagesNotVisible: String(q.messages.filter((m) => m.visibleAt > now && m.receipt !== undefined).length),
          ApproximateNumberOfMessagesDelayed: String(q.messages.filter((m) => m.visibleAt > now && m.receipt === undefined).length),
          VisibilityTimeout: String(q.visibilityTimeout),
          ReceiveMessageWaitTimeSeconds: String(q.waitTime),
          CreatedTimestamp: String(Math.floor(q.createdAt / 1000)),
          ...(q.fifo ? { FifoQueue: 'true', ContentBasedDeduplication: String(q.contentDedup) } : {}),
        };
        return { Attributes: Object.fromEntries(Object.entries(all).filter(([k]) => wanted(body.AttributeNames, k))) };
      }
      case 'SendMessage':
        return enqueue(queueOf(body), sqsMessage(body));
      case 'SendMessageBatch': {
        const q = queueOf(body);
        return batch(body.Entries, (e) => enqueue(q, sqsMessage(e)));
      }
      case 'ReceiveMessage': {
        const q = queueOf(body);
        const max = (body.MaxNumberOfMessages as number | undefined) ?? 1;
        if (max < 1 || max > 10) throw new AwsError('InvalidParameterValue', 'Value for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10.');
        const wait = (body.WaitTimeSeconds as number | undefined) ?? q.waitTime;
        if (wait < 0 || wait > 20) throw new AwsError('InvalidParameterValue', 'Value for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20.');
        const visibility = (body.VisibilityTimeout as number | undefined) ?? q.visibilityTimeout;
        const until = Date.now() + wait * 1000;
        for (;;) {
          // A client that hung up gets nothing: nothing is taken for it.
          if (gone() || !queues.has(q.name)) return { Messages: [] };
          const got = take(q, max, visibility);
          if (got.length > 0) return { Messages: got.map((m) => received(m, body)) };
          if (Date.now() >= until) return { Messages: [] };
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      case 'DeleteMessage':
        deleteMessage(queueOf(body), body.ReceiptHandle);
        return {};
      case 'DeleteMessageBatch': {
        const q = queueOf(body);
        return batch(body.Entries, (e) => {
          deleteMessage(q, e.ReceiptHandle);
          return {};
        });
      }
      case 'ChangeMessageVisibility':
        changeVisibility(queueOf(body), body.ReceiptHandle, body.VisibilityTimeout);
        return {};
      case 'ChangeMessageVisibilityBatch': {
        const q = queueOf(body);
        return batch(body.Entries, (e) => {
          changeVisibility(q, e.ReceiptHandle, e.VisibilityTimeout);
          return {};
        });
      }
      case 'PurgeQueue':
        queueOf(body).messages = [];
        return {};
      case 'DeleteQueue':
        queues.delete(queueOf(body).name);
        return {};
      default:
        throw new AwsError('UnknownOperationException', `${action} is not supported here`);
    }
  }

  function topicOf(arn: string | null): Topic {
    const t = arn === null ? undefined : topics.get(arn);
    if (t === undefined) throw new AwsError('NotFound', 'Topic does not exist', 'NotFound', 404);
    return t;
  }

  /** The notification SNS delivers to a queue, signed as SignatureVersion 1 signs it. */
  function envelope(t: Topic, id: string, message: string, subject: string | undefined, attributes: Record<string, AttributeValue>, sequence?: string): string {
    const timestamp = new Date().toISOString();
    const signed = ['Message', message, 'MessageId', id, ...(subject === undefined ? [] : ['Subject', subject]), 'Timestamp', timestamp, 'TopicArn', t.arn, 'Type', 'Notification'];
    const signature = createSign('RSA-SHA1').update(signed.join('\n') + '\n').sign(privateKey, 'base64');
    const n: Record<string, unknown> = { Type: 'Notification', MessageId: id };
    if (sequence !== undefined) n.SequenceNumber = sequence;
    n.TopicArn = t.arn;
    if (subject !== undefined) n.Subject = subject;
    Object.assign(n, {
      Message: message,
      Timestamp: timestamp,
      SignatureVersion: '1',
      Signature: signature,
      SigningCertURL: `${url}/SimpleNotificationService-local.pem`,
      UnsubscribeURL: `${url}/?Action=Unsubscribe&SubscriptionArn=${encodeURIComponent(t.subscriptions[0]?.arn ?? t.arn)}`,
    });
    if (Object.keys(attributes).length > 0) {
      n.MessageAttributes = Object.fromEntries(Object.entries(attributes).map(([k, v]) => [k, { Type: v.DataType, Value: v.StringValue ?? v.BinaryValue }]));
    }
    return JSON.stringify(n, null, 2).replace(/": /g, '" : ');
  }

  function publish(t: Topic, p: Map<string, string> | URLSearchParams): { MessageId: string; SequenceNumber?: string } {
    const message = p.get('Message');
    if (message === null || message === undefined || message === '') throw new AwsError('InvalidParameter', 'Invalid parameter: Empty message');
    const attributes = queryAttributes(p, 'MessageAttributes');
    const groupId = p.get('MessageGroupId') ?? undefined;
    let dedupId = p.get('MessageDeduplicationId') ?? undefined;
    if (t.fifo) {
      if (groupId === undefined) throw new AwsError('InvalidParameter', 'Invalid parameter: The MessageGroupId parameter is required for FIFO topics');
      if (dedupId === undefined && t.contentDedup) dedupId = createHash('sha256').update(message).digest('hex');
      if (dedupId === undefined) throw new AwsError('InvalidParameter', 'Invalid parameter: The topic should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly');
      const seen = t.dedup.get(dedupId);
      if (seen !== undefined && seen.until > Date.now()) return { MessageId: seen.id };
    } else if (dedupId !== undefined) {
      throw new AwsError('InvalidParameter', 'Invalid parameter: MessageDeduplicationId Reason: The request includes MessageDeduplicationId parameter that is not valid for this topic type');
    }
    const id = randomUUID();
    const sequence = t.fifo ? nextSequence() : undefined;
    if (t.fifo) t.dedup.set(dedupId!, { id, until: Date.now() + DEDUP_WINDOW_MS });
    const subject = p.get('Subject') ?? undefined;
    for (const s of t.subscriptions) {
      const q = queues.get(s.queue);
      if (q === undefined) continue;
      const body = s.raw ? message : envelope(t, id, message, subject, attributes, sequence);
      enqueue(q, { body, attributes: s.raw ? attributes : {}, groupId, dedupId: t.fifo ? dedupId : undefined });
    }
    return sequence === undefined ? { MessageId: id } : { MessageId: id, SequenceNumber: sequence };
  }

  function sns(action: string, p: URLSearchParams): unknown {
    switch (action) {
      case 'CreateTopic': {
        const name = p.get('Name') ?? '';
        const attrs = queryMap(p, 'Attributes');
        const fifo = attrs.FifoTopic === 'true';
        if (!/^[A-Za-z0-9_-]{1,256}$/.test(name.replace(/\.fifo$/, '')) || fifo !== name.endsWith('.fifo')) throw new AwsError('InvalidParameter', 'Invalid parameter: Topic Name');
        const arn = `arn:aws:sns:${region}:${ACCOUNT}:${name}`;
        if (!topics.has(arn)) topics.set(arn, { name, arn, fifo, contentDedup: attrs.ContentBasedDeduplication === 'true', subscriptions: [], dedup: new Map() });
        return { TopicArn: arn };
      }
      case 'DeleteTopic':
        topics.delete(topicOf(p.get('TopicArn')).arn);
        return {};
      case 'Subscribe': {
        const t = topicOf(p.get('TopicArn'));
        if (p.get('Protocol') !== 'sqs') throw new AwsError('InvalidParameter', 'Invalid parameter: only the sqs protocol is served here');
        const endpoint = p.get('Endpoint') ?? '';
        const q = [...queues.values()].find((x) => x.arn === endpoint);
        if (q === undefined) throw new AwsError('InvalidParameter', 'Invalid parameter: SQS endpoint ARN');
        if (t.fifo && !q.fifo) throw new AwsError('InvalidParameter', 'Invalid parameter: Invalid SQS endpoint ARN: a FIFO topic delivers to FIFO queues only');
        const arn = `${t.arn}:${randomUUID()}`;
        t.subscriptions.push({ arn, queue: q.name, raw: queryMap(p, 'Attributes').RawMessageDelivery === 'true' });
        return { SubscriptionArn: arn };
      }
      case 'Publish':
        return publish(topicOf(p.get('TopicArn')), p);
      case 'PublishBatch': {
        const t = topicOf(p.get('TopicArn'));
        const entries = queryList(p, 'PublishBatchRequestEntries.member');
        if (entries.length === 0) throw new AwsError('EmptyBatchRequest', 'The batch request doesn\'t contain any entries.');
        if (entries.length > 10) throw new AwsError('TooManyEntriesInBatchRequest', 'The batch request contains more entries than permissible.');
        const ids = new Set(entries.map((e) => e.get('Id')));
        if (ids.size !== entries.length) throw new AwsError('BatchEntryIdsNotDistinct', 'Two or more batch entries in the request have the same Id.');
        const Successful: unknown[] = [];
        const Failed: unknown[] = [];
        for (const e of entries) {
          try {
            Successful.push({ Id: e.get('Id'), ...publish(t, e) });
          } catch (err) {
            if (!(err instanceof AwsError)) throw err;
            Failed.push({ Id: e.get('Id'), Code: err.code, Message: err.message, SenderFault: true });
          }
        }
        return { Successful, Failed };
      }
      default:
        throw new AwsError('InvalidAction', `The action ${action} is not valid for this endpoint.`);
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const requestId = randomUUID();
    const target = req.headers['x-amz-target'];
    if (typeof target === 'string' && target.startsWith('AmazonSQS.')) {
      const action = target.slice('AmazonSQS.'.length);
      calls.set(action, (calls.get(action) ?? 0) + 1);
      const headers = { 'content-type': 'application/x-amz-json-1.0', 'x-amzn-requestid': requestId };
      let closed = false;
      res.on('close', () => (closed = true));
      try {
        const out = await sqs(action, text === '' ? {} : (JSON.parse(text) as Record<string, unknown>), () => closed);
        if (!closed) res.writeHead(200, headers).end(JSON.stringify(out));
      } catch (err) {
        const e = err instanceof AwsError ? err : new AwsError('InternalError', (err as Error).message, 'InternalError', 500);
        res.writeHead(e.status, { ...headers, 'x-amzn-query-error': `${e.queryCode};${e.status >= 500 ? 'Receiver' : 'Sender'}` });
        res.end(JSON.stringify({ __type: `com.amazonaws.sqs#${e.code}`, message: e.message }));
      }
      return;
    }
    const params = new URLSearchParams(text);
    const action = params.get('Action') ?? '';
    calls.set(action, (calls.get(action) ?? 0) + 1);
    const ns = 'http://sns.amazonaws.com/doc/2010-03-31/';
    try {
      const out = sns(action, params);
      res.writeHead(200, { 'content-type': 'text/xml', 'x-amzn-requestid': requestId });
      res.end(`<${action}Response xmlns="${ns}"><${action}Result>${xml(out)}</${action}Result><ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></${action}Response>`);
    } catch (err) {
      const e = err instanceof AwsError ? err : new AwsError('InternalError', (err as Error).message, 'InternalError', 500);
      res.writeHead(e.status, { 'content-type': 'text/xml', 'x-amzn-requestid': requestId });
      res.end(
        `<ErrorResponse xmlns="${ns}"><Error><Type>${e.status >= 500 ? 'Receiver' : 'Sender'}</Type><Code>${xmlEscape(e.code)}</Code><Message>${xmlEscape(e.message)}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`,
      );
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500).end(String(err));
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    region,
    queueArn,
    calls,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
