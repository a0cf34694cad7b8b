/** The `kafka` transport's options (Apache Kafka and compatible brokers, through kafkajs). */

import { duration, size, type SchemaNode } from '../../core/options.js';
import { TLS_SCHEMA } from '../tls.js';

const CONNECTION: Record<string, SchemaNode> = {
  brokers: {
    type: 'array',
    minItems: 1,
    items: { type: 'string', minLength: 1 },
    description: 'Bootstrap brokers, `host:port` each (e.g. `["kafka-1:9092", "kafka-2:9092"]`).',
  },
  clientId: { type: 'string', minLength: 1, description: 'The client id the brokers see (default `dispatcher`).' },
  tls: TLS_SCHEMA,
  sasl: {
    type: 'object',
    description: 'SASL authentication (with `tls` in production: SASL PLAIN sends the password as it is). `${VAR}` keeps the password out of the file.',
    additionalProperties: false,
    required: ['mechanism', 'username', 'password'],
    properties: {
      mechanism: { enum: ['plain', 'scram-sha-256', 'scram-sha-512'], description: 'The SASL mechanism.' },
      username: { type: 'string', minLength: 1, description: 'The user name.' },
      password: { type: 'string', description: 'The password.' },
    },
  },
  connectionTimeout: duration('How long to wait for a connection to a broker (default 1s).'),
  requestTimeout: duration('How long to wait for a broker to answer a request (default 30s).'),
};

export const KAFKA_INPUT_SCHEMA: SchemaNode = {
  type: 'object',
  description:
    'Consume Kafka topics as a consumer group. Offsets are committed per partition only up to the last message whose events are committed (or kept as dead letters); a redelivery makes no new runs.',
  additionalProperties: false,
  required: ['brokers', 'topics'],
  properties: {
    ...CONNECTION,
    groupId: { type: 'string', minLength: 1, description: 'The consumer group (default `dispatcher`): every dispatcher process with the same group shares the partitions.' },
    topics: {
      type: 'array',
      minItems: 1,
      items: { type: 'string', minLength: 1 },
      description: 'Topics to consume: names, or regular expressions written `/pattern/flags` (e.g. `/^orders\\..*/`), matched against the topics that exist when the consumer joins.',
    },
    fromBeginning: { type: 'boolean', description: 'Where a group without a committed offset starts: the oldest message (true) or new messages only (default false).' },
    sessionTimeout: duration('A consumer that sends no heartbeat for this long leaves the group and its partitions move to the others (default 30s).'),
    rebalanceTimeout: duration('How long the group waits for its members to rejoin during a rebalance (default 60s).'),
    heartbeatInterval: duration('How often a consumer sends heartbeats, also during a long batch (default 3s; well below `sessionTimeout`).'),
    partitionsConsumedConcurrently: {
      type: 'integer',
      minimum: 1,
      description: 'Partitions whose batches are handed over at once (default 4); order is kept within each partition.',
    },
    maxBytesPerPartition: size('The most fetched from one partition in one request (default 1MiB): the size of a batch.'),
    maxWait: duration('How long a broker may hold a fetch while it has nothing new (default 5s). Kafka answers as soon as a message arrives; a broker that does not (librdkafka\'s mock cluster) delivers a message up to this late.'),
  },
};

export const KAFKA_OUTPUT_SCHEMA: SchemaNode = {
  type: 'object',
  description: 'Produce to Kafka topics with `acks: all` (every in-sync replica), idempotent unless turned off.',
  additionalProperties: false,
  required: ['brokers'],
  properties: {
    ...CONNECTION,
    topic: { type: 'string', minLength: 1, description: 'The topic when a message names none.' },
    idempotent: { type: 'boolean', description: 'Idempotent producer: a retried send is not written twice (default true; needs a broker that allows it, Kafka 0.11 or later).' },
    retries: { type: 'integer', minimum: 0, description: 'How often a failed send is retried, with backoff, before `publish` fails (default 8).' },
  },
};
