/**
 * Authentication, authorization and auditing for every route of the HTTP app.
 *
 * Each route declares, in its `config`, either the permission it needs (`permission`) or that it is public
 * (`public: true`); a route that declares neither stops the app from starting, so that no route can forget
 * it. State-changing routes name their audit action (`audit`): every answer they give, success or error,
 * appends an audit entry before it is sent.
 *
 * Order on each request: read the credentials (never throwing) → the rate limit (per principal, or per
 * client address for callers without valid credentials) → refuse (401) or check the permission (403) and
 * set the request's scope.
 */

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ActorKind, Auditor, NewAuditEntry } from '../core/audit.js';
import { DispatcherError, isDispatcherError, toDispatcherError } from '../core/errors.js';
import { scopeFor, type Principal, type Scope } from '../core/principal.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The permission this route needs: `app:resource:verb` (the core's are listed in `PERMISSIONS`, a profile's in its `permissions`). */
    permission?: string;
    /** No credentials needed (health, readiness, the OpenAPI document, the token exchange). */
    public?: boolean;
    /** The audit action of a state-changing route: `runs.cancel`. */
    audit?: string;
    /** The route's scope authenticates its callers itself (`useAuthentication`): the core's hook leaves them alone. */
    ownAuthentication?: boolean;
    /** The query parameters `parseQuery` takes, for the OpenAPI document (see `querySchema`). */
    query?: import('./query.js').QuerySpec;
    /** Parts of the route's schema for the OpenAPI document only (a body read raw, headers), never used to validate. */
    openapi?: Record<string, unknown>;
  }
  interface FastifyInstance {
    /** Every route registered after the authentication hooks, with what it needs: for the 405 answers and tests. */
    routeTable: RouteEntry[];
  }
  interface FastifyRequest {
    /** Who is calling; null until authenticated (and on public routes without credentials). */
    principal: Principal | null;
    /** What the route's permission lets the principal reach; undefined: everything (authentication off). */
    scope: Scope | undefined;
    /** Why the credentials were refused, when they were. */
    authError: DispatcherError | null;
    /** The records an audited request touched, when they are not just the `:id` parameter. */
    auditRecords: string[] | undefined;
    /** For requests without a principal (the token exchange): who the entry is about. */
    auditActor: { actor: string; kind: ActorKind; service: string; orgId: string } | undefined;
    auditDetails: Record<string, unknown> | undefined;
    /** The code of the error answer, set where errors become answers: the audited outcome. */
    errorCode: string | undefined;
    /** The request's audit entry is already committed (with the change itself, as intake does). */
    audited: boolean;
  }
}

export interface RouteEntry {
  method: string;
  url: string;
  public: boolean;
  permission?: string;
  audit?: string;
}

/** Who is behind a request: a principal, null for no credentials; throws a coded error for refused ones. */
export type Authenticate = (request: FastifyRequest) => Promise<Principal | null> | Principal | null;

/** Paths a route may leave undeclared: the browsable docs' own files. */
const DOCS_PREFIX = '/docs';

/** The hook that finds who is calling with `authenticate`: it never throws (the refusal comes from the route's own hook). */
function authenticationHook(authenticate: Authenticate) {
  return async (request: FastifyRequest): Promise<void> => {
    try {
      request.principal = await authenticate(request);
      request.authError = null;
    } catch (err) {
      request.principal = null;
      request.authError = toDispatcherError(err);
      if (!isDispatcherError(err)) request.log.error({ err }, 'authentication failed unexpectedly');
    }
  };
}

/**
 * Declarations, and the first hook: who is calling. It never throws, so that the rate limit (a hook of each
 * route) counts refused callers too; the refusal comes from the route's own hook, added after the limit's.
 * Register this after the rate limit and before any route. Routes of a scope that authenticates its own
 * callers (`useAuthentication`) are left to that scope's hook.
 */
export function registerAuth(app: FastifyInstance, authenticate: Authenticate): void {
  app.decorateRequest('principal', null);
  app.decorateRequest('scope', undefined);
  app.decorateRequest('authError', null);
  app.decorateRequest('auditRecords', undefined);
  app.decorateRequest('auditActor', undefined);
  app.decorateRequest('auditDetails', undefined);
  app.decorateRequest('errorCode', undefined);
  app.decorateRequest('audited', false);

  const core = authenticationHook(authenticate);
  app.addHook('onRequest', async (request) => {
    if (request.routeOptions.config?.ownAuthentication === true) return;
    await core(request);
  });

  app.decorate('routeTable', [] as RouteEntry[]);
  app.addHook('onRoute', (route) => {
    const config = (route.config ?? {}) as { permission?: string; public?: boolean; audit?: string };
    const record = (isPublic: boolean) => {
      for (const method of [route.method].flat()) {
        if (method === 'HEAD') continue;
        app.routeTable.push({ method, url: route.url, public: isPublic, ...(config.permission ? { permission: config.permission } : {}), ...(config.audit ? { audit: config.audit } : {}) });
      }
    };
    if (config.public === true) return record(true);
    if (config.permission === undefined) {
      if (route.url.startsWith(DOCS_PREFIX)) {
        route.config = { ...route.config, public: true } as typeof route.config;
        return record(true);
      }
      throw new Error(`route ${[route.method].flat().join(',')} ${route.url} declares neither a permission nor public: true`);
    }
    record(false);
    const permission = config.permission;
    // A callback hook: no promise per request.
    const authorize = (request: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void) => {
      try {
        const principal = requirePrincipal(request);
        if (principal.kind !== 'anonymous') {
          const scope = scopeFor(principal, permission);
          if (scope === null) throw new DispatcherError('forbidden', `${principal.id} lacks the permission ${permission}`);
          request.scope = scope;
        }
      } catch (err) {
        return done(err as Error);
      }
      done();
    };
    const existing = route.onRequest;
    route.onRequest = existing === undefined ? [authorize] : [...[existing].flat(), authorize];
  });
}

/**
 * A scope (a profile's) that authenticates its callers its own way: `authenticate` replaces the core's
 * hook for the routes registered in `scope` after this call. The routes still declare their permission or
 * `public`, and the core checks it; refusals are thrown as coded errors (`unauthorized`, `forbidden`) for
 * the scope's error handler to answer in its own words.
 */
export function useAuthentication(scope: FastifyInstance, authenticate: Authenticate): void {
  scope.addHook('onRoute', (route) => {
    route.config = { ...route.config, ownAuthentication: true } as typeof route.config;
  });
  scope.addHook('onRequest', authenticationHook(authenticate));
}

/** The caller, or the refusal: 401 with why the credentials were refused, or that none were given. */
export function requirePrincipal(request: FastifyRequest): Principal {
  if (request.principal !== null) return request.principal;
  throw request.authError ?? new DispatcherError('unauthorized', 'credentials are needed: Authorization: PSK <key> or Bearer <token>');
}

/** Audited routes: one entry per answer, written before the answer is sent (unless already committed). */
export function registerAudit(app: FastifyInstance, audit: Auditor): void {
  // A callback hook: answers with nothing to audit pass without a promise.
  app.addHook('onSend', (request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (err: null, payload: unknown) => void) => {
    const outcome = reply.statusCode < 400 ? 'ok' : (request.errorCode ?? `http_${reply.statusCode}`);
    const entry = request.audited ? undefined : auditEntry(request, reply.statusCode, outcome);
    if (entry === undefined) return done(null, payload);
    const appended = audit.append(entry).then(
      () => true,
      (err: unknown) => {
        // The change itself is committed: the answer must still say so. The failure is loud in the log.
        request.log.error({ err, action: entry.action, records: entry.records }, 'could not append to the audit log');
        return false;
      },
    );
    // A server error (the store away, most often) changed nothing: its answer does not wait for the store
    // to take the entry, which is appended when it can be.
    if (reply.statusCode >= 500) return done(null, payload);
    void appended.then(() => done(null, payload));
  });
}

/**
 * The audit entry of a request to an audited route, answered with `status`; undefined for routes that are
 * not audited and for requests refused before anyone was named (no or bad credentials).
 */
export function auditEntry(
  request: FastifyRequest,
  status: number,
  outcome: string,
  about: { records: string[] | undefined; details: Record<string, unknown> | undefined } = { records: request.auditRecords, details: request.auditDetails },
): NewAuditEntry | undefined {
  const action = (request.routeOptions.config as { audit?: string } | undefined)?.audit;
  if (action === undefined) return undefined;
  const p = request.principal;
  const who = p !== null ? { actor: p.id, kind: p.kind, service: p.service, orgId: p.orgId } : request.auditActor;
  if (who === undefined) return undefined;
  const id = (request.params as { id?: unknown } | undefined)?.id;
  return {
    at: Date.now(),
    actor: who.actor,
    actorKind: who.kind,
    service: who.service,
    orgId: who.orgId,
    action,
    records: about.records ?? (typeof id === 'string' ? [id] : []),
    outcome,
    details: { method: request.method, path: request.url.split('?', 1)[0], status, ...(about.details ?? {}) },
  };
}
