/** The `sqs` transport's options (Amazon SQS, an input only). */

import type { SchemaNode } from '../../core/options.js';
import { AWS_CONNECTION_SCHEMA } from '../aws.js';

export const SQS_INPUT_SCHEMA: SchemaNode = {
  type: 'object',
  description:
    'Consume an Amazon SQS queue (standard or FIFO) with long polling. A message is deleted only once committed; while in flight its visibility is extended; a redelivery makes no new runs.',
  additionalProperties: false,
  properties: {
    queueUrl: { type: 'string', minLength: 1, description: 'The queue URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`). One of `queueUrl` and `queueName` is required; `queueUrl` wins.' },
    queueName: { type: 'string', minLength: 1, description: 'The queue name, resolved to its URL with GetQueueUrl when the input starts.' },
    queueOwner: { type: 'string', pattern: '^\\d{12}$', description: "With `queueName`: the AWS account that owns the queue, when it is another account's." },
    ...AWS_CONNECTION_SCHEMA,
    waitTimeSeconds: { type: 'integer', minimum: 0, maximum: 20, description: 'Long polling: how long one ReceiveMessage waits for a message (default 20).' },
    maxMessages: { type: 'integer', minimum: 1, maximum: 10, description: 'Messages one ReceiveMessage takes at most (default 10).' },
    pollers: {
      type: 'integer',
      minimum: 1,
      maximum: 100,
      description: 'Concurrent pollers (default 10). Each waits until its messages are committed before it polls again: `pollers × maxMessages` is the window of messages in flight.',
    },
    visibilityTimeout: {
      type: 'integer',
      minimum: 1,
      maximum: 43200,
      description:
        'Seconds a received message stays invisible to other consumers (default 30). The input extends it while the message is in flight; after a crash the message is delivered again this long after its last extension.',
    },
  },
  anyOf: [{ required: ['queueUrl'] }, { required: ['queueName'] }],
};
