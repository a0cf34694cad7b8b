/**
 * How records look in the API: snake_case names (the names the query parameters use) and RFC 3339 times.
 */

import type { AuditEntry } from '../core/audit.js';
import type { ClientRecord } from '../store/access.js';
import type { Attempt, DeadLetter, EventRecord, Host, HostEvent, Run, RunEvent, RunSummary } from '../core/types.js';

const iso = (ms: number | null | undefined): string | null => (ms === null || ms === undefined ? null : new Date(ms).toISOString());

export type RunResource = ReturnType<typeof runResource>;

export function runResource(run: Run | RunSummary) {
  return {
    id: run.id,
    event: run.eventKey,
    event_type: run.eventType,
    route: run.route,
    action: run.action,
    action_type: run.actionType,
    status: run.status,
    attempts: run.attempts,
    max_attempts: run.maxAttempts,
    created_at: iso(run.createdAt),
    updated_at: iso(run.updatedAt),
    available_at: iso(run.availableAt),
    deadline_at: iso(run.deadlineAt),
    expires_at: iso(run.expiresAt),
    finished_at: iso(run.finishedAt),
    ordering_key: run.orderingKey === null ? null : run.orderingKey.slice(run.orderingKey.indexOf('\u0000') + 1),
    correlation_id: run.correlationId,
    labels: run.labels,
    service: run.service,
    org_id: run.orgId,
    error: run.error,
    result: run.result ?? null,
  };
}

export const RUN_FIELDS = Object.keys(
  runResource({
    id: '', eventKey: '', eventType: '', route: '', action: '', actionType: '', status: 'queued', attempts: 0, maxAttempts: 0,
    createdAt: 0, updatedAt: 0, availableAt: 0, deadlineAt: 0, expiresAt: 0, orderingKey: null, correlationId: null,
    labels: {}, service: '', orgId: '', error: null, result: null, finishedAt: null,
  }),
);

export function attemptResource(a: Attempt) {
  return {
    n: a.n,
    started_at: iso(a.startedAt),
    ended_at: iso(a.endedAt),
    outcome: a.outcome,
    error_code: a.errorCode,
    error_message: a.errorMessage,
    http_status: a.httpStatus,
    response: a.response,
  };
}

export function eventResource(e: EventRecord) {
  return {
    id: e.key,
    event: e.event,
    input: e.input,
    hops: e.hops,
    received_at: iso(e.receivedAt),
    run_count: e.runCount,
    service: e.service,
    org_id: e.orgId,
  };
}

export function deadLetterResource(d: DeadLetter) {
  const text = d.raw.toString('utf8');
  const isText = Buffer.from(text, 'utf8').equals(d.raw);
  return {
    id: d.id,
    origin: d.origin,
    source: d.source,
    reason: d.reason,
    error: d.error,
    details: d.details,
    content_type: d.contentType,
    headers: d.headers,
    raw: isText ? text : null,
    raw_base64: isText ? null : d.raw.toString('base64'),
    raw_truncated: d.rawTruncated,
    run_id: d.runId,
    event: d.eventKey,
    service: d.service,
    org_id: d.orgId,
    attempts: d.attempts,
    first_seen_at: iso(d.firstSeenAt),
    last_seen_at: iso(d.lastSeenAt),
    replayed_at: iso(d.replayedAt),
  };
}

export function runEventResource(e: RunEvent) {
  return { seq: e.seq, event_type: e.eventType, run: runResource(e.payload), at: iso(e.at) };
}

export function hostResource(h: Host) {
  return {
    id: h.id,
    run: h.runId,
    name: h.name,
    status: h.status,
    log: h.log,
    sequence: h.sequence,
    details: h.details,
    service: h.service,
    org_id: h.orgId,
    created_at: iso(h.createdAt),
    updated_at: iso(h.updatedAt),
  };
}

export const HOST_FIELDS = Object.keys(
  hostResource({ id: '', runId: '', name: '', status: 'running', log: '', sequence: null, details: {}, service: '', orgId: '', createdAt: 0, updatedAt: 0 }),
);

export function hostEventResource(e: HostEvent) {
  return { seq: e.seq, event_type: e.eventType, host: hostResource(e.payload), at: iso(e.at) };
}

/** Sparse fieldsets: keep only the named fields. */
export function pick<T extends object>(resource: T, fields: readonly string[] | undefined): Partial<T> {
  if (fields === undefined) return resource;
  const out: Record<string, unknown> = {};
  for (const f of fields) out[f] = (resource as Record<string, unknown>)[f];
  return out as Partial<T>;
}

/** A client as the API and the CLI show it: never its secret or the secret's hash. */
export function clientResource(c: ClientRecord) {
  return {
    id: c.id,
    name: c.name,
    service: c.service,
    org_id: c.orgId,
    permissions: c.permissions,
    subscription: c.subscription,
    secret_version: c.secretVersion,
    created_at: new Date(c.createdAt).toISOString(),
    updated_at: new Date(c.updatedAt).toISOString(),
  };
}

export function auditResource(e: AuditEntry) {
  return {
    seq: e.seq,
    at: new Date(e.at).toISOString(),
    actor: e.actor,
    actor_kind: e.actorKind,
    service: e.service,
    org_id: e.orgId,
    action: e.action,
    records: e.records,
    outcome: e.outcome,
    details: e.details,
    prev_hash: e.prevHash,
    hash: e.hash,
  };
}
