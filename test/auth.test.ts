/**
 * Who may do what: every route needs a principal (except the public ones) and its permission; pre-shared
 * keys, client tokens and the trusted identity header; tenants and service filters on every read and
 * write, proven with generated principals and records; the audit log and its verification.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { loadConfig } from '../src/config/load.js';
import { verifyAuditChain, type AuditEntry } from '../src/core/audit.js';
import { Authenticator } from '../src/core/authenticator.js';
import { TokenSigner } from '../src/core/credentials.js';
import { ERROR_CODES } from '../src/core/errors.js';
import { PERMISSIONS } from '../src/core/principal.js';
import { PRESET, type Preset } from '../src/preset.js';
import { EXAMPLE_PERMISSION, EXAMPLE_PROFILE } from './example-profile.js';
import { AUTH, authed, event, startDispatcher, startReceiver, TEST_KEY, waitFor, waitForRun, type Receiver, type TestDispatcher } from './helpers.js';

const CE = 'application/cloudevents+json';
const identity = (doc: unknown) => Buffer.from(JSON.stringify(doc)).toString('base64');
const json = (payload: unknown) => ({ headers: { 'content-type': 'application/json' }, payload: JSON.stringify(payload) });

describe('every route', () => {
  let t: TestDispatcher;
  let raw: FastifyInstance;
  // The example profile (tests only) is on, so that the walk covers a profile's routes too.
  const preset: Preset = [...PRESET, EXAMPLE_PROFILE];

  beforeAll(async () => {
    t = await startDispatcher(
      {
        auth: {
          keyFile: '',
          psk: [
            { service: 'test', key: TEST_KEY },
            // Holds permissions of another application only: authenticated, allowed nothing here.
            { service: 'nobody', key: 'nobodyKey0123456789', permissions: ['elsewhere:*:*'] },
          ],
        },
        profiles: { example: { token: 'exampleToken123' } },
      },
      { preset },
    );
    raw = await t.d.app();
    await raw.ready();
  });
  afterAll(async () => t?.close());

  const PUBLIC = ['GET /healthz', 'GET /readyz', 'GET /openapi.json', 'POST /v1/token', 'GET /example/callbacks/:correlation'];
  /** Routes of a scope that authenticates its own callers, and answers in its own words. */
  const profileRoute = (url: string) => url.startsWith('/example/');

  it('declares a permission or is one of the public routes', () => {
    const table = raw.routeTable;
    expect(table.length).toBeGreaterThan(15);
    const publicRoutes = table.filter((r) => r.public && !r.url.startsWith('/docs')).map((r) => `${r.method} ${r.url}`);
    expect(publicRoutes.sort()).toEqual([...PUBLIC].sort());
    // Each permission is one its entry of the preset documents (the core's, or the profile's own).
    const documented = preset.flatMap((p) => Object.keys(p.permissions ?? {}));
    expect(documented).toEqual(expect.arrayContaining([...Object.keys(PERMISSIONS), EXAMPLE_PERMISSION]));
    for (const r of table.filter((x) => !x.public)) expect(documented, `${r.method} ${r.url}`).toContain(r.permission);
    expect(table.filter((r) => profileRoute(r.url) && !r.public).map((r) => r.permission)).toEqual([EXAMPLE_PERMISSION, EXAMPLE_PERMISSION]);
    // Metrics need a permission unless configured public.
    expect(table.find((r) => r.url === '/metrics')?.permission).toBe('dispatcher:metrics:read');
  });

  it('answers 401 without credentials, 403 without the permission, and lets the permission alone through', async () => {
    const holders = new Map<string, FastifyInstance>();
    const checked: string[] = [];
    for (const r of raw.routeTable) {
      if (r.public) continue;
      const url = r.url.replace(/:id/g, '0190a0a0-0000-7000-8000-000000000000') + (r.url === '/v1/stream' ? '?after=x' : '');
      const method = r.method as 'GET' | 'POST' | 'DELETE';
      if (profileRoute(r.url)) {
        // A profile's scope: its own authentication and words, the core's permission check.
        const none = await raw.inject({ method, url });
        expect([none.statusCode, none.json()], `${method} ${url} without credentials`).toEqual([401, { message: 'Unauthorized' }]);
        const wrong = await raw.inject({ method, url, headers: { 'x-example-token': 'notTheToken' } });
        expect(wrong.statusCode, `${method} ${url} with a wrong token`).toBe(403);
        // A core key authenticates here too, but does not hold the profile's permission.
        const core = await raw.inject({ method, url, headers: AUTH });
        expect(core.statusCode, `${method} ${url} with a core key`).toBe(403);
        const allowed = await raw.inject({ method, url, headers: { 'x-example-token': 'exampleToken123', 'content-type': 'application/json' }, ...(method === 'POST' ? { payload: '{}' } : {}) });
        expect([401, 403], `${method} ${url} with the token: ${allowed.body.slice(0, 200)}`).not.toContain(allowed.statusCode);
        checked.push(`${method} ${url}`);
        continue;
      }
      const none = await raw.inject({ method, url });
      expect(none.statusCode, `${method} ${url} without credentials`).toBe(401);
      expect(none.json().code).toBe('unauthorized');
      expect(none.headers['www-authenticate']).toContain('Bearer');
      const bad = await raw.inject({ method, url, headers: { authorization: 'PSK notAKeyOfAnyone123' } });
      expect(bad.statusCode, `${method} ${url} with a wrong key`).toBe(401);
      const forbidden = await raw.inject({ method, url, headers: { authorization: 'PSK nobodyKey0123456789' } });
      expect(forbidden.statusCode, `${method} ${url} without the permission`).toBe(403);
      expect(forbidden.json()).toMatchObject({ code: 'forbidden', message: expect.stringContaining(r.permission!) });
      // A client holding exactly this permission gets past authorization (whatever the route then says).
      let holder = holders.get(r.permission!);
      if (holder === undefined) {
        const { client, secret } = await t.d.auth.createClient({ name: `only-${r.permission}`, orgId: 'default', permissions: [r.permission!] });
        const { token } = await t.d.auth.issueToken(client.id, secret);
        holder = authed(raw, `Bearer ${token}`);
        holders.set(r.permission!, holder);
      }
      const allowed = await holder.inject({ method, url, ...(method === 'POST' ? json({}) : {}) });
      expect([401, 403], `${method} ${url} with ${r.permission}: ${allowed.body.slice(0, 200)}`).not.toContain(allowed.statusCode);
      checked.push(`${method} ${url}`);
    }
    expect(checked.length).toBeGreaterThan(12);
    expect(checked.filter((c) => profileRoute(c.split(' ')[1]!))).toHaveLength(2);
    // HEAD (made by the framework for every GET) is guarded the same way.
    expect((await raw.inject({ method: 'HEAD', url: '/v1/runs' })).statusCode).toBe(401);
    // Unknown paths do not tell strangers which paths exist.
    expect((await raw.inject({ method: 'GET', url: '/v1/secret-admin' })).statusCode).toBe(401);
    expect((await raw.inject({ method: 'GET', url: '/v1/secret-admin', headers: AUTH })).statusCode).toBe(404);
    // The public routes answer without credentials.
    for (const route of PUBLIC.filter((p) => p.startsWith('GET'))) expect((await raw.inject({ method: 'GET', url: route.slice(4) })).statusCode).toBe(200);
    expect((await raw.inject({ method: 'GET', url: '/docs/' })).statusCode).toBe(200);
  });

  it('makes a route without a declaration stop the app from starting', async () => {
    const s = await startDispatcher({}, { start: false });
    try {
      const app = await s.d.app();
      expect(() => app.get('/v1/forgotten', async () => 'open')).toThrow(/declares neither a permission nor public/);
    } finally {
      await s.close();
    }
  });

  it('serves /metrics without credentials only when configured so', async () => {
    const s = await startDispatcher({ auth: { keyFile: '', psk: [{ service: 'test', key: TEST_KEY }], publicMetrics: true } }, { start: false });
    try {
      expect((await (await s.d.app()).inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(200);
      expect((await raw.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(401);
      expect((await raw.inject({ method: 'GET', url: '/metrics', headers: AUTH })).statusCode).toBe(200);
    } finally {
      await s.close();
    }
  });
});

describe('pre-shared keys', () => {
  it('come from PSK_AUTH_<SERVICE> and the configuration; what a principal sends is created under its service', async () => {
    const config = await loadConfig({
      env: { PSK_AUTH_REMEDIATIONS: 'xwKhCUzgJ8', PSK_AUTH_TEST02: '9yh9WuXWDj' },
      overrides: { log: { level: 'silent' }, store: { url: 'sqlite::memory:' }, auth: { keyFile: '', psk: [{ service: 'billing', key: 'billingKey12345', orgId: 'org-b' }] } } as never,
    });
    expect(config.auth.psk.map((p) => `${p.service}@${p.orgId} from ${p.from}`).sort()).toEqual([
      'billing@org-b from flags',
      'remediations@default from PSK_AUTH_REMEDIATIONS',
      'test02@default from PSK_AUTH_TEST02',
    ]);
    const { createDispatcher } = await import('../src/dispatcher.js');
    const d = await createDispatcher({ config, logger: pino({ level: 'silent' }) });
    try {
      const app = await d.app();
      const sent = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': CE, authorization: 'PSK xwKhCUzgJ8' }, payload: JSON.stringify(event()) });
      expect(sent.statusCode).toBe(202);
      const stored = (await app.inject({ method: 'GET', url: `/v1/events/${sent.json().events[0].id}`, headers: { authorization: 'PSK xwKhCUzgJ8' } })).json();
      expect(stored).toMatchObject({ service: 'remediations', org_id: 'default' });
      expect(stored.runs[0]).toMatchObject({ service: 'remediations', org_id: 'default' });
      // Another tenant's key does not see it.
      expect((await app.inject({ method: 'GET', url: `/v1/events/${sent.json().events[0].id}`, headers: { authorization: 'PSK billingKey12345' } })).statusCode).toBe(404);
      // The playbook dispatcher's key format: letters and digits only.
      const odd = await app.inject({ method: 'GET', url: '/v1/runs', headers: { authorization: 'PSK not-a-key!' } });
      expect(odd.json()).toEqual({ code: 'unauthorized', message: 'unsupported authentication key format' });
      expect((await app.inject({ method: 'GET', url: '/v1/runs', headers: { authorization: 'PSK xwKhCUzgJ9' } })).json().message).toBe('unknown pre-shared key');
    } finally {
      await d.close();
    }
  });

  it('refuse a configuration that gives two services one key, or a key that cannot be sent', async () => {
    await expect(loadConfig({ env: { PSK_AUTH_A: 'sameKey12345', PSK_AUTH_B: 'sameKey12345' } })).rejects.toThrow(/same pre-shared key is given for a and for b/);
    await expect(loadConfig({ env: { PSK_AUTH_A: 'has space' } })).rejects.toThrow(/PSK_AUTH_A: a pre-shared key is letters and digits/);
    await expect(loadConfig({ env: {}, overrides: { auth: { defaults: { permissions: ['runs:read'] } } } as never })).rejects.toThrow(/auth\.defaults\.permissions/);
  });
});

describe('client credentials and tokens', () => {
  let t: TestDispatcher;
  let app: FastifyInstance;
  let raw: FastifyInstance;

  beforeAll(async () => {
    t = await startDispatcher({ auth: { keyFile: '', psk: [{ service: 'test', key: TEST_KEY }], tokens: { secrets: ['first-signing-secret-0123456789abcdef'], lifetime: '10m' } } });
    raw = await t.d.app();
    app = authed(raw);
  });
  afterAll(async () => t?.close());

  async function makeClient(permissions: unknown[] = ['dispatcher:runs:read']) {
    const res = await app.inject({ method: 'POST', url: '/v1/clients', ...json({ name: 'reader', permissions }) });
    expect(res.statusCode).toBe(201);
    return res.json() as { id: string; secret: string };
  }

  it('shows a secret once, keeps only its scrypt hash, and exchanges it for a token by JSON, form or Basic', async () => {
    const { id, secret } = await makeClient();
    expect(secret).toMatch(/^[0-9A-Za-z]{43}$/);
    const stored = await t.d.store.access.getClient(id);
    expect(stored!.secretHash).toMatch(/^scrypt\$32768\$8\$1\$/);
    expect(JSON.stringify(stored)).not.toContain(secret);
    const listed = (await app.inject({ method: 'GET', url: '/v1/clients' })).json().data.find((c: { id: string }) => c.id === id);
    expect(listed).toMatchObject({ id, name: 'reader', permissions: ['dispatcher:runs:read'] });
    expect(JSON.stringify(listed)).not.toMatch(/secret_hash|scrypt/);

    const byJson = await raw.inject({ method: 'POST', url: '/v1/token', ...json({ client_id: id, client_secret: secret }) });
    const byForm = await raw.inject({ method: 'POST', url: '/v1/token', headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: `grant_type=client_credentials&client_id=${id}&client_secret=${secret}` });
    const byBasic = await raw.inject({ method: 'POST', url: '/v1/token', headers: { authorization: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}` } });
    for (const res of [byJson, byForm, byBasic]) {
      expect(res.statusCode).toBe(200);
      expect(res.headers['cache-control']).toBe('no-store');
      expect(res.json()).toMatchObject({ token_type: 'Bearer', expires_in: 600 });
      const use = await raw.inject({ method: 'GET', url: '/v1/runs', headers: { authorization: `Bearer ${res.json().access_token}` } });
      expect(use.statusCode).toBe(200);
    }
    const token = byJson.json().access_token;
    // Its permissions and nothing more.
    expect((await raw.inject({ method: 'GET', url: '/v1/dead-letters', headers: { authorization: `Bearer ${token}` } })).statusCode).toBe(403);
    // Wrong secret, unknown client: the same answer.
    const wrong = await raw.inject({ method: 'POST', url: '/v1/token', ...json({ client_id: id, client_secret: secret.slice(1) }) });
    const unknown = await raw.inject({ method: 'POST', url: '/v1/token', ...json({ client_id: 'nobody', client_secret: secret }) });
    expect(wrong.statusCode).toBe(401);
    expect(unknown.json()).toEqual(wrong.json());
    expect((await raw.inject({ method: 'POST', url: '/v1/token', ...json({ client_id: id, client_secret: secret, grant_type: 'password' }) })).statusCode).toBe(400);
  });

  it('POST /v1/token has limits of its own: failed requests per client id, and requests per address', async () => {
    const { id, secret } = await makeClient();
    const ask = (clientId: string, ip: string, clientSecret = 'wrong-guess') => raw.inject({ method: 'POST', url: '/v1/token', remoteAddress: ip, ...json({ client_id: clientId, client_secret: clientSecret }) });
    // Per client id (default 10 failures a minute, from anywhere): the eleventh guess is refused before its secret is hashed.
    for (let i = 0; i < 10; i++) expect((await ask(id, `10.1.0.${i}`)).statusCode).toBe(401);
    const limited = await ask(id, '10.1.0.99');
    expect(limited.statusCode).toBe(429);
    expect(limited.json()).toMatchObject({ code: 'rate_limited' });
    expect(limited.json().message).toContain(`too many failed token requests for client ${id}`);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    // A guess that happens to be right gains nothing until the window ends.
    expect((await ask(id, '10.1.0.98', secret)).statusCode).toBe(429);
    // Another client is not held back by it.
    const other = await makeClient();
    expect((await ask(other.id, '10.1.0.97', other.secret)).statusCode).toBe(200);
    // Per address (default 30 a minute), whatever the client ids: a flood from one address is cut off.
    const statuses: number[] = [];
    for (let i = 0; i < 31; i++) statuses.push((await ask(`flood-${i}`, '10.9.9.9')).statusCode);
    expect(statuses.slice(0, 30).every((st) => st === 401)).toBe(true);
    expect(statuses[30]).toBe(429);
    expect((await ask(other.id, '10.9.9.9', other.secret)).statusCode).toBe(429);
    expect((await ask(other.id, '10.9.9.8', other.secret)).statusCode).toBe(200);
  });

  it('revokes tokens when the secret rotates or the client is deleted', async () => {
    const { id, secret } = await makeClient();
    const token = (await raw.inject({ method: 'POST', url: '/v1/token', ...json({ client_id: id, client_secret: secret }) })).json().access_token;
    const rotated = await app.inject({ method: 'POST', url: `/v1/clients/${id}/rotate-secret` });
    expect(rotated.statusCode).toBe(200);
    expect(rotated.json().secret_version).toBe(2);
    const old = await raw.inject({ method: 'GET', url: '/v1/runs', headers: { authorization: `Bearer ${token}` } });
    expect(old.json()).toEqual({ code: 'unauthorized', message: "the token was issued before the client's secret was rotated" });
    expect((await raw.inject({ method: 'POST', url: '/v1/token', ...json({ client_id: id, client_secret: secret }) })).statusCode).toBe(401);
    const fresh = (await raw.inject({ method: 'POST', url: '/v1/token', ...json({ client_id: id, client_secret: rotated.json().secret }) })).json().access_token;
    expect((await raw.inject({ method: 'GET', url: '/v1/runs', headers: { authorization: `Bearer ${fresh}` } })).statusCode).toBe(200);
    expect((await app.inject({ method: 'DELETE', url: `/v1/clients/${id}` })).statusCode).toBe(204);
    expect((await raw.inject({ method: 'GET', url: '/v1/runs', headers: { authorization: `Bearer ${fresh}` } })).json().message).toBe('the client of this token no longer exists');
  });

  it('refuses expired, forged and unsigned tokens; a new signing secret overlaps with the old one', async () => {
    const { id, secret } = await makeClient();
    const oldToken = (await raw.inject({ method: 'POST', url: '/v1/token', ...json({ client_id: id, client_secret: secret }) })).json().access_token as string;
    const client = (await t.d.store.access.getClient(id))!;
    // Issued two hours ago with a 10-minute lifetime.
    const expired = await new TokenSigner(['first-signing-secret-0123456789abcdef'], 600_000).sign({ sub: id, ver: client.secretVersion }, Date.now() - 7_200_000);
    expect((await raw.inject({ method: 'GET', url: '/v1/runs', headers: { authorization: `Bearer ${expired.token}` } })).json().message).toBe('the token has expired');
    const forged = await new TokenSigner(['someone-elses-secret-0123456789abcdef'], 600_000).sign({ sub: id, ver: client.secretVersion });
    expect((await raw.inject({ method: 'GET', url: '/v1/runs', headers: { authorization: `Bearer ${forged.token}` } })).statusCode).toBe(401);
    const [h, p] = oldToken.split('.');
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${p}.`;
    expect((await raw.inject({ method: 'GET', url: '/v1/runs', headers: { authorization: `Bearer ${none}` } })).statusCode).toBe(401);
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), sub: 'another' })).toString('base64url')}.${oldToken.split('.')[2]}`;
    expect((await raw.inject({ method: 'GET', url: '/v1/runs', headers: { authorization: `Bearer ${tampered}` } })).statusCode).toBe(401);

    // Rotation of the signing secret: a process with [new, old] accepts old tokens and signs with the new;
    // once the old one is dropped, old tokens stop working.
    const base = (await loadConfig({ env: {}, overrides: { auth: { keyFile: '' } } as never })).auth;
    const overlap = new Authenticator({ ...base, tokens: { secrets: ['second-signing-secret-0123456789abcdef', 'first-signing-secret-0123456789abcdef'], lifetime: 600_000, rateLimit: base.tokens.rateLimit } }, t.d.store.access, pino({ level: 'silent' }));
    const after = new Authenticator({ ...base, tokens: { secrets: ['second-signing-secret-0123456789abcdef'], lifetime: 600_000, rateLimit: base.tokens.rateLimit } }, t.d.store.access, pino({ level: 'silent' }));
    await overlap.init();
    await after.init();
    expect((await overlap.bearer(oldToken)).id).toBe(`client:${id}`);
    const newToken = (await overlap.issueToken(id, secret)).token;
    expect((await after.bearer(newToken)).id).toBe(`client:${id}`);
    await expect(after.bearer(oldToken)).rejects.toThrow(/signed with a key that is no longer accepted/);
  });

  it('lets no principal hand out more than it holds', async () => {
    const { id, secret } = await makeClient(['dispatcher:clients:write', { permission: 'dispatcher:runs:read', service: ['a', 'b'] }]);
    const token = (await raw.inject({ method: 'POST', url: '/v1/token', ...json({ client_id: id, client_secret: secret }) })).json().access_token;
    const as = authed(raw, `Bearer ${token}`);
    const more = await as.inject({ method: 'POST', url: '/v1/clients', ...json({ name: 'x', permissions: ['dispatcher:runs:write'] }) });
    expect(more.statusCode).toBe(403);
    const wider = await as.inject({ method: 'POST', url: '/v1/clients', ...json({ name: 'x', permissions: [{ permission: 'dispatcher:runs:read', service: ['a', 'c'] }] }) });
    expect(wider.statusCode).toBe(403);
    const within = await as.inject({ method: 'POST', url: '/v1/clients', ...json({ name: 'x', permissions: [{ permission: 'dispatcher:runs:read', service: 'b' }] }) });
    expect(within.statusCode).toBe(201);
    expect(within.json().permissions).toEqual([{ permission: 'dispatcher:runs:read', service: ['b'] }]);
    const invalid = await app.inject({ method: 'POST', url: '/v1/clients', ...json({ name: 'x', permissions: ['runs:read'] }) });
    expect(invalid.json()).toMatchObject({ code: 'bad_request' });
  });
});

describe('trusted identity header', () => {
  it('is refused unless turned on; names the tenant; refuses other identity types', async () => {
    const off = await startDispatcher({}, { start: false });
    const on = await startDispatcher({ auth: { keyFile: '', psk: [{ service: 'test', key: TEST_KEY }], identityHeader: { enabled: true, permissions: ['dispatcher:runs:read', 'dispatcher:events:*'] } } }, { start: false });
    try {
      const user = identity({ identity: { org_id: '5318290', type: 'User', user: { username: 'jdoe' } } });
      expect((await (await off.d.app()).inject({ method: 'GET', url: '/v1/runs', headers: { 'x-rh-identity': user } })).statusCode).toBe(401);
      const app = await on.d.app();
      expect((await app.inject({ method: 'GET', url: '/v1/runs', headers: { 'x-rh-identity': user } })).statusCode).toBe(200);
      const sent = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'x-rh-identity': user, 'content-type': CE }, payload: JSON.stringify(event()) });
      expect(sent.statusCode).toBe(202);
      const record = await on.d.store.getEvent(sent.json().events[0].id);
      expect(record).toMatchObject({ orgId: '5318290', service: 'jdoe' });
      // The test key's tenant (default) does not see it; a user of the same tenant does.
      expect((await authed(app).inject({ method: 'GET', url: `/v1/events/${record!.key}` })).statusCode).toBe(404);
      const colleague = identity({ identity: { internal: { org_id: '5318290' }, type: 'ServiceAccount', service_account: { username: 'bot' } } });
      expect((await app.inject({ method: 'GET', url: `/v1/events/${record!.key}`, headers: { 'x-rh-identity': colleague } })).statusCode).toBe(200);
      const system = await app.inject({ method: 'GET', url: '/v1/runs', headers: { 'x-rh-identity': identity({ identity: { org_id: '1', type: 'System' } }) } });
      expect(system.statusCode).toBe(403);
      expect(system.json().message).toBe('unauthorized principal type: system');
      expect((await app.inject({ method: 'GET', url: '/v1/runs', headers: { 'x-rh-identity': 'not base64 json' } })).statusCode).toBe(401);
      expect((await app.inject({ method: 'GET', url: '/v1/runs', headers: { 'x-rh-identity': identity({ identity: { type: 'User' } }) } })).statusCode).toBe(401);
      expect((await app.inject({ method: 'GET', url: '/v1/dead-letters', headers: { 'x-rh-identity': user } })).statusCode).toBe(403);
    } finally {
      await off.close();
      await on.close();
    }
  });
});

describe('tenants and service filters', () => {
  const ORGS = ['org-1', 'org-2'] as const;
  const SERVICES = ['alpha', 'beta', 'gamma'] as const;
  const RESOURCES = ['runs', 'events', 'dead-letters', 'audit'] as const;
  let t: TestDispatcher;
  let raw: FastifyInstance;
  const records: { runs: Rec[]; events: Rec[]; deadLetters: Rec[] } = { runs: [], events: [], deadLetters: [] };
  interface Rec {
    id: string;
    org: string;
    service: string;
  }

  beforeAll(async () => {
    // One key per (tenant, service): each creates events (with their runs) and a dead letter under its name.
    const psk = ORGS.flatMap((org, i) => SERVICES.map((service, j) => ({ service, orgId: org, key: `key${i}${j}abcdefgh` })));
    t = await startDispatcher({ auth: { keyFile: '', psk } });
    raw = await t.d.app();
    for (const p of psk) {
      for (let n = 0; n < 2; n++) {
        const res = await raw.inject({ method: 'POST', url: '/v1/events', headers: { authorization: `PSK ${p.key}`, 'content-type': CE }, payload: JSON.stringify(event()) });
        records.events.push({ id: res.json().events[0].id, org: p.orgId, service: p.service });
        records.runs.push({ id: res.json().events[0].runs[0], org: p.orgId, service: p.service });
      }
      await raw.inject({ method: 'POST', url: '/v1/events', headers: { authorization: `PSK ${p.key}`, 'content-type': CE }, payload: `{"broken": "${p.key}"` });
    }
    for (const dl of (await t.d.store.listDeadLetters({ limit: 100, offset: 0 })).items) records.deadLetters.push({ id: dl.id, org: dl.orgId, service: dl.service });
    expect(records.deadLetters).toHaveLength(6);
    for (const r of records.runs) await waitForRun(t.d, r.id, ['success']);
  });
  afterAll(async () => t?.close());

  /** The model: which of `recs` a principal reaches with resource:verb (written independently of the code). */
  function expected(grants: Array<{ resource: string; verb: string; services?: string[] }>, org: string, resource: string, verb: string, recs: Rec[]): Set<string> | null {
    const matching = grants.filter((g) => (g.resource === '*' || g.resource === resource) && (g.verb === '*' || g.verb === verb));
    if (matching.length === 0) return null;
    const all = matching.some((g) => g.services === undefined);
    const services = new Set(matching.flatMap((g) => g.services ?? []));
    return new Set(recs.filter((r) => r.org === org && (all || services.has(r.service))).map((r) => r.id));
  }

  const grant = fc.record(
    {
      resource: fc.constantFrom('*', ...RESOURCES),
      verb: fc.constantFrom('*', 'read', 'write'),
      services: fc.option(fc.uniqueArray(fc.constantFrom(...SERVICES), { minLength: 1, maxLength: 2 }), { nil: undefined }),
    },
    { requiredKeys: ['resource', 'verb'] },
  );

  it('lets generated principals see and act on exactly their records, nothing of another tenant or service', async () => {
    let checks = 0;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...ORGS), fc.array(grant, { minLength: 0, maxLength: 3 }), async (org, grants) => {
        const permissions = grants.map((g) => (g.services === undefined ? `dispatcher:${g.resource}:${g.verb}` : { permission: `dispatcher:${g.resource}:${g.verb}`, service: g.services }));
        const { client, secret } = await t.d.auth.createClient({ name: 'generated', orgId: org, permissions });
        const { token } = await t.d.auth.issueToken(client.id, secret);
        const as = authed(raw, `Bearer ${token}`);
        const lists = [
          ['runs', '/v1/runs?limit=1000', records.runs],
          ['events', '/v1/events?limit=1000', records.events],
          ['dead-letters', '/v1/dead-letters?limit=1000', records.deadLetters],
        ] as const;
        for (const [resource, url, recs] of lists) {
          const want = expected(grants, org, resource, 'read', recs);
          const res = await as.inject({ method: 'GET', url });
          if (want === null) {
            expect(res.statusCode).toBe(403);
          } else {
            const got = new Set((res.json().data as Array<{ id: string }>).map((x) => x.id).filter((id) => recs.some((r) => r.id === id)));
            expect([...got].sort(), `${resource} for ${JSON.stringify({ org, grants })}`).toEqual([...want].sort());
          }
          // One by one: visible ones answer 200, the others 404 (or 403 without the permission at all).
          for (const r of recs) {
            const one = await as.inject({ method: 'GET', url: `/v1/${resource}/${r.id}` });
            expect(one.statusCode, `${resource}/${r.id} (${r.org}/${r.service}) for ${JSON.stringify({ org, grants })}`).toBe(want === null ? 403 : want.has(r.id) ? 200 : 404);
            checks += 1;
          }
        }
        // Writes: a run that succeeded cannot be canceled or retried (409) when reachable; 404 when not.
        const writable = expected(grants, org, 'runs', 'write', records.runs);
        for (const r of records.runs.filter((_, i) => i % 3 === 0)) {
          const res = await as.inject({ method: 'POST', url: `/v1/runs/${r.id}/cancel` });
          expect(res.statusCode).toBe(writable === null ? 403 : writable.has(r.id) ? 409 : 404);
        }
        // Replay: an intake dead letter of broken JSON fails again (400) when reachable; 404 when not.
        const dlWritable = expected(grants, org, 'dead-letters', 'write', records.deadLetters);
        for (const r of records.deadLetters) {
          const res = await as.inject({ method: 'POST', url: `/v1/dead-letters/${r.id}/replay` });
          expect(res.statusCode).toBe(dlWritable === null ? 403 : dlWritable.has(r.id) ? 400 : 404);
        }
        // The audit log: only entries of the principal's tenant (and services).
        const audit = await as.inject({ method: 'GET', url: '/v1/audit?limit=1000' });
        const auditScope = expected(grants, org, 'audit', 'read', []);
        if (auditScope === null) expect(audit.statusCode).toBe(403);
        else for (const e of audit.json().data as Array<{ org_id: string }>) expect(e.org_id).toBe(org);
      }),
      { numRuns: 25 },
    );
    expect(checks).toBe(25 * 30);
  }, 120_000);

  it('streams only the run events of records a principal may see', async () => {
    const address = await (async () => {
      await raw.listen({ port: 0, host: '127.0.0.1' });
      const a = raw.server.address() as { port: number };
      return `http://127.0.0.1:${a.port}`;
    })();
    const { client, secret } = await t.d.auth.createClient({ name: 'beta-reader', orgId: 'org-1', permissions: [{ permission: 'dispatcher:runs:read', service: 'beta' }] });
    const { token } = await t.d.auth.issueToken(client.id, secret);
    const res = await fetch(`${address}/v1/stream?after=0`, { headers: { authorization: `Bearer ${token}` } });
    const reader = res.body!.getReader();
    let text = '';
    const until = Date.now() + 5_000;
    // The catch-up from the outbox comes at once; read until it is in, then stop.
    while (Date.now() < until && (text.match(/^id: /gm) ?? []).length < 4) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    const runs = text.split('\n\n').filter((m) => m.startsWith('id:')).map((m) => JSON.parse(m.split('\ndata: ')[1]!).run);
    expect(runs.length).toBeGreaterThanOrEqual(4);
    for (const r of runs) expect({ org: r.org_id, service: r.service }).toEqual({ org: 'org-1', service: 'beta' });
  });
});

describe('audit log', () => {
  let t: TestDispatcher;
  let app: FastifyInstance;
  let receiver: Receiver;

  beforeAll(async () => {
    receiver = await startReceiver((_req, _body, res) => {
      res.end('ok');
    });
    t = await startDispatcher({
      actions: { http: { allow: ['127.0.0.1/32'] } },
      routes: [
        { name: 'example', match: { type: 'example.*' }, actions: [{ noop: {} }] },
        { name: 'hook', match: { type: 'hook.fired' }, actions: [{ http: { url: `${receiver.url}/x` } }] },
      ],
    });
    app = authed(await t.d.app());
  });
  afterAll(async () => {
    await t?.close();
    await receiver?.close();
  });

  it('records who did what to which records, and every side effect of an action', async () => {
    const sent = await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': CE }, payload: JSON.stringify(event({ type: 'hook.fired' })) });
    const eventId = sent.json().events[0].id;
    const runId = sent.json().events[0].runs[0];
    await waitForRun(t.d, runId, ['success']);
    await app.inject({ method: 'POST', url: `/v1/runs/${runId}/cancel` }); // refused: it ended
    await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': CE }, payload: '{nope' });
    const entries = await waitFor(
      async () => (await app.inject({ method: 'GET', url: '/v1/audit?sort=seq&limit=100' })).json().data as Array<Record<string, any>>,
      (list) => list.some((e) => e.action === 'action.http'),
      5_000,
      'the action.http entry',
    );
    expect(entries.map((e) => [e.action, e.outcome])).toEqual([
      ['events.create', 'ok'],
      ['action.http', 'ok'],
      ['runs.cancel', 'invalid_state'],
      ['events.create', 'invalid_json'],
    ]);
    expect(entries[0]).toMatchObject({ actor: 'psk:test', actor_kind: 'psk', service: 'test', org_id: 'default', records: [eventId], details: { accepted: 1, status: 202 } });
    expect(entries[1]).toMatchObject({ actor: 'route:hook', actor_kind: 'action', service: 'test', records: [runId, eventId], details: { http_status: 200, attempt: 1 } });
    expect(entries[2]).toMatchObject({ records: [runId], details: { status: 409 } });
    // Filters.
    const byRecord = (await app.inject({ method: 'GET', url: `/v1/audit?filter[record]=${runId}` })).json();
    expect(byRecord.data.map((e: { action: string }) => e.action).sort()).toEqual(['action.http', 'runs.cancel']);
    const byAction = (await app.inject({ method: 'GET', url: '/v1/audit?filter[action]=events.create&filter[outcome]=ok' })).json();
    expect(byAction.meta.total).toBe(1);
    // Reads are not in it; nor are refusals of callers who named no one.
    await app.inject({ method: 'GET', url: '/v1/runs' });
    await (await t.d.app()).inject({ method: 'POST', url: `/v1/runs/${runId}/retry` });
    expect((await app.inject({ method: 'GET', url: '/v1/audit' })).json().meta.total).toBe(4);
  });

  it('is chained, refuses changes, survives retention, and verification names what was changed, removed or reordered', async () => {
    for (let i = 0; i < 6; i++) await app.inject({ method: 'POST', url: '/v1/events', headers: { 'content-type': CE }, payload: JSON.stringify(event()) });
    const store = t.d.store;
    // Retention deletes finished records, never the audit log.
    const before = (await store.access.listAudit({ limit: 1, offset: 0 })).total;
    await store.prune({ runsBefore: Date.now() + 1, eventsBefore: Date.now() + 1, runEventsBefore: Date.now() + 1, deadLettersBefore: Date.now() + 1, limit: 1000 });
    expect((await store.access.listAudit({ limit: 1, offset: 0 })).total).toBe(before);

    const { default: Database } = await import('better-sqlite3');
    const db = new Database(t.config.store.url.slice('sqlite:'.length));
    try {
      expect(() => db.prepare("UPDATE audit_log SET outcome = 'ok' WHERE seq = 1").run()).toThrow(/append-only/);
      expect(() => db.prepare('DELETE FROM audit_log WHERE seq = 1').run()).toThrow(/append-only/);
      const verify = async () => {
        const all = (await store.access.readAudit(0, 10_000)) as AuditEntry[];
        return verifyAuditChain(async function* () {
          yield* all;
        }, await store.access.auditHead());
      };
      const intact = await verify();
      expect(intact.problems).toEqual([]);
      expect(intact.checked).toBeGreaterThanOrEqual(10);

      // Someone with the database file drops the guards and edits the log.
      db.exec('DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete');
      db.prepare("UPDATE audit_log SET actor = 'psk:someone-else' WHERE seq = 3").run();
      expect((await verify()).problems).toEqual([{ seq: 3, kind: 'modified', message: 'entry 3 was changed: its content does not give its hash' }]);
      db.prepare("UPDATE audit_log SET actor = 'psk:test' WHERE seq = 3").run();
      expect((await verify()).problems).toEqual([]);

      db.prepare('DELETE FROM audit_log WHERE seq = 5').run();
      expect((await verify()).problems).toEqual([{ seq: 6, kind: 'removed', message: 'entry 5 was removed' }]);

      // Swap entries 7 and 8 (their places in the log, not their content).
      db.exec('UPDATE audit_log SET seq = -7 WHERE seq = 7; UPDATE audit_log SET seq = 7 WHERE seq = 8; UPDATE audit_log SET seq = 8 WHERE seq = -7');
      const reordered = (await verify()).problems.filter((p) => p.seq !== 6);
      expect(reordered.length).toBeGreaterThan(0);
      expect(reordered.every((p) => p.kind === 'reordered')).toBe(true);
      expect(reordered[0]).toMatchObject({ seq: 7, message: expect.stringContaining('written after entry 8') });

      // The last entry removed: the head kept beside the log gives it away.
      const last = (await store.access.auditHead())!.seq;
      db.prepare('DELETE FROM audit_log WHERE seq = ?').run(last);
      expect((await verify()).problems).toContainEqual({ seq: last, kind: 'removed', message: `the log ends at entry ${last - 1}, but entries up to ${last} were written` });
    } finally {
      db.close();
    }
  });
});

it('documents every permission, as the code describes it, in docs/auth.md', async () => {
  const { readFileSync } = await import('node:fs');
  const doc = readFileSync(new URL('../docs/auth.md', import.meta.url), 'utf8');
  for (const [permission, meaning] of Object.entries(PERMISSIONS)) expect(doc).toContain(`| \`${permission}\` | ${meaning} |`);
  for (const code of ['unauthorized', 'forbidden', 'rate_limited']) expect(Object.keys(ERROR_CODES)).toContain(code);
});
