/**
 * The HTTP app, built without listening (tests use `inject`). Fastify with one body reader for every
 * content type (the raw bytes are what intake and dead letters need), one error handler that maps codes to
 * statuses, and the OpenAPI 3.1 document generated from the route schemas.
 */

import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import cors from '@fastify/cors';
import rateLimit from '@fastify/rate-limit';
import { DispatcherError, isDispatcherError } from '../core/errors.js';
import type { InboundMessage } from '../core/intake.js';
import { DEFAULT_OWNER, type Dispatcher } from '../dispatcher.js';
import { registerAudit, registerAuth, requirePrincipal } from './auth.js';
import { replayHeaders } from '../transports/http/decode.js';
import { errorBody, fromFastifyError, HTTP_STATUS } from './errors.js';
import { registerEventRoutes } from './routes/events.js';
import { registerRunRoutes } from './routes/runs.js';
import { registerDeadLetterRoutes } from './routes/dead-letters.js';
import { registerStreamRoute } from './routes/stream.js';
import { registerHealthRoutes } from './routes/health.js';
import { registerAccessRoutes } from './routes/access.js';

/** Paths no rate limit applies to: probes and scrapes. */
const UNLIMITED = new Set(['/healthz', '/readyz', '/metrics']);

const DOCS_HEADERS = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
};
const API_HEADERS = { ...DOCS_HEADERS, 'content-security-policy': "default-src 'none'; frame-ancestors 'none'", 'cache-control': 'no-store' };

/** Raw bytes read before a body was refused (too large): kept as a bounded dead letter. */
const PARTIAL_BODY = Symbol('partialBody');

export async function buildApp(d: Dispatcher): Promise<FastifyInstance> {
  const { server } = d.config;
  const app: FastifyInstance = Fastify({
    loggerInstance: d.log.child({ part: 'api' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: server.bodyLimit,
    requestTimeout: server.requestTimeout,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
  }) as unknown as FastifyInstance;

  // Security headers on every answer. The browsable docs need their scripts and styles, so the strict
  // content policy is for everything else. A callback hook: no promise per answer.
  app.addHook('onSend', (request, reply, payload, done) => {
    reply.headers(request.url.startsWith('/docs') ? DOCS_HEADERS : API_HEADERS);
    done(null, payload);
  });

  // CORS per path prefix: the first configured entry whose path starts the request's path decides.
  if (server.cors.length > 0) {
    await app.register(cors, {
      delegator: (request, callback) => {
        const path = (request.url ?? '/').split('?', 1)[0]!;
        const entry = server.cors.find((c) => path.startsWith(c.path));
        if (entry === undefined) return callback(null, { origin: false });
        const any = entry.origins.includes('*');
        callback(null, {
          origin: any ? '*' : [...entry.origins],
          methods: [...entry.methods],
          ...(entry.headers.length > 0 ? { allowedHeaders: [...entry.headers] } : {}),
          credentials: entry.credentials && !any,
          maxAge: entry.maxAge,
        });
      },
    });
  }

  // A rate limit per principal; callers without valid credentials share one per client address.
  if (server.rateLimit.max > 0) {
    await app.register(rateLimit, {
      max: server.rateLimit.max,
      timeWindow: server.rateLimit.window,
      keyGenerator: (request) =>
        request.principal === null || request.principal === undefined || request.principal.kind === 'anonymous' ? `ip:${request.ip}` : request.principal.id,
      allowList: (request) => UNLIMITED.has((request.url ?? '').split('?', 1)[0]!),
      errorResponseBuilder: (_request, context) =>
        new DispatcherError('rate_limited', `more than ${context.max} requests in ${context.after}; try again later`, { retryAfterMs: context.ttl }),
    });
  }

  // After the rate limit (whose hook each route gets first), before any route.
  registerAuth(app, d);
  registerAudit(app, d);

  // One reader for every content type: bytes in, bounded. A body over the limit is read to its end
  // (keeping only what a dead letter keeps), so that the client gets a clean 413 instead of a reset.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { bodyLimit: Number.MAX_SAFE_INTEGER }, (request, payload, done) => {
    const limit = server.bodyLimit;
    const keep = d.config.deadLetters.maxBytes;
    const declared = Number(request.headers['content-length']);
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    let finished = false;
    const refuse = () => {
      if (finished) return;
      finished = true;
      const err = new DispatcherError('payload_too_large', `the body is larger than ${limit} bytes`);
      (err as unknown as Record<symbol, Buffer>)[PARTIAL_BODY] = Buffer.concat(chunks).subarray(0, keep);
      done(err as unknown as FastifyError, undefined);
    };
    payload.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        if (!over) {
          over = true;
          let kept = 0;
          for (const c of chunks) kept += c.length;
          if (kept < keep) chunks.push(chunk.subarray(0, keep - kept));
        }
        // Reading on costs nothing but time; past 16 times the limit the client is not worth waiting for:
        // keep the dead letter, and drop the connection.
        if (size > limit * 16) {
          refuse();
          payload.destroy();
        }
        return;
      }
      chunks.push(chunk);
    });
    payload.on('end', () => {
      if (over) refuse();
      else if (!finished) {
        finished = true;
        done(null, Buffer.concat(chunks, size));
      }
    });
    payload.on('error', (err) => {
      if (finished) return;
      finished = true;
      done(err as FastifyError, undefined);
    });
    if (Number.isFinite(declared) && declared > limit * 16) {
      refuse();
      payload.destroy();
    }
  });

  app.setErrorHandler(async (error: FastifyError | DispatcherError, request: FastifyRequest, reply: FastifyReply) => {
    const err = isDispatcherError(error) ? error : fromFastifyError(error as FastifyError);
    const partial = (error as unknown as Record<symbol, Buffer | undefined>)[PARTIAL_BODY];
    if (request.routeOptions.url === '/v1/events' && request.method === 'POST' && (partial !== undefined || !isDispatcherError(error))) {
      // Refused before intake saw it (too large, unreadable): intake still keeps it as a dead letter.
      await d.intake.reject({ ...intakeMessage(request, partial ?? Buffer.alloc(0)), rawTruncated: partial !== undefined }, err);
    }
    const status = HTTP_STATUS[err.code] ?? 500;
    request.errorCode = err.code;
    if (status >= 500) request.log.error({ err: error }, 'request failed');
    if (err.code === 'rate_limited' && err.retryAfterMs !== undefined) reply.header('retry-after', Math.ceil(err.retryAfterMs / 1000));
    if (status === 503) reply.header('retry-after', 1);
    if (status === 401) reply.header('www-authenticate', 'Bearer realm="dispatcher", PSK realm="dispatcher"');
    return reply.code(status).type('application/json').send(errorBody(err));
  });

  // Which methods each path pattern answers (from the route table, once every route is in), so that a known
  // path asked with another method gets a 405 with the methods it does take, instead of a 404.
  let patterns: Array<{ pattern: RegExp; methods: string[] }> | undefined;
  const allowedMethods = (path: string): string[] => {
    if (patterns === undefined) {
      const byUrl = new Map<string, string[]>();
      for (const r of app.routeTable) if (!r.url.includes('*')) byUrl.set(r.url, [...(byUrl.get(r.url) ?? []), r.method, ...(r.method === 'GET' ? ['HEAD'] : [])]);
      patterns = [...byUrl].map(([url, methods]) => ({
        pattern: new RegExp('^' + url.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/:[A-Za-z_]+/g, '[^/]+') + '/?$'),
        methods,
      }));
    }
    return [...new Set(patterns.filter((p) => p.pattern.test(path)).flatMap((p) => p.methods))];
  };

  app.setNotFoundHandler(async (request, reply) => {
    // Which paths exist is not for strangers to find out.
    requirePrincipal(request);
    const path = request.url.split('?', 1)[0]!;
    const allowed = allowedMethods(path).join(', ');
    if (allowed !== '') {
      return reply
        .code(405)
        .header('allow', allowed)
        .send(errorBody(new DispatcherError('method_not_allowed', `${request.method} is not allowed on ${path}; allowed: ${allowed}`)));
    }
    return reply.code(404).send(errorBody(new DispatcherError('not_found', `no route ${request.method} ${path}`)));
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Dispatcher',
        version: '0.1.0',
        description: 'Events in from HTTP or any bus, checked, routed by rules to actions; every run tracked.',
      },
      tags: [
        { name: 'events', description: 'Intake and stored events' },
        { name: 'runs', description: 'Runs of actions, their attempts, cancel and retry' },
        { name: 'dead-letters', description: 'What could not be accepted or finished' },
        { name: 'stream', description: 'Run events as server-sent events' },
        { name: 'health', description: 'Liveness, readiness, metrics' },
        { name: 'access', description: 'Tokens, clients and the audit log' },
      ],
      components: {
        securitySchemes: {
          psk: { type: 'apiKey', in: 'header', name: 'Authorization', description: 'A pre-shared key: `PSK <key>`.' },
          bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'A token from `POST /v1/token`.' },
        },
      },
      security: [{ psk: [] }, { bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  app.get('/openapi.json', { schema: { hide: true }, config: { public: true } }, async () => app.swagger());

  registerHealthRoutes(app, d);
  registerEventRoutes(app, d);
  registerRunRoutes(app, d);
  registerDeadLetterRoutes(app, d);
  registerStreamRoute(app, d);
  registerAccessRoutes(app, d);
  return app;
}

export function intakeMessage(request: FastifyRequest, raw: Buffer): InboundMessage {
  return {
    input: 'http',
    raw,
    contentType: request.headers['content-type'] ?? null,
    headers: replayHeaders(request.headers),
    service: request.principal?.service ?? DEFAULT_OWNER.service,
    orgId: request.principal?.orgId ?? DEFAULT_OWNER.orgId,
  };
}

