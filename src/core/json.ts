/**
 * Bytes to JSON, as every way in reads them: valid UTF-8, no prototype-poisoning keys, coded errors
 * (`invalid_utf8`, `invalid_json`, `forbidden_key`). Shared by the decoders of the inputs and of the
 * profiles, and by the API's own bodies.
 */

import secureJson from 'secure-json-parse';
import { DispatcherError } from './errors.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function mediaType(contentType: string | null | undefined): string {
  return (contentType ?? '').split(';', 1)[0]!.trim().toLowerCase();
}

export function isJsonMediaType(type: string): boolean {
  return type === 'application/json' || type === 'text/json' || type.endsWith('+json');
}

/** The bytes as text when they are valid UTF-8; otherwise null. */
export function utf8Text(raw: Buffer): string | null {
  try {
    return utf8.decode(raw);
  } catch {
    return null;
  }
}

/** Parses JSON text from bytes: valid UTF-8, no prototype-poisoning keys. */
export function parseJsonBytes(raw: Buffer): unknown {
  const text = utf8Text(raw);
  if (text === null) throw new DispatcherError('invalid_utf8', 'the body is not valid UTF-8');
  if (text.trim() === '') throw new DispatcherError('invalid_json', 'the body is empty');
  try {
    return secureJson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' });
  } catch (err) {
    const message = (err as Error).message;
    if (/prototype/i.test(message)) {
      throw new DispatcherError('forbidden_key', 'the body holds a "__proto__" or "constructor.prototype" key');
    }
    throw new DispatcherError('invalid_json', `the body is not valid JSON: ${message}`);
  }
}
