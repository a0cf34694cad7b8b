/**
 * Decoders for messages from a bus: how the bytes and headers of one message become candidate events.
 *
 * - `cloudevents` (the default): the transport's CloudEvents binding. Binary mode when a header
 *   `<prefix>specversion` is present (Kafka `ce_`, AMQP `cloudEvents:`/`cloudEvents_`, NATS `ce-`, MQTT 5
 *   user properties with no prefix); otherwise structured mode (`application/cloudevents+json`, or any JSON
 *   object with `specversion`), or a batch (`application/cloudevents-batch+json`, or a JSON array).
 * - `json`: plain JSON messages, wrapped in an event. The type comes from a field of the message
 *   (`typeField`, e.g. `message_type`) or is fixed (`type`); the id from `idField`, else the broker's message
 *   id, else the SHA-256 of the bytes, so that a redelivered message is the same event.
 * - `sns`: an Amazon SNS notification (`{"Type": "Notification", "MessageId", "Message", …}`), as SNS
 *   delivers it to SQS or HTTP: `Message` is decoded by the `message` decoder (json or cloudevents), and the
 *   SNS `MessageId` is the message id.
 *
 * Where a message came from inside its input travels with it as pseudo-headers (`:topic`, `:key`,
 * `:message-id`), which a dead letter keeps, so a replay decodes it exactly as it first came.
 */

import { createHash } from 'node:crypto';
import { DispatcherError } from '../core/errors.js';
import type { Decoded, Decoder, InboundMessage } from '../core/intake.js';
import { mediaType, parseJsonBytes } from '../core/json.js';
import { binaryEvent } from './http/decode.js';
import type { DecoderType } from '../core/profile.js';
import type { CloudEventsBinding } from './types.js';

export const TOPIC_HEADER = ':topic';
export const KEY_HEADER = ':key';
export const MESSAGE_ID_HEADER = ':message-id';

export interface JsonDecoderConfig {
  format: 'json';
  /** A fixed event type. */
  type?: string;
  /** The field (a dotted path) whose value is the event type; it wins over `type` when present. */
  typeField?: string;
  /** The field whose value is the event id. */
  idField?: string;
  /** The event source (default: `<transport>://<input>`). */
  source?: string;
  /** The field whose value is the `topic` extension (default: the topic, routing key or subject it came on). */
  topicField?: string;
}

export interface CloudEventsDecoderConfig {
  format: 'cloudevents';
}

export interface SnsDecoderConfig {
  format: 'sns';
  /** How the notification's `Message` is decoded. */
  message?: CloudEventsDecoderConfig | JsonDecoderConfig;
}

/** A profile's decoder, by its name (`<profile>.<name>`), with its options. */
export interface ProfileDecoderConfig {
  format: string;
  options?: Record<string, unknown>;
}

export type DecoderConfig = CloudEventsDecoderConfig | JsonDecoderConfig | SnsDecoderConfig | ProfileDecoderConfig;

/**
 * The decoder of one input. `source` is the default event source for plain JSON; `profileDecoder` finds
 * the decoders of the profiles switched on.
 */
export function busDecoder(
  config: DecoderConfig | undefined,
  binding: CloudEventsBinding,
  source: string,
  profileDecoder: (format: string) => DecoderType | undefined = () => undefined,
): Decoder {
  const c = config ?? { format: 'cloudevents' };
  switch (c.format) {
    case 'cloudevents':
      return (message) => decodeCloudEvents(message, binding);
    case 'json':
      return (message) => decodeJson(message, c as JsonDecoderConfig, source);
    case 'sns': {
      const inner = busDecoder((c as SnsDecoderConfig).message ?? { format: 'json' }, binding, source);
      return (message) => inner(unwrapSns(message));
    }
    default: {
      const type = profileDecoder(c.format);
      // The configuration was checked against the profiles switched on: reaching this is a bug.
      if (type === undefined) throw new DispatcherError('config_invalid', `no decoder "${c.format}": is its profile switched on?`);
      return type.create((c as ProfileDecoderConfig).options ?? {}, { source, binding });
    }
  }
}

export function decodeCloudEvents(message: InboundMessage, binding: CloudEventsBinding): Decoded {
  const type = mediaType(message.contentType);
  if (type === 'application/cloudevents-batch+json') return asBatch(parseJsonBytes(message.raw));
  if (type !== 'application/cloudevents+json') {
    for (const prefix of binding.prefixes) {
      if (message.headers[`${prefix}specversion`] !== undefined) return { events: [binaryEvent(message, prefix)], batch: false };
    }
  }
  const body = parseJsonBytes(message.raw);
  if (Array.isArray(body)) return asBatch(body);
  if (type === 'application/cloudevents+json' || (body !== null && typeof body === 'object' && 'specversion' in body)) return { events: [body], batch: false };
  throw new DispatcherError(
    'invalid_event',
    'the message is not a CloudEvent: no specversion in the body or the headers (an input with `decoder: { format: json }` takes plain JSON)',
    { problems: [{ pointer: '/specversion', message: 'required attribute is missing' }] },
  );
}

function asBatch(body: unknown): Decoded {
  if (!Array.isArray(body)) throw new DispatcherError('invalid_event', 'a batch must be a JSON array of events', { problems: [{ pointer: '', message: 'must be an array' }] });
  return { events: body, batch: true };
}

export function decodeJson(message: InboundMessage, config: JsonDecoderConfig, defaultSource: string): Decoded {
  const body = parseJsonBytes(message.raw);
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new DispatcherError('invalid_event', 'the message must be a JSON object', { problems: [{ pointer: '', message: 'must be an object' }] });
  }
  const record = body as Record<string, unknown>;
  let type = config.type;
  if (config.typeField !== undefined) {
    const value = fieldAt(record, config.typeField);
    if (typeof value === 'string' && value !== '') type = value;
    else if (type === undefined) {
      throw new DispatcherError('invalid_event', `the message has no "${config.typeField}" to take its type from`, {
        problems: [{ pointer: pointerOf(config.typeField), message: value === undefined ? 'required field is missing' : 'must be a non-empty string' }],
      });
    }
  }
  if (type === undefined) throw new DispatcherError('invalid_event', 'the decoder names neither `type` nor `typeField`');
  let id: string | undefined;
  if (config.idField !== undefined) {
    const value = fieldAt(record, config.idField);
    if ((typeof value === 'string' && value !== '') || typeof value === 'number') id = String(value);
  }
  id ??= message.headers[MESSAGE_ID_HEADER] ?? createHash('sha256').update(message.raw).digest('hex');
  const event: Record<string, unknown> = {
    specversion: '1.0',
    id,
    source: config.source ?? defaultSource,
    type,
    datacontenttype: 'application/json',
    data: body,
  };
  const topic = config.topicField !== undefined ? fieldAt(record, config.topicField) : message.headers[TOPIC_HEADER];
  if (typeof topic === 'string' && topic !== '') event.topic = topic;
  return { events: [event], batch: false };
}

/** `a.b` → the value of `body.a.b`; own properties only. */
function fieldAt(body: Record<string, unknown>, path: string): unknown {
  let value: unknown = body;
  for (const key of path.split('.')) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, key)) return undefined;
    value = (value as Record<string, unknown>)[key];
  }
  return value;
}

function pointerOf(path: string): string {
  return '/' + path.split('.').map((k) => k.replaceAll('~', '~0').replaceAll('/', '~1')).join('/');
}

/** The message inside an SNS notification, with the notification's id and attributes as its headers. */
export function unwrapSns(message: InboundMessage): InboundMessage {
  const body = parseJsonBytes(message.raw);
  const envelope = body as Record<string, unknown> | null;
  if (envelope === null || typeof envelope !== 'object' || Array.isArray(envelope) || typeof envelope.Message !== 'string') {
    throw new DispatcherError('invalid_envelope', 'the message is not an SNS notification: it has no "Message" string', {
      problems: [{ pointer: '/Message', message: 'required field is missing or not a string' }],
    });
  }
  const headers: Record<string, string> = { ...message.headers };
  const attributes = envelope.MessageAttributes;
  if (attributes !== null && typeof attributes === 'object') {
    for (const [name, attribute] of Object.entries(attributes as Record<string, unknown>)) {
      const value = (attribute as { Value?: unknown } | null)?.Value;
      if (typeof value === 'string') headers[name.toLowerCase()] = value;
    }
  }
  if (typeof envelope.MessageId === 'string') headers[MESSAGE_ID_HEADER] = envelope.MessageId;
  const contentType = headers['content-type'] ?? null;
  return { ...message, raw: Buffer.from(envelope.Message, 'utf8'), contentType, headers };
}
