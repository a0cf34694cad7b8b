/**
 * The profile's names (its event types, its permissions) and the one way a client's message is taken in,
 * shared by `/send`, `/notify`, the socket and the RabbitMQ outboxes: an event, committed with its
 * `deliver` run before the caller hears back.
 */

import { randomUUID } from 'node:crypto';
import { DispatcherError } from '../../core/errors.js';
import { checkTopic } from '../../core/inboxes.js';
import { depthExceeds, type InboundMessage } from '../../core/intake.js';
import type { Services } from '../../core/services.js';
import type { CommunicationsBackboneConfig } from './config.js';

export const PROFILE = 'communications-backbone';
/** The service of the clients this profile registers: how its listings tell them from other clients. */
export const CLIENT_SERVICE = PROFILE;
export const MESSAGE_TYPE = `${PROFILE}.message`;
export const BROADCAST_TYPE = `${PROFILE}.broadcast`;
/** Its clients are the core's: managed with the core's permissions. */
export const CLIENTS_READ = 'dispatcher:clients:read';
export const CLIENTS_WRITE = 'dispatcher:clients:write';
export const SEND = `${PROFILE}:messages:send`;
export const RECEIVE = `${PROFILE}:messages:receive`;
/** The deepest body taken (intake's default `maxDepth`, less the event around it), checked before it is serialized. */
const MAX_BODY_DEPTH = 31;

/** What sending needs, shared by `/send`, `/notify`, the socket and the RabbitMQ outboxes. */
export interface Sender {
  /** Take a message in as sent by the client: committed (with its `deliver` run) when this resolves. */
  send(client: { id: string; orgId: string }, topic: string | null, body: unknown): Promise<{ id: string; run: string | null }>;
}

export function makeSender(config: CommunicationsBackboneConfig, services: Services): Sender {
  return {
    async send(client, topic, body) {
      if (body === undefined) throw new DispatcherError('bad_request', 'body: the message is missing (any JSON value but null)');
      if (body === null || body === '') throw new DispatcherError('bad_request', 'body: the message is empty');
      if (topic !== null) checkTopic(topic);
      if (depthExceeds(body, MAX_BODY_DEPTH)) throw new DispatcherError('too_deep', `body: the message nests deeper than ${MAX_BODY_DEPTH} levels`);
      const id = randomUUID();
      const event: Record<string, unknown> = {
        specversion: '1.0',
        id,
        source: `${PROFILE}/${client.id}`,
        type: topic === null ? BROADCAST_TYPE : MESSAGE_TYPE,
        sender: client.id,
        time: new Date().toISOString(),
        datacontenttype: 'application/json',
        data: body,
      };
      if (topic !== null) event.subject = topic;
      const size = Buffer.byteLength(JSON.stringify(body));
      if (size > config.maxBodyBytes) throw new DispatcherError('payload_too_large', `the message is larger than ${config.maxBodyBytes} bytes (maxBodyBytes): ${size} bytes of JSON`);
      const raw = Buffer.from(JSON.stringify(event));
      const message: InboundMessage = { input: PROFILE, raw, contentType: 'application/cloudevents+json', headers: {}, service: CLIENT_SERVICE, orgId: client.orgId };
      const answer = await services.receive(message);
      const refused = answer.refused[0];
      if (refused !== undefined) throw refused.error;
      const result = answer.results[0];
      return { id, run: result?.runIds[0] ?? null };
    },
  };
}

