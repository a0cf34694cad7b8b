/**
 * What the dispatcher lends to its HTTP API and to the profiles: a narrow set of services, never the
 * dispatcher itself. A profile's route takes a message in through a named decoder, resolves the runs that
 * wait for it, records hosts, appends audit entries, reads what the store keeps, and calls other services
 * through the guarded HTTP client; it cannot start, stop or reconfigure anything.
 */

import type { Logger } from 'pino';
import type { Auditor } from './audit.js';
import type { Authenticator } from './authenticator.js';
import type { DispatcherError } from './errors.js';
import type { RunEventFeed } from './feed.js';
import type { AcceptedAnswer, InboundMessage, IntakeAnswer } from './intake.js';
import type { Metrics } from './metrics.js';
import type { HttpClient } from './http.js';
import type { Inboxes } from './inboxes.js';
import type { PublishTo, TransportHealth } from './outbox.js';
import type { Scope } from './principal.js';
import type { Connector } from './connector.js';
import type { RecipientHub } from './recipients.js';
import type { RelayState } from './relay.js';
import type { DeadLetter, Run } from './types.js';
import type { DialectSql, HostResult, HostUpsert, Records, RepublishQuery, ResolveResult, RunResolution } from '../store/types.js';

export type { Records };

export interface InputHealth extends TransportHealth {
  input: string;
  transport: string;
  /** Waiting for the store: deliveries are held, none acknowledged. */
  paused: boolean;
  /** Deliveries held while paused. */
  held: number;
  /** Deliveries handed to intake and not yet ended. */
  inFlight: number;
}

export interface OutputHealth extends TransportHealth {
  output: string;
  transport: string;
  /** Its relays (one per stream) as this process sees them. */
  relays: RelayState[];
}

export interface Health {
  inputs: InputHealth[];
  outputs: OutputHealth[];
  /** Runs executing in this process. */
  inFlight: number;
}

export interface Replayed {
  deadLetter: DeadLetter;
  /** An intake dead letter went through intake again. */
  answer?: IntakeAnswer;
  /** A run dead letter retried its run. */
  run?: Run;
}

export type { HttpAnswer, HttpClient, HttpRequest } from './http.js';
export type { RawMessage } from './outbox.js';

export interface Services {
  readonly log: Logger;
  readonly records: Records;
  /** Credentials → principals (its `psk` and `identity` pieces build a profile's own authentication), clients and tokens. */
  readonly auth: Authenticator;
  readonly audit: Auditor;
  /** Run events and host events as they are written. */
  readonly feed: RunEventFeed;
  readonly metrics: Metrics;
  readonly http: HttpClient;
  /**
   * The recipients (agents) connected to this dispatcher process over `GET /v1/recipients/{id}/connect`:
   * the built-in connector (`send` a directive and wait for its answer, `status`), and who is connected (`list`).
   */
  readonly recipients: RecipientHub;
  /**
   * How directives reach recipients, as `actions.playbook` says: the recipients above, or a Cloud Connector;
   * paced by its token bucket. The `playbook` action sends through it, and so may a profile (a cancel).
   */
  readonly connector: Connector;
  /** Client inboxes: what `deliver` fills, what clients receive and acknowledge; `clientsChanged` when a client is made, changed or deleted. */
  readonly inboxes: Inboxes;
  /**
   * Take a message in as an input would: decoded by the named decoder (`http`, the CloudEvents HTTP
   * binding, by default; or a profile's, `<profile>.<name>`), checked, routed and committed; a bad one is
   * a dead letter that names the decoder, so that a replay decodes it the same way.
   */
  receive(message: InboundMessage, decoder?: string): Promise<IntakeAnswer>;
  /**
   * `receive`, accept-first: each run's first attempt is made before anything is stored, and only the runs
   * it accepted are committed (see `Intake.receiveAccepted`); for an API that answers with what the action said.
   */
  receiveAccepted(message: InboundMessage, decoder: string): Promise<AcceptedAnswer>;
  /** Keep a message refused before it could be decoded (too large, unreadable) as a dead letter; returns the error. */
  reject(message: InboundMessage, error: DispatcherError): Promise<DispatcherError>;
  /** Answers for waiting runs: by run id or by (tenant, correlation id). See `RunResolution`. */
  resolveRuns(resolutions: RunResolution[]): Promise<ResolveResult[]>;
  upsertHosts(hosts: HostUpsert[]): Promise<HostResult[]>;
  cancelRun(id: string, scope?: Scope): Promise<Run>;
  retryRun(id: string, scope?: Scope): Promise<Run>;
  /** A `read` run event for every matching run, for the outputs to publish again. */
  republishRuns(query: RepublishQuery): Promise<number>;
  replayDeadLetter(id: string, scope?: Scope): Promise<Replayed>;
  deleteDeadLetter(id: string, scope?: Scope): Promise<boolean>;
  /** Publish to a configured output: a CloudEvent in its binary mode, or a raw message; resolves once the output confirmed it. */
  readonly publishTo: PublishTo;
  health(): Promise<Health>;
  /** One statement on the profile's own tables (made by its migrations), in the store's dialect. */
  query(sql: DialectSql, params?: readonly unknown[]): Promise<Array<Record<string, unknown>>>;
}
