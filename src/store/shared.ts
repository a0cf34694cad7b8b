/**
 * What both stores share besides the run state machine (core/run-state.ts): how dead letters are recognized,
 * the audit entries of an intake batch, the payload of a planned run's `create` event, id bounds of a time.
 */

import { createHash } from 'node:crypto';
import type { NewAuditEntry } from '../core/audit.js';
import { TERMINAL_STATUSES } from '../core/types.js';
import type { IntakeItem, IntakeResult, NewDeadLetter, NewRun } from './types.js';

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

/**
 * The migrations `migrate()` applies, in order: the store's own by name, then each owner's (a profile's)
 * by name, recorded as `<owner>/<name>` so that two owners' names never meet.
 */
export function migrationsInOrder(
  own: Readonly<Record<string, readonly string[]>>,
  extra: ReadonlyArray<{ owner: string; migrations: Readonly<Record<string, readonly string[]>> }>,
): Array<[string, readonly string[]]> {
  const byName = (m: Readonly<Record<string, readonly string[]>>) => Object.entries(m).sort(([a], [b]) => a.localeCompare(b));
  return [...byName(own), ...extra.flatMap(({ owner, migrations }) => byName(migrations).map(([name, statements]): [string, readonly string[]] => [`${owner}/${name}`, statements]))];
}
