import type { FastifyContextConfig, FastifyInstance } from 'fastify';
import type { Dispatcher } from '../../dispatcher.js';
import { errorBody } from '../errors.js';
import { toDispatcherError } from '../../core/errors.js';

export function registerHealthRoutes(app: FastifyInstance, d: Dispatcher): void {
  app.get('/healthz', { config: { public: true }, schema: { tags: ['health'], summary: 'The process is alive' } }, async () => ({ status: 'ok' }));

  app.get(
    '/readyz',
    { config: { public: true }, schema: { tags: ['health'], summary: 'The store is reachable; backlog, oldest queued age, and the health of each input and output' } },
    async (_request, reply) => {
      try {
        await d.store.ping();
        const now = Date.now();
        const [s, inputs, outputs] = await Promise.all([d.store.stats(now), d.inputHealth(), d.outputHealth()]);
        const degraded = inputs.some((i) => !i.connected || i.paused) || outputs.some((o) => !o.connected);
        return {
          status: degraded ? 'degraded' : 'ready',
          store: d.store.dialect,
          runs: { queued: s.queued, running: s.running, waiting: s.waiting, in_flight_here: d.runner.inFlight },
          oldest_queued_age_seconds: s.oldestQueuedAt === null ? 0 : Math.max(0, (now - s.oldestQueuedAt) / 1000),
          dead_letters: s.deadLetters,
          inputs: inputs.map((i) => ({
            name: i.input,
            transport: i.transport,
            connected: i.connected,
            paused: i.paused,
            lag: i.lag,
            held: i.held,
            in_flight: i.inFlight,
            last_error: i.lastError,
            last_error_at: i.lastErrorAt === null ? null : new Date(i.lastErrorAt).toISOString(),
          })),
          outputs: outputs.map((o) => ({
            name: o.output,
            transport: o.transport,
            connected: o.connected,
            last_error: o.lastError,
            last_error_at: o.lastErrorAt === null ? null : new Date(o.lastErrorAt).toISOString(),
            relays: o.relays.map((r) => ({
              stream: r.stream,
              here: r.holder,
              cursor: r.cursor,
              lag: r.lag,
              last_error: r.lastError,
              last_error_at: r.lastErrorAt === null ? null : new Date(r.lastErrorAt).toISOString(),
            })),
          })),
        };
      } catch (err) {
        const e = toDispatcherError(err);
        return reply.code(503).header('retry-after', 1).send({ status: 'unavailable', ...errorBody(e.code === 'internal' ? { ...e, code: 'store_unavailable', message: e.message } as never : e) });
      }
    },
  );

  if (d.config.metrics.enabled) {
    const config: FastifyContextConfig = d.config.auth.publicMetrics ? { public: true } : { permission: 'dispatcher:metrics:read' };
    app.get('/metrics', { config, schema: { tags: ['health'], summary: 'Prometheus metrics' } }, async (_request, reply) => {
      const body = await d.metrics.registry.metrics();
      return reply.type(d.metrics.registry.contentType).send(body);
    });
  }
}
