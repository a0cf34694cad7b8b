/** The `mqtt` transport's options (MQTT 3.1.1 and 5, e.g. Mosquitto). */

import { duration, type SchemaNode } from '../../core/options.js';
import { TLS_SCHEMA } from '../tls.js';

const CONNECTION: Record<string, SchemaNode> = {
  url: { type: 'string', minLength: 1, description: 'The broker: `mqtt://host:1883` (`mqtts://host:8883` for TLS).' },
  username: { type: 'string', minLength: 1, description: 'User name (with `password`).' },
  password: { type: 'string', description: 'Password of `username`. `${VAR}` keeps it out of the file.' },
  tls: TLS_SCHEMA,
  protocolVersion: { enum: [4, 5], description: 'MQTT 3.1.1 (`4`) or MQTT 5 (`5`, default). Headers and binary-mode CloudEvents need MQTT 5 (user properties).' },
  keepalive: { type: 'integer', minimum: 0, description: 'Keep-alive interval in seconds (default 30).' },
  reconnectPeriod: duration('Wait between two reconnect attempts (default `1s`). The client reconnects by itself, forever.'),
};

export const MQTT_INPUT_SCHEMA: SchemaNode = {
  type: 'object',
  description:
    'Subscribe to topics in a persistent session. Messages are acknowledged (PUBACK) once committed; the MQTT topic becomes the `topic` extension with `/` turned into `.`.',
  additionalProperties: false,
  required: ['url', 'topics', 'clientId'],
  properties: {
    ...CONNECTION,
    topics: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 }, description: 'Topic filters (`+`, `#`) to subscribe to.' },
    clientId: {
      type: 'string',
      minLength: 1,
      description: 'The client id: the broker keeps the session (subscriptions, unacknowledged and queued messages) under it. Two processes may not share one.',
    },
    qos: {
      enum: [0, 1, 2],
      description:
        'Subscription QoS (default 1, at least once). `0`: at most once, a message in flight when the process dies is lost. `2`: the broker does not send the message again after the first handshake step, so prefer 1.',
    },
    clean: { type: 'boolean', description: 'Start a new session at each connection (default false: a restart gets what arrived meanwhile). `true` loses those.' },
    sessionExpiry: duration('MQTT 5: how long the broker keeps the session after a disconnect (default: for ever, as MQTT 3.1.1 does).'),
    maxInFlight: {
      type: 'integer',
      minimum: 1,
      maximum: 65535,
      description:
        'MQTT 5: unacknowledged messages at most (Receive Maximum, default 100): the window that group commits draw from. MQTT 3.1.1: the broker decides (Mosquitto `max_inflight_messages`, default 20).',
    },
  },
};

export const MQTT_OUTPUT_SCHEMA: SchemaNode = {
  type: 'object',
  description: "Publish with QoS 1, waiting for the broker's PUBACK.",
  additionalProperties: false,
  required: ['url'],
  properties: {
    ...CONNECTION,
    clientId: { type: 'string', minLength: 1, description: 'The client id (default: a random one).' },
    topic: { type: 'string', minLength: 1, description: 'The topic when a message names no topic. Topics are used as given (no `.` to `/`).' },
    retain: { type: 'boolean', description: 'Publish retained messages (default false).' },
  },
};
