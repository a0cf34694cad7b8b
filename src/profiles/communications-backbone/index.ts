/**
 * The Communications Backbone profile (../../../shared/seeds/notes/communications-backbone.md): clients
 * registered with a topic subscription exchange messages through inboxes. Switched on by
 * `profiles: { communications-backbone: {…} }`.
 *
 * It only translates: its clients are the core's clients (service `communications-backbone`), a message is
 * an event (`communications-backbone.message`, its topic the subject; `communications-backbone.broadcast`),
 * its routes run the core's `deliver` action, and inboxes are the core's. An event of those types from any
 * input (a Kafka topic, `POST /v1/events`) reaches the clients the same way.
 */

import type { Command } from 'commander';
import type { FastifyInstance } from 'fastify';
import type { Profile } from '../../core/profile.js';
import { registerBackboneCli } from './cli.js';
import { COMMUNICATIONS_BACKBONE_SECTION, type CommunicationsBackboneConfig } from './config.js';
import { registerRoutes } from './http.js';
import { startLayout } from './layout.js';
import { BROADCAST_TYPE, CLIENT_SERVICE, makeSender, MESSAGE_TYPE, PROFILE, RECEIVE, SEND } from './sender.js';

export const COMMUNICATIONS_BACKBONE: Profile<FastifyInstance, Command> = {
  name: PROFILE,
  description: 'Communications Backbone: clients with topic subscriptions send (`/send`, `/notify`) and receive (`/receive`, a WebSocket) through their inboxes.',
  config: COMMUNICATIONS_BACKBONE_SECTION,
  environment: {
    SOAR_TOKEN_LIFETIME: { path: ['token', 'lifetime'], kind: 'number', map: (hours) => `${Number(hours) * 3600}s`, description: 'hours' },
    SOAR_TOKEN_SECRET: { path: ['token', 'secret'] },
  },
  permissions: {
    [SEND]: 'send and broadcast messages (`/send`, `/notify`, the socket)',
    [RECEIVE]: 'receive one’s own inbox (`/receive`, `/ack`, the socket)',
  },
  routes: ({ name }) => [
    {
      name,
      description: 'Messages sent to a topic (`POST /send`) go to the inbox of every client whose subscription matches it.',
      match: { type: MESSAGE_TYPE },
      actions: [{ deliver: { to: 'subscribers', topic: '{{ subject }}', sender: '{{ sender | default: source }}', service: CLIENT_SERVICE } }],
    },
    {
      name: `${name}.broadcast`,
      description: 'Broadcasts (`POST /notify`) go to the inbox of every client of the tenant.',
      match: { type: BROADCAST_TYPE },
      actions: [{ deliver: { to: 'all', sender: '{{ sender | default: source }}', service: CLIENT_SERVICE } }],
    },
  ],
  async http(scope, context) {
    const config = context.config as CommunicationsBackboneConfig;
    const sender = makeSender(config, context.services);
    registerRoutes(scope, context, sender);
    if (config.amqp !== undefined) await startLayout(scope, config.amqp, context, sender);
  },
  cli: registerBackboneCli,
};
