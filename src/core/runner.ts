/**
 * The runner: claims queued runs, executes their actions, records every outcome.
 *
 *   claim (lease) ─▶ action ─▶ outcome ─▶ finish (group commit)
 *                       ├ success / failure (+ dead letter)
 *                       ├ retry later: exponential backoff with full jitter, at least Retry-After
 *                       └ waiting: stays `running` without a lease until a callback or its deadline
 *
 * Leases: a claimed run carries `lease_until`; the runner renews the leases of everything in flight every
 * third of the lease. A worker that dies stops renewing, and the sweeper puts its runs back in the queue
 * (or ends them when out of attempts). Outcomes are fenced by the lease owner in the store, so a slow
 * worker that lost its lease cannot overwrite what another worker did since.
 *
 * Deadlines: every run has one; the sweeper turns expired ones into `timeout`. Each attempt has its own
 * timeout (the route's `timeout`), enforced with an AbortSignal and a race, so an action that ignores the
 * signal still cannot hold the run.
 *
 * Direct dispatch: when this worker has room, intake commits the runs it plans (those without an ordering
 * key or concurrency limit) already claimed by this worker, in the same transaction as the event, and hands
 * them over (`reserve` → commit → `adopt`). That saves a claim query and a write per run; the lease makes it
 * exactly as safe as a claim: if this process dies, the sweeper requeues the runs when their lease expires.
 *
 * Wake-ups: intake calls `notify()` after committing runs, so a run starts within the same tick at low
 * load; a timer set to the next retry time and a slow poll cover everything else (other processes, retries).
 */

import type { Logger } from 'pino';
import { duration, section, Type, type Options } from './options.js';
import type { ActionContext, ActionOutcome, ActionServices, OutcomeHost } from './action.js';
import { DispatcherError, toDispatcherError } from './errors.js';
import type { Metrics } from './metrics.js';
import type { RoutePlan } from './routes.js';
import { templateScope } from './template.js';
import type { Attempt, CloudEvent, Run, RunStatus } from './types.js';
import { runDeadLetter } from './run-state.js';
import type { ClaimedRun, HostUpsert, RunOutcome, Store } from '../store/types.js';

/** How long outcomes gather before they are recorded, and how many are recorded at once at most. */
const RECORD_DELAY_MS = 2;
const RECORD_BATCH = 1000;
/** The pause before a batch of outcomes the store could not take is tried again: doubled each time, up to the most. */
const RECORD_RETRY_MS = 100;
const RECORD_RETRY_MOST_MS = 5000;
/**
 * How long an intake call may wait for room per run it wants started (ms), up to `dispatchWait`: what waiting
 * saves is a claim per run, so a batch may wait for up to the whole `dispatchWait`, and a single event only
 * briefly. Its sender waits for the 202 meanwhile; when the runs end slowly, a longer wait would only slow
 * intake down to what the runner does, instead of queueing the burst.
 */
export const WAIT_PER_RUN_MS = 10;
/** Over how long (the time constant of a decaying sum, ms) the rate at which runs end is taken. */
const END_RATE_MS = 250;

export const RUNNER_SECTION = section(
  {
    concurrency: Type.Integer({ minimum: 1, description: 'Most runs executing at once in this process.', default: 512 }),
    batchSize: Type.Integer({ minimum: 1, description: 'Most runs claimed in one query.', default: 256 }),
    lease: duration('How long a claim holds; the worker renews it while the run executes.', '30s'),
    poll: duration('How often to look for queued runs when none were signalled.', '1s'),
    sweepInterval: duration('How often expired leases are requeued and expired deadlines turned into `timeout`.', '5s'),
    shutdownTimeout: duration(
      'How long a stopping process waits for executing runs before it aborts them and puts them back in the queue (runs whose attempt ended have their outcome recorded instead).',
      '10s',
    ),
    dispatchWait: duration(
      `How long intake may wait for this process to have room for the runs of events sent over HTTP or the embedded API, while the ` +
        `runs executing end fast enough to make that room in time; a call waits at most ${WAIT_PER_RUN_MS} ms per run it wants started ` +
        `(a single event ${WAIT_PER_RUN_MS} ms, a batch of 100 events up to ${(100 * WAIT_PER_RUN_MS) / 1000} s), so that senders are not ` +
        'held back when the runs end slowly. Runs that get room are committed already claimed and start at once; ' +
        'the others are queued and claimed later, which costs an update and a run event each. Runs already queued are overtaken so for at ' +
        'most this long; then the room that frees up goes to them first, and intake only waits (a slot free the moment an event ' +
        'comes is still taken). A bus input never waits (its messages are committed ' +
        'in the order they came), nor does an event a `publish` action sends. `0` never waits.',
      '1s',
    ),
  },
  { description: 'How runs are claimed and executed.' },
);
/** `runner`, normalized: durations in milliseconds. */
export type RunnerConfig = Options<typeof RUNNER_SECTION>;

export const RETENTION_SECTION = section(
  {
    runs: duration('Runs that ended (success, failure, timeout, canceled) longer ago than this are deleted, with their attempts and hosts.', '30d'),
    events: duration('Events received longer ago than this are deleted once none of their runs is left.', '30d'),
    runEvents: duration('Run events (the outbox) older than this are deleted.', '7d'),
    deadLetters: duration('Dead letters last seen longer ago than this are deleted.', '30d'),
    interval: duration('How often pruning runs.', '1m'),
    batchSize: Type.Integer({ minimum: 1, description: 'Most records of one kind deleted in one transaction.', default: 500 }),
  },
  {
    description:
      'How long finished records are kept. The sweeper deletes older ones in small batches (`batchSize` a kind at a time, ' +
      'each in its own short transaction), so pruning never stalls intake. `0` keeps a kind forever. The audit log is never pruned.',
  },
);
/** How long finished records are kept, all in milliseconds; 0 keeps them forever. */
export type RetentionConfig = Options<typeof RETENTION_SECTION>;

export interface RunnerSettings extends RunnerConfig {
  /** Bytes of a response summary kept per attempt. */
  maxResponseBytes: number;
  deadLetterMaxCount: number;
  /** How long finished records are kept (ms, 0 = forever), how often and how many at a time pruning deletes. */
  retention?: RetentionConfig;
}

export interface RunnerDeps {
  store: Store;
  plan: () => RoutePlan;
  settings: RunnerSettings;
  services: ActionServices;
  metrics: Metrics;
  log: Logger;
  /** This worker's id, written as the lease owner. */
  owner: string;
  /** Called after outcomes were recorded (run events were written), with the outcomes that applied. */
  onRecorded?: (outcomes: RunOutcome[]) => void;
  /** Whether this process runs the sweeper (PostgreSQL: the holder of an advisory lock). */
  sweeper?: boolean;
  now?: () => number;
  random?: () => number;
}

interface InFlight {
  claimed: ClaimedRun;
  controller: AbortController | undefined;
  timeoutAt: number;
  timeoutMs: number;
  interrupt: ((error: DispatcherError) => void) | undefined;
  interrupted?: boolean;
  /** The attempt has ended: its outcome is waiting to be recorded, or being recorded. */
  ended?: boolean;
}

export class Runner {
  readonly #deps: RunnerDeps;
  readonly #inFlight = new Map<string, InFlight>();
  /**
   * Outcomes waiting to be recorded: gathered for RECORD_DELAY_MS (or until RECORD_BATCH of them) and
   * recorded in one `finishRuns`, one batch at a time. A run keeps its slot until its outcome is recorded.
   */
  #outcomes: RunOutcome[] = [];
  /** Outcomes in the batch being recorded (0: none is). */
  #recording = 0;
  #recordScheduled = false;
  #recorded: Array<() => void> = [];
  /** Failed tries in a row of the batch at the head of `#outcomes`, and the pause before the next. */
  #recordFailures = 0;
  #recordRetryTimer: NodeJS.Timeout | undefined;
  /** From when outcomes the store cannot take are no longer tried again (a stopping runner's). */
  #recordGiveUpAt = Infinity;
  /** The last lease renewal failed: the leases of runs in flight may have expired in the store meanwhile. */
  #renewFailed = false;
  #running = false;
  /** Slots promised to intake for direct dispatch, not yet adopted. */
  #reserved = 0;
  /**
   * How fast room frees: the runs that ended, each counted with a weight that decays with its age (time
   * constant END_RATE_MS), so that the sum over END_RATE_MS is runs ending per ms; and when the last ended.
   */
  #endedRecently = 0;
  #lastEndAt = -Infinity;
  /** Intake calls waiting in `reserveWithin`, woken when runs end, and how much room they still want in all. */
  readonly #roomWaiters = new Set<() => void>();
  #roomWanted = 0;
  #pumping = false;
  #again = false;
  /**
   * Whether claimable runs may be waiting. Set by whatever can make them (intake queued runs, a retry, the
   * poll); cleared when a claim finds fewer than it asked for. A run ending only claims again when it is
   * set, so that directly dispatched runs do not cost a claim query each.
   */
  #maybeQueued = true;
  /**
   * Since when there may have been claimable queued runs: set when `#maybeQueued` turns true, kept until a
   * claim finds none. How long the queue may have been waiting for room.
   */
  #queuedSince = 0;
  #pollTimer: NodeJS.Timeout | undefined;
  #wakeTimer: NodeJS.Timeout | undefined;
  #wakeAt = Infinity;
  #leaseTimer: NodeJS.Timeout | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  #timeoutTimer: NodeJS.Timeout | undefined;
  #pruneTimer: NodeJS.Timeout | undefined;
  #idle: Array<() => void> = [];
  readonly #histograms = new Map<string, { observe(value: number): void }>();
  #stopping: Promise<void> | undefined;

  constructor(deps: RunnerDeps) {
    this.#deps = deps;
  }

  /** Accept-first outcomes being recorded → what resolves `keep` once they are. */
  readonly #kept = new Map<string, () => void>();
  /** Outcomes of ended attempts not yet recorded in the store: waiting, or being recorded. */
  get unrecorded(): number {
    return this.#outcomes.length + this.#recording;
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    const s = this.#deps.settings;
    this.#pollTimer = setInterval(() => this.notify(), s.poll);
    this.#leaseTimer = setInterval(() => void this.#renewLeases(), Math.max(100, Math.floor(s.lease / 3)));
    if (this.#deps.sweeper !== false) {
      this.#sweepTimer = setInterval(() => void this.sweep(), s.sweepInterval);
      if (s.retention !== undefined) this.#pruneTimer = setInterval(() => void this.prune(), s.retention.interval);
    }
    for (const t of [this.#pollTimer, this.#leaseTimer, this.#sweepTimer, this.#pruneTimer]) t?.unref();
    this.notify();
  }

  /** New runs may be claimable. Cheap to call often: at most one claim loop runs at a time. */
  notify(): void {
    if (!this.#maybeQueued) this.#queuedSince = this.#now();
    this.#maybeQueued = true;
    if (!this.#running) return;
    if (this.#pumping) {
      this.#again = true;
      return;
    }
    void this.#pump();
  }

  /**
   * Direct dispatch, step 1: intake asks for room before it commits runs as already claimed by this
   * worker. Returns how many of `wanted` it may claim; they count as in flight until adopted or released.
   */
  reserve(wanted: number): number {
    if (!this.#running) return 0;
    const room = this.#deps.settings.concurrency - this.#inFlight.size - this.#reserved;
    const n = Math.max(0, Math.min(wanted, room));
    this.#reserved += n;
    return n;
  }

  /**
   * Direct dispatch, step 1 when `reserve` gave less than was wanted: wait up to `dispatchWait` for the
   * rest (and at most WAIT_PER_RUN_MS per run wanted), but only while the runs in flight end fast enough to
   * free it in the time left (judged by the rate at which they have been ending); otherwise return at once.
   * Resolves to how many more were reserved.
   *
   * Under a burst of work that ends fast, this keeps runs from being committed queued only to be claimed
   * moments later (a claim costs an update and a run event per run); when work ends slowly, the runs are
   * queued as before, and intake is not held up. Runs already queued are overtaken this way for at most
   * `dispatchWait`; after that the room that frees up goes to them first, and a call only waits: under a
   * lasting overload, a call of many events slows down to what the runner does. (`reserve`, which a call tries
   * first, still takes slots free at that moment, between a run's end and the claim that fills its slot:
   * holding those back too more than doubled the claims and cost 11 % of the throughput under overload.)
   */
  async reserveWithin(wanted: number): Promise<number> {
    const most = this.#deps.settings.dispatchWait;
    const budget = Math.min(most, wanted * WAIT_PER_RUN_MS);
    if (budget <= 0 || wanted <= 0) return 0;
    const deadline = this.#now() + budget;
    let got = 0;
    this.#roomWanted += wanted;
    try {
      while (got < wanted && this.#running) {
        const now = this.#now();
        const left = deadline - now;
        // Room comes only from runs in flight ending: wait only if some are in flight, and they have been
        // ending lately, fast enough for what every waiter still wants.
        const endRate = this.#endedBy(now) / END_RATE_MS;
        if (left <= 0 || this.#inFlight.size === 0 || now - this.#lastEndAt > most || this.#roomWanted / endRate > left) break;
        await new Promise<void>((resolve) => {
          const wake = () => {
            clearTimeout(timer);
            this.#roomWaiters.delete(wake);
            resolve();
          };
          const timer = setTimeout(wake, left);
          this.#roomWaiters.add(wake);
        });
        // Runs already queued are not overtaken for long: once the queue may hold a run older than
        // `dispatchWait`, the room goes to the claims, and this call only waits (which slows intake down to
        // what the runner does, so that the queue drains).
        if (this.#maybeQueued && this.#now() - this.#queuedSince > most) continue;
        const n = this.reserve(wanted - got);
        got += n;
        this.#roomWanted -= n;
      }
      return got;
    } finally {
      this.#roomWanted -= wanted - got;
    }
  }

  /** A batch of runs ended: note how fast runs end, and wake intake calls waiting for room. */
  #ended(n: number): void {
    const now = this.#now();
    this.#endedRecently = this.#endedBy(now) + n;
    this.#lastEndAt = now;
    this.#wakeRoomWaiters();
  }

  /** `#endedRecently` decayed to `now`. */
  #endedBy(now: number): number {
    return this.#endedRecently * Math.exp((this.#lastEndAt - now) / END_RATE_MS);
  }

  #wakeRoomWaiters(): void {
    for (const wake of [...this.#roomWaiters]) wake();
  }

  /** Step 2: the runs were committed as claimed by this worker: run them. */
  adopt(claimed: ClaimedRun[]): void {
    this.#reserved = Math.max(0, this.#reserved - claimed.length);
    for (const c of claimed) this.#start(c);
  }

  /** Step 2, otherwise: reserved room that was not used (duplicates, a failed commit). */
  release(n: number): void {
    this.#reserved = Math.max(0, this.#reserved - n);
  }

  /**
   * Accept-first, step 1 (see `Intake.receiveAccepted`): the first attempt of a run not yet stored, run
   * now. It counts as in flight (its timeout watched, an abort reaches it); its outcome is returned, not
   * recorded. Step 2 is `keep` (the run was committed as claimed by this worker: record the outcome) or
   * `drop` (it was not stored: nothing to record).
   */
  async attemptFirst(claimed: ClaimedRun): Promise<RunOutcome> {
    const entry = this.#track(claimed);
    try {
      const outcome = await this.#execute(entry);
      entry.ended = true;
      return outcome;
    } catch (err) {
      this.#settle(claimed.run.id);
      throw err;
    }
  }

  /**
   * Accept-first, step 2: the run was committed; its first attempt's outcome is recorded as any other, in
   * the next batch. Resolves once it is (or once recording it was given up), so that whoever answers for the
   * run answers with what the store holds: an answer to a waiting run can then find it.
   */
  keep(outcome: RunOutcome): Promise<void> {
    return new Promise((resolve) => {
      this.#kept.set(outcome.run.id, resolve);
      this.#finish(outcome);
    });
  }

  /** Accept-first, step 2, otherwise: the run was not stored. */
  drop(runId: string): void {
    this.#settle(runId);
  }

  /** The lease a directly dispatched run gets. */
  leaseFor(now: number): { owner: string; leaseUntil: number } {
    return { owner: this.#deps.owner, leaseUntil: now + this.#deps.settings.lease };
  }

  /** Cancel an attempt running in this process (the store has already marked the run canceled). */
  abort(runId: string): boolean {
    const f = this.#inFlight.get(runId);
    if (f === undefined) return false;
    this.#interrupt(f, new DispatcherError('canceled', 'the run was canceled'));
    return true;
  }

  async #pump(): Promise<void> {
    this.#pumping = true;
    try {
      do {
        this.#again = false;
        const { store, settings, owner } = this.#deps;
        const room = settings.concurrency - this.#inFlight.size - this.#reserved;
        if (room <= 0) break;
        const now = this.#now();
        let claimed: ClaimedRun[];
        try {
          claimed = await store.claimRuns({
            owner,
            limit: Math.min(room, settings.batchSize),
            now,
            leaseMs: settings.lease,
            routeLimits: this.#deps.plan().routeLimits,
          });
        } catch (err) {
          this.#deps.log.error({ err }, 'claiming runs failed; trying again at the next poll');
          break;
        }
        for (const c of claimed) this.#start(c);
        if (claimed.length === Math.min(room, settings.batchSize)) this.#again = true;
        else {
          if (!this.#again) this.#maybeQueued = false;
          if (claimed.length === 0) await this.#armWakeTimer();
        }
        if (this.#again) await new Promise((resolve) => setImmediate(resolve));
      } while (this.#again && this.#running);
    } finally {
      this.#pumping = false;
    }
  }

  /** Sleep until the next retry becomes claimable (if sooner than the poll). */
  async #armWakeTimer(): Promise<void> {
    let next: number | null;
    try {
      next = await this.#deps.store.nextAvailableAt();
    } catch {
      return;
    }
    if (next === null || next >= this.#wakeAt) return;
    const delay = next - this.#now();
    if (delay <= 0 || delay >= this.#deps.settings.poll) return;
    clearTimeout(this.#wakeTimer);
    this.#wakeAt = next;
    this.#wakeTimer = setTimeout(() => {
      this.#wakeAt = Infinity;
      this.notify();
    }, delay + 1);
    this.#wakeTimer.unref();
  }

  /** An attempt in flight: its timeout watched, an abort able to reach it. */
  #track(claimed: ClaimedRun): InFlight {
    const timeoutMs = this.#deps.plan().route(claimed.run.route)?.config.timeout ?? 30_000;
    const entry: InFlight = { claimed, controller: undefined, timeoutAt: this.#now() + timeoutMs, timeoutMs, interrupt: undefined };
    this.#inFlight.set(claimed.run.id, entry);
    this.#watchTimeouts();
    return entry;
  }

  #start(claimed: ClaimedRun): void {
    const entry = this.#track(claimed);
    void this.#execute(entry).then(
      (outcome) => {
        entry.ended = true;
        this.#finish(outcome);
      },
      (err) => {
        this.#deps.log.error({ err, runId: claimed.run.id }, 'recording an outcome failed; the lease will expire and the sweeper requeue the run');
        this.#settle(claimed.run.id);
      },
    );
  }

  /** Ends an attempt early (timeout, cancel, shutdown): aborts its signal, and stops waiting for it. */
  #interrupt(entry: InFlight, error: DispatcherError): void {
    if (entry.interrupted) return;
    entry.interrupted = true;
    entry.controller?.abort(error);
    entry.interrupt?.(error);
  }

  /**
   * Attempt timeouts without a timer per attempt: one interval scans what is in flight. Precision is the
   * scan interval (at most 50 ms), which is plenty for timeouts counted in seconds.
   */
  #watchTimeouts(): void {
    if (this.#timeoutTimer !== undefined) return;
    this.#timeoutTimer = setInterval(() => {
      if (this.#inFlight.size === 0) {
        clearInterval(this.#timeoutTimer);
        this.#timeoutTimer = undefined;
        return;
      }
      const now = this.#now();
      for (const entry of this.#inFlight.values()) {
        if (entry.timeoutAt <= now) {
          this.#interrupt(entry, new DispatcherError('attempt_timeout', `the attempt took longer than ${entry.timeoutMs} ms`));
        }
      }
    }, 50);
    this.#timeoutTimer.unref();
  }

  async #execute(entry: InFlight): Promise<RunOutcome> {
    const { claimed } = entry;
    const { run } = claimed;
    const startedAt = this.#now();
    const compiled = this.#deps.plan().action(run.route, run.action);
    let outcome: ActionOutcome | undefined;
    let error: DispatcherError | undefined;
    if (compiled === undefined) {
      error = new DispatcherError('route_missing', `route ${run.route} has no action ${run.action} any more`);
    } else {
      let event: CloudEvent | undefined;
      let scope: object | undefined;
      const ctx: ActionContext = {
        get event() {
          return (event ??= JSON.parse(claimed.envelope) as CloudEvent);
        },
        runId: run.id,
        run,
        attempt: run.attempts,
        // Made on first use: most actions that finish at once never look at it.
        get signal() {
          entry.controller ??= new AbortController();
          return entry.controller.signal;
        },
        hops: claimed.hops,
        log: this.#deps.log,
        render: (template) => {
          try {
            return template.render((scope ??= templateScope(ctx.event, { id: run.id, attempt: run.attempts })));
          } catch (err) {
            throw new DispatcherError('template_error', `rendering a template failed: ${(err as Error).message}`, { cause: err });
          }
        },
        services: this.#deps.services,
      };
      try {
        const running = compiled.action.execute(ctx);
        outcome = await new Promise<ActionOutcome>((resolve, reject) => {
          entry.interrupt = reject;
          running.then(resolve, reject);
        });
      } catch (err) {
        error = toDispatcherError(err);
      }
    }
    return this.#outcome(claimed, startedAt, outcome, error);
  }

  #outcome(claimed: ClaimedRun, startedAt: number, outcome: ActionOutcome | undefined, error: DispatcherError | undefined): RunOutcome {
    const { run } = claimed;
    const owner = this.#deps.owner;
    const at = this.#now();
    const max = this.#deps.settings.maxResponseBytes;
    const attempt: Attempt = {
      runId: run.id,
      n: run.attempts,
      startedAt,
      endedAt: at,
      outcome: 'success',
      errorCode: null,
      errorMessage: null,
      httpStatus: null,
      response: null,
    };
    if (error === undefined && outcome !== undefined) {
      attempt.response = truncate(outcome.response, max);
      if (outcome.status === 'waiting') {
        attempt.outcome = 'waiting';
        return {
          run,
          owner,
          status: 'running',
          attempt,
          at,
          correlationId: outcome.correlationId,
          deadlineAt: outcome.deadlineAt ?? run.deadlineAt,
          ...(outcome.result === undefined ? {} : { result: outcome.result }),
          ...outcomeHosts(run.id, outcome.hosts, 'running', at),
        };
      }
      attempt.httpStatus = outcome.httpStatus ?? null;
      const result = outcome.result ?? (outcome.httpStatus !== undefined ? { httpStatus: outcome.httpStatus } : null);
      return { run, owner, status: 'success', attempt, at, result, ...outcomeHosts(run.id, outcome.hosts, 'success', at) };
    }
    const err = error ?? new DispatcherError('internal', 'the action returned nothing');
    attempt.errorCode = err.code;
    attempt.errorMessage = err.message;
    attempt.httpStatus = err.httpStatus ?? null;
    attempt.response = truncate(err.response, max);
    const runError = { code: err.code, message: err.message };
    if (err.code === 'canceled') {
      attempt.outcome = 'canceled';
      // The store already holds the run as canceled: this outcome will not apply, and need not.
      return { run, owner, status: 'failure', attempt, at, error: runError };
    }
    if (err.retryable && run.attempts < run.maxAttempts) {
      const delay = this.#backoff(run, err);
      if (at + delay < run.expiresAt && at + delay < run.deadlineAt) {
        attempt.outcome = 'retry';
        return { run, owner, status: 'queued', attempt, at, availableAt: at + delay, error: runError };
      }
    }
    attempt.outcome = err.code === 'attempt_timeout' ? 'timeout' : 'failure';
    const finalError = err.retryable
      ? { code: err.code, message: `${err.message} (gave up after ${run.attempts} attempt${run.attempts === 1 ? '' : 's'})` }
      : runError;
    return {
      run,
      owner,
      status: 'failure',
      attempt,
      at,
      error: finalError,
      deadLetter: runDeadLetter(run, err.code, finalError.message, at, claimed.envelope),
    };
  }

  /** Exponential backoff with full jitter (AWS architecture blog), and never sooner than Retry-After. */
  #backoff(run: Run, err: DispatcherError): number {
    const route = this.#deps.plan().route(run.route)?.config.retry;
    const base = route?.backoff ?? 1000;
    const cap = route?.maxBackoff ?? 300_000;
    const ceiling = Math.min(cap, base * 2 ** Math.max(0, run.attempts - 1));
    const jittered = Math.floor((this.#deps.random ?? Math.random)() * ceiling);
    return Math.max(jittered, err.retryAfterMs ?? 0);
  }

  #finish(outcome: RunOutcome): void {
    this.#outcomes.push(outcome);
    this.#scheduleRecord();
  }

  #scheduleRecord(): void {
    if (this.#recording > 0 || this.#recordScheduled || this.#recordRetryTimer !== undefined) return;
    this.#recordScheduled = true;
    if (this.#outcomes.length >= RECORD_BATCH) setImmediate(this.#record);
    else setTimeout(this.#record, RECORD_DELAY_MS);
  }

  readonly #record = async (): Promise<void> => {
    this.#recordScheduled = false;
    if (this.#recording > 0 || this.#outcomes.length === 0) return;
    const batch = this.#outcomes.length <= RECORD_BATCH ? this.#outcomes : this.#outcomes.slice(0, RECORD_BATCH);
    this.#outcomes = batch === this.#outcomes ? [] : this.#outcomes.slice(RECORD_BATCH);
    this.#recording = batch.length;
    let again = false;
    try {
      const applied = await this.#deps.store.finishRuns(batch);
      this.#recordFailures = 0;
      if (applied.length > 0) {
        let recorded = batch;
        if (applied.length !== batch.length) {
          const ids = new Set(applied);
          recorded = batch.filter((o) => ids.has(o.run.id));
        }
        this.#count(recorded);
        this.#logFailures(recorded);
        this.#deps.onRecorded?.(recorded);
      }
    } catch (err) {
      // The store could not be reached: the batch is tried again after a pause, its runs keeping their slots
      // and their leases (renewed meanwhile), so that an attempt that did its work is recorded rather than
      // run again once its lease expires. Other errors, and a stopping runner past its bound, give up.
      again = err instanceof DispatcherError && err.code === 'store_unavailable' && this.#now() < this.#recordGiveUpAt;
      this.#deps.metrics.outcomeRecordFailures.inc({ then: again ? 'retried' : 'dropped' });
      if (again) {
        this.#recordFailures += 1;
        if (this.#recordFailures === 1) {
          this.#deps.log.warn({ err, runs: batch.length }, 'recording outcomes failed; trying again until the store takes them');
        }
      } else {
        this.#recordFailures = 0;
        this.#deps.log.error(
          { err, runs: batch.length, runId: batch[0]!.run.id },
          'recording outcomes failed; the leases will expire and the sweeper requeue the runs',
        );
      }
    } finally {
      this.#recording = 0;
    }
    if (again) {
      this.#outcomes = batch.concat(this.#outcomes);
      const pause = Math.min(RECORD_RETRY_MOST_MS, RECORD_RETRY_MS * 2 ** (this.#recordFailures - 1));
      this.#recordRetryTimer = setTimeout(() => {
        this.#recordRetryTimer = undefined;
        this.#scheduleRecord();
      }, pause);
      return;
    }
    let retries = false;
    for (const o of batch) {
      this.#settle(o.run.id);
      if (o.status === 'queued') retries = true;
      const kept = this.#kept.get(o.run.id);
      if (kept !== undefined) {
        this.#kept.delete(o.run.id);
        kept();
      }
    }
    this.#ended(batch.length);
    if (retries) void this.#armWakeTimer();
    if (this.#outcomes.length > 0) this.#scheduleRecord();
    else for (const resolve of this.#recorded.splice(0)) resolve();
  };

  /** Outcomes waiting to be tried again are tried now, without the rest of their pause. */
  async #recordWaitingNow(): Promise<void> {
    if (this.#recordRetryTimer === undefined) return;
    clearTimeout(this.#recordRetryTimer);
    this.#recordRetryTimer = undefined;
    await this.#record();
  }

  /** Resolves once every outcome gathered so far is recorded. */
  #drainOutcomes(): Promise<void> {
    if (this.#recording === 0 && this.#outcomes.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#recorded.push(resolve));
  }

  /** Metrics of recorded outcomes, counted per batch: label lookups cost more than the counting. */
  /**
   * One line per failed attempt: warn when the run will be tried again, error when it ended in failure or
   * timeout (its dead letter written with it).
   */
  #logFailures(recorded: RunOutcome[]): void {
    const log = this.#deps.log;
    for (const o of recorded) {
      const a = o.attempt;
      if (a.outcome === 'success' || o.status === 'running') continue;
      const fields = {
        runId: o.run.id,
        route: o.run.route,
        action: o.run.action,
        attempt: a.n,
        outcome: a.outcome,
        code: a.errorCode ?? o.error?.code ?? null,
        httpStatus: a.httpStatus ?? undefined,
        err: a.errorMessage ?? o.error?.message ?? undefined,
      };
      if (o.status === 'queued') log.warn({ ...fields, retryAt: o.availableAt === undefined ? undefined : new Date(o.availableAt).toISOString() }, 'attempt failed; the run will be tried again');
      else if (o.status === 'failure' || o.status === 'timeout') {
        log.error({ ...fields, status: o.status, deadLetter: o.deadLetter === undefined ? false : { origin: 'run', reason: o.deadLetter.reason } }, `run ended in ${o.status}; kept as a dead letter`);
      }
    }
  }

  #count(recorded: RunOutcome[]): void {
    const m = this.#deps.metrics;
    const counts = new Map<string, { route: string; key: string; kind: 'attempt' | 'finished' | 'dead'; n: number }>();
    const add = (kind: 'attempt' | 'finished' | 'dead', route: string, key: string) => {
      const id = `${kind}\u0000${route}\u0000${key}`;
      const c = counts.get(id);
      if (c === undefined) counts.set(id, { route, key, kind, n: 1 });
      else c.n += 1;
    };
    for (const o of recorded) {
      add('attempt', o.run.route, o.attempt.outcome);
      if (o.status === 'success' || o.status === 'failure') {
        add('finished', o.run.route, o.status);
        let histogram = this.#histograms.get(o.run.route);
        if (histogram === undefined) {
          histogram = m.acceptToDone.labels({ route: o.run.route });
          this.#histograms.set(o.run.route, histogram);
        }
        histogram.observe((o.at - o.run.createdAt) / 1000);
      }
      if (o.deadLetter !== undefined) add('dead', o.run.route, o.deadLetter.reason);
    }
    for (const c of counts.values()) {
      if (c.kind === 'attempt') m.attempts.inc({ route: c.route, outcome: c.key }, c.n);
      else if (c.kind === 'finished') m.runsFinished.inc({ route: c.route, status: c.key }, c.n);
      else m.deadLetters.inc({ origin: 'run', reason: c.key }, c.n);
    }
  }

  #settle(runId: string): void {
    this.#inFlight.delete(runId);
    if (this.#inFlight.size === 0) for (const resolve of this.#idle.splice(0)) resolve();
    if (this.#maybeQueued) this.notify();
  }

  async #renewLeases(): Promise<void> {
    if (this.#inFlight.size === 0) {
      this.#renewFailed = false;
      return;
    }
    try {
      await this.#deps.store.renewLeases(this.#deps.owner, [...this.#inFlight.keys()], this.#now() + this.#deps.settings.lease);
      this.#renewFailed = false;
    } catch (err) {
      this.#renewFailed = true;
      this.#deps.log.warn({ err }, 'renewing leases failed');
    }
  }

  /** One pass of the sweeper: expired leases, expired deadlines, the dead-letter bound. */
  async sweep(): Promise<void> {
    try {
      // After the store was away, this process's own runs come first: the outcomes it holds, then the leases
      // of its runs in flight, which may have expired meanwhile. Swept first, they would run again. While the
      // store is still away, there is nothing to sweep.
      if (this.#recordFailures > 0 || this.#renewFailed) {
        await this.#recordWaitingNow();
        await this.#renewLeases();
        if (this.#recordFailures > 0 || this.#renewFailed) return;
      }
      const now = this.#now();
      let total = 0;
      const swept = { requeued: 0, timedOut: 0, failed: 0 };
      for (let i = 0; i < 10; i++) {
        const r = await this.#deps.store.sweep(now, 500);
        const n = r.requeued + r.timedOut + r.failed;
        total += n;
        swept.requeued += r.requeued;
        swept.timedOut += r.timedOut;
        swept.failed += r.failed;
        const m = this.#deps.metrics;
        if (r.requeued > 0) m.swept.inc({ outcome: 'requeued' }, r.requeued);
        if (r.timedOut > 0) m.swept.inc({ outcome: 'timed_out' }, r.timedOut);
        if (r.failed > 0) m.swept.inc({ outcome: 'failed' }, r.failed);
        if (n < 500) break;
      }
      if (total > 0) {
        // Runs the sweeper ends (deadline passed, out of attempts) are failures: each has its dead letter.
        const ended = swept.timedOut + swept.failed;
        this.#deps.log[ended > 0 ? 'error' : 'info'](
          { swept: total, ...swept },
          ended > 0 ? `sweeper ended ${ended} runs (${swept.timedOut} timeout, ${swept.failed} failure), each kept as a dead letter; requeued ${swept.requeued}` : `sweeper requeued ${swept.requeued} runs whose lease expired`,
        );
        this.notify();
      }
      await this.#deps.store.trimDeadLetters(this.#deps.settings.deadLetterMaxCount);
    } catch (err) {
      this.#deps.log.warn({ err }, 'sweeping failed');
    }
  }

  #pruning = false;

  /**
   * Retention: deletes what is older than its configured age, a batch of each kind at a time, yielding
   * between batches so that intake and outcomes get the store in between. Returns what it deleted.
   */
  async prune(now = this.#now()): Promise<{ runs: number; attempts: number; events: number; runEvents: number; deadLetters: number }> {
    const total = { runs: 0, attempts: 0, events: 0, runEvents: 0, deadLetters: 0 };
    const r = this.#deps.settings.retention;
    if (r === undefined || this.#pruning) return total;
    this.#pruning = true;
    const cutoff = (age: number) => (age > 0 ? now - age : undefined);
    try {
      // Bounded per pass: a large backlog is worked off over several intervals.
      for (let batch = 0; batch < 100; batch++) {
        const got = await this.#deps.store.prune({
          runsBefore: cutoff(r.runs),
          eventsBefore: cutoff(r.events),
          runEventsBefore: cutoff(r.runEvents),
          deadLettersBefore: cutoff(r.deadLetters),
          limit: r.batchSize,
        });
        // Counted batch by batch: what is gone from the store is in the metrics too, even while a pass goes on.
        for (const k of Object.keys(total) as Array<keyof typeof total>) {
          total[k] += got[k];
          if (got[k] > 0) this.#deps.metrics.pruned.inc({ kind: k }, got[k]);
        }
        if (Math.max(got.runs, got.events, got.runEvents, got.deadLetters) < r.batchSize) break;
        await new Promise((resolve) => setImmediate(resolve));
      }
    } catch (err) {
      this.#deps.log.warn({ err }, 'pruning failed');
    } finally {
      this.#pruning = false;
    }
    return total;
  }

  /**
   * Stop claiming; give in-flight attempts until the shutdown timeout to end; abort and release the rest
   * so that another worker (or this one, restarted) picks them up at once instead of after their lease.
   * Attempts that ended are not released: their outcomes are recorded (tried once more if the store could
   * not be reached; then left, and their runs come back when their leases expire).
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    this.#running = false;
    // Outcomes the store cannot take are tried once more, not waited for: a stop while the store is away
    // stays as quick as the attempts in flight allow, and their runs come back when their leases expire.
    this.#recordGiveUpAt = this.#now();
    this.#wakeRoomWaiters();
    for (const t of [this.#pollTimer, this.#leaseTimer, this.#sweepTimer, this.#wakeTimer, this.#pruneTimer]) clearInterval(t);
    await this.#recordWaitingNow();
    if (this.#inFlight.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.#idle.push(resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#deps.settings.shutdownTimeout))),
      ]);
      clearTimeout(timer);
    }
    // Runs whose attempt has ended are not given back: their outcomes are recorded below. Released, the
    // outcome of an attempt that did its work would be fenced out, and the action run again.
    const left = [...this.#inFlight.values()].filter((f) => f.ended !== true);
    if (left.length > 0) {
      for (const f of left) this.#interrupt(f, new DispatcherError('shutting_down', 'the dispatcher is stopping'));
      try {
        const n = await this.#deps.store.releaseRuns(this.#deps.owner, left.map((f) => f.claimed.run.id), this.#now());
        this.#deps.log.info({ released: n }, 'released runs still in flight at shutdown');
      } catch (err) {
        this.#deps.log.warn({ err }, 'releasing runs failed; their leases will expire');
      }
    }
    await this.#drainOutcomes();
  }

  #now(): number {
    return this.#deps.now?.() ?? Date.now();
  }
}

function truncate(text: string | undefined, max: number): string | null {
  if (text === undefined) return null;
  return text.length > max ? text.slice(0, max) : text;
}

/** The hosts an outcome brings, as upserts that only create (a host the run has already is left as it is). */
function outcomeHosts(runId: string, hosts: readonly OutcomeHost[] | undefined, status: RunStatus, at: number): { hosts?: HostUpsert[] } {
  if (hosts === undefined || hosts.length === 0) return {};
  return { hosts: hosts.map((h) => ({ runId, name: h.name, at, status: h.status ?? status, details: h.details ?? {}, only: 'create' as const })) };
}
