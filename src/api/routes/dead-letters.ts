import type { FastifyInstance } from 'fastify';
import { DispatcherError } from '../../core/errors.js';
import type { Services } from '../../core/services.js';
import { eventAnswers } from '../intake.js';
import { pageLinks, parseQuery } from '../query.js';
import { deadLetterResource, runResource } from '../resources.js';
import { anyObject, errors, idParams, links, listMeta } from '../schemas.js';

const spec = { filters: ['origin', 'reason', 'source', 'run', 'replayed'], single: ['source', 'run'], ranges: ['last_seen_at'], paged: true } as const;

export function registerDeadLetterRoutes(app: FastifyInstance, s: Services): void {
  app.get(
    '/v1/dead-letters',
    {
      config: { permission: 'dispatcher:dead-letters:read', query: spec },
      schema: {
        operationId: 'listDeadLetters',
        tags: ['dead-letters'],
        summary: 'List dead letters',
        description: 'Filters: `filter[origin]` (intake or run), `filter[reason]` (error codes), `filter[source]` (input or route), `filter[run]`, `filter[replayed]=true|false`, `filter[last_seen_at][gte|…]`; `limit`, `offset`. Newest first.',
        response: { 200: { type: 'object', properties: { data: { type: 'array', items: anyObject }, meta: listMeta, links } }, ...errors(400) },
      },
    },
    async (request) => {
      const q = parseQuery(request.url, spec);
      const origin = q.filters.get('origin')?.[0];
      if (origin !== undefined && origin !== 'intake' && origin !== 'run') throw new DispatcherError('bad_request', 'filter[origin]: must be intake or run');
      const replayed = q.filters.get('replayed')?.[0];
      if (replayed !== undefined && replayed !== 'true' && replayed !== 'false') throw new DispatcherError('bad_request', 'filter[replayed]: must be true or false');
      const { items, total } = await s.records.listDeadLetters({
        scope: request.scope,
        origin,
        reason: q.filters.get('reason'),
        source: q.filters.get('source')?.[0],
        runId: q.filters.get('run')?.[0],
        replayed: replayed === undefined ? undefined : replayed === 'true',
        lastSeenAt: q.ranges.get('last_seen_at'),
        limit: q.limit,
        offset: q.offset,
      });
      return { data: items.map(deadLetterResource), meta: { count: items.length, total }, links: pageLinks('/v1/dead-letters', q.raw, q.limit, q.offset, total) };
    },
  );

  app.get(
    '/v1/dead-letters/:id',
    { config: { permission: 'dispatcher:dead-letters:read' }, schema: { operationId: 'getDeadLetter', tags: ['dead-letters'], summary: 'One dead letter, with its raw bytes', params: idParams, response: { 200: anyObject, ...errors(404) } } },
    async (request) => {
      const { id } = request.params as { id: string };
      const dl = await s.records.getDeadLetter(id, request.scope);
      if (dl === null) throw new DispatcherError('not_found', `no dead letter ${id}`);
      return deadLetterResource(dl);
    },
  );

  app.post(
    '/v1/dead-letters/:id/replay',
    {
      config: { permission: 'dispatcher:dead-letters:write', audit: 'dead-letters.replay' },
      schema: {
        operationId: 'replayDeadLetter',
        tags: ['dead-letters'],
        summary: 'Replay a dead letter',
        description: 'An intake dead letter goes through intake again as it came (it may pass now); a run dead letter retries its run. A replay that fails again answers with the error, and the dead letter counts one more attempt.',
        params: idParams,
        response: { 200: anyObject, ...errors(400, 404, 409) },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      const { answer, run } = await s.replayDeadLetter(id, request.scope);
      return {
        id,
        replayed: true,
        ...(answer ? { events: eventAnswers(answer) } : {}),
        ...(run ? { run: runResource(run) } : {}),
      };
    },
  );

  app.delete(
    '/v1/dead-letters/:id',
    { config: { permission: 'dispatcher:dead-letters:write', audit: 'dead-letters.delete' }, schema: { operationId: 'deleteDeadLetter', tags: ['dead-letters'], summary: 'Delete a dead letter', params: idParams, response: { 204: { type: 'null' }, ...errors(404) } } },
    async (request, reply) => {
      const { id } = request.params as { id: string };
      if (!(await s.deleteDeadLetter(id, request.scope))) throw new DispatcherError('not_found', `no dead letter ${id}`);
      return reply.code(204).send();
    },
  );
}
