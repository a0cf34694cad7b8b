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
 *       streams:                     # more streams, each with its presenter and filter
 *         - { stream: hostEvents, topic: platform.dispatcher.hosts }
 */

import type { SchemaNode } from '../core/options.js';
import { STREAM_KINDS, type StreamKind } from '../core/profile.js';
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

/** The decoders every input can name; the profiles switched on add theirs (`<profile>.<name>`). */
export const BUILTIN_DECODERS = ['cloudevents', 'json', 'sns'] as const;

/** How an input's messages become events; `profileDecoders` are the decoder names the preset's profiles offer. */
export const decoderSchema = (profileDecoders: readonly string[]): SchemaNode => ({
  type: 'object',
  description:
    'How messages become events. `cloudevents` (default): the transport\'s CloudEvents binding, binary or structured mode, or a batch. ' +
    '`json`: plain JSON messages, the type from a field or fixed. `sns`: an SNS notification whose `Message` is decoded by `message`. ' +
    "A profile's decoder (`<profile>.<name>`) reads its seed system's messages, with its `options`.",
  additionalProperties: false,
  required: ['format'],
  properties: {
    format: { enum: [...BUILTIN_DECODERS, ...profileDecoders], description: 'The decoder.' },
    options: { type: 'object', description: "A profile decoder's options, as the decoder defines them." },
    ...JSON_DECODER,
    message: {
      type: 'object',
      description: '`sns`: how the notification\'s `Message` is decoded (default `{format: json}`).',
      additionalProperties: false,
      required: ['format'],
      properties: { format: { enum: ['cloudevents', 'json'], description: 'The decoder of the inner message.' }, ...JSON_DECODER },
    },
  },
});

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

export const inputSchema = (profileDecoders: readonly string[]): SchemaNode => ({
  type: 'object',
  description: 'One input: exactly one transport key with its options, and how its messages are decoded.',
  additionalProperties: false,
  properties: {
    ...INPUT_TRANSPORTS,
    decoder: decoderSchema(profileDecoders),
    service: { type: 'string', minLength: 1, description: 'The `service` its events belong to (default: the input name).' },
    orgId: { type: 'string', minLength: 1, description: 'The tenant its events belong to (default `auth.defaults.orgId`).' },
    maxBytes: { ...SIZE_SCHEMA, description: 'Largest message taken; a bigger one is a dead letter (`payload_too_large`). Default: `server.bodyLimit`.' },
  },
});

const names = (description: string): SchemaNode => ({ type: 'array', minItems: 1, items: { type: 'string', minLength: 1 }, description });

const STREAM_PROPERTIES: Record<string, SchemaNode> = {
  topic: { type: 'string', minLength: 1, description: 'The topic, routing key, subject or queue, as the transport names destinations (e.g. `platform.dispatcher.runs`, `errors`).' },
  name: {
    type: 'string',
    pattern: '^[A-Za-z0-9_.:-]+$',
    description:
      'The name of its cursor, which keeps its place across restarts (default `run_events`, `host_events` or `dead_letters`); ' +
      'give one when an output carries two streams of one kind.',
  },
  presenter: {
    type: 'string',
    minLength: 1,
    description: 'The shape of what is published: `run`, `host` or `deadLetter` (the default of each kind, as the API shows them), or a presenter of a profile switched on (`<profile>.<name>`).',
  },
  filter: {
    type: 'object',
    description: 'Only what matches every filter given: `route` (runs of these routes; dead letters of them or of these inputs), `service`, `profile` (what the profile made).',
    additionalProperties: false,
    properties: {
      route: names('Routes: their runs and hosts, and the dead letters of their runs; for dead letters, also inputs (the dead letters of what came through them).'),
      service: names('The services that own what is relayed (the `service` of the event it came from).'),
      profile: names("Profiles switched on: the runs and hosts of their action types, and the dead letters of their inputs and routes."),
    },
  },
};

const STREAM_KIND_NAMES: Record<StreamKind, string> = {
  runEvents: 'run events (`create`, `update`, `delete`, `read`; key = run id; headers `event_type`, `service`, `status`, `org_id`)',
  hostEvents: 'host events (`create`, `update`; key = host id; headers `event_type`, `service`, `status`, `org_id`, `run_id`)',
  deadLetters: 'dead letters (`{"message": …, "error": …, "reason": …}`)',
};

const streamSchema = (what: string, withKind: boolean): SchemaNode => ({
  type: 'object',
  description: `Relay ${what} to this output.`,
  additionalProperties: false,
  required: withKind ? ['stream', 'topic'] : ['topic'],
  properties: withKind ? { stream: { enum: STREAM_KINDS, description: 'What it relays: `runEvents`, `hostEvents` or `deadLetters`.' }, ...STREAM_PROPERTIES } : STREAM_PROPERTIES,
});

export const OUTPUT_SCHEMA: SchemaNode = {
  type: 'object',
  description: 'One output: exactly one transport key with its options, and the streams relayed to it.',
  additionalProperties: false,
  properties: {
    ...OUTPUT_TRANSPORTS,
    runEvents: streamSchema(STREAM_KIND_NAMES.runEvents, false),
    hostEvents: streamSchema(STREAM_KIND_NAMES.hostEvents, false),
    deadLetters: streamSchema(STREAM_KIND_NAMES.deadLetters, false),
    streams: {
      type: 'array',
      description: 'More streams to this output, each with its kind, topic, presenter and filter (`runEvents`, `hostEvents` and `deadLetters` above are one each).',
      items: streamSchema('run events, host events or dead letters', true),
    },
  },
};
