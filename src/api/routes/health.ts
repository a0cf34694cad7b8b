import type { FastifyContextConfig, FastifyInstance } from 'fastify';
import type { Services } from '../../core/services.js';
import { errorBody } from '../errors.js';
import { storeWithin, toDispatcherError } from '../../core/errors.js';

export interface HealthSettings {
  /** Serve `/metrics`. */
  metrics: boolean;
  /** `/metrics` without credentials. */
  publicMetrics: boolean;
}

export function registerHealthRoutes(app: FastifyInstance, s: Services, settings: HealthSettings): void {
  app.get('/healthz', { config: { public: true }, schema: { operationId: 'health', tags: ['health'], summary: 'The process is alive' } }, async () => ({ status: 'ok' }));

  app.get(
    '/readyz',
    { config: { public: true }, schema: { operationId: 'readiness', tags: ['health'], summary: 'The store is reachable; backlog, oldest queued age, and the health of each input and output' } },
    async (_request, reply) => {
      try {
        // A store that does not answer within seconds is as good as gone: readiness says so then, not after
        // the statement timeout.
        const now = Date.now();
        const [stats, { inputs, outputs, inFlight }] = await storeWithin(
          s.records.ping().then(() => Promise.all([s.records.stats(now), s.health()])),
          READY_WITHIN_MS,
          'answer',
        );
        const degraded = inputs.some((i) => !i.connected || i.paused) || outputs.some((o) => !o.connected);
        return {
          status: degraded ? 'degraded' : 'ready',
          store: s.records.dialect,
          runs: { queued: stats.queued, running: stats.running, waiting: stats.waiting, in_flight_here: inFlight },
          oldest_queued_age_seconds: stats.oldestQueuedAt === null ? 0 : Math.max(0, (now - stats.oldestQueuedAt) / 1000),
          dead_letters: stats.deadLetters,
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

  if (settings.metrics) {
    const config: FastifyContextConfig = settings.publicMetrics ? { public: true } : { permission: 'dispatcher:metrics:read' };
    app.get('/metrics', { config, schema: { operationId: 'metrics', tags: ['health'], summary: 'Prometheus metrics' } }, async (_request, reply) => {
      const body = await s.metrics.registry.metrics();
      return reply.type(s.metrics.registry.contentType).send(body);
    });
  }
}

/** How long /readyz waits for the store. */
const READY_WITHIN_MS = 2000;

