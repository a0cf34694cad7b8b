/**
 * Principals and permissions: who is calling, and what it may do to which records.
 *
 * - A **principal** is a service holding a pre-shared key, a client holding a bearer token, or a user
 *   behind a trusted identity header. Every principal has a tenant (`orgId`) and grants.
 * - A **grant** is a permission `app:resource:verb` (each part a name, or `*` for any), optionally with
 *   attribute filters that narrow the records it reaches by the `service` that created them.
 * - A **scope** is what one permission lets a principal reach: its tenant's records, of the services its
 *   filters name (all services when one matching grant has no filter).
 */

import { DispatcherError } from './errors.js';
import type { Owner } from './types.js';

/** The application part of the dispatcher's own permissions: `dispatcher:runs:read`. */
export const APP = 'dispatcher';

export type PrincipalKind = 'psk' | 'client' | 'identity' | 'anonymous';

/** Who is behind what no principal sent (the embedded input, and every caller when authentication is off). */
export const DEFAULT_OWNER: Owner = { service: 'anonymous', orgId: 'default' };

/** Every caller when authentication is turned off: the default owner, holding every permission. */
export const ANONYMOUS: Principal = { kind: 'anonymous', id: 'anonymous', ...DEFAULT_OWNER, grants: [{ app: '*', resource: '*', verb: '*' }] };

export interface Grant {
  readonly app: string;
  readonly resource: string;
  readonly verb: string;
  /** The services whose records this grant reaches; undefined: every service. Never empty. */
  readonly services?: readonly string[];
}

export interface Principal extends Owner {
  readonly kind: PrincipalKind;
  /** Stable and unique: `psk:<service>`, `client:<id>`, `identity:<user>`. */
  readonly id: string;
  readonly grants: readonly Grant[];
}

/** What a principal may reach: its tenant, and (when set, never empty) only the records of these services. */
export interface Scope {
  orgId?: string;
  services?: string[];
}

/**
 * A permission as written in the configuration or given to a client: `"dispatcher:runs:read"`, or an object
 * with the filters of an RBAC access entry (`resourceDefinitions[].attributeFilter` with key `service`,
 * operation `equal` with a string or `in` with a list), or the short form `{ permission, service }`.
 */
export type PermissionSpec =
  | string
  | {
      permission: string;
      service?: string | string[];
      resourceDefinitions?: Array<{ attributeFilter: { key: string; operation: string; value: unknown } }>;
    };

const PART = /^(?:\*|[A-Za-z0-9_.-]+)$/;

/** `app:resource:verb` → its parts; throws `bad_request` for anything else. */
export function parsePermission(text: string): { app: string; resource: string; verb: string } {
  const parts = typeof text === 'string' ? text.split(':') : [];
  if (parts.length !== 3 || !parts.every((p) => PART.test(p))) {
    throw new DispatcherError('bad_request', `permission "${String(text)}" is not app:resource:verb (each a name or *)`);
  }
  const [app, resource, verb] = parts as [string, string, string];
  return { app, resource, verb };
}

/** A permission spec → a grant. Throws `bad_request` naming what is wrong. */
export function toGrant(spec: PermissionSpec): Grant {
  if (typeof spec === 'string') return parsePermission(spec);
  if (spec === null || typeof spec !== 'object') throw new DispatcherError('bad_request', 'a permission is a string or an object with `permission`');
  const parts = parsePermission(spec.permission);
  const services = new Set<string>();
  let filtered = false;
  const add = (value: unknown, operation: string) => {
    filtered = true;
    const values = operation === 'in' ? value : [value];
    if (!Array.isArray(values) || !values.every((v) => typeof v === 'string' && v.length > 0)) {
      throw new DispatcherError('bad_request', `permission ${spec.permission}: a service filter with operation "${operation}" needs ${operation === 'in' ? 'a list of names' : 'a name'}`);
    }
    for (const v of values) services.add(v);
  };
  if (spec.service !== undefined) add(spec.service, Array.isArray(spec.service) ? 'in' : 'equal');
  for (const def of spec.resourceDefinitions ?? []) {
    const filter = def?.attributeFilter;
    if (filter?.key !== 'service') throw new DispatcherError('bad_request', `permission ${spec.permission}: only the "service" attribute can be filtered on`);
    if (filter.operation !== 'equal' && filter.operation !== 'in') {
      throw new DispatcherError('bad_request', `permission ${spec.permission}: filter operation must be "equal" or "in", not "${String(filter.operation)}"`);
    }
    add(filter.value, filter.operation);
  }
  // A filter that lists nothing reaches nothing: the grant is dropped by the caller, never widened.
  if (filtered && services.size === 0) throw new DispatcherError('bad_request', `permission ${spec.permission}: its service filter names no service`);
  return filtered ? { ...parts, services: [...services].sort() } : parts;
}

/** The grant as written: `dispatcher:runs:read` or `dispatcher:runs:read[service in a,b]`. */
export function grantText(g: Grant): string {
  const base = `${g.app}:${g.resource}:${g.verb}`;
  return g.services === undefined ? base : `${base}[service in ${g.services.join(',')}]`;
}

/** The grant as a permission spec (what clients store and the API shows). */
export function grantSpec(g: Grant): PermissionSpec {
  const permission = `${g.app}:${g.resource}:${g.verb}`;
  return g.services === undefined ? permission : { permission, service: [...g.services] };
}

function partMatches(granted: string, wanted: string): boolean {
  return granted === '*' || granted === wanted;
}

/** Whether a grant's permission covers `app:resource:verb` (ignoring filters). */
export function grantPermits(g: Grant, app: string, resource: string, verb: string): boolean {
  return partMatches(g.app, app) && partMatches(g.resource, resource) && partMatches(g.verb, verb);
}

/**
 * What `permission` lets the principal reach, or null when it does not hold it. The tenant is always the
 * principal's own; the services are the union of the filters of every grant that matches, unless one of
 * them has no filter (then every service).
 */
export function scopeFor(principal: Principal, permission: string): Scope | null {
  const { app, resource, verb } = parsePermission(permission);
  const services = new Set<string>();
  let granted = false;
  let unrestricted = false;
  for (const g of principal.grants) {
    if (!grantPermits(g, app, resource, verb)) continue;
    granted = true;
    if (g.services === undefined) unrestricted = true;
    else for (const s of g.services) services.add(s);
  }
  if (!granted) return null;
  if (unrestricted) return { orgId: principal.orgId };
  if (services.size === 0) return null;
  return { orgId: principal.orgId, services: [...services].sort() };
}

/**
 * Whether `holder` may hand `wanted` to someone else (a client it creates): every part is the same or a
 * wildcard in the holder's grant, and the holder's filter (if any) allows every service the wanted grant
 * reaches. So no principal can give more than it has.
 */
export function grantCovers(holder: Grant, wanted: Grant): boolean {
  if (!partMatches(holder.app, wanted.app) || !partMatches(holder.resource, wanted.resource) || !partMatches(holder.verb, wanted.verb)) return false;
  if (holder.services === undefined) return true;
  if (wanted.services === undefined) return false;
  return wanted.services.every((s) => holder.services!.includes(s));
}

/** Whether a record (its tenant and creating service) is within a scope. */
export function inScope(record: { org_id: string; service: string }, scope: Scope | undefined): boolean {
  if (scope === undefined) return true;
  if (scope.orgId !== undefined && record.org_id !== scope.orgId) return false;
  if (scope.services !== undefined && !scope.services.includes(record.service)) return false;
  return true;
}

/** Every permission of the dispatcher's own API, for documentation and for "all of them" grants. */
export const PERMISSIONS = {
  'dispatcher:events:write': 'send events (`POST /v1/events`)',
  'dispatcher:events:read': 'list and read events',
  'dispatcher:runs:read': 'list and read runs and their attempts; the run-event stream',
  'dispatcher:runs:write': 'cancel and retry runs; republish them (`POST /v1/runs/republish`)',
  'dispatcher:dead-letters:read': 'list and read dead letters',
  'dispatcher:dead-letters:write': 'replay and delete dead letters',
  'dispatcher:audit:read': "read the audit log (the tenant's entries)",
  'dispatcher:clients:read': "list the tenant's clients",
  'dispatcher:clients:write': 'create clients (with at most the permissions one holds), rotate their secrets, delete them',
  'dispatcher:metrics:read': 'scrape `/metrics` (when metrics are not public)',
  'dispatcher:recipients:connect': 'connect as a recipient (an agent that runs directives) over `GET /v1/recipients/{id}/connect`',
  'dispatcher:recipients:read': 'list the connected recipients',
  'dispatcher:inbox:receive': 'receive and acknowledge the messages of one’s own inbox (`GET /v1/inbox`; clients only)',
} as const;

export type Permission = keyof typeof PERMISSIONS;
