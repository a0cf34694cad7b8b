/**
 * The calling client's inbox (core/inboxes.ts): what `deliver` actions put there for it.
 *
 * - `GET /v1/inbox?max=N[&ack=true]`: the oldest messages, removed as they are returned; with `ack=true`
 *   they are leased instead (hidden for `inboxes.lease`) and removed by `POST /v1/inbox/ack`.
 * - `POST /v1/inbox/ack` `{ "ids": [...] }`: leased messages handled.
 *
 * Only a client (a bearer token) has an inbox: a pre-shared key or an identity is `forbidden` here.
 */

import type { FastifyInstance, FastifyRequest } from 'fastify';
import { DispatcherError } from '../../core/errors.js';
import type { Services } from '../../core/services.js';
import { requirePrincipal } from '../auth.js';
import { parseJsonBytes } from '../../core/json.js';
import { errors } from '../schemas.js';

/** The client id of the caller: its inbox. */
function clientOf(request: FastifyRequest): string {
  const principal = requirePrincipal(request);
  if (principal.kind !== 'client') throw new DispatcherError('forbidden', `${principal.id} has no inbox: only a client (a bearer token from POST /v1/token) receives`);
  return principal.id.slice('client:'.length);
}

export const INBOX_MESSAGE_SCHEMA = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    topic: { type: ['string', 'null'] },
    body: {},
    sender: { type: 'string' },
    time: { type: 'string', format: 'date-time' },
    deliveries: { type: 'integer', description: 'Under a lease: how often it was handed out.' },
  },
} as const;

export function registerInboxRoutes(app: FastifyInstance, s: Services): void {
  app.get(
    '/v1/inbox',
    {
      config: { permission: 'dispatcher:inbox:receive' },
      schema: {
        operationId: 'receiveInbox',
        tags: ['access'],
        summary: "The calling client's oldest inbox messages",
        description:
          '`max` (1 to `inboxes.maxReceive`, default 10) messages, oldest first, removed as they are returned; with `ack=true` they are hidden ' +
          'for `inboxes.lease` instead and removed by `POST /v1/inbox/ack` (received again if not acknowledged in time).',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { max: { type: 'string', description: `1 to ${s.inboxes.settings.maxReceive}; default 10` }, ack: { type: 'string', enum: ['true', 'false'] } },
        },
        response: { 200: { type: 'object', properties: { data: { type: 'array', items: INBOX_MESSAGE_SCHEMA } } }, ...errors(400, 403) },
      },
    },
    async (request) => {
      const q = request.query as { max?: string; ack?: string };
      const max = q.max === undefined ? 10 : Number(q.max);
      const limit = s.inboxes.settings.maxReceive;
      if (!Number.isInteger(max) || max < 1 || max > limit) throw new DispatcherError('bad_request', `max: an integer from 1 to ${limit}, got ${JSON.stringify(q.max)}`);
      return { data: await s.inboxes.receive(clientOf(request), { max, lease: q.ack === 'true' }) };
    },
  );

  app.post(
    '/v1/inbox/ack',
    {
      config: { permission: 'dispatcher:inbox:receive' },
      schema: {
        operationId: 'acknowledgeInbox',
        tags: ['access'],
        summary: 'Remove leased inbox messages that were handled',
        description: 'Body: `{"ids": ["<message id>", …]}`. Ids of messages that are not (or no longer) in the caller’s inbox are ignored.',
        response: { 200: { type: 'object', properties: { acknowledged: { type: 'integer' } } }, ...errors(400, 403) },
      },
    },
    async (request) => {
      const client = clientOf(request);
      return { acknowledged: await s.inboxes.ack(client, ackIds(request.body)) };
    },
  );
}

/** `{ "ids": [...] }`: the ids of leased messages. */
export function ackIds(raw: unknown): string[] {
  const value = Buffer.isBuffer(raw) ? (raw.length === 0 ? undefined : parseJsonBytes(raw)) : raw;
  const ids = (value as { ids?: unknown } | null | undefined)?.ids;
  if (!Array.isArray(ids) || ids.length === 0 || ids.length > 10_000 || !ids.every((id) => typeof id === 'string' && id.length > 0 && id.length <= 100)) {
    throw new DispatcherError('bad_request', 'the body must be {"ids": [...]}: 1 to 10000 message ids, as received');
  }
  return ids as string[];
}
