/**
 * Communications Backbone's HTTP API at its own paths (notes §2, the seed's README):
 *
 * - `POST /client`, `GET /client`, `GET /client/{id}`, `PATCH`/`PUT /client/{id}`, `DELETE /client/{id}`,
 *   `POST /client/{id}/rotate-secret`: client administration, for a pre-shared key holding the core's
 *   `dispatcher:clients:write` (`dispatcher:clients:read` to list), as the admin key does. A client is a core client of the
 *   administrator's tenant (service `communications-backbone`); its secret is shown when it is made or
 *   rotated, never again.
 * - `GET /token?client_id=…&secret=…` (as the seed documents it) and `POST /token` (the same in a JSON or
 *   form body): the client credentials grant, answering `{"token", "expiry"}`.
 * - `POST /send` `{"topic", "body"}`, `POST /notify` `{"body"}`: with the bearer token, the message becomes an
 *   event, committed before the answer, whose run (`deliver`) puts it in the matching inboxes.
 * - `GET /receive?max_messages=N`: the oldest messages of the caller's inbox, as a JSON array of
 *   `{"id", "topic", "body", "sender", "time"}`; popped (the original's way) unless acknowledgement is on
 *   (`receive.acknowledge`, or `ack=true`), then `POST /ack` `{"ids"}` removes them.
 *
 * Errors answer `{"message", "code"}` with the code's status.
 */

import type { FastifyInstance, FastifyRequest } from 'fastify';
import { answerErrors } from '../../api/errors.js';
import { requirePrincipal, useAuthentication } from '../../api/auth.js';
import { ackIds, INBOX_MESSAGE_SCHEMA } from '../../api/routes/inbox.js';
import { TokenSigner } from '../../core/credentials.js';
import { DispatcherError } from '../../core/errors.js';
import { checkSubscription, checkTopic } from '../../core/inboxes.js';
import { mediaType, parseJsonBytes } from '../../core/json.js';
import type { Principal } from '../../core/principal.js';
import type { ProfileContext } from '../../core/profile.js';
import type { ClientRecord } from '../../store/access.js';
import type { CommunicationsBackboneConfig } from './config.js';
import { clientIdProblem } from './amqp.js';
import { CLIENT_SERVICE, CLIENTS_READ, CLIENTS_WRITE, PROFILE, RECEIVE, SEND, type Sender } from './sender.js';
import { registerSocket } from './socket.js';

const TAGS = [PROFILE];
const MESSAGE_LIST = { type: 'array', items: INBOX_MESSAGE_SCHEMA } as const;
const CLIENT_SCHEMA = {
  type: 'object',
  properties: { client_id: { type: 'string' }, client_name: { type: 'string' }, subscription: { type: ['string', 'null'] } },
} as const;
const ERROR_SCHEMA = { type: 'object', properties: { message: { type: 'string' }, code: { type: 'string' } } } as const;
const errors = (...statuses: number[]) => Object.fromEntries(statuses.map((s) => [s, { description: 'An error: `{"message", "code"}`.', ...ERROR_SCHEMA }]));
const bearer = [{ bearer: [] }];
const psk = [{ psk: [] }];

/** A client as the original shows it: never its secret. */
export function clientView(c: ClientRecord): Record<string, unknown> {
  return { client_id: c.id, client_name: c.name, subscription: c.subscription };
}

/** A JSON (or form) object body; `{}` when there is none. */
function objectBody(request: FastifyRequest): Record<string, unknown> {
  const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
  if (raw.length === 0) return {};
  const type = mediaType(request.headers['content-type']);
  if (type === 'application/x-www-form-urlencoded') return Object.fromEntries(new URLSearchParams(raw.toString('utf8')));
  if (type !== 'application/json' && type !== '') throw new DispatcherError('unsupported_media_type', `send application/json, not ${type}`);
  const value = parseJsonBytes(raw);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new DispatcherError('bad_request', 'the body must be a JSON object');
  return value as Record<string, unknown>;
}

function text(value: unknown, name: string, max = 200): string {
  if (typeof value !== 'string' || value.trim() === '' || value.length > max) throw new DispatcherError('bad_request', `${name}: a string of 1 to ${max} characters`);
  return value;
}

/** The client id of a principal that is one of this profile's clients. */
function clientIdOf(principal: Principal): string {
  if (principal.kind !== 'client') throw new DispatcherError('forbidden', `${principal.id} is not a client: send and receive need a bearer token from /token`);
  return principal.id.slice('client:'.length);
}

export function registerRoutes(app: FastifyInstance, context: ProfileContext, sender: Sender): void {
  const config = context.config as CommunicationsBackboneConfig;
  const { services } = context;
  // Its tokens: signed with its own secret when one is set (`SOAR_TOKEN_SECRET`), else with the dispatcher's; its lifetime either way.
  const signer = config.token.secret === undefined ? services.auth.signerFor(config.token.lifetime) : new TokenSigner([config.token.secret], config.token.lifetime);

  answerErrors(app, {
    format: (err, status) => ({ status, body: { message: status >= 500 && err.code === 'internal' ? 'Internal Server Error' : err.message, code: err.code } }),
  });
  useAuthentication(app, async (request) => {
    const authorization = request.headers.authorization;
    if (typeof authorization !== 'string' || authorization === '') return null;
    const match = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (match !== null) return services.auth.bearer(match[1]!, signer);
    return services.auth.authenticate(request.headers);
  });

  // ------------------------------------------------------------------------------------- clients

  const owned = async (request: FastifyRequest): Promise<ClientRecord> => {
    const principal = requirePrincipal(request);
    const { id } = request.params as { id: string };
    const client = await services.records.access.getClient(id);
    if (client === null || client.service !== CLIENT_SERVICE || client.orgId !== principal.orgId) throw new DispatcherError('not_found', `no client ${id}`);
    return client;
  };
  const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', minLength: 1, maxLength: 100 } } };

  app.post(
    '/client',
    {
      config: { permission: CLIENTS_WRITE, audit: 'clients.create' },
      schema: {
        tags: TAGS,
        operationId: 'backboneCreateClient',
        summary: 'Register a client; its secret is in this answer and never again',
        description:
          'Body: `client_name`, `subscription` (a dot-delimited topic pattern: `*` one word, `#` zero or more), optional `client_id` ' +
          '(letters, digits, `.`, `_`, `-`; default a generated UUID). Save the answer, with `api` added, as the adapters’ `soar-config.json`.',
        security: psk,
        response: { 201: { type: 'object', properties: { ...CLIENT_SCHEMA.properties, secret: { type: 'string' } } }, ...errors(400, 401, 403, 409) },
      },
    },
    async (request, reply) => {
      const principal = requirePrincipal(request);
      const b = objectBody(request);
      const name = text(b.client_name, 'client_name');
      const subscription = checkSubscription(b.subscription);
      const id = b.client_id === undefined || b.client_id === null || b.client_id === '' ? undefined : text(b.client_id, 'client_id', 100);
      // A client id names its RabbitMQ queues (`<id>-inbox`, …), as in the original: one RabbitMQ refuses is refused here.
      const problem = id === undefined ? null : clientIdProblem(id);
      if (problem !== null) throw new DispatcherError('bad_request', `client_id: ${problem}`);
      const { client, secret } = await services.auth.createClient({
        ...(id === undefined ? {} : { id }),
        name,
        service: CLIENT_SERVICE,
        orgId: principal.orgId,
        permissions: config.clientPermissions,
        subscription,
      });
      request.auditRecords = [client.id];
      request.auditDetails = { name, subscription };
      return reply.code(201).header('cache-control', 'no-store').send({ ...clientView(client), secret });
    },
  );

  app.get(
    '/client',
    { config: { permission: CLIENTS_READ }, schema: { tags: TAGS, operationId: 'backboneListClients', summary: 'The registered clients (never their secrets)', security: psk, response: { 200: { type: 'array', items: CLIENT_SCHEMA }, ...errors(401, 403) } } },
    async (request) => {
      const principal = requirePrincipal(request);
      const clients = await services.records.access.listClients(principal.orgId);
      return clients.filter((c) => c.service === CLIENT_SERVICE).map(clientView);
    },
  );

  app.get(
    '/client/:id',
    { config: { permission: CLIENTS_READ }, schema: { tags: TAGS, operationId: 'backboneGetClient', summary: 'One client (never its secret)', params: idParams, security: psk, response: { 200: CLIENT_SCHEMA, ...errors(401, 403, 404) } } },
    async (request) => clientView(await owned(request)),
  );

  const update = async (request: FastifyRequest) => {
    const client = await owned(request);
    const b = objectBody(request);
    const changes: { name?: string; subscription?: string | null } = {};
    if (b.client_name !== undefined) changes.name = text(b.client_name, 'client_name');
    if (b.subscription !== undefined) changes.subscription = checkSubscription(b.subscription);
    if (b.client_id !== undefined && b.client_id !== client.id) throw new DispatcherError('bad_request', 'client_id cannot be changed: delete the client and register it again');
    if (Object.keys(changes).length === 0) throw new DispatcherError('bad_request', 'nothing to change: give client_name and/or subscription');
    request.auditRecords = [client.id];
    request.auditDetails = changes;
    return clientView(await services.auth.updateClient(client.id, changes));
  };
  for (const method of ['PATCH', 'PUT'] as const) {
    app.route({
      method,
      url: '/client/:id',
      config: { permission: CLIENTS_WRITE, audit: 'clients.update' },
      schema: {
        tags: TAGS,
        operationId: `backbone${method === 'PUT' ? 'Replace' : 'Update'}Client`,
        summary: 'Change a client’s name or subscription (its secret and tokens stay)',
        description: 'Body: `client_name` and/or `subscription`. The new subscription applies to messages sent from then on.',
        params: idParams,
        security: psk,
        response: { 200: CLIENT_SCHEMA, ...errors(400, 401, 403, 404) },
      },
      handler: update,
    });
  }

  app.delete(
    '/client/:id',
    {
      config: { permission: CLIENTS_WRITE, audit: 'clients.delete' },
      schema: { tags: TAGS, operationId: 'backboneDeleteClient', summary: 'Delete a client: its tokens stop working and its inbox is emptied', params: idParams, security: psk, response: { 200: CLIENT_SCHEMA, ...errors(401, 403, 404) } },
    },
    async (request) => {
      const client = await owned(request);
      request.auditRecords = [client.id];
      return clientView(await services.auth.deleteClient(client.id));
    },
  );

  app.post(
    '/client/:id/rotate-secret',
    {
      config: { permission: CLIENTS_WRITE, audit: 'clients.rotate-secret' },
      schema: {
        tags: TAGS,
        operationId: 'backboneRotateSecret',
        summary: 'Give a client a new secret (shown once); its tokens stop working',
        params: idParams,
        security: psk,
        response: { 200: { type: 'object', properties: { ...CLIENT_SCHEMA.properties, secret: { type: 'string' } } }, ...errors(401, 403, 404) },
      },
    },
    async (request, reply) => {
      const client = await owned(request);
      request.auditRecords = [client.id];
      const rotated = await services.auth.rotateSecret(client.id);
      return reply.header('cache-control', 'no-store').send({ ...clientView(rotated.client), secret: rotated.secret });
    },
  );

  registerSocket(app, config, services, sender, signer);

  // -------------------------------------------------------------------------------------- tokens

  const grant = async (request: FastifyRequest, fields: Record<string, unknown>) => {
    const clientId = text(fields.client_id, 'client_id', 100);
    const secret = fields.secret ?? fields.client_secret;
    request.auditActor = { actor: `client:${clientId}`, kind: 'client', service: CLIENT_SERVICE, orgId: 'unknown' };
    request.auditRecords = [clientId];
    const issued = await services.auth.issueToken(clientId, text(secret, 'secret', 1000), signer);
    if (issued.client.service !== CLIENT_SERVICE) throw new DispatcherError('unauthorized', 'unknown client or wrong secret');
    request.auditActor = { actor: `client:${issued.client.id}`, kind: 'client', service: issued.client.service, orgId: issued.client.orgId };
    return { token: issued.token, expiry: new Date(issued.expiresAt).toISOString() };
  };
  const tokenSchema = (method: string) => ({
    tags: TAGS,
    operationId: `backboneToken${method}`,
    summary: 'The client credentials grant: a bearer token',
    description:
      method === 'GET'
        ? '`client_id` and `secret` as query parameters, as the original documents it. Prefer `POST`: a query string ends up in access logs.'
        : '`client_id` and `secret` (or `client_secret`) in a JSON or form body.',
    security: [],
    ...(method === 'GET' ? { querystring: { type: 'object', properties: { client_id: { type: 'string' }, secret: { type: 'string' } } } } : {}),
    response: { 200: { type: 'object', properties: { token: { type: 'string' }, expiry: { type: 'string', format: 'date-time' } } }, ...errors(400, 401, 429) },
  });
  // As the core's token route: its own limit per address, since every request costs a memory-hard hash.
  const limit = services.auth.tokenRateLimit;
  const rateLimit =
    limit.perAddress > 0 ? { rateLimit: { max: limit.perAddress, timeWindow: limit.window, keyGenerator: (request: FastifyRequest) => `token@${request.ip}` } } : {};
  app.get('/token', { config: { public: true, audit: 'token.issue', ...rateLimit }, schema: tokenSchema('GET') }, async (request, reply) =>
    reply.header('cache-control', 'no-store').send(await grant(request, request.query as Record<string, unknown>)),
  );
  app.post('/token', { config: { public: true, audit: 'token.issue', ...rateLimit }, schema: tokenSchema('POST') }, async (request, reply) =>
    reply.header('cache-control', 'no-store').send(await grant(request, objectBody(request))),
  );

  // ---------------------------------------------------------------------------- send and receive

  const sentSchema = { type: 'object', properties: { id: { type: 'string', description: 'The event the message became.' }, run: { type: ['string', 'null'], description: 'Its delivery run (`GET /v1/runs/{id}`).' } } };
  app.post(
    '/send',
    {
      config: { permission: SEND, audit: 'messages.send' },
      schema: {
        tags: TAGS,
        operationId: 'backboneSend',
        summary: 'Publish a message to a topic: every client whose subscription matches gets it in its inbox',
        description: 'Body: `{"topic": "soar.noc.slocum.status", "body": <any JSON>}` (`message` is taken for `body`, as the original\'s command-line client wrote it). Answered once the message and its delivery run are committed.',
        security: bearer,
        response: { 200: sentSchema, ...errors(400, 401, 403, 413) },
      },
    },
    async (request) => {
      const client = requirePrincipal(request);
      const b = objectBody(request);
      if (b.topic === undefined) throw new DispatcherError('bad_request', 'topic: missing (the dotted topic the message is published to)');
      const topic = checkTopic(b.topic);
      return sender.send({ id: clientIdOf(client), orgId: client.orgId }, topic, b.body === undefined ? b.message : b.body);
    },
  );

  app.post(
    '/notify',
    {
      config: { permission: SEND, audit: 'messages.notify' },
      schema: {
        tags: TAGS,
        operationId: 'backboneNotify',
        summary: 'Broadcast a message to every client’s inbox',
        description: 'Body: `{"body": <any JSON>}`. Received with `topic` null.',
        security: bearer,
        response: { 200: sentSchema, ...errors(400, 401, 403, 413) },
      },
    },
    async (request) => {
      const client = requirePrincipal(request);
      return sender.send({ id: clientIdOf(client), orgId: client.orgId }, null, objectBody(request).body);
    },
  );

  app.get(
    '/receive',
    {
      config: { permission: RECEIVE },
      schema: {
        tags: TAGS,
        operationId: 'backboneReceive',
        summary: 'The oldest messages of the caller’s inbox',
        description:
          `\`max_messages\` (1 to ${services.inboxes.settings.maxReceive}, default ${config.receive.defaultMessages}). Messages are removed as they are returned, ` +
          'unless acknowledgement is on (`receive.acknowledge`, or `ack=true`): then they are hidden for `inboxes.lease` and removed by `POST /ack`.',
        querystring: { type: 'object', properties: { max_messages: { type: 'string' }, ack: { type: 'string', enum: ['true', 'false', '1', '0'] } } },
        security: bearer,
        response: { 200: MESSAGE_LIST, ...errors(400, 401, 403) },
      },
    },
    async (request) => {
      const client = requirePrincipal(request);
      const q = request.query as { max_messages?: string; ack?: string };
      const max = q.max_messages === undefined || q.max_messages === '' ? config.receive.defaultMessages : Number(q.max_messages);
      const limit = services.inboxes.settings.maxReceive;
      if (!Number.isInteger(max) || max < 1 || max > limit) throw new DispatcherError('bad_request', `max_messages: an integer from 1 to ${limit}, got ${JSON.stringify(q.max_messages)}`);
      const lease = q.ack === undefined ? config.receive.acknowledge : q.ack === 'true' || q.ack === '1';
      return services.inboxes.receive(clientIdOf(client), { max, lease });
    },
  );

  app.post(
    '/ack',
    {
      config: { permission: RECEIVE },
      schema: {
        tags: TAGS,
        operationId: 'backboneAck',
        summary: 'Remove received messages that were handled (receive with acknowledgement)',
        description: 'Body: `{"ids": [...]}`, the `id`s of received messages. Unacknowledged messages are received again once `inboxes.lease` has passed.',
        security: bearer,
        response: { 200: { type: 'object', properties: { acknowledged: { type: 'integer' } } }, ...errors(400, 401, 403) },
      },
    },
    async (request) => {
      const client = requirePrincipal(request);
      return { acknowledged: await services.inboxes.ack(clientIdOf(client), ackIds(request.body)) };
    },
  );
}
