/**
 * The port between the dispatcher and a message bus. A transport (`src/transports/<name>/`) owns its
 * driver and is loaded only when an input or output names it (see `index.ts`).
 *
 * An input driver consumes and hands each message to its sink, one `Delivery` at a time (many may be in
 * flight at once: the sink batches them into group commits). The sink resolves only once the message's
 * events and runs are committed, or it is kept as a dead letter: only then may the driver acknowledge it
 * (commit the offset, ack, delete). While the store cannot take events the sink keeps retrying and does
 * not resolve, so a driver with a bounded number of unacknowledged messages stops consuming: back-pressure,
 * not loss. The sink rejects only when the dispatcher stops; the driver then leaves the message
 * unacknowledged, for the broker to deliver again.
 */

import type { Logger } from 'pino';
import type { CloudEventsBinding, OutputDriver, TransportHealth } from '../core/outbox.js';

export type { CloudEventsBinding, OutboundMessage, OutputDriver, TransportHealth } from '../core/outbox.js';

/** One message as a bus delivered it. */
export interface Delivery {
  raw: Buffer;
  contentType: string | null;
  /** Message headers or properties, names lower-cased, values as text. */
  headers: Record<string, string>;
  /** Where it came from inside the input: the Kafka topic, the AMQP routing key, the NATS subject, the MQTT topic. */
  topic?: string;
  /** The message key (Kafka), when there is one. */
  key?: string | null;
  /** An id the broker gives this message that stays the same when it is delivered again. */
  messageId?: string;
}

/** How a delivery ended: both mean the driver may acknowledge it now. */
export type DeliveryOutcome = 'accepted' | 'duplicate' | 'dead_letter';

export interface InputSink {
  deliver(delivery: Delivery): Promise<DeliveryOutcome>;
}

export interface InputDriver {
  /** Connect and start consuming; resolves once consuming (or rejects when the first connection fails for good). */
  start(sink: InputSink): Promise<void>;
  /** Stop consuming; resolves once no delivery is left in flight (those in flight are acknowledged or left for redelivery). */
  stop(): Promise<void>;
  health(): Promise<TransportHealth>;
}

export interface TransportContext {
  /** The input's or output's name from the configuration. */
  name: string;
  log: Logger;
}

/** What a transport module exports. Options were checked against the transport's schema. */
export interface Transport {
  readonly name: string;
  /** How CloudEvents attributes travel in this transport's headers (its CloudEvents binding). */
  readonly binding: CloudEventsBinding;
  createInput?(options: Record<string, unknown>, context: TransportContext): InputDriver;
  createOutput?(options: Record<string, unknown>, context: TransportContext): OutputDriver;
}

/** A health that knows only what the driver saw. */
export class HealthTracker {
  connected = false;
  lastError: string | null = null;
  lastErrorAt: number | null = null;

  failed(err: unknown): void {
    this.lastError = err instanceof Error ? err.message : String(err);
    this.lastErrorAt = Date.now();
  }

  snapshot(lag: number | null = null): TransportHealth {
    return { connected: this.connected, lag, lastError: this.lastError, lastErrorAt: this.lastErrorAt };
  }
}
