/**
 * `kafka`: Apache Kafka through kafkajs.
 *
 * Input: a consumer group. Each batch (the messages of one partition from one fetch) is handed to the sink
 * all at once, in partition order, so that its messages share group commits; the partition's offset is
 * resolved only up to the last message of an unbroken run whose delivery resolved, and committed after the
 * batch (and during a long one, at most every second). A delivery that rejects (the dispatcher stops) stops
 * the offset there: that message and the ones after it are consumed again by the next member. Heartbeats
 * go on while a batch waits (for example while the store is unreachable and the input pauses), so the
 * member keeps its partitions; when the group rebalances meanwhile, the batch lets go of its partitions
 * with what was resolved committed. kafkajs retries with backoff when a broker is lost; a consumer that
 * crashed for good is made anew, so an input never stops silently. Lag: the topics' end offsets less the
 * group's committed offsets, from the admin client, cached for a few seconds.
 *
 * Delivery: the value is the raw message (a tombstone, whose value is null, is an empty message: a dead
 * letter unless binary-mode headers make it an event without data); headers as UTF-8 text, names
 * lower-cased; the key; the topic; message id `<topic>/<partition>/<offset>`, the same when delivered again.
 *
 * Output: a producer with `acks: -1` (all in-sync replicas), idempotent unless turned off; `publish` sends
 * the messages grouped by topic in one request and resolves once the brokers acknowledged them.
 *
 * CloudEvents Kafka binding: binary mode attributes are headers `ce_<name>`, `datacontenttype` is the
 * `content-type` header; structured mode is `content-type: application/cloudevents+json`.
 */

import { Kafka, logLevel, Partitioners, type Admin, type Consumer, type EachBatchPayload, type KafkaConfig, type KafkaMessage, type LogEntry, type Producer, type SASLOptions } from 'kafkajs';
import type { Logger } from 'pino';
import { InOrder } from '../in-order.js';
import { tlsOptions, type TlsOptions } from '../tls.js';
import { HealthTracker, type Delivery, type InputDriver, type InputSink, type OutboundMessage, type OutputDriver, type Transport, type TransportContext, type TransportHealth } from '../types.js';

/** Milliseconds (the configuration loader turned `5s` into 5000). */
type Duration = number;

export interface KafkaConnectionOptions {
  brokers: string[];
  clientId?: string;
  tls?: TlsOptions;
  sasl?: { mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512'; username: string; password: string };
  connectionTimeout?: Duration;
  requestTimeout?: Duration;
}

export interface KafkaInputOptions extends KafkaConnectionOptions {
  groupId?: string;
  topics: string[];
  fromBeginning?: boolean;
  sessionTimeout?: Duration;
  rebalanceTimeout?: Duration;
  heartbeatInterval?: Duration;
  partitionsConsumedConcurrently?: number;
  /** Bytes. */
  maxBytesPerPartition?: number;
  maxWait?: Duration;
}

export interface KafkaOutputOptions extends KafkaConnectionOptions {
  topic?: string;
  idempotent?: boolean;
  retries?: number;
}

/** How long a computed lag is reused. */
const LAG_CACHE_MS = 3000;
/** How long health waits for the lag. */
const LAG_TIMEOUT_MS = 2000;
/** Mid-batch commits at most this often. */
const COMMIT_INTERVAL_MS = 1000;
/** A crashed consumer is made anew after this long at first, doubling up to the most. */
const RESTART_MS = { initial: 500, max: 30_000 };

const LEVELS: Record<number, 'error' | 'warn' | 'debug' | 'trace'> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'debug',
  [logLevel.DEBUG]: 'trace',
};

/** kafkajs logs into the input's or output's logger; its chatty INFO lines become debug. */
function logCreator(log: Logger) {
  return () =>
    ({ level, log: entry }: LogEntry) => {
      const { message, ...rest } = entry;
      // Said once per producer when its retries are bounded: `publish` must fail in the end, and the relay retries.
      const known = message.startsWith('Limiting retries for the idempotent producer');
      log[known ? 'debug' : (LEVELS[level] ?? 'debug')]({ kafka: rest }, `kafka: ${message}`);
    };
}

/** The kafkajs client configuration for these options (exported for the tests of option mapping). */
export function kafkaConfig(o: KafkaConnectionOptions, log: Logger): KafkaConfig {
  const config: KafkaConfig = {
    brokers: o.brokers,
    clientId: o.clientId ?? 'dispatcher',
    logLevel: logLevel.INFO,
    logCreator: logCreator(log),
    // Reconnects with exponential backoff when a broker is lost; what still fails crashes the consumer, which restarts.
    retry: { initialRetryTime: 300, maxRetryTime: 30_000, retries: 8 },
  };
  const tls = tlsOptions(o.tls);
  if (tls !== undefined) config.ssl = Object.keys(tls).length === 0 ? true : tls;
  if (o.sasl !== undefined) config.sasl = { mechanism: o.sasl.mechanism, username: o.sasl.username, password: o.sasl.password } as SASLOptions;
  const connectionTimeout = o.connectionTimeout;
  if (connectionTimeout !== undefined) config.connectionTimeout = connectionTimeout;
  const requestTimeout = o.requestTimeout;
  if (requestTimeout !== undefined) config.requestTimeout = requestTimeout;
  return config;
}

/** `/pattern/flags` → a RegExp; anything else is a topic name. */
function topicOf(spec: string): string | RegExp {
  const m = /^\/(.+)\/([a-z]*)$/.exec(spec);
  return m ? new RegExp(m[1]!, m[2]) : spec;
}

function headersOf(message: KafkaMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.headers ?? {})) {
    // A header repeated: the last one wins, as Kafka's own clients read it (`lastHeader`).
    const last = Array.isArray(value) ? value[value.length - 1] : value;
    if (last === undefined || last === null) continue;
    out[name.toLowerCase()] = Buffer.isBuffer(last) ? last.toString('utf8') : String(last);
  }
  return out;
}

export function deliveryOf(topic: string, partition: number, message: KafkaMessage): Delivery {
  const headers = headersOf(message);
  return {
    raw: message.value ?? Buffer.alloc(0),
    contentType: headers['content-type'] ?? null,
    headers,
    topic,
    key: message.key === null ? null : message.key.toString('utf8'),
    messageId: `${topic}/${partition}/${message.offset}`,
  };
}

function isRebalancing(err: unknown): boolean {
  const type = (err as { type?: string } | null)?.type;
  return type === 'REBALANCE_IN_PROGRESS' || type === 'NOT_COORDINATOR_FOR_GROUP' || type === 'ILLEGAL_GENERATION' || type === 'UNKNOWN_MEMBER_ID';
}

class KafkaInput implements InputDriver {
  readonly #o: KafkaInputOptions;
  readonly #context: TransportContext;
  readonly #health = new HealthTracker();
  readonly #kafka: Kafka;
  readonly #groupId: string;
  #consumer: Consumer | undefined;
  #admin: Admin | undefined;
  #sink: InputSink | undefined;
  #stopping = false;
  #restartTimer: NodeJS.Timeout | undefined;
  #restartDelay = RESTART_MS.initial;
  #lag: { at: number; value: number | null } | undefined;
  #lastContact = 0;

  constructor(options: KafkaInputOptions, context: TransportContext) {
    this.#o = options;
    this.#context = context;
    this.#kafka = new Kafka(kafkaConfig(options, context.log));
    this.#groupId = options.groupId ?? 'dispatcher';
  }

  async start(sink: InputSink): Promise<void> {
    this.#sink = sink;
    await this.#run();
  }

  /** Make a consumer, join the group and consume; a crash that kafkajs does not restart makes a new one. */
  async #run(): Promise<void> {
    const o = this.#o;
    const consumer = this.#kafka.consumer({
      groupId: this.#groupId,
      ...optional('sessionTimeout', o.sessionTimeout),
      ...optional('rebalanceTimeout', o.rebalanceTimeout),
      ...optional('heartbeatInterval', o.heartbeatInterval),
      ...optional('maxBytesPerPartition', o.maxBytesPerPartition),
      ...optional('maxWaitTimeInMs', o.maxWait),
      retry: { initialRetryTime: 300, maxRetryTime: 30_000, retries: 8, restartOnFailure: async () => true },
    });
    this.#consumer = consumer;
    const { CONNECT, GROUP_JOIN, DISCONNECT, CRASH, REQUEST_TIMEOUT, STOP, HEARTBEAT, FETCH, COMMIT_OFFSETS } = consumer.events;
    const contact = () => (this.#lastContact = Date.now());
    consumer.on(HEARTBEAT, contact);
    consumer.on(FETCH, contact);
    consumer.on(COMMIT_OFFSETS, contact);
    consumer.on(CONNECT, () => this.#context.log.debug('kafka consumer connected'));
    consumer.on(GROUP_JOIN, (e) => {
      contact();
      this.#health.connected = true;
      this.#restartDelay = RESTART_MS.initial;
      this.#context.log.debug({ assignment: e.payload.memberAssignment }, 'kafka consumer joined its group');
    });
    consumer.on(DISCONNECT, () => (this.#health.connected = false));
    consumer.on(STOP, () => (this.#health.connected = false));
    consumer.on(REQUEST_TIMEOUT, (e) => this.#health.failed(new Error(`request to broker ${e.payload.broker} timed out`)));
    consumer.on(CRASH, (e) => {
      const { error, restart } = e.payload;
      this.#health.connected = false;
      this.#health.failed(error);
      if (this.#stopping || consumer !== this.#consumer) return;
      if (restart) {
        this.#context.log.warn({ err: error.message }, 'kafka consumer crashed; kafkajs restarts it');
        return;
      }
      this.#context.log.error({ err: error.message }, `kafka consumer crashed; a new one starts in ${this.#restartDelay}ms`);
      this.#scheduleRestart();
    });

    await consumer.connect();
    await consumer.subscribe({ topics: o.topics.map(topicOf), fromBeginning: o.fromBeginning ?? false });
    // Joining the group can take up to the rebalance timeout (the group waits for members that died); the
    // dispatcher serves meanwhile, and health says not connected until it joined. A failure to join is a crash.
    consumer
      .run({
        eachBatchAutoResolve: false,
        autoCommit: true,
        autoCommitInterval: COMMIT_INTERVAL_MS,
        partitionsConsumedConcurrently: o.partitionsConsumedConcurrently ?? 4,
        eachBatch: (payload) => this.#batch(payload),
      })
      .catch((err: unknown) => {
        this.#health.failed(err);
        if (this.#stopping || consumer !== this.#consumer) return;
        this.#context.log.error({ err: (err as Error).message }, `kafka consumer could not run; a new one starts in ${this.#restartDelay}ms`);
        this.#scheduleRestart();
      });
  }

  #scheduleRestart(): void {
    clearTimeout(this.#restartTimer);
    const delay = this.#restartDelay;
    this.#restartDelay = Math.min(this.#restartDelay * 2, RESTART_MS.max);
    this.#restartTimer = setTimeout(() => {
      if (this.#stopping) return;
      const old = this.#consumer;
      void (async () => {
        await old?.disconnect().catch(() => {});
        if (this.#stopping) return;
        try {
          await this.#run();
        } catch (err) {
          this.#health.failed(err);
          this.#context.log.error({ err: (err as Error).message }, 'kafka consumer could not start again; trying later');
          this.#scheduleRestart();
        }
      })();
    }, delay);
  }

  /**
   * Hand every message of the batch over at once, in partition order; resolve the offset up to the last
   * message of the unbroken run of resolved deliveries; heartbeat (and commit what is resolved) while
   * waiting.
   */
  async #batch(payload: EachBatchPayload): Promise<void> {
    const { batch, resolveOffset, heartbeat, commitOffsetsIfNecessary } = payload;
    const sink = this.#sink!;
    const messages = batch.messages;
    let resolved = 0;
    let released = false;
    let release!: () => void;
    const letGo = new Promise<void>((resolve) => (release = resolve));
    const order = new InOrder<string>((ended) => {
      resolved += ended.length;
      if (!released) resolveOffset(ended.at(-1)!.item);
    });

    const deliveries = messages.map((message) => {
      const end = order.add(message.offset);
      return sink.deliver(deliveryOf(batch.topic, batch.partition, message)).then(
        () => end(true),
        () => {
          // Stopping: neither this message nor any after it is resolved; the next member consumes them again.
        },
      );
    });

    const interval = this.#o.heartbeatInterval ?? 3000;
    const beat = setInterval(() => {
      if (released) return;
      heartbeat()
        .then(() => commitOffsetsIfNecessary())
        .catch((err: unknown) => {
          if (!isRebalancing(err)) {
            this.#health.failed(err);
            return;
          }
          // The group rebalances: give the partition back with what is resolved (kafkajs commits it); what is
          // still in flight ends in intake, and whoever gets the partition consumes it again (a duplicate).
          this.#context.log.debug({ topic: batch.topic, partition: batch.partition, resolved, of: messages.length }, 'rebalance during a batch: letting go');
          released = true;
          release();
        });
    }, Math.max(100, Math.floor(interval / 2)));
    try {
      await Promise.race([Promise.all(deliveries), letGo]);
    } finally {
      released = true;
      clearInterval(beat);
    }
  }

  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    clearTimeout(this.#restartTimer);
    // kafkajs waits for the batches in flight (the host has rejected what it held), commits what they
    // resolved, and leaves the group, so that its partitions move at once.
    await this.#consumer?.disconnect().catch((err: unknown) => this.#health.failed(err));
    await this.#admin?.disconnect().catch(() => {});
    this.#health.connected = false;
  }

  /**
   * Connected: joined to the group, and the brokers answered a fetch, heartbeat or commit within the session
   * timeout (kafkajs retries a lost broker for a while before it reports anything).
   */
  async health(): Promise<TransportHealth> {
    const silentFor = Date.now() - this.#lastContact;
    if (this.#health.connected && silentFor > (this.#o.sessionTimeout ?? 30_000)) {
      return { ...this.#health.snapshot(null), connected: false, lastError: this.#health.lastError ?? `no answer from the brokers for ${Math.round(silentFor / 1000)}s` };
    }
    return this.#health.snapshot(this.#health.connected ? await this.#lagCached() : null);
  }

  async #lagCached(): Promise<number | null> {
    const now = Date.now();
    if (this.#lag !== undefined && now - this.#lag.at < LAG_CACHE_MS) return this.#lag.value;
    let value: number | null = null;
    let timer: NodeJS.Timeout | undefined;
    try {
      // Health must answer promptly; a lag the brokers do not tell in time is unknown.
      const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('the brokers did not tell the lag in time')), LAG_TIMEOUT_MS)));
      value = await Promise.race([this.#computeLag(), late]);
    } catch (err) {
      this.#health.failed(err);
    }
    clearTimeout(timer);
    this.#lag = { at: now, value };
    return value;
  }

  /** Σ over the partitions of the end offset less the group's committed offset (the start offset when none). */
  async #computeLag(): Promise<number> {
    if (this.#admin === undefined) {
      const admin = this.#kafka.admin();
      await admin.connect();
      this.#admin = admin;
    }
    const admin = this.#admin;
    const specs = this.#o.topics.map(topicOf);
    let topics = specs.filter((t): t is string => typeof t === 'string');
    const patterns = specs.filter((t): t is RegExp => t instanceof RegExp);
    if (patterns.length > 0) {
      const all = await admin.listTopics();
      topics = [...new Set([...topics, ...all.filter((name) => patterns.some((p) => p.test(name)))])];
    }
    if (topics.length === 0) return 0;
    const committed = await admin.fetchOffsets({ groupId: this.#groupId, topics });
    let lag = 0;
    for (const topic of topics) {
      const ends = await admin.fetchTopicOffsets(topic);
      const group = committed.find((c) => c.topic === topic)?.partitions ?? [];
      for (const p of ends) {
        const at = Number(group.find((g) => g.partition === p.partition)?.offset ?? -1);
        lag += Math.max(0, Number(p.high) - (at >= 0 ? at : Number(p.low)));
      }
    }
    return lag;
  }
}

function optional<K extends string, V>(key: K, value: V | undefined): Partial<Record<K, V>> {
  return value === undefined ? {} : ({ [key]: value } as Record<K, V>);
}

class KafkaOutput implements OutputDriver {
  readonly #o: KafkaOutputOptions;
  readonly #health = new HealthTracker();
  readonly #producer: Producer;

  constructor(options: KafkaOutputOptions, context: TransportContext) {
    this.#o = options;
    const idempotent = options.idempotent ?? true;
    this.#producer = new Kafka(kafkaConfig(options, context.log)).producer({
      idempotent,
      // An idempotent producer keeps order with one request in flight per broker.
      ...(idempotent ? { maxInFlightRequests: 1 } : {}),
      allowAutoTopicCreation: true,
      // Keyed messages go to the partition their key hashes to (murmur2, as the Java client does).
      createPartitioner: Partitioners.DefaultPartitioner,
      retry: { initialRetryTime: 300, maxRetryTime: 30_000, retries: options.retries ?? 8 },
    });
    const { CONNECT, DISCONNECT, REQUEST_TIMEOUT } = this.#producer.events;
    this.#producer.on(CONNECT, () => (this.#health.connected = true));
    this.#producer.on(DISCONNECT, () => (this.#health.connected = false));
    this.#producer.on(REQUEST_TIMEOUT, (e) => this.#health.failed(new Error(`request to broker ${e.payload.broker} timed out`)));
  }

  async start(): Promise<void> {
    await this.#producer.connect();
    this.#health.connected = true;
  }

  async publish(messages: OutboundMessage[]): Promise<void> {
    if (messages.length === 0) return;
    const byTopic = new Map<string, { key?: string; value: Buffer; headers: Record<string, string> }[]>();
    for (const m of messages) {
      const topic = m.topic ?? this.#o.topic;
      if (topic === undefined) throw new Error('the Kafka output has no `topic` and the message names none');
      const headers = { ...m.headers };
      if (m.contentType !== undefined) headers['content-type'] = m.contentType;
      const list = byTopic.get(topic) ?? [];
      list.push({ ...(m.key === undefined ? {} : { key: m.key }), value: m.body, headers });
      byTopic.set(topic, list);
    }
    try {
      await this.#producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, list]) => ({ topic, messages: list })) });
    } catch (err) {
      this.#health.failed(err);
      throw err;
    }
  }

  async stop(): Promise<void> {
    await this.#producer.disconnect().catch(() => {});
    this.#health.connected = false;
  }

  async health(): Promise<TransportHealth> {
    return this.#health.snapshot();
  }
}

export const transport: Transport = {
  name: 'kafka',
  binding: { prefixes: ['ce_'] },
  createInput: (options, context) => new KafkaInput(options as unknown as KafkaInputOptions, context),
  createOutput: (options, context) => new KafkaOutput(options as unknown as KafkaOutputOptions, context),
};
