/**
 * The action interface: one small contract that every action implements, built-in or plugin.
 *
 * An action type is a factory (`ActionType`) that checks its parameters once, when the configuration is
 * loaded, and returns an `Action`: a prepared, reusable executor for one action of one route. The runner
 * calls `execute` once per attempt of a run. A plugin is a module whose default export (or named export
 * `action`) is an `ActionType`.
 */

import type { Logger } from 'pino';
import type { Connector } from './connector.js';
import type { CloudEvent, Run, RunStatus } from './types.js';
import type { HttpClient } from './http.js';
import type { Inboxes } from './inboxes.js';
import type { PublishTo } from './outbox.js';
import type { HostResult, HostUpsert, Records, ResolveResult, RunResolution } from '../store/types.js';
import type { CompileOptions, Template } from './template.js';

/** What an attempt may report besides throwing. Throw a DispatcherError to fail (retryable or not). */
export type ActionOutcome =
  | {
      status: 'success';
      /** HTTP status of the receiver's answer, when there was one. */
      httpStatus?: number;
      /** A short summary of the answer (truncated by the runner). */
      response?: string;
      /** Anything the action wants kept on the run as its result. */
      result?: unknown;
      /** The run's hosts this attempt made: created with the outcome, in the same transaction. */
      hosts?: OutcomeHost[];
    }
  | {
      /**
       * Work was handed to someone else: the run stays `running` (without a lease) until an answer resolves
       * it (`Services.resolveRuns`, by run id or by tenant and `correlationId`) or its deadline makes it `timeout`.
       */
      status: 'waiting';
      correlationId: string;
      /** When to give up waiting (ms since epoch); the run's deadline otherwise. */
      deadlineAt?: number;
      response?: string;
      /** What the run keeps meanwhile (what was handed over, to whom). */
      result?: unknown;
      /** The targets the work was handed over for (the machines of a playbook run): created with the outcome. */
      hosts?: OutcomeHost[];
    };

/** A host an outcome brings: created with it (a host the run already has by that name is left as it is). */
export interface OutcomeHost {
  name: string;
  status?: RunStatus;
  details?: Record<string, unknown>;
}

export interface ActionContext {
  /** The event the run was planned for. */
  event: CloudEvent;
  /** Stable across attempts: pass it on as an idempotency key (`Idempotency-Key`, `webhook-id`, …). */
  runId: string;
  /** The run: its tenant and service, when it was created, its labels. */
  run: Pick<Run, 'orgId' | 'service' | 'createdAt' | 'labels'>;
  /** 1 for the first attempt. */
  attempt: number;
  /** Aborted when the attempt times out, the run is canceled or the dispatcher stops. */
  signal: AbortSignal;
  /** Hops the event has gone through (for `publish`). */
  hops: number;
  log: Logger;
  /** Render a template against this event (`{{ data.title }}`). */
  render(template: Template): unknown;
  /** Services the core lends to actions. */
  services: ActionServices;
}

/**
 * What the core lends to actions: kept small, so that actions never reach into the core's files. Besides
 * `publish`, each is there when the dispatcher runs the action (tests may leave them out).
 */
export interface ActionServices {
  /** Take an event in as if it arrived on the `embedded` input, one hop further. */
  publish(event: CloudEvent, hops: number): Promise<void>;
  /** Publish to a configured output: a CloudEvent (binary mode) or a raw message. */
  publishTo?: PublishTo;
  /** Create or change the hosts of runs (the action's own, usually). */
  upsertHosts?(hosts: HostUpsert[]): Promise<HostResult[]>;
  /** Answer waiting runs. */
  resolveRuns?(resolutions: RunResolution[]): Promise<ResolveResult[]>;
  /** What the store keeps, to read (runs, hosts): read-only. */
  records?: Records;
  /** HTTP to other services, through the address policy of `actions.http.allow`. */
  http?: HttpClient;
  /**
   * How directives reach recipients (`actions.playbook`): the recipients connected to this dispatcher, or a
   * Cloud Connector; paced by the token bucket of `actions.playbook.rps` and `bucket`.
   */
  connector?: Connector;
  /** Client inboxes (`deliver`): who a topic reaches, and their messages. */
  inboxes?: Inboxes;
  /** The URL this dispatcher is reached at (`server.publicUrl`, else where it listens), without a trailing slash. */
  publicUrl?(): string;
}

export interface Action {
  execute(ctx: ActionContext): Promise<ActionOutcome>;
  /** Release what `create` acquired (connections, agents). */
  close?(): Promise<void>;
}

export interface ActionSettings {
  /** `actions.<type>` from the configuration: settings shared by every action of the type. */
  settings: Record<string, unknown>;
  /**
   * Compile a template (strings with `{{ … }}` anywhere inside a value), found at `at` inside the action's
   * parameters (`['body']`: for error messages); `escape: 'url'` percent-encodes what it renders.
   */
  compile(value: unknown, options?: CompileOptions & { at?: readonly (string | number)[] }): Template;
  log: Logger;
  /** The names of the configured outputs (`publish` to one of them); none when not given. */
  outputs?: readonly string[];
}

export interface ActionType {
  /** The key used in route configuration: `- http: {…}`. */
  readonly type: string;
  /** JSON Schema of the parameters, checked once when the configuration loads. */
  readonly paramsSchema?: object;
  /**
   * Whether an attempt acts on the world outside the dispatcher (default true). Every attempt of an action
   * with side effects appends an audit entry.
   */
  readonly sideEffects?: boolean;
  /** Prepare one action of one route. Throw to reject the configuration. */
  create(params: Record<string, unknown>, settings: ActionSettings): Action | Promise<Action>;
}
