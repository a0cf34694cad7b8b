/**
 * The run state machine, as pure functions: each takes a run as the store holds it and returns what it
 * becomes (and the attempt and dead letter to record with it). Both stores apply them the same way, each
 * in one transaction with the run event of the change; nothing here touches a database or a clock.
 *
 *   queued ──claim──▶ running ──outcome──▶ success / failure
 *     ▲                  │  ├─ retry later ─▶ queued
 *     └── lease expired ─┘  └─ waiting (no lease, a correlation id) ──resolve──▶ success / failure / canceled
 *   queued / running ──deadline──▶ timeout        queued / running ──cancel──▶ canceled
 *   failure / timeout / canceled ──retry──▶ queued
 *
 * A run that ended keeps its correlation id, so that a result arriving late can still find it, and
 * complete it where its caller allows (`RunResolution.reopen`).
 *
 * A run's hosts (its targets) have statuses of their own, set by whoever reports on them
 * (`upsertedHost`); when the run times out or is canceled, those still under way end with it (`endedHosts`).
 */

import { TERMINAL_STATUSES, type Attempt, type Host, type Owner, type Run, type RunError, type RunStatus } from './types.js';
import type { HostResult, HostUpsert, IntakeItem, NewDeadLetter, NewRun, RunOutcome, RunResolution } from '../store/types.js';

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

/** The run as an outcome of its worker leaves it. */
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

/** The current attempt of a run, ended now with `outcome` (the store replaces the attempt with the same number). */
export function attemptRow(run: Run, now: number, outcome: Attempt['outcome'], error: RunError | null, response: string | null = null): Attempt {
  return {
    runId: run.id,
    n: Math.max(run.attempts, 1),
    startedAt: run.updatedAt,
    endedAt: now,
    outcome,
    errorCode: error?.code ?? null,
    errorMessage: error?.message ?? null,
    httpStatus: null,
    response,
  };
}

/**
 * The dead letter of a run that ended without success: replaying it retries the run. Its raw bytes name the
 * run and, when the caller has it (the worker that ran the last attempt), hold the event as JSON text
 * (`event`), so that what failed can be read and presented (an errors topic) without another lookup.
 */
export function runDeadLetter(run: Run, reason: string, message: string, now: number, envelope?: string): NewDeadLetter {
  const named = JSON.stringify({ runId: run.id, eventKey: run.eventKey, route: run.route, action: run.action });
  return {
    origin: 'run',
    source: run.route,
    reason,
    error: message,
    details: { action: run.action, attempts: run.attempts },
    raw: Buffer.from(envelope === undefined ? named : `${named.slice(0, -1)},"event":${envelope}}`),
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
export function afterLeaseExpiry(run: Run, now: number, expiriesBefore: number, envelope?: string): { attempt: Attempt; to: Run; deadLetter?: NewDeadLetter } {
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
      deadLetter: runDeadLetter(run, final.code, final.message, now, envelope),
    };
  }
  return { attempt, to: { ...run, status: 'queued', availableAt: now, error, updatedAt: now, maxAttempts: run.maxAttempts + 1 } };
}

/** A queued or running run past its deadline: `timeout`, with a dead letter; the attempt under way (if a worker holds one) ends too. */
export function timedOutRun(run: Run, now: number, envelope?: string): { to: Run; attempt: Attempt | null; deadLetter: NewDeadLetter } {
  const error = { code: 'deadline_exceeded', message: `the run did not end before its deadline (${new Date(run.deadlineAt).toISOString()})` };
  return {
    to: { ...run, status: 'timeout', error, finishedAt: now, updatedAt: now, leaseOwner: null, leaseUntil: null },
    attempt: run.status === 'running' && run.leaseOwner !== null ? attemptRow(run, now, 'timeout', error) : null,
    deadLetter: runDeadLetter(run, 'deadline_exceeded', error.message, now, envelope),
  };
}

/** A queued or running run canceled (through the API); throws `invalid_state` for one that ended. */
export function canceledRun(run: Run, now: number, message = 'canceled through the API'): { to: Run; attempt: Attempt | null } | { invalid: string } {
  if (run.status !== 'queued' && run.status !== 'running') return { invalid: `run ${run.id} is ${run.status}; only queued or running runs can be canceled` };
  const error = { code: 'canceled', message };
  return {
    to: { ...run, status: 'canceled', error, finishedAt: now, updatedAt: now, leaseOwner: null, leaseUntil: null },
    attempt: run.status === 'running' && run.leaseOwner !== null ? attemptRow(run, now, 'canceled', error) : null,
  };
}

/** A failed, timed-out or canceled run queued again with `extraAttempts` more attempts and a new deadline. */
export function retriedRun(run: Run, now: number, extraAttempts: number, deadlineAt: number): { to: Run } | { invalid: string } {
  if (run.status !== 'failure' && run.status !== 'timeout' && run.status !== 'canceled') {
    return { invalid: `run ${run.id} is ${run.status}; only failed, timed-out or canceled runs can be retried` };
  }
  return {
    to: {
      ...run, status: 'queued', availableAt: now, deadlineAt, expiresAt: deadlineAt, maxAttempts: run.attempts + extraAttempts,
      error: null, finishedAt: null, updatedAt: now, correlationId: null, leaseOwner: null, leaseUntil: null,
    },
  };
}

const ATTEMPT_OUTCOME: Record<'success' | 'failure' | 'canceled', Attempt['outcome']> = { success: 'success', failure: 'failure', canceled: 'canceled' };

/**
 * A run's answer from elsewhere: a callback, an upload, a person's answer. A queued or running run (waiting
 * or still executing: a result may overtake the waiting outcome it answers, which then no longer passes its
 * fence) ends `success`, `failure` or `canceled`; `running` records progress (the result) and keeps it
 * waiting. A run that ended already is left alone, unless it ended in a status the caller lets this result
 * reopen; the same ending twice is `unchanged`, so a result delivered again changes nothing.
 */
export function resolvedRun(run: Run, r: RunResolution): { outcome: 'resolved'; to: Run; attempt: Attempt | null } | { outcome: 'unchanged' | 'conflict' } {
  const ended = TERMINAL_STATUSES.has(run.status);
  if (r.status === 'running') {
    if (run.status !== 'running') return { outcome: 'conflict' };
    const result = r.result === undefined ? run.result : r.result;
    return { outcome: 'resolved', to: { ...run, result, updatedAt: r.at }, attempt: null };
  }
  if (run.status === r.status) return { outcome: 'unchanged' };
  if (ended && !(r.reopen ?? []).includes(run.status as Exclude<RunStatus, 'queued' | 'running'>)) return { outcome: 'conflict' };
  const error: RunError | null =
    r.status === 'success' ? null : (r.error ?? (r.status === 'canceled' ? { code: 'canceled', message: 'canceled by its recipient' } : { code: 'action_failed', message: 'the recipient reported a failure' }));
  // A queued run (its retry not started yet) gets an attempt of its own; a running one ends the attempt under way.
  const attempts = run.status === 'queued' ? run.attempts + 1 : Math.max(run.attempts, 1);
  const to: Run = {
    ...run,
    status: r.status,
    attempts,
    updatedAt: r.at,
    finishedAt: r.at,
    leaseOwner: null,
    leaseUntil: null,
    error,
    result: r.result === undefined ? run.result : r.result,
  };
  // The attempt it answers ends (a late answer replaces what the sweeper wrote); a queued run's is a new one.
  const attempt = { ...attemptRow({ ...run, attempts }, r.at, ATTEMPT_OUTCOME[r.status], error, r.response ?? null), startedAt: run.status === 'queued' ? r.at : run.updatedAt };
  return { outcome: 'resolved', to, attempt };
}

// ---------------------------------------------------------------------------------------------- hosts

/** Whether a sequence number skips some after the stored one (so a log chunk is missing before it). */
function skips(stored: number | null, sequence: number | undefined): boolean {
  if (sequence === undefined) return false;
  return stored === null ? sequence > 0 : stored + 1 < sequence;
}

/** The log after an upsert: replaced, or appended to (after the gap marker when chunks are missing). */
function nextLog(log: string, stored: number | null, u: HostUpsert): string {
  if (u.log === undefined) return log;
  if ('replace' in u.log) return u.log.replace;
  const marker = u.log.gapMarker !== undefined && skips(stored, u.sequence) ? u.log.gapMarker : '';
  return log + marker + u.log.append;
}

/**
 * A host as an upsert leaves it, given the one stored (null: the run has none of that name yet) and the
 * run's owner. A host in one of the `keep` statuses, or that already has this `sequence` or a later one,
 * is left as it is; so is one the upsert would not change.
 */
export function upsertedHost(existing: Host | null, u: HostUpsert, run: Owner, newHostId: () => string): HostResult {
  if (existing === null) {
    if (u.only === 'update') return { outcome: 'not_found', host: null };
    return {
      outcome: 'created',
      host: {
        id: newHostId(), runId: u.runId, name: u.name, status: u.status ?? 'running', log: nextLog('', null, u), sequence: u.sequence ?? null,
        details: { ...(u.details ?? {}) }, service: run.service, orgId: run.orgId, createdAt: u.at, updatedAt: u.at,
      },
    };
  }
  const unchanged: HostResult = { outcome: 'unchanged', host: existing };
  if (u.only === 'create' || u.keep?.includes(existing.status)) return unchanged;
  if (u.sequence !== undefined && existing.sequence !== null && existing.sequence >= u.sequence) return unchanged;
  const next: Host = {
    ...existing,
    status: u.status ?? existing.status,
    log: nextLog(existing.log, existing.sequence, u),
    sequence: u.sequence ?? existing.sequence,
    details: u.details === undefined ? existing.details : { ...existing.details, ...u.details },
  };
  const same =
    next.status === existing.status && next.log === existing.log && next.sequence === existing.sequence && JSON.stringify(next.details) === JSON.stringify(existing.details);
  return same ? unchanged : { outcome: 'updated', host: { ...next, updatedAt: u.at } };
}

/** The hosts of a run that ended by itself (`timeout`, `canceled`): those still queued or running end with it. */
export function endedHosts(hosts: readonly Host[], status: 'timeout' | 'canceled', at: number): Host[] {
  return hosts.filter((h) => h.status === 'queued' || h.status === 'running').map((h) => ({ ...h, status, updatedAt: at }));
}
