/**
 * The query language of every list (`src/api/query.ts`): what it accepts, and that it refuses what cannot
 * mean what it says, naming the parameter: unknown filters, empty values, dates that do not exist or have no
 * time, parameters given twice.
 */

import { describe, expect, it } from 'vitest';
import { parseQuery } from '../src/api/query.js';

const spec = { filters: ['status', 'route', 'event'], single: ['event'], ranges: ['created_at'], labels: true, maps: ['details'], sort: ['created_at', 'status'], fields: ['id', 'status'] } as const;
const parse = (query: string) => parseQuery(`/v1/x?${query}`, spec);

function refused(query: string): string {
  try {
    parse(query);
  } catch (err) {
    expect((err as { code?: string }).code).toBe('bad_request');
    return (err as Error).message;
  }
  throw new Error(`${query} was accepted`);
}

describe('the query language', () => {
  it('reads filters, labels, details, ranges, sort, paging and fields', () => {
    const q = parse(
      'filter[status]=success,failure&filter[status]=timeout&filter[event]=a,b&filter[labels][team]=noc&filter[details][inv]=7' +
        '&filter[created_at][gte]=2026-11-01T00:00:00Z&filter[created_at][lt]=2026-11-02T00:00:00.500+01:00&sort=-status&limit=5&offset=10&fields[data]=id',
    );
    expect(q.filters.get('status')).toEqual(['success', 'failure', 'timeout']);
    expect(q.filters.get('event')).toEqual(['a,b']);
    expect(q.labels).toEqual({ team: 'noc' });
    expect(q.maps.get('details')).toEqual({ inv: '7' });
    expect(q.ranges.get('created_at')).toEqual({ from: Date.UTC(2026, 10, 1), to: Date.UTC(2026, 10, 1, 23, 0, 0, 500) });
    expect(q.sort).toEqual({ field: 'status', direction: 'desc' });
    expect([q.limit, q.offset, q.fields]).toEqual([5, 10, ['id']]);
    expect(parse('filter[created_at][gte]=1700000000000').ranges.get('created_at')).toEqual({ from: 1_700_000_000_000 });
    // A `+` left unencoded arrives as a space: it is still the zone's `+`.
    expect(parse('filter[created_at][gte]=2026-11-01T01:00:00%2B01:00').ranges.get('created_at')).toEqual({ from: Date.UTC(2026, 10, 1) });
    expect(parse('filter[created_at][gte]=2024-02-29T23:59:59Z').ranges.get('created_at')).toEqual({ from: Date.UTC(2024, 1, 29, 23, 59, 59) });
  });

  it('refuses empty values, naming the parameter', () => {
    expect(refused('filter[status]=success,')).toMatch(/^filter\[status\]: holds an empty value/);
    expect(refused('filter[status]=')).toMatch(/^filter\[status\]: must not be empty/);
    expect(refused('filter[status]=,success')).toMatch(/empty value/);
    expect(refused('filter[event]=')).toMatch(/^filter\[event\]: must not be empty/);
    expect(refused('filter[labels][a]=')).toMatch(/^filter\[labels\]\[a\]: must not be empty/);
    expect(refused('filter[details][k]=')).toMatch(/^filter\[details\]\[k\]: must not be empty/);
  });

  it('refuses dates that do not exist, or have no time or no zone', () => {
    expect(refused('filter[created_at][gte]=2026-02-30T00:00:00Z')).toMatch(/2026-02-30T00:00:00Z is not a date and time that exists/);
    expect(refused('filter[created_at][gte]=2025-02-29T00:00:00Z')).toMatch(/not a date and time that exists/);
    expect(refused('filter[created_at][gte]=2026-04-31T12:00:00Z')).toMatch(/not a date and time that exists/);
    expect(refused('filter[created_at][gte]=2026-11-01T24:00:00Z')).toMatch(/not a date and time that exists/);
    expect(refused('filter[created_at][gte]=2026-11-01')).toMatch(/must be an RFC 3339 date-time with a zone/);
    expect(refused('filter[created_at][gte]=2026-11-01T10:00:00')).toMatch(/must be an RFC 3339 date-time with a zone/);
    expect(refused('filter[created_at][gte]=yesterday')).toMatch(/must be an RFC 3339/);
  });

  it('refuses limit, offset and sort given twice, and unknown parameters', () => {
    expect(refused('limit=5&limit=6')).toMatch(/^limit: is given twice/);
    expect(refused('offset=0&offset=0')).toMatch(/^offset: is given twice/);
    expect(refused('sort=status&sort=-status')).toMatch(/^sort: is given twice/);
    expect(refused('filter[colour]=red')).toMatch(/^filter\[colour\]: unknown filter; known: status, route, event, created_at, labels, details/);
    expect(refused('page=2')).toMatch(/^page: unknown parameter/);
  });
});
