/**
 * The original's JSON Schemas of its three message types (`data/schemas/commands/**\/<type>_v1.json`,
 * draft-07), which the original ships but never checks: here every observation of a known type is checked
 * against its schema before it becomes an event. A test keeps them equal to the original's files.
 */

import { Ajv, type ValidateFunction } from 'ajv';

const selector = { type: 'object', additionalProperties: { type: 'string' } } as const;

const update = (type: string) =>
  ({
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: type,
    type: 'object',
    properties: {
      message_type: { type: 'string', enum: [type], description: 'Identifies the message type for routing' },
      selector,
      values: { type: 'object', additionalProperties: { type: ['string', 'number', 'boolean', 'null'] } },
    },
    required: ['message_type', 'selector', 'values'],
  }) as const;

export const SCHEMAS: Readonly<Record<string, object>> = {
  update_applied_control: update('update_applied_control'),
  update_requirement_assessment: update('update_requirement_assessment'),
  upload_attachment: {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'upload_attachment',
    type: 'object',
    properties: {
      message_type: { type: 'string', enum: ['upload_attachment'], description: 'Identifies the message type for routing' },
      selector,
      values: {
        type: 'object',
        properties: {
          file_name: { type: 'string', minLength: 1, maxLength: 255, description: 'Name of the file to be uploaded' },
          file_content: { type: 'string', description: 'Base64 encoded content of the file' },
          file_s3_bucket: { type: 'string', description: 'S3 bucket name where the file is stored' },
          applied_controls: selector,
        },
        oneOf: [{ required: ['file_content', 'file_name'] }, { required: ['file_s3_bucket', 'file_name'] }],
      },
    },
  },
};

/** The schema of a message type added by configuration: a selector and values, as the update types have. */
export const CONFIGURED_SCHEMA = {
  type: 'object',
  properties: { message_type: { type: 'string' }, selector, values: { type: 'object' } },
  required: ['message_type', 'values'],
} as const;

const ajv = new Ajv({ allErrors: true, strict: false, allowUnionTypes: true });
const compiled = new Map<string, ValidateFunction>(Object.entries(SCHEMAS).map(([type, schema]) => [type, ajv.compile(schema)]));
const configured = ajv.compile(CONFIGURED_SCHEMA);

/** The validator of a message type: the original's schema, or that of a configured type. */
export function validatorOf(type: string): ValidateFunction {
  return compiled.get(type) ?? configured;
}
