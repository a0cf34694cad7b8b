import type { FastifyInstance } from 'fastify';
import { DispatcherError } from '../../core/errors.js';
import type { Services } from '../../core/services.js';
import type { IntakeResult } from '../../store/types.js';
import { intakeMessage } from '../intake.js';
import { auditEntry } from '../auth.js';
import { pageLinks, parseQuery } from '../query.js';
import { eventResource, runResource } from '../resources.js';
import { anyObject, errors, idParams, links, listMeta } from '../schemas.js';

export function registerEventRoutes(app: FastifyInstance, s: Services): void {
  app.post(
    '/v1/events',
    {
      config: { permission: 'dispatcher:events:write', audit: 'events.create' },
      schema: {
        tags: ['events'],
        summary: 'Send one event or a batch',
        description:
          'CloudEvents 1.0 over HTTP: structured (`application/cloudevents+json`), batched (`application/cloudevents-batch+json`) ' +
          'or binary mode (`ce-*` headers, the body is `data`); plain `application/json` holding an event or an array of events too. ' +
          'All or nothing: any problem rejects the whole request with every problem named, and the body is kept as a dead letter. ' +
          'The same (`source`, `id`) twice is one event: the answer says `duplicate` and no new runs are made. ' +
          'The 202 comes after the events and their runs are committed; results are in request order.',
        response: {
          202: {
            type: 'object',
            properties: {
              accepted: { type: 'integer' },
              duplicates: { type: 'integer' },
              events: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: { id: { type: 'string' }, status: { type: 'string', enum: ['accepted', 'duplicate'] }, runs: { type: 'array', items: { type: 'string' } } },
                },
              },
            },
          },
          ...errors(400, 413, 415, 503),
        },
      },
    },
    async (request, reply) => {
      const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
      const describe = (results: IntakeResult[]) => {
        const accepted = results.filter((r) => r.status === 'accepted').length;
        return { records: results.map((r) => r.key), details: { accepted, duplicates: results.length - accepted } };
      };
      // The 202's audit entry is committed with the events; a refusal's is written as the answer is sent.
      const audit = (results: IntakeResult[]) => auditEntry(request, 202, 'ok', describe(results))!;
      const { results, audited } = await s.receive({ ...intakeMessage(request, raw), audit });
      request.audited = audited;
      const about = describe(results);
      request.auditRecords = about.records;
      request.auditDetails = about.details;
      const { accepted } = about.details;
      return reply.code(202).send({
        accepted,
        duplicates: results.length - accepted,
        events: results.map((r) => ({ id: r.key, status: r.status, runs: r.runIds })),
      });
    },
  );

  const spec = { filters: ['type', 'source', 'id', 'routed'], single: ['source', 'id'], ranges: ['received_at'], sort: ['received_at'], extra: [] } as const;
  app.get(
    '/v1/events',
    {
      config: { permission: 'dispatcher:events:read' },
      schema: {
        tags: ['events'],
        summary: 'List stored events',
        description: 'Filters: `filter[type]`, `filter[source]`, `filter[id]` (the CloudEvents id), `filter[routed]=false` for unrouted events, `filter[received_at][gte|gt|lt|lte]`; `sort=received_at|-received_at`; `limit`, `offset`.',
        response: { 200: { type: 'object', properties: { data: { type: 'array', items: anyObject }, meta: listMeta, links } }, ...errors(400) },
      },
    },
    async (request) => {
      const q = parseQuery(request.url, spec);
      const routed = q.filters.get('routed')?.[0];
      if (routed !== undefined && routed !== 'true' && routed !== 'false') {
        throw new DispatcherError('bad_request', 'filter[routed]: must be true or false');
      }
      const { items, total } = await s.records.listEvents({
        scope: request.scope,
        type: q.filters.get('type'),
        source: q.filters.get('source')?.[0],
        id: q.filters.get('id')?.[0],
        unrouted: routed === undefined ? undefined : routed === 'false',
        receivedAt: q.ranges.get('received_at'),
        sort: q.sort ? { direction: q.sort.direction } : undefined,
        limit: q.limit,
        offset: q.offset,
      });
      return { data: items.map(eventResource), meta: { count: items.length, total }, links: pageLinks('/v1/events', q.raw, q.limit, q.offset, total) };
    },
  );

  app.get(
    '/v1/events/:id',
    {
      config: { permission: 'dispatcher:events:read' },
      schema: {
        tags: ['events'],
        summary: 'One stored event, with its runs',
        params: idParams,
        response: { 200: anyObject, ...errors(404) },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      const record = await s.records.getEvent(id, request.scope);
      if (record === null) throw new DispatcherError('not_found', `no event ${id}`);
      const runs = await s.records.listRuns({ eventKey: id, scope: request.scope, limit: 1000, offset: 0, sort: { field: 'created_at', direction: 'asc' } });
      return { ...eventResource(record), runs: runs.items.map(runResource) };
    },
  );
}
