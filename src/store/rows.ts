/**
 * Rows as both databases store them, and their mapping to the glossary types. Times are integer
 * milliseconds since the epoch in both dialects; JSON is text in SQLite and jsonb in PostgreSQL (the pg
 * driver parses jsonb, so `parseJson` accepts either).
 */

import type { Attempt, DeadLetter, EventRecord, Host, HostEvent, OutboxEvent, Run, RunEvent, RunStatus } from '../core/types.js';

export interface EventRow {
  key: string;
  source: string;
  id: string;
  type: string;
  topic: string | null;
  subject: string | null;
  envelope: string | object;
  input: string;
  hops: number;
  service: string;
  org_id: string;
  received_at: number | string;
  run_count: number;
}

export interface RunRow {
  id: string;
  event_key: string;
  event_type: string;
  route: string;
  action: string;
  action_type: string;
  status: string;
  attempts: number;
  max_attempts: number;
  created_at: number | string;
  updated_at: number | string;
  available_at: number | string;
  deadline_at: number | string;
  expires_at: number | string;
  lease_owner: string | null;
  lease_until: number | string | null;
  ordering_key: string | null;
  correlation_id: string | null;
  labels: string | object;
  service: string;
  org_id: string;
  error_code: string | null;
  error_message: string | null;
  result: string | object | null;
  finished_at: number | string | null;
}

export interface AttemptRow {
  run_id: string;
  n: number;
  started_at: number | string;
  ended_at: number | string;
  outcome: string;
  error_code: string | null;
  error_message: string | null;
  http_status: number | null;
  response: string | null;
}

export interface RunEventRow {
  seq: number | string;
  run_id: string;
  /** Set for a host event. */
  host_id?: string | null;
  event_type: string;
  status: string;
  service: string;
  org_id: string;
  at: number | string;
  payload: string | object;
}

/** A run event with the unchanging columns of its run, as `readRunEvents` selects it. */
export interface RunEventWithRunRow extends RunEventRow {
  r_event_key: string | null;
  r_event_type: string | null;
  r_route: string | null;
  r_action: string | null;
  r_action_type: string | null;
  r_ordering_key: string | null;
  r_labels: string | object | null;
  r_created_at: number | string | null;
  /** A host event's host's log, as it is now. */
  h_log?: string | null;
}

export interface HostRow {
  id: string;
  run_id: string;
  name: string;
  status: string;
  log: string;
  sequence: number | string | null;
  details: string | object;
  service: string;
  org_id: string;
  created_at: number | string;
  updated_at: number | string;
}

export interface DeadLetterRow {
  id: string;
  origin: string;
  source: string;
  reason: string;
  error: string;
  details: string | object | null;
  raw: Buffer | Uint8Array;
  raw_truncated: number | boolean;
  content_type: string | null;
  headers: string | object;
  run_id: string | null;
  event_key: string | null;
  service: string;
  org_id: string;
  fingerprint: string;
  attempts: number;
  first_seen_at: number | string;
  last_seen_at: number | string;
  replayed_at: number | string | null;
  seq?: number | string | null;
}

export function parseJson<T>(value: string | object | null | undefined): T {
  if (value === null || value === undefined) return null as T;
  return (typeof value === 'string' ? JSON.parse(value) : value) as T;
}

const num = (v: number | string): number => (typeof v === 'number' ? v : Number(v));
const numOrNull = (v: number | string | null): number | null => (v === null ? null : num(v));

export function toRun(row: RunRow): Run {
  return {
    id: row.id,
    eventKey: row.event_key,
    route: row.route,
    action: row.action,
    actionType: row.action_type,
    status: row.status as RunStatus,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    createdAt: num(row.created_at),
    updatedAt: num(row.updated_at),
    availableAt: num(row.available_at),
    deadlineAt: num(row.deadline_at),
    expiresAt: num(row.expires_at),
    leaseOwner: row.lease_owner,
    leaseUntil: numOrNull(row.lease_until),
    orderingKey: row.ordering_key,
    correlationId: row.correlation_id,
    labels: parseJson(row.labels) ?? {},
    service: row.service,
    orgId: row.org_id,
    error: row.error_code === null ? null : { code: row.error_code, message: row.error_message ?? '' },
    result: parseJson(row.result),
    finishedAt: numOrNull(row.finished_at),
    eventType: row.event_type,
  };
}

export function toEventRecord(row: EventRow): EventRecord {
  return {
    key: row.key,
    event: parseJson(row.envelope),
    input: row.input,
    hops: row.hops,
    service: row.service,
    orgId: row.org_id,
    receivedAt: num(row.received_at),
    runCount: row.run_count,
  };
}

export function toAttempt(row: AttemptRow): Attempt {
  return {
    runId: row.run_id,
    n: row.n,
    startedAt: num(row.started_at),
    endedAt: num(row.ended_at),
    outcome: row.outcome as Attempt['outcome'],
    errorCode: row.error_code,
    errorMessage: row.error_message,
    httpStatus: row.http_status,
    response: row.response,
  };
}

export function toHost(row: HostRow): Host {
  return {
    id: row.id,
    runId: row.run_id,
    name: row.name,
    status: row.status as RunStatus,
    log: row.log,
    sequence: numOrNull(row.sequence),
    details: parseJson(row.details) ?? {},
    service: row.service,
    orgId: row.org_id,
    createdAt: num(row.created_at),
    updatedAt: num(row.updated_at),
  };
}

/** A host event's payload: the host without its log (readers take the log from the host's row). */
export function hostStateJson(host: Host): string {
  const { log: _log, ...state } = host;
  return JSON.stringify(state);
}

export function toRunEvent(row: RunEventRow | RunEventWithRunRow): OutboxEvent {
  if (row.host_id !== null && row.host_id !== undefined) return toHostEvent(row as RunEventWithRunRow);
  const state = parseJson<Record<string, unknown>>(row.payload);
  // `create` and `update` events carry only the changing part: the rest comes from the run's row (see
  // runStateJson). Fields left out of a payload because they were null are null again here.
  const payload =
    (row.event_type === 'update' || row.event_type === 'create') && 'r_route' in row
      ? {
          id: row.run_id,
          eventKey: row.r_event_key,
          eventType: row.r_event_type,
          route: row.r_route,
          action: row.r_action,
          actionType: row.r_action_type,
          orderingKey: row.r_ordering_key,
          labels: parseJson(row.r_labels) ?? {},
          service: row.service,
          orgId: row.org_id,
          createdAt: row.r_created_at === null ? null : num(row.r_created_at),
          ...NULL_STATE,
          ...state,
        }
      : { ...NULL_STATE, ...state };
  return {
    kind: 'run',
    seq: num(row.seq),
    runId: row.run_id,
    eventType: row.event_type as RunEvent['eventType'],
    status: row.status as RunStatus,
    service: row.service,
    orgId: row.org_id,
    at: num(row.at),
    payload: payload as unknown as RunEvent['payload'],
  };
}

function toHostEvent(row: RunEventWithRunRow): HostEvent {
  const state = parseJson<Omit<Host, 'log'>>(row.payload);
  return {
    kind: 'host',
    seq: num(row.seq),
    runId: row.run_id,
    hostId: row.host_id!,
    eventType: row.event_type as HostEvent['eventType'],
    status: row.status as RunStatus,
    service: row.service,
    orgId: row.org_id,
    at: num(row.at),
    payload: { ...state, log: row.h_log ?? '' },
    route: row.r_route ?? null,
    actionType: row.r_action_type ?? null,
  };
}

/** The fields a run-event payload leaves out when they are null. */
const NULL_STATE = { correlationId: null, error: null, result: null, finishedAt: null } as const;

export function toDeadLetter(row: DeadLetterRow): DeadLetter {
  return {
    id: row.id,
    origin: row.origin as DeadLetter['origin'],
    source: row.source,
    reason: row.reason,
    error: row.error,
    details: parseJson(row.details),
    raw: Buffer.isBuffer(row.raw) ? row.raw : Buffer.from(row.raw),
    rawTruncated: row.raw_truncated === true || row.raw_truncated === 1,
    contentType: row.content_type,
    headers: parseJson(row.headers) ?? {},
    runId: row.run_id,
    eventKey: row.event_key,
    service: row.service,
    orgId: row.org_id,
    attempts: row.attempts,
    firstSeenAt: num(row.first_seen_at),
    lastSeenAt: num(row.last_seen_at),
    replayedAt: numOrNull(row.replayed_at),
  };
}

/**
 * A run event's payload, serialized by hand: this runs for every state change of every run, and building
 * the string directly is several times cheaper than JSON.stringify of a fresh object.
 *
 * `create` and `update` events carry only what can change (status, attempts, times, error, result), and
 * leave out what is null: the rest of a run never changes, and readers take it from the run's row
 * (`toRunEvent` merges the two). That keeps the outbox, written two or three times per run, small.
 */
export function runSummaryJson(run: Run): string {
  return (
    `{"id":${q(run.id)},"eventKey":${q(run.eventKey)},"eventType":${q(run.eventType)},` +
    `"route":${q(run.route)},"action":${q(run.action)},"actionType":${q(run.actionType)},` +
    `"orderingKey":${qn(run.orderingKey)},"labels":${JSON.stringify(run.labels)},` +
    `"service":${q(run.service)},"orgId":${q(run.orgId)},"createdAt":${run.createdAt},` +
    runStateJson(run).slice(1)
  );
}

/** The part of a run that changes: what `create` and `update` run events carry. */
export function runStateJson(run: Run): string {
  let json =
    `{"status":"${run.status}","attempts":${run.attempts},"maxAttempts":${run.maxAttempts},` +
    `"updatedAt":${run.updatedAt},"availableAt":${run.availableAt},"deadlineAt":${run.deadlineAt},` +
    `"expiresAt":${run.expiresAt}`;
  if (run.correlationId !== null) json += `,"correlationId":${q(run.correlationId)}`;
  if (run.error !== null) json += `,"error":${JSON.stringify(run.error)}`;
  if (run.result !== null && run.result !== undefined) json += `,"result":${JSON.stringify(run.result)}`;
  if (run.finishedAt !== null) json += `,"finishedAt":${run.finishedAt}`;
  return json + '}';
}

/** The payload for a run event of `eventType`. */
export function runEventPayload(run: Run, eventType: RunEvent['eventType']): string {
  return eventType === 'update' || eventType === 'create' ? runStateJson(run) : runSummaryJson(run);
}

const SAFE = /^[\w .:/@+-]*$/;
function q(s: string): string {
  return SAFE.test(s) ? `"${s}"` : JSON.stringify(s);
}
function qn(s: string | null): string {
  return s === null ? 'null' : q(s);
}
