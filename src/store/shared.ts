/** Rules both stores share: how outcomes found by the sweeper are written down, and how dead letters are recognized. */

import { createHash } from 'node:crypto';
import type { NewAuditEntry } from '../core/audit.js';
import { TERMINAL_STATUSES, type Attempt, type Run } from '../core/types.js';
import type { IntakeItem, IntakeResult, NewDeadLetter, NewRun, RunOutcome } from './types.js';

/** The audit entries of the messages in an intake batch, in order, from the batch's results. */
export function intakeAuditEntries(items: IntakeItem[], results: IntakeResult[]): NewAuditEntry[] {
  const entries: NewAuditEntry[] = [];
  for (let i = 0; i < items.length; i++) {
    const audit = items[i]!.audit;
    if (audit !== undefined) entries.push(audit.entry(results.slice(i + 1 - audit.items, i + 1)));
  }
  return entries;
}

/** Runs read and given a `read` run event per transaction by `republishRuns`. */
export const REPUBLISH_BATCH = 1000;

/** How a dead letter is recognized when the same thing fails again. */
export function fingerprint(d: NewDeadLetter): string {
  if (d.origin === 'run' && d.runId) return `run:${d.runId}`;
  return 'sha256:' + createHash('sha256').update(`${d.origin}\0${d.source}\0${d.reason}\0`).update(d.raw).digest('hex');
}

export function attemptRow(run: Run, now: number, outcome: Attempt['outcome'], error: { code: string; message: string }): Attempt {
  return {
    runId: run.id,
    n: Math.max(run.attempts, 1),
    startedAt: run.updatedAt,
    endedAt: now,
    outcome,
    errorCode: error.code,
    errorMessage: error.message,
    httpStatus: null,
    response: null,
  };
}

export function runDeadLetter(run: Run, reason: string, message: string, now: number): NewDeadLetter {
  return {
    origin: 'run',
    source: run.route,
    reason,
    error: message,
    details: { action: run.action, attempts: run.attempts },
    raw: Buffer.from(JSON.stringify({ runId: run.id, eventKey: run.eventKey, route: run.route, action: run.action })),
    contentType: 'application/json',
    runId: run.id,
    eventKey: run.eventKey,
    service: run.service,
    orgId: run.orgId,
    at: now,
  };
}

/**
 * How many times a run may lose its worker (lease expired: the process died or stalled) without that
 * counting against its retry budget. A lost lease is the worker's failure, not the action's: a run committed
 * already claimed by a process that died before starting it must not fail for it. Past this many, the
 * run is taken for a poison that kills its workers, and ends.
 */
export const MAX_LEASE_EXPIRIES = 3;

/** What the sweeper makes of a run whose lease expired, given how many times that happened before. */
export function afterLeaseExpiry(run: Run, now: number, expiriesBefore: number): { attempt: Attempt; to: Run; deadLetter?: NewDeadLetter } {
  const error = { code: 'lease_expired', message: `worker ${run.leaseOwner} stopped renewing its lease` };
  const attempt = attemptRow(run, now, 'failure', error);
  if (now >= run.expiresAt || expiriesBefore + 1 > MAX_LEASE_EXPIRIES) {
    const final = {
      code: 'attempts_exhausted',
      message: now >= run.expiresAt ? `the run outlived its age limit; the last attempt: ${error.message}` : `${expiriesBefore + 1} workers lost the run; the last: ${error.message}`,
    };
    return {
      attempt,
      to: { ...run, status: 'failure', error: final, finishedAt: now, updatedAt: now },
      deadLetter: runDeadLetter(run, final.code, final.message, now),
    };
  }
  return { attempt, to: { ...run, status: 'queued', availableAt: now, error, updatedAt: now, maxAttempts: run.maxAttempts + 1 } };
}

/**
 * The smallest UUIDv7 of a millisecond: keys and run ids are UUIDv7, whose first 48 bits are the time, so
 * `key < v7Floor(t)` selects what was made before `t` through the primary key alone.
 */
export function v7Floor(ms: number): string {
  const hex = Math.max(0, Math.floor(ms)).toString(16).padStart(12, '0').slice(-12);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-0000-0000-000000000000`;
}

/** `('success', 'failure', 'timeout', 'canceled')`: the statuses a run ends in, as an SQL list. */
export const ENDED_STATUSES_SQL = `(${[...TERMINAL_STATUSES].map((status) => `'${status}'`).join(', ')})`;

/** Whether a record is within what a principal may see. */
export { inScope } from '../core/principal.js';

/**
 * The run as intake creates it: queued with no attempt yet, or, for direct dispatch (`claimedBy`), already
 * claimed: running, its first attempt started, leased to the worker that took the event in.
 */
export function plannedRun(record: IntakeItem['record'], r: NewRun): Run {
  const claim = r.claimedBy;
  return {
    id: r.id, eventKey: record.key, eventType: record.event.type, route: r.route, action: r.action, actionType: r.actionType,
    status: claim === undefined ? 'queued' : 'running', attempts: claim === undefined ? 0 : 1, maxAttempts: r.maxAttempts,
    createdAt: record.receivedAt, updatedAt: record.receivedAt, availableAt: r.availableAt, deadlineAt: r.deadlineAt,
    expiresAt: r.expiresAt, leaseOwner: claim?.owner ?? null, leaseUntil: claim?.leaseUntil ?? null,
    orderingKey: r.orderingKey, correlationId: null, labels: r.labels, service: record.service, orgId: record.orgId,
    error: null, result: null, finishedAt: null,
  };
}

/**
 * The payload of the `create` run event of a run planned at intake: `runStateJson(plannedRun(record, r))`,
 * built without the run object.
 */
export function plannedStateJson(record: IntakeItem['record'], r: NewRun): string {
  const claimed = r.claimedBy !== undefined;
  return (
    `{"status":"${claimed ? 'running' : 'queued'}","attempts":${claimed ? 1 : 0},"maxAttempts":${r.maxAttempts},` +
    `"updatedAt":${record.receivedAt},"availableAt":${r.availableAt},"deadlineAt":${r.deadlineAt},"expiresAt":${r.expiresAt}}`
  );
}

/** The run as an outcome leaves it. */
export function finishedRun(o: RunOutcome): Run {
  return {
    ...o.run,
    status: o.status,
    updatedAt: o.at,
    availableAt: o.availableAt ?? o.run.availableAt,
    deadlineAt: o.deadlineAt ?? o.run.deadlineAt,
    leaseOwner: null,
    leaseUntil: null,
    correlationId: o.correlationId ?? null,
    error: o.error ?? null,
    result: o.result === undefined ? o.run.result : o.result,
    finishedAt: TERMINAL_STATUSES.has(o.status) ? o.at : null,
  };
}
