/** JSON Schemas of the API's answers, for the OpenAPI document. */

const problem = {
  type: 'object',
  properties: { pointer: { type: 'string' }, message: { type: 'string' } },
} as const;

export const errorSchema = {
  type: 'object',
  description: 'Every error answer: a stable code (docs/errors.md), a message, and for bad input each problem with a JSON pointer.',
  properties: { code: { type: 'string' }, message: { type: 'string' }, problems: { type: 'array', items: problem } },
  required: ['code', 'message'],
} as const;

export const idParams = {
  type: 'object',
  properties: { id: { type: 'string', minLength: 1, maxLength: 200 } },
  required: ['id'],
} as const;

export const listMeta = {
  type: 'object',
  properties: { count: { type: 'integer' }, total: { type: 'integer' } },
} as const;

export const links = {
  type: 'object',
  properties: { first: { type: 'string' }, last: { type: 'string' }, next: { type: 'string' }, previous: { type: 'string' } },
} as const;

export const anyObject = { type: 'object', additionalProperties: true } as const;

export function errors(...statuses: number[]) {
  return Object.fromEntries(statuses.map((s) => [s, errorSchema]));
}
