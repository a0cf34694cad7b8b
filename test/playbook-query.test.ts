/**
 * The query parameters of the Playbook Dispatcher listings (`src/profiles/playbook-dispatcher/query.ts`), as the
 * original's public API tests and schema define them: defaults, each filter, the exact 400 messages, sparse
 * fieldsets, sort values, limit/offset bounds, and the pagination links char for char.
 */

import { describe, expect, it } from 'vitest';
import { DispatcherError } from '../src/core/errors.js';
import type { PlaybookHostView, PlaybookRunView } from '../src/profiles/playbook-dispatcher/model.js';
import { links, parseHostsQuery, parseRunsQuery, projectHost, projectRun } from '../src/profiles/playbook-dispatcher/query.js';

const RECIPIENT = '35720ecb-bc23-4b06-a8cd-f0c264edf2c1';
const INVENTORY = 'f7a4d4a5-6c1d-4b1a-9d0e-8a4a0f6b1c2d';

/** The error a call throws, asserting it is a 400. */
function badRequest(call: () => unknown): DispatcherError {
  try {
    call();
  } catch (e) {
    expect(e).toBeInstanceOf(DispatcherError);
    expect((e as DispatcherError).code).toBe('bad_request');
    return e as DispatcherError;
  }
  throw new Error('expected a bad_request error');
}

describe('runs query', () => {
  it('defaults: no filters, the default fields, newest first, 50 from 0', () => {
    expect(parseRunsQuery('')).toEqual({
      labels: {},
      fields: ['id', 'org_id', 'recipient', 'url', 'labels', 'timeout', 'status'],
      sort: 'desc',
      limit: 50,
      offset: 0,
    });
  });

  it('reads each status of the enum', () => {
    for (const s of ['running', 'success', 'failure', 'timeout', 'canceled'] as const) {
      expect(parseRunsQuery(`filter[status]=${s}`).status).toBe(s);
    }
  });

  it('refuses a status outside the enum, naming the parameter', () => {
    expect(badRequest(() => parseRunsQuery('filter[status]=done')).message).toContain('filter[status]');
    badRequest(() => parseRunsQuery('filter[status]='));
  });

  it('reads the service filter', () => {
    expect(parseRunsQuery('filter[service]=remediations').service).toBe('remediations');
  });

  it('reads a recipient UUID and refuses anything else with the original message', () => {
    expect(parseRunsQuery(`filter[recipient]=${RECIPIENT}`).recipient).toBe(RECIPIENT);
    expect(badRequest(() => parseRunsQuery('filter[recipient]=salad')).message).toBe('Unable to parse recipient!');
    expect(badRequest(() => parseRunsQuery('filter[recipient]=')).message).toBe('Unable to parse recipient!');
  });

  it('reads labels (all must match) and keeps the last value of a repeated key', () => {
    expect(parseRunsQuery('filter[labels][team]=a&filter[labels][env]=prod&filter[labels][team]=b').labels).toEqual({ team: 'b', env: 'prod' });
  });

  it('decodes encoded brackets and values', () => {
    expect(parseRunsQuery('filter%5Blabels%5D%5Bteam%5D=a%20b').labels).toEqual({ team: 'a b' });
  });

  it('reads fields[data] comma-separated and repeated', () => {
    expect(parseRunsQuery('fields[data]=id,name').fields).toEqual(['id', 'name']);
    expect(parseRunsQuery('fields[data]=id&fields[data]=created_at&fields[data]=web_console_url').fields).toEqual(['id', 'created_at', 'web_console_url']);
  });

  it('accepts every allowed run field', () => {
    const all = 'id,org_id,recipient,correlation_id,url,labels,timeout,status,service,name,web_console_url,created_at,updated_at';
    expect(parseRunsQuery(`fields[data]=${all}`).fields).toEqual(all.split(','));
  });

  it('refuses an unknown field with the original message', () => {
    expect(badRequest(() => parseRunsQuery('fields[data]=id,salad')).message).toBe('unknown field: salad');
    expect(badRequest(() => parseRunsQuery('fields[data]=id&fields[data]=salad')).message).toBe('unknown field: salad');
    // A host field is not a run field.
    expect(badRequest(() => parseRunsQuery('fields[data]=stdout')).message).toBe('unknown field: stdout');
  });

  it('reads the three sort values', () => {
    expect(parseRunsQuery('sort_by=created_at').sort).toBe('desc');
    expect(parseRunsQuery('sort_by=created_at:desc').sort).toBe('desc');
    expect(parseRunsQuery('sort_by=created_at:asc').sort).toBe('asc');
    expect(parseRunsQuery('sort_by=created_at%3Aasc').sort).toBe('asc');
  });

  it('refuses an empty or other sort value, naming the parameter', () => {
    expect(badRequest(() => parseRunsQuery('sort_by=')).message).toContain('sort_by');
    expect(badRequest(() => parseRunsQuery('sort_by=salad')).message).toContain('sort_by');
    badRequest(() => parseRunsQuery('sort_by=updated_at'));
    badRequest(() => parseRunsQuery('sort_by=created_at:up'));
  });

  it('takes limit 1..200 and offset from 0', () => {
    expect(parseRunsQuery('limit=1&offset=0')).toMatchObject({ limit: 1, offset: 0 });
    expect(parseRunsQuery('limit=200&offset=1000')).toMatchObject({ limit: 200, offset: 1000 });
  });

  it('refuses limit and offset out of range or not integers, naming the parameter', () => {
    for (const l of ['0', '201', '-1', 'abc', '1.5', '']) expect(badRequest(() => parseRunsQuery(`limit=${l}`)).message).toContain('limit');
    for (const o of ['-1', 'abc', '0.5', '']) expect(badRequest(() => parseRunsQuery(`offset=${o}`)).message).toContain('offset');
  });
});

describe('run_hosts query', () => {
  it('defaults: no filters, host/status/run, 50 from 0', () => {
    expect(parseHostsQuery('')).toEqual({ runLabels: {}, fields: ['host', 'status', 'run'], limit: 50, offset: 0 });
  });

  it('reads every filter', () => {
    expect(
      parseHostsQuery(
        `filter[status]=success&filter[run][id]=${RECIPIENT}&filter[run][service]=config_manager&filter[run][labels][a]=1&filter[run][labels][b]=2&filter[inventory_id]=${INVENTORY}`,
      ),
    ).toEqual({
      status: 'success',
      runId: RECIPIENT,
      runService: 'config_manager',
      runLabels: { a: '1', b: '2' },
      inventoryId: INVENTORY,
      fields: ['host', 'status', 'run'],
      limit: 50,
      offset: 0,
    });
  });

  it('keeps the last value of a repeated run label', () => {
    expect(parseHostsQuery('filter[run][labels][a]=1&filter[run][labels][a]=2').runLabels).toEqual({ a: '2' });
  });

  it('refuses a bad inventory id and a bad status', () => {
    expect(badRequest(() => parseHostsQuery('filter[inventory_id]=salad')).message).toBe('Unable to parse inventory id!');
    expect(badRequest(() => parseHostsQuery('filter[status]=queued')).message).toContain('filter[status]');
  });

  it('reads host fields and refuses run-only ones', () => {
    expect(parseHostsQuery('fields[data]=host,run,status,stdout,links,inventory_id').fields).toEqual(['host', 'run', 'status', 'stdout', 'links', 'inventory_id']);
    expect(parseHostsQuery('fields[data]=stdout&fields[data]=links').fields).toEqual(['stdout', 'links']);
    expect(badRequest(() => parseHostsQuery('fields[data]=id')).message).toBe('unknown field: id');
  });

  it('applies the same limit/offset bounds', () => {
    expect(parseHostsQuery('limit=7&offset=3')).toMatchObject({ limit: 7, offset: 3 });
    badRequest(() => parseHostsQuery('limit=201'));
    badRequest(() => parseHostsQuery('offset=-1'));
  });
});

describe('links', () => {
  const RUNS = '/api/playbook-dispatcher/v1/runs';

  it('public: the tested example of the original, char for char', () => {
    const raw = 'limit=1&offset=1&sort_by=created_at:desc&fields[data]=id&filter[status]=running';
    expect(links(RUNS, raw, 1, 1, 5, 'public')).toEqual({
      first: '/api/playbook-dispatcher/v1/runs?fields%5Bdata%5D=id&filter%5Bstatus%5D=running&limit=1&offset=0&sort_by=created_at%3Adesc',
      last: '/api/playbook-dispatcher/v1/runs?fields%5Bdata%5D=id&filter%5Bstatus%5D=running&limit=1&offset=4&sort_by=created_at%3Adesc',
      next: '/api/playbook-dispatcher/v1/runs?fields%5Bdata%5D=id&filter%5Bstatus%5D=running&limit=1&offset=2&sort_by=created_at%3Adesc',
      previous: '/api/playbook-dispatcher/v1/runs?fields%5Bdata%5D=id&filter%5Bstatus%5D=running&limit=1&offset=0&sort_by=created_at%3Adesc',
    });
  });

  it('public: no previous on the first page, no next on the last, empty result', () => {
    expect(links(RUNS, '', 50, 0, 0, 'public')).toEqual({ first: `${RUNS}?limit=50&offset=0`, last: `${RUNS}?limit=50&offset=0` });
    expect(links(RUNS, 'limit=2&offset=4', 2, 4, 5, 'public')).toEqual({
      first: `${RUNS}?limit=2&offset=0`,
      last: `${RUNS}?limit=2&offset=4`,
      previous: `${RUNS}?limit=2&offset=2`,
    });
  });

  it('public: keeps repeated values in order and escapes as Go does (space as +)', () => {
    expect(links(RUNS, 'fields[data]=id&fields[data]=name&filter[labels][k]=a b', 10, 0, 3, 'public').first).toBe(
      `${RUNS}?fields%5Bdata%5D=id&fields%5Bdata%5D=name&filter%5Blabels%5D%5Bk%5D=a+b&limit=10&offset=0`,
    );
  });

  it('public: previous never goes below 0, last rounds down to a page', () => {
    const l = links(RUNS, 'limit=10&offset=3', 10, 3, 25, 'public');
    expect(l.previous).toBe(`${RUNS}?limit=10&offset=0`);
    expect(l.last).toBe(`${RUNS}?limit=10&offset=20`);
    expect(l.next).toBe(`${RUNS}?limit=10&offset=13`);
  });

  it('internal: the raw query as received, limit and offset appended', () => {
    const base = '/internal/v2/run_hosts';
    const raw = 'filter[run][labels][team]=a b&limit=1&offset=1';
    expect(links(base, raw, 1, 1, 3, 'internal')).toEqual({
      first: '/internal/v2/run_hosts?filter[run][labels][team]=a b&limit=1&offset=1&limit=1&offset=0',
      last: '/internal/v2/run_hosts?filter[run][labels][team]=a b&limit=1&offset=1&limit=1&offset=2',
      next: '/internal/v2/run_hosts?filter[run][labels][team]=a b&limit=1&offset=1&limit=1&offset=2',
      previous: '/internal/v2/run_hosts?filter[run][labels][team]=a b&limit=1&offset=1&limit=1&offset=0',
    });
  });
});

describe('projection', () => {
  const run: PlaybookRunView = {
    id: 'r1',
    org_id: '5318290',
    recipient: RECIPIENT,
    correlation_id: 'c1',
    url: 'http://example.com/p.yml',
    labels: { team: 'a' },
    timeout: 3600,
    status: 'running',
    service: 'remediations',
    name: null,
    web_console_url: null,
    principal: 'jharting',
    recipient_config: {},
    response_full: true,
    created_at: '2026-01-01T00:00:00.000Z',
    updated_at: '2026-01-01T00:00:01.000Z',
  };

  it('keeps only the asked run fields, in that order', () => {
    const p = projectRun(run, ['status', 'id', 'service']);
    expect(p).toEqual({ status: 'running', id: 'r1', service: 'remediations' });
    expect(Object.keys(p)).toEqual(['status', 'id', 'service']);
  });

  it('omits null name and web_console_url, shows them when set', () => {
    expect(projectRun(run, ['id', 'name', 'web_console_url'])).toEqual({ id: 'r1' });
    expect(projectRun({ ...run, name: 'Fix', web_console_url: 'http://c' }, ['name', 'web_console_url'])).toEqual({ name: 'Fix', web_console_url: 'http://c' });
  });

  const host: PlaybookHostView = {
    id: 'h1',
    run_id: 'r1',
    host: 'web-1',
    status: 'success',
    stdout: 'ok\n',
    inventory_id: INVENTORY,
    subscription_manager_id: null,
    created_at: '2026-01-01T00:00:00.000Z',
    updated_at: '2026-01-01T00:00:01.000Z',
  };

  it('shows a host in the original item shape', () => {
    expect(projectHost(host, ['host', 'status', 'run', 'stdout', 'links', 'inventory_id'])).toEqual({
      host: 'web-1',
      status: 'success',
      run: { id: 'r1' },
      stdout: 'ok\n',
      links: { inventory_host: `/api/inventory/v1/hosts/${INVENTORY}` },
      inventory_id: INVENTORY,
    });
    expect(projectHost(host, ['host', 'status', 'run'])).toEqual({ host: 'web-1', status: 'success', run: { id: 'r1' } });
  });

  it('omits inventory_host and inventory_id when the host has no inventory id', () => {
    expect(projectHost({ ...host, inventory_id: null }, ['links', 'inventory_id'])).toEqual({ links: {} });
  });
});
