/**
 * Tokens, clients and the audit log.
 *
 * - `POST /v1/token`: the client credentials grant (RFC 6749 §4.4): `client_id` and `client_secret` as a
 *   JSON body, a form body, or HTTP Basic; answers `{ access_token, token_type, expires_in }`.
 * - `/v1/clients`: a tenant's clients; a secret is shown once, when the client is made or its secret rotated.
 * - `GET /v1/audit`: the tenant's audit entries.
 */

import type { FastifyInstance, FastifyRequest } from 'fastify';
import { DispatcherError } from '../../core/errors.js';
import { checkSubscription } from '../../core/inboxes.js';
import { inScope, type PermissionSpec, type Principal } from '../../core/principal.js';
import type { Services } from '../../core/services.js';
import { mediaType, parseJsonBytes } from '../../core/json.js';
import { requirePrincipal } from '../auth.js';
import { pageLinks, parseQuery } from '../query.js';
import { anyObject, errors, idParams, links, listMeta } from '../schemas.js';
import { auditResource, clientResource } from '../resources.js';

function body(request: FastifyRequest): Record<string, unknown> {
  const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
  if (raw.length === 0) return {};
  const type = mediaType(request.headers['content-type']);
  if (type === 'application/x-www-form-urlencoded') return Object.fromEntries(new URLSearchParams(raw.toString('utf8')));
  if (type !== 'application/json' && type !== '') throw new DispatcherError('unsupported_media_type', `send application/json or application/x-www-form-urlencoded, not ${type}`);
  const value = parseJsonBytes(raw);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new DispatcherError('bad_request', 'the body must be a JSON object');
  return value as Record<string, unknown>;
}

/** The client id and secret of a token request: from HTTP Basic, else from the body. */
function clientCredentials(request: FastifyRequest): { grant: unknown; id: unknown; secret: unknown } {
  const fields = body(request);
  let { client_id: id, client_secret: secret } = fields;
  const basic = /^Basic\s+(\S+)$/i.exec(String(request.headers.authorization ?? ''));
  if (basic !== null) {
    const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
    const at = decoded.indexOf(':');
    if (at > 0) {
      try {
        [id, secret] = [decodeURIComponent(decoded.slice(0, at)), decodeURIComponent(decoded.slice(at + 1))];
      } catch {
        throw new DispatcherError('bad_request', 'Authorization: Basic credentials must be percent-encoded id:secret');
      }
    }
  }
  return { grant: fields.grant_type, id, secret };
}

function text(value: unknown, name: string, max = 200): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max) throw new DispatcherError('bad_request', `${name}: a string of 1 to ${max} characters`);
  return value;
}

export function registerAccessRoutes(app: FastifyInstance, s: Services): void {
  app.post(
    '/v1/token',
    {
      config: {
        public: true,
        audit: 'token.issue',
        // Its own limit per address: every request costs a memory-hard hash.
        ...(s.auth.tokenRateLimit.perAddress > 0
          ? { rateLimit: { max: s.auth.tokenRateLimit.perAddress, timeWindow: s.auth.tokenRateLimit.window, keyGenerator: (request: FastifyRequest) => `token@${request.ip}` } }
          : {}),
      },
      schema: {
        operationId: 'issueToken',
        tags: ['access'],
        summary: 'Exchange client credentials for a bearer token',
        description:
          'The client credentials grant: `client_id` and `client_secret` in a JSON or form body (`grant_type=client_credentials` optional), ' +
          'or HTTP Basic. The token goes in `Authorization: Bearer <token>` until it expires; rotating the secret or deleting the client revokes it.',
        security: [],
        response: {
          200: {
            type: 'object',
            properties: { access_token: { type: 'string' }, token_type: { type: 'string' }, expires_in: { type: 'integer' }, expires_at: { type: 'string' } },
          },
          ...errors(400, 401, 415, 429),
        },
      },
    },
    async (request, reply) => {
      const { grant, id, secret } = clientCredentials(request);
      if (grant !== undefined && grant !== 'client_credentials') throw new DispatcherError('bad_request', 'grant_type: only client_credentials is supported');
      const clientId = text(id, 'client_id');
      request.auditActor = { actor: `client:${clientId}`, kind: 'client', service: 'unknown', orgId: 'unknown' };
      request.auditRecords = [clientId];
      const issued = await s.auth.issueToken(clientId, text(secret, 'client_secret', 1000));
      request.auditActor = { actor: `client:${issued.client.id}`, kind: 'client', service: issued.client.service, orgId: issued.client.orgId };
      return reply.header('cache-control', 'no-store').send({
        access_token: issued.token,
        token_type: 'Bearer',
        expires_in: issued.expiresIn,
        expires_at: new Date(issued.expiresAt).toISOString(),
      });
    },
  );

  app.get(
    '/v1/clients',
    {
      config: { permission: 'dispatcher:clients:read' },
      schema: { operationId: 'listClients', tags: ['access'], summary: "The tenant's clients (never their secrets)", response: { 200: { type: 'object', properties: { data: { type: 'array', items: anyObject } } } } },
    },
    async (request) => {
      const scope = request.scope;
      const clients = await s.records.access.listClients(scope?.orgId);
      return { data: clients.filter((c) => inScope({ org_id: c.orgId, service: c.service }, scope)).map(clientResource) };
    },
  );

  app.post(
    '/v1/clients',
    {
      config: { permission: 'dispatcher:clients:write', audit: 'clients.create' },
      schema: {
        operationId: 'createClient',
        tags: ['access'],
        summary: 'Create a client; its secret is in this answer and never again',
        description:
          'Body: `name`, `permissions` (each within what the caller holds), optional `id` (letters, digits, `.`, `_`, `-`; default a generated UUID), ' +
          '`service` (default: the name; within the caller\'s service filter) and `subscription` (a topic pattern: `*` one word, `#` zero or more). ' +
          'The client belongs to the caller\'s tenant.',
        response: { 201: anyObject, ...errors(400, 403) },
      },
    },
    async (request, reply) => {
      const principal = requirePrincipal(request);
      const b = body(request);
      const name = text(b.name, 'name');
      const service = b.service === undefined ? name : text(b.service, 'service');
      const scope = request.scope;
      if (scope?.services !== undefined && !scope.services.includes(service)) {
        throw new DispatcherError('forbidden', `${principal.id} may not make clients of service ${service}`);
      }
      const { client, secret } = await s.auth.createClient(
        {
          ...(b.id === undefined ? {} : { id: text(b.id, 'id', 100) }),
          name,
          service,
          orgId: principal.orgId,
          permissions: (b.permissions ?? []) as PermissionSpec[],
          subscription: b.subscription === undefined || b.subscription === null ? null : checkSubscription(b.subscription),
        },
        principal.kind === 'anonymous' ? undefined : principal,
      );
      request.auditRecords = [client.id];
      request.auditDetails = { name: client.name, service: client.service, permissions: client.permissions };
      return reply.code(201).header('cache-control', 'no-store').send({ ...clientResource(client), secret });
    },
  );

  const owned = async (request: FastifyRequest): Promise<{ principal: Principal; id: string }> => {
    const principal = requirePrincipal(request);
    const { id } = request.params as { id: string };
    const client = await s.records.access.getClient(id);
    if (client === null || !inScope({ org_id: client.orgId, service: client.service }, request.scope)) throw new DispatcherError('not_found', `no client ${id}`);
    return { principal, id };
  };

  app.patch(
    '/v1/clients/:id',
    {
      config: { permission: 'dispatcher:clients:write', audit: 'clients.update' },
      schema: {
        operationId: 'updateClient',
        tags: ['access'],
        summary: "Change a client's name or subscription (its secret and tokens stay)",
        description: 'Body: `name` and/or `subscription` (a topic pattern, or null for none).',
        params: idParams,
        response: { 200: anyObject, ...errors(400, 404) },
      },
    },
    async (request) => {
      const { id } = await owned(request);
      const b = body(request);
      const changes: { name?: string; subscription?: string | null } = {};
      if (b.name !== undefined) changes.name = text(b.name, 'name');
      if (b.subscription !== undefined) changes.subscription = b.subscription === null ? null : checkSubscription(b.subscription);
      if (Object.keys(changes).length === 0) throw new DispatcherError('bad_request', 'nothing to change: give name or subscription');
      const client = await s.auth.updateClient(id, changes);
      request.auditDetails = changes;
      return clientResource(client);
    },
  );

  app.post(
    '/v1/clients/:id/rotate-secret',
    {
      config: { permission: 'dispatcher:clients:write', audit: 'clients.rotate-secret' },
      schema: { operationId: 'rotateClientSecret', tags: ['access'], summary: 'Give a client a new secret (shown once); its tokens stop working', params: idParams, response: { 200: anyObject, ...errors(404) } },
    },
    async (request, reply) => {
      const { id } = await owned(request);
      const { client, secret } = await s.auth.rotateSecret(id);
      return reply.header('cache-control', 'no-store').send({ ...clientResource(client), secret });
    },
  );

  app.delete(
    '/v1/clients/:id',
    {
      config: { permission: 'dispatcher:clients:write', audit: 'clients.delete' },
      schema: { operationId: 'deleteClient', tags: ['access'], summary: 'Delete a client; its tokens stop working', params: idParams, response: { 204: { type: 'null' }, ...errors(404) } },
    },
    async (request, reply) => {
      const { id } = await owned(request);
      await s.auth.deleteClient(id);
      return reply.code(204).send();
    },
  );

  const auditSpec = { filters: ['actor', 'action', 'record', 'outcome'], single: ['actor', 'record', 'outcome'], ranges: ['at'], sort: ['seq'], paged: true } as const;
  app.get(
    '/v1/audit',
    {
      config: { permission: 'dispatcher:audit:read', query: auditSpec },
      schema: {
        operationId: 'listAudit',
        tags: ['access'],
        summary: 'The audit log',
        description:
          'Filters: `filter[actor]` (`psk:billing`, `client:<id>`, `route:<name>` …), `filter[action]` (`events.create`, `runs.cancel`, `action.http` …; ' +
          'comma-separated for any of), `filter[record]` (a run, event, dead letter or client id), `filter[outcome]` (`ok` or an error code), ' +
          '`filter[at][gte|gt|lt|lte]`; `sort=seq|-seq` (default newest first); `limit`, `offset`. Each entry carries its hash and the previous one.',
        response: { 200: { type: 'object', properties: { data: { type: 'array', items: anyObject }, meta: listMeta, links } }, ...errors(400) },
      },
    },
    async (request) => {
      const q = parseQuery(request.url, auditSpec);
      const scope = request.scope;
      const { items, total } = await s.records.access.listAudit({
        ...(scope?.orgId === undefined ? {} : { orgId: scope.orgId }),
        ...(scope?.services === undefined ? {} : { services: scope.services }),
        actor: q.filters.get('actor')?.[0],
        action: q.filters.get('action'),
        record: q.filters.get('record')?.[0],
        outcome: q.filters.get('outcome')?.[0],
        at: q.ranges.get('at'),
        ascending: q.sort?.direction === 'asc',
        limit: q.limit,
        offset: q.offset,
      });
      return { data: items.map(auditResource), meta: { count: items.length, total }, links: pageLinks('/v1/audit', q.raw, q.limit, q.offset, total) };
    },
  );
}
