/** Rules both stores share: how outcomes found by the sweeper are written down, and how dead letters are recognized. */

import { createHash } from 'node:crypto';
import type { Attempt, Run } from '../core/types.js';
import type { NewDeadLetter } from './types.js';

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
