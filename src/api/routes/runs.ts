import type { FastifyInstance } from 'fastify';
import { DispatcherError } from '../../core/errors.js';
import { RUN_STATUSES, type RunStatus } from '../../core/types.js';
import type { Services } from '../../core/services.js';
import { RUN_SORT_FIELDS, type RunSortField } from '../../store/types.js';
import { pageLinks, parseQuery } from '../query.js';
import { attemptResource, pick, RUN_FIELDS, runResource } from '../resources.js';
import { anyObject, errors, idParams, links, listMeta } from '../schemas.js';

const spec = {
  filters: ['status', 'type', 'route', 'action', 'event', 'correlation_id'],
  single: ['event', 'correlation_id'],
  ranges: ['created_at', 'updated_at'],
  labels: true,
  sort: RUN_SORT_FIELDS,
  fields: RUN_FIELDS,
  paged: true,
} as const;

const republishSpec = { filters: ['status', 'type', 'route', 'service', 'org_id'], ranges: ['created_at'] } as const;

function checkStatuses(status: string[] | undefined): void {
  for (const s of status ?? []) {
    if (!(RUN_STATUSES as readonly string[]).includes(s)) {
      throw new DispatcherError('bad_request', `filter[status]: unknown status "${s}"; known: ${RUN_STATUSES.join(', ')}`);
    }
  }
}

export function registerRunRoutes(app: FastifyInstance, s: Services): void {
  app.get(
    '/v1/runs',
    {
      config: { permission: 'dispatcher:runs:read', query: spec },
      schema: {
        operationId: 'listRuns',
        tags: ['runs'],
        summary: 'List runs',
        description:
          'Filters: `filter[status]` (queued, running, success, failure, timeout, canceled; comma-separated for any of), ' +
          '`filter[type]` (event type), `filter[route]`, `filter[action]`, `filter[event]`, `filter[correlation_id]`, ' +
          '`filter[labels][KEY]=VALUE`, `filter[created_at][gte|gt|lt|lte]=TIME`, the same for `updated_at`. ' +
          '`sort=created_at|-created_at|updated_at|finished_at|status|route` (default `-created_at`), `limit` (1–1000, default 50), ' +
          '`offset`, `fields[data]=id,status,…`.',
        response: { 200: { type: 'object', properties: { data: { type: 'array', items: anyObject }, meta: listMeta, links } }, ...errors(400) },
      },
    },
    async (request) => {
      const q = parseQuery(request.url, spec);
      const status = q.filters.get('status');
      checkStatuses(status);
      const { items, total } = await s.records.listRuns({
        scope: request.scope,
        status: status as RunStatus[] | undefined,
        type: q.filters.get('type'),
        route: q.filters.get('route'),
        action: q.filters.get('action'),
        eventKey: q.filters.get('event')?.[0],
        correlationId: q.filters.get('correlation_id')?.[0],
        labels: q.labels,
        createdAt: q.ranges.get('created_at'),
        updatedAt: q.ranges.get('updated_at'),
        sort: q.sort ? { field: q.sort.field as RunSortField, direction: q.sort.direction } : undefined,
        limit: q.limit,
        offset: q.offset,
      });
      return {
        data: items.map((r) => pick(runResource(r), q.fields)),
        meta: { count: items.length, total },
        links: pageLinks('/v1/runs', q.raw, q.limit, q.offset, total),
      };
    },
  );

  app.post(
    '/v1/runs/republish',
    {
      config: { permission: 'dispatcher:runs:write', audit: 'runs.republish', query: republishSpec },
      schema: {
        operationId: 'republishRuns',
        tags: ['runs'],
        summary: 'Emit a read run event for every matching run',
        description:
          'Each run matching the filters gets a `read` run event in the outbox, so that the outputs relaying run events publish its ' +
          'current state after everything written before (consumers rebuild their state from them). Filters: `filter[status]`, ' +
          '`filter[type]`, `filter[route]`, `filter[service]`, `filter[org_id]` (comma-separated for any of), ' +
          '`filter[created_at][gte|gt|lt|lte]=TIME`; none: every run within reach. Answers how many run events were written.',
        response: { 200: { type: 'object', properties: { republished: { type: 'integer' } } }, ...errors(400) },
      },
    },
    async (request) => {
      const q = parseQuery(request.url, republishSpec);
      const status = q.filters.get('status');
      checkStatuses(status);
      const republished = await s.republishRuns({
        scope: request.scope,
        status: status as RunStatus[] | undefined,
        type: q.filters.get('type'),
        route: q.filters.get('route'),
        service: q.filters.get('service'),
        orgId: q.filters.get('org_id'),
        createdAt: q.ranges.get('created_at'),
      });
      request.auditDetails = { republished, filters: Object.fromEntries(q.raw) };
      return { republished };
    },
  );

  app.get(
    '/v1/runs/:id',
    { config: { permission: 'dispatcher:runs:read' }, schema: { operationId: 'getRun', tags: ['runs'], summary: 'One run, with every attempt', params: idParams, response: { 200: anyObject, ...errors(404) } } },
    async (request) => {
      const { id } = request.params as { id: string };
      const run = await s.records.getRun(id, request.scope);
      if (run === null) throw new DispatcherError('not_found', `no run ${id}`);
      const attempts = await s.records.getAttempts(id);
      return { ...runResource(run), attempts_log: attempts.map(attemptResource) };
    },
  );

  app.post(
    '/v1/runs/:id/cancel',
    {
      config: { permission: 'dispatcher:runs:write', audit: 'runs.cancel' },
      schema: {
        operationId: 'cancelRun',
        tags: ['runs'],
        summary: 'Cancel a queued or running run',
        description: 'A running attempt in this process is aborted; its outcome is not recorded.',
        params: idParams,
        response: { 200: anyObject, ...errors(404, 409) },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      return runResource(await s.cancelRun(id, request.scope));
    },
  );

  app.post(
    '/v1/runs/:id/retry',
    {
      config: { permission: 'dispatcher:runs:write', audit: 'runs.retry' },
      schema: {
        operationId: 'retryRun',
        tags: ['runs'],
        summary: 'Retry a failed, timed-out or canceled run',
        description: "The run is queued again with as many more attempts as its route allows and a new deadline.",
        params: idParams,
        response: { 200: anyObject, ...errors(404, 409) },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      return runResource(await s.retryRun(id, request.scope));
    },
  );
}
