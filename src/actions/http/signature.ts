/**
 * Signing webhooks the Standard Webhooks way (https://www.standardwebhooks.com, spec 1.0.0), symmetric
 * scheme only: receivers verify with any of its libraries (`new Webhook(secret).verify(body, headers)`).
 */

import { createHmac } from 'node:crypto';

const PREFIX = 'whsec_';
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * The key bytes of a signing secret. A `whsec_<base64>` secret is the Standard Webhooks serialization
 * ("base64 encoded, prefixed with `whsec_` for easy identification"): the key is the decoded bytes. Any
 * other string is used as is, as UTF-8 bytes (receivers verify with `new Webhook(secret, { format: 'raw' })`).
 * Throws when a `whsec_` secret is not valid base64 or is empty; the message never repeats the secret.
 */
export function signingKey(secret: string): Buffer {
  if (secret.startsWith(PREFIX)) {
    const encoded = secret.slice(PREFIX.length);
    if (encoded.length % 4 !== 0 || !BASE64.test(encoded)) throw new Error('a whsec_ signing secret must be base64 after the prefix');
    const key = Buffer.from(encoded, 'base64');
    if (key.length === 0) throw new Error('the signing secret is empty');
    return key;
  }
  if (secret.length === 0) throw new Error('the signing secret is empty');
  return Buffer.from(secret, 'utf8');
}

/*
 * Standard Webhooks 1.0.0, "Signature scheme":
 *
 *   "the metadata and the body are concatenated (delimited by full-stops) and then signed.
 *    The content to be signed is therefore: `{msg_id}.{timestamp}.{payload}`."
 *
 *   "Symmetric signatures are prefixed with `v1` […] a symmetric signature will be v1, followed by a
 *    comma (`,`), followed by the base64 encoded signature. For example:
 *    `v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=`."  (Signature scheme: `HMAC-SHA256`.)
 *
 *   "`webhook-timestamp`: integer unix timestamp (seconds since epoch)."
 *
 * The payload signed must be byte for byte the body sent, so callers pass the exact serialized body.
 * The message id is our run id (a UUID), which holds no `.`, as the spec asks.
 */
export function signWebhook(key: Buffer, msgId: string, timestamp: number, payload: string | Buffer): string {
  const hmac = createHmac('sha256', key);
  hmac.update(`${msgId}.${timestamp}.`, 'utf8');
  hmac.update(payload);
  return `v1,${hmac.digest('base64')}`;
}
