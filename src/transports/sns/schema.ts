/** The `sns` transport's options (Amazon SNS, an output only). */

import type { SchemaNode } from '../../core/options.js';
import { AWS_CONNECTION_SCHEMA } from '../aws.js';

export const SNS_OUTPUT_SCHEMA: SchemaNode = {
  type: 'object',
  description:
    'Publish to an Amazon SNS topic (standard or FIFO), ten messages to a PublishBatch; a publish resolves once SNS accepted every message. Headers travel as message attributes.',
  additionalProperties: false,
  required: ['topicArn'],
  properties: {
    topicArn: {
      type: 'string',
      pattern: '^arn:[^:]+:sns:[^:]*:\\d*:[A-Za-z0-9_.-]+$',
      description: 'The topic (`arn:aws:sns:<region>:<account>:<name>`) when a message names no other. A name ending in `.fifo` is a FIFO topic.',
    },
    ...AWS_CONNECTION_SCHEMA,
    messageGroupId: { type: 'string', pattern: '^.{1,128}$', description: 'FIFO topics: the MessageGroupId of a message without a key (default `default`); a key is its own group.' },
  },
};
