/** The `amqp` transport's options (RabbitMQ, AMQP 0-9-1). */

import type { SchemaNode } from '../../core/options.js';
import { TLS_SCHEMA } from '../tls.js';

const CONNECTION: Record<string, SchemaNode> = {
  url: {
    type: 'string',
    minLength: 1,
    description: 'The broker: `amqp://user:password@host:5672/vhost` (`amqps://` for TLS). `${VAR}` keeps the password out of the file.',
  },
  tls: TLS_SCHEMA,
  heartbeat: { type: 'integer', minimum: 0, description: 'Heartbeat interval in seconds (0: none; default: what the broker suggests).' },
};

const EXCHANGE: Record<string, SchemaNode> = {
  exchange: { type: 'string', description: 'The exchange (`""`: the default exchange, where the routing key names a queue).' },
  exchangeType: { enum: ['topic', 'direct', 'fanout', 'headers'], description: 'Its type, when the dispatcher declares it (default `topic`).' },
  declare: { type: 'boolean', description: 'Declare the exchange and queue (durable) if they do not exist (default true).' },
};

export const AMQP_INPUT_SCHEMA: SchemaNode = {
  type: 'object',
  description: 'Consume a RabbitMQ queue. A message is acknowledged once it is committed, with those before it (one multiple ack per turn); a redelivery makes no new runs.',
  additionalProperties: false,
  required: ['url', 'queue'],
  properties: {
    ...CONNECTION,
    queue: { type: 'string', minLength: 1, description: 'The queue to consume.' },
    ...EXCHANGE,
    bindings: { type: 'array', items: { type: 'string' }, description: 'Routing keys (`*`, `#`) binding the queue to `exchange` (default `["#"]` when an exchange is named).' },
    prefetch: { type: 'integer', minimum: 1, description: 'Unacknowledged messages at most (default 1000): the window that group commits draw from.' },
  },
};

export const AMQP_OUTPUT_SCHEMA: SchemaNode = {
  type: 'object',
  description: 'Publish to a RabbitMQ exchange, persistent, with publisher confirms.',
  additionalProperties: false,
  required: ['url'],
  properties: {
    ...CONNECTION,
    ...EXCHANGE,
    routingKey: { type: 'string', description: 'The routing key when a message names no topic.' },
  },
};
