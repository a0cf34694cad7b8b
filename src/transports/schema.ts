/**
 * The configuration of inputs and outputs: what every input and output has in common, and each
 * transport's own options (from `<transport>/schema.ts`, which holds no driver code).
 *
 *   inputs:
 *     orders:                        # the input's name: events carry it, metrics and health name it
 *       amqp: { url: "amqp://127.0.0.1", queue: orders }
 *       decoder: { format: json, typeField: message_type }
 *   outputs:
 *     bus:
 *       kafka: { brokers: ["127.0.0.1:9092"] }
 *       runEvents: { topic: platform.dispatcher.runs }
 *       deadLetters: { topic: errors }
 */

import type { SchemaNode } from '../config/schema.js';
import { SIZE_SCHEMA } from '../core/units.js';
import { AMQP_INPUT_SCHEMA, AMQP_OUTPUT_SCHEMA } from './amqp/schema.js';
import { KAFKA_INPUT_SCHEMA, KAFKA_OUTPUT_SCHEMA } from './kafka/schema.js';
import { SNS_OUTPUT_SCHEMA } from './sns/schema.js';
import { SQS_INPUT_SCHEMA } from './sqs/schema.js';
import { MQTT_INPUT_SCHEMA, MQTT_OUTPUT_SCHEMA } from './mqtt/schema.js';
import { NATS_INPUT_SCHEMA, NATS_OUTPUT_SCHEMA } from './nats/schema.js';

export const TRANSPORT_NAMES = ['kafka', 'amqp', 'nats', 'sqs', 'sns', 'mqtt'] as const;
export type TransportName = (typeof TRANSPORT_NAMES)[number];

const JSON_DECODER: Record<string, SchemaNode> = {
  type: { type: 'string', minLength: 1, description: '`json`: a fixed event type.' },
  typeField: { type: 'string', minLength: 1, description: '`json`: the field (dotted path) holding the event type, e.g. `message_type`; wins over `type`.' },
  idField: { type: 'string', minLength: 1, description: "`json`: the field holding the event id (default: the broker's message id, else the SHA-256 of the bytes)." },
  source: { type: 'string', minLength: 1, description: '`json`: the event source (default `<transport>://<input>`).' },
  topicField: { type: 'string', minLength: 1, description: '`json`: the field holding the `topic` extension (default: the topic, routing key or subject the message came on).' },
};

export const DECODER_SCHEMA: SchemaNode = {
  type: 'object',
  description:
    'How messages become events. `cloudevents` (default): the transport\'s CloudEvents binding, binary or structured mode, or a batch. ' +
    '`json`: plain JSON messages, the type from a field or fixed. `sns`: an SNS notification whose `Message` is decoded by `message`.',
  additionalProperties: false,
  required: ['format'],
  properties: {
    format: { enum: ['cloudevents', 'json', 'sns'], description: 'The decoder.' },
    ...JSON_DECODER,
    message: {
      type: 'object',
      description: '`sns`: how the notification\'s `Message` is decoded (default `{format: json}`).',
      additionalProperties: false,
      required: ['format'],
      properties: { format: { enum: ['cloudevents', 'json'], description: 'The decoder of the inner message.' }, ...JSON_DECODER },
    },
  },
};

const INPUT_TRANSPORTS: Partial<Record<TransportName, SchemaNode>> = {
  amqp: AMQP_INPUT_SCHEMA,
  kafka: KAFKA_INPUT_SCHEMA,
  sqs: SQS_INPUT_SCHEMA,
  nats: NATS_INPUT_SCHEMA,
  mqtt: MQTT_INPUT_SCHEMA,
};

const OUTPUT_TRANSPORTS: Partial<Record<TransportName, SchemaNode>> = {
  amqp: AMQP_OUTPUT_SCHEMA,
  kafka: KAFKA_OUTPUT_SCHEMA,
  sns: SNS_OUTPUT_SCHEMA,
  nats: NATS_OUTPUT_SCHEMA,
  mqtt: MQTT_OUTPUT_SCHEMA,
};

export const INPUT_SCHEMA: SchemaNode = {
  type: 'object',
  description: 'One input: exactly one transport key with its options, and how its messages are decoded.',
  additionalProperties: false,
  properties: {
    ...INPUT_TRANSPORTS,
    decoder: DECODER_SCHEMA,
    service: { type: 'string', minLength: 1, description: 'The `service` its events belong to (default: the input name).' },
    orgId: { type: 'string', minLength: 1, description: 'The tenant its events belong to (default `auth.defaults.orgId`).' },
    maxBytes: { ...SIZE_SCHEMA, description: 'Largest message taken; a bigger one is a dead letter (`payload_too_large`). Default: `server.bodyLimit`.' },
  },
};

const RELAY_SCHEMA = (what: string, example: string): SchemaNode => ({
  type: 'object',
  description: `Relay ${what} to this output.`,
  additionalProperties: false,
  required: ['topic'],
  properties: {
    topic: { type: 'string', minLength: 1, description: `The topic, routing key, subject or queue, as the transport names destinations (e.g. \`${example}\`).` },
  },
});

export const OUTPUT_SCHEMA: SchemaNode = {
  type: 'object',
  description: 'One output: exactly one transport key with its options, and what is relayed to it.',
  additionalProperties: false,
  properties: {
    ...OUTPUT_TRANSPORTS,
    runEvents: RELAY_SCHEMA('run events (`create`, `update`, `delete`, `read`; key = run id; headers `event_type`, `service`, `status`, `org_id`)', 'platform.dispatcher.runs'),
    deadLetters: RELAY_SCHEMA('dead letters (`{"message": …, "error": …, "reason": …}`)', 'errors'),
  },
};
