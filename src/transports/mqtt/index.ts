/**
 * `mqtt`: MQTT 3.1.1 and 5 with mqtt.js. The client reconnects by itself (`reconnectPeriod`); health follows
 * its connect, offline and error events.
 *
 * Input: subscribes to topic filters in a persistent session under a fixed client id (`clean: false`; with
 * MQTT 5 a session expiry, for ever by default), so that the broker keeps what arrives while the dispatcher
 * is away and sends again what was not acknowledged. A QoS 1 message is acknowledged (PUBACK) only once
 * intake has committed it or kept it as a dead letter, in the order the messages arrived, as MQTT asks;
 * messages are handed to intake without waiting for the previous one's commit, up to the broker's window
 * (MQTT 5 Receive Maximum = `maxInFlight`; MQTT 3.1.1 the broker's own, Mosquitto `max_inflight_messages`).
 * An acknowledgement due on a connection that has since dropped is not sent: the broker sends the message
 * again on the new connection, and (`source`, `id`) deduplication makes that harmless. A QoS 2 message is
 * taken one at a time, PUBCOMP after the commit. QoS 0 messages are never acknowledged.
 *
 * Message id: none. MQTT packet ids are reused and not stable across a redelivery, so a plain-JSON message
 * without an id field gets the SHA-256 of its bytes as its id. Topic: the MQTT topic with `/` turned into `.`
 * (`plant/7/temp` → `plant.7.temp`), so that AMQP-style topic patterns (`plant.*.temp`, `plant.#`) route it.
 *
 * Output: QoS 1, each publish waits for its PUBACK; optionally retained. MQTT 5 carries headers as user
 * properties and the content type as its property; MQTT 3.1.1 carries the body alone.
 *
 * CloudEvents MQTT binding: MQTT 5 binary mode attributes are user properties named as the attributes
 * (no prefix), `datacontenttype` is the content type property. MQTT 3.1.1 has structured mode only.
 */

import { connect, type IClientOptions, type IClientPublishOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { InOrder } from '../in-order.js';
import { tlsOptions, type TlsOptions } from '../tls.js';
import { HealthTracker, type Delivery, type InputDriver, type InputSink, type OutboundMessage, type OutputDriver, type Transport, type TransportContext } from '../types.js';

interface ConnectionOptions {
  url: string;
  username?: string;
  password?: string;
  tls?: TlsOptions;
  protocolVersion?: 4 | 5;
  keepalive?: number;
  /** Milliseconds. */
  reconnectPeriod?: number;
  clientId?: string;
}

interface InputOptions extends ConnectionOptions {
  topics: string[];
  clientId: string;
  qos?: 0 | 1 | 2;
  clean?: boolean;
  /** Milliseconds. */
  sessionExpiry?: number;
  maxInFlight?: number;
}

interface OutputOptions extends ConnectionOptions {
  topic?: string;
  retain?: boolean;
}

/** MQTT 5's "the session does not expire". */
const NEVER = 0xffffffff;
/** Failed attempts before the first connection counts as failed for good. */
const FIRST_ATTEMPTS = 3;

/** mqtt.js sends a PUBACK when `handleMessage` calls back without an error; with one it goes on without. */
const LATER = new Error('acknowledged after the commit');

function clientOptions(o: ConnectionOptions, context: TransportContext): IClientOptions {
  const options: IClientOptions = {
    protocolVersion: o.protocolVersion ?? 5,
    keepalive: o.keepalive ?? 30,
    reconnectPeriod: o.reconnectPeriod ?? 1000,
    connectTimeout: 10_000,
    clientId: o.clientId ?? `dispatcher-${context.name}-${Math.random().toString(16).slice(2, 10)}`,
  };
  if (o.username !== undefined) options.username = o.username;
  if (o.password !== undefined) options.password = o.password;
  const tls = tlsOptions(o.tls);
  if (tls !== undefined) Object.assign(options, tls, o.url.startsWith('mqtt://') ? { protocol: 'mqtts' } : {});
  return options;
}

/** Connects; resolves on the first CONNACK, rejects after a few failed attempts (the client is ended then). */
function open(url: string, options: IClientOptions, health: HealthTracker, context: TransportContext, prepare: (client: MqttClient) => void): Promise<MqttClient> {
  const client = connect(url, options);
  prepare(client);
  client.on('connect', () => {
    health.connected = true;
  });
  client.on('offline', () => {
    if (health.connected) context.log.warn('MQTT connection lost; reconnecting');
    health.connected = false;
  });
  client.on('close', () => {
    health.connected = false;
  });
  client.on('error', (err) => health.failed(err));
  return new Promise((resolve, reject) => {
    let failures = 0;
    const onConnect = () => {
      client.off('close', onClose);
      resolve(client);
    };
    const onClose = () => {
      failures += 1;
      if (failures < FIRST_ATTEMPTS) return;
      client.off('connect', onConnect);
      client.off('close', onClose);
      client.end(true);
      reject(new Error(`cannot connect to ${url}: ${health.lastError ?? 'the connection closed'}`));
    };
    client.once('connect', onConnect);
    client.on('close', onClose);
  });
}

function end(client: MqttClient | undefined): Promise<void> {
  if (client === undefined) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => client.end(true, {}, () => resolve()), 2000);
    client.end(false, {}, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function headersOf(packet: IPublishPacket): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(packet.properties?.userProperties ?? {})) {
    out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return out;
}

class MqttInput implements InputDriver {
  readonly #o: InputOptions;
  readonly #context: TransportContext;
  readonly #health = new HealthTracker();
  #client: MqttClient | undefined;
  /** The QoS 1 messages (packet ids) of the current connection not yet acknowledged, in arrival order. */
  #acks = this.#newAcks();
  #inFlight = new Set<Promise<unknown>>();
  #stopping = false;

  constructor(options: InputOptions, context: TransportContext) {
    this.#o = options;
    this.#context = context;
  }

  async start(sink: InputSink): Promise<void> {
    const o = this.#o;
    const options = clientOptions(o, this.#context);
    options.clean = o.clean ?? false;
    if (options.protocolVersion === 5) {
      const expiry = o.sessionExpiry === undefined ? NEVER : Math.min(NEVER, Math.round(o.sessionExpiry / 1000));
      options.properties = { sessionExpiryInterval: expiry, receiveMaximum: o.maxInFlight ?? 100 };
    }
    const client = await open(o.url, options, this.#health, this.#context, (c) => {
      c.handleMessage = (packet, callback) => this.#handle(sink, packet, callback);
      // A new connection: acknowledgements due on the old one are not sent; the broker sends those messages again.
      c.on('connect', () => {
        this.#acks = this.#newAcks();
      });
    });
    this.#client = client;
    const qos = o.qos ?? 1;
    const granted = await client.subscribeAsync([...o.topics], { qos });
    const refused = granted.filter((g) => g.qos > 2);
    if (refused.length > 0) {
      await end(client);
      throw new Error(`the broker refused the subscription to ${refused.map((g) => g.topic).join(', ')}`);
    }
  }

  #handle(sink: InputSink, packet: IPublishPacket, callback: (err?: Error) => void): void {
    const delivery: Delivery = {
      raw: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
      contentType: packet.properties?.contentType ?? null,
      headers: headersOf(packet),
      topic: packet.topic.replaceAll('/', '.'),
    };
    if (this.#stopping) {
      // Left unacknowledged: the broker keeps it for the next connection under this client id.
      callback(LATER);
      return;
    }
    const delivered = sink.deliver(delivery);
    let done: Promise<unknown>;
    if (packet.qos === 1 && packet.messageId !== undefined) {
      const end = this.#acks.add(packet.messageId);
      callback(LATER);
      done = delivered.then(
        () => end(true),
        () => end(false),
      );
    } else if (packet.qos === 2) {
      // mqtt.js sends PUBCOMP when this calls back: only after the commit, one message at a time.
      done = delivered.then(
        () => callback(),
        () => callback(LATER),
      );
    } else {
      callback();
      done = delivered.catch(() => {});
    }
    this.#inFlight.add(done);
    void done.finally(() => this.#inFlight.delete(done));
  }

  /** PUBACKs in arrival order, as MQTT requires: each ended message at the head of the line. */
  #newAcks(): InOrder<number> {
    return new InOrder((ended) => {
      for (const { item: messageId, acknowledge } of ended) {
        if (!acknowledge || this.#client?.connected !== true) continue;
        // mqtt.js has no public call for a PUBACK of its own: `_sendPacket` is what its handlers use.
        (this.#client as unknown as { _sendPacket(packet: object): void })._sendPacket({ cmd: 'puback', messageId });
      }
    });
  }

  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    await Promise.allSettled([...this.#inFlight]);
    await end(this.#client);
    this.#health.connected = false;
  }

  async health() {
    return this.#health.snapshot(null);
  }
}

class MqttOutput implements OutputDriver {
  readonly #o: OutputOptions;
  readonly #context: TransportContext;
  readonly #health = new HealthTracker();
  #client: MqttClient | undefined;

  constructor(options: OutputOptions, context: TransportContext) {
    this.#o = options;
    this.#context = context;
  }

  async start(): Promise<void> {
    this.#client = await open(this.#o.url, clientOptions(this.#o, this.#context), this.#health, this.#context, () => {});
  }

  async publish(messages: OutboundMessage[]): Promise<void> {
    const client = this.#client;
    if (client === undefined || !client.connected) throw new Error('the MQTT output is not connected');
    const v5 = client.options.protocolVersion === 5;
    try {
      await Promise.all(
        messages.map((m) => {
          const topic = m.topic ?? this.#o.topic;
          if (topic === undefined) throw new Error('the message names no topic and the MQTT output has no `topic`');
          const options: IClientPublishOptions = { qos: 1, retain: this.#o.retain ?? false };
          if (v5) {
            options.properties = { userProperties: { ...m.headers } };
            if (m.contentType !== undefined) options.properties.contentType = m.contentType;
          }
          return client.publishAsync(topic, m.body, options);
        }),
      );
    } catch (err) {
      this.#health.failed(err);
      throw err;
    }
  }

  async stop(): Promise<void> {
    await end(this.#client);
    this.#health.connected = false;
  }

  async health() {
    return this.#health.snapshot();
  }
}

export const transport: Transport = {
  name: 'mqtt',
  binding: { prefixes: [''] },
  createInput: (options, context) => new MqttInput(options as unknown as InputOptions, context),
  createOutput: (options, context) => new MqttOutput(options as unknown as OutputOptions, context),
};
