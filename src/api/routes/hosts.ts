/**
 * Hosts: the targets inside runs (a machine of a playbook run, a recipient of a broadcast), each with its
 * own status and log. Listed like runs: filters, sparse fieldsets, sorting and paging.
 */

import type { FastifyInstance } from 'fastify';
import { DispatcherError } from '../../core/errors.js';
import type { Services } from '../../core/services.js';
import { RUN_STATUSES, type RunStatus } from '../../core/types.js';
import { HOST_SORT_FIELDS, type HostQuery, type HostSortField } from '../../store/types.js';
import { pageLinks, parseQuery, type ParsedQuery } from '../query.js';
import { HOST_FIELDS, hostResource, pick } from '../resources.js';
import { anyObject, errors, idParams, links, listMeta } from '../schemas.js';

const spec = {
  filters: ['status', 'run', 'name', 'route', 'service'],
  single: ['name'],
  ranges: ['created_at'],
  labels: true,
  maps: ['details'],
  sort: HOST_SORT_FIELDS,
  fields: HOST_FIELDS,
  paged: true,
} as const;

/** A run's hosts: the same, without the run filter. */
const runHostsSpec = { ...spec, filters: spec.filters.filter((f) => f !== 'run') };

const FILTERS =
  'Filters: `filter[status]` (comma-separated for any of), `filter[run]` (run ids), `filter[name]`, `filter[route]` and `filter[service]` (of the run), ' +
  "`filter[details][KEY]=VALUE` (the host's details), `filter[labels][KEY]=VALUE` (its run's labels), `filter[created_at][gte|gt|lt|lte]=TIME`. " +
  '`sort=created_at|-created_at|updated_at|name|status` (default `-created_at`), `limit` (1–1000, default 50), `offset`, `fields[data]=id,status,…`.';

function hostQuery(q: ParsedQuery, scope: HostQuery['scope']): HostQuery {
  const status = q.filters.get('status');
  for (const s of status ?? []) {
    if (!(RUN_STATUSES as readonly string[]).includes(s)) throw new DispatcherError('bad_request', `filter[status]: unknown status "${s}"; known: ${RUN_STATUSES.join(', ')}`);
  }
  return {
    scope,
    status: status as RunStatus[] | undefined,
    runId: q.filters.get('run'),
    name: q.filters.get('name'),
    route: q.filters.get('route'),
    service: q.filters.get('service'),
    details: q.maps.get('details'),
    runLabels: Object.keys(q.labels).length > 0 ? q.labels : undefined,
    createdAt: q.ranges.get('created_at'),
    sort: q.sort ? { field: q.sort.field as HostSortField, direction: q.sort.direction } : undefined,
    limit: q.limit,
    offset: q.offset,
  };
}

const listSchema = { 200: { type: 'object', properties: { data: { type: 'array', items: anyObject }, meta: listMeta, links } }, ...errors(400) };

export function registerHostRoutes(app: FastifyInstance, s: Services): void {
  app.get(
    '/v1/hosts',
    { config: { permission: 'dispatcher:runs:read', query: spec }, schema: { operationId: 'listHosts', tags: ['hosts'], summary: 'List hosts', description: FILTERS, response: listSchema } },
    async (request) => {
      const q = parseQuery(request.url, spec);
      const { items, total } = await s.records.listHosts(hostQuery(q, request.scope));
      return { data: items.map((h) => pick(hostResource(h), q.fields)), meta: { count: items.length, total }, links: pageLinks('/v1/hosts', q.raw, q.limit, q.offset, total) };
    },
  );

  app.get(
    '/v1/hosts/:id',
    { config: { permission: 'dispatcher:runs:read' }, schema: { operationId: 'getHost', tags: ['hosts'], summary: 'One host, with its log', params: idParams, response: { 200: anyObject, ...errors(404) } } },
    async (request) => {
      const { id } = request.params as { id: string };
      const host = await s.records.getHost(id, request.scope);
      if (host === null) throw new DispatcherError('not_found', `no host ${id}`);
      return hostResource(host);
    },
  );

  app.get(
    '/v1/runs/:id/hosts',
    {
      config: { permission: 'dispatcher:runs:read', query: runHostsSpec },
      schema: { operationId: 'listRunHosts', tags: ['hosts'], summary: "A run's hosts", description: FILTERS.replace('`filter[run]` (run ids), ', ''), params: idParams, response: { ...listSchema, ...errors(400, 404) } },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      if ((await s.records.getRun(id, request.scope)) === null) throw new DispatcherError('not_found', `no run ${id}`);
      const q = parseQuery(request.url, runHostsSpec);
      const { items, total } = await s.records.listHosts({ ...hostQuery(q, request.scope), runId: [id] });
      return {
        data: items.map((h) => pick(hostResource(h), q.fields)),
        meta: { count: items.length, total },
        links: pageLinks(`/v1/runs/${encodeURIComponent(id)}/hosts`, q.raw, q.limit, q.offset, total),
      };
    },
  );
}
