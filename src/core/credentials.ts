/**
 * Credentials: generated secrets, their slow hashes, constant-time comparison, and signed bearer tokens.
 *
 * - Client secrets are shown once and stored only as a scrypt hash (`scrypt$N$r$p$salt$hash`).
 * - Pre-shared keys are compared through their SHA-256 digests with `timingSafeEqual`, every configured key
 *   each time, so that neither the length nor the position of a match shows in the timing.
 * - Bearer tokens are JWTs signed with HMAC-SHA-256 (jose). Several signing secrets may be configured: the
 *   first signs, every one verifies (rotation with an overlap); the token names its secret in `kid`.
 */

import { createHash, randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions, webcrypto } from 'node:crypto';
import { errors as joseErrors, jwtVerify, SignJWT, type JWTPayload } from 'jose';
import { DispatcherError } from './errors.js';

/** A pre-shared key: letters and digits (what a `PSK <key>` header carries), at least 8 of them. */
export const PSK_KEY_PATTERN = '^[0-9A-Za-z]{8,}$';
const PSK_KEY = new RegExp(PSK_KEY_PATTERN);

export function isPskKey(key: string): boolean {
  return PSK_KEY.test(key);
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** A new random secret of letters and digits (so that it fits a `PSK` header): 43 characters, about 256 bits. */
export function generateSecret(length = 43): string {
  let out = '';
  // Rejection sampling keeps every character equally likely (248 = 4 × 62).
  while (out.length < length) for (const b of randomBytes(length)) if (b < 248 && out.length < length) out += ALPHABET[b % 62];
  return out;
}

const SCRYPT = { N: 1 << 15, r: 8, p: 1 } as const;

function scrypt(secret: string, salt: Buffer, keylen: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCallback(secret, salt, keylen, { ...options, maxmem: 128 * options.N! * options.r! * 2 }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** The slow hash of a secret, as stored: `scrypt$32768$8$1$<salt>$<hash>` (base64url). */
export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(secret, salt, 32, SCRYPT);
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

/** Whether `secret` matches a stored hash; a malformed hash matches nothing. Constant time in the secret. */
export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  if (![N, r, p].every((n) => Number.isInteger(n) && n > 0) || N > 1 << 20) return false;
  const salt = Buffer.from(parts[4]!, 'base64url');
  const expected = Buffer.from(parts[5]!, 'base64url');
  if (expected.length === 0) return false;
  const key = await scrypt(secret, salt, expected.length, { N, r, p });
  return timingSafeEqual(key, expected);
}

/** A table of keys that answers "which one is this?" in time independent of the key presented. */
export class KeyTable<T> {
  readonly #entries: Array<{ digest: Buffer; value: T }>;

  constructor(entries: Iterable<[key: string, value: T]>) {
    this.#entries = [...entries].map(([key, value]) => ({ digest: digest(key), value }));
  }

  get size(): number {
    return this.#entries.length;
  }

  find(key: string): T | undefined {
    const presented = digest(key);
    let found: T | undefined;
    // No early exit: every entry is compared, whatever matches.
    for (const e of this.#entries) if (timingSafeEqual(e.digest, presented) && found === undefined) found = e.value;
    return found;
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** The id of a signing secret, as written in a token's `kid`: not the secret, and not reversible. */
export function keyId(secret: string): string {
  return createHash('sha256').update('dispatcher-token-key\0').update(secret).digest('base64url').slice(0, 12);
}

export interface TokenClaims {
  /** The client id. */
  sub: string;
  /** The client's secret version when the token was issued: rotating the secret revokes older tokens. */
  ver: number;
}

export interface IssuedToken {
  token: string;
  expiresAt: number;
  /** Seconds from issue to expiry. */
  expiresIn: number;
}

const ISSUER = 'dispatcher';
const AUDIENCE = 'dispatcher';

/** Signs and verifies bearer tokens with one or more HMAC secrets (the first signs). */
export class TokenSigner {
  /** Each secret's WebCrypto key, imported once (jose would import raw bytes again on every call). */
  readonly #keys: Array<{ kid: string; key: Promise<webcrypto.CryptoKey> }>;
  readonly #lifetimeMs: number;

  constructor(secrets: readonly string[], lifetimeMs: number) {
    if (secrets.length === 0) throw new DispatcherError('config_invalid', 'auth.tokens.secrets: at least one signing secret is needed');
    if (secrets.some((s) => s === '')) throw new DispatcherError('config_invalid', 'auth.tokens.secrets: a signing secret may not be empty');
    this.#keys = secrets.map((s) => ({
      kid: keyId(s),
      key: webcrypto.subtle.importKey('raw', new TextEncoder().encode(s), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']),
    }));
    this.#lifetimeMs = lifetimeMs;
  }

  get lifetimeMs(): number {
    return this.#lifetimeMs;
  }

  async sign(claims: TokenClaims, now = Date.now()): Promise<IssuedToken> {
    const { kid, key } = this.#keys[0]!;
    const iat = Math.floor(now / 1000);
    const exp = iat + Math.max(1, Math.round(this.#lifetimeMs / 1000));
    const token = await new SignJWT({ ver: claims.ver })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid })
      .setSubject(claims.sub)
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(randomBytes(12).toString('base64url'))
      .sign(await key);
    return { token, expiresAt: exp * 1000, expiresIn: exp - iat };
  }

  /** The claims of a valid token; throws `unauthorized` saying why a token is not. */
  async verify(token: string, now = Date.now()): Promise<TokenClaims> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(
        token,
        (header) => {
          const found = this.#keys.find((k) => k.kid === header.kid);
          if (found === undefined) throw new DispatcherError('unauthorized', 'the token was signed with a key that is no longer accepted');
          return found.key; // a promise of the key, which jose awaits
        },
        { algorithms: ['HS256'], issuer: ISSUER, audience: AUDIENCE, currentDate: new Date(now), clockTolerance: 5 },
      ));
    } catch (err) {
      if (err instanceof DispatcherError) throw err;
      if (err instanceof joseErrors.JWTExpired) throw new DispatcherError('unauthorized', 'the token has expired');
      throw new DispatcherError('unauthorized', 'the token is not valid');
    }
    if (typeof payload.sub !== 'string' || typeof payload.ver !== 'number') throw new DispatcherError('unauthorized', 'the token is not valid');
    return { sub: payload.sub, ver: payload.ver };
  }
}
