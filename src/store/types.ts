/**
 * The Store: the one port between the core and a database. SQLite (embedded default) and PostgreSQL
 * (scale-out) implement it, and both pass one shared test suite (`test/store.suite.ts`).
 *
 * Every method that changes a run writes its run event (the outbox) in the same transaction, so a run
 * event exists if and only if the change it describes was committed.
 *
 * The hot path is batched: `commitIntake` takes many events at once (group commit), `claimRuns` claims many
 * runs, `finishRuns` records many outcomes, each in one transaction.
 */

import type { AccessStore } from './access.js';
import type { InboxStore } from './inboxes.js';
import type { NewAuditEntry } from '../core/audit.js';
import type { Scope } from '../core/principal.js';
import type {
  Attempt,
  CloudEvent,
  DeadLetter,
  DeadLetterOrigin,
  EventRecord,
  Host,
  OutboxEvent,
  Run,
  RunError,
  RunStatus,
} from '../core/types.js';
import type { Listing, Page, SortDirection, TimeRange } from './paging.js';

export type { Listing, Page, SortDirection, TimeRange } from './paging.js';

/** A run planned at intake, not yet stored. */
export interface NewRun {
  /**
   * A UUIDv7 that carries the time of its event's `receivedAt` (`newId(receivedAt)`), which becomes the run's
   * `created_at`: the stores list runs in creation order by id, and find a `created_at` range as a range of ids.
   */
  id: string;
  route: string;
  action: string;
  actionType: string;
  maxAttempts: number;
  availableAt: number;
  deadlineAt: number;
  expiresAt: number;
  orderingKey: string | null;
  labels: Record<string, string>;
  /**
   * Direct dispatch: the run is stored already claimed (`running`, first attempt started, leased to this
   * worker), so that the worker that took the event in runs it without a claim query. Only for runs with
   * no ordering key and no concurrency limit, and only as many as the worker has room for.
   */
  claimedBy?: { owner: string; leaseUntil: number };
}

export interface IntakeItem {
  record: Omit<EventRecord, 'runCount'>;
  /** The event as JSON text, when the caller already has it (saves serializing it twice). */
  envelope?: string;
  runs: NewRun[];
  /**
   * On the last item of a message whose taking in is audited: the message's audit entry, appended to the
   * chain in the intake transaction, so that the events and the entry are committed together or not at all.
   */
  audit?: IntakeAudit;
}

export interface IntakeAudit {
  /** How many items, ending with this one, the message holds. */
  items: number;
  /** The entry, given the results of the message's items (the stored keys, duplicates included). */
  entry(results: IntakeResult[]): NewAuditEntry;
}

export interface IntakeResult {
  /** The stored event's key: the new one, or the existing one for a duplicate. */
  key: string;
  status: 'accepted' | 'duplicate';
  /** Ids of the runs made; empty for a duplicate. */
  runIds: string[];
}

export interface ClaimOptions {
  /** Who claims: the worker id written as the lease owner. */
  owner: string;
  limit: number;
  now: number;
  leaseMs: number;
  /** Routes with a concurrency limit: at most that many of their runs are `running` at once. */
  routeLimits: ReadonlyMap<string, number>;
}

/** A claimed run, with the event it was planned for. */
export interface ClaimedRun {
  run: Run;
  /** The event, as JSON text: parsed only by the actions that read it. */
  envelope: string;
  hops: number;
}

export interface NewDeadLetter {
  origin: DeadLetterOrigin;
  source: string;
  reason: string;
  error: string;
  details?: unknown;
  raw: Buffer;
  /** The raw bytes were cut to the configured bound. */
  rawTruncated?: boolean;
  contentType?: string | null;
  headers?: Record<string, string>;
  runId?: string | null;
  eventKey?: string | null;
  service: string;
  orgId: string;
  at: number;
}

/**
 * The end of an attempt, as the runner saw it. The store applies it only while the run is still
 * `running` under the same lease owner (a fencing check): a run canceled, swept or claimed by another
 * worker meanwhile is left alone, and the outcome reported as not applied.
 */
export interface RunOutcome {
  /** The run as claimed (its state before this outcome). */
  run: Run;
  owner: string;
  /** `queued` = retry later, `running` = waiting for a callback. */
  status: 'success' | 'failure' | 'queued' | 'running' | 'timeout';
  attempt: Attempt;
  at: number;
  availableAt?: number;
  error?: RunError | null;
  result?: unknown;
  correlationId?: string | null;
  deadlineAt?: number;
  /** For a final failure: the dead letter to keep. */
  deadLetter?: NewDeadLetter;
  /** Hosts the attempt made (a waiting run's targets): upserted with the outcome, only if it applies. */
  hosts?: HostUpsert[];
}

export interface SweepResult {
  requeued: number;
  timedOut: number;
  failed: number;
}

/** Who may see what: set by the API from the principal (see core/principal.ts); undefined means no restriction. */
export type { Scope } from '../core/principal.js';

export const RUN_SORT_FIELDS = ['created_at', 'updated_at', 'finished_at', 'status', 'route'] as const;
export type RunSortField = (typeof RUN_SORT_FIELDS)[number];

export interface RunQuery extends Page {
  scope?: Scope;
  status?: RunStatus[];
  /**
   * Read the statuses at this time (ms): a `queued` or `running` run whose deadline has passed is taken as
   * `timeout` by the `status` filter, as a caller that reports it so would show it before the sweeper
   * writes it. Absent: the stored status.
   */
  statusAt?: number;
  /** Services that created the runs. */
  service?: string[];
  actionType?: string[];
  /** Event types (exact). */
  type?: string[];
  route?: string[];
  action?: string[];
  eventKey?: string;
  correlationId?: string;
  labels?: Record<string, string>;
  /** Every key = value of the run's result (an object): what an action recorded, such as whom it sent work to. */
  result?: Record<string, string>;
  createdAt?: TimeRange;
  updatedAt?: TimeRange;
  sort?: { field: RunSortField; direction: SortDirection };
}

export interface EventQuery extends Page {
  scope?: Scope;
  type?: string[];
  source?: string;
  id?: string;
  /** true: only events no route matched. */
  unrouted?: boolean;
  receivedAt?: TimeRange;
  sort?: { direction: SortDirection };
}

export interface DeadLetterQuery extends Page {
  scope?: Scope;
  origin?: DeadLetterOrigin;
  reason?: string[];
  source?: string;
  runId?: string;
  replayed?: boolean;
  lastSeenAt?: TimeRange;
}

/** What pruning may delete: records older than each cutoff (ms since epoch); a kind without one is kept. */
export interface PruneOptions {
  /** Ended runs (and their attempts) that were created before this and finished before it. */
  runsBefore?: number;
  /** Events received before this, once no run of theirs is left. */
  eventsBefore?: number;
  runEventsBefore?: number;
  deadLettersBefore?: number;
  /** Most records of each kind deleted by this call. */
  limit: number;
}

export interface PruneResult {
  runs: number;
  attempts: number;
  events: number;
  runEvents: number;
  deadLetters: number;
}

/**
 * The name of a stream an output relays from the store (run events and host events from the outbox, or
 * dead letters, each in `seq` order): the key of its cursor (`run_events`, `dead_letters`, or as configured).
 */
export type RelayStream = string;

/** A dead letter as the relay reads it: with its place in the order dead letters were made. */
export interface SequencedDeadLetter {
  seq: number;
  deadLetter: DeadLetter;
}

/** Which runs get a `read` run event (`dispatcher runs republish`); every filter given must match. */
export interface RepublishQuery {
  scope?: Scope;
  status?: RunStatus[];
  type?: string[];
  route?: string[];
  service?: string[];
  orgId?: string[];
  createdAt?: TimeRange;
}

/**
 * A run's answer from elsewhere (a callback, an upload, a person's answer), for `resolveRuns`. The run is
 * named by id, or by its tenant and the correlation id its action waits under. See `resolvedRun` in
 * core/run-state.ts for what it does to the run.
 */
export interface RunResolution {
  runId?: string;
  orgId?: string;
  correlationId?: string;
  /** How the run ends; `running`: progress (the result so far), the run keeps waiting. */
  status: 'success' | 'failure' | 'canceled' | 'running';
  at: number;
  /** Kept on the run as its result (replacing the one before); absent: the result stays. */
  result?: unknown;
  /** Why it failed or was canceled (default: `action_failed` / `canceled`). */
  error?: RunError | null;
  /** Statuses of a run that ended already that this result may still change (a late upload after `timeout`). */
  reopen?: ReadonlyArray<'success' | 'failure' | 'timeout' | 'canceled'>;
  /** A short summary kept on the attempt it ends. */
  response?: string;
}

/** What a resolution did to its run. */
export type ResolveOutcome =
  /** The run changed (ended, or a waiting run recorded progress). */
  | 'resolved'
  /** The run already is what the resolution says (the same result twice): nothing changed. */
  | 'unchanged'
  /** The run ended otherwise, and the resolution may not reopen it; or progress for a run not running. */
  | 'conflict'
  /** No such run (by id, or by tenant and correlation id). */
  | 'not_found';

export interface ResolveResult {
  outcome: ResolveOutcome;
  /** The run as it is now (after the change, when there was one); null when not found. */
  run: Run | null;
}

/**
 * A host of a run, created or changed by `upsertHosts`, found by (run, name). What is not given is left as
 * it is (a new host: `running`, an empty log, no sequence, no details).
 */
export interface HostUpsert {
  runId: string;
  name: string;
  at: number;
  status?: RunStatus;
  /** Replace the log, or append to it; `gapMarker` is appended first when `sequence` skips numbers. */
  log?: { replace: string } | { append: string; gapMarker?: string };
  /**
   * The sequence number of what this upsert carries: a host whose stored sequence is this or higher is left
   * as it is (an older chunk, or the same one again); a host without one takes any.
   */
  sequence?: number;
  details?: Record<string, unknown>;
  /** Leave an existing host as it is while it is in one of these statuses (e.g. success and failure: terminal). */
  keep?: readonly RunStatus[];
  /** `update`: never create (a host the run does not have is `not_found`); `create`: never change one that exists. */
  only?: 'create' | 'update';
}

export interface HostResult {
  outcome: 'created' | 'updated' | 'unchanged' | 'not_found';
  /** The host as it is now; null when not found (no such run, or no such host with `only: update`). */
  host: Host | null;
}

export const HOST_SORT_FIELDS = ['created_at', 'updated_at', 'name', 'status'] as const;
export type HostSortField = (typeof HOST_SORT_FIELDS)[number];

export interface HostQuery extends Page {
  scope?: Scope;
  runId?: string[];
  status?: RunStatus[];
  name?: string[];
  /**
   * Read the statuses at this time (ms): a `queued` or `running` host of a run whose deadline has passed
   * (and that has not ended) is taken as `timeout` by the `status` filter (see `RunQuery.statusAt`).
   */
  statusAt?: number;
  /** Runs of these routes. */
  route?: string[];
  /** Runs of these action types. */
  actionType?: string[];
  service?: string[];
  /** Every key = value of the host's `details`. */
  details?: Record<string, string>;
  /** Every label of the host's run. */
  runLabels?: Record<string, string>;
  createdAt?: TimeRange;
  sort?: { field: HostSortField; direction: SortDirection };
}

/** The migrations of a profile: its tables, in each dialect, by name (applied in name order). */
export interface StoreMigrations {
  readonly sqlite: Readonly<Record<string, readonly string[]>>;
  readonly postgres: Readonly<Record<string, readonly string[]>>;
}

/** One statement in each dialect: SQLite's with `?` parameters, PostgreSQL's with `$1`, `$2`, …. */
export interface DialectSql {
  readonly sqlite: string;
  readonly postgres: string;
}

/** Migrations `migrate()` applies after the store's own, recorded as `<owner>/<name>`. */
export interface OwnedMigrations extends StoreMigrations {
  readonly owner: string;
}

export interface StoreStats {
  queued: number;
  running: number;
  waiting: number;
  /** When the oldest claimable queued run became claimable; null when none. */
  oldestQueuedAt: number | null;
  deadLetters: number;
}

export interface Store {
  readonly dialect: 'sqlite' | 'postgres';
  /** Clients, generated settings and the audit log. */
  readonly access: AccessStore;
  /** Clients' inboxes: the messages `deliver` put there for them to receive. */
  readonly inboxes: InboxStore;
  /**
   * Create or upgrade the schema: the store's own migrations, then those given (the profiles switched on),
   * each set in name order. Safe to call from several processes at once.
   */
  migrate(extra?: readonly OwnedMigrations[]): Promise<void>;
  /** Throws `store_unavailable` when the database cannot be reached. */
  ping(): Promise<void>;
  close(): Promise<void>;

  // intake
  commitIntake(items: IntakeItem[]): Promise<IntakeResult[]>;

  // runner
  claimRuns(options: ClaimOptions): Promise<ClaimedRun[]>;
  renewLeases(owner: string, runIds: string[], leaseUntil: number): Promise<number>;
  /** Record outcomes; returns the ids of the runs whose outcome applied. */
  finishRuns(outcomes: RunOutcome[]): Promise<string[]>;
  /** Give back runs this owner claimed but did not finish (shutdown): they become claimable again. */
  releaseRuns(owner: string, runIds: string[], now: number): Promise<number>;
  /** Expired leases back to `queued` (or `failure` when out of attempts); expired deadlines to `timeout`. */
  sweep(now: number, limit: number): Promise<SweepResult>;
  /** The earliest time a queued run becomes claimable, for the runner's timer. */
  nextAvailableAt(): Promise<number | null>;

  // operations on one run
  getRun(id: string, scope?: Scope): Promise<Run | null>;
  /** The newest of a tenant's runs under a correlation id (an upload or a callback names its run so), or null. */
  getRunByCorrelation(orgId: string, correlationId: string): Promise<Run | null>;
  getAttempts(runId: string): Promise<Attempt[]>;
  /** queued or running → canceled. Throws not_found / invalid_state. */
  cancelRun(id: string, now: number, scope?: Scope): Promise<Run>;
  /** failure, timeout or canceled → queued with `extraAttempts` more attempts. Throws not_found / invalid_state. */
  retryRun(id: string, now: number, extraAttempts: number, deadlineAt: number, scope?: Scope): Promise<Run>;
  /**
   * Answers for waiting runs (core/run-state.ts `resolvedRun`), in one transaction with their run events; one
   * result per resolution, in order. Idempotent: the same answer again is `unchanged`.
   */
  resolveRuns(resolutions: RunResolution[]): Promise<ResolveResult[]>;

  // hosts
  /** Create or change hosts of runs, in one transaction with their host events (`create`, `update`); one result each, in order. */
  upsertHosts(hosts: HostUpsert[]): Promise<HostResult[]>;
  getHost(id: string, scope?: Scope): Promise<Host | null>;
  listHosts(query: HostQuery): Promise<Listing<Host>>;

  // reads
  listRuns(query: RunQuery): Promise<Listing<Run>>;
  getEvent(key: string, scope?: Scope): Promise<EventRecord | null>;
  listEvents(query: EventQuery): Promise<Listing<EventRecord>>;

  // dead letters
  addDeadLetters(items: NewDeadLetter[]): Promise<string[]>;
  getDeadLetter(id: string, scope?: Scope): Promise<DeadLetter | null>;
  listDeadLetters(query: DeadLetterQuery): Promise<Listing<DeadLetter>>;
  markReplayed(id: string, at: number): Promise<void>;
  deleteDeadLetter(id: string, scope?: Scope): Promise<boolean>;
  /** Keep at most `maxCount` dead letters: delete the oldest beyond it. */
  trimDeadLetters(maxCount: number): Promise<number>;

  /** Retention: delete old records, at most `limit` of each kind, each kind in its own short transaction. */
  prune(options: PruneOptions): Promise<PruneResult>;

  // outbox
  /** Run events and host events after `afterSeq`, in seq order. */
  readRunEvents(afterSeq: number, limit: number, scope?: Scope): Promise<OutboxEvent[]>;
  lastRunEventSeq(): Promise<number>;
  /**
   * Write a `read` run event for every run matching the query (for consumers to rebuild their state), in
   * batches, each read and written in one transaction so that no change of a run slips between its state
   * and its run event; returns how many were written.
   */
  republishRuns(query: RepublishQuery, now: number): Promise<number>;

  // relays (outputs)
  /**
   * Take or renew the lease on an output's relay of a stream (free, expired or already `owner`'s) and
   * return its cursor (0 for a new one); null while another owner holds it.
   */
  acquireRelay(output: string, stream: RelayStream, owner: string, now: number, leaseMs: number): Promise<number | null>;
  /** Move the cursor to `seq` and renew the lease, only while `owner` holds it; false when it lost the lease. */
  advanceRelay(output: string, stream: RelayStream, owner: string, seq: number, now: number, leaseMs: number): Promise<boolean>;
  /** Let the lease go (shutdown), so that another process takes over at once. */
  releaseRelay(output: string, stream: RelayStream, owner: string): Promise<void>;
  /** Dead letters made after `afterSeq`, in `seq` order (a dead letter seen again keeps its first seq). */
  readDeadLetters(afterSeq: number, limit: number): Promise<SequencedDeadLetter[]>;
  lastDeadLetterSeq(): Promise<number>;
  /**
   * Gaps in `seq`: a seq is taken when a row is inserted, not when its transaction commits, so with
   * several writers a higher seq can become visible before a lower one. `visibilityMark` notes the
   * transactions under way now; `visibilitySettled(mark)` is true once all of them have ended, so that a
   * seq still missing below what was visible at the mark will never appear (a rolled-back insert).
   * SQLite gives seqs under its write lock, in commit order: its mark is always settled.
   */
  visibilityMark(): Promise<number>;
  visibilitySettled(mark: number): Promise<boolean>;

  stats(now: number): Promise<StoreStats>;

  /**
   * One statement on a profile's own tables (those its migrations made; the core's tables are the store's
   * alone), in its own transaction; the rows it returns. JSON columns come back as the driver gives them.
   */
  query(sql: DialectSql, params?: readonly unknown[]): Promise<Array<Record<string, unknown>>>;
}

export type { CloudEvent };

/** What the store keeps, to read. */
export type Records = Pick<
  Store,
  | 'dialect'
  | 'ping'
  | 'stats'
  | 'getRun'
  | 'getRunByCorrelation'
  | 'getAttempts'
  | 'listRuns'
  | 'getHost'
  | 'listHosts'
  | 'getEvent'
  | 'listEvents'
  | 'getDeadLetter'
  | 'listDeadLetters'
  | 'readRunEvents'
> & { readonly access: Pick<AccessStore, 'getClient' | 'listClients' | 'listAudit'> };
