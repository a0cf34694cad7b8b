/**
 * `GET /v1/stream`: run events as server-sent events (https://html.spec.whatwg.org/multipage/server-sent-events.html).
 * Each message has `id: <seq>`, `event: run.<event_type>` and the run as JSON. A client that reconnects
 * with `Last-Event-ID` (or `?after=SEQ`) gets what it missed from the outbox first, then live events.
 */

import type { FastifyInstance } from 'fastify';
import { DispatcherError } from '../../core/errors.js';
import type { RunEvent } from '../../core/types.js';
import type { Dispatcher } from '../../dispatcher.js';
import { inScope } from '../../store/shared.js';
import { parseQuery } from '../query.js';
import { runEventResource } from '../resources.js';

const spec = { filters: ['run', 'route', 'status'], extra: ['after'] } as const;

export function registerStreamRoute(app: FastifyInstance, d: Dispatcher): void {
  // Streams never end by themselves: stopping the server ends them, so that shutdown stays bounded.
  const open = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const end of open) end();
  });

  app.get(
    '/v1/stream',
    {
      config: { permission: 'dispatcher:runs:read' },
      schema: {
        tags: ['stream'],
        summary: 'Run events, live (server-sent events)',
        description: 'Filters: `filter[run]`, `filter[route]`, `filter[status]`. Resume with the `Last-Event-ID` header or `?after=SEQ`.',
      },
    },
    async (request, reply) => {
      const q = parseQuery(request.url, spec);
      const afterText = q.rest.get('after') ?? (request.headers['last-event-id'] as string | undefined);
      if (afterText !== undefined && !/^\d+$/.test(afterText)) throw new DispatcherError('bad_request', 'after: must be a run-event sequence number');
      const runs = q.filters.get('run');
      const routes = q.filters.get('route');
      const statuses = q.filters.get('status');
      const scope = request.scope;
      const wanted = (e: RunEvent) =>
        (runs === undefined || runs.includes(e.runId)) &&
        (routes === undefined || routes.includes(e.payload.route)) &&
        (statuses === undefined || statuses.includes(e.status)) &&
        inScope({ org_id: e.orgId, service: e.service }, scope);

      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      res.write(': connected\n\n');
      let last = 0;
      let live = false;
      const buffered: RunEvent[] = [];
      const send = (events: RunEvent[]) => {
        for (const e of events) {
          if (e.seq <= last) continue;
          last = e.seq;
          if (!wanted(e)) continue;
          res.write(`id: ${e.seq}\nevent: run.${e.eventType}\ndata: ${JSON.stringify(runEventResource(e))}\n\n`);
        }
      };
      const unsubscribe = await d.feed.subscribe((events) => (live ? send(events) : buffered.push(...events)));
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
          const backlog = await d.store.readRunEvents(last, 1000, scope);
          if (backlog.length === 0) break;
          send(backlog);
          if (backlog.length < 1000) break;
        }
      } else last = d.feed.cursor;
      live = true;
      send(buffered.splice(0));
    },
  );
}
