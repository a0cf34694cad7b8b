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

export interface TransportHealth {
  connected: boolean;
  /** Messages waiting at the broker for this input (Kafka lag, queue depth, pending), when it reports one. */
  lag: number | null;
  lastError: string | null;
  lastErrorAt: number | null;
}

export interface InputDriver {
  /** Connect and start consuming; resolves once consuming (or rejects when the first connection fails for good). */
  start(sink: InputSink): Promise<void>;
  /** Stop consuming; resolves once no delivery is left in flight (those in flight are acknowledged or left for redelivery). */
  stop(): Promise<void>;
  health(): Promise<TransportHealth>;
}

/** One message to write to a bus. */
export interface OutboundMessage {
  /** Topic, routing key, subject or queue, as the transport names destinations; default: the output's own. */
  topic?: string;
  key?: string;
  headers: Record<string, string>;
  body: Buffer;
  contentType?: string;
}

export interface OutputDriver {
  start(): Promise<void>;
  /** Resolves once the broker has taken every message (confirmed, acknowledged); rejects otherwise. */
  publish(messages: OutboundMessage[]): Promise<void>;
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

/**
 * A CloudEvents protocol binding's binary mode: attribute `type` travels as header `<prefix>type`.
 * Kafka uses `ce_`, AMQP `cloudEvents:` (and `cloudEvents_`), NATS and HTTP `ce-`, MQTT 5 none.
 */
export interface CloudEventsBinding {
  /** Prefixes read (lower-cased), the first one also written. */
  readonly prefixes: readonly string[];
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
