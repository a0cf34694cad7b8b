/**
 * The glossary, as types. Words follow ../shared/DESIGN.md §1:
 *
 * - **event**: one message that entered the dispatcher, as a CloudEvents 1.0 envelope. Identity is
 *   (`source`, `id`): the same pair twice is one event. Stored with a `key` of our own.
 * - **input**: where events come from (`http`, `kafka`, `amqp`, `nats`, `sqs`, `mqtt`, `embedded`).
 * - **type**: a registered event type with an optional JSON Schema.
 * - **route**: `match` → one or more actions, with retry policy, timeout, ordering key, concurrency limit.
 * - **action**: a named capability run for a matched event (`http`, `publish`, `noop`, a plugin …).
 * - **run**: one execution of one action for one event; every attempt is kept.
 * - **host**: one target inside a run (a machine of a playbook run, a recipient of a broadcast): its own
 *   status, log and sequence.
 * - **waiting**: a run whose action handed its work to someone else stays `running` (without a lease) with
 *   a correlation id, until a callback, an upload or an answer resolves it, or its deadline makes it `timeout`.
 * - **run event**: a state change of a run or of one of its hosts, written in the same transaction as the
 *   change (outbox).
 * - **dead letter**: anything that could not be accepted or finished, kept for inspection and replay.
 */

import type { ErrorCode } from './errors.js';

/** A CloudEvents 1.0 envelope with our extensions `topic`, `correlationid` and `tenant`. */
export interface CloudEvent {
  specversion: '1.0';
  id: string;
  source: string;
  type: string;
  time?: string;
  subject?: string;
  datacontenttype?: string;
  dataschema?: string;
  data?: unknown;
  data_base64?: string;
  /** Dotted routing key, matched by route topic patterns (AMQP `*` and `#`). */
  topic?: string;
  correlationid?: string;
  tenant?: string;
  /** Any other extension attribute (lower-case alphanumeric names). */
  [extension: string]: unknown;
}

/** Who created a record: the service of the principal, and its tenant. */
export interface Owner {
  service: string;
  orgId: string;
}

/** An event as accepted and stored. */
export interface EventRecord extends Owner {
  /** Our own id for the stored event: a UUIDv7 that carries its `receivedAt` (see `NewRun.id`). */
  key: string;
  event: CloudEvent;
  /** Name of the input it came through (`http`, `embedded`, …). */
  input: string;
  /** How many `publish` actions led to this event (0 for an event from outside). */
  hops: number;
  receivedAt: number;
  /** Number of runs planned for it; 0 means unrouted. */
  runCount: number;
}

export const RUN_STATUSES = ['queued', 'running', 'success', 'failure', 'timeout', 'canceled'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];
export const TERMINAL_STATUSES: ReadonlySet<RunStatus> = new Set(['success', 'failure', 'timeout', 'canceled']);

export interface RunError {
  code: ErrorCode | string;
  message: string;
}

/** One execution of one action for one event. Times are milliseconds since the epoch. */
export interface Run extends Owner {
  id: string;
  eventKey: string;
  /** The event's type, kept on the run so that runs can be listed by type without a join. */
  eventType: string;
  route: string;
  /** The action's name inside its route (its `name`, or `<type>` / `<type>#<index>`). */
  action: string;
  actionType: string;
  status: RunStatus;
  /** Attempts started so far. */
  attempts: number;
  maxAttempts: number;
  createdAt: number;
  updatedAt: number;
  /** A queued run is claimable from this time on (retries wait here). */
  availableAt: number;
  /** The run becomes `timeout` if it has not ended by then. */
  deadlineAt: number;
  /** Give up retrying once a retry would start after this time. */
  expiresAt: number;
  leaseOwner: string | null;
  leaseUntil: number | null;
  orderingKey: string | null;
  /** Set while the run is waiting for a callback or upload. */
  correlationId: string | null;
  labels: Record<string, string>;
  error: RunError | null;
  /** A short summary of the last answer (status code, truncated body). */
  result: unknown;
  finishedAt: number | null;
}

export type AttemptOutcome = 'success' | 'failure' | 'retry' | 'timeout' | 'waiting' | 'canceled';

/** One try at a run. */
export interface Attempt {
  runId: string;
  n: number;
  startedAt: number;
  endedAt: number;
  outcome: AttemptOutcome;
  errorCode: string | null;
  errorMessage: string | null;
  httpStatus: number | null;
  /** Truncated response body or summary. */
  response: string | null;
}

export type RunEventType = 'create' | 'update' | 'delete' | 'read';

/** A state change of a run, from the outbox. `seq` orders them; per run they never reorder. */
export interface RunEvent {
  kind: 'run';
  seq: number;
  runId: string;
  eventType: RunEventType;
  status: RunStatus;
  service: string;
  orgId: string;
  at: number;
  /** The run as it is after the change. */
  payload: RunSummary;
}

/** One target inside a run: a machine of a playbook run, a recipient of a broadcast, an object a REST action updated. */
export interface Host extends Owner {
  /** A UUIDv7 of our own. */
  id: string;
  runId: string;
  /** What the run calls it: unique within the run (a host name, an inventory id, a client id). */
  name: string;
  status: RunStatus;
  /** Its output so far (stdout, a console log). */
  log: string;
  /** The highest sequence number of the output it was given, for senders that number their chunks. */
  sequence: number | null;
  /** Whatever the action or profile keeps about it (an inventory id, a subscription-manager id). */
  details: Record<string, unknown>;
  createdAt: number;
  updatedAt: number;
}

/** A state change of a host, from the same outbox as its run's (key = host id). */
export interface HostEvent {
  kind: 'host';
  seq: number;
  runId: string;
  hostId: string;
  eventType: RunEventType;
  status: RunStatus;
  service: string;
  orgId: string;
  at: number;
  /** The host as it is after the change; its `log` as it is when the event is read. */
  payload: Host;
  /** The route and action type of its run (for the streams' filters). */
  route: string | null;
  actionType: string | null;
}

/** What the outbox holds: run events and host events, in one `seq` order. */
export type OutboxEvent = RunEvent | HostEvent;

/** What run events and lists carry of a run. */
export type RunSummary = Omit<Run, 'leaseOwner' | 'leaseUntil'>;

/** Where a dead letter came from. */
export type DeadLetterOrigin = 'intake' | 'run';

export interface DeadLetter extends Owner {
  id: string;
  origin: DeadLetterOrigin;
  /** Input name for intake dead letters (`http`, …), route name for run dead letters. */
  source: string;
  reason: ErrorCode | string;
  error: string;
  /** Problems found, for intake dead letters (JSON pointer + message). */
  details: unknown;
  /** The raw bytes (truncated to the configured bound), as received. */
  raw: Buffer;
  rawTruncated: boolean;
  contentType: string | null;
  /** Request headers or message properties that replay needs (content type, `ce-*`). */
  headers: Record<string, string>;
  runId: string | null;
  eventKey: string | null;
  attempts: number;
  firstSeenAt: number;
  lastSeenAt: number;
  replayedAt: number | null;
}
