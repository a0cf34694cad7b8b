/** `profiles.communications-backbone`: the profile's section of the configuration. */

import { duration, object, section, size, Type, type Options } from '../../core/options.js';
import { permissions } from '../../core/settings.js';

/** What a client registered through `POST /client` may do unless the section says otherwise. */
export const CLIENT_PERMISSIONS = ['communications-backbone:messages:send', 'communications-backbone:messages:receive', 'dispatcher:inbox:receive'];

export const COMMUNICATIONS_BACKBONE_SECTION = section(
  {
    token: section(
      {
        lifetime: duration('How long a token from `/token` is valid (the original’s `SOAR_TOKEN_LIFETIME`, in hours).', '1d'),
        secret: Type.Optional(
          Type.String({
            minLength: 16,
            description: 'The secret `/token` signs with (the original’s `SOAR_TOKEN_SECRET`); without it, the dispatcher’s own (`auth.tokens.secrets`).',
          }),
        ),
      },
      { description: 'Tokens of the client credentials grant (`/token`).' },
    ),
    receive: section(
      {
        defaultMessages: Type.Integer({ minimum: 1, description: 'Messages `/receive` returns when `max_messages` is not given (the original’s 10).', default: 10 }),
        acknowledge: Type.Boolean({
          description:
            'Receive with acknowledgement for every client: messages returned are hidden for `inboxes.lease` and removed by `POST /ack`. ' +
            'Off (the original’s pop-on-receive), a client may still ask for it with `/receive?ack=true`.',
          default: false,
        }),
      },
      { description: '`GET /receive`. How many messages one call may return at most is `inboxes.maxReceive`.' },
    ),
    maxBodyBytes: size('Largest message body `/send` and `/notify` take (its JSON text).', '256KiB'),
    clientPermissions: permissions('What a client registered through `POST /client` may do.', CLIENT_PERMISSIONS),
    websocket: section(
      {
        path: Type.String({ minLength: 1, pattern: '^/', description: 'Where clients open the socket.', default: '/ws' }),
        handshakeTimeout: duration('How long a new socket may wait before its first message, the token handshake.', '10s'),
        maxMessagesPerSecond: Type.Integer({ minimum: 1, description: 'Messages one socket may send per second (averaged over a few seconds); beyond it the socket is closed (1008).', default: 200 }),
        pushBatch: Type.Integer({ minimum: 1, maximum: 1000, description: 'Inbox messages taken per push.', default: 100 }),
        recheck: duration('How often an open socket checks its token again: an expired token, or a deleted client or rotated secret, closes it (4401).', '30s'),
      },
      { description: 'The WebSocket push endpoint (the original’s planned “Add websockets”).' },
    ),
    amqp: Type.Optional(
      object(
        {
          url: Type.String({ minLength: 1, description: 'The RabbitMQ the layout is mirrored in (`amqp://user:pass@host:5672/vhost`).' }),
          publishExchange: Type.String({ minLength: 1, description: 'The topic exchange messages are published to.', default: 'soar-publish' }),
          broadcastExchange: Type.String({ minLength: 1, description: 'The fanout exchange broadcasts are published to.', default: 'soar-broadcast' }),
        },
        {
          description:
            'Mirror the original’s RabbitMQ layout for systems that read or write it directly: per client `<id>-inbox` (bound with its subscription), ' +
            '`<id>-outbox` and `<id>-broadcast` (read as `/send` and `/notify` of that client), and the two exchanges.',
        },
      ),
    ),
  },
  { description: 'Communications Backbone’s clients, tokens, send, notify and receive, at its own paths.' },
);

export type CommunicationsBackboneConfig = Options<typeof COMMUNICATIONS_BACKBONE_SECTION>;
