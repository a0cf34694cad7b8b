/**
 * The HTTP app, built without listening (tests use `inject`). Fastify with one body reader for every
 * content type (the raw bytes are what intake and dead letters need), one error handler that maps codes to
 * statuses, and the OpenAPI 3.1 document generated from the route schemas.
 *
 * Routes come from the preset's entries switched on (src/preset.ts): the built-in ones (the core API)
 * register at the root; each profile registers in a scope of its own (a Fastify encapsulation context),
 * where it may authenticate its callers (`useAuthentication`, ./auth.ts) and answer errors in its seed
 * system's words (`answerErrors`, ./errors.ts). Every route, a profile's too, declares its permission or
 * `public`.
 */

import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifySchema, type RouteOptions } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import cors from '@fastify/cors';
import rateLimit from '@fastify/rate-limit';
import websocket from '@fastify/websocket';
import { DispatcherError } from '../core/errors.js';
import type { Profile, ProfileContext } from '../core/profile.js';
import type { Services } from '../core/services.js';
import { registerAudit, registerAuth, requirePrincipal } from './auth.js';
import { answerClientError, answerErrors, errorBody, fromFastifyError, PARTIAL_BODY } from './errors.js';
import { API_HEADERS, DOCS_HEADERS } from './headers.js';
import { intakeMessage } from './intake.js';
import { querySchema, type QuerySpec } from './query.js';
import { errorSchema } from './schemas.js';
import { registerHealthRoutes, type HealthSettings } from './routes/health.js';
import type { ServerConfig } from './settings.js';

/** Paths no rate limit applies to: probes and scrapes. */
const UNLIMITED = new Set(['/healthz', '/readyz', '/metrics']);

/** A preset entry as the HTTP app registers it. */
export type HttpProfile = Profile<FastifyInstance, unknown>;

export interface AppOptions {
  services: Services;
  server: ServerConfig;
  /** Raw bytes kept of a body refused before intake read it (too large): `deadLetters.maxBytes`. */
  deadLetterMaxBytes: number;
  /** One log line per request (`log.requests`). */
  logRequests?: boolean;
  health: HealthSettings;
  /** The preset's entries switched on, in order, each with its context. */
  entries: ReadonlyArray<{ profile: HttpProfile; context: ProfileContext }>;
}

export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const { server, services } = options;
  const app: FastifyInstance = Fastify({
    loggerInstance: services.log.child({ part: 'api' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: server.bodyLimit,
    requestTimeout: server.requestTimeout,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } },
    // A path that is not valid percent-encoding (`/v1/runs/%zz`), answered before routing and
    // authentication, in the same words as every other error.
    frameworkErrors: (error, _request, reply) => {
      void (reply as FastifyReply).code(400).type('application/json').headers(API_HEADERS).send(errorBody(fromFastifyError(error)));
    },
    clientErrorHandler: (err, socket) => answerClientError(err, socket, API_HEADERS),
  }) as unknown as FastifyInstance;

  // Security headers on every answer. The browsable docs need their scripts and styles, so the strict
  // content policy is for everything else. A callback hook: no promise per answer.
  app.addHook('onSend', (request, reply, payload, done) => {
    reply.headers(request.url.startsWith('/docs') ? DOCS_HEADERS : API_HEADERS);
    done(null, payload);
  });

  // Request durations by route pattern (`/v1/runs/:id`, never the id itself) and status: one child per
  // combination, looked up once.
  const durations = new Map<string, { observe(seconds: number): void }>();
  app.addHook('onResponse', (request, reply, done) => {
    const route = request.routeOptions.url ?? 'unmatched';
    const key = `${request.method} ${route} ${reply.statusCode}`;
    let child = durations.get(key);
    if (child === undefined) durations.set(key, (child = services.metrics.httpDuration.labels({ method: request.method, route, status: String(reply.statusCode) })));
    child.observe(reply.elapsedTime / 1000);
    done();
  });

  if (options.logRequests === true) {
    app.addHook('onResponse', (request, reply, done) => {
      const principal = request.principal;
      request.log.info(
        {
          method: request.method,
          path: request.url.split('?', 1)[0],
          status: reply.statusCode,
          ms: Math.round(reply.elapsedTime * 10) / 10,
          principal: principal?.id ?? null,
          ip: request.ip,
        },
        'request',
      );
      done();
    });
  }

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
          maxAge: Math.round(entry.maxAge / 1000),
        });
      },
    });
  }

  // A rate limit per principal; callers without valid credentials share one per client address.
  // Registered even with the limit off: routes with a limit of their own (`POST /v1/token`) keep it.
  await app.register(rateLimit, {
    global: server.rateLimit.max > 0,
    max: server.rateLimit.max,
    timeWindow: server.rateLimit.window,
    keyGenerator: (request) =>
      request.principal === null || request.principal === undefined || request.principal.kind === 'anonymous' ? `ip:${request.ip}` : request.principal.id,
    allowList: (request) => UNLIMITED.has((request.url ?? '').split('?', 1)[0]!),
    errorResponseBuilder: (_request, context) =>
      new DispatcherError('rate_limited', `more than ${context.max} requests in ${context.after}; try again later`, { retryAfterMs: context.ttl }),
  });

  // WebSocket upgrades (recipients connect with one: routes/recipients.ts) go through the routing, the
  // hooks and the authentication as every request does, and are upgraded only by a route that takes them.
  // Before any route: it wraps their handlers. A message larger than maxPayload closes its socket (1009);
  // what reads the messages keeps its own, smaller bound.
  await app.register(websocket, { options: { maxPayload: 1024 * 1024 } });

  // After the rate limit (whose hook each route gets first), before any route.
  registerAuth(app, (request) => services.auth.authenticate(request.headers));
  registerAudit(app, services.audit);

  // One reader for every content type: bytes in, bounded. A body over the limit is read to its end
  // (keeping only what a dead letter keeps), so that the client gets a clean 413 instead of a reset.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { bodyLimit: Number.MAX_SAFE_INTEGER }, (request, payload, done) => {
    const limit = server.bodyLimit;
    const keep = options.deadLetterMaxBytes;
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

  answerErrors(app, {
    refused: (request) => (request.routeOptions.url === '/v1/events' && request.method === 'POST' ? intakeMessage(request, Buffer.alloc(0)) : undefined),
    reject: (message, error) => services.reject(message, error),
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
    transform: openapiOperation,
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Dispatcher',
        version: '0.1.0',
        description: 'Events in from HTTP or any bus, checked, routed by rules to actions; every run tracked.',
        license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
      },
      // Relative: the server that serves this document (and /docs, which sends its requests there).
      servers: [{ url: '/', description: 'this dispatcher' }],
      tags: [
        { name: 'events', description: 'Intake and stored events' },
        { name: 'runs', description: 'Runs of actions, their attempts, cancel and retry' },
        { name: 'dead-letters', description: 'What could not be accepted or finished' },
        { name: 'stream', description: 'Run events as server-sent events' },
        { name: 'health', description: 'Liveness, readiness, metrics' },
        { name: 'access', description: 'Tokens, clients and the audit log' },
        { name: 'hosts', description: 'The targets inside runs: their statuses and logs' },
        { name: 'recipients', description: 'Agents connected over a WebSocket that run directives' },
        ...options.entries.filter((e) => e.profile.builtIn !== true && e.profile.http !== undefined).map((e) => ({ name: e.profile.name, description: e.profile.description })),
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

  registerHealthRoutes(app, services, options.health);
  for (const { profile, context } of options.entries) {
    if (profile.http === undefined) continue;
    if (profile.builtIn === true) await profile.http(app, context);
    // A scope of its own: its hooks, error handler and decorations stay inside it.
    else await app.register(async (scope) => profile.http!(scope, context));
  }
  return app;
}

/** `GET /a/b/:id/c` → `getABByIdC`: unique per method and path, for a route whose schema names no `operationId`. */
function madeOperationId(method: string, url: string): string {
  const words = url
    .split('/')
    .filter(Boolean)
    .map((segment) => (segment.startsWith(':') ? `by-${segment.slice(1)}` : segment))
    .join('-')
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean);
  return method.toLowerCase() + words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join('');
}

/**
 * Each route's operation in the OpenAPI document: its id, its query parameters (from the spec the route
 * parses its query with), what its config documents besides (a body read raw), no security for public
 * routes, and the answers every protected route may give (401, 403, 429; 404 with a path parameter).
 */
function openapiOperation({ schema, url, route }: { schema: FastifySchema; url: string; route: RouteOptions }): { schema: FastifySchema; url: string } {
  const out: Record<string, unknown> = { ...(schema as Record<string, unknown>) };
  const config = (route.config ?? {}) as { public?: boolean; query?: QuerySpec; openapi?: Record<string, unknown> };
  const method = Array.isArray(route.method) ? route.method[0]! : route.method;
  out.operationId ??= madeOperationId(method, url);
  if (config.query !== undefined && out.querystring === undefined) out.querystring = querySchema(config.query);
  Object.assign(out, config.openapi);
  const response = { ...((out.response as Record<string, unknown> | undefined) ?? {}) };
  if (config.public === true) out.security = [];
  else {
    for (const status of [401, 403, 429]) response[status] ??= { ...errorSchema, description: ERROR_ANSWERS[status] };
    if (url.includes('/:')) response[404] ??= { ...errorSchema, description: ERROR_ANSWERS[404] };
  }
  if (Object.keys(response).length > 0) out.response = response;
  return { schema: out as FastifySchema, url };
}

const ERROR_ANSWERS: Record<number, string> = {
  401: 'No credentials, or credentials that are not valid (`unauthorized`).',
  403: 'The principal lacks the permission (`forbidden`).',
  404: 'No such record, or one the principal may not see (`not_found`).',
  429: 'Too many requests (`rate_limited`); `Retry-After` says when to try again.',
};
