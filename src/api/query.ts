/**
 * Query parsing for list endpoints, JSON:API style:
 *
 *   filter[status]=failure,timeout      any of (also as repeated parameters)
 *   filter[labels][team]=noc            every label pair must match (also filter[details][k]=v where a list has it)
 *   filter[created_at][gte]=2026-11-01T00:00:00Z   also gt, lt, lte; an RFC 3339 date-time or epoch milliseconds
 *   sort=-created_at                    or created_at:desc; a leading '-' means descending
 *   limit=50&offset=100                 paging; answers carry meta.total and links
 *   fields[data]=id,status              sparse fieldsets
 *
 * Anything unknown is a `bad_request` naming the parameter, so a typo never silently widens a query; so is
 * anything that cannot mean what it says: an empty value (`filter[status]=success,`), a date that does not
 * exist (February 30) or has no time, `limit`, `offset` or `sort` given twice.
 */

import { DispatcherError } from '../core/errors.js';
import type { TimeRange, SortDirection } from '../store/types.js';

export interface ParsedQuery {
  filters: Map<string, string[]>;
  labels: Record<string, string>;
  /** Key = value filters besides `labels`, by name: `filter[details][k]=v`. */
  maps: Map<string, Record<string, string>>;
  ranges: Map<string, TimeRange>;
  sort?: { field: string; direction: SortDirection };
  limit: number;
  offset: number;
  fields?: string[];
  /** Parameters other than filter/sort/limit/offset/fields, for endpoints that take more. */
  rest: URLSearchParams;
  raw: URLSearchParams;
}

export interface QuerySpec {
  filters: readonly string[];
  ranges?: readonly string[];
  labels?: boolean;
  /** Key = value filters besides `labels` (`details`). */
  maps?: readonly string[];
  sort?: readonly string[];
  fields?: readonly string[];
  extra?: readonly string[];
  /** Filters that take one value as it is (no comma splitting): ids, sources, URIs. */
  single?: readonly string[];
  maxLimit?: number;
  defaultLimit?: number;
  /** Answers are pages (`limit`, `offset`): for the OpenAPI document. */
  paged?: boolean;
}

/** `limit` when none is given, and the most it may be, unless the spec says otherwise. */
const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 1000;

const FILTER = /^filter\[([a-z_]+)\](?:\[([^\]]*)\])?$/;

/** Parameters that mean one thing: a second one would contradict the first. */
const ONCE = new Set(['limit', 'offset', 'sort']);

/**
 * RFC 3339 `date-time` (section 5.6): a full date, `T`, a time with seconds, a zone. A zone's `+` left
 * unencoded in a query string arrives as a space: it is read as the `+` it was.
 */
const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[ +-]\d{2}:\d{2})$/;

export function parseQuery(url: string, spec: QuerySpec): ParsedQuery {
  const at = url.indexOf('?');
  const raw = new URLSearchParams(at < 0 ? '' : url.slice(at + 1));
  const out: ParsedQuery = {
    filters: new Map(),
    labels: {},
    maps: new Map(),
    ranges: new Map(),
    limit: spec.defaultLimit ?? DEFAULT_LIMIT,
    offset: 0,
    rest: new URLSearchParams(),
    raw,
  };
  const maxLimit = spec.maxLimit ?? MAX_LIMIT;
  const seen = new Set<string>();
  for (const [key, value] of raw) {
    if (ONCE.has(key)) {
      if (seen.has(key)) bad(key, 'is given twice');
      seen.add(key);
    }
    const f = FILTER.exec(key);
    if (f) {
      const [, name, sub] = f as unknown as [string, string, string | undefined];
      if (name === 'labels' && spec.labels) {
        if (sub === undefined || sub === '') bad(key, 'name a label: filter[labels][KEY]=VALUE');
        if (value === '') bad(key, 'must not be empty');
        out.labels[sub] = value;
      } else if (spec.maps?.includes(name)) {
        if (sub === undefined || sub === '') bad(key, `name a key: filter[${name}][KEY]=VALUE`);
        if (value === '') bad(key, 'must not be empty');
        out.maps.set(name, { ...(out.maps.get(name) ?? {}), [sub]: value });
      } else if (spec.ranges?.includes(name)) {
        if (sub === undefined) bad(key, 'name a bound: gt, gte, lt or lte');
        out.ranges.set(name, addBound(out.ranges.get(name) ?? {}, sub, parseTime(key, value), key));
      } else if (spec.filters.includes(name) && sub === undefined) {
        const values = spec.single?.includes(name) ? [value] : value.split(',').map((v) => v.trim());
        if (values.some((v) => v === '')) bad(key, values.length === 1 ? 'must not be empty' : 'holds an empty value (a comma too many?)');
        out.filters.set(name, [...(out.filters.get(name) ?? []), ...values]);
      } else {
        bad(key, `unknown filter; known: ${[...spec.filters, ...(spec.ranges ?? []), ...(spec.labels ? ['labels'] : []), ...(spec.maps ?? [])].join(', ')}`);
      }
      continue;
    }
    switch (key) {
      case 'limit':
        out.limit = integer(key, value, 1, maxLimit);
        break;
      case 'offset':
        out.offset = integer(key, value, 0, Number.MAX_SAFE_INTEGER);
        break;
      case 'sort': {
        if (!spec.sort) bad(key, 'this list cannot be sorted');
        let field = value.trim();
        let direction: SortDirection = 'asc';
        if (field.startsWith('-')) {
          field = field.slice(1);
          direction = 'desc';
        } else if (field.includes(':')) {
          const [f, d] = field.split(':', 2) as [string, string];
          if (d !== 'asc' && d !== 'desc') bad(key, 'direction must be asc or desc');
          field = f;
          direction = d;
        }
        if (!spec.sort.includes(field)) bad(key, `cannot sort by "${field}"; known: ${spec.sort.join(', ')}`);
        out.sort = { field, direction };
        break;
      }
      case 'fields[data]': {
        if (!spec.fields) bad(key, 'this list has no sparse fieldsets');
        const fields = value.split(',').map((v) => v.trim()).filter((v) => v !== '');
        for (const field of fields) if (!spec.fields.includes(field)) bad(key, `unknown field: ${field}`);
        out.fields = [...new Set([...(out.fields ?? []), ...fields])];
        break;
      }
      default:
        if (spec.extra?.includes(key)) out.rest.append(key, value);
        else bad(key, 'unknown parameter');
    }
  }
  return out;
}

function bad(key: string, message: string): never {
  throw new DispatcherError('bad_request', `${key}: ${message}`, { problems: [{ pointer: `?${key}`, message }] });
}

function integer(key: string, value: string, min: number, max: number): number {
  if (!/^\d+$/.test(value)) bad(key, 'must be a whole number');
  const n = Number(value);
  if (n < min || n > max) bad(key, `must be between ${min} and ${max}`);
  return n;
}

function parseTime(key: string, value: string): number {
  if (/^\d+$/.test(value)) return Number(value);
  const m = DATE_TIME.exec(value);
  if (m === null) bad(key, 'must be an RFC 3339 date-time with a zone (2026-11-01T00:00:00Z) or epoch milliseconds');
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  // Date.parse rolls February 30 over into March: a date that does not exist is refused instead.
  const days = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (month < 1 || month > 12 || day < 1 || day > days || hour > 23 || minute > 59 || second > 60) bad(key, `${value} is not a date and time that exists`);
  const ms = Date.parse(m[8]!.startsWith(' ') ? `${value.slice(0, -6)}+${value.slice(-5)}` : value);
  if (Number.isNaN(ms)) bad(key, `${value} is not a date and time that exists`);
  return ms;
}

function addBound(range: TimeRange, bound: string, ms: number, key: string): TimeRange {
  switch (bound) {
    case 'gte':
      return { ...range, from: ms };
    case 'gt':
      return { ...range, from: ms + 1 };
    case 'lt':
      return { ...range, to: ms };
    case 'lte':
      return { ...range, to: ms + 1 };
    default:
      bad(key, 'bound must be gt, gte, lt or lte');
  }
}

/** Paging links: the same query with `limit`/`offset` replaced, keys sorted. */
export function pageLinks(base: string, raw: URLSearchParams, limit: number, offset: number, total: number) {
  const link = (o: number) => {
    const params = new URLSearchParams([...raw].filter(([k]) => k !== 'limit' && k !== 'offset'));
    params.set('limit', String(limit));
    params.set('offset', String(o));
    params.sort();
    return `${base}?${params.toString()}`;
  };
  const last = Math.floor(Math.max(total - 1, 0) / limit) * limit;
  return {
    first: link(0),
    last: link(last),
    ...(offset + limit < total ? { next: link(offset + limit) } : {}),
    ...(offset > 0 ? { previous: link(Math.max(offset - limit, 0)) } : {}),
  };
}

/**
 * The query parameters of a list endpoint as a JSON Schema (`querystring`), for the OpenAPI document: made
 * from the same spec `parseQuery` checks requests with, so the document cannot promise what is refused.
 * Labels and other key = value filters (`filter[labels][<key>]`) have no fixed name: the route's
 * description says them.
 */
export function querySchema(spec: QuerySpec): { type: 'object'; properties: Record<string, object> } {
  const properties: Record<string, object> = {};
  for (const f of spec.filters) {
    properties[`filter[${f}]`] = {
      type: 'string',
      description: spec.single?.includes(f) ? `Only records whose ${f} is this value.` : `Only records whose ${f} is any of these (comma-separated, or the parameter repeated).`,
    };
  }
  for (const r of spec.ranges ?? []) {
    for (const bound of ['gte', 'gt', 'lt', 'lte']) {
      properties[`filter[${r}][${bound}]`] = { type: 'string', description: `${r} ${{ gte: 'at or after', gt: 'after', lt: 'before', lte: 'at or before' }[bound]} this time: RFC 3339 date-time or epoch milliseconds.` };
    }
  }
  if (spec.sort !== undefined && spec.sort.length > 0) {
    properties.sort = { type: 'string', enum: spec.sort.flatMap((f) => [f, `-${f}`]), description: 'Order: a leading `-` is descending.' };
  }
  if (spec.fields !== undefined) properties['fields[data]'] = { type: 'string', description: `Only these fields of each record (comma-separated): ${spec.fields.join(', ')}.` };
  for (const extra of spec.extra ?? []) properties[extra] = { type: 'string' };
  if (spec.paged === true) {
    properties.limit = { type: 'integer', minimum: 1, maximum: spec.maxLimit ?? MAX_LIMIT, default: spec.defaultLimit ?? DEFAULT_LIMIT, description: 'How many records.' };
    properties.offset = { type: 'integer', minimum: 0, default: 0, description: 'Skip this many.' };
  }
  return { type: 'object', properties };
}
