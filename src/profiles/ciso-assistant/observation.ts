/**
 * The observations: the decoder `ciso-assistant.observation` (a Kafka message → one event
 * `ciso-assistant.<message_type>`), and the presenter `ciso-assistant.error` (a dead letter → the original's
 * errors-topic message `{"message": …, "error": …}`).
 *
 * The original skipped silently what it could not read (not JSON, no or an unknown `message_type`) and never
 * checked its own schemas. Here each of those is a dead letter with its reason (`invalid_json`,
 * `invalid_event`, `unknown_type`, `schema_violation`), which also reaches the errors topic, and can be
 * replayed once the cause is mended. The checks the original made inside its handlers come first, with its
 * words ("No selector provided.", "No file_name provided", …), so that the errors topic says what it said.
 *
 * An event's id is the message's place in Kafka (topic/partition/offset): a message delivered again after a
 * restart is the same event, which intake takes as a duplicate, so no observation is applied twice.
 */

import { createHash } from 'node:crypto';
import { DispatcherError, type ErrorProblem } from '../../core/errors.js';
import { parseJsonBytes } from '../../core/json.js';
import type { DecoderType, Presenter } from '../../core/profile.js';
import type { DeadLetter } from '../../core/types.js';
import { SCHEMAS, validatorOf } from './schemas.js';

export const PROFILE = 'ciso-assistant';
/** Events are `ciso-assistant.<message_type>`. */
export const EVENT_PREFIX = `${PROFILE}.`;
const MESSAGE_ID_HEADER = ':message-id';
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export interface ObservationOptions {
  /** Message types added by configuration. */
  types: string[];
  /** Those of them that create (`POST`): a selector is not needed. */
  creates?: string[];
  maxFileBytes: number;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

const empty = (value: unknown) => value === undefined || value === null || (isObject(value) && Object.keys(value).length === 0);

/** The original's own checks, in its order and words (notes §5.2, §5.3). */
function originalChecks(type: string, message: Record<string, unknown>, maxFileBytes: number, mayCreate: boolean): void {
  const values = message.values;
  if (type === 'upload_attachment') {
    const v = isObject(values) ? values : {};
    if (typeof v.file_name !== 'string' || v.file_name === '') throw new DispatcherError('invalid_event', 'No file_name provided');
    if ('file_content' in v) {
      if (typeof v.file_content !== 'string' || v.file_content === '') throw new DispatcherError('invalid_event', 'No file_content provided');
      const text = v.file_content.replace(/\s+/g, '');
      if (text.length % 4 !== 0 || !BASE64.test(text)) throw new DispatcherError('invalid_event', 'file_content is not valid base64 (Incorrect padding or a character outside the base64 alphabet)');
      const bytes = (text.length / 4) * 3 - (text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0);
      if (bytes > maxFileBytes) throw new DispatcherError('payload_too_large', `the attachment is ${bytes} bytes, more than maxFileBytes (${maxFileBytes})`);
    } else if (!('file_s3_bucket' in v)) {
      throw new DispatcherError('invalid_event', 'No valid file source provided. Provide base64 file content or S3 bucket and key.');
    }
    return;
  }
  if (empty(values)) throw new DispatcherError('invalid_event', 'No update values provided in the message.');
  // A configured type that POSTs creates an object when it has no selector.
  if (empty(message.selector) && !(mayCreate && message.selector === undefined)) throw new DispatcherError('invalid_event', 'No selector provided.');
}

export const OBSERVATION_DECODER: DecoderType = {
  description: 'A CISO Assistant Dispatcher observation (JSON with `message_type`, `selector`, `values`) → an event `ciso-assistant.<message_type>`, checked against its schema.',
  options: {
    type: 'object',
    additionalProperties: false,
    properties: {
      types: { type: 'array', items: { type: 'string' }, default: [] },
      creates: { type: 'array', items: { type: 'string' }, default: [] },
      maxFileBytes: { type: 'integer', minimum: 1, default: 25 * 1024 * 1024 },
    },
  },
  create: (options, context) => {
    const o = options as unknown as ObservationOptions;
    const known = new Set([...Object.keys(SCHEMAS), ...(o.types ?? [])]);
    const creates = new Set(o.creates ?? []);
    const maxFileBytes = o.maxFileBytes ?? 25 * 1024 * 1024;
    return (message) => {
      const body = parseJsonBytes(message.raw);
      if (!isObject(body)) throw new DispatcherError('invalid_event', 'an observation is a JSON object with a message_type');
      const type = body.message_type;
      if (typeof type !== 'string' || type === '') throw new DispatcherError('invalid_event', 'Message type is missing (message_type)', { problems: [{ pointer: '/message_type', message: 'is required' }] });
      if (!known.has(type)) throw new DispatcherError('unknown_type', `Message type not supported: ${type} (known: ${[...known].join(', ')})`, { problems: [{ pointer: '/message_type', message: 'is not a known type' }] });
      originalChecks(type, body, maxFileBytes, creates.has(type));
      const validate = validatorOf(type);
      if (!validate(body)) {
        const problems: ErrorProblem[] = (validate.errors ?? []).map((e) => ({ pointer: e.instancePath || '/', message: e.message ?? 'is invalid' }));
        throw new DispatcherError('schema_violation', `the ${type} message does not match its schema: ${problems.map((p) => `${p.pointer} ${p.message}`).join('; ')}`, { problems });
      }
      const id = message.headers[MESSAGE_ID_HEADER] ?? createHash('sha256').update(message.raw).digest('hex');
      return {
        events: [{ specversion: '1.0', id, source: context.source, type: `${EVENT_PREFIX}${type}`, datacontenttype: 'application/json', data: body }],
        batch: false,
      };
    };
  },
};

/** The observation a dead letter holds: the message as received (intake), or the event's data (a run). */
function observationOf(d: DeadLetter): unknown {
  const text = d.raw.toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return text;
  }
  if (d.origin === 'run' && isObject(parsed) && isObject(parsed.event)) return parsed.event.data ?? null;
  return parsed;
}

/** The original's errors-topic message: `{"message": <the observation>, "error": "<why>"}`, no key, no headers. */
export const ERROR_PRESENTER: Presenter = {
  stream: 'deadLetters',
  description: 'The original’s errors-topic message: `{"message": <the observation>, "error": "<why>"}`.',
  present: (d) => ({ headers: {}, body: Buffer.from(JSON.stringify({ message: observationOf(d), error: d.error })), contentType: 'application/json' }),
};
