/**
 * Inboxes: where the `deliver` action puts messages for clients, and where clients receive them
 * (../../shared/DESIGN.md: a client is "a registered pub/sub participant: id, name, subscription patterns,
 * a hashed secret, an inbox"). The store keeps them (store/inboxes.ts); this part knows who gets what.
 *
 * - **Who.** A topic reaches every client of the tenant whose subscription (an AMQP topic pattern: `*` one
 *   word, `#` zero or more) matches it; a broadcast reaches every client of the tenant. The tenant's clients
 *   are read once into a topic trie (core/topic.ts) and read again when one changes in this process, or
 *   after `CLIENTS_FRESH_MS` (a change made by another process sharing the store).
 * - **Bounded.** `inboxes.maxMessages` per client and `inboxes.maxAge`. A full inbox either refuses the new
 *   message (`whenFull: refuse`, the default: the delivery fails for that client, is retried with the run,
 *   and ends as a dead letter when it never fits) or drops its oldest (`drop-oldest`). Every message
 *   refused, dropped or expired is counted (`dispatcher_inbox_messages_total{outcome}`) and logged with its
 *   client: nothing leaves an inbox unseen.
 * - **Receiving** pops by default (what the original did). With a lease (`inboxes.lease`), what is received
 *   is hidden for that long and removed only when acknowledged: at-least-once.
 * - **Push.** `listen(clientId, fn)` calls `fn` when messages were stored for the client by this process,
 *   so that a socket can take them at once; listeners also poll (another process may have delivered).
 */

import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { v7 as uuidv7 } from 'uuid';
import { DispatcherError } from './errors.js';
import { duration, oneOf, section, Type, type Options } from './options.js';
import { parseTopicPattern, TopicTrie } from './topic.js';
import type { AccessStore, ClientRecord } from '../store/access.js';
import type { InboxMessage, InboxStore, PutResult } from '../store/inboxes.js';

export const INBOXES_SECTION = section(
  {
    maxMessages: Type.Integer({ minimum: 1, description: 'Most messages one client’s inbox holds.', default: 10_000 }),
    maxAge: duration('How long a message waits in an inbox before it expires (counted and logged as `expired`).', '7d'),
    whenFull: oneOf(['refuse', 'drop-oldest'] as const, {
      description:
        'What a delivery to a full inbox does: `refuse` leaves the message out (the run fails for that client, is retried, and ends as a dead letter ' +
        'if it never fits); `drop-oldest` removes the inbox’s oldest messages to make room. Either is counted and logged.',
      default: 'refuse',
    }),
    lease: duration('How long a message received with acknowledgement stays hidden before it is received again.', '30s'),
    maxReceive: Type.Integer({ minimum: 1, maximum: 10_000, description: 'Most messages one receive returns.', default: 1000 }),
  },
  { description: 'Client inboxes: what the `deliver` action fills and clients receive.' },
);
export type InboxesConfig = Options<typeof INBOXES_SECTION>;

/** How long a tenant's clients are trusted from memory when no change was seen in this process. */
const CLIENTS_FRESH_MS = 2_000;
/** How often listeners look for messages another process delivered. */
const LISTEN_POLL_MS = 1_000;
/** Expired messages removed per store call. */
const EXPIRE_BATCH = 5_000;

/** What `deliver` asks for. */
export interface Delivery {
  /** The run that delivers (a message is stored once per run and client). */
  runId: string | null;
  orgId: string;
  /** The message's topic; null for a broadcast. */
  topic: string | null;
  /** The body as JSON text. */
  body: string;
  sender: string;
  /** `subscribers` of the topic (the default), `all` clients of the tenant, or these client ids. */
  to: 'subscribers' | 'all' | readonly string[];
  /** Only the clients of this service (a profile's own); absent: every client of the tenant. */
  service?: string;
}

export interface Delivered {
  /** The clients whose inbox has the message now (stored now or already). */
  delivered: string[];
  /** How many of them got it now: 0 when every one had it already (the same run delivering again). */
  storedNow: number;
  /** Already there from an earlier attempt of the same run: not stored again. */
  alreadyThere: number;
  /** When the message was stored (its `time` in the inboxes). */
  at: number;
  /** Clients whose inbox was full (`refuse`). */
  refused: string[];
  /** Messages dropped to make room (`drop-oldest`), per client. */
  dropped: Record<string, number>;
  /** Client ids asked for by name that do not exist in the tenant. */
  unknown: string[];
}

/** A message as a client receives it. */
export interface ReceivedMessage {
  id: string;
  topic: string | null;
  body: unknown;
  sender: string;
  time: string;
  /** Under a lease: how often it was handed out (1 the first time). */
  deliveries?: number;
}

interface Tenant {
  clients: ClientRecord[];
  trie: TopicTrie;
  readAt: number;
}

export interface InboxesDeps {
  store: { inboxes: InboxStore; access: Pick<AccessStore, 'listClients' | 'getClient'> };
  settings: InboxesConfig;
  log: Logger;
  registry?: Registry;
}

export class Inboxes {
  readonly settings: InboxesConfig;
  readonly #store: InboxesDeps['store'];
  readonly #log: Logger;
  readonly #tenants = new Map<string, Promise<Tenant>>();
  readonly #listeners = new Map<string, Set<() => void>>();
  readonly #delivered = new Set<(delivery: Delivery, result: Delivered) => void>();
  readonly #counted: Counter<'outcome'> | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(deps: InboxesDeps) {
    this.settings = deps.settings;
    this.#store = deps.store;
    this.#log = deps.log;
    if (deps.registry !== undefined) {
      this.#counted = new Counter({
        name: 'dispatcher_inbox_messages_total',
        help: 'Inbox messages by what happened to them: delivered, received, acknowledged, refused (inbox full), dropped (oldest, inbox full), expired',
        labelNames: ['outcome'],
        registers: [deps.registry],
      });
      const store = deps.store;
      new Gauge({
        name: 'dispatcher_inbox_messages',
        help: 'Messages waiting in client inboxes (all clients)',
        registers: [deps.registry],
        async collect() {
          const counts = await store.inboxes.counts().catch(() => []);
          this.set(counts.reduce((sum, c) => sum + c.messages, 0));
        },
      });
    }
  }

  /** Expire old messages every so often (the dispatcher calls it once it starts). */
  start(interval = 10_000): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => void this.expire(Date.now()).catch((err: unknown) => this.#log.warn({ err }, 'could not expire inbox messages')), interval);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    for (const set of this.#listeners.values()) set.clear();
    this.#listeners.clear();
  }

  /** A client of the tenant was made, changed or deleted in this process: read its clients again. */
  clientsChanged(orgId?: string): void {
    if (orgId === undefined) this.#tenants.clear();
    else this.#tenants.delete(orgId);
  }

  async #tenant(orgId: string, now = Date.now()): Promise<Tenant> {
    const cached = this.#tenants.get(orgId);
    if (cached !== undefined) {
      const tenant = await cached.catch(() => undefined);
      if (tenant !== undefined && now - tenant.readAt < CLIENTS_FRESH_MS) return tenant;
      if (this.#tenants.get(orgId) !== cached) return this.#tenant(orgId, now);
    }
    const reading = this.#store.access.listClients(orgId).then((clients) => {
      const trie = new TopicTrie();
      clients.forEach((c, i) => {
        if (c.subscription === null) return;
        try {
          trie.add(parseTopicPattern(c.subscription, `clients.${c.id}.subscription`), i);
        } catch (err) {
          // Subscriptions are checked when they are set; one that is not valid any more reaches nothing.
          this.#log.warn({ client: c.id, subscription: c.subscription, err }, 'a client subscription is not a valid topic pattern: it receives no topic message');
        }
      });
      return { clients, trie, readAt: Date.now() };
    });
    this.#tenants.set(orgId, reading);
    reading.catch(() => this.#tenants.delete(orgId));
    return reading;
  }

  /** The clients of the tenant a topic reaches (its subscribers), or all of them for a broadcast (null). */
  async recipients(orgId: string, topic: string | null): Promise<ClientRecord[]> {
    const tenant = await this.#tenant(orgId);
    if (topic === null) return tenant.clients;
    return tenant.trie.match(topic).map((i) => tenant.clients[i]!);
  }

  /** Put a message in the inboxes it reaches, in one transaction. */
  async deliver(d: Delivery, now = Date.now()): Promise<Delivered> {
    let ids: string[];
    const unknown: string[] = [];
    const served = (c: ClientRecord) => d.service === undefined || c.service === d.service;
    if (d.to === 'subscribers' || d.to === 'all') {
      const clients = await this.recipients(d.orgId, d.to === 'all' ? null : d.topic);
      ids = clients.filter(served).map((c) => c.id);
    } else {
      const tenant = await this.#tenant(d.orgId);
      const known = new Set(tenant.clients.filter(served).map((c) => c.id));
      ids = [];
      for (const id of new Set(d.to)) (known.has(id) ? ids : unknown).push(id);
    }
    const result: PutResult =
      ids.length === 0
        ? { stored: [], duplicates: [], refused: [], dropped: [] }
        : await this.#store.inboxes.put(
            ids.map((clientId) => ({ id: uuidv7({ msecs: now }), clientId, orgId: d.orgId, topic: d.topic, body: d.body, sender: d.sender, createdAt: now, runId: d.runId })),
            { maxMessages: this.settings.maxMessages, whenFull: this.settings.whenFull },
          );
    const refused = new Set(result.refused.map((r) => r.clientId));
    const dropped: Record<string, number> = {};
    for (const m of result.dropped) dropped[m.clientId] = (dropped[m.clientId] ?? 0) + 1;
    this.#counted?.inc({ outcome: 'delivered' }, result.stored.length);
    if (result.refused.length > 0) {
      this.#counted?.inc({ outcome: 'refused' }, result.refused.length);
      this.#log.warn({ run: d.runId, clients: [...refused], maxMessages: this.settings.maxMessages }, 'inboxes full: the message was refused for these clients (inboxes.whenFull: refuse)');
    }
    if (result.dropped.length > 0) {
      this.#counted?.inc({ outcome: 'dropped' }, result.dropped.length);
      this.#log.warn({ run: d.runId, dropped, messages: result.dropped.map((m) => m.id) }, 'inboxes full: their oldest messages were dropped (inboxes.whenFull: drop-oldest)');
    }
    const delivered = ids.filter((id) => !refused.has(id));
    for (const id of delivered) this.#wake(id);
    const out: Delivered = { delivered, storedNow: result.stored.length, alreadyThere: result.duplicates.length, at: now, refused: [...refused], dropped, unknown };
    for (const fn of this.#delivered) {
      try {
        fn(d, out);
      } catch (err) {
        this.#log.warn({ err, run: d.runId }, 'a delivery listener failed');
      }
    }
    return out;
  }

  /** The oldest messages of a client's inbox: removed (pop), or leased until acknowledged (`lease`). */
  async receive(clientId: string, options: { max: number; lease?: boolean }, now = Date.now()): Promise<ReceivedMessage[]> {
    const max = Math.min(options.max, this.settings.maxReceive);
    const taken = await this.#store.inboxes.take({ clientId, max, now, ...(options.lease === true ? { leaseUntil: now + this.settings.lease } : {}) });
    if (taken.length > 0) this.#counted?.inc({ outcome: 'received' }, taken.length);
    return taken.map((m) => received(m, options.lease === true));
  }

  /** Remove leased messages the client has handled; how many were there. */
  async ack(clientId: string, ids: readonly string[]): Promise<number> {
    if (ids.length === 0) return 0;
    const n = await this.#store.inboxes.ack(clientId, [...new Set(ids)]);
    this.#counted?.inc({ outcome: 'acknowledged' }, n);
    return n;
  }

  /** A deleted client's inbox, emptied. */
  async clear(clientId: string): Promise<number> {
    const n = await this.#store.inboxes.clear(clientId);
    if (n > 0) this.#log.info({ client: clientId, messages: n }, 'the inbox of a deleted client was emptied');
    return n;
  }

  /** Remove messages older than `inboxes.maxAge`; counted and logged per client. */
  async expire(now: number): Promise<number> {
    let total = 0;
    for (;;) {
      const removed = await this.#store.inboxes.expire(now - this.settings.maxAge, EXPIRE_BATCH);
      const n = removed.reduce((sum, r) => sum + r.messages, 0);
      if (n === 0) break;
      total += n;
      this.#counted?.inc({ outcome: 'expired' }, n);
      this.#log.warn({ clients: Object.fromEntries(removed.map((r) => [r.clientId, r.messages])), maxAge: this.settings.maxAge }, 'inbox messages expired unread (inboxes.maxAge)');
      if (n < EXPIRE_BATCH) break;
    }
    return total;
  }

  /** Hear of every delivery this process makes (after it is stored): a mirror of the inboxes elsewhere. */
  onDelivered(fn: (delivery: Delivery, result: Delivered) => void): () => void {
    this.#delivered.add(fn);
    return () => this.#delivered.delete(fn);
  }

  /**
   * Call `fn` whenever messages may be waiting for the client: at once, when this process stores some, and
   * every second (another process may have). Returns the function that stops it.
   */
  listen(clientId: string, fn: () => void): () => void {
    let set = this.#listeners.get(clientId);
    if (set === undefined) this.#listeners.set(clientId, (set = new Set()));
    set.add(fn);
    const timer = setInterval(fn, LISTEN_POLL_MS);
    timer.unref();
    queueMicrotask(fn);
    return () => {
      clearInterval(timer);
      set.delete(fn);
      if (set.size === 0 && this.#listeners.get(clientId) === set) this.#listeners.delete(clientId);
    };
  }

  #wake(clientId: string): void {
    const set = this.#listeners.get(clientId);
    if (set === undefined) return;
    for (const fn of set) {
      try {
        fn();
      } catch (err) {
        this.#log.warn({ err, client: clientId }, 'an inbox listener failed');
      }
    }
  }
}

function received(m: InboxMessage, leased: boolean): ReceivedMessage {
  let body: unknown;
  try {
    body = JSON.parse(m.body);
  } catch {
    // Bodies are stored as JSON text; one that is not (written by hand) is given as the text.
    body = m.body;
  }
  const out: ReceivedMessage = { id: m.id, topic: m.topic, body, sender: m.sender, time: new Date(m.createdAt).toISOString() };
  if (leased) out.deliveries = m.deliveries;
  return out;
}

/** Checks a topic a message is sent with: dotted words, no wildcards. */
export function checkTopic(topic: unknown): string {
  // Bytes, not characters: a topic is an AMQP routing key where a broker carries it (at most 255 bytes).
  if (typeof topic !== 'string' || topic === '' || Buffer.byteLength(topic) > 255) {
    throw new DispatcherError('bad_request', 'topic: a dotted topic of 1 to 255 bytes (UTF-8), e.g. soar.noc.slocum.status');
  }
  const words = topic.split('.');
  for (const [i, word] of words.entries()) {
    if (word === '') throw new DispatcherError('bad_request', `topic "${topic}" has an empty word (word ${i + 1}): words are separated by single dots`);
    if (/[*#]/.test(word)) throw new DispatcherError('bad_request', `topic "${topic}": "*" and "#" belong in subscriptions, not in the topic a message is sent with`);
  }
  return topic;
}

/** Checks a subscription (a topic pattern) as a client gives it: a `bad_request` naming what is wrong. */
export function checkSubscription(pattern: unknown, name = 'subscription'): string {
  if (typeof pattern !== 'string' || Buffer.byteLength(pattern) > 255) throw new DispatcherError('bad_request', `${name}: a topic pattern of 1 to 255 bytes (UTF-8), e.g. soar.*.noc.#`);
  try {
    parseTopicPattern(pattern, name);
  } catch (err) {
    throw new DispatcherError('bad_request', (err as Error).message);
  }
  return pattern;
}
