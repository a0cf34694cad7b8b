/**
 * The HTTP input's decoder: CloudEvents HTTP protocol binding 1.0
 * (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md).
 *
 * > 3.1 Binary Content Mode: the event data is carried in the message body, and event attributes are
 * > mapped to HTTP headers prefixed with `ce-`. […] The `datacontenttype` attribute maps to Content-Type.
 * > Header values […] MUST be percent-encoded for characters outside printable ASCII, space, `"` and `%`.
 * > 3.2 Structured Content Mode: the whole event is in the body, `Content-Type: application/cloudevents+json`.
 * > 3.3 Batched Content Mode: `Content-Type: application/cloudevents-batch+json`, a JSON array of events.
 *
 * Plain `application/json` is accepted too when the body is an event (an object with `specversion`) or an
 * array of them, because many producers cannot set the CloudEvents media types.
 */

import { DispatcherError } from '../../core/errors.js';
import { isJsonMediaType, mediaType, parseJsonBytes, utf8Text } from '../../core/json.js';
import type { Decoded, InboundMessage } from '../../core/intake.js';

export function decodeHttp(message: InboundMessage): Decoded {
  const type = mediaType(message.contentType);
  const headers = message.headers;
  if (type === 'application/cloudevents-batch+json') {
    const body = parseJsonBytes(message.raw);
    if (!Array.isArray(body)) throw new DispatcherError('invalid_event', 'a batch must be a JSON array of events', { problems: [{ pointer: '', message: 'must be an array' }] });
    return { events: body, batch: true };
  }
  if (type === 'application/cloudevents+json') {
    return { events: [parseJsonBytes(message.raw)], batch: false };
  }
  if (headers['ce-specversion'] !== undefined) return { events: [binaryEvent(message, 'ce-')], batch: false };
  if (type === 'application/json') {
    const body = parseJsonBytes(message.raw);
    if (Array.isArray(body)) return { events: body, batch: true };
    return { events: [body], batch: false };
  }
  throw new DispatcherError(
    'unsupported_media_type',
    `content type "${type || '(none)'}" is not accepted: send application/cloudevents+json, application/cloudevents-batch+json, application/json, or binary mode with ce-* headers`,
  );
}

/** A CloudEvents attribute name: lower-case letters and digits. */
const ATTRIBUTE_NAME = /^[a-z0-9]+$/;

/**
 * Binary content mode: attributes from the headers named `<prefix><attribute>` (values percent-decoded,
 * except with no prefix: MQTT 5 user properties are UTF-8 as they are), `datacontenttype` from the content
 * type, and `data` from the body by its media type.
 */

export function binaryEvent(message: InboundMessage, prefix: string): Record<string, unknown> {
  const event: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(message.headers)) {
    if (!name.startsWith(prefix) || name.length === prefix.length) continue;
    // No prefix (MQTT 5 user properties): only names an attribute can have, so `content-type` and the
    // `:topic` pseudo-headers stay headers.
    if (prefix === '' && !ATTRIBUTE_NAME.test(name)) continue;
    let decoded = value;
    try {
      if (prefix !== '') decoded = decodeURIComponent(value);
    } catch {
      // not percent-encoded after all
    }
    event[name.slice(prefix.length)] = decoded;
  }
  const contentType = message.contentType ?? (typeof event.datacontenttype === 'string' ? event.datacontenttype : null);
  const type = mediaType(contentType);
  if (contentType) event.datacontenttype = contentType;
  if (message.raw.length > 0) {
    if (isJsonMediaType(type)) event.data = parseJsonBytes(message.raw);
    else if (type.startsWith('text/') || type === '') {
      const text = utf8Text(message.raw);
      if (text === null) throw new DispatcherError('invalid_utf8', 'the body is not valid UTF-8');
      event.data = text;
    } else event.data_base64 = message.raw.toString('base64');
  }
  return event;
}

/** The headers worth keeping with a dead letter so that it can be replayed as it came. */
export function replayHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    if (lower.startsWith('ce-') || lower === 'content-type') out[lower] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}
