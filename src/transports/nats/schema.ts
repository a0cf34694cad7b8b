/** The `nats` transport's options (NATS with JetStream). */

import { duration, type SchemaNode } from '../../core/options.js';
import { TLS_SCHEMA } from '../tls.js';

const CONNECTION: Record<string, SchemaNode> = {
  servers: {
    anyOf: [
      { type: 'string', minLength: 1 },
      { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
    ],
    description: 'The server or servers: `nats://host:4222` (`tls://` for TLS). The client reconnects by itself, forever.',
  },
  user: { type: 'string', minLength: 1, description: 'User name (with `pass`).' },
  pass: { type: 'string', description: 'Password of `user`. `${VAR}` keeps it out of the file.' },
  token: { type: 'string', minLength: 1, description: 'An authentication token.' },
  nkeySeed: { type: 'string', minLength: 1, description: 'An NKey seed (`SU…`) to sign the server nonce with.' },
  credsFile: { type: 'string', minLength: 1, description: 'A `.creds` file (user JWT and NKey seed), read when the dispatcher starts.' },
  tls: TLS_SCHEMA,
  name: { type: 'string', minLength: 1, description: 'The connection name the server shows (default `dispatcher-<input or output name>`).' },
  reconnectWait: duration('Wait between two reconnect attempts to one server (default `1s`).'),
};

export const NATS_INPUT_SCHEMA: SchemaNode = {
  type: 'object',
  description:
    'Consume a JetStream stream through a durable pull consumer. Each message is acknowledged once committed (or kept as a dead letter); ' +
    'a redelivery makes no new runs.',
  additionalProperties: false,
  required: ['servers', 'stream', 'consumer'],
  properties: {
    ...CONNECTION,
    stream: { type: 'string', minLength: 1, description: 'The stream.' },
    consumer: { type: 'string', minLength: 1, description: 'The durable consumer name. Processes with the same name share the work.' },
    subjects: {
      type: 'array',
      minItems: 1,
      items: { type: 'string', minLength: 1 },
      description: "Subjects (`*`, `>`) the consumer takes (its filter); with `create`, also the stream's subjects when the stream is created.",
    },
    create: { type: 'boolean', description: 'Create the stream (file storage) and the durable consumer when they do not exist (default false).' },
    ackWait: duration('When the server delivers an unacknowledged message again, for a consumer the dispatcher creates (default `30s`). A message waiting for the store is kept alive meanwhile.'),
    maxAckPending: {
      type: 'integer',
      minimum: 1,
      description: 'Unacknowledged messages at most, for a consumer the dispatcher creates (default 1000): the window that group commits draw from.',
    },
    batch: { type: 'integer', minimum: 1, description: 'Messages asked for in one pull (default 500).' },
  },
};

export const NATS_OUTPUT_SCHEMA: SchemaNode = {
  type: 'object',
  description: "Publish to a subject: through JetStream, waiting for the stream's acknowledgement (default), or on core NATS.",
  additionalProperties: false,
  required: ['servers'],
  properties: {
    ...CONNECTION,
    subject: { type: 'string', minLength: 1, description: 'The subject when a message names no topic.' },
    jetstream: {
      type: 'boolean',
      description:
        'Publish through JetStream and wait for the PubAck (default true); a message key becomes the `Nats-Msg-Id` header, so the stream drops a duplicate within its window. `false`: core NATS, fire and forget after a flush.',
    },
  },
};
