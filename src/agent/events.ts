/**
 * The job events an agent uploads, in the shape the Playbook Dispatcher reads
 * (schema ansibleRunnerJobEvent: `event`, `uuid`, `counter`, `start_line`, `end_line`, `stdout`, `event_data`).
 *
 * - `executor_on_start` opens every upload of a run: it carries the run's correlation id, which the
 *   dispatcher ties the upload to its run by.
 * - `executor_on_failed` says the playbook could not be run (or did not finish), with an error code and
 *   details in `event_data`.
 * - Ansible Runner's own events are narrowed to what the dispatcher reads, each given the correlation id
 *   when it has none.
 */

import { randomUUID } from 'node:crypto';

export interface JobEvent {
  event: string;
  uuid: string;
  counter: number;
  stdout?: string;
  start_line: number;
  end_line: number;
  runner_ident?: string;
  event_data?: {
    crc_dispatcher_correlation_id?: string;
    crc_dispatcher_error_code?: string;
    crc_dispatcher_error_details?: string;
    host?: string;
    playbook?: string;
    playbook_uuid?: string;
  };
}

/** The error codes of `executor_on_failed`. */
export type FailureCode = 'DOWNLOAD_ERROR' | 'ANSIBLE_YAML_VALIDATION_FAILED' | 'UNDEFINED_ERROR';

/** The event that opens a run's uploads. */
export function executorOnStart(correlationId: string, uuid: string = randomUUID()): JobEvent {
  return { event: 'executor_on_start', uuid, counter: -1, stdout: '', start_line: 0, end_line: 0, event_data: { crc_dispatcher_correlation_id: correlationId } };
}

/** The event that says the playbook could not run: the dispatcher ends the run as failed and shows `details` in its output. */
export function executorOnFailed(correlationId: string, code: FailureCode, details: string, uuid: string = randomUUID()): JobEvent {
  return {
    event: 'executor_on_failed',
    uuid,
    counter: -1,
    start_line: 0,
    end_line: 0,
    event_data: { crc_dispatcher_correlation_id: correlationId, crc_dispatcher_error_code: code, crc_dispatcher_error_details: details },
  };
}

const EVENT_DATA_FIELDS = ['crc_dispatcher_correlation_id', 'crc_dispatcher_error_code', 'crc_dispatcher_error_details', 'host', 'playbook', 'playbook_uuid'] as const;

/**
 * An Ansible Runner job event (a parsed `job_events/<counter>-<uuid>.json`) as uploaded: the correlation id
 * added to `event_data` when it has none; `counter`, `start_line` and `end_line` (which the dispatcher
 * requires) 0 or -1 when missing; everything else the dispatcher does not read (task results, facts,
 * timings) left out, which keeps uploads small.
 */
export function toUploadEvent(raw: Record<string, unknown>, correlationId: string): JobEvent {
  const data = isObject(raw.event_data) ? raw.event_data : {};
  const eventData: NonNullable<JobEvent['event_data']> = {};
  for (const field of EVENT_DATA_FIELDS) {
    const value = data[field];
    if (typeof value === 'string') eventData[field] = value;
  }
  if (eventData.crc_dispatcher_correlation_id === undefined) eventData.crc_dispatcher_correlation_id = correlationId;
  const event: JobEvent = {
    event: typeof raw.event === 'string' ? raw.event : 'verbose',
    uuid: typeof raw.uuid === 'string' ? raw.uuid : randomUUID(),
    counter: integer(raw.counter, -1),
    start_line: integer(raw.start_line, 0),
    end_line: integer(raw.end_line, 0),
    event_data: eventData,
  };
  if (typeof raw.stdout === 'string') event.stdout = raw.stdout;
  if (typeof raw.runner_ident === 'string') event.runner_ident = raw.runner_ident;
  return event;
}

function integer(value: unknown, fallback: number): number {
  return typeof value === 'number' && Number.isInteger(value) ? value : fallback;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
