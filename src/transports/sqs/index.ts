/**
 * `sqs`: an Amazon SQS queue as an input, with the AWS SDK v3 (`@aws-sdk/client-sqs`).
 *
 * `pollers` long-poll the queue side by side (ReceiveMessage, `waitTimeSeconds`, up to `maxMessages` each).
 * A poller hands its messages to the sink in the order received (the input host keeps that order, so a FIFO
 * queue's order per message group holds) and polls again only once they are all committed and deleted:
 * `pollers × maxMessages` is the window of messages in flight, and while the store is down the pollers wait
 * instead of taking more. A committed message is deleted (DeleteMessageBatch, ten at a time). A message in
 * flight stays invisible: its visibility is extended (ChangeMessageVisibilityBatch) before half of
 * `visibilityTimeout` has passed. Messages left when the input stops are made visible again at once; after a
 * crash they come back once their visibility timeout ends. SQS delivers at least once and the MessageId
 * stays the same across deliveries, so the message id of a delivery is the MessageId.
 *
 * Message attributes of type String and Number are the headers; CloudEvents binary mode reads the attributes
 * `ce-<name>` (also `ce_<name>`), the content type the attribute `content-type`. The MessageGroupId of a
 * FIFO queue is the key. Lag: ApproximateNumberOfMessages plus ApproximateNumberOfMessagesNotVisible, read
 * at most every five seconds.
 */

import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  ReceiveMessageCommand,
  SQSClient,
  type Message,
} from '@aws-sdk/client-sqs';
import { awsClientConfig, pause, type AwsConnectionOptions } from '../aws.js';
import { HealthTracker, type Delivery, type InputDriver, type InputSink, type Transport, type TransportContext, type TransportHealth } from '../types.js';

interface InputOptions extends AwsConnectionOptions {
  queueUrl?: string;
  queueName?: string;
  queueOwner?: string;
  waitTimeSeconds?: number;
  maxMessages?: number;
  pollers?: number;
  visibilityTimeout?: number;
}

/** A message between receipt and its end (deleted, or left for redelivery). */
interface InFlight {
  receipt: string;
  /** When its visibility is to be extended next. */
  extendAt: number;
}

const LAG_CACHE_MS = 5000;
const MAX_BACKOFF_MS = 5000;

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** The delivery of one SQS message. */
export function deliveryOf(m: Message): Delivery {
  const headers: Record<string, string> = {};
  for (const [name, a] of Object.entries(m.MessageAttributes ?? {})) {
    const type = a.DataType ?? '';
    if (a.StringValue !== undefined && (type.startsWith('String') || type.startsWith('Number'))) headers[name.toLowerCase()] = a.StringValue;
  }
  const delivery: Delivery = { raw: Buffer.from(m.Body ?? '', 'utf8'), contentType: headers['content-type'] ?? null, headers };
  if (m.MessageId !== undefined) delivery.messageId = m.MessageId;
  const group = m.Attributes?.MessageGroupId;
  if (group !== undefined) delivery.key = group;
  return delivery;
}

class SqsInput implements InputDriver {
  readonly #o: InputOptions;
  readonly #context: TransportContext;
  readonly #health = new HealthTracker();
  readonly #abort = new AbortController();
  readonly #inFlight = new Set<InFlight>();
  /** Receipts of messages left for redelivery, to be made visible again. */
  #release: string[] = [];
  #client: SQSClient | undefined;
  #queueUrl = '';
  #pollers: Array<Promise<void>> = [];
  #timer: NodeJS.Timeout | undefined;
  #deletes: Array<{ receipt: string; done: () => void }> = [];
  #flushing = false;
  #lag: { value: number | null; at: number } = { value: null, at: 0 };
  #lagDenied = false;
  #stopping = false;

  constructor(options: InputOptions, context: TransportContext) {
    this.#o = options;
    this.#context = context;
  }

  get #visibility(): number {
    return this.#o.visibilityTimeout ?? 30;
  }

  async start(sink: InputSink): Promise<void> {
    const o = this.#o;
    const client = new SQSClient(awsClientConfig(o, o.queueUrl));
    this.#client = client;
    if (o.queueUrl !== undefined) this.#queueUrl = o.queueUrl;
    else {
      const out = await client.send(new GetQueueUrlCommand({ QueueName: o.queueName, ...(o.queueOwner === undefined ? {} : { QueueOwnerAWSAccountId: o.queueOwner }) }));
      this.#queueUrl = out.QueueUrl!;
    }
    try {
      await this.#readLag();
    } catch (err) {
      // Without sqs:GetQueueAttributes (the Sesshu policy lacks it) the input works and reports no lag.
      if (!/AccessDenied/i.test((err as Error).name)) throw err;
      this.#lagDenied = true;
      this.#context.log.warn({ err: (err as Error).message }, 'SQS GetQueueAttributes is not allowed: the input reports no lag');
    }
    this.#health.connected = true;
    const tick = Math.min(Math.max((this.#visibility * 1000) / 4, 200), 5000);
    this.#timer = setInterval(() => void this.#extend(), tick);
    this.#timer.unref();
    for (let i = 0; i < (o.pollers ?? 10); i++) this.#pollers.push(this.#poll(sink));
  }

  async #poll(sink: InputSink): Promise<void> {
    const o = this.#o;
    const client = this.#client!;
    let backoff = 100;
    while (!this.#stopping) {
      let messages: Message[];
      try {
        const out = await client.send(
          new ReceiveMessageCommand({
            QueueUrl: this.#queueUrl,
            MaxNumberOfMessages: o.maxMessages ?? 10,
            WaitTimeSeconds: o.waitTimeSeconds ?? 20,
            VisibilityTimeout: this.#visibility,
            MessageAttributeNames: ['All'],
            MessageSystemAttributeNames: ['MessageGroupId', 'ApproximateReceiveCount'],
          }),
          { abortSignal: this.#abort.signal },
        );
        messages = out.Messages ?? [];
        this.#health.connected = true;
        backoff = 100;
      } catch (err) {
        if (this.#stopping) break;
        this.#health.connected = false;
        this.#health.failed(err);
        this.#context.log.warn({ err: (err as Error).message }, 'SQS ReceiveMessage failed; polling again');
        await pause(backoff / 2 + Math.random() * backoff, this.#abort.signal);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        continue;
      }
      // In the order received, in one tick: the input host keeps this order.
      await Promise.all(messages.map((m) => this.#deliver(sink, m)));
    }
  }

  #deliver(sink: InputSink, m: Message): Promise<void> {
    const entry: InFlight = { receipt: m.ReceiptHandle!, extendAt: Date.now() + (this.#visibility * 1000) / 2 };
    this.#inFlight.add(entry);
    return sink.deliver(deliveryOf(m)).then(
      async () => {
        await this.#delete(entry.receipt);
        this.#inFlight.delete(entry);
      },
      () => {
        // Stopping: left for redelivery, visible again at once.
        this.#inFlight.delete(entry);
        this.#release.push(entry.receipt);
      },
    );
  }

  /** Resolves once the message is deleted, or its deletion failed for good (it is then delivered again, and intake knows it). */
  #delete(receipt: string): Promise<void> {
    return new Promise((done) => {
      this.#deletes.push({ receipt, done });
      if (!this.#flushing) {
        this.#flushing = true;
        setImmediate(() => void this.#flushDeletes());
      }
    });
  }

  async #flushDeletes(): Promise<void> {
    const pending = this.#deletes;
    this.#deletes = [];
    this.#flushing = false;
    await Promise.all(
      chunks(pending, 10).map(async (batch) => {
        const entries = batch.map((d, i) => ({ Id: String(i), ReceiptHandle: d.receipt }));
        for (let attempt = 1; ; attempt++) {
          try {
            const out = await this.#client!.send(new DeleteMessageBatchCommand({ QueueUrl: this.#queueUrl, Entries: entries }));
            for (const f of out.Failed ?? []) {
              this.#health.failed(new Error(`DeleteMessage: ${f.Code}: ${f.Message}`));
              this.#context.log.warn({ code: f.Code, err: f.Message }, 'SQS did not delete a committed message; it will be delivered again and recognised');
            }
            break;
          } catch (err) {
            this.#health.failed(err);
            if (attempt >= 5) {
              this.#context.log.warn({ err: (err as Error).message }, 'SQS DeleteMessageBatch failed; the messages will be delivered again and recognised');
              break;
            }
            await pause(100 * 2 ** attempt);
          }
        }
        for (const d of batch) d.done();
      }),
    );
  }

  /** Keeps the messages still in flight invisible. */
  async #extend(): Promise<void> {
    const now = Date.now();
    const due = [...this.#inFlight].filter((e) => e.extendAt <= now);
    if (due.length === 0) return;
    const half = (this.#visibility * 1000) / 2;
    for (const e of due) e.extendAt = now + half;
    await this.#changeVisibility(
      due.map((e) => e.receipt),
      this.#visibility,
    );
  }

  async #changeVisibility(receipts: string[], seconds: number): Promise<void> {
    await Promise.all(
      chunks(receipts, 10).map(async (batch) => {
        try {
          const out = await this.#client!.send(
            new ChangeMessageVisibilityBatchCommand({
              QueueUrl: this.#queueUrl,
              Entries: batch.map((receipt, i) => ({ Id: String(i), ReceiptHandle: receipt, VisibilityTimeout: seconds })),
            }),
          );
          for (const f of out.Failed ?? []) this.#context.log.debug({ code: f.Code, err: f.Message }, 'SQS did not change the visibility of a message');
        } catch (err) {
          this.#health.failed(err);
          this.#context.log.warn({ err: (err as Error).message }, 'SQS ChangeMessageVisibilityBatch failed');
        }
      }),
    );
  }

  async #readLag(): Promise<number | null> {
    const out = await this.#client!.send(
      new GetQueueAttributesCommand({ QueueUrl: this.#queueUrl, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'] }),
    );
    const a = out.Attributes ?? {};
    const value = Number(a.ApproximateNumberOfMessages ?? 0) + Number(a.ApproximateNumberOfMessagesNotVisible ?? 0);
    this.#lag = { value, at: Date.now() };
    return value;
  }

  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#abort.abort();
    await Promise.allSettled(this.#pollers);
    clearInterval(this.#timer);
    const release = this.#release;
    this.#release = [];
    if (release.length > 0) await this.#changeVisibility(release, 0);
    this.#client?.destroy();
    this.#health.connected = false;
  }

  async health(): Promise<TransportHealth> {
    let lag = this.#lag.value;
    if (this.#health.connected && !this.#lagDenied && Date.now() - this.#lag.at > LAG_CACHE_MS) {
      try {
        lag = await this.#readLag();
      } catch (err) {
        this.#health.failed(err);
      }
    }
    return this.#health.snapshot(lag);
  }
}

export const transport: Transport = {
  name: 'sqs',
  binding: { prefixes: ['ce-', 'ce_'] },
  createInput: (options, context) => new SqsInput(options as unknown as InputOptions, context),
};
