/**
 * The authenticator: turns credentials into principals, issues bearer tokens to clients, and manages
 * clients. Transport-free: the HTTP app (and later profiles and inputs) hand it header values.
 *
 * Three ways in, one model out (a principal with a tenant and grants):
 * - `PSK <key>`: keys from the configuration and `PSK_AUTH_<SERVICE>` variables, found in constant time;
 * - `Bearer <token>`: a token from `POST /v1/token`, signed, expiring, and checked against its client (a
 *   deleted client or a rotated secret revokes it; clients are cached for a few seconds);
 * - a trusted identity header (base64 JSON) set by a gateway, when turned on.
 */

import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import type { AuthConfig, PskConfig } from './settings.js';
import type { AccessStore, ClientRecord } from '../store/access.js';
import { generateSecret, hashSecret, isPskKey, KeyTable, TokenSigner, verifySecret, type IssuedToken } from './credentials.js';
import { DispatcherError } from './errors.js';
import { ANONYMOUS, grantCovers, grantSpec, toGrant, type Grant, type PermissionSpec, type Principal } from './principal.js';

/** How long a client record is trusted from memory before it is read again (revocation delay across processes). */
const CLIENT_CACHE_MS = 5_000;
/** The settings key of the generated token signing secret. */
const TOKEN_SECRET_SETTING = 'auth.token_secret';

export interface NewClient {
  /** Its id (letters, digits, `.`, `_`, `-`; at most 100): a generated UUIDv7 when absent. */
  id?: string;
  name: string;
  service?: string;
  orgId: string;
  permissions: PermissionSpec[];
  subscription?: string | null;
}

/** What a client id may be: it names queues and appears in URLs, so no spaces, slashes or wildcards. */
export const CLIENT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/** A change of a client, as listeners hear of it (after it is stored). */
export interface ClientChange {
  kind: 'created' | 'updated' | 'rotated' | 'deleted';
  client: ClientRecord;
  /** Before an update. */
  previous?: ClientRecord;
}

export class Authenticator {
  readonly #config: AuthConfig;
  readonly #store: AccessStore;
  readonly #log: Logger;
  #psk: KeyTable<PskConfig> = new KeyTable([]);
  #signer: TokenSigner | undefined;
  #secrets: readonly string[] = [];
  readonly #clients = new Map<string, { record: ClientRecord | null; until: number }>();
  readonly #listeners = new Set<(change: ClientChange) => void>();
  /** The generated admin key's file, when one is in use. */
  adminKeyFile: string | null = null;

  /** Failed token requests per client id (`auth.tokens.rateLimit.perClient`). */
  readonly #failures: FailureWindows;

  /** The limits of token requests (`auth.tokens.rateLimit`; window in ms): the per-address one is the HTTP route's. */
  get tokenRateLimit(): { perAddress: number; perClient: number; window: number } {
    return this.#config.tokens.rateLimit;
  }

  constructor(config: AuthConfig, store: AccessStore, log: Logger) {
    this.#config = config;
    this.#store = store;
    this.#log = log;
    this.#failures = new FailureWindows(config.tokens.rateLimit.perClient, config.tokens.rateLimit.window);
  }

  get enabled(): boolean {
    return this.#config.enabled;
  }

  /** Signing secrets and the admin key. Call once, after the store is migrated. */
  async init(): Promise<void> {
    const secrets = this.#config.tokens.secrets.length > 0 ? this.#config.tokens.secrets : [await this.#store.ensureSetting(TOKEN_SECRET_SETTING, generateSecret(64))];
    this.#secrets = secrets;
    this.#signer = new TokenSigner(secrets, this.#config.tokens.lifetime);
    const keys: PskConfig[] = [...this.#config.psk];
    const admin = await this.#adminKey();
    if (admin !== null) keys.push(admin);
    this.#psk = new KeyTable(keys.map((k) => [k.key, k]));
  }

  /**
   * The generated admin key: used when its file exists, and made when nothing else could let anyone in
   * (no pre-shared key, no identity header, no client), so that a fresh `serve` can be used at once.
   */
  async #adminKey(): Promise<PskConfig | null> {
    const file = this.#config.keyFile;
    if (!this.#config.enabled || file === null) return null;
    let key: string | undefined;
    if (existsSync(file)) {
      key = readFileSync(file, 'utf8').trim();
      if (!isPskKey(key)) throw new DispatcherError('config_invalid', `auth.keyFile: ${file} does not hold a key (letters and digits, at least 8)`);
    } else {
      const nothingElse = this.#config.psk.length === 0 && !this.#config.identityHeader.enabled && (await this.#store.listClients()).length === 0;
      if (!nothingElse) return null;
      key = generateSecret();
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, key + '\n', { mode: 0o600, flag: 'wx' });
      chmodSync(file, 0o600);
      this.#log.warn({ keyFile: file }, 'no credentials are configured: generated an admin key (PSK of service "admin"); read it from the file');
    }
    this.adminKeyFile = file;
    return { service: 'admin', key, orgId: this.#config.defaults.orgId, grants: this.#config.defaults.grants, from: file };
  }

  /** A signer of the dispatcher's own secrets whose tokens live `lifetimeMs` (a profile's token lifetime). */
  signerFor(lifetimeMs: number): TokenSigner {
    if (this.#signer === undefined) throw new DispatcherError('internal', 'the authenticator was not initialized');
    return new TokenSigner(this.#secrets, lifetimeMs);
  }

  get #tokens(): TokenSigner {
    if (this.#signer === undefined) throw new DispatcherError('internal', 'the authenticator was not initialized');
    return this.#signer;
  }

  /**
   * The principal behind a request's headers (lower-case names), or null when it carries no credentials.
   * Throws `unauthorized` for credentials that are malformed, unknown or expired, and `forbidden` for an
   * identity of a type that is not accepted.
   */
  async authenticate(headers: Record<string, string | string[] | undefined>): Promise<Principal | null> {
    if (!this.#config.enabled) return ANONYMOUS;
    const authorization = single(headers.authorization);
    if (authorization !== undefined) {
      const psk = /^PSK\s+(\S+)$/i.exec(authorization);
      if (psk !== null) return this.psk(psk[1]!);
      const bearer = /^Bearer\s+(\S+)$/i.exec(authorization);
      if (bearer !== null) return this.bearer(bearer[1]!);
      throw new DispatcherError('unauthorized', 'unsupported Authorization scheme: use "PSK <key>" or "Bearer <token>"');
    }
    const { identityHeader } = this.#config;
    if (identityHeader.enabled) {
      const value = single(headers[identityHeader.name]);
      if (value !== undefined) return this.identity(value);
    }
    return null;
  }

  psk(key: string): Principal {
    if (!/^[0-9A-Za-z]+$/.test(key)) throw new DispatcherError('unauthorized', 'unsupported authentication key format');
    const found = this.#psk.find(key);
    if (found === undefined) throw new DispatcherError('unauthorized', 'unknown pre-shared key');
    return { kind: 'psk', id: `psk:${found.service}`, service: found.service, orgId: found.orgId, grants: found.grants };
  }

  /** A bearer token's client; `signer`: a profile's own (`SOAR_TOKEN_SECRET`), else the dispatcher's. */
  async bearer(token: string, signer?: TokenSigner): Promise<Principal> {
    const claims = await (signer ?? this.#tokens).verify(token);
    const client = await this.#client(claims.sub);
    if (client === null) throw new DispatcherError('unauthorized', 'the client of this token no longer exists');
    if (client.secretVersion !== claims.ver) throw new DispatcherError('unauthorized', "the token was issued before the client's secret was rotated");
    return clientPrincipal(client);
  }

  /** The identity header's principal; `anyType` takes any identity type (the caller checks it). */
  identity(value: string, options: { anyType?: boolean } = {}): Principal {
    let doc: unknown;
    try {
      doc = JSON.parse(Buffer.from(value, 'base64').toString('utf8'));
    } catch {
      throw new DispatcherError('unauthorized', `the ${this.#config.identityHeader.name} header is not base64 JSON`);
    }
    const identity = (doc as { identity?: Record<string, any> } | null)?.identity;
    const orgId = identity?.org_id ?? identity?.internal?.org_id;
    if (identity === undefined || identity === null || typeof orgId !== 'string' || orgId === '') {
      throw new DispatcherError('unauthorized', `the ${this.#config.identityHeader.name} header names no identity.org_id`);
    }
    const type = String(identity.type ?? '').toLowerCase();
    if (options.anyType !== true && !this.#config.identityHeader.types.includes(type)) throw new DispatcherError('forbidden', `unauthorized principal type: ${type || '(none)'}`);
    const name = identity.user?.username ?? identity.service_account?.username ?? identity.service_account?.client_id ?? type;
    const user = String(name);
    return { kind: 'identity', id: `identity:${orgId}:${user}`, service: user, orgId, grants: this.#config.identityHeader.grants };
  }

  // ------------------------------------------------------------------------------------------ clients

  async #client(id: string): Promise<ClientRecord | null> {
    const now = Date.now();
    const cached = this.#clients.get(id);
    if (cached !== undefined && cached.until > now) return cached.record;
    const record = await this.#store.getClient(id);
    if (this.#clients.size > 10_000) this.#clients.clear();
    this.#clients.set(id, { record, until: now + CLIENT_CACHE_MS });
    return record;
  }

  /** Client credentials → a token. Unknown id and wrong secret answer the same, after the same slow hash. */
  async issueToken(clientId: string, secret: string, signer?: TokenSigner): Promise<IssuedToken & { client: ClientRecord }> {
    // Past `auth.tokens.rateLimit.perClient` failures in a window, a client id is refused before its secret is hashed.
    const now = Date.now();
    const wait = this.#failures.wait(clientId, now);
    if (wait > 0) throw new DispatcherError('rate_limited', `too many failed token requests for client ${clientId}; try again later`, { retryAfterMs: wait });
    const client = typeof clientId === 'string' && clientId.length <= 200 ? await this.#store.getClient(clientId) : null;
    const ok = await verifySecret(typeof secret === 'string' ? secret : '', client?.secretHash ?? DUMMY_HASH);
    if (client === null || !ok) {
      this.#failures.fail(clientId, now);
      throw new DispatcherError('unauthorized', 'unknown client or wrong secret');
    }
    this.#clients.set(client.id, { record: client, until: Date.now() + CLIENT_CACHE_MS });
    return { ...(await (signer ?? this.#tokens).sign({ sub: client.id, ver: client.secretVersion })), client };
  }

  /**
   * Make a client; its secret is returned here and never again. With `by`, the new client's permissions must
   * be within the creator's (no one hands out more than it holds) and its tenant is the creator's.
   */
  async createClient(spec: NewClient, by?: Principal): Promise<{ client: ClientRecord; secret: string }> {
    const grants = parseGrants(spec.permissions);
    if (by !== undefined) checkCovered(by, grants);
    if (spec.id !== undefined && !CLIENT_ID_PATTERN.test(spec.id)) {
      throw new DispatcherError('bad_request', `client_id "${spec.id}": 1 to 100 letters, digits, ".", "_" or "-", starting with a letter or digit`);
    }
    if (spec.id !== undefined && (await this.#store.getClient(spec.id)) !== null) throw new DispatcherError('invalid_state', `a client ${spec.id} already exists`);
    const secret = generateSecret();
    const now = Date.now();
    const client: ClientRecord = {
      id: spec.id ?? uuidv7(),
      name: spec.name,
      service: spec.service ?? spec.name,
      orgId: by?.orgId ?? spec.orgId,
      permissions: grants.map(grantSpec),
      secretHash: await hashSecret(secret),
      secretVersion: 1,
      createdAt: now,
      updatedAt: now,
      subscription: spec.subscription ?? null,
    };
    try {
      await this.#store.createClient(client);
    } catch (err) {
      // Two requests for one id at once: the second meets the first's row.
      if (spec.id !== undefined && (await this.#store.getClient(spec.id)) !== null) throw new DispatcherError('invalid_state', `a client ${spec.id} already exists`);
      throw err;
    }
    this.#changed({ kind: 'created', client });
    return { client, secret };
  }

  /** Change a client's name or subscription; tokens stay valid. */
  async updateClient(id: string, changes: { name?: string; subscription?: string | null }, orgId?: string): Promise<ClientRecord> {
    const existing = await this.#store.getClient(id);
    if (existing === null || (orgId !== undefined && existing.orgId !== orgId)) throw new DispatcherError('not_found', `no client ${id}`);
    const client = await this.#store.updateClient(id, changes, Date.now());
    if (client === null) throw new DispatcherError('not_found', `no client ${id}`);
    this.#clients.delete(id);
    this.#changed({ kind: 'updated', client, previous: existing });
    return client;
  }

  /** Hear of every client made, changed, given a new secret or deleted through this authenticator. */
  onClientChange(listener: (change: ClientChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #changed(change: ClientChange): void {
    for (const listener of this.#listeners) {
      try {
        listener(change);
      } catch (err) {
        this.#log.warn({ err, client: change.client.id }, 'a client change listener failed');
      }
    }
  }

  async rotateSecret(id: string, orgId?: string): Promise<{ client: ClientRecord; secret: string }> {
    const existing = await this.#store.getClient(id);
    if (existing === null || (orgId !== undefined && existing.orgId !== orgId)) throw new DispatcherError('not_found', `no client ${id}`);
    const secret = generateSecret();
    const client = await this.#store.rotateClientSecret(id, await hashSecret(secret), Date.now());
    if (client === null) throw new DispatcherError('not_found', `no client ${id}`);
    this.#clients.delete(id);
    this.#changed({ kind: 'rotated', client });
    return { client, secret };
  }

  async deleteClient(id: string, orgId?: string): Promise<ClientRecord> {
    const existing = await this.#store.getClient(id);
    if (existing === null || (orgId !== undefined && existing.orgId !== orgId)) throw new DispatcherError('not_found', `no client ${id}`);
    await this.#store.deleteClient(id);
    this.#clients.delete(id);
    this.#changed({ kind: 'deleted', client: existing });
    return existing;
  }

  get tokenLifetimeMs(): number {
    return this.#tokens.lifetimeMs;
  }
}

/** A hash to verify against when the client does not exist, so that both answers take as long. */
const DUMMY_HASH = 'scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

export function clientPrincipal(client: ClientRecord): Principal {
  return { kind: 'client', id: `client:${client.id}`, service: client.service, orgId: client.orgId, grants: parseGrants(client.permissions) };
}

function parseGrants(specs: PermissionSpec[]): Grant[] {
  if (!Array.isArray(specs)) throw new DispatcherError('bad_request', 'permissions: a list of permissions');
  return specs.map((s, i) => {
    try {
      return toGrant(s);
    } catch (err) {
      throw new DispatcherError('bad_request', `permissions/${i}: ${(err as Error).message}`);
    }
  });
}

function checkCovered(by: Principal, grants: Grant[]): void {
  for (const g of grants) {
    if (!by.grants.some((h) => grantCovers(h, g))) {
      throw new DispatcherError('forbidden', `cannot grant ${g.app}:${g.resource}:${g.verb}${g.services ? ` for ${g.services.join(', ')}` : ''}: it is more than the caller holds`);
    }
  }
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * Failed token requests per client id, in this process: past `limit` in a window, the client id is refused
 * (429) until the window ends, before its secret is hashed. Bounded: ended windows are dropped as it grows.
 */
class FailureWindows {
  readonly #counts = new Map<string, { n: number; until: number }>();
  constructor(
    readonly limit: number,
    readonly window: number,
  ) {}

  /** Milliseconds until `id` may try again, or 0 (always 0 with no limit). */
  wait(id: string, now: number): number {
    if (this.limit === 0) return 0;
    const c = this.#counts.get(id);
    if (c === undefined || c.until <= now) return 0;
    return c.n >= this.limit ? c.until - now : 0;
  }

  fail(id: string, now: number): void {
    if (this.limit === 0) return;
    const c = this.#counts.get(id);
    if (c === undefined || c.until <= now) {
      if (this.#counts.size >= 10_000) for (const [k, v] of this.#counts) if (v.until <= now) this.#counts.delete(k);
      this.#counts.set(id, { n: 1, until: now + this.window });
    } else c.n += 1;
  }
}
