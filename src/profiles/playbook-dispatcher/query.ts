/**
 * The query parameters of Playbook Dispatcher's public listings (`runs`, `run_hosts`) and of the internal
 * `run_hosts` listing, read from the raw query string, and the pagination links and sparse fieldsets of their
 * answers. Pure: no store, no HTTP; the routes call these and turn a `bad_request` DispatcherError into a 400.
 *
 * The raw query is read by hand (not through a framework's parsed object) because the original's keys are
 * deepObject-style (`filter[labels][team]`, `fields[data]`) and a key may repeat (`fields[data]=a&fields[data]=b`).
 */

import { validate as isUuid } from 'uuid';
import { DispatcherError } from '../../core/errors.js';
import { PLAYBOOK_STATUSES } from './model.js';
import type { PlaybookHostView, PlaybookRunView, PlaybookStatus } from './model.js';

/** Fields a run listing may return, in the original's order. */
export const RUN_FIELDS = [
  'id',
  'org_id',
  'recipient',
  'correlation_id',
  'url',
  'labels',
  'timeout',
  'status',
  'service',
  'name',
  'web_console_url',
  'created_at',
  'updated_at',
] as const;
export type RunField = (typeof RUN_FIELDS)[number];
/** What a run listing returns when no `fields[data]` is given. */
export const DEFAULT_RUN_FIELDS: readonly RunField[] = ['id', 'org_id', 'recipient', 'url', 'labels', 'timeout', 'status'];

/** Fields a run-host listing may return. */
export const HOST_FIELDS = ['host', 'run', 'status', 'stdout', 'links', 'inventory_id'] as const;
export type HostField = (typeof HOST_FIELDS)[number];
/** What a run-host listing returns when no `fields[data]` is given. */
export const DEFAULT_HOST_FIELDS: readonly HostField[] = ['host', 'status', 'run'];

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 200;

export interface RunsQuery {
  status?: PlaybookStatus;
  service?: string;
  recipient?: string;
  /** Every label must match (AND). */
  labels: Record<string, string>;
  fields: RunField[];
  sort: 'asc' | 'desc';
  limit: number;
  offset: number;
}

export interface HostsQuery {
  status?: PlaybookStatus;
  runId?: string;
  runService?: string;
  /** Every label of the host's run must match (AND). */
  runLabels: Record<string, string>;
  inventoryId?: string;
  fields: HostField[];
  limit: number;
  offset: number;
}

export interface PageLinks {
  first: string;
  last: string;
  next?: string;
  previous?: string;
}


function bad(message: string): DispatcherError {
  return new DispatcherError('bad_request', message);
}

/** The query as URLSearchParams; a leading '?' is tolerated so callers may pass either form. */
function params(raw: string): URLSearchParams {
  return new URLSearchParams(raw.startsWith('?') ? raw.slice(1) : raw);
}

/** The last value of a key (a repeated scalar keeps its last, as Go's deepObject binding does), or undefined. */
function last(q: URLSearchParams, key: string): string | undefined {
  const all = q.getAll(key);
  return all.length === 0 ? undefined : all[all.length - 1];
}

function status(q: URLSearchParams): PlaybookStatus | undefined {
  const v = last(q, 'filter[status]');
  if (v === undefined) return undefined;
  if (!(PLAYBOOK_STATUSES as readonly string[]).includes(v)) {
    throw bad(`invalid filter[status]: ${JSON.stringify(v)} (expected one of ${PLAYBOOK_STATUSES.join(', ')})`);
  }
  return v as PlaybookStatus;
}

/** `filter[...prefix][key]=value` pairs; a key given twice keeps its last value. */
function labels(q: URLSearchParams, prefix: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of q) {
    if (!key.startsWith(prefix) || !key.endsWith(']')) continue;
    const name = key.slice(prefix.length, -1);
    // A nested bracket would be a different filter, not a label name.
    if (name.includes('[') || name.includes(']')) continue;
    out[name] = value;
  }
  return out;
}

/** `fields[data]`, comma-separated and/or repeated, checked against what the resource has. */
function fields<F extends string>(q: URLSearchParams, allowed: readonly F[], defaults: readonly F[]): F[] {
  const given = q.getAll('fields[data]');
  if (given.length === 0) return [...defaults];
  const out: F[] = [];
  for (const part of given.flatMap((v) => v.split(','))) {
    if (!(allowed as readonly string[]).includes(part)) throw bad(`unknown field: ${part}`);
    if (!out.includes(part as F)) out.push(part as F);
  }
  return out;
}

/** A decimal integer within bounds; anything else is the caller's mistake. */
function integer(q: URLSearchParams, key: string, fallback: number, min: number, max: number): number {
  const v = last(q, key);
  if (v === undefined) return fallback;
  if (!/^[+-]?\d+$/.test(v)) throw bad(`invalid ${key}: ${JSON.stringify(v)} is not an integer`);
  const n = Number(v);
  if (n < min || n > max) {
    throw bad(max === Number.MAX_SAFE_INTEGER ? `invalid ${key}: must be at least ${min}` : `invalid ${key}: must be between ${min} and ${max}`);
  }
  return n;
}

function page(q: URLSearchParams): { limit: number; offset: number } {
  return {
    limit: integer(q, 'limit', DEFAULT_LIMIT, 1, MAX_LIMIT),
    offset: integer(q, 'offset', 0, 0, Number.MAX_SAFE_INTEGER),
  };
}

function sort(q: URLSearchParams): 'asc' | 'desc' {
  const v = last(q, 'sort_by');
  if (v === undefined) return 'desc';
  if (v === 'created_at' || v === 'created_at:desc') return 'desc';
  if (v === 'created_at:asc') return 'asc';
  throw bad(`invalid sort_by: ${JSON.stringify(v)} (expected created_at, created_at:asc or created_at:desc)`);
}

/** The query of `GET /api/playbook-dispatcher/v1/runs`. Throws `bad_request` with the original's message. */
export function parseRunsQuery(raw: string): RunsQuery {
  const q = params(raw);
  const out: RunsQuery = {
    labels: labels(q, 'filter[labels]['),
    fields: fields(q, RUN_FIELDS, DEFAULT_RUN_FIELDS),
    sort: sort(q),
    ...page(q),
  };
  const st = status(q);
  if (st !== undefined) out.status = st;
  const service = last(q, 'filter[service]');
  if (service !== undefined) out.service = service;
  const recipient = last(q, 'filter[recipient]');
  if (recipient !== undefined) {
    if (!isUuid(recipient)) throw bad('Unable to parse recipient!');
    // Compared as a UUID, as the original's uuid column did: in any case.
    out.recipient = recipient.toLowerCase();
  }
  return out;
}

/** The query of the public and internal `run_hosts` listings. Throws `bad_request` with the original's message. */
export function parseHostsQuery(raw: string): HostsQuery {
  const q = params(raw);
  const out: HostsQuery = {
    runLabels: labels(q, 'filter[run][labels]['),
    fields: fields(q, HOST_FIELDS, DEFAULT_HOST_FIELDS),
    ...page(q),
  };
  const st = status(q);
  if (st !== undefined) out.status = st;
  const runId = last(q, 'filter[run][id]');
  if (runId !== undefined) out.runId = isUuid(runId) ? runId.toLowerCase() : runId;
  const runService = last(q, 'filter[run][service]');
  if (runService !== undefined) out.runService = runService;
  const inventoryId = last(q, 'filter[inventory_id]');
  if (inventoryId !== undefined) {
    if (!isUuid(inventoryId)) throw bad('Unable to parse inventory id!');
    out.inventoryId = inventoryId.toLowerCase();
  }
  return out;
}

/** Go's url.QueryEscape: only A-Z a-z 0-9 - _ . ~ stay as they are, a space is '+'. */
function goQueryEscape(s: string): string {
  return encodeURIComponent(s)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, '+');
}

/** Go's url.Values.Encode: keys in byte order, each key's values in the order given. */
function goEncode(values: Map<string, string[]>): string {
  const keys = [...values.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const parts: string[] = [];
  for (const k of keys) for (const v of values.get(k) ?? []) parts.push(`${goQueryEscape(k)}=${goQueryEscape(v)}`);
  return parts.join('&');
}

/**
 * The pagination links of a listing. `public`: the original query re-encoded with limit/offset replaced (as the
 * original's public API does through url.Values); `internal`: the raw query kept as received with
 * `&limit=L&offset=O` appended (the original's internal run_hosts does no re-encoding).
 */
export function links(base: string, raw: string, limit: number, offset: number, total: number, mode: 'public' | 'internal'): PageLinks {
  const query = raw.startsWith('?') ? raw.slice(1) : raw;
  const values = new Map<string, string[]>();
  if (mode === 'public') {
    for (const [k, v] of params(query)) {
      const list = values.get(k);
      if (list === undefined) values.set(k, [v]);
      else list.push(v);
    }
  }
  const at = (o: number): string => {
    if (mode === 'internal') return `${base}?${query}&limit=${limit}&offset=${o}`;
    values.set('limit', [String(limit)]);
    values.set('offset', [String(o)]);
    return `${base}?${goEncode(values)}`;
  };
  const out: PageLinks = {
    first: at(0),
    last: at(Math.floor(Math.max(total - 1, 0) / limit) * limit),
  };
  if (offset + limit < total) out.next = at(offset + limit);
  if (offset > 0) out.previous = at(Math.max(offset - limit, 0));
  return out;
}

/** A run with only the asked fields; `name` and `web_console_url` are left out when null, as the original does. */
export function projectRun(view: PlaybookRunView, fields: readonly RunField[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    const v = view[f];
    if (v === null) continue;
    out[f] = v;
  }
  return out;
}

/** A run host in the original's item shape, with only the asked fields. */
export function projectHost(view: PlaybookHostView, fields: readonly HostField[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    switch (f) {
      case 'host':
        out.host = view.host;
        break;
      case 'status':
        out.status = view.status;
        break;
      case 'run':
        out.run = { id: view.run_id };
        break;
      case 'stdout':
        out.stdout = view.stdout;
        break;
      case 'links':
        out.links = view.inventory_id === null ? {} : { inventory_host: `/api/inventory/v1/hosts/${view.inventory_id}` };
        break;
      case 'inventory_id':
        if (view.inventory_id !== null) out.inventory_id = view.inventory_id;
        break;
    }
  }
  return out;
}
