/**
 * The embedded store: SQLite in one file, in WAL mode, through better-sqlite3.
 *
 * better-sqlite3 is synchronous, and that is what makes it fast: a batch of intake or outcomes is one
 * transaction of prepared statements that runs to the end without yielding, so there is no interleaving to
 * guard against inside one process. One process owns the file (several processes would serialize on the
 * write lock); scale-out is PostgreSQL's job.
 *
 * Durability: `synchronous = NORMAL` in WAL mode survives a crash of the process (what the SIGKILL test
 * checks), and may lose the last transactions on a power loss. `store.url` can ask for `?synchronous=full`.
 */

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { Kysely, SqliteDialect, sql } from 'kysely';
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
  NewRun,
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
import { ENDED_STATUSES_SQL, fingerprint, inScope, intakeAuditEntries, migrationsInOrder, plannedStateJson, REPUBLISH_BATCH, v7Floor } from '../shared.js';
import { SqliteAccess } from './access.js';
import { SqliteInboxes } from './inboxes.js';
import { Checkpointer } from './checkpointer.js';
import { SQLITE_MIGRATIONS } from './migrations.js';

export interface SqliteStoreOptions {
  /** File path, or `:memory:`. */
  path: string;
  synchronous?: 'off' | 'normal' | 'full';
  /** Run WAL checkpoints in a worker thread (default true for files). */
  checkpointWorker?: boolean;
}

/** `sqlite:./data/dispatcher.db`, `sqlite:///abs/path.db`, `sqlite::memory:` → options. */
export function parseSqliteUrl(url: string): SqliteStoreOptions {
  const rest = url.replace(/^sqlite:(\/\/)?/, '');
  const [path, query] = rest.split('?', 2) as [string, string | undefined];
  const params = new URLSearchParams(query ?? '');
  const sync = params.get('synchronous')?.toLowerCase();
  return {
    path: path === '' ? ':memory:' : path,
    ...(sync === 'off' || sync === 'normal' || sync === 'full' ? { synchronous: sync } : {}),
  };
}

/** A run committed as queued by intake, as `#queued` keeps it. */
interface QueuedRun {
  record: IntakeItem['record'];
  run: NewRun;
  envelope: string;
}

const QUEUED_MAX_RUNS = 65_536;
const QUEUED_MAX_BYTES = 32 * 1024 * 1024;

const RUN_COLUMNS =
  'id, event_key, event_type, route, action, action_type, status, attempts, max_attempts, created_at, updated_at, ' +
  'available_at, deadline_at, expires_at, lease_owner, lease_until, ordering_key, correlation_id, labels, service, ' +
  'org_id, error_code, error_message, result, finished_at';

export class SqliteStore implements Store {
  readonly dialect = 'sqlite' as const;
  readonly access: SqliteAccess;
  readonly inboxes: SqliteInboxes;
  readonly #db: Database.Database;
  readonly #kysely: Kysely<queries.Database>;
  readonly #ops: queries.DialectOps = {
    labelsContain: (labels, column = 'labels') =>
      sql.join(
        Object.entries(labels).map(([k, v]) => sql`json_extract(${sql.ref(column)}, ${'$."' + k.replace(/"/g, '') + '"'}) = ${v}`),
        sql` AND `,
      ) as never,
  };
  #statements: ReturnType<SqliteStore['prepare']> | undefined;
  #checkpointer: Checkpointer | undefined;
  #tx: Database.Transaction<(f: () => unknown) => unknown> | undefined;
  /**
   * The seq the next run event gets. `run_events.seq` is given here, not by AUTOINCREMENT (which reads
   * and writes `sqlite_sequence` for every insert): read once per write transaction, under the write lock,
   * from the highest seq stored or ever pruned, and counted up in memory.
   */
  #nextSeq = 1;
  #nested: Database.Transaction<(f: () => unknown) => unknown> | undefined;
  #writes: Array<{ fn: () => unknown; resolve: (value: unknown) => void; reject: (err: unknown) => void }> = [];
  #writeScheduled = false;
  /**
   * Runs this store committed as queued at intake and not yet claimed, with what a claim needs of them
   * (the planned run and its event as JSON text): a claim of one of them reads only the queue index, not
   * the run's row and its event's. Only runs untouched since intake are here: every other change of a
   * queued run (cancel, sweep) takes it out. Bounded in count and bytes; what does not fit is read back.
   */
  readonly #queued = new Map<string, QueuedRun>();
  #queuedBytes = 0;
  readonly #path: string;
  readonly #checkpointWorker: boolean;

  constructor(options: SqliteStoreOptions) {
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
    try {
      this.#db = new Database(options.path);
    } catch (err) {
      throw new DispatcherError('store_unavailable', `cannot open SQLite database ${options.path}: ${(err as Error).message}`, { cause: err });
    }
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma(`synchronous = ${options.synchronous ?? 'normal'}`);
    this.#db.pragma('busy_timeout = 5000');
    this.#db.pragma('cache_size = -65536');
    this.#db.pragma('temp_store = memory');
    this.#db.pragma('foreign_keys = off');
    this.#path = options.path;
    this.#checkpointWorker = options.checkpointWorker ?? options.path !== ':memory:';
    // With the checkpoint worker, the automatic checkpoint is only a safety net (about 256 MiB of WAL).
    if (this.#checkpointWorker) this.#db.pragma('wal_autocheckpoint = 65536');
    this.#kysely = new Kysely({ dialect: new SqliteDialect({ database: this.#db }) });
    this.access = new SqliteAccess(this.#db, (fn) => this.#write(fn));
    this.inboxes = new SqliteInboxes(this.#db, (fn) => this.#write(fn));
  }

  async migrate(extra: readonly OwnedMigrations[] = []): Promise<void> {
    this.#db.exec('CREATE TABLE IF NOT EXISTS dispatcher_migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)');
    const applied = new Set(
      (this.#db.prepare('SELECT name FROM dispatcher_migrations').all() as Array<{ name: string }>).map((r) => r.name),
    );
    const apply = this.#db.transaction((name: string, statements: readonly string[]) => {
      for (const statement of statements) this.#db.exec(statement);
      this.#db.prepare('INSERT INTO dispatcher_migrations (name, applied_at) VALUES (?, ?)').run(name, Date.now());
    });
    for (const [name, statements] of migrationsInOrder(SQLITE_MIGRATIONS, extra.map((m) => ({ owner: m.owner, migrations: m.sqlite })))) {
      if (!applied.has(name)) apply.immediate(name, statements);
    }
    this.#statements = this.prepare();
    if (this.#checkpointWorker && this.#checkpointer === undefined) {
      this.#checkpointer = new Checkpointer(this.#path, 200, (message) => {
        process.emitWarning(`SQLite checkpoint failed: ${message}`);
      });
    }
  }

  async ping(): Promise<void> {
    this.#db.prepare('SELECT 1').get();
  }

  async close(): Promise<void> {
    if (this.#db.open && this.#statements !== undefined) this.#flushWrites();
    await this.#checkpointer?.stop();
    this.#checkpointer = undefined;
    if (this.#db.open) this.#db.close();
  }

  /** Prepared once after migration: every hot-path statement. */
  private prepare() {
    const db = this.#db;
    return {
      insertEvent: db.prepare(
        `INSERT INTO events (key, source, id, type, topic, subject, envelope, input, hops, service, org_id, received_at, run_count)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, id) DO NOTHING`,
      ),
      eventKeyByIdentity: db.prepare('SELECT key FROM events WHERE source = ? AND id = ?').pluck(),
      insertRun: db.prepare(
        `INSERT INTO runs (${RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, NULL, NULL, NULL, NULL)`,
      ),
      insertRunEvent: db.prepare(
        'INSERT INTO run_events (seq, run_id, event_type, status, service, org_id, at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      insertHostEvent: db.prepare(
        'INSERT INTO run_events (seq, run_id, host_id, event_type, status, service, org_id, at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      runByCorrelation: db.prepare(`SELECT ${RUN_COLUMNS} FROM runs WHERE correlation_id = ? AND org_id = ? ORDER BY id DESC LIMIT 1`),
      hostByName: db.prepare('SELECT * FROM hosts WHERE run_id = ? AND name = ?'),
      hostById: db.prepare('SELECT * FROM hosts WHERE id = ?'),
      hostsUnderWay: db.prepare(`SELECT * FROM hosts WHERE run_id = ? AND status IN ('queued', 'running')`),
      insertHost: db.prepare(
        `INSERT INTO hosts (id, run_id, name, status, log, sequence, details, service, org_id, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      updateHost: db.prepare('UPDATE hosts SET status = ?, log = ?, sequence = ?, details = ?, updated_at = ? WHERE id = ?'),
      lastRunEventSeq: db
        .prepare('SELECT max(coalesce((SELECT max(seq) FROM run_events), 0), (SELECT last FROM run_event_seq))')
        .pluck(),
      keepRunEventSeq: db.prepare('UPDATE run_event_seq SET last = max(last, ?)'),
      selectClaimable: db.prepare(
        `SELECT r.*, e.envelope AS envelope, e.hops AS hops FROM runs r JOIN events e ON e.key = r.event_key
         WHERE r.status = 'queued' AND r.available_at <= ? AND r.route NOT IN (SELECT value FROM json_each(?))
           AND (r.ordering_key IS NULL OR NOT EXISTS (
             SELECT 1 FROM runs p WHERE p.ordering_key = r.ordering_key AND p.status IN ('queued', 'running') AND p.id < r.id))
         ORDER BY r.available_at, r.id LIMIT ?`,
      ),
      // The claimable queued runs, from the queue index alone (it covers this query).
      claimableIds: db
        .prepare(
          `SELECT r.id FROM runs r WHERE r.status = 'queued' AND r.available_at <= ?
             AND (r.ordering_key IS NULL OR NOT EXISTS (
               SELECT 1 FROM runs p WHERE p.ordering_key = r.ordering_key AND p.status IN ('queued', 'running') AND p.id < r.id))
           ORDER BY r.available_at, r.id LIMIT ?`,
        )
        .pluck(),
      claimableById: db.prepare(`SELECT r.*, e.envelope AS envelope, e.hops AS hops FROM runs r JOIN events e ON e.key = r.event_key WHERE r.id = ?`),
      // Runs holding a lease: a run waiting for a callback holds no slot of its route's concurrency limit.
      runningByRoute: db.prepare(`SELECT route, count(*) AS n FROM runs WHERE status = 'running' AND lease_owner IS NOT NULL GROUP BY route`),
      claim: db.prepare(
        `UPDATE runs SET status = 'running', attempts = attempts + 1, lease_owner = ?, lease_until = ?, updated_at = ?
         WHERE id = ? AND status = 'queued'`,
      ),
      renew: db.prepare(`UPDATE runs SET lease_until = ? WHERE id = ? AND lease_owner = ? AND status = 'running'`),
      finish: db.prepare(
        `UPDATE runs SET status = ?, updated_at = ?, available_at = ?, deadline_at = ?, lease_owner = NULL, lease_until = NULL,
           correlation_id = ?, error_code = ?, error_message = ?, result = ?, finished_at = ?
         WHERE id = ? AND status = 'running' AND lease_owner = ?`,
      ),
      insertAttempt: db.prepare(
        `INSERT INTO attempts (run_id, n, started_at, ended_at, outcome, error_code, error_message, http_status, response)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, n) DO UPDATE SET ended_at = excluded.ended_at,
           outcome = excluded.outcome, error_code = excluded.error_code, error_message = excluded.error_message,
           http_status = excluded.http_status, response = excluded.response`,
      ),
      release: db.prepare(
        `UPDATE runs SET status = 'queued', attempts = max(attempts - 1, 0), lease_owner = NULL, lease_until = NULL,
           available_at = ?, updated_at = ? WHERE id = ? AND status = 'running' AND lease_owner = ?`,
      ),
      selectRun: db.prepare(`SELECT ${RUN_COLUMNS} FROM runs WHERE id = ?`),
      expiredLeases: db.prepare(
        `SELECT ${RUN_COLUMNS} FROM runs WHERE status = 'running' AND lease_owner IS NOT NULL AND lease_until < ? LIMIT ?`,
      ),
      eventEnvelope: db.prepare(`SELECT envelope FROM events WHERE key = ?`).pluck(),
      expiredDeadlines: db.prepare(
        `SELECT ${RUN_COLUMNS} FROM runs WHERE status IN ('queued', 'running') AND deadline_at < ? LIMIT ?`,
      ),
      setState: db.prepare(
        `UPDATE runs SET status = ?, updated_at = ?, available_at = ?, deadline_at = ?, expires_at = ?, attempts = ?, max_attempts = ?,
           lease_owner = NULL, lease_until = NULL, correlation_id = ?, error_code = ?, error_message = ?, result = ?, finished_at = ?
         WHERE id = ? AND status = ? AND coalesce(lease_owner, '') = ?`,
      ),
      insertDeadLetter: db.prepare(
        `INSERT INTO dead_letters (id, origin, source, reason, error, details, raw, raw_truncated, content_type, headers,
           run_id, event_key, service, org_id, fingerprint, attempts, first_seen_at, last_seen_at, replayed_at, seq)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, NULL, (SELECT last + 1 FROM dead_letter_seq))
         ON CONFLICT (fingerprint) DO UPDATE SET attempts = dead_letters.attempts + 1, last_seen_at = excluded.last_seen_at,
           reason = excluded.reason, error = excluded.error, details = excluded.details, replayed_at = NULL
         RETURNING id, seq`,
      ),
      keepDeadLetterSeq: db.prepare('UPDATE dead_letter_seq SET last = max(last, ?)'),
      acquireRelay: db.prepare(
        `UPDATE output_cursors SET owner = ?, lease_until = ? WHERE output = ? AND stream = ? AND (owner IS NULL OR owner = ? OR lease_until < ?)
         RETURNING seq`,
      ).pluck(),
      newRelay: db.prepare(`INSERT INTO output_cursors (output, stream, seq, owner, lease_until) VALUES (?, ?, 0, NULL, 0) ON CONFLICT DO NOTHING`),
      advanceRelay: db.prepare(`UPDATE output_cursors SET seq = ?, lease_until = ? WHERE output = ? AND stream = ? AND owner = ?`),
      leaseExpiries: db.prepare(`SELECT count(*) FROM attempts WHERE run_id = ? AND error_code = 'lease_expired'`).pluck(),
      nextAvailable: db.prepare(`SELECT min(available_at) FROM runs WHERE status = 'queued'`).pluck(),
    };
  }

  get #s() {
    if (this.#statements === undefined) throw new DispatcherError('store_unavailable', 'the store is not migrated: call migrate() first');
    return this.#statements;
  }

  #writeRunEvent(run: Run, eventType: RunEventType, at: number): void {
    this.#s.insertRunEvent.run(this.#nextSeq++, run.id, eventType, run.status, run.service, run.orgId, at, runEventPayload(run, eventType));
  }

  #writeHostEvent(host: Host, eventType: RunEventType, at: number): void {
    this.#s.insertHostEvent.run(this.#nextSeq++, host.runId, host.id, eventType, host.status, host.service, host.orgId, at, hostStateJson(host));
  }

  /** Writes a host as `upsertedHost` left it, with its host event. */
  #saveHost(host: Host, created: boolean): void {
    const details = JSON.stringify(host.details);
    if (created) {
      this.#s.insertHost.run(host.id, host.runId, host.name, host.status, host.log, host.sequence, details, host.service, host.orgId, host.createdAt, host.updatedAt);
    } else this.#s.updateHost.run(host.status, host.log, host.sequence, details, host.updatedAt, host.id);
    this.#writeHostEvent(host, created ? 'create' : 'update', host.updatedAt);
  }

  /** The hosts of a run that ended by itself end with it. */
  #endHosts(runId: string, status: 'timeout' | 'canceled', at: number): void {
    for (const host of endedHosts((this.#s.hostsUnderWay.all(runId) as HostRow[]).map(toHost), status, at)) this.#saveHost(host, false);
  }

  async commitIntake(items: IntakeItem[]): Promise<IntakeResult[]> {
    return this.#commitIntake(items);
  }

  readonly #commitIntake = (items: IntakeItem[]): Promise<IntakeResult[]> =>
    this.#write(() => {
      const s = this.#s;
      const results: IntakeResult[] = [];
      const queued: QueuedRun[] = [];
      for (const item of items) {
        const { record, runs } = item;
        const e = record.event;
        const envelope = item.envelope ?? JSON.stringify(e);
        const inserted = s.insertEvent.run(
          record.key,
          e.source,
          e.id,
          e.type,
          typeof e.topic === 'string' ? e.topic : null,
          typeof e.subject === 'string' ? e.subject : null,
          envelope,
          record.input,
          record.hops,
          record.service,
          record.orgId,
          record.receivedAt,
          runs.length,
        );
        if (inserted.changes === 0) {
          results.push({ key: s.eventKeyByIdentity.get(e.source, e.id) as string, status: 'duplicate', runIds: [] });
          continue;
        }
        const runIds: string[] = [];
        for (const r of runs) {
          const labels = JSON.stringify(r.labels);
          const claim = r.claimedBy;
          const status = claim === undefined ? 'queued' : 'running';
          s.insertRun.run(
            r.id, record.key, e.type, r.route, r.action, r.actionType, status, claim === undefined ? 0 : 1, r.maxAttempts,
            record.receivedAt, record.receivedAt, r.availableAt, r.deadlineAt, r.expiresAt, claim?.owner ?? null,
            claim?.leaseUntil ?? null, r.orderingKey, labels, record.service, record.orgId,
          );
          s.insertRunEvent.run(this.#nextSeq++, r.id, 'create', status, record.service, record.orgId, record.receivedAt, plannedStateJson(record, r));
          if (claim === undefined && this.#queued.size < QUEUED_MAX_RUNS && this.#queuedBytes < QUEUED_MAX_BYTES) {
            queued.push({ record, run: r, envelope });
          }
          runIds.push(r.id);
        }
        results.push({ key: record.key, status: 'accepted', runIds });
      }
      this.access.appendAuditInTransaction(intakeAuditEntries(items, results));
      // Kept only once the savepoint is sure to hold: nothing can throw after this.
      for (const q of queued) {
        this.#queued.set(q.run.id, q);
        this.#queuedBytes += q.envelope.length;
      }
      return results;
    }, true);

  /**
   * Coalesced writes: every write that arrives within one turn of the event loop (intake, claims,
   * outcomes, dead letters, lease renewals) is committed in ONE transaction. A commit costs far more
   * than the rows in it (each touched page is written to the WAL), so this is what keeps the embedded
   * store fast under many small requests. Each write runs in its own savepoint: one that throws is rolled
   * back alone and rejects only its own caller.
   */
  #write<T>(fn: () => T, now = false): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#writes.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      // Intake is already a batch that a caller waits on: commit it at once, together with whatever
      // else is waiting, instead of one more turn of the event loop later.
      if (now) this.#flushWrites();
      else if (!this.#writeScheduled) {
        this.#writeScheduled = true;
        setImmediate(this.#flushWrites);
      }
    });
  }

  readonly #flushWrites = (): void => {
    this.#writeScheduled = false;
    const writes = this.#writes;
    this.#writes = [];
    if (writes.length === 0) return;
    const outcomes: Array<{ ok: boolean; value: unknown }> = [];
    try {
      this.#nested ??= this.#db.transaction((f: () => unknown) => f());
      const nested = this.#nested;
      this.#transaction(() => {
        for (const w of writes) {
          const seq = this.#nextSeq;
          try {
            outcomes.push({ ok: true, value: writes.length === 1 ? w.fn() : nested(w.fn) });
          } catch (err) {
            if (writes.length === 1) throw err;
            // Its run events were rolled back with it: their seqs are given again, so that readers see no gap.
            this.#nextSeq = seq;
            outcomes.push({ ok: false, value: err });
          }
        }
      });
    } catch (err) {
      // Runs kept in #queued by a write that was rolled back must not be claimed from it.
      this.#queued.clear();
      this.#queuedBytes = 0;
      for (const w of writes) w.reject(err);
      return;
    }
    for (let i = 0; i < writes.length; i++) {
      const o = outcomes[i]!;
      if (o.ok) writes[i]!.resolve(o.value);
      else writes[i]!.reject(o.value);
    }
  };

  /** Runs `fn` in one IMMEDIATE transaction (takes the write lock up front: no upgrade deadlocks). */
  #transaction<T>(fn: () => T): T {
    this.#tx ??= this.#db.transaction((f: () => unknown) => {
      // The write lock is held from here: no other connection can insert run events until the commit.
      this.#nextSeq = (this.#s.lastRunEventSeq.get() as number) + 1;
      return f();
    });
    return this.#tx.immediate(fn) as T;
  }

  async claimRuns(options: ClaimOptions): Promise<ClaimedRun[]> {
    return this.#write(() => {
      const s = this.#s;
      const { owner, limit, now, leaseMs, routeLimits } = options;
      let room: Map<string, number> | undefined;
      if (routeLimits.size > 0) {
        room = new Map(routeLimits);
        for (const { route, n } of s.runningByRoute.all() as Array<{ route: string; n: number }>) {
          const limitFor = routeLimits.get(route);
          if (limitFor !== undefined) room.set(route, limitFor - n);
        }
      }
      const leaseUntil = now + leaseMs;
      const claimed: ClaimedRun[] = [];
      if (room === undefined) {
        // No concurrency limits: the queue index names the runs, and the runs intake queued are at hand.
        for (const id of s.claimableIds.all(now, limit) as string[]) {
          const queued = this.#takeQueued(id);
          if (queued === undefined) {
            const row = s.claimableById.get(id) as (RunRow & { envelope: string; hops: number }) | undefined;
            if (row !== undefined) this.#claim(toRun(row), row.envelope, row.hops, owner, leaseUntil, now, claimed);
          } else this.#claim(plannedRun(queued.record, queued.run), queued.envelope, queued.record.hops, owner, leaseUntil, now, claimed);
        }
        return claimed;
      }
      // Routes at their limit are left out of the candidates, and the window is read again when it held
      // runs of such a route: otherwise one limited route's backlog could fill every window and starve all
      // other routes. Each pass adds at least one route to `full`, so this ends.
      for (;;) {
        const full = [...room].filter(([, left]) => left <= 0).map(([route]) => route);
        const window = (limit - claimed.length) * 4;
        const candidates = s.selectClaimable.all(now, JSON.stringify(full), window) as Array<RunRow & { envelope: string; hops: number }>;
        let skipped = false;
        for (const row of candidates) {
          if (claimed.length >= limit) break;
          const left = room.get(row.route);
          if (left !== undefined) {
            if (left <= 0) {
              skipped = true;
              continue;
            }
            room.set(row.route, left - 1);
          }
          this.#takeQueued(row.id);
          this.#claim(toRun(row), row.envelope, row.hops, owner, leaseUntil, now, claimed);
        }
        if (!skipped || claimed.length >= limit || candidates.length < window) return claimed;
      }
    });
  }

  /** Claims one queued run (if it still is), writes its run event, and adds it to `claimed`. */
  #claim(run: Run, envelope: string, hops: number, owner: string, leaseUntil: number, now: number, claimed: ClaimedRun[]): void {
    if (this.#s.claim.run(owner, leaseUntil, now, run.id).changes === 0) return;
    run.status = 'running';
    run.attempts += 1;
    run.leaseOwner = owner;
    run.leaseUntil = leaseUntil;
    run.updatedAt = now;
    this.#writeRunEvent(run, 'update', now);
    claimed.push({ run, envelope, hops });
  }

  /** Takes a run out of `#queued`: it is being claimed, or changes otherwise. */
  #takeQueued(id: string): QueuedRun | undefined {
    const queued = this.#queued.get(id);
    if (queued !== undefined) {
      this.#queued.delete(id);
      this.#queuedBytes -= queued.envelope.length;
    }
    return queued;
  }

  async renewLeases(owner: string, runIds: string[], leaseUntil: number): Promise<number> {
    return this.#write(() => {
      let n = 0;
      for (const id of runIds) n += this.#s.renew.run(leaseUntil, id, owner).changes;
      return n;
    });
  }

  async finishRuns(outcomes: RunOutcome[]): Promise<string[]> {
    return this.#write(() => {
      const s = this.#s;
      const applied: string[] = [];
      for (const o of outcomes) {
        const run = finishedRun(o);
        const changed = s.finish.run(
          run.status, run.updatedAt, run.availableAt, run.deadlineAt, run.correlationId, run.error?.code ?? null,
          run.error?.message ?? null, run.result === null || run.result === undefined ? null : JSON.stringify(run.result),
          run.finishedAt, run.id, o.owner,
        ).changes;
        if (changed === 0) continue;
        this.#insertAttempt(o.attempt);
        this.#writeRunEvent(run, 'update', o.at);
        if (o.deadLetter !== undefined) this.#insertDeadLetter(o.deadLetter);
        for (const h of o.hosts ?? []) this.#upsertHost(h);
        applied.push(run.id);
      }
      return applied;
    });
  }

  #insertAttempt(a: Attempt): void {
    this.#s.insertAttempt.run(a.runId, a.n, a.startedAt, a.endedAt, a.outcome, a.errorCode, a.errorMessage, a.httpStatus, a.response);
  }

  async releaseRuns(owner: string, runIds: string[], now: number): Promise<number> {
    return this.#write(() => {
      let n = 0;
      for (const id of runIds) {
        if (this.#s.release.run(now, now, id, owner).changes === 0) continue;
        n += 1;
        this.#writeRunEvent(toRun(this.#s.selectRun.get(id) as RunRow), 'update', now);
      }
      return n;
    });
  }

  async sweep(now: number, limit: number): Promise<SweepResult> {
    return this.#write(() => {
      const s = this.#s;
      const result: SweepResult = { requeued: 0, timedOut: 0, failed: 0 };
      // Deadlines first: a run past its deadline ends as `timeout`, whatever its lease says.
      for (const row of s.expiredDeadlines.all(now, limit) as RunRow[]) {
        const run = toRun(row);
        const { to, attempt, deadLetter } = timedOutRun(run, now, s.eventEnvelope.get(run.eventKey) as string | undefined);
        if (!this.#setState(run, to, now)) continue;
        if (attempt !== null) this.#insertAttempt(attempt);
        this.#insertDeadLetter(deadLetter);
        this.#endHosts(run.id, 'timeout', now);
        result.timedOut += 1;
      }
      for (const row of s.expiredLeases.all(now, limit) as RunRow[]) {
        const run = toRun(row);
        const { attempt, to, deadLetter } = afterLeaseExpiry(run, now, s.leaseExpiries.get(run.id) as number, s.eventEnvelope.get(run.eventKey) as string | undefined);
        this.#insertAttempt(attempt);
        this.#setState(run, to, now);
        if (deadLetter !== undefined) {
          this.#insertDeadLetter(deadLetter);
          result.failed += 1;
        } else result.requeued += 1;
      }
      return result;
    });
  }

  /** Moves `from` to `to` if it is still in `from`'s status and lease; writes the run event. */
  #setState(from: Run, to: Run, now: number): boolean {
    this.#takeQueued(from.id);
    const changed = this.#s.setState.run(
      to.status, to.updatedAt, to.availableAt, to.deadlineAt, to.expiresAt, to.attempts, to.maxAttempts, to.correlationId,
      to.error?.code ?? null, to.error?.message ?? null, to.result === null || to.result === undefined ? null : JSON.stringify(to.result),
      to.finishedAt, from.id, from.status, from.leaseOwner ?? '',
    ).changes;
    if (changed === 0) return false;
    this.#writeRunEvent({ ...to, leaseOwner: null, leaseUntil: null }, 'update', now);
    return true;
  }

  async nextAvailableAt(): Promise<number | null> {
    return (this.#s.nextAvailable.get() as number | null) ?? null;
  }

  async getRun(id: string, scope?: Scope): Promise<Run | null> {
    const row = this.#s.selectRun.get(id) as RunRow | undefined;
    if (row === undefined || !inScope(row, scope)) return null;
    return toRun(row);
  }

  async getRunByCorrelation(orgId: string, correlationId: string): Promise<Run | null> {
    const row = this.#s.runByCorrelation.get(correlationId, orgId) as RunRow | undefined;
    return row === undefined ? null : toRun(row);
  }

  async getAttempts(runId: string): Promise<Attempt[]> {
    return (this.#db.prepare('SELECT * FROM attempts WHERE run_id = ? ORDER BY n').all(runId) as never[]).map(toAttempt);
  }

  async cancelRun(id: string, now: number, scope?: Scope): Promise<Run> {
    return this.#write(() => {
      const run = this.#runInScope(id, scope);
      const canceled = canceledRun(run, now);
      if ('invalid' in canceled) throw new DispatcherError('invalid_state', canceled.invalid);
      this.#setState(run, canceled.to, now);
      if (canceled.attempt !== null) this.#insertAttempt(canceled.attempt);
      this.#endHosts(run.id, 'canceled', now);
      return canceled.to;
    });
  }

  async retryRun(id: string, now: number, extraAttempts: number, deadlineAt: number, scope?: Scope): Promise<Run> {
    return this.#write(() => {
      const run = this.#runInScope(id, scope);
      const retried = retriedRun(run, now, extraAttempts, deadlineAt);
      if ('invalid' in retried) throw new DispatcherError('invalid_state', retried.invalid);
      this.#setState(run, retried.to, now);
      return retried.to;
    });
  }

  async resolveRuns(resolutions: RunResolution[]): Promise<ResolveResult[]> {
    if (resolutions.length === 0) return [];
    return this.#write(() =>
      resolutions.map((r): ResolveResult => {
        const row = (
          r.runId !== undefined ? this.#s.selectRun.get(r.runId) : r.correlationId !== undefined && r.orgId !== undefined ? this.#s.runByCorrelation.get(r.correlationId, r.orgId) : undefined
        ) as RunRow | undefined;
        if (row === undefined) return { outcome: 'not_found', run: null };
        const run = toRun(row);
        const resolved = resolvedRun(run, r);
        if (resolved.outcome !== 'resolved') return { outcome: resolved.outcome, run };
        this.#setState(run, resolved.to, r.at);
        if (resolved.attempt !== null) this.#insertAttempt(resolved.attempt);
        return { outcome: 'resolved', run: resolved.to };
      }),
    );
  }

  async upsertHosts(hosts: HostUpsert[]): Promise<HostResult[]> {
    if (hosts.length === 0) return [];
    return this.#write(() => hosts.map((u) => this.#upsertHost(u)));
  }

  #upsertHost(u: HostUpsert): HostResult {
    const row = this.#s.hostByName.get(u.runId, u.name) as HostRow | undefined;
    let owner: { service: string; orgId: string } | undefined;
    if (row === undefined) {
      const run = this.#s.selectRun.get(u.runId) as RunRow | undefined;
      if (run === undefined) return { outcome: 'not_found', host: null };
      owner = { service: run.service, orgId: run.org_id };
    }
    const existing = row === undefined ? null : toHost(row);
    const result = upsertedHost(existing, u, owner ?? existing!, () => newId(u.at));
    if (result.outcome === 'created' || result.outcome === 'updated') this.#saveHost(result.host!, result.outcome === 'created');
    return result;
  }

  async getHost(id: string, scope?: Scope): Promise<Host | null> {
    const row = this.#s.hostById.get(id) as HostRow | undefined;
    if (row === undefined || !inScope(row, scope)) return null;
    return toHost(row);
  }

  async listHosts(query: HostQuery): Promise<Listing<Host>> {
    const { rows, total } = await queries.listHosts(this.#kysely, this.#ops, query);
    return { items: rows.map(toHost), total };
  }

  #runInScope(id: string, scope: Scope | undefined): Run {
    const row = this.#s.selectRun.get(id) as RunRow | undefined;
    if (row === undefined || !inScope(row, scope)) throw new DispatcherError('not_found', `no run ${id}`);
    return toRun(row);
  }

  async listRuns(query: RunQuery): Promise<Listing<Run>> {
    const { rows, total } = await queries.listRuns(this.#kysely, this.#ops, query);
    return { items: rows.map(toRun), total };
  }

  async getEvent(key: string, scope?: Scope): Promise<EventRecord | null> {
    const row = this.#db.prepare('SELECT * FROM events WHERE key = ?').get(key) as EventRow | undefined;
    if (row === undefined || !inScope(row, scope)) return null;
    return toEventRecord(row);
  }

  async listEvents(query: EventQuery): Promise<Listing<EventRecord>> {
    const { rows, total } = await queries.listEvents(this.#kysely, query);
    return { items: rows.map(toEventRecord), total };
  }

  async addDeadLetters(items: NewDeadLetter[]): Promise<string[]> {
    return this.#write(() => items.map((d) => this.#insertDeadLetter(d)));
  }

  #insertDeadLetter(d: NewDeadLetter): string {
    const row = this.#s.insertDeadLetter.get(
      uuidv7(), d.origin, d.source, d.reason, d.error, d.details === undefined ? null : JSON.stringify(d.details), d.raw,
      d.rawTruncated === true ? 1 : 0, d.contentType ?? null, JSON.stringify(d.headers ?? {}), d.runId ?? null, d.eventKey ?? null,
      d.service, d.orgId, fingerprint(d), d.at, d.at,
    ) as { id: string; seq: number };
    this.#s.keepDeadLetterSeq.run(row.seq);
    return row.id;
  }

  async getDeadLetter(id: string, scope?: Scope): Promise<DeadLetter | null> {
    const row = this.#db.prepare('SELECT * FROM dead_letters WHERE id = ?').get(id) as DeadLetterRow | undefined;
    if (row === undefined || !inScope(row, scope)) return null;
    return toDeadLetter(row);
  }

  async listDeadLetters(query: DeadLetterQuery): Promise<Listing<DeadLetter>> {
    const { rows, total } = await queries.listDeadLetters(this.#kysely, query);
    return { items: rows.map(toDeadLetter), total };
  }

  async markReplayed(id: string, at: number): Promise<void> {
    this.#db.prepare('UPDATE dead_letters SET replayed_at = ? WHERE id = ?').run(at, id);
  }

  async deleteDeadLetter(id: string, scope?: Scope): Promise<boolean> {
    const row = this.#db.prepare('SELECT org_id, service FROM dead_letters WHERE id = ?').get(id) as DeadLetterRow | undefined;
    if (row === undefined || !inScope(row, scope)) return false;
    return this.#db.prepare('DELETE FROM dead_letters WHERE id = ?').run(id).changes > 0;
  }

  async trimDeadLetters(maxCount: number): Promise<number> {
    return this.#db
      .prepare(
        `DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY last_seen_at DESC, id DESC LIMIT -1 OFFSET ?)`,
      )
      .run(maxCount).changes;
  }

  async prune(o: PruneOptions): Promise<PruneResult> {
    const result: PruneResult = { runs: 0, attempts: 0, events: 0, runEvents: 0, deadLetters: 0 };
    const db = this.#db;
    // Each kind in its own write (and so its own short transaction): pruning never holds intake up for long.
    if (o.runsBefore !== undefined) {
      const before = o.runsBefore;
      await this.#write(() => {
        const ids = JSON.stringify(
          db
            // Oldest first, through the primary key: a run's id carries its created_at (NewRun.id).
            .prepare(`SELECT id FROM runs WHERE id < ? AND created_at < ? AND status IN ${ENDED_STATUSES_SQL} AND finished_at < ? ORDER BY id LIMIT ?`)
            .pluck()
            .all(v7Floor(before), before, before, o.limit),
        );
        result.attempts = db.prepare('DELETE FROM attempts WHERE run_id IN (SELECT value FROM json_each(?))').run(ids).changes;
        db.prepare('DELETE FROM hosts WHERE run_id IN (SELECT value FROM json_each(?))').run(ids);
        result.runs = db.prepare('DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?))').run(ids).changes;
      });
    }
    if (o.eventsBefore !== undefined) {
      const bound = v7Floor(o.eventsBefore);
      await this.#write(() => {
        result.events = db
          .prepare(
            `DELETE FROM events WHERE key IN (SELECT key FROM events e WHERE key < ? AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.event_key = e.key) ORDER BY key LIMIT ?)`,
          )
          .run(bound, o.limit).changes;
      });
    }
    if (o.runEventsBefore !== undefined) {
      const before = o.runEventsBefore;
      await this.#write(() => {
        // The highest seq is remembered, so that it is never given again even when no run event is left.
        this.#s.keepRunEventSeq.run(this.#nextSeq - 1);
        result.runEvents = db.prepare('DELETE FROM run_events WHERE seq IN (SELECT seq FROM run_events WHERE at < ? ORDER BY seq LIMIT ?)').run(before, o.limit).changes;
      });
    }
    if (o.deadLettersBefore !== undefined) {
      const before = o.deadLettersBefore;
      await this.#write(() => {
        result.deadLetters = db
          .prepare('DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE last_seen_at < ? ORDER BY last_seen_at LIMIT ?)')
          .run(before, o.limit).changes;
      });
    }
    return result;
  }

  async readRunEvents(afterSeq: number, limit: number, scope?: Scope): Promise<OutboxEvent[]> {
    return (await queries.readRunEvents(this.#kysely, afterSeq, limit, scope)).map(toRunEvent);
  }

  async lastRunEventSeq(): Promise<number> {
    return this.#s.lastRunEventSeq.get() as number;
  }

  async republishRuns(query: RepublishQuery, now: number): Promise<number> {
    let after = '';
    let count = 0;
    for (;;) {
      const page = queries.republishPage(this.#kysely, query, after, REPUBLISH_BATCH).selectAll().compile();
      // Read and written in one write transaction: no change of these runs can come between.
      const runs = await this.#write(() => {
        const rows = (this.#db.prepare(page.sql).all(...(page.parameters as unknown[])) as RunRow[]).map(toRun);
        for (const run of rows) this.#writeRunEvent(run, 'read', now);
        return rows;
      });
      count += runs.length;
      if (runs.length < REPUBLISH_BATCH) return count;
      after = runs[runs.length - 1]!.id;
    }
  }

  async acquireRelay(output: string, stream: RelayStream, owner: string, now: number, leaseMs: number): Promise<number | null> {
    return this.#write(() => {
      this.#s.newRelay.run(output, stream);
      const seq = this.#s.acquireRelay.get(owner, now + leaseMs, output, stream, owner, now) as number | undefined;
      return seq ?? null;
    });
  }

  async advanceRelay(output: string, stream: RelayStream, owner: string, seq: number, now: number, leaseMs: number): Promise<boolean> {
    return this.#write(() => this.#s.advanceRelay.run(seq, now + leaseMs, output, stream, owner).changes > 0);
  }

  async releaseRelay(output: string, stream: RelayStream, owner: string): Promise<void> {
    await this.#write(() => this.#db.prepare('UPDATE output_cursors SET owner = NULL, lease_until = 0 WHERE output = ? AND stream = ? AND owner = ?').run(output, stream, owner));
  }

  async readDeadLetters(afterSeq: number, limit: number): Promise<SequencedDeadLetter[]> {
    const rows = this.#db.prepare('SELECT * FROM dead_letters WHERE seq > ? ORDER BY seq LIMIT ?').all(afterSeq, limit) as DeadLetterRow[];
    return rows.map((row) => ({ seq: Number(row.seq), deadLetter: toDeadLetter(row) }));
  }

  async lastDeadLetterSeq(): Promise<number> {
    return this.#db.prepare('SELECT last FROM dead_letter_seq').pluck().get() as number;
  }

  async visibilityMark(): Promise<number> {
    return 0;
  }

  async visibilitySettled(): Promise<boolean> {
    return true;
  }

  async query(sql: DialectSql, params: readonly unknown[] = []): Promise<Array<Record<string, unknown>>> {
    return this.#write(() => {
      const statement = this.#db.prepare(sql.sqlite);
      if (statement.reader) return statement.all(...params) as Array<Record<string, unknown>>;
      statement.run(...params);
      return [];
    });
  }

  async stats(now: number): Promise<StoreStats> {
    const counts = this.#db
      .prepare(
        `SELECT
           (SELECT count(*) FROM runs WHERE status = 'queued') AS queued,
           (SELECT count(*) FROM runs WHERE status = 'running' AND lease_owner IS NOT NULL) AS running,
           (SELECT count(*) FROM runs WHERE status = 'running' AND lease_owner IS NULL) AS waiting,
           (SELECT min(available_at) FROM runs WHERE status = 'queued' AND available_at <= ?) AS oldest,
           (SELECT count(*) FROM dead_letters) AS dead_letters`,
      )
      .get(now) as { queued: number; running: number; waiting: number; oldest: number | null; dead_letters: number };
    return {
      queued: counts.queued,
      running: counts.running,
      waiting: counts.waiting,
      oldestQueuedAt: counts.oldest,
      deadLetters: counts.dead_letters,
    };
  }
}

