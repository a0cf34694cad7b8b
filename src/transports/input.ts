/**
 * One configured bus input: its driver, its decoder, and the rules that make "at least once, never doubled"
 * hold between a broker and intake.
 *
 * - A delivery is handed to intake with the input's decoder and owner. The sink resolves once intake has
 *   committed its events and runs, or kept it as a dead letter; only then does the driver acknowledge.
 * - Deliveries are handed over in one call per turn of the event loop, in arrival order, with up to
 *   `HAND_OVERS_MAX` calls waiting for the store at once, so that the next commit is ready when one ends.
 *   Each message is decoded and checked alone (a bad one is a dead letter alone), and the good ones are
 *   planned, counted and committed together, so a bus that carries one event per message does not pay per
 *   message what a batch pays once. The calls form one chain in the group commit: they are committed in
 *   order, and once one fails, the ones after it fail with it instead of being committed ahead of it.
 * - When the store cannot take it (`store_unavailable`, or a dead letter that could not be kept), the input
 *   pauses: that delivery and every later one wait, in arrival order, while the input pings the store with
 *   backoff; once it answers they are handed to intake again in the same order (one group commit keeps the
 *   order within it), so per-partition order survives an outage. Nothing is acknowledged meanwhile, and a
 *   driver with a bounded window of unacknowledged messages stops consuming.
 * - Stopping rejects what still waits with `shutting_down`: the driver leaves it for redelivery.
 */

import type { Logger } from 'pino';
import { DispatcherError, toDispatcherError } from '../core/errors.js';
import type { Chain } from '../core/batcher.js';
import type { Decoder, InboundMessage, Intake, IntakeAnswer } from '../core/intake.js';
import type { Owner } from '../core/types.js';
import { KEY_HEADER, MESSAGE_ID_HEADER, TOPIC_HEADER } from './decode.js';
import type { InputHealth } from '../core/services.js';
import type { Delivery, DeliveryOutcome, InputDriver, InputSink, TransportHealth } from './types.js';

/** The answer to a delivery the input does not take because it is stopping: the broker delivers it again. */
const leftForRedelivery = (): DispatcherError => new DispatcherError('shutting_down', 'the dispatcher is stopping; the message is left for redelivery');

/** The most deliveries handed to intake in one call (a group commit takes at most about this many events). */
const TICK_MAX = 1000;

/**
 * The most hand-overs waiting for the store at once. With one, the store sat idle between a commit and the
 * next (the next call was planned only after the answer); with four, RabbitMQ and Kafka into PostgreSQL went
 * about 8 % faster (BENCHMARKS.md, 2026-11-24).
 */
const HAND_OVERS_MAX = 4;

export interface InputHostOptions {
  name: string;
  transport: string;
  driver: InputDriver;
  decode: Decoder;
  owner: Owner;
  intake: Intake;
  /** Largest message taken; a bigger one is a dead letter (`payload_too_large`). */
  maxBytes: number;
  /** Checks the store while paused. */
  ping: () => Promise<void>;
  log: Logger;
  /** Longest wait between two pings while paused. */
  maxBackoffMs?: number;
}

interface Held {
  /** Arrival order. */
  seq: number;
  message: InboundMessage;
  resolve: (outcome: DeliveryOutcome) => void;
  reject: (err: Error) => void;
}

export class InputHost implements InputSink {
  readonly name: string;
  readonly transport: string;
  readonly #o: InputHostOptions;
  #held: Held[] = [];
  #seq = 0;
  #paused = false;
  #stopping = false;
  #inFlight = 0;
  /** Called when the last delivery in flight ends (set while a resume waits for that). */
  #idle: (() => void) | undefined;
  /** Deliveries that arrived since the last hand-over to intake, counted in #inFlight. */
  #tick: Held[] = [];
  /** Hand-overs whose deliveries have not all ended. */
  #handOvers = 0;
  /** The chain this input's hand-overs are committed in; a new one once the store is back after a failure. */
  #chain: Chain = {};
  #handScheduled = false;
  #wake: (() => void) | undefined;
  #started = false;

  constructor(options: InputHostOptions) {
    this.#o = options;
    this.name = options.name;
    this.transport = options.transport;
  }

  async start(): Promise<void> {
    this.#started = true;
    await this.#o.driver.start(this);
  }

  /** Stop consuming; what still waits for the store is left unacknowledged, for redelivery. */
  async stop(): Promise<void> {
    this.#stopping = true;
    const held = this.#held;
    this.#held = [];
    for (const h of held) h.reject(leftForRedelivery());
    this.#wake?.();
    this.#idle?.();
    if (this.#started) await this.#o.driver.stop();
  }

  deliver(delivery: Delivery): Promise<DeliveryOutcome> {
    if (this.#stopping) return Promise.reject(new DispatcherError('shutting_down', 'the input is stopping'));
    const message = this.#message(delivery);
    const seq = this.#seq++;
    return new Promise((resolve, reject) => {
      const h: Held = { seq, message, resolve, reject };
      if (this.#paused) {
        this.#held.push(h);
        return;
      }
      this.#inFlight += 1;
      this.#tick.push(h);
      this.#scheduleHand();
    });
  }

  #scheduleHand(): void {
    if (this.#handScheduled) return;
    this.#handScheduled = true;
    setImmediate(this.#handTick);
  }

  /**
   * What arrived since the last hand-over goes to intake in one call (one plan, one group commit entry), while
   * fewer than HAND_OVERS_MAX are waiting. A later commit must never succeed while an earlier one that failed
   * is waiting to be held, or the order would break across a store outage: the chain sees to that.
   */
  readonly #handTick = (): void => {
    this.#handScheduled = false;
    if (this.#tick.length === 0 || this.#handOvers >= HAND_OVERS_MAX) return;
    if (this.#stopping || this.#paused) {
      // Paused since they arrived: they wait behind what is held, in arrival order.
      const tick = this.#tick;
      this.#tick = [];
      this.#inFlight -= tick.length;
      for (const h of tick) {
        if (this.#stopping) h.reject(leftForRedelivery());
        else this.#held.push(h);
      }
      if (this.#inFlight === 0) this.#idle?.();
      return;
    }
    this.#receiveAll(this.#tick.splice(0, TICK_MAX));
  };

  async health(): Promise<InputHealth> {
    let h: TransportHealth;
    try {
      h = await this.#o.driver.health();
    } catch (err) {
      h = { connected: false, lag: null, lastError: (err as Error).message, lastErrorAt: Date.now() };
    }
    return { input: this.name, transport: this.transport, ...h, paused: this.#paused, held: this.#held.length, inFlight: this.#inFlight };
  }

  #message(d: Delivery): InboundMessage {
    const headers: Record<string, string> = { ...d.headers };
    if (d.topic !== undefined) headers[TOPIC_HEADER] = d.topic;
    if (d.key !== undefined && d.key !== null) headers[KEY_HEADER] = d.key;
    if (d.messageId !== undefined) headers[MESSAGE_ID_HEADER] = d.messageId;
    const o = this.#o;
    return { input: o.name, raw: d.raw, contentType: d.contentType, headers, service: o.owner.service, orgId: o.owner.orgId };
  }

  /** Hands deliveries to intake, in this order; each counts as in flight until it ends. */
  #receiveAll(list: Held[]): void {
    const o = this.#o;
    this.#handOvers += 1;
    let left = list.length;
    const ended = (): void => {
      if (--left > 0) return;
      this.#handOvers -= 1;
      if (this.#tick.length > 0) this.#scheduleHand();
    };
    const good: Held[] = [];
    for (const h of list) {
      if (h.message.raw.length > o.maxBytes) {
        const cut = { ...h.message, raw: h.message.raw.subarray(0, o.maxBytes), rawTruncated: true };
        const error = new DispatcherError('payload_too_large', `the message holds ${h.message.raw.length} bytes; the limit is ${o.maxBytes}`);
        this.#settle(h, o.intake.reject(cut, error).then((e) => Promise.reject(e)), ended);
      } else good.push(h);
    }
    if (good.length === 0) return;
    const answers = o.intake.receiveAll(
      good.map((h) => h.message),
      o.decode,
      this.#chain,
    );
    for (let i = 0; i < good.length; i++) this.#settle(good[i]!, answers[i]!, ended);
  }

  #settle(h: Held, answer: Promise<IntakeAnswer>, ended: () => void): void {
    answer
      .then(
        (a): DeliveryOutcome => (a.results.length > 0 && a.results.every((r) => r.status === 'duplicate') ? 'duplicate' : 'accepted'),
        (err): DeliveryOutcome | undefined => {
          const e = toDispatcherError(err);
          if (e.code === 'shutting_down') throw e;
          // Intake reports every failed commit as store_unavailable; any other error was kept as a dead
          // letter, unless keeping it failed too.
          if (e.code === 'store_unavailable' || e.deadLetterLost === true) {
            if (this.#stopping) throw leftForRedelivery();
            this.#pause(e);
            this.#held.push(h);
            return undefined;
          }
          return 'dead_letter';
        },
      )
      .then(
        (outcome) => {
          if (outcome !== undefined) h.resolve(outcome);
        },
        h.reject,
      )
      .finally(() => {
        this.#inFlight -= 1;
        if (this.#inFlight === 0) this.#idle?.();
        ended();
      });
  }

  #pause(cause: DispatcherError): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#o.log.warn({ input: this.name, err: cause.message }, 'the store cannot take events: input paused, nothing acknowledged');
    void this.#waitForStore();
  }

  async #waitForStore(): Promise<void> {
    let delay = 100;
    const max = this.#o.maxBackoffMs ?? 5000;
    for (;;) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.random() * delay + delay / 2);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
      if (this.#stopping) return;
      try {
        await this.#o.ping();
        break;
      } catch {
        delay = Math.min(delay * 2, max);
      }
    }
    // Deliveries still being committed from before the pause end first (committed, or held with the rest),
    // so that none of them fails after the held ones went ahead of it.
    if (this.#inFlight > 0) await new Promise<void>((resolve) => (this.#idle = resolve));
    this.#idle = undefined;
    if (this.#stopping) return;
    this.#chain = {};
    this.#paused = false;
    this.#o.log.info({ input: this.name }, 'the store is back: input resumed');
    // In arrival order, ahead of anything that arrived since, through the same hand-overs.
    const held = this.#held.sort((a, b) => a.seq - b.seq);
    this.#held = [];
    this.#inFlight += held.length;
    this.#tick = held.concat(this.#tick);
    this.#scheduleHand();
  }
}
