/**
 * The Communications Backbone's RabbitMQ layout, kept as a mirror of Dispatcher's own inboxes, for
 * deployments whose other systems read or write the original queues directly (`amqp: { url }` in the
 * profile's configuration). Dispatcher's store stays the source of truth; this file only mirrors.
 *
 * What the original kept (its README; ../../../../shared/seeds/notes/communications-backbone.md):
 * - per client `<client_id>-inbox`, `<client_id>-outbox`, `<client_id>-broadcast` queues;
 * - a topic exchange `soar-publish` (`publishExchange`): each inbox is bound to it with its client's
 *   subscription as the binding key, so AMQP topic rules apply (`*` one word, `#` zero or more);
 * - a broadcast exchange (`broadcastExchange`), fanout, bound to every inbox. Its original name is not
 *   public: the default `soar-broadcast` is ours; set the option to match an existing deployment.
 *
 * Both directions:
 * - Out (`mirror`): a message Dispatcher delivered is published as the JSON item `/receive` answers
 *   (`{id, topic, body, sender, time}`), a topic message to the publish exchange with its topic as routing key,
 *   a broadcast to the broadcast exchange; RabbitMQ puts it in the same inboxes Dispatcher did.
 * - In: Dispatcher consumes every outbox and broadcast queue, as the original bus did, and hands what a
 *   system wrote there to `onSend` / `onNotify` (Dispatcher then delivers, and mirrors). Outbox messages are
 *   JSON `{"topic", "body"}` (or `"message"`, what the original's client_send.py wrote), or any JSON whose
 *   topic is in the `topic` header or is the routing key it came with through an exchange.
 *   Anything else goes to `onInvalid` (the caller keeps a dead letter).
 *
 * Chosen defaults and why:
 * - Queues and exchanges durable, with no arguments, messages persistent: a pika script declaring a queue
 *   `durable=True` agrees with ours. A queue or exchange that already exists with other properties
 *   (RabbitMQ refuses with 406) is used as it is, with a warning, rather than refusing the client.
 * - A message is acknowledged only once its callback resolved. Each queue is taken one message at a time,
 *   in order (the order a client sent in is the order Dispatcher delivers in); a failure (a plain error or a
 *   retryable DispatcherError) holds the queue for `retryDelayMs`, then gives that message and the ones
 *   behind it back to the broker, in order, for redelivery. A non-retryable DispatcherError from
 *   `onSend`/`onNotify` means the message will never be taken: it goes to `onInvalid`, then is acknowledged.
 *   At least once: a message in hand when the connection drops is redelivered, so a callback may see it again.
 * - Reconnects with backoff (amqplib recovery, 100 ms up to 5 s, with jitter, forever once connected) and
 *   declares everything again. Changes made while disconnected (a client saved or deleted) are remembered
 *   and applied on reconnect; an old subscription to unbind is remembered too.
 * - Client ids must make queue names RabbitMQ accepts: at most 255 bytes with the longest suffix
 *   (`-broadcast`), not starting with `amq.` (reserved), no control characters.
 *
 * Limits: AMQP 0-9-1 cannot list a queue's bindings, so a binding left by a subscription changed while this
 * process was not running (another process, or an edited store) is not removed; `clientSaved` with
 * `previous` is how a change is told. Several Dispatcher processes consuming the same outbox share its
 * messages (RabbitMQ round robin), and then the order across them is not kept.
 */

import amqp from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, RecoveringChannelModel } from 'amqplib';
import type { Logger } from 'pino';
import { DispatcherError } from '../../core/errors.js';
import { parseJsonBytes } from '../../core/json.js';

export interface LayoutClient {
  id: string;
  /** The client's topic pattern (the inbox's binding key); null for a client that takes broadcasts only. */
  subscription: string | null;
}

export interface MirroredMessage {
  id: string;
  /** Null for a broadcast. */
  topic: string | null;
  /** JSON text, embedded as is (not re-encoded) in the mirrored item. */
  body: string;
  sender: string;
  /** ISO 8601. */
  time: string;
}

export interface AmqpLayoutOptions {
  url: string;
  log: Logger;
  /** The topic exchange every inbox is bound to with its subscription. Default `soar-publish` (the original's). */
  publishExchange?: string;
  /** The fanout exchange bound to every inbox. Default `soar-broadcast`: the original's name is not known. */
  broadcastExchange?: string;
  /** Messages handed to one outbox's or broadcast queue's consumer before any is acknowledged. Default 16. */
  prefetch?: number;
  /** How long a queue waits after a failed callback before its message is redelivered. Default 1000 ms. */
  retryDelayMs?: number;
  /** A message a system wrote to `<client>-outbox`: publish it as that client (resolves once committed). */
  onSend(clientId: string, topic: string, body: unknown): Promise<void>;
  /** A message written to `<client>-broadcast`: broadcast it as that client. */
  onNotify(clientId: string, body: unknown): Promise<void>;
  /** A message that could not be taken (not JSON, no topic, …): keep it (the caller stores a dead letter). */
  onInvalid(clientId: string, queue: string, raw: Buffer, error: DispatcherError): Promise<void>;
}

/** RabbitMQ's limit for queue names, exchange names, routing and binding keys (AMQP `shortstr`). */
const MAX_NAME_BYTES = 255;
const SUFFIXES = { inbox: '-inbox', outbox: '-outbox', broadcast: '-broadcast' } as const;
/** The longest client id whose three queue names all fit. */
export const MAX_CLIENT_ID_BYTES = MAX_NAME_BYTES - Buffer.byteLength(SUFFIXES.broadcast);

/** Why this client id cannot name RabbitMQ queues, or null when it can. */
export function clientIdProblem(id: unknown): string | null {
  if (typeof id !== 'string' || id === '') return 'a client id must be a non-empty string';
  if (Buffer.byteLength(id) > MAX_CLIENT_ID_BYTES) return `client id "${id.slice(0, 40)}…" is longer than ${MAX_CLIENT_ID_BYTES} bytes (RabbitMQ queue names hold ${MAX_NAME_BYTES})`;
  if (id.startsWith('amq.')) return `client id "${id}" starts with "amq.", which RabbitMQ reserves`;
  if (/\p{Cc}/u.test(id)) return `client id ${JSON.stringify(id)} holds a control character`;
  return null;
}

export function queueNames(id: string): { inbox: string; outbox: string; broadcast: string } {
  return { inbox: id + SUFFIXES.inbox, outbox: id + SUFFIXES.outbox, broadcast: id + SUFFIXES.broadcast };
}

type Kind = 'outbox' | 'broadcast';

/** One consumed queue on one channel. Its messages are taken one at a time, in the order delivered. */
interface Consumer {
  clientId: string;
  queue: string;
  kind: Kind;
  channel: Channel;
  tag: string | undefined;
  waiting: ConsumeMessage[];
  busy: boolean;
  stopped: boolean;
  /** Resolves when the current run of `#pump` ends. */
  idle: Promise<void>;
}

/** The reply code of a channel the broker closed (403 access refused, 404 not found, 406 precondition failed…). */
function replyCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** A refusal about one queue or binding, which leaves the connection usable: not a reason to reconnect. */
function isRefusal(err: unknown): boolean {
  const code = replyCode(err);
  return code === 403 || code === 404 || code === 405 || code === 406;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function notConnected(cause?: unknown): DispatcherError {
  return new DispatcherError('network_error', `the RabbitMQ mirror is not connected${cause === undefined ? '' : `: ${message(cause)}`}`, { retryable: true, cause });
}

function headerText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return undefined;
}

/**
 * What a system wrote to an outbox: `{"topic", "body"|"message"}`, else any JSON with the topic in the
 * `topic` header, else in the routing key when it came through an exchange (through the default exchange the
 * routing key is the queue's own name, which is no topic).
 */
export function readOutboxMessage(raw: Buffer, headers: Record<string, unknown> | undefined, routingKey: string, queue: string): { topic: string; body: unknown } {
  const json = parseJsonBytes(raw);
  if (json !== null && typeof json === 'object' && !Array.isArray(json)) {
    const o = json as Record<string, unknown>;
    if (typeof o.topic === 'string' && ('body' in o || 'message' in o)) {
      return { topic: checkTopic(o.topic), body: 'body' in o ? o.body : o.message };
    }
  }
  const header = headerText(headers?.topic);
  if (header !== undefined) return { topic: checkTopic(header), body: json };
  if (routingKey !== '' && routingKey !== queue) return { topic: checkTopic(routingKey), body: json };
  const named = json !== null && typeof json === 'object' && 'topic' in json;
  throw new DispatcherError(
    'invalid_envelope',
    named ? 'the outbox message has a "topic" but neither "body" nor "message"' : 'the outbox message has no topic: send {"topic": …, "body": …}, or set the "topic" header',
  );
}

function checkTopic(topic: string): string {
  if (topic === '') throw new DispatcherError('invalid_envelope', 'the outbox message has an empty topic');
  if (Buffer.byteLength(topic) > MAX_NAME_BYTES) throw new DispatcherError('invalid_envelope', `the topic is longer than ${MAX_NAME_BYTES} bytes (an AMQP routing key)`);
  return topic;
}

export class AmqpLayout {
  readonly #o: AmqpLayoutOptions;
  readonly #log: Logger;
  readonly #publishExchange: string;
  readonly #broadcastExchange: string;
  readonly #prefetch: number;
  readonly #retryDelayMs: number;

  /** What the layout should be: the clients as last saved. */
  readonly #clients = new Map<string, LayoutClient>();
  /** Binding keys of old subscriptions still to unbind from the publish exchange, by client. */
  readonly #stale = new Map<string, Set<string>>();
  /** Clients deleted whose queues are still to delete. */
  readonly #doomed = new Set<string>();

  #connection: RecoveringChannelModel | undefined;
  /** The live connection, its channels: undefined while disconnected. */
  #model: ChannelModel | undefined;
  #consumeChannel: Channel | undefined;
  #publishChannel: ConfirmChannel | undefined;
  /** Declarations run on their own channel: a refusal (which closes a channel) then costs no consumer. */
  #topologyChannel: Channel | undefined;
  readonly #consumers = new Map<string, Consumer>();
  #connected = false;
  #lastError: string | undefined;
  #closing = false;
  /** Changes to the layout run one at a time, reconnect setup included. */
  #serial: Promise<unknown> = Promise.resolve();
  readonly #timers = new Set<{ timer: NodeJS.Timeout; wake: () => void }>();

  constructor(options: AmqpLayoutOptions) {
    this.#o = options;
    this.#log = options.log;
    this.#publishExchange = options.publishExchange ?? 'soar-publish';
    this.#broadcastExchange = options.broadcastExchange ?? 'soar-broadcast';
    this.#prefetch = options.prefetch ?? 16;
    this.#retryDelayMs = options.retryDelayMs ?? 1000;
    const problems: string[] = [];
    for (const [name, value] of [['publishExchange', this.#publishExchange], ['broadcastExchange', this.#broadcastExchange]] as const) {
      if (value === '' || Buffer.byteLength(value) > MAX_NAME_BYTES) problems.push(`${name} must be 1 to ${MAX_NAME_BYTES} bytes`);
    }
    if (this.#publishExchange === this.#broadcastExchange) problems.push('publishExchange and broadcastExchange must differ (one is topic, one fanout)');
    if (!Number.isInteger(this.#prefetch) || this.#prefetch < 1 || this.#prefetch > 65535) problems.push('prefetch must be an integer from 1 to 65535');
    if (!(this.#retryDelayMs >= 0)) problems.push('retryDelayMs must be 0 or more');
    if (problems.length > 0) throw new DispatcherError('config_invalid', `Invalid RabbitMQ layout: ${problems.join('; ')}`);
  }

  async start(clients: LayoutClient[]): Promise<void> {
    if (this.#connection !== undefined) throw new DispatcherError('invalid_state', 'the RabbitMQ layout is already started');
    for (const c of clients) {
      // A client RabbitMQ cannot name (one made before its id was checked) keeps its inbox in the store; it
      // does not keep the others from their queues.
      const problem = this.#problem(c);
      if (problem !== null) this.#log.error({ client: c.id }, `this client has no RabbitMQ queues: ${problem}`);
      else this.#clients.set(c.id, { id: c.id, subscription: c.subscription });
    }
    // Not waiting for the first connection inside connect() lets the listeners be attached before any event.
    const connection = await amqp.connect(this.#o.url, {
      recovery: {
        initialDelay: 100,
        maxDelay: 5000,
        maxRetries: Infinity,
        // A wrong URL or password fails start() after a few tries; once connected, it retries forever.
        initialMaxRetries: 3,
        waitForConnect: false,
        setup: (model: ChannelModel) => this.#setup(model),
      },
    });
    this.#connection = connection;
    connection.on('disconnect', (err: Error) => {
      this.#lost(err);
      this.#log.warn({ err: err?.message }, 'RabbitMQ mirror: connection lost; reconnecting');
    });
    connection.on('connect-failed', (err: Error) => {
      this.#lastError = message(err);
      this.#log.warn({ err: message(err) }, 'RabbitMQ mirror: could not connect');
    });
    connection.on('error', (err: Error) => (this.#lastError = message(err)));
    try {
      await connection.waitForConnect();
    } catch (err) {
      this.#connection = undefined;
      await connection.close().catch(() => {});
      throw new DispatcherError('network_error', `the RabbitMQ mirror could not connect to ${redact(this.#o.url)}: ${message(err)}`, { cause: err });
    }
    this.#log.info({ clients: clients.length, publishExchange: this.#publishExchange, broadcastExchange: this.#broadcastExchange }, 'RabbitMQ mirror: laid out');
  }

  async clientSaved(client: LayoutClient, previous?: LayoutClient): Promise<void> {
    const problem = this.#problem(client);
    if (problem !== null) throw new DispatcherError('bad_request', problem);
    if (previous !== undefined && previous.id !== client.id) throw new DispatcherError('bad_request', `a client's id cannot change (${previous.id} → ${client.id})`);
    await this.#exclusive(async () => {
      const old = previous?.subscription ?? null;
      if (old !== null && old !== client.subscription) {
        const stale = this.#stale.get(client.id) ?? new Set<string>();
        stale.add(old);
        this.#stale.set(client.id, stale);
      }
      this.#clients.set(client.id, { id: client.id, subscription: client.subscription });
      // Disconnected: remembered, applied by the reconnect's setup.
      if (this.#connected) await this.#applyClient(client.id);
    });
  }

  async clientDeleted(id: string): Promise<void> {
    await this.#exclusive(async () => {
      this.#clients.delete(id);
      this.#doomed.add(id);
      if (this.#connected) await this.#applyClient(id);
    });
  }

  async mirror(m: MirroredMessage): Promise<void> {
    const channel = this.#publishChannel;
    if (!this.#connected || channel === undefined) throw notConnected();
    const key = m.topic ?? '';
    if (Buffer.byteLength(key) > MAX_NAME_BYTES) throw new DispatcherError('bad_request', `topic "${key.slice(0, 40)}…" is longer than ${MAX_NAME_BYTES} bytes, the most an AMQP routing key holds`);
    if (m.body.trim() === '') throw new DispatcherError('internal', `message ${m.id} has an empty body; JSON text was expected`, { retryable: false });
    // The body is JSON text already: embedded as is, not parsed and encoded again.
    const item = `{"id":${JSON.stringify(m.id)},"topic":${JSON.stringify(m.topic)},"body":${m.body},"sender":${JSON.stringify(m.sender)},"time":${JSON.stringify(m.time)}}`;
    const timestamp = Date.parse(m.time);
    await new Promise<void>((resolve, reject) => {
      const confirmed = (err: unknown) => {
        if (err === null || err === undefined) resolve();
        else reject(new DispatcherError('network_error', `RabbitMQ did not confirm message ${m.id}: ${message(err)}`, { retryable: true, cause: err }));
      };
      try {
        channel.publish(
          m.topic === null ? this.#broadcastExchange : this.#publishExchange,
          key,
          Buffer.from(item),
          {
            persistent: true,
            contentType: 'application/json',
            messageId: m.id,
            appId: 'dispatcher',
            ...(Number.isFinite(timestamp) ? { timestamp: Math.floor(timestamp / 1000) } : {}),
            headers: { sender: m.sender, ...(m.topic === null ? {} : { topic: m.topic }) },
          },
          confirmed,
        );
      } catch (err) {
        // The channel closed between the check and the publish.
        reject(notConnected(err));
      }
    });
  }

  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    for (const t of this.#timers) {
      clearTimeout(t.timer);
      t.wake();
    }
    this.#timers.clear();
    const consumers = [...this.#consumers.values()];
    await Promise.allSettled(consumers.map((c) => this.#stopConsumer(c)));
    await this.#connection?.close().catch(() => {});
    this.#lost(undefined);
  }

  health(): { connected: boolean; error?: string } {
    return this.#lastError === undefined ? { connected: this.#connected } : { connected: this.#connected, error: this.#lastError };
  }

  #problem(client: LayoutClient): string | null {
    const id = clientIdProblem(client.id);
    if (id !== null) return id;
    if (client.subscription !== null && (typeof client.subscription !== 'string' || Buffer.byteLength(client.subscription) > MAX_NAME_BYTES)) {
      return `client ${client.id}: the subscription must be a string of at most ${MAX_NAME_BYTES} bytes (an AMQP binding key), or null`;
    }
    return null;
  }

  #exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#serial.then(work, work);
    this.#serial = run.catch(() => {});
    return run;
  }

  #lost(err: Error | undefined): void {
    this.#connected = false;
    if (err !== undefined) this.#lastError = message(err);
    this.#model = undefined;
    this.#consumeChannel = undefined;
    this.#publishChannel = undefined;
    this.#topologyChannel = undefined;
    // Their channel is gone with the connection: what they held unacknowledged is redelivered.
    for (const c of this.#consumers.values()) c.stopped = true;
    this.#consumers.clear();
  }

  /** Run after each (re)connect, before amqplib calls the connection connected: declares everything. */
  #setup(model: ChannelModel): Promise<void> {
    return this.#exclusive(async () => {
      this.#lost(undefined);
      this.#model = model;
      const consume = await model.createChannel();
      const publish = await model.createConfirmChannel();
      // A refusal on these channels closes them and every consumer on them: start again from a new
      // connection (amqplib's recovery, with its backoff), which declares everything again.
      for (const channel of [consume, publish]) {
        channel.on('error', (err: Error) => {
          this.#lastError = message(err);
          this.#log.warn({ err: message(err) }, 'RabbitMQ mirror: channel closed by the broker; reconnecting');
          if (this.#model === model && !this.#closing) model.close().catch(() => {});
        });
      }
      this.#consumeChannel = consume;
      this.#publishChannel = publish;
      let refused: string | undefined;
      await this.#declareExchange(this.#publishExchange, 'topic');
      await this.#declareExchange(this.#broadcastExchange, 'fanout');
      for (const id of new Set([...this.#doomed, ...this.#clients.keys()])) {
        try {
          await this.#applyClient(id);
        } catch (err) {
          // One client's queues refused (permissions, a queue of that name owned by another connection…):
          // the others are laid out; the error shows in health. Anything else fails the setup, to retry.
          if (!isRefusal(err)) throw err;
          refused = `client ${id}: ${message(err)}`;
          this.#log.error({ client: id, err: message(err) }, 'RabbitMQ mirror: could not lay out a client');
        }
      }
      this.#connected = true;
      this.#lastError = refused;
    });
  }

  async #topology(): Promise<Channel> {
    if (this.#topologyChannel !== undefined) return this.#topologyChannel;
    const model = this.#model;
    if (model === undefined) throw notConnected();
    const channel = await model.createChannel();
    // A refusal rejects the call that caused it; the channel is then closed and made again on next use.
    channel.on('error', (err: Error) => this.#log.debug({ err: message(err) }, 'RabbitMQ mirror: declaration refused'));
    channel.on('close', () => {
      if (this.#topologyChannel === channel) this.#topologyChannel = undefined;
    });
    this.#topologyChannel = channel;
    return channel;
  }

  async #declareExchange(name: string, type: 'topic' | 'fanout'): Promise<void> {
    try {
      await (await this.#topology()).assertExchange(name, type, { durable: true });
    } catch (err) {
      if (replyCode(err) !== 406) throw err;
      await (await this.#topology()).checkExchange(name);
      this.#log.warn({ exchange: name, type, err: message(err) }, 'RabbitMQ mirror: the exchange exists with other properties; used as it is');
    }
  }

  async #declareQueue(name: string): Promise<void> {
    try {
      await (await this.#topology()).assertQueue(name, { durable: true });
    } catch (err) {
      if (replyCode(err) !== 406) throw err;
      // Declared before (by the original system, or by hand) as not durable or with arguments.
      await (await this.#topology()).checkQueue(name);
      this.#log.warn({ queue: name, err: message(err) }, 'RabbitMQ mirror: the queue exists with other properties; used as it is');
    }
  }

  /** Brings one client's queues, bindings and consumers to what `#clients`, `#stale` and `#doomed` say. */
  async #applyClient(id: string): Promise<void> {
    const q = queueNames(id);
    if (this.#doomed.has(id)) {
      // Consumers first: a message in hand is finished and acknowledged before its queue goes.
      await Promise.allSettled([q.outbox, q.broadcast].map((name) => this.#consumers.get(name)).filter((c) => c !== undefined).map((c) => this.#stopConsumer(c)));
      for (const name of [q.inbox, q.outbox, q.broadcast]) await (await this.#topology()).deleteQueue(name);
      this.#doomed.delete(id);
      this.#stale.delete(id);
    }
    const client = this.#clients.get(id);
    if (client === undefined) return;
    for (const name of [q.inbox, q.outbox, q.broadcast]) await this.#declareQueue(name);
    const t = await this.#topology();
    for (const key of this.#stale.get(id) ?? []) {
      if (key !== client.subscription) await t.unbindQueue(q.inbox, this.#publishExchange, key);
    }
    this.#stale.delete(id);
    if (client.subscription !== null) await t.bindQueue(q.inbox, this.#publishExchange, client.subscription);
    await t.bindQueue(q.inbox, this.#broadcastExchange, '');
    await this.#consume(id, q.outbox, 'outbox');
    await this.#consume(id, q.broadcast, 'broadcast');
  }

  async #consume(clientId: string, queue: string, kind: Kind): Promise<void> {
    const channel = this.#consumeChannel;
    if (channel === undefined) throw notConnected();
    const existing = this.#consumers.get(queue);
    if (existing !== undefined && !existing.stopped && existing.channel === channel) return;
    const c: Consumer = { clientId, queue, kind, channel, tag: undefined, waiting: [], busy: false, stopped: false, idle: Promise.resolve() };
    this.#consumers.set(queue, c);
    // Per consumer (RabbitMQ's meaning without `global`): set before each consume, it applies to that one.
    await channel.prefetch(this.#prefetch);
    const { consumerTag } = await channel.consume(queue, (m) => {
      if (m === null) {
        // The broker canceled the consumer: the queue was deleted from outside. Declared again if the
        // client still exists, after a pause (not in a tight loop against whoever deletes it).
        c.stopped = true;
        if (this.#consumers.get(queue) === c) this.#consumers.delete(queue);
        this.#log.warn({ queue }, 'RabbitMQ mirror: consumer canceled by the broker (queue deleted?)');
        void this.#sleep(this.#retryDelayMs).then(() => {
          if (this.#closing || !this.#clients.has(clientId)) return;
          this.#exclusive(async () => {
            if (this.#connected && this.#clients.has(clientId)) await this.#applyClient(clientId);
          }).catch((err) => this.#log.error({ client: clientId, err: message(err) }, 'RabbitMQ mirror: could not lay out a client again'));
        });
        return;
      }
      c.waiting.push(m);
      if (!c.busy) c.idle = this.#pump(c);
    });
    c.tag = consumerTag;
  }

  /** Stops taking new messages from this queue; resolves once the one in hand is done. */
  async #stopConsumer(c: Consumer): Promise<void> {
    c.stopped = true;
    if (this.#consumers.get(c.queue) === c) this.#consumers.delete(c.queue);
    if (c.tag !== undefined) await c.channel.cancel(c.tag).catch(() => {});
    await c.idle;
    this.#settle(() => {
      for (const m of c.waiting.splice(0)) c.channel.nack(m, false, true);
    });
  }

  async #pump(c: Consumer): Promise<void> {
    c.busy = true;
    try {
      while (c.waiting.length > 0 && !c.stopped) {
        const m = c.waiting[0]!;
        if (await this.#take(c, m)) {
          c.waiting.shift();
          this.#settle(() => c.channel.ack(m));
          continue;
        }
        // Hold the queue, then give back this message and every one behind it, in order: the broker puts
        // them back where they were, so the next delivery starts again from this one.
        await this.#sleep(this.#retryDelayMs);
        const back = c.waiting.splice(0);
        this.#settle(() => {
          for (const b of back) c.channel.nack(b, false, true);
        });
      }
    } finally {
      c.busy = false;
    }
  }

  /** True when the message is done with (taken, or kept as invalid); false to have it redelivered. */
  async #take(c: Consumer, m: ConsumeMessage): Promise<boolean> {
    try {
      if (c.kind === 'outbox') {
        const { topic, body } = readOutboxMessage(m.content, m.properties.headers, m.fields.routingKey, c.queue);
        await this.#o.onSend(c.clientId, topic, body);
      } else {
        await this.#o.onNotify(c.clientId, parseJsonBytes(m.content));
      }
      return true;
    } catch (err) {
      const final = err instanceof DispatcherError && !err.retryable && err.deadLetterLost !== true;
      if (!final) {
        this.#log.warn({ queue: c.queue, err: message(err) }, 'RabbitMQ mirror: could not take a message; it will be redelivered');
        return false;
      }
      try {
        await this.#o.onInvalid(c.clientId, c.queue, m.content, err);
        this.#log.warn({ queue: c.queue, code: err.code, err: err.message }, 'RabbitMQ mirror: message refused and kept as a dead letter');
        return true;
      } catch (keepErr) {
        this.#log.error({ queue: c.queue, err: message(keepErr) }, 'RabbitMQ mirror: could not keep a refused message; it will be redelivered');
        return false;
      }
    }
  }

  /** An ack or nack: on a channel that closed meanwhile it cannot be sent, and the broker redelivers. */
  #settle(send: () => void): void {
    try {
      send();
    } catch (err) {
      this.#log.debug({ err: message(err) }, 'RabbitMQ mirror: acknowledgement not sent (channel closed)');
    }
  }

  /** A pause that `close()` cuts short. */
  #sleep(ms: number): Promise<void> {
    if (this.#closing) return Promise.resolve();
    return new Promise((resolve) => {
      const entry = {
        timer: setTimeout(() => {
          this.#timers.delete(entry);
          resolve();
        }, ms),
        wake: resolve,
      };
      this.#timers.add(entry);
    });
  }
}

/** The URL without its password, for messages. */
function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return '(an invalid URL)';
  }
}
