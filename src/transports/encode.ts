/**
 * The encoders: what the dispatcher writes to outputs, as bus messages (the counterpart of `decode.ts`):
 *
 * - a run event: key = run id; headers `event_type`, `service`, `status`, `org_id`; body
 *   `{"event_type": …, "payload": <the run>}` (the Playbook Dispatcher's run-event contract), the run as
 *   the caller presents it (the dispatcher: as the API shows a run);
 * - a dead letter: key = dead letter id; headers `reason`, `origin`, `source`, `dead_letter_id`,
 *   `service`, `org_id`, `message_encoding`; body `{"message": …, "error": …, "reason": …}`, the message
 *   as JSON when it parses, else as text when it is UTF-8, else base64;
 * - a CloudEvent (the `publish` action): binary mode of the transport's CloudEvents binding, attributes as
 *   headers `<prefix><name>`, data as the body, `content-type` its `datacontenttype`.
 */

import type { CloudEvent, DeadLetter, RunEvent, RunSummary } from '../core/types.js';
import { utf8Text } from './http/decode.js';
import type { CloudEventsBinding, OutboundMessage } from './types.js';

/** How a run is shown in a run event's payload. */
export type RunPresenter = (run: RunSummary) => unknown;

export function runEventMessage(e: RunEvent, topic: string, present: RunPresenter): OutboundMessage {
  return {
    topic,
    key: e.runId,
    headers: { event_type: e.eventType, service: e.service, status: e.status, org_id: e.orgId },
    body: Buffer.from(`{"event_type":"${e.eventType}","payload":${JSON.stringify(present(e.payload))}}`),
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

export function deadLetterMessage(d: DeadLetter, topic: string): OutboundMessage {
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
    topic,
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
