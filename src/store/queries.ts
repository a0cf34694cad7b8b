/**
 * Read queries shared by both dialects, built with Kysely. The hot path (intake, claims, outcomes) is
 * hand-written SQL in each dialect's folder; these are the operator's queries: filtered, sorted, paged.
 * Where the dialects differ (JSON containment), the difference is one entry of `DialectOps`.
 */

import { sql, type Expression, type Kysely, type SelectQueryBuilder, type SqlBool } from 'kysely';
import type { AttemptRow, DeadLetterRow, EventRow, HostRow, RunEventRow, RunEventWithRunRow, RunRow } from './rows.js';
import { v7Floor } from './shared.js';
import type { RunStatus } from '../core/types.js';
import type { DeadLetterQuery, EventQuery, HostQuery, Page, RepublishQuery, RunQuery, Scope, SortDirection, TimeRange } from './types.js';

export interface Database {
  events: EventRow;
  runs: RunRow;
  attempts: AttemptRow;
  run_events: RunEventRow;
  dead_letters: DeadLetterRow;
  hosts: HostRow;
}

export interface DialectOps {
  /** The JSON column `column` (`labels`, `details`) holds every key = value pair. */
  labelsContain(labels: Record<string, string>, column?: string): Expression<SqlBool>;
}

type Q<T extends keyof Database> = SelectQueryBuilder<Database, T, object>;

function scoped<T extends 'runs' | 'events' | 'dead_letters' | 'hosts'>(qb: Q<T>, scope: Scope | undefined): Q<T> {
  let out = qb;
  if (scope?.orgId !== undefined) out = out.where(sql.ref('org_id'), '=', scope.orgId) as Q<T>;
  // A list of no service reaches nothing (never everything).
  if (scope?.services !== undefined) {
    out = (scope.services.length > 0 ? out.where(sql.ref('service'), 'in', scope.services) : out.where(sql<boolean>`1 = 0`)) as Q<T>;
  }
  return out;
}

function timeRange<T extends keyof Database>(qb: Q<T>, column: string, range: TimeRange | undefined): Q<T> {
  let out = qb;
  if (range?.from !== undefined) out = out.where(sql.ref(column), '>=', range.from) as Q<T>;
  if (range?.to !== undefined) out = out.where(sql.ref(column), '<', range.to) as Q<T>;
  return out;
}

/**
 * A time range through a primary key that carries the time: a run's id carries its `created_at` and an
 * event's key its `received_at` (see `NewRun.id`), so the range is a range of ids, and neither table needs an
 * index on the time (on `runs`, one that every outcome, a non-HOT update in PostgreSQL, wrote a new entry
 * into). The test on the time column stays beside it.
 */
function idRange<T extends 'runs' | 'events' | 'hosts'>(qb: Q<T>, id: string, column: string, range: TimeRange | undefined): Q<T> {
  let out = timeRange(qb, column, range);
  if (range?.from !== undefined) out = out.where(sql.ref(id), '>=', v7Floor(range.from)) as Q<T>;
  if (range?.to !== undefined) out = out.where(sql.ref(id), '<', v7Floor(range.to)) as Q<T>;
  return out;
}

/** A run under way (`queued`, `running`) whose deadline is at or before `at`: read as `timeout`. */
function expiredAt(at: number): Expression<SqlBool> {
  return sql<SqlBool>`(${sql.ref('status')} IN ('queued', 'running') AND ${sql.ref('deadline_at')} <= ${at})`;
}

/**
 * The `status` filter read at `at` (see `RunQuery.statusAt`): `timeout` also takes the runs under way past
 * their deadline, and `queued` or `running` leaves them out. `under` tests the status of the row listed;
 * `expired` whether it belongs to such a run.
 */
function statusAt(statuses: readonly RunStatus[], under: (status: RunStatus) => Expression<SqlBool>, expired: Expression<SqlBool>): Expression<SqlBool> {
  const each = statuses.map((status) => {
    if (status === 'timeout') return sql<SqlBool>`(${under('timeout')} OR ((${under('queued')} OR ${under('running')}) AND ${expired}))`;
    if (status === 'queued' || status === 'running') return sql<SqlBool>`(${under(status)} AND NOT ${expired})`;
    return under(status);
  });
  return sql<SqlBool>`(${sql.join(each, sql` OR `)})`;
}

export async function listRuns(db: Kysely<Database>, ops: DialectOps, query: RunQuery): Promise<{ rows: RunRow[]; total: number }> {
  let qb = scoped(db.selectFrom('runs') as Q<'runs'>, query.scope);
  if (query.status?.length) {
    const at = query.statusAt;
    qb = at === undefined ? qb.where('status', 'in', query.status) : qb.where(statusAt(query.status, (s) => sql<SqlBool>`${sql.ref('status')} = ${s}`, expiredAt(at)));
  }
  if (query.service?.length) qb = qb.where('service', 'in', query.service);
  if (query.type?.length) qb = qb.where('event_type', 'in', query.type);
  if (query.route?.length) qb = qb.where('route', 'in', query.route);
  if (query.action?.length) qb = qb.where('action', 'in', query.action);
  if (query.actionType?.length) qb = qb.where('action_type', 'in', query.actionType);
  if (query.result !== undefined && Object.keys(query.result).length > 0) qb = qb.where(ops.labelsContain(query.result, 'result'));
  if (query.eventKey !== undefined) qb = qb.where('event_key', '=', query.eventKey);
  if (query.correlationId !== undefined) qb = qb.where('correlation_id', '=', query.correlationId);
  if (query.labels !== undefined && Object.keys(query.labels).length > 0) qb = qb.where(ops.labelsContain(query.labels));
  qb = idRange(qb, 'id', 'created_at', query.createdAt);
  qb = timeRange(qb, 'updated_at', query.updatedAt);

  return countedPage<'runs', RunRow>(qb, query.sort, query);
}

/**
 * How many rows `qb` selects, and one page of them, sorted by `sort` (default newest first), ties broken by id.
 * Creation order is id order: a run's or a host's id carries its `created_at`, and breaks its ties as before.
 */
async function countedPage<T extends 'runs' | 'hosts', R>(qb: Q<T>, sort: { field: string; direction: SortDirection } | undefined, page: Page): Promise<{ rows: R[]; total: number }> {
  const { field, direction } = sort ?? { field: 'created_at', direction: 'desc' };
  const [{ total }] = (await qb.select((eb) => eb.fn.countAll<number | string>().as('total')).execute()) as [{ total: number | string }];
  const sorted = field === 'created_at' ? qb.selectAll() : qb.selectAll().orderBy(sql.ref(field), direction);
  const rows = await sorted.orderBy(sql.ref('id'), direction).limit(page.limit).offset(page.offset).execute();
  return { rows: rows as R[], total: Number(total) };
}

export async function listHosts(db: Kysely<Database>, ops: DialectOps, query: HostQuery): Promise<{ rows: HostRow[]; total: number }> {
  let qb = scoped(db.selectFrom('hosts') as Q<'hosts'>, query.scope);
  if (query.runId?.length) qb = qb.where('run_id', 'in', query.runId);
  if (query.status?.length) {
    const at = query.statusAt;
    if (at === undefined) qb = qb.where('status', 'in', query.status);
    else {
      const expired = sql<SqlBool>`${sql.ref('hosts.run_id')} IN (SELECT id FROM runs WHERE ${expiredAt(at)})`;
      qb = qb.where(statusAt(query.status, (s) => sql<SqlBool>`${sql.ref('hosts.status')} = ${s}`, expired));
    }
  }
  if (query.name?.length) qb = qb.where('name', 'in', query.name);
  if (query.service?.length) qb = qb.where('service', 'in', query.service);
  if (query.details !== undefined && Object.keys(query.details).length > 0) qb = qb.where(ops.labelsContain(query.details, 'details'));
  if (query.route?.length || query.actionType?.length || (query.runLabels !== undefined && Object.keys(query.runLabels).length > 0)) {
    // Through the run: its route, action type and labels are the run's.
    let runs = db.selectFrom('runs').select('id') as unknown as Q<'runs'>;
    if (query.route?.length) runs = runs.where('route', 'in', query.route);
    if (query.actionType?.length) runs = runs.where('action_type', 'in', query.actionType);
    if (query.runLabels !== undefined && Object.keys(query.runLabels).length > 0) runs = runs.where(ops.labelsContain(query.runLabels));
    qb = qb.where('run_id', 'in', runs as never);
  }
  qb = idRange(qb, 'id', 'created_at', query.createdAt);
  return countedPage<'hosts', HostRow>(qb, query.sort, query);
}

export async function listEvents(db: Kysely<Database>, query: EventQuery): Promise<{ rows: EventRow[]; total: number }> {
  let qb = scoped(db.selectFrom('events') as Q<'events'>, query.scope);
  if (query.type?.length) qb = qb.where('type', 'in', query.type);
  if (query.source !== undefined) qb = qb.where('source', '=', query.source);
  if (query.id !== undefined) qb = qb.where('id', '=', query.id);
  if (query.unrouted === true) qb = qb.where('run_count', '=', 0);
  if (query.unrouted === false) qb = qb.where('run_count', '>', 0);
  qb = idRange(qb, 'key', 'received_at', query.receivedAt);
  const direction = query.sort?.direction ?? 'desc';
  const [{ total }] = (await qb.select((eb) => eb.fn.countAll<number | string>().as('total')).execute()) as [{ total: number | string }];
  const rows = await qb.selectAll().orderBy('key', direction).limit(query.limit).offset(query.offset).execute();
  return { rows: rows as EventRow[], total: Number(total) };
}

export async function listDeadLetters(db: Kysely<Database>, query: DeadLetterQuery): Promise<{ rows: DeadLetterRow[]; total: number }> {
  let qb = scoped(db.selectFrom('dead_letters') as Q<'dead_letters'>, query.scope);
  if (query.origin !== undefined) qb = qb.where('origin', '=', query.origin);
  if (query.reason?.length) qb = qb.where('reason', 'in', query.reason);
  if (query.source !== undefined) qb = qb.where('source', '=', query.source);
  if (query.runId !== undefined) qb = qb.where('run_id', '=', query.runId);
  if (query.replayed === true) qb = qb.where('replayed_at', 'is not', null);
  if (query.replayed === false) qb = qb.where('replayed_at', 'is', null);
  qb = timeRange(qb, 'last_seen_at', query.lastSeenAt);
  const [{ total }] = (await qb.select((eb) => eb.fn.countAll<number | string>().as('total')).execute()) as [{ total: number | string }];
  const rows = await qb.selectAll().orderBy('last_seen_at', 'desc').orderBy('id', 'desc').limit(query.limit).offset(query.offset).execute();
  return { rows: rows as DeadLetterRow[], total: Number(total) };
}

/** A page of the runs `dispatcher runs republish` names: after `afterId`, in id order (keyset paging). */
export function republishPage(db: Kysely<Database>, query: RepublishQuery, afterId: string, limit: number): Q<'runs'> {
  let qb = scoped(db.selectFrom('runs') as Q<'runs'>, query.scope);
  if (query.status?.length) qb = qb.where('status', 'in', query.status);
  if (query.type?.length) qb = qb.where('event_type', 'in', query.type);
  if (query.route?.length) qb = qb.where('route', 'in', query.route);
  if (query.service?.length) qb = qb.where('service', 'in', query.service);
  if (query.orgId?.length) qb = qb.where('org_id', 'in', query.orgId);
  qb = idRange(qb, 'id', 'created_at', query.createdAt);
  return qb.where('id', '>', afterId).orderBy('id', 'asc').limit(limit);
}

/**
 * Run events and host events after `afterSeq`, with the unchanging columns of their runs (see rows.ts
 * runStateJson) and, for a host event, its host's log.
 */
export async function readRunEvents(db: Kysely<Database>, afterSeq: number, limit: number, scope: Scope | undefined): Promise<RunEventWithRunRow[]> {
  let qb = db
    .selectFrom('run_events as e')
    .leftJoin('runs as r', 'r.id', 'e.run_id')
    .leftJoin('hosts as h', 'h.id', 'e.host_id')
    .selectAll('e')
    .select('h.log as h_log')
    .select([
      'r.event_key as r_event_key',
      'r.event_type as r_event_type',
      'r.route as r_route',
      'r.action as r_action',
      'r.action_type as r_action_type',
      'r.ordering_key as r_ordering_key',
      'r.labels as r_labels',
      'r.created_at as r_created_at',
    ])
    .where('e.seq', '>', afterSeq);
  if (scope?.orgId !== undefined) qb = qb.where('e.org_id', '=', scope.orgId);
  if (scope?.services !== undefined) qb = scope.services.length > 0 ? qb.where('e.service', 'in', scope.services) : qb.where(sql<boolean>`1 = 0`);
  return (await qb.orderBy('e.seq', 'asc').limit(limit).execute()) as unknown as RunEventWithRunRow[];
}
