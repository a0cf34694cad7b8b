import type { FastifyInstance } from 'fastify';
import { DispatcherError } from '../../core/errors.js';
import type { Services } from '../../core/services.js';
import type { IntakeResult } from '../../store/types.js';
import { eventAnswers, intakeMessage } from '../intake.js';
import { auditEntry } from '../auth.js';
import { pageLinks, parseQuery } from '../query.js';
import { eventResource, runResource } from '../resources.js';
import { anyObject, errors, idParams, links, listMeta } from '../schemas.js';

/** A CloudEvent as intake checks it (src/core/envelope.ts), for the OpenAPI document. */
const CLOUD_EVENT = {
  type: 'object',
  required: ['specversion', 'id', 'source', 'type'],
  properties: {
    specversion: { type: 'string', const: '1.0' },
    id: { type: 'string', minLength: 1, description: 'With `source`, identifies the event: the same pair twice is a duplicate.' },
    source: { type: 'string', minLength: 1 },
    type: { type: 'string', minLength: 1, description: 'Routes match it; a registered type has its `data` checked against its JSON Schema.' },
    subject: { type: 'string', minLength: 1 },
    time: { type: 'string', format: 'date-time' },
    datacontenttype: { type: 'string' },
    dataschema: { type: 'string' },
    topic: { type: 'string', description: 'Words separated by single dots; routes match it with AMQP patterns.' },
    correlationid: { type: 'string' },
    tenant: { type: 'string' },
    data: { description: 'Any JSON.' },
    data_base64: { type: 'string', contentEncoding: 'base64' },
  },
  additionalProperties: { type: ['string', 'number', 'boolean'], description: 'Extension attributes: lower-case letters and digits.' },
} as const;

const EXAMPLE_EVENT = { specversion: '1.0', id: 'try-1', source: 'urn:docs', type: 'example.hello', data: { hi: 'there' } };

/** The request of `POST /v1/events` for the OpenAPI document: the body is read raw, so this only describes it. */
const INTAKE_REQUEST = {
  body: {
    description: 'One event or a batch, in one of the CloudEvents HTTP modes.',
    content: {
      // One example each: what /docs fills in for "Try it out".
      'application/cloudevents+json': { schema: { ...CLOUD_EVENT, examples: [EXAMPLE_EVENT] } },
      'application/cloudevents-batch+json': { schema: { type: 'array', items: CLOUD_EVENT, examples: [[EXAMPLE_EVENT, { ...EXAMPLE_EVENT, id: 'try-2' }]] } },
      'application/json': { schema: { oneOf: [CLOUD_EVENT, { type: 'array', items: CLOUD_EVENT }], examples: [EXAMPLE_EVENT] } },
      'application/octet-stream': { schema: { description: 'Binary mode: the body is `data`, the attributes are `ce-*` headers.' } },
    },
  },
  headers: {
    type: 'object',
    properties: Object.fromEntries(
      ['specversion', 'id', 'source', 'type', 'subject', 'time'].map((a) => [`ce-${a}`, { type: 'string', description: `Binary mode: the \`${a}\` attribute (percent-encoded).` }]),
    ),
  },
};

/** The answer to `POST /v1/events` (202 or 207), and to the replay of an intake dead letter. */
export const INTAKE_ANSWER = {
  type: 'object',
  required: ['accepted', 'duplicates', 'refused', 'events'],
  properties: {
    accepted: { type: 'integer', description: 'Events taken now.' },
    duplicates: { type: 'integer', description: 'Events taken before (same `source` and `id`): no new runs.' },
    refused: { type: 'integer', description: 'Events of the batch refused, each kept as a dead letter.' },
    events: {
      type: 'array',
      description: 'One per event, in request order.',
      items: {
        type: 'object',
        required: ['index'],
        properties: {
          index: { type: 'integer', description: 'Its place in the request (0 for a single event).' },
          id: { type: 'string', description: "The dispatcher's event id (accepted and duplicate)." },
          status: { type: 'string', enum: ['accepted', 'duplicate', 'refused'] },
          runs: { type: 'array', items: { type: 'string' }, description: 'The runs planned for it (none for a duplicate).' },
          code: { type: 'string', description: 'Why it was refused: invalid_event, schema_violation, unknown_type or too_deep.' },
          message: { type: 'string' },
          problems: {
            type: 'array',
            items: { type: 'object', properties: { pointer: { type: 'string', description: 'JSON pointer into the request body.' }, message: { type: 'string' } } },
          },
          dead_letter: { type: 'string', description: 'The dead letter that keeps the refused event.' },
        },
      },
    },
  },
} as const;

export function registerEventRoutes(app: FastifyInstance, s: Services): void {
  app.post(
    '/v1/events',
    {
      config: { permission: 'dispatcher:events:write', audit: 'events.create', openapi: INTAKE_REQUEST },
      schema: {
        operationId: 'sendEvents',
        tags: ['events'],
        summary: 'Send one event or a batch',
        description:
          'CloudEvents 1.0 over HTTP: structured (`application/cloudevents+json`), batched (`application/cloudevents-batch+json`) ' +
          'or binary mode (`ce-*` headers, the body is `data`); plain `application/json` holding an event or an array of events too. ' +
          'A single event with a problem is refused (400) with every problem named, and the body is kept as a dead letter. ' +
          'A batch keeps its good events: when some are bad, the answer is 207 and each bad event is `refused` with its index, code and ' +
          'problems, and kept as a dead letter of its own that can be replayed; when all are bad, the whole batch is refused (400). ' +
          'The same (`source`, `id`) twice is one event: the answer says `duplicate` and no new runs are made. ' +
          'The answer comes after the events, their runs and the dead letters are committed; `events` is in request order.',
        response: {
          202: { description: 'Every event taken (accepted, or a duplicate of one taken before).', ...INTAKE_ANSWER },
          207: { description: 'Some events of the batch taken, the others refused: see each one\'s `status`.', ...INTAKE_ANSWER },
          ...errors(400, 413, 415, 503),
        },
      },
    },
    async (request, reply) => {
      const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
      const describe = (results: IntakeResult[], refused: number) => {
        const accepted = results.filter((r) => r.status === 'accepted').length;
        return { records: results.map((r) => r.key), details: { accepted, duplicates: results.length - accepted, refused } };
      };
      // The answer's audit entry is committed with the events; a refusal's is written as the answer is sent.
      const audit = (results: IntakeResult[], refused: number) => auditEntry(request, refused > 0 ? 207 : 202, 'ok', describe(results, refused))!;
      const answer = await s.receive({ ...intakeMessage(request, raw), audit });
      request.audited = answer.audited;
      const about = describe(answer.results, answer.refused.length);
      request.auditRecords = about.records;
      request.auditDetails = about.details;
      return reply.code(answer.refused.length > 0 ? 207 : 202).send({ ...about.details, events: eventAnswers(answer) });
    },
  );

  const spec = { filters: ['type', 'source', 'id', 'routed'], single: ['source', 'id'], ranges: ['received_at'], sort: ['received_at'], extra: [], paged: true } as const;
  app.get(
    '/v1/events',
    {
      config: { permission: 'dispatcher:events:read', query: spec },
      schema: {
        operationId: 'listEvents',
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
        operationId: 'getEvent',
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
