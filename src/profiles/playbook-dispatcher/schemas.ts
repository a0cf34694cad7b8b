/**
 * The JSON Schemas of the two kinds of result upload lines: an Ansible Runner job event (`playbook`) and a
 * Satellite job event (`playbook-sat`). They carry the same constraints as the original's
 * `ansibleRunnerJobEvent.yaml` and `rhcsatJobEvent.yaml` (draft-07, additional properties allowed, since
 * runners send many more fields than the dispatcher reads). Compiled once, when this module loads.
 */

import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

export const RUNNER_EVENT_SCHEMA = {
  $id: 'ansibleRunnerJobEvent',
  type: 'object',
  properties: {
    event: { type: 'string', minLength: 3, maxLength: 50 },
    uuid: { type: 'string', format: 'uuid' },
    counter: { type: 'integer' },
    stdout: { type: ['string', 'null'] },
    start_line: { type: 'integer', minimum: 0 },
    end_line: { type: 'integer', minimum: 0 },
    event_data: {
      type: 'object',
      properties: {
        playbook: { type: 'string', minLength: 1 },
        playbook_uuid: { type: 'string', format: 'uuid' },
        host: { type: 'string' },
        crc_dispatcher_correlation_id: { type: 'string', format: 'uuid' },
        crc_dispatcher_error_code: { type: 'string' },
        crc_dispatcher_error_details: { type: 'string' },
      },
    },
  },
  required: ['event', 'uuid', 'counter', 'start_line', 'end_line'],
} as const;

export const SATELLITE_EVENT_SCHEMA = {
  $id: 'rhcPlaybookRunResponseMessage',
  type: 'object',
  properties: {
    type: { type: 'string', enum: ['playbook_run_update', 'playbook_run_finished', 'playbook_run_completed'] },
    version: { type: 'integer', minimum: 3 },
    correlation_id: { type: 'string', format: 'uuid' },
    // Bounded where the original's was not: a sequence beyond a bigint failed its database write (a 500).
    sequence: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
    host: { type: 'string', format: 'uuid' },
    console: { type: 'string' },
    status: { type: 'string', enum: ['success', 'failure', 'canceled'] },
    connection_code: { type: ['integer', 'null'], minimum: 0 },
    execution_code: { type: ['integer', 'null'], minimum: 0 },
    satellite_connection_code: { type: ['integer'], minimum: 0, maximum: 1 },
    satellite_connection_error: { type: 'string' },
    satellite_infrastructure_code: { type: ['integer', 'null'], minimum: 0, maximum: 1 },
    satellite_infrastructure_error: { type: 'string' },
  },
  required: ['type', 'version', 'correlation_id'],
} as const;

const ajv = new Ajv({ allErrors: false, strict: false, allowUnionTypes: true });
addFormats(ajv);

export const validateRunnerEvent: ValidateFunction = ajv.compile(RUNNER_EVENT_SCHEMA);
export const validateSatelliteEvent: ValidateFunction = ajv.compile(SATELLITE_EVENT_SCHEMA);

/** The first schema error in words, e.g. `/uuid must match format "uuid"`. */
export function describeSchemaError(errors: ErrorObject[] | null | undefined): string {
  const e = errors?.[0];
  if (e === undefined) return 'does not match its schema';
  return `${e.instancePath === '' ? '(event)' : e.instancePath} ${e.message ?? 'is invalid'}`;
}
