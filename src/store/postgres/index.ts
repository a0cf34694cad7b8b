/**
 * The scale-out store: PostgreSQL through node-postgres, shared by any number of dispatcher processes.
 *
 * Same tables, columns and rules as the SQLite store (`../sqlite/index.ts`); what differs is how
 * concurrency is handled, because here several processes (and several pooled connections of one process)
 * write at once:
 *
 * - Claims lock their candidates with `FOR UPDATE SKIP LOCKED`: two claimers never wait for each other
 *   and never take the same run.
 * - A route's concurrency limit is counted under `pg_advisory_xact_lock(hashtext('route:' || route))`,
 *   held until commit, so two claimers cannot both see room for the last slot.
 * - Outcomes are fenced in the UPDATE itself (`status = 'running' AND lease_owner = $owner`).
 * - Statements that change runs named by id find them by primary key, and test their status as a filter
 *   (`STATUS_IS`), never through the partial indexes on status: see `STATUS_IS`. Where a batch of such
 *   runs is joined to its new values, the status is tested in the join instead (see `finishRuns`).
 * - Lease renewals and the release at shutdown skip runs another transaction holds (`OWN_RUNS`), so they
 *   never wait on a batch of outcomes for the same runs.
 * - The sweeper locks what it sweeps with `FOR UPDATE SKIP LOCKED`; cancel and retry lock their run with
 *   `FOR UPDATE`, so a concurrent outcome either lands before (and the state check sees it) or fails its
 *   fence after.
 * - Rows that several transactions may lock (events by identity, runs, dead letters by fingerprint) are
 *   written in a sorted order, so two batches that overlap cannot deadlock on each other.
 *
 * The hot path is hand-written SQL with one statement per step, whole batches passed as arrays and
 * expanded with `unnest`; run events are inserted in the same statement or transaction as the change. An
 * intake batch and an outcome batch are one statement each (a statement is a transaction of its own), so
 * each costs one round trip.
 */

import { PostgresAccess } from './access.js';
import { PostgresInboxes } from './inboxes.js';
import pg from 'pg';
import { Kysely, PostgresDialect, sql, type Expression, type SqlBool } from 'kysely';
import { v7 as uuidv7 } from 'uuid';
import { DispatcherError } from '../../core/errors.js';
import { newId } from '../../core/ids.js';
import { afterLeaseExpiry, canceledRun, endedHosts, finishedRun, plannedRun, resolvedRun, retriedRun, timedOutRun, upsertedHost } from '../../core/run-state.js';
import type { Attempt, DeadLetter, EventRecord, Host, OutboxEvent, Run, RunEventType } from '../../core/types.js';
import * as queries from '../queries.js';
import {
  hostStateJson,
  runEventPayload,
  toAttempt,
  toDeadLetter,
  toEventRecord,
  toHost,
  toRun,
  toRunEvent,
  type AttemptRow,
  type DeadLetterRow,
  type EventRow,
  type HostRow,
  type RunRow,
} from '../rows.js';
import type {
  ClaimOptions,
  ClaimedRun,
  DeadLetterQuery,
  DialectSql,
  EventQuery,
  HostQuery,
  HostResult,
  HostUpsert,
  IntakeItem,
  IntakeResult,
  Listing,
  NewDeadLetter,
  PruneOptions,
  PruneResult,
  RelayStream,
  OwnedMigrations,
  RepublishQuery,
  ResolveResult,
  RunOutcome,
  RunQuery,
  RunResolution,
  Scope,
  SequencedDeadLetter,
  Store,
  StoreStats,
  SweepResult,
} from '../types.js';
import { ENDED_STATUSES_SQL, fingerprint, inScope, intakeAuditEntries, migrationsInOrder, REPUBLISH_BATCH, v7Floor } from '../shared.js';
import { POSTGRES_MIGRATIONS } from './migrations.js';

export interface PostgresStoreOptions {
  /** `postgres://user:password@host:port/database?…` */
  connectionString: string;
  /** Connections in the pool. */
  poolSize: number;
  /** The longest wait for one statement's answer, in ms: past it, `store_unavailable`, and the connection is closed. */
  queryTimeout?: number;
  /**
   * Schema for the dispatcher's tables: every connection sets `search_path` to it, and `migrate()` creates
   * it when missing. Default: the server's search path (usually `public`).
   */
  schema?: string;
}

const RUN_COLUMNS =
  'id, event_key, event_type, route, action, action_type, status, attempts, max_attempts, created_at, updated_at, ' +
  'available_at, deadline_at, expires_at, lease_owner, lease_until, ordering_key, correlation_id, labels, service, ' +
  'org_id, error_code, error_message, result, finished_at';

const INT8_OID = 20;

/**
 * int8 (our millisecond times, `seq`, `count(*)`) as a JS number instead of pg's default string. Safe:
 * milliseconds since the epoch and sequence numbers stay far below 2^53.
 */
const getTypeParser = ((oid: number, format?: 'text' | 'binary') =>
  oid === INT8_OID && format !== 'binary'
    ? (value: string) => Number(value)
    : pg.types.getTypeParser(oid, format ?? 'text')) as pg.CustomTypesConfig['getTypeParser'];

/** How many times a transaction is tried again after PostgreSQL broke a deadlock or serialization conflict. */
const TRANSACTION_RETRIES = 3;

/** Positional parameters: `p.add(value, 'text[]')` returns `$n::text[]`. */
class Params {
  readonly values: unknown[] = [];
  add(value: unknown, type: string): string {
    this.values.push(Array.isArray(value) ? (arrayLiteral(value) ?? value) : value);
    return `$${this.values.length}::${type}`;
  }
}

const ARRAY_ESCAPES = /[\\"]/g;

/**
 * PostgreSQL's text form of an array of strings, numbers and nulls, or undefined for an array holding
 * anything else (pg then builds it). The same text pg builds, made without pg's two regular-expression
 * replacements of every element: ids, names and numbers (most of a batch's values) need none. On this
 * machine a run id costs 29 ns instead of 129, and that is a few per cent of the CPU of a batch.
 */
function arrayLiteral(values: unknown[]): string | undefined {
  let text = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i > 0) text += ',';
    if (v === null || v === undefined) text += 'NULL';
    else if (typeof v === 'string') text += `"${v.includes('"') || v.includes('\\') ? v.replace(ARRAY_ESCAPES, '\\$&') : v}"`;
    else if (typeof v === 'number' && Number.isFinite(v)) text += String(v);
    else return undefined;
  }
  return `${text}}`;
}

/**
 * JSON texts as one JSON array, for `json_array_elements($n::json)` beside `unnest`: each text goes in as it
 * is, where an array of texts would escape every quote in it (most of the cost of passing an event's envelope).
 * Each is made acceptable to jsonb first (pgJson), so that what is stored can be read as jsonb too.
 */
function jsonArray(texts: string[]): string {
  let json = '[';
  for (let i = 0; i < texts.length; i++) json += (i > 0 ? ',' : '') + pgJson(texts[i]!);
  return `${json}]`;
}

type Queryable = Pick<pg.PoolClient, 'query'>;

export class PostgresStore implements Store {
  readonly dialect = 'postgres' as const;
  readonly access: PostgresAccess;
  readonly inboxes: PostgresInboxes;
  readonly #pool: pg.Pool;
  readonly #kysely: Kysely<queries.Database>;
  readonly #schema: string | undefined;
  readonly #where: string;
  readonly #ops: queries.DialectOps = {
    labelsContain: (labels, column = 'labels'): Expression<SqlBool> => sql<SqlBool>`${sql.ref(column)} @> ${JSON.stringify(labels)}::jsonb`,
  };
  #closed = false;

  constructor(options: PostgresStoreOptions) {
    const { schema } = options;
    if (schema !== undefined && !/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(schema)) {
      throw new DispatcherError('config_invalid', `store.schema: "${schema}" is not a plain SQL identifier (letters, digits, _)`);
    }
    this.#schema = schema;
    this.#where = redact(options.connectionString);
    this.#pool = new pg.Pool({
      connectionString: options.connectionString,
      max: options.poolSize,
      // Connecting (a new connection, or waiting for a free one) is bounded too, by the same timeout at most.
      connectionTimeoutMillis: Math.min(10_000, options.queryTimeout ?? 30_000),
      // A server or network that stops answering without closing the connection: every statement waits at
      // most this long (the driver then fails it, and the pool closes its connection), and TCP keepalive
      // lets the kernel find a peer that is gone while a connection is idle.
      query_timeout: options.queryTimeout ?? 30_000,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      types: { getTypeParser },
      // Set at connection start-up, so that no query can run before it is in effect.
      ...(schema === undefined ? {} : { options: `-c search_path="${schema}"` }),
      // random_page_cost: the runs a batch names by id are in memory, so reading them by primary key costs
      // little more than reading pages in order; at the default (4), a batch of outcomes scanned the whole runs
      // table up to about 65,000 runs (auto_explain) instead of looking each run up. Set by a statement, not a
      // start-up option, which connection poolers such as PgBouncer refuse. The pool hands a new connection
      // out only once this has finished; if it fails, the connection is closed and the caller gets the error.
      onConnect: async (client) => {
        await client.query('SET random_page_cost = 1.1');
      },
    });
    // An idle connection that dies (server restart, network) emits 'error' on the pool; without a listener
    // that would crash the process. The pool drops the connection, and the next query reports the problem.
    this.#pool.on('error', () => {});
    // A statement not answered in time leaves its connection waiting for the answer: whoever holds it next
    // would wait behind it. Its socket is closed at once, so that the pool replaces the connection.
    this.#pool.on('connect', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as { query: unknown }).query = (...args: unknown[]) => {
        const pending = query(...args);
        if (pending instanceof Promise) {
          pending.catch((err: unknown) => {
            if (isReadTimeout(err)) (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
          });
        }
        return pending;
      };
    });
    this.#kysely = new Kysely({ dialect: new PostgresDialect({ pool: this.#pool }) });
    this.access = new PostgresAccess({
      query: (text, values) => this.#query(text, values),
      transaction: (fn) => this.#transaction(fn),
      lockName: schema ?? '',
    });
    this.inboxes = new PostgresInboxes({ query: (text, values) => this.#query(text, values), transaction: (fn) => this.#transaction(fn) });
  }

  async migrate(extra: readonly OwnedMigrations[] = []): Promise<void> {
    await this.#transaction(async (c) => {
      // Several processes may start at once: the first to take the lock migrates, the others then find
      // the migrations applied. The lock is per schema, so test schemas migrate in parallel.
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`dispatcher:migrate:${this.#schema ?? ''}`]);
      if (this.#schema !== undefined) await c.query(`CREATE SCHEMA IF NOT EXISTS "${this.#schema}"`);
      await c.query('CREATE TABLE IF NOT EXISTS dispatcher_migrations (name text PRIMARY KEY, applied_at bigint NOT NULL)');
      const applied = new Set((await c.query<{ name: string }>('SELECT name FROM dispatcher_migrations')).rows.map((r) => r.name));
      for (const [name, statements] of migrationsInOrder(POSTGRES_MIGRATIONS, extra.map((m) => ({ owner: m.owner, migrations: m.postgres })))) {
        if (applied.has(name)) continue;
        // A migration may rewrite a large table: not bound by the statement timeout.
        for (const statement of statements) await c.query({ text: statement, query_timeout: MIGRATION_TIMEOUT_MS } as pg.QueryConfig);
        await c.query('INSERT INTO dispatcher_migrations (name, applied_at) VALUES ($1, $2)', [name, Date.now()]);
      }
    });
  }

  async ping(): Promise<void> {
    await this.#query('SELECT 1');
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Kysely borrows connections from this pool only per query; ending the pool ends everything.
    await this.#pool.end();
  }

  // ---------------------------------------------------------------------------------------------- intake

  /**
   * One statement writes the events, their runs and the runs' `create` events: a statement is a transaction
   * of its own, so a bus input's batch costs one round trip to PostgreSQL instead of four (`BEGIN`, the
   * events, the runs, `COMMIT`), and under load a round trip costs more than the rows (measured: a quarter of
   * the intake commit). Only a batch holding audit entries needs a transaction, for the audit chain after it.
   */
  async commitIntake(items: IntakeItem[]): Promise<IntakeResult[]> {
    if (items.length === 0) return [];
    // Insert in (source, id) order: two batches holding the same events then lock them in the same order
    // and cannot deadlock. The sort is stable, so of two copies of one event in a batch the first wins.
    const order = items.map((_, i) => i).sort((a, b) => compareIdentity(items[a]!, items[b]!));
    const records = order.map((i) => items[i]!.record);
    // Every planned run goes in with the statement; only those of the events it inserted are kept (a
    // duplicate's runs are not made). Item order, so that the run events' `seq` follows the batch; the same
    // item given twice is planned once.
    const planned: Run[] = [];
    const keys = new Set<string>();
    for (const { record, runs } of items) {
      if (keys.has(record.key)) continue;
      keys.add(record.key);
      for (const r of runs) planned.push(plannedRun(record, r));
    }
    const p = new Params();
    const text = `WITH e AS (
        INSERT INTO events (key, source, id, type, topic, subject, envelope, input, hops, service, org_id, received_at, run_count)
        SELECT * FROM ROWS FROM (
          unnest(${p.add(records.map((r) => r.key), 'text[]')}, ${p.add(records.map((r) => r.event.source), 'text[]')},
            ${p.add(records.map((r) => r.event.id), 'text[]')}, ${p.add(records.map((r) => r.event.type), 'text[]')},
            ${p.add(records.map((r) => (typeof r.event.topic === 'string' ? r.event.topic : null)), 'text[]')},
            ${p.add(records.map((r) => (typeof r.event.subject === 'string' ? r.event.subject : null)), 'text[]')}),
          json_array_elements(${p.add(jsonArray(order.map((i) => items[i]!.envelope ?? JSON.stringify(items[i]!.record.event))), 'json')}),
          unnest(${p.add(records.map((r) => r.input), 'text[]')}, ${p.add(records.map((r) => r.hops), 'int[]')},
            ${p.add(records.map((r) => r.service), 'text[]')}, ${p.add(records.map((r) => r.orgId), 'text[]')},
            ${p.add(records.map((r) => r.receivedAt), 'bigint[]')}, ${p.add(order.map((i) => items[i]!.runs.length), 'int[]')}))
        ON CONFLICT (source, id) DO NOTHING
        RETURNING key
      )${planned.length === 0 ? '' : `,
      r AS (
        INSERT INTO runs (id, event_key, event_type, route, action, action_type, status, attempts, max_attempts,
          created_at, updated_at, available_at, deadline_at, expires_at, lease_owner, lease_until, ordering_key, labels,
          service, org_id)
        SELECT id, event_key, event_type, route, action, action_type, status, attempts, max_attempts,
          created_at, created_at, available_at, deadline_at, expires_at, lease_owner, lease_until, ordering_key, labels,
          service, org_id
        FROM unnest(${p.add(planned.map((r) => r.id), 'text[]')}, ${p.add(planned.map((r) => r.eventKey), 'text[]')},
          ${p.add(planned.map((r) => r.eventType), 'text[]')}, ${p.add(planned.map((r) => r.route), 'text[]')},
          ${p.add(planned.map((r) => r.action), 'text[]')}, ${p.add(planned.map((r) => r.actionType), 'text[]')},
          ${p.add(planned.map((r) => r.maxAttempts), 'int[]')}, ${p.add(planned.map((r) => r.createdAt), 'bigint[]')},
          ${p.add(planned.map((r) => r.availableAt), 'bigint[]')}, ${p.add(planned.map((r) => r.deadlineAt), 'bigint[]')},
          ${p.add(planned.map((r) => r.expiresAt), 'bigint[]')}, ${p.add(planned.map((r) => r.orderingKey), 'text[]')},
          ${p.add(planned.map((r) => JSON.stringify(r.labels)), 'jsonb[]')}, ${p.add(planned.map((r) => r.service), 'text[]')},
          ${p.add(planned.map((r) => r.orgId), 'text[]')}, ${p.add(planned.map((r) => r.status), 'text[]')},
          ${p.add(planned.map((r) => r.attempts), 'int[]')}, ${p.add(planned.map((r) => r.leaseOwner), 'text[]')},
          ${p.add(planned.map((r) => r.leaseUntil), 'bigint[]')})
        AS t(id, event_key, event_type, route, action, action_type, max_attempts, created_at, available_at, deadline_at,
          expires_at, ordering_key, labels, service, org_id, status, attempts, lease_owner, lease_until)
        WHERE t.event_key IN (SELECT key FROM e)
        RETURNING id
      ),
      x AS (${insertRunEventsSql(p, planned.map((run) => ({ run, at: run.createdAt })), 'create', 'r')})`}
      SELECT key FROM e`;

    const write = async (c: Queryable): Promise<IntakeResult[]> => {
      const inserted = await c.query<{ key: string }>(text, p.values);
      const accepted = new Set(inserted.rows.map((r) => r.key));
      const results: IntakeResult[] = new Array(items.length);
      const duplicates: number[] = [];
      for (let i = 0; i < items.length; i++) {
        const { record, runs } = items[i]!;
        // `delete`, not `has`: the same record twice in one batch is accepted once.
        if (!accepted.delete(record.key)) {
          duplicates.push(i);
          continue;
        }
        results[i] = { key: record.key, status: 'accepted', runIds: runs.map((r) => r.id) };
      }
      if (duplicates.length > 0) {
        // The copies that won are committed by now: the insert waited for any transaction still writing them.
        const found = await c.query<{ key: string; source: string; id: string }>(
          `SELECT e.key, e.source, e.id FROM events e
           JOIN unnest($1::text[], $2::text[]) AS d(source, id) ON e.source = d.source AND e.id = d.id`,
          [duplicates.map((i) => items[i]!.record.event.source), duplicates.map((i) => items[i]!.record.event.id)],
        );
        const keys = new Map(found.rows.map((r) => [`${r.source}\0${r.id}`, r.key]));
        for (const i of duplicates) {
          const e = items[i]!.record.event;
          const key = keys.get(`${e.source}\0${e.id}`);
          if (key === undefined) throw new Error(`event (${e.source}, ${e.id}) was neither inserted nor found`);
          results[i] = { key, status: 'duplicate', runIds: [] };
        }
      }
      return results;
    };

    if (items.some((item) => item.audit !== undefined)) {
      return this.#transaction(async (c) => {
        const results = await write(c);
        // Last: the audit chain's lock is held from here to the commit.
        await this.access.appendAuditInTransaction(c, intakeAuditEntries(items, results));
        return results;
      });
    }
    return this.#retrying(() => write(this.#pool));
  }

  // ---------------------------------------------------------------------------------------------- runner

  async claimRuns(options: ClaimOptions): Promise<ClaimedRun[]> {
    const { owner, limit, now, leaseMs, routeLimits } = options;
    if (limit <= 0) return [];
    return this.#transaction(async (c) => {
      const leaseUntil = now + leaseMs;
      const chosen: Array<{ run: Run; envelope: string; hops: number }> = [];
      /** Slots left per limited route, for the routes whose lock this transaction holds. */
      const room = new Map<string, number>();
      /** Limited routes with no slot left, or whose lock another claimer holds: left out of the candidates. */
      const full = new Set<string>();

      // Candidates are read again when a window held runs of a route at its limit: otherwise one limited
      // route's backlog could fill every window and starve all other routes. Each pass adds at least one
      // route to `full`, so this ends.
      for (let pass = 0; ; pass++) {
        const window = routeLimits.size > 0 ? (limit - chosen.length) * 4 : limit - chosen.length;
        // A run with an ordering key is claimable only while no earlier run of its key is queued or running
        // (a head retrying later still blocks the ones behind it). A run another claimer holds is skipped:
        // its snapshot shows it queued, so the runs behind it stay blocked here too.
        const candidates = (
          await c.query<RunRow & { envelope: string; hops: number }>(
            `SELECT ${prefixed('r', RUN_COLUMNS)}, e.envelope::text AS envelope, e.hops AS hops
             FROM runs r JOIN events e ON e.key = r.event_key
             WHERE r.status = 'queued' AND r.available_at <= $1
               AND r.route <> ALL($3::text[]) AND r.id <> ALL($4::text[])
               AND (r.ordering_key IS NULL OR NOT EXISTS (
                 SELECT 1 FROM runs p WHERE p.ordering_key = r.ordering_key AND p.status IN ('queued', 'running') AND p.id < r.id))
             ORDER BY r.available_at, r.id
             LIMIT $2
             FOR UPDATE OF r SKIP LOCKED`,
            [now, window, [...full], chosen.map((x) => x.run.id)],
          )
        ).rows;

        const unseen = [...new Set(candidates.map((r) => r.route))].filter((r) => routeLimits.has(r) && !room.has(r) && !full.has(r)).sort(compare);
        if (unseen.length > 0) {
          // Count a limited route's running runs only while holding its lock, which every claimer of that
          // route takes and keeps until commit: the count then includes every claim committed before ours,
          // and no claim can commit between our count and our commit. The first pass waits for the locks,
          // in sorted order (volatile functions are evaluated after ORDER BY), so claimers cannot deadlock
          // on them; a later pass already holds locks, so it only tries, and leaves a busy route to the
          // claimer that holds it.
          const locked =
            pass === 0
              ? (await c.query(`SELECT pg_advisory_xact_lock(hashtext('route:' || r)) FROM unnest($1::text[]) AS r ORDER BY r`, [unseen]), unseen)
              : (
                  await c.query<{ r: string }>(`SELECT r FROM unnest($1::text[]) AS r WHERE pg_try_advisory_xact_lock(hashtext('route:' || r))`, [unseen])
                ).rows.map((x) => x.r);
          for (const route of unseen) {
            if (locked.includes(route)) room.set(route, routeLimits.get(route)!);
            else full.add(route);
          }
          if (locked.length > 0) {
            await c.query(INDEX_SCANS);
            const running = await c.query<{ route: string; n: number }>(
              `SELECT route, count(*) AS n FROM runs WHERE status = 'running' AND lease_owner IS NOT NULL AND route = ANY($1::text[]) GROUP BY route`,
              [locked],
            );
            for (const { route, n } of running.rows) room.set(route, routeLimits.get(route)! - n);
          }
        }

        let skipped = false;
        for (const row of candidates) {
          if (chosen.length >= limit) break;
          const left = room.get(row.route);
          if (full.has(row.route) || (left !== undefined && left <= 0)) {
            full.add(row.route);
            skipped = true;
            continue;
          }
          if (left !== undefined) room.set(row.route, left - 1);
          const run = toRun(row);
          run.status = 'running';
          run.attempts += 1;
          run.leaseOwner = owner;
          run.leaseUntil = leaseUntil;
          run.updatedAt = now;
          chosen.push({ run, envelope: row.envelope, hops: row.hops });
        }
        if (!skipped || chosen.length >= limit || candidates.length < window) break;
      }
      if (chosen.length === 0) return [];

      const p = new Params();
      const done = await c.query<{ run_id: string }>(
        `WITH u AS (
           UPDATE runs SET status = 'running', attempts = attempts + 1, lease_owner = ${p.add(owner, 'text')},
             lease_until = ${p.add(leaseUntil, 'bigint')}, updated_at = ${p.add(now, 'bigint')}
           WHERE id = ANY(${p.add(chosen.map((x) => x.run.id), 'text[]')}) AND ${STATUS_IS('queued')}
           RETURNING id
         )
         ${insertRunEventsSql(p, chosen.map((x) => ({ run: x.run, at: now })), 'update', 'u')}
         RETURNING run_id`,
        p.values,
      );
      const claimed = new Set(done.rows.map((r) => r.run_id));
      return chosen.filter((x) => claimed.has(x.run.id));
    });
  }

  async renewLeases(owner: string, runIds: string[], leaseUntil: number): Promise<number> {
    if (runIds.length === 0) return 0;
    // A run held by another transaction is skipped (OWN_RUNS): its outcome is being recorded, or a cancel
    // ends it. The next renewal, a third of a lease later, takes it if it is still running.
    const result = await this.#query(
      `UPDATE runs SET lease_until = $1 WHERE id IN (${OWN_RUNS('$2', '$3')})`,
      [leaseUntil, runIds, owner],
    );
    return result.rowCount ?? 0;
  }

  async finishRuns(outcomes: RunOutcome[]): Promise<string[]> {
    // One outcome per run: a second one for the same run could not pass the fence after the first anyway.
    // Sorted by run id, so that two batches lock their runs in the same order.
    const seen = new Set<string>();
    const unique = outcomes.filter((o) => !seen.has(o.run.id) && seen.add(o.run.id)).sort((a, b) => compare(a.run.id, b.run.id));
    if (unique.length === 0) return [];
    const after = unique.map(finishedRun);

    const p = new Params();
    const text = `WITH o AS (
        SELECT * FROM unnest(${p.add(after.map((r) => r.id), 'text[]')}, ${p.add(unique.map((o) => o.owner), 'text[]')},
          ${p.add(after.map((r) => r.status), 'text[]')}, ${p.add(after.map((r) => r.updatedAt), 'bigint[]')},
          ${p.add(after.map((r) => r.availableAt), 'bigint[]')}, ${p.add(after.map((r) => r.deadlineAt), 'bigint[]')},
          ${p.add(after.map((r) => pgText(r.correlationId)), 'text[]')}, ${p.add(after.map((r) => r.error?.code ?? null), 'text[]')},
          ${p.add(after.map((r) => pgText(r.error?.message ?? null)), 'text[]')}, ${p.add(after.map((r) => jsonOrNull(r.result)), 'jsonb[]')},
          ${p.add(after.map((r) => r.finishedAt), 'bigint[]')}, ${p.add(unique.map(() => 'running'), 'text[]')})
        AS o(id, owner, status, updated_at, available_at, deadline_at, correlation_id, error_code, error_message, result, finished_at,
          from_status)
      ),
      u AS (
        UPDATE runs r SET status = o.status, updated_at = o.updated_at, available_at = o.available_at, deadline_at = o.deadline_at,
          lease_owner = NULL, lease_until = NULL, correlation_id = o.correlation_id, error_code = o.error_code,
          error_message = o.error_message, result = o.result, finished_at = o.finished_at
        -- id = ANY(…) gives the planner the batch's size on the runs side too, so it looks the runs up by
        -- primary key instead of scanning the table for running runs to hash. The fence on the status is a
        -- join clause, not a filter on runs: as a filter the planner took it to leave about one run of the
        -- batch (few runs are running), and joined that run to the batch by reading the batch again for each
        -- run it found: a cost that grew with the square of the batch (bench/postgres-statements.js).
        FROM o WHERE r.id = ANY(${p.add(after.map((r) => r.id), 'text[]')}) AND r.id = o.id
          AND r.status = o.from_status AND r.lease_owner = o.owner
        RETURNING r.id
      ),
      a AS (${insertAttemptsSql(p, unique.map((o) => o.attempt), 'u')}),
      e AS (${insertRunEventsSql(p, after.map((run, i) => ({ run, at: unique[i]!.at })), 'update', 'u')})
      SELECT id FROM u`;

    const deadLetters = unique.filter((o) => o.deadLetter !== undefined);
    const withHosts = unique.filter((o) => o.hosts !== undefined && o.hosts.length > 0);
    if (deadLetters.length === 0 && withHosts.length === 0) {
      // One statement is one transaction: the fenced update, its attempts and its run events commit together.
      const applied = new Set((await this.#query<{ id: string }>(text, p.values)).rows.map((r) => r.id));
      return after.filter((r) => applied.has(r.id)).map((r) => r.id);
    }
    return this.#transaction(async (c) => {
      const applied = new Set((await c.query<{ id: string }>(text, p.values)).rows.map((r) => r.id));
      await insertDeadLetters(c, deadLetters.filter((o) => applied.has(o.run.id)).map((o) => o.deadLetter!));
      const hosts = withHosts.filter((o) => applied.has(o.run.id)).flatMap((o) => o.hosts!);
      if (hosts.length > 0) await upsertHostsIn(c, hosts);
      return after.filter((r) => applied.has(r.id)).map((r) => r.id);
    });
  }

  async releaseRuns(owner: string, runIds: string[], now: number): Promise<number> {
    if (runIds.length === 0) return 0;
    return this.#transaction(async (c) => {
      const released = await c.query<RunRow>(
        `UPDATE runs SET status = 'queued', attempts = greatest(attempts - 1, 0), lease_owner = NULL, lease_until = NULL,
           available_at = $1, updated_at = $1
         WHERE id IN (${OWN_RUNS('$2', '$3')})
         RETURNING ${RUN_COLUMNS}`,
        [now, runIds, owner],
      );
      if (released.rows.length === 0) return 0;
      const p = new Params();
      const runs = released.rows.map(toRun).sort((a, b) => compare(a.id, b.id));
      await c.query(insertRunEventsSql(p, runs.map((run) => ({ run, at: now })), 'update'), p.values);
      return runs.length;
    });
  }

  async sweep(now: number, limit: number): Promise<SweepResult> {
    return this.#transaction(async (c) => {
      const result: SweepResult = { requeued: 0, timedOut: 0, failed: 0 };
      // One sweeper at a time across the processes sharing this store: the others skip this round. (Row
      // locks alone would keep two sweepers correct; the lock keeps them from doing the same work twice.)
      const { rows } = await c.query<{ got: boolean }>('SELECT pg_try_advisory_xact_lock(hashtext($1)) AS got', [`dispatcher:sweep:${this.#schema ?? ''}`]);
      if (!rows[0]!.got) return result;
      // Deadlines first: a run past its deadline ends as `timeout`, whatever its lease says. Rows another
      // sweeper (or a claim, a cancel) holds are skipped: the next sweep gets them.
      const late = (
        await c.query<RunRow>(
          `SELECT ${RUN_COLUMNS} FROM runs WHERE status IN ('queued', 'running') AND deadline_at < $1
           ORDER BY deadline_at LIMIT $2 FOR UPDATE SKIP LOCKED`,
          [now, limit],
        )
      ).rows.map(toRun);
      if (late.length > 0) {
        const attempts: Attempt[] = [];
        const deadLetters: NewDeadLetter[] = [];
        const envelopes = await eventEnvelopes(c, late);
        const changes = late.map((run) => {
          const { to, attempt, deadLetter } = timedOutRun(run, now, envelopes.get(run.eventKey));
          if (attempt !== null) attempts.push(attempt);
          deadLetters.push(deadLetter);
          return { from: run, to };
        });
        const applied = await setStates(c, changes, now);
        await insertAttempts(c, attempts.filter((a) => applied.has(a.runId)));
        await insertDeadLetters(c, deadLetters.filter((d) => applied.has(d.runId!)));
        await endHosts(c, [...applied], 'timeout', now);
        result.timedOut = applied.size;
      }

      // This statement's snapshot includes the timeouts above, so a run is never both timed out and requeued.
      const expired = (
        await c.query<RunRow>(
          `SELECT ${RUN_COLUMNS} FROM runs WHERE status = 'running' AND lease_owner IS NOT NULL AND lease_until < $1
           ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED`,
          [now, limit],
        )
      ).rows.map(toRun);
      if (expired.length > 0) {
        const attempts: Attempt[] = [];
        const deadLetters: NewDeadLetter[] = [];
        const counts = new Map(
          (
            await c.query<{ run_id: string; n: number }>(
              `SELECT run_id, count(*)::int AS n FROM attempts WHERE run_id = ANY($1::text[]) AND error_code = 'lease_expired' GROUP BY run_id`,
              [expired.map((r) => r.id)],
            )
          ).rows.map((r) => [r.run_id, r.n]),
        );
        const envelopes = await eventEnvelopes(c, expired);
        const changes = expired.map((run) => {
          const { attempt, to, deadLetter } = afterLeaseExpiry(run, now, counts.get(run.id) ?? 0, envelopes.get(run.eventKey));
          attempts.push(attempt);
          if (deadLetter !== undefined) deadLetters.push(deadLetter);
          return { from: run, to };
        });
        const applied = await setStates(c, changes, now);
        await insertAttempts(c, attempts.filter((a) => applied.has(a.runId)));
        await insertDeadLetters(c, deadLetters.filter((d) => applied.has(d.runId!)));
        for (const { to } of changes) {
          if (!applied.has(to.id)) continue;
          if (to.status === 'failure') result.failed += 1;
          else result.requeued += 1;
        }
      }
      return result;
    });
  }

  async nextAvailableAt(): Promise<number | null> {
    const { rows } = await this.#query<{ at: number | null }>(`SELECT min(available_at) AS at FROM runs WHERE status = 'queued'`);
    return rows[0]?.at ?? null;
  }

  // ------------------------------------------------------------------------------------ one run at a time

  async getRun(id: string, scope?: Scope): Promise<Run | null> {
    const row = (await this.#query<RunRow>(`SELECT ${RUN_COLUMNS} FROM runs WHERE id = $1`, [id])).rows[0];
    if (row === undefined || !inScope(row, scope)) return null;
    return toRun(row);
  }

  async getRunByCorrelation(orgId: string, correlationId: string): Promise<Run | null> {
    const sql = `SELECT ${RUN_COLUMNS} FROM runs WHERE correlation_id = $1 AND org_id = $2 ORDER BY id DESC LIMIT 1`;
    const row = (await this.#query<RunRow>(sql, [correlationId, orgId])).rows[0];
    return row === undefined ? null : toRun(row);
  }

  async getAttempts(runId: string): Promise<Attempt[]> {
    return (await this.#query<AttemptRow>('SELECT * FROM attempts WHERE run_id = $1 ORDER BY n', [runId])).rows.map(toAttempt);
  }

  async cancelRun(id: string, now: number, scope?: Scope): Promise<Run> {
    return this.#transaction(async (c) => {
      const run = await lockRun(c, id, scope);
      const canceled = canceledRun(run, now);
      if ('invalid' in canceled) throw new DispatcherError('invalid_state', canceled.invalid);
      await setStates(c, [{ from: run, to: canceled.to }], now);
      if (canceled.attempt !== null) await insertAttempts(c, [canceled.attempt]);
      await endHosts(c, [run.id], 'canceled', now);
      return canceled.to;
    });
  }

  async retryRun(id: string, now: number, extraAttempts: number, deadlineAt: number, scope?: Scope): Promise<Run> {
    return this.#transaction(async (c) => {
      const run = await lockRun(c, id, scope);
      const retried = retriedRun(run, now, extraAttempts, deadlineAt);
      if ('invalid' in retried) throw new DispatcherError('invalid_state', retried.invalid);
      await setStates(c, [{ from: run, to: retried.to }], now);
      return retried.to;
    });
  }

  async resolveRuns(resolutions: RunResolution[]): Promise<ResolveResult[]> {
    if (resolutions.length === 0) return [];
    return this.#transaction(async (c) => {
      // The runs named, locked in id order (two batches naming the same runs cannot deadlock): by id, or the
      // newest of a tenant's runs waiting under a correlation id.
      const byId = resolutions.filter((r) => r.runId !== undefined).map((r) => r.runId!);
      const byCorrelation = resolutions.filter((r) => r.runId === undefined && r.correlationId !== undefined && r.orgId !== undefined);
      const rows = (
        await c.query<RunRow>(
          `SELECT ${RUN_COLUMNS} FROM runs WHERE id IN (
             SELECT unnest($1::text[])
             UNION
             SELECT (SELECT r.id FROM runs r WHERE r.correlation_id = k.correlation_id AND r.org_id = k.org_id ORDER BY r.id DESC LIMIT 1)
             FROM unnest($2::text[], $3::text[]) AS k(correlation_id, org_id))
           ORDER BY id FOR UPDATE`,
          [byId, byCorrelation.map((r) => r.correlationId!), byCorrelation.map((r) => r.orgId!)],
        )
      ).rows.map(toRun);
      const runs = new Map(rows.map((r) => [r.id, r]));
      const newest = new Map<string, Run>();
      for (const run of [...rows].sort((a, b) => compare(a.id, b.id))) if (run.correlationId !== null) newest.set(`${run.orgId}\0${run.correlationId}`, run);
      const results: ResolveResult[] = [];
      // Each run's first state and its last: one update per run, with one run event, whatever the batch did to it.
      const changes = new Map<string, { from: Run; to: Run }>();
      const attempts = new Map<string, Attempt>();
      for (const r of resolutions) {
        const run = r.runId !== undefined ? runs.get(r.runId) : newest.get(`${r.orgId}\0${r.correlationId}`);
        if (run === undefined) {
          results.push({ outcome: 'not_found', run: null });
          continue;
        }
        const resolved = resolvedRun(run, r);
        if (resolved.outcome !== 'resolved') {
          results.push({ outcome: resolved.outcome, run });
          continue;
        }
        // A later resolution of the same run in this batch sees this one's outcome.
        runs.set(run.id, resolved.to);
        if (run.correlationId !== null) newest.set(`${run.orgId}\0${run.correlationId}`, resolved.to);
        changes.set(run.id, { from: changes.get(run.id)?.from ?? run, to: resolved.to });
        if (resolved.attempt !== null) attempts.set(`${run.id}\0${resolved.attempt.n}`, resolved.attempt);
        results.push({ outcome: 'resolved', run: resolved.to });
      }
      const ordered = [...changes.values()].sort((a, b) => compare(a.from.id, b.from.id));
      await setStates(c, ordered, Math.max(...resolutions.map((r) => r.at)));
      await insertAttempts(c, [...attempts.values()]);
      return results;
    });
  }

  // ----------------------------------------------------------------------------------------------- hosts

  async upsertHosts(hosts: HostUpsert[]): Promise<HostResult[]> {
    if (hosts.length === 0) return [];
    return this.#transaction((c) => upsertHostsIn(c, hosts));
  }

  async getHost(id: string, scope?: Scope): Promise<Host | null> {
    const row = (await this.#query<HostRow>('SELECT * FROM hosts WHERE id = $1', [id])).rows[0];
    if (row === undefined || !inScope(row, scope)) return null;
    return toHost(row);
  }

  async listHosts(query: HostQuery): Promise<Listing<Host>> {
    const { rows, total } = await this.#guard(() => queries.listHosts(this.#kysely, this.#ops, query));
    return { items: rows.map(toHost), total };
  }

  // ----------------------------------------------------------------------------------------------- reads

  async listRuns(query: RunQuery): Promise<Listing<Run>> {
    const { rows, total } = await this.#guard(() => queries.listRuns(this.#kysely, this.#ops, query));
    return { items: rows.map(toRun), total };
  }

  async getEvent(key: string, scope?: Scope): Promise<EventRecord | null> {
    const row = (await this.#query<EventRow>('SELECT * FROM events WHERE key = $1', [key])).rows[0];
    if (row === undefined || !inScope(row, scope)) return null;
    return toEventRecord(row);
  }

  async listEvents(query: EventQuery): Promise<Listing<EventRecord>> {
    const { rows, total } = await this.#guard(() => queries.listEvents(this.#kysely, query));
    return { items: rows.map(toEventRecord), total };
  }

  // ---------------------------------------------------------------------------------------- dead letters

  async addDeadLetters(items: NewDeadLetter[]): Promise<string[]> {
    if (items.length === 0) return [];
    return this.#transaction((c) => insertDeadLetters(c, items));
  }

  async getDeadLetter(id: string, scope?: Scope): Promise<DeadLetter | null> {
    const row = (await this.#query<DeadLetterRow>('SELECT * FROM dead_letters WHERE id = $1', [id])).rows[0];
    if (row === undefined || !inScope(row, scope)) return null;
    return toDeadLetter(row);
  }

  async listDeadLetters(query: DeadLetterQuery): Promise<Listing<DeadLetter>> {
    const { rows, total } = await this.#guard(() => queries.listDeadLetters(this.#kysely, query));
    return { items: rows.map(toDeadLetter), total };
  }

  async markReplayed(id: string, at: number): Promise<void> {
    await this.#query('UPDATE dead_letters SET replayed_at = $1 WHERE id = $2', [at, id]);
  }

  async deleteDeadLetter(id: string, scope?: Scope): Promise<boolean> {
    const params: unknown[] = [id];
    let text = 'DELETE FROM dead_letters WHERE id = $1';
    if (scope?.orgId !== undefined) text += ` AND org_id = $${params.push(scope.orgId)}`;
    if (scope?.services !== undefined) text += ` AND service = ANY($${params.push(scope.services)}::text[])`;
    return ((await this.#query(text, params)).rowCount ?? 0) > 0;
  }

  async trimDeadLetters(maxCount: number): Promise<number> {
    const result = await this.#query(
      `DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY last_seen_at DESC, id DESC OFFSET $1)`,
      [Math.max(0, maxCount)],
    );
    return result.rowCount ?? 0;
  }

  async prune(o: PruneOptions): Promise<PruneResult> {
    const result: PruneResult = { runs: 0, attempts: 0, events: 0, runEvents: 0, deadLetters: 0 };
    // Each kind in its own statement or transaction: short, so pruning never holds intake up.
    if (o.runsBefore !== undefined) {
      const before = o.runsBefore;
      await this.#transaction(async (c) => {
        const ids = (
          await c.query<{ id: string }>(
            // Oldest first, through the primary key: a run's id carries its created_at (NewRun.id).
            `SELECT id FROM runs WHERE id < $3 AND created_at < $1 AND status IN ${ENDED_STATUSES_SQL} AND finished_at < $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED`,
            [before, o.limit, v7Floor(before)],
          )
        ).rows.map((r) => r.id);
        if (ids.length === 0) return;
        result.attempts = (await c.query('DELETE FROM attempts WHERE run_id = ANY($1::text[])', [ids])).rowCount ?? 0;
        await c.query('DELETE FROM hosts WHERE run_id = ANY($1::text[])', [ids]);
        result.runs = (await c.query('DELETE FROM runs WHERE id = ANY($1::text[])', [ids])).rowCount ?? 0;
      });
    }
    if (o.eventsBefore !== undefined) {
      const r = await this.#query(
        `DELETE FROM events WHERE key IN (SELECT key FROM events e WHERE key < $1 AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.event_key = e.key) ORDER BY key LIMIT $2)`,
        [v7Floor(o.eventsBefore), o.limit],
      );
      result.events = r.rowCount ?? 0;
    }
    if (o.runEventsBefore !== undefined) {
      const r = await this.#query('DELETE FROM run_events WHERE seq IN (SELECT seq FROM run_events WHERE at < $1 ORDER BY seq LIMIT $2)', [o.runEventsBefore, o.limit]);
      result.runEvents = r.rowCount ?? 0;
    }
    if (o.deadLettersBefore !== undefined) {
      const r = await this.#query(
        'DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE last_seen_at < $1 ORDER BY last_seen_at LIMIT $2)',
        [o.deadLettersBefore, o.limit],
      );
      result.deadLetters = r.rowCount ?? 0;
    }
    return result;
  }

  // ---------------------------------------------------------------------------------------------- outbox

  async readRunEvents(afterSeq: number, limit: number, scope?: Scope): Promise<OutboxEvent[]> {
    return (await this.#guard(() => queries.readRunEvents(this.#kysely, afterSeq, limit, scope))).map(toRunEvent);
  }

  async lastRunEventSeq(): Promise<number> {
    const { rows } = await this.#query<{ seq: number }>('SELECT coalesce(max(seq), 0) AS seq FROM run_events');
    return rows[0]?.seq ?? 0;
  }

  async republishRuns(query: RepublishQuery, now: number): Promise<number> {
    let after = '';
    let count = 0;
    for (;;) {
      const page = queries.republishPage(this.#kysely, query, after, REPUBLISH_BATCH).selectAll().forShare().compile();
      // The runs are locked until their run events are written: a change of one waits, and gets a later seq.
      const runs = await this.#transaction(async (c) => {
        const rows = (await c.query<RunRow>(page.sql, page.parameters as unknown[])).rows.map(toRun);
        if (rows.length > 0) {
          const p = new Params();
          await c.query(insertRunEventsSql(p, rows.map((run) => ({ run, at: now })), 'read'), p.values);
        }
        return rows;
      });
      count += runs.length;
      if (runs.length < REPUBLISH_BATCH) return count;
      after = runs[runs.length - 1]!.id;
    }
  }

  // ---------------------------------------------------------------------------------------------- relays

  async acquireRelay(output: string, stream: RelayStream, owner: string, now: number, leaseMs: number): Promise<number | null> {
    await this.#query('INSERT INTO output_cursors (output, stream, seq, owner, lease_until) VALUES ($1, $2, 0, NULL, 0) ON CONFLICT DO NOTHING', [output, stream]);
    const { rows } = await this.#query<{ seq: number }>(
      `UPDATE output_cursors SET owner = $3, lease_until = $4 WHERE output = $1 AND stream = $2 AND (owner IS NULL OR owner = $3 OR lease_until < $5)
       RETURNING seq`,
      [output, stream, owner, now + leaseMs, now],
    );
    return rows[0]?.seq ?? null;
  }

  async advanceRelay(output: string, stream: RelayStream, owner: string, seq: number, now: number, leaseMs: number): Promise<boolean> {
    const r = await this.#query('UPDATE output_cursors SET seq = $4, lease_until = $5 WHERE output = $1 AND stream = $2 AND owner = $3', [output, stream, owner, seq, now + leaseMs]);
    return (r.rowCount ?? 0) > 0;
  }

  async releaseRelay(output: string, stream: RelayStream, owner: string): Promise<void> {
    await this.#query('UPDATE output_cursors SET owner = NULL, lease_until = 0 WHERE output = $1 AND stream = $2 AND owner = $3', [output, stream, owner]);
  }

  async readDeadLetters(afterSeq: number, limit: number): Promise<SequencedDeadLetter[]> {
    const { rows } = await this.#query<DeadLetterRow>('SELECT * FROM dead_letters WHERE seq > $1 ORDER BY seq LIMIT $2', [afterSeq, limit]);
    return rows.map((row) => ({ seq: Number(row.seq), deadLetter: toDeadLetter(row) }));
  }

  async lastDeadLetterSeq(): Promise<number> {
    const { rows } = await this.#query<{ seq: number }>('SELECT coalesce(max(seq), 0) AS seq FROM dead_letters');
    return rows[0]?.seq ?? 0;
  }

  /** The first transaction id not yet given out: every transaction under way now has a smaller one. */
  async visibilityMark(): Promise<number> {
    const { rows } = await this.#query<{ x: string }>('SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS x');
    return Number(rows[0]!.x);
  }

  /** No transaction with an id below the mark is still under way. */
  async visibilitySettled(mark: number): Promise<boolean> {
    const { rows } = await this.#query<{ x: string }>('SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS x');
    return Number(rows[0]!.x) >= mark;
  }

  async query(sql: DialectSql, params: readonly unknown[] = []): Promise<Array<Record<string, unknown>>> {
    return (await this.#query(sql.postgres, [...params])).rows;
  }

  async stats(now: number): Promise<StoreStats> {
    const { rows } = await this.#transaction(async (c) => {
      await c.query(INDEX_SCANS);
      return c.query<{ queued: number; running: number; waiting: number; oldest: number | null; dead_letters: number }>(
        `SELECT
           (SELECT count(*) FROM runs WHERE status = 'queued') AS queued,
           (SELECT count(*) FROM runs WHERE status = 'running' AND lease_owner IS NOT NULL) AS running,
           (SELECT count(*) FROM runs WHERE status = 'running' AND lease_owner IS NULL) AS waiting,
           (SELECT min(available_at) FROM runs WHERE status = 'queued' AND available_at <= $1) AS oldest,
           (SELECT count(*) FROM dead_letters) AS dead_letters`,
        [now],
      );
    });
    const s = rows[0]!;
    return { queued: s.queued, running: s.running, waiting: s.waiting, oldestQueuedAt: s.oldest, deadLetters: s.dead_letters };
  }

  // ------------------------------------------------------------------------------------------- plumbing

  /** One statement, a transaction of its own: run again when PostgreSQL aborts it to break a deadlock. */
  async #query<R extends pg.QueryResultRow = Record<string, unknown>>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    return this.#retrying(() => this.#pool.query<R>(text, values));
  }

  /**
   * Runs `attempt` again, up to TRANSACTION_RETRIES times, when PostgreSQL aborted it to break a deadlock or
   * a serialization conflict: then nothing of it was committed. An attempt is one statement (a transaction of
   * its own) or one `#transaction`.
   */
  async #retrying<T>(attempt: () => Promise<T>): Promise<T> {
    return this.#guard(async () => {
      for (let n = 1; ; n++) {
        try {
          return await attempt();
        } catch (err) {
          if (n <= TRANSACTION_RETRIES && isConflict(err)) continue;
          throw err;
        }
      }
    });
  }

  /** Runs `fn` in one transaction; tried again when PostgreSQL aborted it to break a deadlock. */
  async #transaction<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    return this.#retrying(async () => {
      const c = await this.#pool.connect();
      let broken: Error | undefined;
      // A connection lost while checked out emits 'error' on the client, outside any query: without a
      // listener that would crash the process. The transaction fails at its next query instead.
      const lost = (e: Error) => (broken ??= e);
      c.on('error', lost);
      try {
        await c.query('BEGIN');
        const out = await fn(c);
        await c.query('COMMIT');
        return out;
      } catch (err) {
        // A connection that stopped answering is not asked to roll back (it would wait as long again): it is closed.
        if (isReadTimeout(err)) broken = err as Error;
        else await c.query('ROLLBACK').catch((e: Error) => (broken = e));
        throw err;
      } finally {
        // A connection that could not even roll back is destroyed, not returned to the pool.
        c.off('error', lost);
        c.release(broken);
      }
    });
  }

  /**
   * Connection failures become `store_unavailable` (retryable), with the driver's error as the cause; a text
   * PostgreSQL cannot hold (U+0000, an unpaired surrogate in JSON) becomes `bad_request`, never a 500.
   */
  async #guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === '22021' || code === '22P05') {
        throw new DispatcherError('bad_request', `a text value holds a character PostgreSQL cannot store (U+0000 or an unpaired surrogate): ${describe(err)}`, { cause: err });
      }
      if (err instanceof DispatcherError || !isUnavailable(err)) throw err;
      throw new DispatcherError('store_unavailable', `PostgreSQL at ${this.#where} is unavailable: ${describe(err)}`, { cause: err });
    }
  }
}

// ------------------------------------------------------------------------------------------------- SQL

/**
 * `(status = 'x') IS TRUE`: the same test as `status = 'x'`, written so that the planner cannot use it to
 * reach a run through a partial index on status (`runs_queue`, `runs_leases`, `runs_running_route`,
 * `runs_deadlines`). For runs named by id that matters: the planner counts only live rows, so those small
 * indexes look cheaper than the primary key, but each also holds an entry for every earlier version of a
 * run in that status until VACUUM removes it, and a bitmap scan reads them all without marking them dead:
 * after 200,000 runs, a bitmap scan of `runs_leases` read 199,429 entries to find the 1,000 running runs
 * (auto_explain). By primary key, the cost of a batch does not grow with the table.
 */
const STATUS_IS = (status: 'queued' | 'running', column = 'status'): string => `(${column} = '${status}') IS TRUE`;

/**
 * The runs of `ids` that `owner` holds running, locked, skipping any that another transaction holds: for the
 * statements a worker sends about its runs besides their outcomes (lease renewals, the release at shutdown).
 * They name the runs in flight, and a batch of outcomes in flight names some of the same runs; an UPDATE
 * locks rows in the order its plan meets them, so the two could each hold a run the other waits for, and one
 * of them fail as a deadlock (seen with three processes under load: the outcomes failed, and their runs waited
 * for their leases to expire). A statement that never waits for a row lock cannot be part of a deadlock.
 */
const OWN_RUNS = (ids: string, owner: string): string =>
  `SELECT id FROM runs WHERE id = ANY(${ids}::text[]) AND lease_owner = ${owner} AND ${STATUS_IS('running')} FOR UPDATE SKIP LOCKED`;

/**
 * For the rest of a transaction that counts runs through those partial indexes (the backlog, a limited
 * route's running runs): index scans instead of bitmap scans. An index scan marks the entries of dead row
 * versions it meets, so that the next scan skips them; a bitmap scan reads them again every time.
 */
const INDEX_SCANS = 'SET LOCAL enable_bitmapscan = off';

/**
 * `INSERT INTO run_events …` for these runs, as they are after the change, in this order (so `seq` follows
 * it). With `onlyIdsFrom`, only for the runs whose ids the named CTE returned (the changes that applied).
 */
function insertRunEventsSql(p: Params, events: Array<{ run: Run; at: number }>, eventType: RunEventType, onlyIdsFrom?: string): string {
  return `INSERT INTO run_events (run_id, event_type, status, service, org_id, at, payload)
    SELECT ev.run_id, ${p.add(eventType, 'text')}, ev.status, ev.service, ev.org_id, ev.at, ev.payload
    FROM ROWS FROM (unnest(${p.add(events.map((e) => e.run.id), 'text[]')}, ${p.add(events.map((e) => e.run.status), 'text[]')},
      ${p.add(events.map((e) => e.run.service), 'text[]')}, ${p.add(events.map((e) => e.run.orgId), 'text[]')},
      ${p.add(events.map((e) => e.at), 'bigint[]')}), json_array_elements(${p.add(jsonArray(events.map((e) => runEventPayload(e.run, eventType))), 'json')}))
      WITH ORDINALITY AS ev(run_id, status, service, org_id, at, payload, ord)
    ${onlyIdsFrom === undefined ? '' : `WHERE ev.run_id IN (SELECT id FROM ${onlyIdsFrom})`}
    ORDER BY ev.ord`;
}

/** `INSERT INTO attempts …`, replacing an attempt already recorded with the same number (as SQLite does). */
function insertAttemptsSql(p: Params, attempts: Attempt[], onlyIdsFrom?: string): string {
  return `INSERT INTO attempts (run_id, n, started_at, ended_at, outcome, error_code, error_message, http_status, response)
    SELECT at_.* FROM unnest(${p.add(attempts.map((a) => a.runId), 'text[]')}, ${p.add(attempts.map((a) => a.n), 'int[]')},
      ${p.add(attempts.map((a) => a.startedAt), 'bigint[]')}, ${p.add(attempts.map((a) => a.endedAt), 'bigint[]')},
      ${p.add(attempts.map((a) => a.outcome), 'text[]')}, ${p.add(attempts.map((a) => a.errorCode), 'text[]')},
      ${p.add(attempts.map((a) => pgText(a.errorMessage)), 'text[]')}, ${p.add(attempts.map((a) => a.httpStatus), 'int[]')},
      ${p.add(attempts.map((a) => pgText(a.response)), 'text[]')})
      AS at_(run_id, n, started_at, ended_at, outcome, error_code, error_message, http_status, response)
    ${onlyIdsFrom === undefined ? '' : `WHERE at_.run_id IN (SELECT id FROM ${onlyIdsFrom})`}
    ON CONFLICT (run_id, n) DO UPDATE SET ended_at = excluded.ended_at, outcome = excluded.outcome,
      error_code = excluded.error_code, error_message = excluded.error_message, http_status = excluded.http_status,
      response = excluded.response`;
}

async function insertAttempts(c: Queryable, attempts: Attempt[]): Promise<void> {
  if (attempts.length === 0) return;
  const p = new Params();
  await c.query(insertAttemptsSql(p, attempts), p.values);
}

/**
 * Moves each run from `from` to `to` if it is still in `from`'s status, and writes its run event; returns
 * the ids of the runs that moved. The caller holds the rows locked, so in practice all of them move.
 */
async function setStates(c: Queryable, changes: Array<{ from: Run; to: Run }>, at: number): Promise<Set<string>> {
  if (changes.length === 0) return new Set();
  const to = changes.map((ch) => ({ ...ch.to, leaseOwner: null, leaseUntil: null }));
  const p = new Params();
  const { rows } = await c.query<{ run_id: string }>(
    `WITH t AS (
       SELECT * FROM unnest(${p.add(to.map((r) => r.id), 'text[]')}, ${p.add(changes.map((ch) => ch.from.status), 'text[]')},
         ${p.add(changes.map((ch) => ch.from.leaseOwner ?? ''), 'text[]')},
         ${p.add(to.map((r) => r.status), 'text[]')}, ${p.add(to.map((r) => r.updatedAt), 'bigint[]')},
         ${p.add(to.map((r) => r.availableAt), 'bigint[]')}, ${p.add(to.map((r) => r.deadlineAt), 'bigint[]')},
         ${p.add(to.map((r) => r.expiresAt), 'bigint[]')}, ${p.add(to.map((r) => r.attempts), 'int[]')}, ${p.add(to.map((r) => r.maxAttempts), 'int[]')},
         ${p.add(to.map((r) => r.correlationId), 'text[]')}, ${p.add(to.map((r) => r.error?.code ?? null), 'text[]')},
         ${p.add(to.map((r) => pgText(r.error?.message ?? null)), 'text[]')}, ${p.add(to.map((r) => jsonOrNull(r.result)), 'jsonb[]')},
         ${p.add(to.map((r) => r.finishedAt), 'bigint[]')})
       AS t(id, from_status, from_owner, status, updated_at, available_at, deadline_at, expires_at, attempts, max_attempts, correlation_id,
         error_code, error_message, result, finished_at)
     ),
     u AS (
       UPDATE runs r SET status = t.status, updated_at = t.updated_at, available_at = t.available_at, deadline_at = t.deadline_at,
         expires_at = t.expires_at, attempts = t.attempts, max_attempts = t.max_attempts, lease_owner = NULL, lease_until = NULL,
         correlation_id = t.correlation_id, error_code = t.error_code, error_message = t.error_message, result = t.result, finished_at = t.finished_at
       FROM t WHERE r.id = t.id AND r.status = t.from_status AND coalesce(r.lease_owner, '') = t.from_owner
       RETURNING r.id
     )
     ${insertRunEventsSql(p, to.map((run) => ({ run, at })), 'update', 'u')}
     RETURNING run_id`,
    p.values,
  );
  return new Set(rows.map((r) => r.run_id));
}

/** `INSERT INTO run_events …` for host events: each names its host. */
async function insertHostEvents(c: Queryable, events: Array<{ host: Host; eventType: RunEventType }>): Promise<void> {
  if (events.length === 0) return;
  const p = new Params();
  await c.query(
    `INSERT INTO run_events (run_id, host_id, event_type, status, service, org_id, at, payload)
     SELECT ev.run_id, ev.host_id, ev.event_type, ev.status, ev.service, ev.org_id, ev.at, ev.payload
     FROM ROWS FROM (unnest(${p.add(events.map((e) => e.host.runId), 'text[]')}, ${p.add(events.map((e) => e.host.id), 'text[]')},
       ${p.add(events.map((e) => e.eventType), 'text[]')}, ${p.add(events.map((e) => e.host.status), 'text[]')},
       ${p.add(events.map((e) => e.host.service), 'text[]')}, ${p.add(events.map((e) => e.host.orgId), 'text[]')},
       ${p.add(events.map((e) => e.host.updatedAt), 'bigint[]')}), json_array_elements(${p.add(jsonArray(events.map((e) => hostStateJson(e.host))), 'json')}))
       WITH ORDINALITY AS ev(run_id, host_id, event_type, status, service, org_id, at, payload, ord)
     ORDER BY ev.ord`,
    p.values,
  );
}

/** Writes hosts as `upsertedHost` or `endedHosts` left them, with their host events. */
async function saveHosts(c: Queryable, hosts: Array<{ host: Host; created: boolean }>): Promise<void> {
  if (hosts.length === 0) return;
  const h = hosts.map((x) => x.host);
  const p = new Params();
  await c.query(
    `INSERT INTO hosts (id, run_id, name, status, log, sequence, details, service, org_id, created_at, updated_at)
     SELECT * FROM unnest(${p.add(h.map((x) => x.id), 'text[]')}, ${p.add(h.map((x) => x.runId), 'text[]')}, ${p.add(h.map((x) => pgText(x.name)), 'text[]')},
       ${p.add(h.map((x) => x.status), 'text[]')}, ${p.add(h.map((x) => pgText(x.log)), 'text[]')}, ${p.add(h.map((x) => x.sequence), 'bigint[]')},
       ${p.add(h.map((x) => pgJson(JSON.stringify(x.details))), 'jsonb[]')}, ${p.add(h.map((x) => x.service), 'text[]')}, ${p.add(h.map((x) => x.orgId), 'text[]')},
       ${p.add(h.map((x) => x.createdAt), 'bigint[]')}, ${p.add(h.map((x) => x.updatedAt), 'bigint[]')})
     ON CONFLICT (id) DO UPDATE SET status = excluded.status, log = excluded.log, sequence = excluded.sequence, details = excluded.details,
       updated_at = excluded.updated_at`,
    p.values,
  );
  await insertHostEvents(c, hosts.map((x) => ({ host: x.host, eventType: x.created ? 'create' : 'update' })));
}

/**
 * One writer of a run's hosts at a time, until the transaction ends (a host not yet created cannot be locked
 * by row): upserts, and the end of a run that takes its hosts with it. In run order, so that two writers of
 * several runs cannot deadlock; neither holds a run's row when it asks (the sweeper and cancel hold the rows
 * of the runs they end, but upserts never lock a run), so this lock and the row locks cannot form a cycle.
 */
async function lockHostsOf(c: Queryable, runIds: string[]): Promise<void> {
  await c.query(`SELECT pg_advisory_xact_lock(hashtext('hosts:' || r)) FROM unnest($1::text[]) AS r ORDER BY r`, [[...new Set(runIds)].sort(compare)]);
}

/** The hosts of runs that ended by themselves (timeout, canceled) end with them. */
async function endHosts(c: Queryable, runIds: string[], status: 'timeout' | 'canceled', at: number): Promise<void> {
  if (runIds.length === 0) return;
  // The lock `upsertHosts` takes: an upsert under way finishes first, and this sees what it wrote.
  await lockHostsOf(c, runIds);
  const rows = (
    await c.query<HostRow>(`SELECT * FROM hosts WHERE run_id = ANY($1::text[]) AND status IN ('queued', 'running') ORDER BY id FOR UPDATE`, [runIds])
  ).rows;
  await saveHosts(c, endedHosts(rows.map(toHost), status, at).map((host) => ({ host, created: false })));
}

/**
 * Inserts dead letters, or counts another occurrence of one already kept (same fingerprint); returns their
 * ids in the order given. One `INSERT … ON CONFLICT DO UPDATE` may not touch a row twice, so a batch that
 * holds the same fingerprint more than once is written in rounds, each with every fingerprint once.
 */
/** The envelopes of the runs' events, by event key: what a run's dead letter holds. */
async function eventEnvelopes(c: Queryable, runs: readonly Run[]): Promise<Map<string, string>> {
  if (runs.length === 0) return new Map();
  const { rows } = await c.query<{ key: string; envelope: string }>('SELECT key, envelope::text AS envelope FROM events WHERE key = ANY($1::text[])', [[...new Set(runs.map((r) => r.eventKey))]]);
  return new Map(rows.map((r) => [r.key, r.envelope]));
}

async function insertDeadLetters(c: Queryable, items: NewDeadLetter[]): Promise<string[]> {
  const fingerprints = items.map(fingerprint);
  const ids: string[] = new Array(items.length);
  let pending = items.map((_, i) => i);
  while (pending.length > 0) {
    const inRound = new Set<string>();
    const round: number[] = [];
    const later: number[] = [];
    for (const i of pending) {
      if (inRound.has(fingerprints[i]!)) later.push(i);
      else {
        inRound.add(fingerprints[i]!);
        round.push(i);
      }
    }
    // Fingerprint order: two batches upserting the same dead letters lock them in the same order.
    round.sort((a, b) => compare(fingerprints[a]!, fingerprints[b]!));
    const d = round.map((i) => items[i]!);
    const { rows } = await c.query<{ id: string; fingerprint: string }>(
      `INSERT INTO dead_letters (id, origin, source, reason, error, details, raw, raw_truncated, content_type, headers,
         run_id, event_key, service, org_id, fingerprint, attempts, first_seen_at, last_seen_at, replayed_at)
       SELECT id, origin, source, reason, error, details, raw, raw_truncated, content_type, headers,
         run_id, event_key, service, org_id, fingerprint, 1, at, at, NULL
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::bytea[], $8::boolean[], $9::text[],
         $10::jsonb[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::bigint[])
       AS t(id, origin, source, reason, error, details, raw, raw_truncated, content_type, headers, run_id, event_key, service,
         org_id, fingerprint, at)
       ON CONFLICT (fingerprint) DO UPDATE SET attempts = dead_letters.attempts + 1, last_seen_at = excluded.last_seen_at,
         reason = excluded.reason, error = excluded.error, details = excluded.details, replayed_at = NULL
       RETURNING id, fingerprint`,
      [
        d.map(() => uuidv7()),
        d.map((x) => x.origin),
        d.map((x) => pgText(x.source)),
        d.map((x) => pgText(x.reason)),
        d.map((x) => pgText(x.error)),
        d.map((x) => (x.details === undefined ? null : jsonOrNull(x.details))),
        d.map((x) => x.raw),
        d.map((x) => x.rawTruncated === true),
        d.map((x) => pgText(x.contentType ?? null)),
        d.map((x) => pgJson(JSON.stringify(x.headers ?? {}))),
        d.map((x) => x.runId ?? null),
        d.map((x) => x.eventKey ?? null),
        d.map((x) => x.service),
        d.map((x) => x.orgId),
        round.map((i) => fingerprints[i]!),
        d.map((x) => x.at),
      ],
    );
    const byFingerprint = new Map(rows.map((r) => [r.fingerprint, r.id]));
    for (const i of round) ids[i] = byFingerprint.get(fingerprints[i]!)!;
    pending = later;
  }
  return ids;
}

async function lockRun(c: Queryable, id: string, scope: Scope | undefined): Promise<Run> {
  const row = (await c.query<RunRow>(`SELECT ${RUN_COLUMNS} FROM runs WHERE id = $1 FOR UPDATE`, [id])).rows[0];
  if (row === undefined || !inScope(row, scope)) throw new DispatcherError('not_found', `no run ${id}`);
  return toRun(row);
}

// ---------------------------------------------------------------------------------------------- helpers

function jsonOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : pgJson(JSON.stringify(value));
}

const UNSTORABLE_TEXT = /[\u0000\ud800-\udfff]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
/** `\u0000` or a lone-surrogate escape, not itself escaped (preceded by an even number of backslashes). */
const UNSTORABLE_ESCAPE =
  /(?<!\\)((?:\\\\)*)\\u(?:0000|d[89ab][0-9a-f]{2}(?!\\ud[c-f][0-9a-f]{2})|(?<!\\ud[89ab][0-9a-f]{2}\\u)d[c-f][0-9a-f]{2})/gi;

/**
 * Text as PostgreSQL can store it: `text` cannot hold U+0000, so it becomes U+FFFD (as a lone surrogate
 * already does on its way to UTF-8). What actions and parsers report (a response body cut in the middle
 * of a surrogate pair, a JSON error quoting a NUL byte) must not fail a whole batch of outcomes or dead
 * letters; SQLite stores such text as it is.
 */
function pgText(value: string): string;
function pgText(value: string | null): string | null;
function pgText(value: string | null): string | null {
  if (value === null || !UNSTORABLE_TEXT.test(value)) return value;
  return value.replace(/\u0000/g, '\ufffd').replace(LONE_SURROGATE, '\ufffd');
}

/** JSON text as `jsonb` accepts it: `\u0000` and lone-surrogate escapes (JSON.stringify writes both) become `\ufffd`. */
function pgJson(json: string): string;
function pgJson(json: string | null): string | null;
function pgJson(json: string | null): string | null {
  if (json === null || !json.includes('\\u')) return json;
  return json.replace(UNSTORABLE_ESCAPE, '$1\\ufffd');
}

function prefixed(alias: string, columns: string): string {
  return columns
    .split(', ')
    .map((c) => `${alias}.${c}`)
    .join(', ');
}

/** Byte-order comparison (as the "C" collation and JS `<` on ASCII ids). */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareIdentity(a: IntakeItem, b: IntakeItem): number {
  return compare(a.record.event.source, b.record.event.source) || compare(a.record.event.id, b.record.event.id);
}

const UNAVAILABLE_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'EAI_AGAIN']);

/**
 * The database cannot be reached or is going away: a network error, a refused or timed-out connection,
 * SQLSTATE class 08 (connection exception), 57P01–57P03 (shutdown, cannot connect now), 53300 (too many
 * connections).
 */
function isUnavailable(err: unknown): boolean {
  if (err instanceof AggregateError && err.errors.some(isUnavailable)) return true;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') {
    if (UNAVAILABLE_NODE_CODES.has(code) || code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || code === '53300') {
      return true;
    }
  }
  const message = err instanceof Error ? err.message : '';
  return isReadTimeout(err) || /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(message);
}

/** The driver's error for a statement not answered within `query_timeout`. */
function isReadTimeout(err: unknown): boolean {
  return err instanceof Error && err.message === 'Query read timeout';
}

/** Migrations wait this long for each statement (a day: in effect, as long as they need). */
const MIGRATION_TIMEOUT_MS = 86_400_000;

/** SQLSTATE 40P01 (deadlock detected) or 40001 (serialization failure): the transaction can simply run again. */
function isConflict(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '40P01' || code === '40001';
}

function describe(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) return err.errors.map(describe).join('; ');
  return err instanceof Error ? err.message || String((err as { code?: unknown }).code ?? err.name) : String(err);
}

/** The connection string without its password, for messages. */
function redact(url: string): string {
  return url.replace(/:[^:@/]*@/, ':***@');
}

/** Creates or changes hosts inside a transaction, with their host events; their runs' hosts locked first. */
async function upsertHostsIn(c: Queryable, hosts: HostUpsert[]): Promise<HostResult[]> {
  const runIds = [...new Set(hosts.map((h) => h.runId))];
  await lockHostsOf(c, runIds);
  const owners = new Map(
    (await c.query<{ id: string; service: string; org_id: string }>('SELECT id, service, org_id FROM runs WHERE id = ANY($1::text[])', [runIds])).rows.map((r) => [
      r.id,
      { service: r.service, orgId: r.org_id },
    ]),
  );
  const stored = new Map(
    (
      await c.query<HostRow>('SELECT h.* FROM hosts h JOIN unnest($1::text[], $2::text[]) AS k(run_id, name) ON h.run_id = k.run_id AND h.name = k.name', [
        hosts.map((h) => h.runId),
        hosts.map((h) => h.name),
      ])
    ).rows.map((row) => [`${row.run_id}\0${row.name}`, toHost(row)]),
  );
  const results: HostResult[] = [];
  const changed: Array<{ host: Host; created: boolean }> = [];
  for (const u of hosts) {
    const key = `${u.runId}\0${u.name}`;
    const existing = stored.get(key) ?? null;
    const owner = owners.get(u.runId);
    if (existing === null && owner === undefined) {
      results.push({ outcome: 'not_found', host: null });
      continue;
    }
    const result = upsertedHost(existing, u, owner ?? existing!, () => newId(u.at));
    results.push(result);
    if (result.outcome !== 'created' && result.outcome !== 'updated') continue;
    stored.set(key, result.host!);
    const earlier = changed.find((x) => x.host.id === result.host!.id);
    if (earlier !== undefined) earlier.host = result.host!;
    else changed.push({ host: result.host!, created: result.outcome === 'created' });
  }
  await saveHosts(c, changed);
  return results;
}
