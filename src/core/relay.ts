/**
 * The relay: publishes what the store keeps in `seq` order (run events from the outbox, dead letters) to
 * an output, at least once, in order.
 *
 * - **Durable cursor.** Each (output, stream) has a cursor in the store. The relay reads a batch after it,
 *   publishes the batch, and moves the cursor only once the output confirmed every message. A crash between
 *   the two publishes that batch again after the restart: duplicates are possible, loss is not.
 * - **One relay at a time.** The cursor row carries a lease: one process holds it, renews it with every move
 *   of the cursor (and while it waits), and lets it go when it stops; when its holder dies another process
 *   takes over once the lease expired. A holder that finds its lease lost stops publishing.
 * - **In order.** Batches are published one after another, each in `seq` order, so the run events of a run
 *   reach the output in the order they were written.
 * - **Gaps.** A seq is taken when a row is inserted, not when its transaction commits: with PostgreSQL,
 *   seq 11 can become visible before seq 10. The relay publishes only the gap-free prefix of what it reads.
 *   A gap that stays is a rolled-back insert, or an insert whose transaction is still under way: the relay
 *   notes the store's visibility mark when it first sees the gap, and passes over the missing seqs (up to
 *   the highest seq it had seen then) only once every transaction under way at the mark has ended, and at
 *   least `gapWaitMs` later.
 * - **Broker down.** A publish that fails is tried again with exponential backoff (full jitter); the cursor
 *   waits, nothing is skipped.
 */

import type { Logger } from 'pino';
import type { OutboundMessage, OutputDriver, Presented } from './outbox.js';
import type { DeadLetter, HostEvent, OutboxEvent, RunEvent } from './types.js';
import type { RelayStream, Store } from '../store/types.js';

export interface RelaySource {
  /** The stream's name: its cursor's key. */
  readonly stream: RelayStream;
  /** What `dispatcher_output_published_total` calls these messages. */
  readonly what: string;
  /**
   * Items after `afterSeq`, in seq order, each made into the message to publish, or null for an item the
   * stream leaves out (another kind, or not passing its filter): its seq still counts, for the gaps and
   * the cursor.
   */
  read(afterSeq: number, limit: number): Promise<Array<{ seq: number; message: OutboundMessage | null }>>;
  lastSeq(): Promise<number>;
}

export interface RelaySettings {
  /** Most items read and published at once. */
  batchSize: number;
  leaseMs: number;
  /** How often the holder looks for items written by other processes. */
  pollMs: number;
  /** How often a process that does not hold the lease tries for it. */
  standbyMs: number;
  gapWaitMs: number;
  retryMinMs: number;
  retryMaxMs: number;
}

export const DEFAULT_RELAY_SETTINGS: RelaySettings = {
  batchSize: 1000,
  leaseMs: 30_000,
  pollMs: 250,
  standbyMs: 1000,
  gapWaitMs: 250,
  retryMinMs: 200,
  retryMaxMs: 10_000,
};

export interface RelayOptions {
  store: Store;
  output: string;
  driver: OutputDriver;
  source: RelaySource;
  /** This process: the lease owner. */
  owner: string;
  log: Logger;
  /** Called with how many messages the output confirmed. */
  onPublished?: (count: number) => void;
  settings?: Partial<RelaySettings>;
}

export interface RelayState {
  output: string;
  stream: RelayStream;
  /** Whether this process holds the lease (relays this stream now). */
  holder: boolean;
  /** The cursor as this process last knew it (null when it never held the lease). */
  cursor: number | null;
  /** Items after the cursor (null when this process does not hold the lease). */
  lag: number | null;
  lastError: string | null;
  lastErrorAt: number | null;
}

interface Gap {
  at: number;
  mark: number;
  /** The highest seq read when the gap was seen: missing seqs up to it may be passed over once settled. */
  through: number;
}

export class Relay {
  readonly #o: RelayOptions;
  readonly #s: RelaySettings;
  #cursor: number | null = null;
  #holder = false;
  #leaseRenewedAt = 0;
  #stopped = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #poked = false;
  #gap: Gap | undefined;
  /** Missing seqs at or below this were passed over (settled gaps). */
  #settledThrough = 0;
  #failures = 0;
  #lastError: string | null = null;
  #lastErrorAt: number | null = null;

  constructor(options: RelayOptions) {
    this.#o = options;
    this.#s = { ...DEFAULT_RELAY_SETTINGS, ...options.settings };
  }

  get output(): string {
    return this.#o.output;
  }

  get stream(): RelayStream {
    return this.#o.source.stream;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** Items may have been written. */
  poke(): void {
    this.#poked = true;
    this.#wake?.();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
    if (this.#holder) {
      this.#holder = false;
      await this.#o.store.releaseRelay(this.#o.output, this.stream, this.#o.owner).catch(() => {});
    }
  }

  async state(): Promise<RelayState> {
    let lag: number | null = null;
    if (this.#holder && this.#cursor !== null) {
      try {
        lag = Math.max(0, (await this.#o.source.lastSeq()) - this.#cursor);
      } catch {
        lag = null;
      }
    }
    return {
      output: this.#o.output,
      stream: this.stream,
      holder: this.#holder,
      cursor: this.#cursor,
      lag,
      lastError: this.#lastError,
      lastErrorAt: this.#lastErrorAt,
    };
  }

  async #run(): Promise<void> {
    const { store, output, owner, log } = this.#o;
    const { leaseMs, pollMs } = this.#s;
    while (!this.#stopped) {
      try {
        if (!this.#holder) {
          const cursor = await store.acquireRelay(output, this.stream, owner, Date.now(), leaseMs);
          if (cursor === null) {
            await this.#sleep(this.#s.standbyMs, false);
            continue;
          }
          if (this.#cursor !== cursor) this.#gap = undefined;
          this.#cursor = cursor;
          this.#holder = true;
          this.#leaseRenewedAt = Date.now();
          log.info({ stream: this.stream, cursor }, 'relaying from the cursor');
        }
        const published = await this.#step();
        this.#failures = 0;
        if (published || !this.#holder) continue;
        if (Date.now() - this.#leaseRenewedAt > leaseMs / 3) await this.#advance(this.#cursor!);
        if (this.#holder) await this.#sleep(this.#gap === undefined ? pollMs : Math.min(pollMs, 50), true);
      } catch (err) {
        if (this.#stopped) break;
        this.#failures += 1;
        this.#lastError = err instanceof Error ? err.message : String(err);
        this.#lastErrorAt = Date.now();
        if (this.#failures === 1 || this.#failures % 10 === 0) log.warn({ err: this.#lastError, stream: this.stream, failures: this.#failures }, 'relay failed; trying again');
        const ceiling = Math.min(this.#s.retryMaxMs, this.#s.retryMinMs * 2 ** Math.min(this.#failures - 1, 20));
        await this.#sleep(this.#s.retryMinMs / 2 + Math.random() * ceiling, false);
        // Still ours while we wait for the broker: renew the lease, or learn that it was lost.
        if (this.#holder && !this.#stopped) await this.#advance(this.#cursor!).catch(() => {});
      }
    }
  }

  /** Reads, publishes and moves the cursor once; false when there was nothing to publish. */
  async #step(): Promise<boolean> {
    const cursor = this.#cursor!;
    const read = await this.#o.source.read(cursor, this.#s.batchSize);
    if (read.length === 0) {
      this.#gap = undefined;
      return false;
    }
    let take = 0;
    let expected = cursor + 1;
    while (take < read.length && (read[take]!.seq === expected || read[take]!.seq <= this.#settledThrough)) {
      expected = read[take]!.seq + 1;
      take += 1;
    }
    if (take === read.length) this.#gap = undefined;
    else if (await this.#gapSettled(read[read.length - 1]!.seq)) return true;
    if (take === 0) return false;
    const batch = take === read.length ? read : read.slice(0, take);
    const messages: OutboundMessage[] = [];
    for (const r of batch) if (r.message !== null) messages.push(r.message);
    if (messages.length > 0) {
      await this.#o.driver.publish(messages);
      this.#o.onPublished?.(messages.length);
    }
    this.#lastError = null;
    const to = batch[batch.length - 1]!.seq;
    await this.#advance(to);
    return this.#holder;
  }

  /** Whether the gap just seen may be passed over now (then the caller reads again). */
  async #gapSettled(highest: number): Promise<boolean> {
    const store = this.#o.store;
    const now = Date.now();
    if (this.#gap === undefined) {
      this.#gap = { at: now, mark: await store.visibilityMark(), through: highest };
      return false;
    }
    if (now - this.#gap.at < this.#s.gapWaitMs || !(await store.visibilitySettled(this.#gap.mark))) return false;
    this.#o.log.warn({ stream: this.stream, after: this.#cursor, through: this.#gap.through }, 'passing over seqs that were never committed');
    this.#settledThrough = this.#gap.through;
    this.#gap = undefined;
    return true;
  }

  async #advance(to: number): Promise<void> {
    const { store, output, owner, log } = this.#o;
    const now = Date.now();
    if (await store.advanceRelay(output, this.stream, owner, to, now, this.#s.leaseMs)) {
      this.#cursor = to;
      this.#leaseRenewedAt = now;
      return;
    }
    this.#holder = false;
    log.warn({ stream: this.stream }, 'the relay lease was lost to another process');
  }

  /** Waits `ms`, or less when poked (`wakeable`) or stopped. */
  #sleep(ms: number, wakeable: boolean): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    if (wakeable && this.#poked) {
      this.#poked = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = () => {
        if (wakeable || this.#stopped) {
          this.#wake = undefined;
          this.#poked = false;
          done();
        }
      };
    });
  }
}

/** How a stream presents what it relays, where to, and what it leaves out. */
export interface StreamSpec<T> {
  /** Its name: the key of its cursor. */
  readonly name: string;
  readonly topic: string;
  present(item: T): Presented;
  /** What the stream takes (its route, service and profile filters); absent: everything of its kind. */
  readonly accepts?: (item: T) => boolean;
}

function published(presented: Presented, topic: string): OutboundMessage {
  return { ...presented, topic };
}

/**
 * Events of one kind from the outbox (run events, or host events: both are in one `seq` order), each
 * presented as the stream's presenter shows it.
 */
export function outboxSource<K extends OutboxEvent['kind']>(store: Store, kind: K, spec: StreamSpec<Extract<OutboxEvent, { kind: K }>>): RelaySource {
  type E = Extract<OutboxEvent, { kind: K }>;
  return {
    stream: spec.name,
    what: kind === 'run' ? 'run_event' : 'host_event',
    read: async (afterSeq, limit) =>
      (await store.readRunEvents(afterSeq, limit)).map((e) => ({
        seq: e.seq,
        message: e.kind === kind && (spec.accepts === undefined || spec.accepts(e as E)) ? published(spec.present(e as E), spec.topic) : null,
      })),
    lastSeq: () => store.lastRunEventSeq(),
  };
}

/** Run events from the outbox. */
export function runEventSource(store: Store, spec: StreamSpec<RunEvent>): RelaySource {
  return outboxSource(store, 'run', spec);
}

/** Host events from the outbox. */
export function hostEventSource(store: Store, spec: StreamSpec<HostEvent>): RelaySource {
  return outboxSource(store, 'host', spec);
}

/** Dead letters in the order they were made. */
export function deadLetterSource(store: Store, spec: StreamSpec<DeadLetter>): RelaySource {
  return {
    stream: spec.name,
    what: 'dead_letter',
    read: async (afterSeq, limit) =>
      (await store.readDeadLetters(afterSeq, limit)).map((d) => ({
        seq: d.seq,
        message: spec.accepts === undefined || spec.accepts(d.deadLetter) ? published(spec.present(d.deadLetter), spec.topic) : null,
      })),
    lastSeq: () => store.lastDeadLetterSeq(),
  };
}
