/**
 * The core API as an entry of the preset: its routes (events, runs, hosts, dead letters, the stream,
 * tokens, clients and the audit log, the recipients' WebSocket), its permissions, and the presenters the
 * outputs' streams use by default (`run`, `host`, `deadLetter`: what is published looks as the API shows it).
 */

import type { FastifyInstance } from 'fastify';
import { deadLetterMessage, hostEventMessage, runEventMessage } from '../core/outbox.js';
import { PERMISSIONS } from '../core/principal.js';
import type { Profile } from '../core/profile.js';
import { hostResource, runResource } from './resources.js';
import { registerAccessRoutes } from './routes/access.js';
import { registerInboxRoutes } from './routes/inbox.js';
import { registerDeadLetterRoutes } from './routes/dead-letters.js';
import { registerEventRoutes } from './routes/events.js';
import { registerHostRoutes } from './routes/hosts.js';
import { registerRecipientRoutes } from './routes/recipients.js';
import { registerRunRoutes } from './routes/runs.js';
import { registerStreamRoute } from './routes/stream.js';

export const CORE_API: Profile<FastifyInstance> = {
  name: 'api',
  description: 'The HTTP API: events in, runs, hosts and dead letters out, the run-event stream, tokens, clients and the audit log.',
  builtIn: true,
  permissions: PERMISSIONS,
  presenters: {
    run: { stream: 'runEvents', description: 'The run as `GET /v1/runs/{id}` shows it.', present: (e) => runEventMessage(e, runResource(e.payload)) },
    host: { stream: 'hostEvents', description: 'The host as `GET /v1/hosts/{id}` shows it.', present: (e) => hostEventMessage(e, hostResource(e.payload)) },
    deadLetter: { stream: 'deadLetters', description: '`{"message": …, "error": …, "reason": …}`.', present: deadLetterMessage },
  },
  http(app, { services }) {
    registerEventRoutes(app, services);
    registerRunRoutes(app, services);
    registerHostRoutes(app, services);
    registerDeadLetterRoutes(app, services);
    registerStreamRoute(app, services);
    registerAccessRoutes(app, services);
    registerInboxRoutes(app, services);
    registerRecipientRoutes(app, services);
  },
};
