/**
 * `GET /v1/stream`: run events and host events as server-sent events
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html). Each message has `id: <seq>`,
 * `event: run.<event_type>` with the run as JSON, or `event: host.<event_type>` with the host. A client that
 * reconnects with `Last-Event-ID` (or `?after=SEQ`) gets what it missed from the outbox first, then live events.
 */

import type { FastifyInstance } from 'fastify';
import { DispatcherError } from '../../core/errors.js';
import type { Services } from '../../core/services.js';
import type { OutboxEvent } from '../../core/types.js';
import { inScope } from '../../core/principal.js';
import { API_HEADERS } from '../headers.js';
import { parseQuery } from '../query.js';
import { hostEventResource, runEventResource } from '../resources.js';

const spec = { filters: ['run', 'route', 'status', 'kind'], extra: ['after'] } as const;

export function registerStreamRoute(app: FastifyInstance, s: Services): void {
  // Streams never end by themselves: stopping the server ends them, so that shutdown stays bounded.
  const open = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const end of open) end();
  });

  app.get(
    '/v1/stream',
    {
      config: { permission: 'dispatcher:runs:read', query: spec },
      schema: {
        operationId: 'streamRunEvents',
        tags: ['stream'],
        summary: 'Run events, live (server-sent events)',
        description:
          'Filters: `filter[run]`, `filter[route]`, `filter[status]`, `filter[kind]` (`run` or `host`; both by default). ' +
          'Resume with the `Last-Event-ID` header or `?after=SEQ`.',
      },
    },
    async (request, reply) => {
      const q = parseQuery(request.url, spec);
      const afterText = q.rest.get('after') ?? (request.headers['last-event-id'] as string | undefined);
      if (afterText !== undefined && !/^\d+$/.test(afterText)) throw new DispatcherError('bad_request', 'after: must be a run-event sequence number');
      const runs = q.filters.get('run');
      const routes = q.filters.get('route');
      const statuses = q.filters.get('status');
      const kinds = q.filters.get('kind');
      for (const k of kinds ?? []) if (k !== 'run' && k !== 'host') throw new DispatcherError('bad_request', `filter[kind]: "${k}" is neither run nor host`);
      const scope = request.scope;
      const wanted = (e: OutboxEvent) =>
        (kinds === undefined || kinds.includes(e.kind)) &&
        (runs === undefined || runs.includes(e.runId)) &&
        (routes === undefined || routes.includes((e.kind === 'run' ? e.payload.route : e.route) ?? '')) &&
        (statuses === undefined || statuses.includes(e.status)) &&
        inScope({ org_id: e.orgId, service: e.service }, scope);

      reply.hijack();
      const res = reply.raw;
      // Hijacked, the reply's headers (CORS, the request id) and the security headers are not sent by Fastify: here they are.
      res.writeHead(200, {
        ...(reply.getHeaders() as Record<string, string | string[]>),
        ...API_HEADERS,
        'content-type': 'text/event-stream',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      res.write(': connected\n\n');
      let last = 0;
      let live = false;
      const buffered: OutboxEvent[] = [];
      const send = (events: OutboxEvent[]) => {
        for (const e of events) {
          if (e.seq <= last) continue;
          last = e.seq;
          if (!wanted(e)) continue;
          const data = e.kind === 'run' ? runEventResource(e) : hostEventResource(e);
          res.write(`id: ${e.seq}\nevent: ${e.kind}.${e.eventType}\ndata: ${JSON.stringify(data)}\n\n`);
        }
      };
      const unsubscribe = await s.feed.subscribe((events) => (live ? send(events) : buffered.push(...events)));
      const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
      const close = () => {
        clearInterval(heartbeat);
        unsubscribe();
        open.delete(end);
      };
      const end = () => {
        close();
        // End the stream and let go of its connection: server-sent events clients reconnect by design.
        res.end();
        res.destroy();
      };
      open.add(end);
      // The response's close, not the request's: a request closes as soon as its (empty) body is read.
      res.on('close', close);
      if (afterText !== undefined) {
        last = Number(afterText);
        // Catch up from the outbox, then switch to live events (skipping what was already sent).
        for (;;) {
          const backlog = await s.records.readRunEvents(last, 1000, scope);
          if (backlog.length === 0) break;
          send(backlog);
          if (backlog.length < 1000) break;
        }
      } else last = s.feed.cursor;
      live = true;
      send(buffered.splice(0));
    },
  );
}
