/**
 * `nats`: NATS JetStream with the official client. The client reconnects by itself, forever; health follows
 * the connection's status events.
 *
 * Input: a durable pull consumer, consumed in batches. Each message is acknowledged once intake has
 * committed it (or kept it as a dead letter: bad input is acknowledged, never nak'ed). A message waiting for
 * the store is kept alive (`working`) so the server does not deliver it again meanwhile; one left when the
 * dispatcher stops is nak'ed, for the next consumer to take at once; one in flight when the process dies is
 * delivered again after `ackWait`. The consume loop starts again whenever it ends (server restart, consumer
 * deleted and created again). Message id: `<stream>/<stream sequence>`, the same on every redelivery.
 * Lag: the consumer's pending messages.
 *
 * Output: JetStream publish, waiting for every PubAck; a message key is the `Nats-Msg-Id` header, so the
 * stream drops a duplicate within its duplicate window. Or core NATS (`jetstream: false`).
 *
 * CloudEvents NATS binding: binary mode attributes are headers `ce-<name>`, `datacontenttype` is the
 * `content-type` header.
 */

import { readFileSync } from 'node:fs';
import {
  connect,
  credsAuthenticator,
  headers as natsHeaders,
  nkeyAuthenticator,
  type Authenticator,
  type MsgHdrs,
  type NatsConnection,
  type NodeConnectionOptions,
} from '@nats-io/transport-node';
import { AckPolicy, jetstream, jetstreamManager, type ConsumerMessages, type JetStreamClient, type JsMsg } from '@nats-io/jetstream';
import { tlsOptions, type TlsOptions } from '../tls.js';
import { HealthTracker, type Delivery, type InputDriver, type InputSink, type OutboundMessage, type OutputDriver, type Transport, type TransportContext } from '../types.js';

interface ConnectionOptions {
  servers: string | string[];
  user?: string;
  pass?: string;
  token?: string;
  nkeySeed?: string;
  credsFile?: string;
  tls?: TlsOptions;
  name?: string;
  /** Milliseconds. */
  reconnectWait?: number;
}

interface InputOptions extends ConnectionOptions {
  stream: string;
  consumer: string;
  subjects?: string[];
  create?: boolean;
  /** Milliseconds. */
  ackWait?: number;
  maxAckPending?: number;
  batch?: number;
}

interface OutputOptions extends ConnectionOptions {
  subject?: string;
  jetstream?: boolean;
}

/** How long the consumer's pending count is kept before the server is asked again. */
const LAG_CACHE_MS = 3000;
/** A message given back at stop is delivered again after this long. */
const GIVE_BACK_DELAY_MS = 1000;

async function connectNats(o: ConnectionOptions, health: HealthTracker, context: TransportContext): Promise<NatsConnection> {
  const options: NodeConnectionOptions = {
    servers: o.servers,
    name: o.name ?? `dispatcher-${context.name}`,
    maxReconnectAttempts: -1,
    reconnectTimeWait: o.reconnectWait ?? 1000,
    waitOnFirstConnect: false,
  };
  if (o.user !== undefined) options.user = o.user;
  if (o.pass !== undefined) options.pass = o.pass;
  if (o.token !== undefined) options.token = o.token;
  const authenticators: Authenticator[] = [];
  if (o.nkeySeed !== undefined) authenticators.push(nkeyAuthenticator(new TextEncoder().encode(o.nkeySeed)));
  if (o.credsFile !== undefined) authenticators.push(credsAuthenticator(readFileSync(o.credsFile)));
  if (authenticators.length > 0) options.authenticator = authenticators;
  const tls = tlsOptions(o.tls);
  const wantsTls = tls !== undefined || [o.servers].flat().some((s) => s.startsWith('tls://'));
  // The Node transport hands these to `tls.connect` as they are (Buffers included).
  if (wantsTls) options.tls = (tls ?? {}) as NodeConnectionOptions['tls'];
  const nc = await connect(options);
  health.connected = true;
  void (async () => {
    for await (const s of nc.status()) {
      switch (s.type) {
        case 'disconnect':
          health.connected = false;
          context.log.warn({ server: s.server }, 'NATS connection lost; reconnecting');
          break;
        case 'reconnect':
          health.connected = true;
          context.log.info({ server: s.server }, 'NATS connection back');
          break;
        case 'error':
          health.failed(s.error);
          break;
        case 'close':
          health.connected = false;
          break;
        default:
      }
    }
  })().catch(() => {});
  void nc.closed().then((err) => {
    health.connected = false;
    if (err) health.failed(err);
  });
  return nc;
}

function headersOf(h: MsgHdrs | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (h === undefined) return out;
  for (const [name, values] of h) out[name.toLowerCase()] = values.join(', ');
  return out;
}

class NatsInput implements InputDriver {
  readonly #o: InputOptions;
  readonly #context: TransportContext;
  readonly #health = new HealthTracker();
  #nc: NatsConnection | undefined;
  #messages: ConsumerMessages | undefined;
  #loop: Promise<void> | undefined;
  /** Delivered and not yet acknowledged: kept alive with `working()` while they wait. */
  #pending = new Set<JsMsg>();
  #inFlight = new Set<Promise<unknown>>();
  /** Left by a stopping dispatcher: nak'ed once every delivery has ended. */
  #giveBack: JsMsg[] = [];
  #keepAlive: NodeJS.Timeout | undefined;
  #stopping = false;
  #lag: { value: number; at: number } | undefined;

  constructor(options: InputOptions, context: TransportContext) {
    this.#o = options;
    this.#context = context;
  }

  async start(sink: InputSink): Promise<void> {
    const o = this.#o;
    const nc = await connectNats(o, this.#health, this.#context);
    this.#nc = nc;
    const ackWait = o.ackWait ?? 30_000;
    if (o.create === true) await this.#create(nc, ackWait);
    const js = jetstream(nc);
    // Fails now when the stream or the consumer is missing, so a wrong name is a start-up error.
    await js.consumers.get(o.stream, o.consumer);
    this.#keepAlive = setInterval(() => {
      for (const m of this.#pending) m.working();
    }, Math.max(250, ackWait / 3));
    this.#loop = this.#consume(js, sink);
  }

  async #create(nc: NatsConnection, ackWait: number): Promise<void> {
    const o = this.#o;
    const jsm = await jetstreamManager(nc);
    try {
      await jsm.streams.info(o.stream);
    } catch {
      await jsm.streams.add({ name: o.stream, subjects: o.subjects ?? [`${o.stream}.>`] });
    }
    try {
      await jsm.consumers.info(o.stream, o.consumer);
    } catch {
      await jsm.consumers.add(o.stream, {
        durable_name: o.consumer,
        ack_policy: AckPolicy.Explicit,
        ack_wait: ackWait * 1_000_000,
        max_ack_pending: o.maxAckPending ?? 1000,
        // One subject as `filter_subject`: servers before 2.10 know no `filter_subjects`.
        ...(o.subjects === undefined ? {} : o.subjects.length === 1 ? { filter_subject: o.subjects[0] } : { filter_subjects: o.subjects }),
      });
    }
  }

  /** Consume until stopped; a consume that ends or fails (server restart, consumer gone) is started again. */
  async #consume(js: JetStreamClient, sink: InputSink): Promise<void> {
    const o = this.#o;
    let delay = 100;
    while (!this.#stopping) {
      try {
        const consumer = await js.consumers.get(o.stream, o.consumer);
        const messages = await consumer.consume({ max_messages: o.batch ?? 500 });
        this.#messages = messages;
        void (async () => {
          for await (const s of messages.status()) {
            if (s.type === 'heartbeats_missed' || s.type === 'consumer_not_found' || s.type === 'stream_not_found' || s.type === 'consumer_deleted') {
              this.#health.failed(new Error(`JetStream consumer ${o.stream}/${o.consumer}: ${s.type}`));
            }
            if (s.type === 'consumer_deleted' || s.type === 'stream_not_found' || s.type === 'consumer_not_found') void messages.close();
          }
        })().catch(() => {});
        if (this.#stopping) {
          await messages.close();
          break;
        }
        for await (const m of messages) {
          delay = 100;
          this.#handle(sink, m);
        }
      } catch (err) {
        if (this.#stopping) break;
        this.#health.failed(err);
      }
      if (this.#stopping) break;
      this.#context.log.warn({ stream: o.stream, consumer: o.consumer }, 'JetStream consume ended; starting it again');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }

  #handle(sink: InputSink, m: JsMsg): void {
    const h = headersOf(m.headers);
    const delivery: Delivery = {
      raw: Buffer.from(m.data),
      contentType: h['content-type'] ?? null,
      headers: h,
      topic: m.subject,
      messageId: `${m.info.stream}/${m.info.streamSequence}`,
    };
    this.#pending.add(m);
    const done = sink.deliver(delivery).then(
      () => {
        this.#pending.delete(m);
        m.ack();
      },
      () => {
        // Stopping: given back when the driver stops, in stream order, for the next consumer to take at once.
        this.#pending.delete(m);
        this.#giveBack.push(m);
      },
    );
    this.#inFlight.add(done);
    void done.finally(() => this.#inFlight.delete(done));
  }

  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    await this.#messages?.close().catch(() => {});
    await Promise.allSettled([...this.#inFlight]);
    // The server delivers nak'ed messages again in the order of the naks; the delay keeps them from this
    // consumer's own pull request, which the server still holds until the connection closes.
    for (const m of this.#giveBack.sort((a, b) => a.info.streamSequence - b.info.streamSequence)) m.nak(GIVE_BACK_DELAY_MS);
    clearInterval(this.#keepAlive);
    await this.#loop?.catch(() => {});
    // Drain flushes the acknowledgements before the connection closes.
    await this.#nc?.drain().catch(() => {});
    this.#health.connected = false;
  }

  async health() {
    const nc = this.#nc;
    if (this.#health.connected && nc !== undefined && (this.#lag === undefined || Date.now() - this.#lag.at > LAG_CACHE_MS)) {
      try {
        const jsm = await jetstreamManager(nc);
        const info = await jsm.consumers.info(this.#o.stream, this.#o.consumer);
        this.#lag = { value: info.num_pending, at: Date.now() };
      } catch (err) {
        this.#health.failed(err);
      }
    }
    return this.#health.snapshot(this.#lag?.value ?? null);
  }
}

class NatsOutput implements OutputDriver {
  readonly #o: OutputOptions;
  readonly #context: TransportContext;
  readonly #health = new HealthTracker();
  #nc: NatsConnection | undefined;
  #js: JetStreamClient | undefined;

  constructor(options: OutputOptions, context: TransportContext) {
    this.#o = options;
    this.#context = context;
  }

  async start(): Promise<void> {
    this.#nc = await connectNats(this.#o, this.#health, this.#context);
    if (this.#o.jetstream !== false) this.#js = jetstream(this.#nc);
  }

  async publish(messages: OutboundMessage[]): Promise<void> {
    const nc = this.#nc;
    if (nc === undefined || nc.isClosed()) throw new Error('the NATS output is not connected');
    const sends: Promise<unknown>[] = [];
    for (const m of messages) {
      const subject = m.topic ?? this.#o.subject;
      if (subject === undefined) throw new Error('the message names no subject and the NATS output has no `subject`');
      const h = natsHeaders();
      for (const [name, value] of Object.entries(m.headers)) h.set(name, value);
      if (m.contentType !== undefined) h.set('content-type', m.contentType);
      if (this.#js !== undefined) {
        sends.push(this.#js.publish(subject, m.body, { headers: h, ...(m.key !== undefined ? { msgID: m.key } : {}) }));
      } else {
        nc.publish(subject, m.body, { headers: h });
      }
    }
    try {
      if (this.#js !== undefined) await Promise.all(sends);
      else await nc.flush();
    } catch (err) {
      this.#health.failed(err);
      throw err;
    }
  }

  async stop(): Promise<void> {
    await this.#nc?.drain().catch(() => {});
    this.#health.connected = false;
  }

  async health() {
    return this.#health.snapshot();
  }
}

export const transport: Transport = {
  name: 'nats',
  binding: { prefixes: ['ce-'] },
  createInput: (options, context) => new NatsInput(options as unknown as InputOptions, context),
  createOutput: (options, context) => new NatsOutput(options as unknown as OutputOptions, context),
};
