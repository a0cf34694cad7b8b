/**
 * The outbox's way out: the port an output's driver implements (`OutputDriver`, `OutboundMessage`), and
 * the encoders that make bus messages of what the store keeps. Neutral ground between the core (the
 * relay, the presenters of the profiles) and the transports, which implement the port.
 *
 * - a run event: key = run id; headers `event_type`, `service`, `status`, `org_id`; body
 *   `{"event_type": …, "payload": …}` (the Playbook Dispatcher's run-event contract), the payload as the
 *   stream's presenter shows the run;
 * - a host event: key = host id; the same headers and `run_id`; the same body, the payload the host;
 * - a dead letter: key = dead letter id; headers `reason`, `origin`, `source`, `dead_letter_id`,
 *   `service`, `org_id`, `message_encoding`; body `{"message": …, "error": …, "reason": …}`, the message
 *   as JSON when it parses, else as text when it is UTF-8, else base64;
 * - a CloudEvent (the `publish` action): binary mode of the transport's CloudEvents binding, attributes as
 *   headers `<prefix><name>`, data as the body, `content-type` its `datacontenttype`.
 */

import { utf8Text } from './json.js';
import type { CloudEvent, DeadLetter, HostEvent, RunEvent } from './types.js';

/** One message to write to a bus. */
export interface OutboundMessage {
  /** Topic, routing key, subject or queue, as the transport names destinations; default: the output's own. */
  topic?: string;
  key?: string;
  headers: Record<string, string>;
  body: Buffer;
  contentType?: string;
}

export interface TransportHealth {
  connected: boolean;
  /** Messages waiting at the broker for this input (Kafka lag, queue depth, pending), when it reports one. */
  lag: number | null;
  lastError: string | null;
  lastErrorAt: number | null;
}

export interface OutputDriver {
  start(): Promise<void>;
  /** Resolves once the broker has taken every message (confirmed, acknowledged); rejects otherwise. */
  publish(messages: OutboundMessage[]): Promise<void>;
  stop(): Promise<void>;
  health(): Promise<TransportHealth>;
}

/** A message as a stream's presenter shapes it; the stream's configuration gives the topic. */
export type Presented = Omit<OutboundMessage, 'topic'>;

/** A raw message for an output that does not speak CloudEvents (an SNS reply, an errors topic). */
export type RawMessage = Omit<OutboundMessage, 'headers' | 'body'> & { headers?: Record<string, string>; body: Buffer | string };

/** Publish to a configured output: a CloudEvent in its binary mode, or a raw message; resolves once the output confirmed it. */
export interface PublishTo {
  (output: string, event: CloudEvent, destination: { topic?: string; key?: string }): Promise<void>;
  (output: string, message: RawMessage): Promise<void>;
}

/**
 * A CloudEvents protocol binding's binary mode: attribute `type` travels as header `<prefix>type`.
 * Kafka uses `ce_`, AMQP `cloudEvents:` (and `cloudEvents_`), NATS and HTTP `ce-`, MQTT 5 none.
 */
export interface CloudEventsBinding {
  /** Prefixes read (lower-cased), the first one also written. */
  readonly prefixes: readonly string[];
}

/** `{"event_type": …, "payload": …}`, with the payload already JSON text. */
function envelope(eventType: string, payloadJson: string): Buffer {
  return Buffer.from(`{"event_type":"${eventType}","payload":${payloadJson}}`);
}

/** A run event as a message: the envelope around `payload` (the run as the stream's presenter shows it). */
export function runEventMessage(e: RunEvent, payload: unknown): Presented {
  return {
    key: e.runId,
    headers: { event_type: e.eventType, service: e.service, status: e.status, org_id: e.orgId },
    body: envelope(e.eventType, JSON.stringify(payload)),
    contentType: 'application/json',
  };
}

/** A host event as a message: the envelope around `payload` (the host as the stream's presenter shows it). */
export function hostEventMessage(e: HostEvent, payload: unknown): Presented {
  return {
    key: e.hostId,
    headers: { event_type: e.eventType, service: e.service, status: e.status, org_id: e.orgId, run_id: e.runId },
    body: envelope(e.eventType, JSON.stringify(payload)),
    contentType: 'application/json',
  };
}

/** How a dead letter's raw bytes travel in its message. */
export function rawMessage(raw: Buffer): { encoding: 'json' | 'text' | 'base64'; message: unknown } {
  const text = utf8Text(raw);
  if (text === null) return { encoding: 'base64', message: raw.toString('base64') };
  try {
    return { encoding: 'json', message: JSON.parse(text) as unknown };
  } catch {
    return { encoding: 'text', message: text };
  }
}

export function deadLetterMessage(d: DeadLetter): Presented {
  const { encoding, message } = rawMessage(d.raw);
  const headers: Record<string, string> = {
    reason: d.reason,
    origin: d.origin,
    source: d.source,
    dead_letter_id: d.id,
    service: d.service,
    org_id: d.orgId,
    message_encoding: encoding,
  };
  if (d.runId !== null) headers.run_id = d.runId;
  if (d.rawTruncated) headers.message_truncated = 'true';
  return {
    key: d.id,
    headers,
    body: Buffer.from(JSON.stringify({ message, error: d.error, reason: d.reason })),
    contentType: 'application/json',
  };
}

/** A CloudEvent in binary mode: every attribute but `data` and `datacontenttype` as a header. */
export function cloudEventMessage(event: CloudEvent, binding: CloudEventsBinding, destination: { topic?: string; key?: string }): OutboundMessage {
  const prefix = binding.prefixes[0] ?? '';
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(event)) {
    if (name === 'data' || name === 'datacontenttype' || value === undefined || value === null) continue;
    headers[prefix + name] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  const contentType = event.datacontenttype ?? 'application/json';
  const data = event.data;
  const body =
    data === undefined ? Buffer.alloc(0) : Buffer.isBuffer(data) ? data : typeof data === 'string' && !/json/i.test(contentType) ? Buffer.from(data) : Buffer.from(JSON.stringify(data));
  const message: OutboundMessage = { headers, body, contentType };
  if (destination.topic !== undefined) message.topic = destination.topic;
  if (destination.key !== undefined) message.key = destination.key;
  return message;
}
