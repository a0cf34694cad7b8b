/**
 * The profile's HTTP routes, at the original's paths, each group in a scope of its own with the original's
 * authentication and error answers:
 *
 * - internal API (`/internal/...`): a pre-shared key, `Authorization: PSK <key>` (`PSK_AUTH_<SERVICE>`);
 *   401 `{"message":"Unauthorized"}` without one, 401 `Unsupported authentication key format`, 403 `Forbidden`;
 *   `GET /internal/v2/run_hosts` also needs the identity header, and `GET /internal/version` nothing;
 * - public API (`/api/playbook-dispatcher/v1/...`): the identity header (`x-rh-identity`) of a user or a
 *   service account, and `playbook-dispatcher:run:read` from the configuration or an RBAC service;
 * - result uploads (`POST /api/ingress/v1/upload`): the identity header of any type (a host's `System`
 *   identity included), or a core credential (the recipient's own, from the built-in connector).
 *
 * Every answer echoes `x-rh-insights-request-id` and carries `x-rh-playbook-dispatcher-internal-request-id`.
 */

import { randomUUID } from 'node:crypto';
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { useAuthentication } from '../../api/auth.js';
import { answerErrors, type ErrorAnswer } from '../../api/errors.js';
import { NIL_UUID, principalHash, SATELLITE_DIRECTIVE } from '../../actions/playbook/index.js';
import type { Connector } from '../../core/connector.js';
import { DispatcherError } from '../../core/errors.js';
import type { InboundMessage } from '../../core/intake.js';
import { grantPermits, parsePermission, scopeFor, toGrant, type Grant, type PermissionSpec, type Principal, type Scope } from '../../core/principal.js';
import type { ProfileContext } from '../../core/profile.js';
import type { Services } from '../../core/services.js';
import type { RunStatus } from '../../core/types.js';
import type { HostQuery, RunQuery } from '../../store/types.js';
import type { PlaybookDispatcherConfig } from './config.js';
import {
  CANCEL_SCHEMA,
  checkBody,
  checkSatellite,
  DISPATCH_V1_SCHEMA,
  DISPATCH_V2_SCHEMA,
  STATUS_SCHEMA,
  withDefaults,
  type CancelItem,
  type RawDispatchItem,
  type StatusItem,
  type V1Item,
} from './dispatch.js';
import { applyUpload } from './ingest.js';
import { hostView, playbookResult, runView, type PlaybookStatus } from './model.js';
import { links, parseHostsQuery, parseRunsQuery, projectHost, projectRun } from './query.js';
import { parseUpload, type UploadKind, type UploadLimits } from './upload.js';

export const PROFILE = 'playbook-dispatcher';
/** What the public API's routes need. */
export const READ_PERMISSION = 'playbook-dispatcher:run:read';
/** What the internal API's routes need: every valid pre-shared key holds it, as in the original. */
export const INTERNAL_PERMISSION = 'playbook-dispatcher:internal:write';
/** What a result upload needs. */
export const UPLOAD_PERMISSION = 'playbook-dispatcher:upload:write';

export const PUBLIC_BASE = '/api/playbook-dispatcher/v1';
export const UPLOAD_PATH = '/api/ingress/v1/upload';
/** The event type of a dispatch item, which the profile's route takes. */
export const DISPATCH_TYPE = 'playbook-dispatcher.dispatch';
export const DISPATCH_DECODER = `${PROFILE}.dispatch`;

const INTERNAL_GRANT: Grant = { app: 'playbook-dispatcher', resource: 'internal', verb: 'write' };
const UPLOAD_GRANT: Grant = { app: 'playbook-dispatcher', resource: 'upload', verb: 'write' };

/** How long an upload whose run is not found yet is looked for again (its dispatch may still be committing). */
const OVERTAKE_MS = 3000;

/** The content types of result uploads → what they hold (the original's ingress mapping). */
const UPLOAD_TYPES = /^application\/vnd\.redhat\.(playbook|playbook-sat)\.(v1|v3)\+(jsonl|gzip|xz)$/;

/** An error answered in the original's own words (status, body, content type). */
const ANSWER = Symbol('answer');
type Answered = DispatcherError & { [ANSWER]?: ErrorAnswer };

function answered(error: DispatcherError, answer: ErrorAnswer): DispatcherError {
  (error as Answered)[ANSWER] = answer;
  return error;
}

/** `{"message": …}` with the code's status, or the answer the error carries. */
function messageAnswers(scope: FastifyInstance, services: Services): void {
  answerErrors(scope, {
    format: (err, status) => {
      const own = (err as Answered)[ANSWER];
      if (own !== undefined) return own;
      if (status === 401) return { body: { message: 'Unauthorized' } };
      if (status === 403) return { body: { message: 'Forbidden' } };
      if (status >= 500) return { body: { message: 'Internal Server Error' } };
      return { body: { message: err.message } };
    },
    reject: (message, error) => services.reject(message, error),
  });
}

function requestIds(scope: FastifyInstance): void {
  scope.addHook('onRequest', async (request, reply) => {
    const given = request.headers['x-rh-insights-request-id'];
    if (typeof given === 'string' && given !== '') reply.header('x-rh-insights-request-id', given);
    reply.header('x-rh-playbook-dispatcher-internal-request-id', randomUUID());
  });
}

function body(request: FastifyRequest): Buffer {
  return Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
}

/** The raw query string of a request (after `?`), as the original reads it. */
function rawQuery(request: FastifyRequest): string {
  const i = request.url.indexOf('?');
  return i === -1 ? '' : request.url.slice(i + 1);
}

export function registerRoutes(app: FastifyInstance, context: ProfileContext): void {
  const config = context.config as PlaybookDispatcherConfig;
  const { services } = context;
  requestIds(app);
  const identityHeader = 'x-rh-identity';

  // `GET /internal/version`: no authentication.
  app.get('/internal/version', { config: { public: true }, schema: { hide: true } }, async (_request, reply) => reply.type('application/json').send(JSON.stringify(config.version)));

  void app.register(async (scope) => internalApi(scope, config, services, identityHeader));
  void app.register(async (scope) => publicApi(scope, config, services, identityHeader));
  void app.register(async (scope) => uploads(scope, config, services, identityHeader));
}

// ------------------------------------------------------------------------------------------- internal

function pskPrincipal(services: Services, request: FastifyRequest): Principal {
  const header = request.headers.authorization;
  if (header === undefined || header === '') throw new DispatcherError('unauthorized', 'Unauthorized');
  const match = /^PSK\s+([0-9a-zA-Z]+)$/.exec(header);
  if (match === null) throw answered(new DispatcherError('unauthorized', 'Unsupported authentication key format'), { body: { message: 'Unsupported authentication key format' } });
  let principal: Principal;
  try {
    principal = services.auth.psk(match[1]!);
  } catch {
    throw new DispatcherError('forbidden', 'Forbidden');
  }
  return { ...principal, grants: [...principal.grants, INTERNAL_GRANT] };
}

function internalApi(scope: FastifyInstance, config: PlaybookDispatcherConfig, services: Services, identityHeader: string): void {
  messageAnswers(scope, services);
  useAuthentication(scope, (request) => {
    const principal = pskPrincipal(services, request);
    if (request.routeOptions.url !== '/internal/v2/run_hosts') return principal;
    // The internal run hosts need the identity header too: its tenant is the one listed.
    const identity = request.headers[identityHeader];
    if (typeof identity !== 'string') throw answered(new DispatcherError('bad_request', 'missing identity header'), missingIdentity(identityHeader));
    const who = identityPrincipal(services, identity, null);
    return { ...principal, orgId: who.orgId };
  });
  const defaults = { webConsoleUrl: config.webConsoleUrl };
  const connector = (): Connector => services.connector;

  const dispatchItem = async (request: FastifyRequest, principal: Principal, item: RawDispatchItem): Promise<Record<string, unknown>> => {
    if (config.blocklist.includes(item.org_id)) return { code: 400, message: 'Block listed org' };
    const data = withDefaults(item, defaults);
    const message: InboundMessage = {
      input: `${PROFILE}.dispatch`,
      raw: Buffer.from(JSON.stringify(data)),
      contentType: 'application/json',
      headers: { ':decoder': DISPATCH_DECODER },
      service: principal.service,
      orgId: item.org_id,
    };
    try {
      const answer = await services.receiveAccepted(message, DISPATCH_DECODER);
      const refused = answer.refusedRuns[0];
      if (refused !== undefined) {
        if (refused.error.code === 'recipient_not_found') return { code: 404, message: 'Receipient not found' };
        request.log.warn({ recipient: item.recipient, error: refused.error }, 'a dispatch was refused');
        return { code: 500, message: 'Unexpected error during processing' };
      }
      const runId = answer.results[0]?.runIds[0];
      if (runId === undefined) {
        request.log.error({ results: answer.results }, `a dispatch made no run: is the ${PROFILE} route disabled?`);
        return { code: 500, message: 'Unexpected error during processing' };
      }
      return { code: 201, id: runId };
    } catch (err) {
      request.log.error({ err, recipient: item.recipient }, 'a dispatch failed');
      return { code: 500, message: 'Unexpected error during processing' };
    }
  };

  scope.post('/internal/v2/dispatch', { config: { permission: INTERNAL_PERMISSION, audit: 'playbook.dispatch' }, schema: { hide: true } }, async (request, reply) => {
    const items = checkBody<RawDispatchItem[]>(body(request), DISPATCH_V2_SCHEMA);
    for (const item of items) checkSatellite(item);
    const principal = request.principal!;
    const results = await Promise.all(items.map((item) => dispatchItem(request, principal, item)));
    return reply.code(207).send(results);
  });

  scope.post('/internal/dispatch', { config: { permission: INTERNAL_PERMISSION, audit: 'playbook.dispatch' }, schema: { hide: true } }, async (request, reply) => {
    const items = checkBody<V1Item[]>(body(request), DISPATCH_V1_SCHEMA);
    const principal = request.principal!;
    const results = await Promise.all(
      items.map(async (item) => {
        const orgId = config.tenants[item.account];
        if (orgId === undefined) return { code: 404, message: 'Tenant not found' };
        const { account: _account, ...rest } = item;
        return dispatchItem(request, principal, { ...rest, org_id: orgId });
      }),
    );
    return reply.code(207).send(results);
  });

  scope.post('/internal/v2/cancel', { config: { permission: INTERNAL_PERMISSION, audit: 'playbook.cancel' }, schema: { hide: true } }, async (request, reply) => {
    const items = checkBody<CancelItem[]>(body(request), CANCEL_SCHEMA);
    const results = await Promise.all(
      items.map(async (item) => {
        try {
          const run = await services.records.getRun(item.run_id);
          const result = run === null ? null : playbookResult(run);
          if (run === null || result === null) return { code: 404, run_id: NIL_UUID };
          if (run.orgId !== item.org_id) return { code: 400, run_id: NIL_UUID };
          if (result.satId === null || result.satOrgId === null) return { code: 400, run_id: NIL_UUID };
          if (run.status !== 'running' && run.status !== 'queued') return { code: 409, run_id: NIL_UUID };
          await connector().send(
            result.recipient,
            { directive: SATELLITE_DIRECTIVE, payload: '', metadata: { operation: 'cancel', correlation_id: result.correlationId, initiator_user_id: principalHash(item.principal) } },
            { orgId: run.orgId },
          );
          return { code: 202, run_id: run.id };
        } catch (err) {
          if (err instanceof DispatcherError && err.code === 'recipient_not_found') return { code: 409, run_id: NIL_UUID };
          request.log.error({ err, run: item.run_id }, 'a cancel failed');
          return { code: 500, run_id: NIL_UUID };
        }
      }),
    );
    return reply.code(207).send(results);
  });

  scope.post('/internal/v2/recipients/status', { config: { permission: INTERNAL_PERMISSION }, schema: { hide: true } }, async (request, reply) => {
    const items = checkBody<StatusItem[]>(body(request), STATUS_SCHEMA);
    try {
      const results = await Promise.all(
        items.map(async (item) => ({ recipient: item.recipient, org_id: item.org_id, connected: (await connector().status(item.recipient, { orgId: item.org_id })).connected })),
      );
      return reply.code(200).send(results);
    } catch (err) {
      request.log.error({ err }, 'asking for recipients’ status failed');
      return reply.code(500).send();
    }
  });

  scope.get('/internal/v2/run_hosts', { config: { permission: INTERNAL_PERMISSION }, schema: { hide: true } }, async (request, reply) => {
    const orgId = request.principal!.orgId;
    if (config.blocklist.includes(orgId)) return reply.code(403).send();
    return reply.send(await listHosts(services, rawQuery(request), { orgId }, '/internal/v2/run_hosts', 'internal'));
  });
}

// --------------------------------------------------------------------------------------------- public

function missingIdentity(header: string): ErrorAnswer {
  return { status: 400, body: `Bad Request: missing ${header} header\n`, type: 'text/plain; charset=utf-8' };
}

/** The identity header's principal; `types` null accepts any type (uploads: a host's `System` identity). */
function identityPrincipal(services: Services, value: string, types: readonly string[] | null): Principal {
  let principal: Principal;
  try {
    principal = services.auth.identity(value, { anyType: true });
  } catch (err) {
    throw answered(new DispatcherError('bad_request', (err as Error).message), { status: 400, body: `Bad Request: ${(err as Error).message}\n`, type: 'text/plain; charset=utf-8' });
  }
  const type = identityType(value);
  if (types !== null && !types.includes(type)) {
    throw answered(new DispatcherError('forbidden', `unauthorized principal type: ${type}`), { status: 403, body: `unauthorized principal type: ${type}\n`, type: 'text/plain; charset=utf-8' });
  }
  return principal;
}

function identityType(value: string): string {
  try {
    const doc = JSON.parse(Buffer.from(value, 'base64').toString('utf8')) as { identity?: { type?: unknown } };
    return String(doc.identity?.type ?? '').toLowerCase();
  } catch {
    return '';
  }
}

/** Where an identity's permissions come from: the configuration, or the RBAC service (cached a while). */
function permissionSource(config: PlaybookDispatcherConfig, services: Services): (identity: string) => Promise<Grant[]> {
  const configured = config.rbac.permissions.map((p) => toGrant(p));
  const url = config.rbac.url;
  if (url === undefined) return async () => configured;
  const cache = new Map<string, { grants: Grant[]; until: number }>();
  const unavailable = (why: string, cause?: unknown) =>
    answered(new DispatcherError('internal', `error getting permissions from RBAC: ${why}`, { cause }), { status: 503, body: { message: 'error getting permissions from RBAC' } });
  return async (identity) => {
    const now = Date.now();
    const hit = cache.get(identity);
    if (hit !== undefined && hit.until > now) return hit.grants;
    let answer;
    try {
      answer = await services.http.request(`${url.replace(/\/+$/, '')}/api/rbac/v1/access/?application=playbook-dispatcher&limit=1000`, {
        method: 'GET',
        headers: { 'x-rh-identity': identity, accept: 'application/json' },
        timeoutMs: config.rbac.timeout,
        maxBytes: 4 * 1024 * 1024,
      });
    } catch (err) {
      throw unavailable((err as Error).message, err);
    }
    if (answer.status !== 200) throw unavailable(`status ${answer.status}`);
    let doc: { data?: PermissionSpec[]; links?: { next?: string | null } };
    try {
      doc = JSON.parse(answer.body.toString('utf8')) as typeof doc;
    } catch (err) {
      throw unavailable('the answer is not JSON', err);
    }
    if (doc.links?.next !== undefined && doc.links.next !== null) throw unavailable('RBAC page overflow');
    const grants = rbacGrants(doc.data ?? []);
    if (cache.size > 10_000) cache.clear();
    cache.set(identity, { grants, until: now + config.rbac.cache });
    return grants;
  };
}

/**
 * The original's rule for RBAC's answer (notes §5.1): of the permissions that give `playbook-dispatcher:run:read`
 * (the application exactly, the resource and the verb also `*`), the services their `service` filters name
 * (`equal` or `in`; filters on other attributes ignored) are the ones visible; when they name none, every
 * service is. One grant, or none (403).
 */
export function rbacGrants(specs: readonly unknown[]): Grant[] {
  const { app, resource, verb } = parsePermission(READ_PERMISSION);
  const services = new Set<string>();
  let granted = false;
  for (const spec of specs) {
    let held: Grant;
    try {
      held = parsePermission(typeof spec === 'string' ? spec : isRecord(spec) ? String(spec.permission) : '');
    } catch {
      continue; // not a permission
    }
    if (held.app !== app || !grantPermits(held, app, resource, verb)) continue;
    granted = true;
    const definitions = isRecord(spec) && Array.isArray(spec.resourceDefinitions) ? spec.resourceDefinitions : [];
    for (const def of definitions) {
      const filter = isRecord(def) && isRecord(def.attributeFilter) ? def.attributeFilter : undefined;
      if (filter?.key !== 'service') continue;
      if (filter.operation === 'equal' && typeof filter.value === 'string' && filter.value !== '') services.add(filter.value);
      if (filter.operation === 'in' && Array.isArray(filter.value)) for (const v of filter.value) if (typeof v === 'string' && v !== '') services.add(v);
    }
  }
  if (!granted) return [];
  return [services.size === 0 ? { app, resource, verb } : { app, resource, verb, services: [...services].sort() }];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function publicApi(scope: FastifyInstance, config: PlaybookDispatcherConfig, services: Services, identityHeader: string): void {
  messageAnswers(scope, services);
  const grantsOf = permissionSource(config, services);
  useAuthentication(scope, async (request) => {
    if (request.routeOptions.config?.public === true) return null;
    const value = request.headers[identityHeader];
    if (typeof value !== 'string' || value === '') throw answered(new DispatcherError('bad_request', `missing ${identityHeader} header`), missingIdentity(identityHeader));
    const principal = identityPrincipal(services, value, ['user', 'serviceaccount']);
    return { ...principal, grants: await grantsOf(value) };
  });

  scope.get(`${PUBLIC_BASE}/openapi.json`, { config: { public: true }, schema: { hide: true } }, async () => publicOpenApi(scope));

  scope.get(`${PUBLIC_BASE}/runs`, { config: { permission: READ_PERMISSION, openapi: RUNS_DOC }, schema: { tags: [PROFILE], summary: 'List playbook runs' } }, async (request) => {
    const raw = rawQuery(request);
    const q = parseRunsQuery(raw);
    const scopeOf = request.scope ?? { orgId: request.principal!.orgId };
    const now = Date.now();
    const query: RunQuery = {
      scope: scopeOf,
      actionType: ['playbook'],
      statusAt: now,
      labels: Object.keys(q.labels).length > 0 ? q.labels : undefined,
      sort: { field: 'created_at', direction: q.sort },
      limit: q.limit,
      offset: q.offset,
    };
    if (q.status !== undefined) query.status = coreStatuses(q.status);
    if (q.service !== undefined) query.service = [q.service];
    if (q.recipient !== undefined) query.result = { recipient: q.recipient };
    const listing = await services.records.listRuns(query);
    const data = listing.items.flatMap((run) => {
      const view = runView(run, now);
      return view === null ? [] : [projectRun(view, q.fields)];
    });
    return { data, meta: { count: data.length, total: listing.total }, links: links(`${PUBLIC_BASE}/runs`, raw, q.limit, q.offset, listing.total, 'public') };
  });

  scope.get(`${PUBLIC_BASE}/run_hosts`, { config: { permission: READ_PERMISSION, openapi: HOSTS_DOC }, schema: { tags: [PROFILE], summary: 'List the hosts of playbook runs' } }, async (request) => {
    const scopeOf = request.scope ?? { orgId: request.principal!.orgId };
    return listHosts(services, rawQuery(request), scopeOf, `${PUBLIC_BASE}/run_hosts`, 'public');
  });
}

/** What the OpenAPI document says of the public listings (documentation only: answers are not filtered by it). */
const param = (name: string, description: string, schema: object = { type: 'string' }): [string, object] => [name, { ...schema, description }];
const query = (...params: Array<[string, object]>) => ({ type: 'object', properties: Object.fromEntries(params) });
const LISTING = {
  type: 'object',
  required: ['data', 'meta', 'links'],
  properties: {
    data: { type: 'array', items: { type: 'object', additionalProperties: true } },
    meta: { type: 'object', properties: { count: { type: 'integer' }, total: { type: 'integer' } } },
    links: { type: 'object', properties: { first: { type: 'string' }, last: { type: 'string' }, next: { type: 'string' }, previous: { type: 'string' } } },
  },
};
const STATUS = { type: 'string', enum: ['running', 'success', 'failure', 'timeout', 'canceled'] };
const PAGING = [param('limit', '1–200, default 50', { type: 'integer', minimum: 1, maximum: 200 }), param('offset', 'default 0', { type: 'integer', minimum: 0 })];
const RUNS_DOC = {
  description: 'The tenant’s playbook runs (of the services its permission allows); a run still running past its timeout is `timeout`.',
  querystring: query(
    param('filter[status]', 'one status', STATUS),
    param('filter[recipient]', 'a recipient id (UUID)'),
    param('filter[service]', 'the service that dispatched it'),
    param('filter[labels][KEY]', 'a label’s value (any number of labels, all must match)'),
    param('fields[data]', 'comma-separated: id, org_id, recipient, correlation_id, url, labels, timeout, status, service, name, web_console_url, created_at, updated_at'),
    param('sort_by', 'created_at, created_at:asc or created_at:desc (default)'),
    ...PAGING,
  ),
  response: { 200: { description: 'The runs, `meta` and `links`.', ...LISTING }, 400: { description: 'A parameter is not valid: `{"message"}`.' } },
};
const HOSTS_DOC = {
  description: 'The hosts of the tenant’s playbook runs.',
  querystring: query(
    param('filter[status]', 'one status', STATUS),
    param('filter[run][id]', 'a run id'),
    param('filter[run][service]', 'the service of the run'),
    param('filter[run][labels][KEY]', 'a label of the run'),
    param('filter[inventory_id]', 'an inventory id (UUID)'),
    param('fields[data]', 'comma-separated: host, run, status, stdout, links, inventory_id'),
    ...PAGING,
  ),
  response: { 200: { description: 'The hosts, `meta` and `links`.', ...LISTING }, 400: { description: 'A parameter is not valid: `{"message"}`.' } },
};

/** The core statuses a Playbook status filter matches (read at the listing's time: expired runs are `timeout`). */
function coreStatuses(status: PlaybookStatus): RunStatus[] {
  return status === 'running' ? ['queued', 'running'] : [status];
}

async function listHosts(services: Services, raw: string, scope: Scope, base: string, mode: 'public' | 'internal'): Promise<Record<string, unknown>> {
  const q = parseHostsQuery(raw);
  const query: HostQuery = { scope, actionType: ['playbook'], statusAt: Date.now(), limit: q.limit, offset: q.offset, sort: { field: 'created_at', direction: 'asc' } };
  if (q.status !== undefined) query.status = coreStatuses(q.status);
  if (q.runId !== undefined) query.runId = [q.runId];
  if (q.runService !== undefined) query.service = [q.runService];
  if (Object.keys(q.runLabels).length > 0) query.runLabels = q.runLabels;
  if (q.inventoryId !== undefined) query.details = { inventoryId: q.inventoryId };
  const listing = await services.records.listHosts(query);
  const data = listing.items.map((host) => projectHost(hostView(host), q.fields));
  return { data, meta: { count: data.length, total: listing.total }, links: links(base, raw, q.limit, q.offset, listing.total, mode) };
}

/** The dispatcher's OpenAPI document, its paths narrowed to the public API's. */
function publicOpenApi(scope: FastifyInstance): unknown {
  const doc = (scope as unknown as { swagger(): { paths?: Record<string, unknown> } & Record<string, unknown> }).swagger();
  const paths = Object.fromEntries(Object.entries(doc.paths ?? {}).filter(([path]) => path.startsWith(PUBLIC_BASE)));
  return { ...doc, info: { ...(doc.info as object), title: 'Playbook Dispatcher (dispatcher profile)' }, paths };
}

// -------------------------------------------------------------------------------------------- uploads

async function uploads(scope: FastifyInstance, config: PlaybookDispatcherConfig, services: Services, identityHeader: string): Promise<void> {
  messageAnswers(scope, services);
  await scope.register(multipart, { limits: { fileSize: config.upload.maxBytes, files: 1, fields: 10, parts: 12 } });
  const limits: UploadLimits = { ...config.upload };
  useAuthentication(scope, async (request) => {
    const identity = request.headers[identityHeader];
    if (typeof identity === 'string' && identity !== '') return { ...identityPrincipal(services, identity, null), grants: [UPLOAD_GRANT] };
    const authorization = request.headers.authorization ?? '';
    const psk = /^PSK\s+(\S+)$/i.exec(authorization);
    if (psk !== null) return { ...services.auth.psk(psk[1]!), grants: [UPLOAD_GRANT] };
    const bearer = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (bearer !== null) {
      const principal = await services.auth.bearer(bearer[1]!);
      // A recipient's credential: a client allowed to connect as a recipient may upload its results.
      if (scopeFor(principal, 'dispatcher:recipients:connect') === null && scopeFor(principal, UPLOAD_PERMISSION) === null) {
        throw new DispatcherError('forbidden', `${principal.id} may not upload results`);
      }
      return { ...principal, grants: [UPLOAD_GRANT] };
    }
    return null;
  });

  scope.post(UPLOAD_PATH, { config: { permission: UPLOAD_PERMISSION, audit: 'playbook.upload' }, schema: { hide: true } }, async (request, reply) => {
    const principal = request.principal!;
    if (!request.isMultipart()) throw new DispatcherError('unsupported_media_type', 'an upload is multipart/form-data with the results in its `file` field');
    let file: { bytes: Buffer; type: string } | undefined;
    for await (const part of request.parts()) {
      if (part.type !== 'file') continue;
      let bytes: Buffer;
      try {
        bytes = await part.toBuffer();
      } catch (err) {
        if ((err as { code?: unknown }).code !== 'FST_REQ_FILE_TOO_LARGE') throw err;
        // Not read past the limit, so not kept whole: the dead letter says what came, and why it was refused.
        const refused = new DispatcherError('payload_too_large', `the upload's file is larger than upload.maxBytes (${config.upload.maxBytes} bytes)`);
        throw await services.reject({ input: `${PROFILE}.upload`, raw: Buffer.alloc(0), contentType: part.mimetype, headers: { 'content-type': part.mimetype }, service: principal.service, orgId: principal.orgId }, refused);
      }
      if (part.fieldname === 'file' && file === undefined) file = { bytes, type: part.mimetype };
    }
    if (file === undefined) throw new DispatcherError('bad_request', 'the upload has no `file` field');
    const kind = uploadKind(file.type);
    const requestId = (request.headers['x-rh-insights-request-id'] as string | undefined) ?? randomUUID().replaceAll('-', '');
    const message: InboundMessage = {
      input: `${PROFILE}.upload`,
      raw: file.bytes,
      contentType: file.type,
      headers: { 'content-type': file.type, 'x-rh-insights-request-id': requestId },
      service: principal.service,
      orgId: principal.orgId,
    };
    if (config.blocklist.includes(principal.orgId)) {
      // The original drops a blocked tenant's uploads; taken, and kept nowhere.
      return reply.code(202).send({ request_id: requestId, upload: { org_id: principal.orgId } });
    }
    let parsed;
    try {
      if (kind === null) throw new DispatcherError('unsupported_media_type', `an upload's file is application/vnd.redhat.playbook.v1+jsonl|gzip|xz or application/vnd.redhat.playbook-sat.v3+jsonl|gzip|xz, not ${file.type}`);
      parsed = parseUpload(kind, file.bytes, limits);
    } catch (err) {
      throw await services.reject(message, err instanceof DispatcherError ? err : new DispatcherError('invalid_upload', (err as Error).message));
    }
    // An upload may overtake the dispatch it answers: a recipient starts once it took the directive, which
    // may be before the run is stored. So an unknown correlation id is looked for again a while.
    let applied = await applyUpload(services, principal.orgId, parsed, Date.now());
    for (const until = Date.now() + OVERTAKE_MS; applied.outcome === 'not_found' && Date.now() < until; ) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      applied = await applyUpload(services, principal.orgId, parsed, Date.now());
    }
    if (applied.outcome === 'not_found') {
      throw await services.reject(message, new DispatcherError('not_found', `no run of tenant ${principal.orgId} has the correlation id ${parsed.correlationId}`));
    }
    return reply.code(202).send({ request_id: requestId, upload: { org_id: principal.orgId }, run: { id: applied.runId, status: applied.status, outcome: applied.outcome } });
  });
}

function uploadKind(contentType: string): UploadKind | null {
  const m = UPLOAD_TYPES.exec(contentType.trim().toLowerCase());
  if (m === null) return null;
  if (m[1] === 'playbook' && m[2] === 'v1') return 'playbook';
  if (m[1] === 'playbook-sat' && m[2] === 'v3') return 'playbook-sat';
  return null;
}
