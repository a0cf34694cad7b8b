/**
 * `amqp`: RabbitMQ over AMQP 0-9-1 with amqplib, using its connection recovery (reconnect with backoff and
 * jitter; the consumer and topology are set up again after each reconnect).
 *
 * Input: consumes one queue with a prefetch window; a message is acknowledged once intake has committed it
 * (or kept it as a dead letter), together with the ones before it (one `multiple` ack per tick). Messages in flight when a connection drops are redelivered by
 * the broker; (`source`, `id`) deduplication makes that harmless. Lag: the queue's ready messages.
 *
 * Output: a confirm channel; `publish` resolves once the broker confirmed every message. Messages are
 * persistent.
 *
 * CloudEvents AMQP binding: binary mode attributes are application properties `cloudEvents:<name>` (also
 * read: `cloudEvents_<name>`), `datacontenttype` is the content-type property.
 */

import amqp from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Options, RecoveringChannelModel } from 'amqplib';
import { InOrder } from '../in-order.js';
import { tlsOptions, type TlsOptions } from '../tls.js';
import { HealthTracker, type Delivery, type InputDriver, type InputSink, type OutboundMessage, type OutputDriver, type Transport, type TransportContext } from '../types.js';

interface ConnectionOptions {
  url: string;
  tls?: TlsOptions;
  heartbeat?: number;
  exchange?: string;
  exchangeType?: string;
  declare?: boolean;
}

interface InputOptions extends ConnectionOptions {
  queue: string;
  bindings?: string[];
  prefetch?: number;
}

interface OutputOptions extends ConnectionOptions {
  routingKey?: string;
}

function connect(o: ConnectionOptions, setup: (model: ChannelModel) => Promise<void>, health: HealthTracker, context: TransportContext): Promise<RecoveringChannelModel> {
  const tls = tlsOptions(o.tls);
  const url = new URL(o.url);
  if (o.heartbeat !== undefined) url.searchParams.set('heartbeat', String(o.heartbeat));
  return amqp
    .connect(url.toString(), {
      ...(tls ?? {}),
      recovery: {
        initialDelay: 100,
        maxDelay: 5000,
        maxRetries: Infinity,
        initialMaxRetries: 3,
        waitForConnect: true,
        setup: async (model: ChannelModel) => {
          await setup(model);
          health.connected = true;
        },
      },
    })
    .then((connection) => {
      connection.on('disconnect', (err: Error) => {
        health.connected = false;
        health.failed(err);
        context.log.warn({ err: err?.message }, 'AMQP connection lost; reconnecting');
      });
      connection.on('connect-failed', (err: Error) => health.failed(err));
      connection.on('error', (err: Error) => health.failed(err));
      return connection;
    });
}

async function declare(channel: Channel, o: ConnectionOptions): Promise<void> {
  if (o.declare === false || o.exchange === undefined || o.exchange === '') return;
  await channel.assertExchange(o.exchange, o.exchangeType ?? 'topic', { durable: true });
}

function headersOf(message: ConsumeMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.properties.headers ?? {})) {
    if (value === undefined || value === null) continue;
    out[name.toLowerCase()] = Buffer.isBuffer(value) ? value.toString('utf8') : typeof value === 'object' ? JSON.stringify(value) : String(value);
  }
  return out;
}

/** One channel's deliveries in the order the broker numbered them, and the last one ready for a `multiple` ack. */
interface Acks {
  order: InOrder<ConsumeMessage>;
  last: ConsumeMessage | undefined;
  scheduled: boolean;
}

class AmqpInput implements InputDriver {
  readonly #o: InputOptions;
  readonly #context: TransportContext;
  readonly #health = new HealthTracker();
  #connection: RecoveringChannelModel | undefined;
  #channel: Channel | undefined;
  #consumerTag: string | undefined;
  #inFlight = new Set<Promise<unknown>>();
  #stopping = false;

  constructor(options: InputOptions, context: TransportContext) {
    this.#o = options;
    this.#context = context;
  }

  async start(sink: InputSink): Promise<void> {
    const o = this.#o;
    this.#connection = await connect(
      o,
      async (model) => {
        const channel = await model.createChannel();
        channel.on('error', (err: Error) => this.#health.failed(err));
        await declare(channel, o);
        if (o.declare !== false) await channel.assertQueue(o.queue, { durable: true });
        if (o.exchange !== undefined && o.exchange !== '') {
          for (const key of o.bindings ?? ['#']) await channel.bindQueue(o.queue, o.exchange, key);
        }
        await channel.prefetch(o.prefetch ?? 1000);
        this.#channel = channel;
        const { consumerTag } = await channel.consume(o.queue, (message) => {
          if (message === null) return; // the broker canceled the consumer (queue deleted): recovery sets it up again
          this.#handle(sink, channel, message);
        });
        this.#consumerTag = consumerTag;
      },
      this.#health,
      this.#context,
    );
  }

  #handle(sink: InputSink, channel: Channel, message: ConsumeMessage): void {
    const delivery: Delivery = {
      raw: message.content,
      contentType: message.properties.contentType ?? null,
      headers: headersOf(message),
      topic: message.fields.routingKey,
    };
    if (message.properties.messageId !== undefined && message.properties.messageId !== null) delivery.messageId = String(message.properties.messageId);
    const end = this.#acksFor(channel).order.add(message);
    const done = sink.deliver(delivery).then(
      () => end(true),
      () => {
        // Stopping: left unacknowledged, for redelivery (and nothing after it is acknowledged on this channel).
      },
    );
    this.#inFlight.add(done);
    void done.finally(() => this.#inFlight.delete(done));
  }

  #acks = new WeakMap<Channel, Acks>();

  #acksFor(channel: Channel): Acks {
    let acks = this.#acks.get(channel);
    if (acks === undefined) {
      const a: Acks = { order: new InOrder((ended) => this.#scheduleAck(channel, a, ended.at(-1)!.item)), last: undefined, scheduled: false };
      this.#acks.set(channel, a);
      acks = a;
    }
    return acks;
  }

  /**
   * Acknowledge, once per tick, every message up to the last one whose whole prefix is done, with one
   * `multiple` ack (deliveries on a channel are numbered in order). Dead letters are done too; a message
   * still in flight holds back the acks of those after it until it is done.
   */
  #scheduleAck(channel: Channel, acks: Acks, last: ConsumeMessage): void {
    acks.last = last;
    if (acks.scheduled) return;
    acks.scheduled = true;
    setImmediate(() => {
      acks.scheduled = false;
      const message = acks.last!;
      try {
        channel.ack(message, true);
      } catch (err) {
        // The channel closed meanwhile: the broker delivers these again, and intake knows them.
        this.#health.failed(err);
      }
    });
  }

  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    try {
      if (this.#channel !== undefined && this.#consumerTag !== undefined) await this.#channel.cancel(this.#consumerTag);
    } catch {
      // already closed
    }
    await Promise.allSettled([...this.#inFlight]);
    await this.#connection?.close().catch(() => {});
    this.#health.connected = false;
  }

  async health() {
    let lag: number | null = null;
    if (this.#health.connected && this.#channel !== undefined) {
      try {
        lag = (await this.#channel.checkQueue(this.#o.queue)).messageCount;
      } catch (err) {
        this.#health.failed(err);
      }
    }
    return this.#health.snapshot(lag);
  }
}

class AmqpOutput implements OutputDriver {
  readonly #o: OutputOptions;
  readonly #context: TransportContext;
  readonly #health = new HealthTracker();
  #connection: RecoveringChannelModel | undefined;
  #channel: ConfirmChannel | undefined;

  constructor(options: OutputOptions, context: TransportContext) {
    this.#o = options;
    this.#context = context;
  }

  async start(): Promise<void> {
    this.#connection = await connect(
      this.#o,
      async (model) => {
        const channel = await model.createConfirmChannel();
        channel.on('error', (err: Error) => this.#health.failed(err));
        await declare(channel, this.#o);
        this.#channel = channel;
      },
      this.#health,
      this.#context,
    );
  }

  async publish(messages: OutboundMessage[]): Promise<void> {
    const channel = this.#channel;
    if (channel === undefined || !this.#health.connected) throw new Error('the AMQP output is not connected');
    const exchange = this.#o.exchange ?? '';
    for (const m of messages) {
      const options: Options.Publish = { persistent: true, headers: m.headers };
      if (m.contentType !== undefined) options.contentType = m.contentType;
      if (m.key !== undefined) options.messageId = m.key;
      channel.publish(exchange, m.topic ?? this.#o.routingKey ?? '', m.body, options);
    }
    await channel.waitForConfirms();
  }

  async stop(): Promise<void> {
    await this.#connection?.close().catch(() => {});
    this.#health.connected = false;
  }

  async health() {
    return this.#health.snapshot();
  }
}

export const transport: Transport = {
  name: 'amqp',
  binding: { prefixes: ['cloudevents:', 'cloudevents_'] },
  createInput: (options, context) => new AmqpInput(options as unknown as InputOptions, context),
  createOutput: (options, context) => new AmqpOutput(options as unknown as OutputOptions, context),
};
