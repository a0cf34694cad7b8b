/**
 * Recipients: agents that connect to the dispatcher over a WebSocket and run the directives it sends them
 * (the built-in connector, src/core/recipients.ts). `GET /v1/recipients/{id}/connect` upgrades to the
 * WebSocket once the core's authentication, the permission and the id are checked, so that a refused agent
 * gets a plain HTTP answer (401, 403, 400); `GET /v1/recipients` lists those connected in the caller's tenant.
 */

import type { FastifyInstance } from 'fastify';
import { validate as isUuid } from 'uuid';
import type { RawData, WebSocket } from 'ws';
import { DispatcherError } from '../../core/errors.js';
import { inScope } from '../../core/principal.js';
import type { ConnectedRecipient, RecipientSocket } from '../../core/recipients.js';
import type { Services } from '../../core/services.js';
import { requirePrincipal } from '../auth.js';
import { errors, idParams } from '../schemas.js';

const recipientSchema = {
  type: 'object',
  properties: {
    recipient: { type: 'string', description: 'Its id (a UUID), unique within the tenant.' },
    org_id: { type: 'string' },
    service: { type: 'string', description: 'The service of the principal that connected it.' },
    connected_at: { type: 'string', format: 'date-time' },
    address: { type: 'string', description: "The client's address." },
  },
  required: ['recipient', 'org_id', 'service', 'connected_at', 'address'],
} as const;

function recipientResource(r: ConnectedRecipient) {
  return { recipient: r.recipient, org_id: r.orgId, service: r.service, connected_at: new Date(r.connectedAt).toISOString(), address: r.address };
}

/** A WebSocket as the hub sees it. */
function hubSocket(socket: WebSocket): RecipientSocket {
  return {
    send: (text) => socket.send(text),
    close: (code, reason) => socket.close(code, reason),
    ping: () => socket.ping(),
    terminate: () => socket.terminate(),
  };
}

function text(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

export function registerRecipientRoutes(app: FastifyInstance, s: Services): void {
  app.get(
    '/v1/recipients',
    {
      config: { permission: 'dispatcher:recipients:read' },
      schema: {
        operationId: 'listRecipients',
        tags: ['recipients'],
        summary: "The recipients connected to this dispatcher process, in the caller's tenant",
        response: { 200: { type: 'object', properties: { data: { type: 'array', items: recipientSchema } } } },
      },
    },
    async (request) => {
      const scope = request.scope;
      const connected = s.recipients.list(scope?.orgId).filter((r) => inScope({ org_id: r.orgId, service: r.service }, scope));
      return { data: connected.map(recipientResource) };
    },
  );

  app.route({
    method: 'GET',
    url: '/v1/recipients/:id/connect',
    config: { permission: 'dispatcher:recipients:connect' },
    schema: {
      operationId: 'connectRecipient',
      tags: ['recipients'],
      summary: 'Connect as a recipient: a WebSocket upgrade',
      description:
        'A recipient (an agent that runs directives) connects with `Connection: Upgrade`, `Upgrade: websocket`; `id` is its UUID, unique within the tenant of ' +
        'the principal. The dispatcher sends `{"type":"directive","id","directive","metadata","payload"}`; the recipient answers `{"type":"accepted","id"}` or ' +
        '`{"type":"refused","id","reason"}`. A newer connection of the same recipient replaces this one (close code 4000). See docs/api.md, "Recipients".',
      params: idParams,
      response: { 101: { description: 'Switching Protocols: the WebSocket is open.' }, ...errors(400) },
    },
    // Before the upgrade: a bad id is a plain 400, not a WebSocket closed at once.
    preHandler: (request, _reply, done) => {
      const { id } = request.params as { id: string };
      if (!isUuid(id)) return done(new DispatcherError('bad_request', `recipient id "${id.slice(0, 100)}" is not a UUID`));
      done();
    },
    // Without the upgrade headers.
    handler: async () => {
      throw new DispatcherError('bad_request', 'GET /v1/recipients/{id}/connect opens a WebSocket: send Connection: Upgrade and Upgrade: websocket');
    },
    wsHandler: (socket, request) => {
      const principal = requirePrincipal(request);
      const { id } = request.params as { id: string };
      const link = s.recipients.attach(id, principal.orgId, hubSocket(socket), { service: principal.service, address: request.ip });
      socket.on('message', (data, isBinary) => link.message(isBinary ? null : text(data)));
      socket.on('pong', () => link.pong());
      socket.on('close', () => link.closed());
    },
  });
}
