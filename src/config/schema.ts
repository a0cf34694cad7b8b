/**
 * The configuration: one JSON Schema, and the types of what it describes.
 *
 * Words (see ../shared/DESIGN.md §1):
 * - **raw configuration** (`RawConfig`): what a person writes in the YAML file, the environment or flags;
 *   durations and sizes as text (`30s`, `1MiB`) or plain numbers (milliseconds, bytes).
 * - **configuration** (`DispatcherConfig`): what `loadConfig` returns once the layers are merged, checked
 *   against `CONFIG_SCHEMA` and normalized: durations in milliseconds, sizes in bytes, relative paths made
 *   absolute, `schemaFile`s read into `schema`; deep-frozen (its arrays too, though typed as plain arrays so
 *   that they can be handed to functions that take them).
 * - **fixed section**: a section whose keys are all known (`server`, `store`, `log`, `intake`, `runner`,
 *   `deadLetters`, `metrics`, `actions.http`). An unknown key in one is an error, so typos are caught;
 *   each of its scalar options can also be set from an environment variable `DISPATCHER_<PATH>`.
 *
 * Every option is documented here, where it is declared, with its default (taken from `DEFAULTS`, so
 * the two cannot drift); docs/configuration.md and docs/config.schema.json are generated from this file.
 */

import { PSK_KEY_PATTERN } from '../core/credentials.js';
import type { Grant, PermissionSpec } from '../core/principal.js';
import { WAIT_PER_RUN_MS } from '../core/runner.js';
import { DURATION_SCHEMA, durationSchema as duration, SIZE_SCHEMA, sizeSchema as size } from '../core/units.js';
import { DEFAULTS, EXAMPLE_ROUTE, ROUTE_DEFAULTS } from './defaults.js';
import type { DecoderConfig } from '../transports/index.js';
import { INPUT_SCHEMA, OUTPUT_SCHEMA, type TransportName } from '../transports/schema.js';

// ---------------------------------------------------------------------------------------------------
// The raw configuration: as written.

/** `500ms`, `30s`, `5m`, `1h`, `7d`, or a number of milliseconds. */
export type Duration = string | number;
/** `512B`, `64KiB`, `1MiB`, `1MB`, or a number of bytes. */
export type Size = string | number;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface RawRetryPolicy {
  attempts: number;
  backoff: Duration;
  maxBackoff: Duration;
  maxAge: Duration;
}

/** One item of a route's `actions`: one action-type key → its parameters, plus an optional `name`. */
export type RawRouteAction = { name?: string } & Record<string, unknown>;

export interface RawRoute {
  name: string;
  description?: string;
  enabled?: boolean;
  match: Record<string, unknown>;
  actions: RawRouteAction[];
  retry?: Partial<RawRetryPolicy>;
  timeout?: Duration;
  deadline?: Duration;
  concurrency?: number;
  orderingKey?: string;
  labels?: Record<string, string>;
}

export interface RawTypeConfig {
  description?: string;
  schema?: JsonSchema;
  schemaFile?: string;
}

// Type aliases (not interfaces) so that they fit the open `actions` map's index signature.
export type RawHttpActionSettings = {
  allow: string[];
  signingSecret?: string;
  timeout: Duration;
  maxResponseBytes: Size;
  userAgent: string;
};

export type RawActionsConfig = { http: RawHttpActionSettings } & Record<string, Record<string, unknown>>;

export interface RawConfig {
  server: {
    host: string;
    port: number;
    bodyLimit: Size;
    requestTimeout: Duration;
    cors: Array<{ path: string; origins: string[]; methods?: string[]; headers?: string[]; credentials?: boolean; maxAge?: Duration }>;
    rateLimit: { max: number; window: Duration };
  };
  store: { url: string; poolSize: number };
  log: { level: LogLevel };
  intake: { strict: boolean; maxBatch: number; maxDepth: number; maxHops: number };
  runner: {
    concurrency: number;
    batchSize: number;
    lease: Duration;
    poll: Duration;
    sweepInterval: Duration;
    shutdownTimeout: Duration;
    dispatchWait: Duration;
  };
  deadLetters: { maxBytes: Size; maxCount: number };
  retention: { runs: Duration; events: Duration; runEvents: Duration; deadLetters: Duration; interval: Duration; batchSize: number };
  metrics: { enabled: boolean };
  auth: RawAuthConfig;
  actions: RawActionsConfig;
  plugins: Record<string, string>;
  inputs: Record<string, Record<string, unknown>>;
  outputs: Record<string, Record<string, unknown>>;
  types: Record<string, RawTypeConfig>;
  routes: RawRoute[];
}

export interface RawAuthConfig {
  enabled: boolean;
  psk: Array<{ service: string; key: string; orgId?: string; permissions?: PermissionSpec[] }>;
  pskEnv: boolean;
  defaults: { orgId: string; permissions: PermissionSpec[] };
  keyFile: string;
  tokens: { secrets: string[]; lifetime: Duration };
  identityHeader: { enabled: boolean; name: string; types: string[]; permissions: PermissionSpec[] };
  publicMetrics: boolean;
}

/** Every property optional, all the way down; arrays stay whole (a layer that sets one replaces it). */
export type DeepPartial<T> = T extends readonly unknown[]
  ? T
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

// ---------------------------------------------------------------------------------------------------
// The configuration: merged, checked, normalized, frozen.

/** A JSON Schema, as given for an event type. */
export type JsonSchema = Record<string, unknown>;

export interface ServerConfig {
  readonly host: string;
  readonly port: number;
  /** Bytes. */
  readonly bodyLimit: number;
  /** Milliseconds. */
  readonly requestTimeout: number;
  /** CORS, per path prefix; the first entry whose path starts the request's path applies. */
  readonly cors: ReadonlyArray<{
    readonly path: string;
    readonly origins: readonly string[];
    readonly methods: readonly string[];
    readonly headers: readonly string[];
    readonly credentials: boolean;
    /** Seconds. */
    readonly maxAge: number;
  }>;
  /** Requests per window per principal; 0 turns the limit off. `window` in milliseconds. */
  readonly rateLimit: { readonly max: number; readonly window: number };
}

export interface StoreConfig {
  /** `sqlite:<file>` (`sqlite::memory:` for a throw-away store) or `postgres://user@host:5432/db`. */
  readonly url: string;
  readonly poolSize: number;
}

export interface LogConfig {
  readonly level: LogLevel;
}

export interface IntakeConfig {
  readonly strict: boolean;
  readonly maxBatch: number;
  readonly maxDepth: number;
  readonly maxHops: number;
}

/** All durations in milliseconds. */
export interface RunnerConfig {
  readonly concurrency: number;
  readonly batchSize: number;
  readonly lease: number;
  readonly poll: number;
  readonly sweepInterval: number;
  readonly shutdownTimeout: number;
  readonly dispatchWait: number;
}

export interface DeadLettersConfig {
  /** Bytes. */
  readonly maxBytes: number;
  readonly maxCount: number;
}

/** How long finished records are kept, all in milliseconds; 0 keeps them forever. */
export interface RetentionConfig {
  readonly runs: number;
  readonly events: number;
  readonly runEvents: number;
  readonly deadLetters: number;
  readonly interval: number;
  readonly batchSize: number;
}

export interface MetricsConfig {
  readonly enabled: boolean;
}

/** A pre-shared key and the principal it names. */
export interface PskConfig {
  readonly service: string;
  readonly key: string;
  readonly orgId: string;
  readonly grants: readonly Grant[];
  /** Where it was defined: `config` or the environment variable's name. */
  readonly from: string;
}

export interface AuthConfig {
  readonly enabled: boolean;
  /** From the configuration and from `PSK_AUTH_<SERVICE>` variables. */
  readonly psk: readonly PskConfig[];
  readonly defaults: { readonly orgId: string; readonly grants: readonly Grant[] };
  /** Absolute path of the generated admin key, or null for none. */
  readonly keyFile: string | null;
  /** `lifetime` in milliseconds; no `secrets`: one is generated and kept in the store. */
  readonly tokens: { readonly secrets: readonly string[]; readonly lifetime: number };
  readonly identityHeader: { readonly enabled: boolean; readonly name: string; readonly types: readonly string[]; readonly grants: readonly Grant[] };
  readonly publicMetrics: boolean;
}

/** `actions.http`, normalized: `timeout` in milliseconds, `maxResponseBytes` in bytes. */
export type HttpActionSettings = {
  readonly allow: string[];
  readonly signingSecret?: string;
  readonly timeout: number;
  readonly maxResponseBytes: number;
  readonly userAgent: string;
};

/** `actions`: settings shared by every action of a type, keyed by action type. Only `http` is normalized. */
export type ActionsConfig = { readonly http: HttpActionSettings } & Readonly<Record<string, Readonly<Record<string, unknown>>>>;

export interface TypeConfig {
  readonly description?: string;
  /** The JSON Schema the event's `data` must satisfy; read from `schemaFile` when that was given. */
  readonly schema?: JsonSchema;
  /** Absolute path of the file `schema` was read from. */
  readonly schemaFile?: string;
}

/** All durations in milliseconds. */
export interface RetryPolicy {
  readonly attempts: number;
  readonly backoff: number;
  readonly maxBackoff: number;
  readonly maxAge: number;
}

/**
 * One action of a route, as written: exactly one key, the action type, whose value is its parameters
 * (`null` in the file becomes `{}`), plus an optional `name`: `{ http: { url: … }, name: 'notify' }`.
 * Parameters are not normalized (templates, and durations as text: they are the action's to read).
 */
export type RouteAction = { readonly name?: string } & Readonly<Record<string, unknown>>;

export interface RouteConfig {
  readonly name: string;
  readonly description?: string;
  readonly enabled: boolean;
  /** Open object: the router checks its content (`type`, `topic`, `data`, extensions). */
  readonly match: Readonly<Record<string, unknown>>;
  readonly actions: RouteAction[];
  readonly retry: RetryPolicy;
  /** One attempt, milliseconds. */
  readonly timeout: number;
  /** The whole run, milliseconds. */
  readonly deadline: number;
  readonly concurrency?: number;
  /** A template. */
  readonly orderingKey?: string;
  /** String templates. */
  readonly labels: Readonly<Record<string, string>>;
}

export interface InputConfig {
  readonly name: string;
  readonly transport: TransportName;
  /** The transport's options, as checked against its schema. */
  readonly options: Readonly<Record<string, unknown>>;
  readonly decoder: DecoderConfig;
  readonly service: string;
  readonly orgId: string;
  readonly maxBytes: number;
}

export interface OutputConfig {
  readonly name: string;
  readonly transport: TransportName;
  readonly options: Readonly<Record<string, unknown>>;
  /** Relay run events to this topic. */
  readonly runEvents?: { readonly topic: string };
  /** Relay dead letters to this topic. */
  readonly deadLetters?: { readonly topic: string };
}

export interface DispatcherConfig {
  readonly server: ServerConfig;
  readonly store: StoreConfig;
  readonly log: LogConfig;
  readonly intake: IntakeConfig;
  readonly runner: RunnerConfig;
  readonly deadLetters: DeadLettersConfig;
  readonly retention: RetentionConfig;
  readonly metrics: MetricsConfig;
  readonly auth: AuthConfig;
  readonly actions: ActionsConfig;
  /** Action type → module: an absolute path (relative ones were resolved) or a package name. */
  readonly plugins: Readonly<Record<string, string>>;
  /** Bus inputs, in the order configured. */
  readonly inputs: readonly InputConfig[];
  /** Bus outputs, in the order configured. */
  readonly outputs: readonly OutputConfig[];
  readonly types: Readonly<Record<string, TypeConfig>>;
  readonly routes: RouteConfig[];
}

// ---------------------------------------------------------------------------------------------------
// The schema.

/** The subset of JSON Schema this file uses; enough for the loader and the docs generator to walk it. */
export interface SchemaNode {
  readonly $schema?: string;
  readonly title?: string;
  readonly description?: string;
  readonly type?: string | readonly string[];
  readonly default?: unknown;
  readonly examples?: readonly unknown[];
  readonly enum?: readonly unknown[];
  readonly pattern?: string;
  readonly minimum?: number;
  readonly maximum?: number;
  readonly minLength?: number;
  readonly minItems?: number;
  readonly minProperties?: number;
  readonly properties?: Readonly<Record<string, SchemaNode>>;
  readonly additionalProperties?: boolean | SchemaNode;
  readonly propertyNames?: SchemaNode;
  readonly required?: readonly string[];
  readonly items?: SchemaNode;
  readonly anyOf?: readonly SchemaNode[];
  readonly not?: SchemaNode;
}

/** The sections whose scalar options can be set from `DISPATCHER_*` environment variables. */
export const FIXED_SECTIONS = ['server', 'store', 'log', 'intake', 'runner', 'deadLetters', 'retention', 'metrics', 'auth', 'actions.http'] as const;

const NAME_PATTERN = '^[A-Za-z0-9_.:-]+$';
const PERMISSION_PATTERN = '^(\\*|[A-Za-z0-9_.-]+):(\\*|[A-Za-z0-9_.-]+):(\\*|[A-Za-z0-9_.-]+)$';

/** The kind of a schema node holding a duration or a size, or null. */
export function unitOf(node: SchemaNode | undefined): 'duration' | 'size' | null {
  const pattern = node?.anyOf?.[1]?.pattern;
  if (pattern === undefined) return null;
  if (pattern === DURATION_SCHEMA.anyOf[1].pattern) return 'duration';
  if (pattern === SIZE_SCHEMA.anyOf[1].pattern) return 'size';
  return null;
}

const d = DEFAULTS;
const http = d.actions.http;

const RETRY_SCHEMA: SchemaNode = {
  type: 'object',
  description: 'How failed attempts are retried: exponential backoff with full jitter, honouring Retry-After.',
  additionalProperties: false,
  default: ROUTE_DEFAULTS.retry,
  properties: {
    attempts: {
      type: 'integer',
      minimum: 1,
      description: 'Attempts in all, the first included (1: never retry).',
      default: ROUTE_DEFAULTS.retry.attempts,
    },
    backoff: duration('Wait before the first retry; doubles with each further retry.', ROUTE_DEFAULTS.retry.backoff),
    maxBackoff: duration('The longest wait between two attempts.', ROUTE_DEFAULTS.retry.maxBackoff),
    maxAge: duration(
      'Give up (failure and a dead letter) once a retry would start later than this after the run was created.',
      ROUTE_DEFAULTS.retry.maxAge,
    ),
  },
};

const ROUTE_ACTION_SCHEMA: SchemaNode = {
  type: 'object',
  description:
    'One action: exactly one key, the action type (`http`, `publish`, `noop`, a plugin type …), whose value is ' +
    'its parameters; plus an optional `name`. Strings in parameters may hold templates (`{{ data.title }}`).',
  minProperties: 1,
  properties: {
    name: {
      type: 'string',
      pattern: NAME_PATTERN,
      description: "The action's name inside its route (runs show it); unique within the route. Default: its type.",
    },
  },
  additionalProperties: {
    type: ['object', 'null'],
    description: 'The parameters of the action, as the action type defines them; not normalized (`null`: none).',
  },
};

const ROUTE_SCHEMA: SchemaNode = {
  type: 'object',
  description: 'A route: events that `match` become runs of its `actions`.',
  additionalProperties: false,
  required: ['name', 'match', 'actions'],
  properties: {
    name: {
      type: 'string',
      pattern: NAME_PATTERN,
      description: 'Unique name of the route (letters, digits, `_`, `.`, `:`, `-`); runs refer to it.',
    },
    description: { type: 'string', description: 'What the route is for.' },
    enabled: { type: 'boolean', description: 'A disabled route matches nothing.', default: ROUTE_DEFAULTS.enabled },
    match: {
      type: 'object',
      description:
        'Which events the route takes: `type` (exact or with `*` wildcards), `topic` (AMQP pattern: `*` one word, ' +
        '`#` any number), `data` (path → accepted values) and extension attributes. The router checks its content.',
    },
    actions: {
      type: 'array',
      minItems: 1,
      description: 'What to run for a matched event: one run per action.',
      items: ROUTE_ACTION_SCHEMA,
    },
    retry: RETRY_SCHEMA,
    timeout: duration('Longest time one attempt may take (then `attempt_timeout`, retryable).', ROUTE_DEFAULTS.timeout),
    deadline: duration('Longest time the whole run may take, retries and waiting included (then `timeout`).', ROUTE_DEFAULTS.deadline),
    concurrency: {
      type: 'integer',
      minimum: 1,
      description: 'At most this many runs of this route at once. Default: no limit.',
    },
    orderingKey: {
      type: 'string',
      minLength: 1,
      description: 'Template (`{{ subject }}`): runs with the same key run one at a time, in the order of their events.',
    },
    labels: {
      type: 'object',
      description: 'Labels put on every run of the route; values are string templates.',
      default: ROUTE_DEFAULTS.labels,
      additionalProperties: { type: 'string', description: 'A string template (`{{ data.team }}`).' },
    },
  },
};

const TYPE_SCHEMA: SchemaNode = {
  type: 'object',
  description: 'A registered event type (the key is the CloudEvents `type`). Give `schema` or `schemaFile`, not both.',
  additionalProperties: false,
  properties: {
    description: { type: 'string', description: 'What events of this type mean.' },
    schema: {
      type: 'object',
      description: "JSON Schema that the event's `data` must satisfy (else the event is a dead letter, `schema_violation`).",
    },
    schemaFile: {
      type: 'string',
      minLength: 1,
      description: 'File holding the JSON Schema (JSON or YAML), relative to the configuration file; read into `schema`.',
    },
  },
  not: { type: 'object', required: ['schema', 'schemaFile'] },
};

const PERMISSION_SCHEMA: SchemaNode = {
  description:
    '`app:resource:verb` (each a name or `*`), e.g. `dispatcher:runs:read`; or `{ permission, service }` where `service` (a name or a list) ' +
    'limits it to the records those services created; or an RBAC access entry `{ permission, resourceDefinitions: [{ attributeFilter: ' +
    '{ key: service, operation: equal|in, value } }] }`.',
  anyOf: [
    { type: 'string', pattern: PERMISSION_PATTERN },
    {
      type: 'object',
      additionalProperties: false,
      required: ['permission'],
      properties: {
        permission: { type: 'string', pattern: PERMISSION_PATTERN },
        service: { anyOf: [{ type: 'string', minLength: 1 }, { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } }] },
        resourceDefinitions: {
          type: 'array',
          items: {
            type: 'object',
            required: ['attributeFilter'],
            properties: {
              attributeFilter: {
                type: 'object',
                required: ['key', 'operation', 'value'],
                properties: { key: { enum: ['service'] }, operation: { enum: ['equal', 'in'] }, value: {} },
              },
            },
          },
        },
      },
    },
  ],
};

export const CONFIG_SCHEMA: SchemaNode = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'Dispatcher configuration',
  description:
    'Configuration of the Dispatcher event dispatcher. Layers, each overriding the one before: defaults ← this ' +
    'file ← environment (`DISPATCHER_*`) ← command-line flags. Durations: `500ms`, `30s`, `5m`, `1h`, `7d` or ' +
    'milliseconds; sizes: `512B`, `64KiB`, `1MiB`, `1MB` or bytes.',
  type: 'object',
  additionalProperties: false,
  properties: {
    server: {
      type: 'object',
      description: 'The HTTP server: the HTTP input and the API.',
      additionalProperties: false,
      default: d.server,
      properties: {
        host: { type: 'string', minLength: 1, description: 'Address to listen on (`0.0.0.0` for every interface).', default: d.server.host },
        port: { type: 'integer', minimum: 0, maximum: 65535, description: 'Port to listen on (0: any free port).', default: d.server.port },
        bodyLimit: size('Largest request body accepted; larger ones get `payload_too_large`.', d.server.bodyLimit),
        requestTimeout: duration('Longest time the server waits for a whole request.', d.server.requestTimeout),
        cors: {
          type: 'array',
          description:
            'Cross-origin requests from browsers, per path prefix: the first entry whose `path` starts the request path ' +
            'applies; a path no entry covers answers no CORS headers. Example: `[{ path: "/v1/", origins: ["https://console.example.com"] }]`.',
          default: d.server.cors,
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['path', 'origins'],
            properties: {
              path: { type: 'string', pattern: '^/', description: 'Path prefix, e.g. `/v1/`.' },
              origins: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 }, description: 'Allowed origins (`https://host[:port]`), or `*` for any.' },
              methods: { type: 'array', items: { type: 'string' }, description: 'Allowed methods (default GET, POST, DELETE).' },
              headers: { type: 'array', items: { type: 'string' }, description: 'Allowed request headers (default: those the browser asks for).' },
              credentials: { type: 'boolean', description: 'Allow credentials (cookies, Authorization); not with `*` (default false).' },
              maxAge: duration('How long a browser may cache the preflight answer (default 10m).'),
            },
          },
        },
        rateLimit: {
          type: 'object',
          description: 'Requests per principal (the caller; until authentication, the client address) per window; over it, `rate_limited` (429) with Retry-After. Health, readiness and metrics are not limited.',
          additionalProperties: false,
          default: d.server.rateLimit,
          properties: {
            max: { type: 'integer', minimum: 0, description: 'Requests allowed per window; 0 turns the limit off.', default: d.server.rateLimit.max },
            window: duration('The window.', d.server.rateLimit.window),
          },
        },
      },
    },
    store: {
      type: 'object',
      description: 'Where events, runs, run events and dead letters are kept.',
      additionalProperties: false,
      default: d.store,
      properties: {
        url: {
          type: 'string',
          pattern: '^(sqlite:.+|postgres(ql)?://.+)$',
          description:
            '`sqlite:<file>` (embedded; a relative file is taken from the working directory; `sqlite::memory:` for a ' +
            'throw-away store) or `postgres://user:password@host:5432/db` (scale-out; `?schema=NAME` keeps the tables in ' +
            'that schema, created if missing).',
          default: d.store.url,
        },
        poolSize: { type: 'integer', minimum: 1, description: 'Connections in the pool (PostgreSQL).', default: d.store.poolSize },
      },
    },
    log: {
      type: 'object',
      description: 'Logging (JSON lines on standard output).',
      additionalProperties: false,
      default: d.log,
      properties: {
        level: { type: 'string', enum: LOG_LEVELS, description: 'Least severe level written.', default: d.log.level },
      },
    },
    intake: {
      type: 'object',
      description: 'How events are taken in and checked.',
      additionalProperties: false,
      default: d.intake,
      properties: {
        strict: {
          type: 'boolean',
          description: 'Reject events whose type is not registered under `types` (dead letter, `unknown_type`).',
          default: d.intake.strict,
        },
        maxBatch: { type: 'integer', minimum: 1, description: 'Most events in one batch (`batch_too_large` beyond).', default: d.intake.maxBatch },
        maxDepth: { type: 'integer', minimum: 1, description: 'Deepest JSON nesting accepted (`too_deep` beyond).', default: d.intake.maxDepth },
        maxHops: {
          type: 'integer',
          minimum: 0,
          description: 'Most `publish` hops an event may have gone through (`hop_limit_exceeded` beyond): stops routing loops.',
          default: d.intake.maxHops,
        },
      },
    },
    runner: {
      type: 'object',
      description: 'How runs are claimed and executed.',
      additionalProperties: false,
      default: d.runner,
      properties: {
        concurrency: { type: 'integer', minimum: 1, description: 'Most runs executing at once in this process.', default: d.runner.concurrency },
        batchSize: { type: 'integer', minimum: 1, description: 'Most runs claimed in one query.', default: d.runner.batchSize },
        lease: duration('How long a claim holds; the worker renews it while the run executes.', d.runner.lease),
        poll: duration('How often to look for queued runs when none were signalled.', d.runner.poll),
        sweepInterval: duration('How often expired leases are requeued and expired deadlines turned into `timeout`.', d.runner.sweepInterval),
        shutdownTimeout: duration('How long a stopping process waits for executing runs before it aborts them and puts them back in the queue (runs whose attempt ended have their outcome recorded instead).', d.runner.shutdownTimeout),
        dispatchWait: duration(
          `How long intake may wait for this process to have room for the runs of events sent over HTTP or the embedded API, while the ` +
            `runs executing end fast enough to make that room in time; a call waits at most ${WAIT_PER_RUN_MS} ms per run it wants started ` +
            `(a single event ${WAIT_PER_RUN_MS} ms, a batch of 100 events up to ${(100 * WAIT_PER_RUN_MS) / 1000} s), so that senders are not ` +
            'held back when the runs end slowly. Runs that get room are committed already claimed and start at once; ' +
            'the others are queued and claimed later, which costs an update and a run event each. Runs already queued are overtaken so for at ' +
            'most this long; then the room that frees up goes to them first, and intake only waits (a slot free the moment an event ' +
            'comes is still taken). A bus input never waits (its messages are committed ' +
            'in the order they came), nor does an event a `publish` action sends. `0` never waits.',
          d.runner.dispatchWait,
        ),
      },
    },
    deadLetters: {
      type: 'object',
      description: 'What is kept of anything that could not be accepted or finished.',
      additionalProperties: false,
      default: d.deadLetters,
      properties: {
        maxBytes: size('Raw bytes kept per dead letter; the rest is cut off (marked truncated).', d.deadLetters.maxBytes),
        maxCount: { type: 'integer', minimum: 1, description: 'Most dead letters kept; beyond it the oldest are deleted.', default: d.deadLetters.maxCount },
      },
    },
    retention: {
      type: 'object',
      description:
        'How long finished records are kept. The sweeper deletes older ones in small batches (`batchSize` a kind at a time, ' +
        'each in its own short transaction), so pruning never stalls intake. `0` keeps a kind forever. The audit log is never pruned.',
      additionalProperties: false,
      default: d.retention,
      properties: {
        runs: duration('Runs that ended (success, failure, timeout, canceled) longer ago than this are deleted, with their attempts.', d.retention.runs),
        events: duration('Events received longer ago than this are deleted once none of their runs is left.', d.retention.events),
        runEvents: duration('Run events (the outbox) older than this are deleted.', d.retention.runEvents),
        deadLetters: duration('Dead letters last seen longer ago than this are deleted.', d.retention.deadLetters),
        interval: duration('How often pruning runs.', d.retention.interval),
        batchSize: { type: 'integer', minimum: 1, description: 'Most records of one kind deleted in one transaction.', default: d.retention.batchSize },
      },
    },
    metrics: {
      type: 'object',
      description: 'Prometheus metrics.',
      additionalProperties: false,
      default: d.metrics,
      properties: {
        enabled: { type: 'boolean', description: 'Expose metrics on the HTTP server.', default: d.metrics.enabled },
      },
    },
    auth: {
      type: 'object',
      description:
        'Who may call the API (see docs/auth.md). Every route needs a principal except `/healthz`, `/readyz`, `/openapi.json`, `/docs` and ' +
        '`POST /v1/token` (and `/metrics` when `publicMetrics`): a service with a pre-shared key (`Authorization: PSK <key>`), a client with a ' +
        'bearer token (`Authorization: Bearer <token>`, from `POST /v1/token`), or a user behind a trusted gateway (`identityHeader`).',
      additionalProperties: false,
      default: d.auth,
      properties: {
        enabled: {
          type: 'boolean',
          description: 'Require a principal. `false` makes every caller an anonymous principal holding every permission: only for a dispatcher no one else can reach.',
          default: d.auth.enabled,
        },
        psk: {
          type: 'array',
          description: 'Pre-shared keys: each names a service (the principal, and the `service` of what it creates). Keys also come from `PSK_AUTH_<SERVICE>=<key>` variables.',
          default: d.auth.psk,
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['service', 'key'],
            properties: {
              service: { type: 'string', pattern: NAME_PATTERN, description: 'The service the key stands for.' },
              key: { type: 'string', pattern: PSK_KEY_PATTERN, description: 'The key: letters and digits, at least 8 (32 or more recommended; `${VAR}` keeps it out of the file).' },
              orgId: { type: 'string', minLength: 1, description: 'Its tenant (default `defaults.orgId`).' },
              permissions: { type: 'array', items: PERMISSION_SCHEMA, description: 'Its permissions (default `defaults.permissions`).' },
            },
          },
        },
        pskEnv: { type: 'boolean', description: 'Read pre-shared keys from `PSK_AUTH_<SERVICE>=<key>` environment variables (the service is `<SERVICE>` lower-cased).', default: d.auth.pskEnv },
        defaults: {
          type: 'object',
          description: 'What a pre-shared key that names none gets (keys from the environment, the generated admin key).',
          additionalProperties: false,
          default: d.auth.defaults,
          properties: {
            orgId: { type: 'string', minLength: 1, description: 'The tenant.', default: d.auth.defaults.orgId },
            permissions: { type: 'array', items: PERMISSION_SCHEMA, description: 'The permissions.', default: d.auth.defaults.permissions },
          },
        },
        keyFile: {
          type: 'string',
          description:
            'When no credential is configured at all (no pre-shared key, no client, no identity header), `serve` generates an admin key, ' +
            'writes it to this file (mode 0600) and accepts it as the pre-shared key of service `admin` with `defaults`. Empty: never.',
          default: d.auth.keyFile,
        },
        tokens: {
          type: 'object',
          description: 'Bearer tokens that clients get from `POST /v1/token` with their id and secret.',
          additionalProperties: false,
          default: d.auth.tokens,
          properties: {
            secrets: {
              type: 'array',
              items: { type: 'string', minLength: 32 },
              description:
                'Signing secrets (at least 32 characters). The first signs; every one verifies, so a new secret can be put first while the old ' +
                'one stays for a token lifetime. Empty: one is generated and kept in the store. In the environment: comma-separated.',
              default: d.auth.tokens.secrets,
            },
            lifetime: duration('How long a token is valid.', d.auth.tokens.lifetime),
          },
        },
        identityHeader: {
          type: 'object',
          description:
            'A header that a trusted gateway sets: base64 JSON `{"identity": {"org_id": …, "type": …, "user": {"username": …}}}`. ' +
            'Anyone who can reach the dispatcher without the gateway could forge it: turn it on only behind one.',
          additionalProperties: false,
          default: d.auth.identityHeader,
          properties: {
            enabled: { type: 'boolean', description: 'Accept the header (when no Authorization header is given).', default: d.auth.identityHeader.enabled },
            name: { type: 'string', minLength: 1, description: 'The header name.', default: d.auth.identityHeader.name },
            types: { type: 'array', items: { type: 'string', minLength: 1 }, description: 'Identity types accepted (compared lower-cased); others are refused.', default: d.auth.identityHeader.types },
            permissions: { type: 'array', items: PERMISSION_SCHEMA, description: 'What every identity may do.', default: d.auth.identityHeader.permissions },
          },
        },
        publicMetrics: { type: 'boolean', description: '`/metrics` without credentials; otherwise it needs `dispatcher:metrics:read`.', default: d.auth.publicMetrics },
      },
    },
    actions: {
      type: 'object',
      description: 'Settings shared by every action of a type; the key is the action type.',
      default: d.actions,
      properties: {
        http: {
          type: 'object',
          description: 'The `http` action (webhooks).',
          additionalProperties: false,
          default: http,
          properties: {
            allow: {
              type: 'array',
              items: { type: 'string', minLength: 1, description: 'A host name, an IP address or a CIDR range.' },
              description:
                'Private, loopback and link-local targets that webhooks may reach anyway (blocked otherwise, ' +
                '`address_blocked`). In the environment: comma-separated.',
              default: http.allow,
            },
            signingSecret: {
              type: 'string',
              minLength: 1,
              description: 'Secret (`whsec_…`) to sign requests with, Standard Webhooks style (`webhook-signature`). Unset: unsigned.',
            },
            timeout: duration('Longest time one request may take, unless the route allows less.', http.timeout),
            maxResponseBytes: size("How much of the receiver's answer is kept on the run.", http.maxResponseBytes),
            userAgent: { type: 'string', description: 'The `User-Agent` header.', default: http.userAgent },
          },
        },
      },
      additionalProperties: {
        type: 'object',
        description: 'Settings of one action type, as the action defines them (not normalized).',
      },
    },
    inputs: {
      type: 'object',
      description: 'Bus inputs, by name (see docs/transports.md). Each names exactly one transport: `kafka`, `amqp`, `nats`, `sqs` or `mqtt`.',
      default: d.inputs,
      propertyNames: { type: 'string', pattern: NAME_PATTERN },
      additionalProperties: INPUT_SCHEMA,
    },
    outputs: {
      type: 'object',
      description: 'Bus outputs, by name (see docs/transports.md): where run events and dead letters are relayed and where `publish` actions may send.',
      default: d.outputs,
      propertyNames: { type: 'string', pattern: NAME_PATTERN },
      additionalProperties: OUTPUT_SCHEMA,
    },
    plugins: {
      type: 'object',
      description: 'Action types provided by modules: action type → module.',
      default: d.plugins,
      propertyNames: { type: 'string', minLength: 1 },
      additionalProperties: {
        type: 'string',
        minLength: 1,
        description:
          'A module path (`./plugins/x.js`: relative to the configuration file) or a package name; its default export ' +
          '(or export `action`) is the action type.',
      },
    },
    types: {
      type: 'object',
      description: 'Registered event types, keyed by CloudEvents `type`.',
      default: d.types,
      propertyNames: { type: 'string', minLength: 1 },
      additionalProperties: TYPE_SCHEMA,
    },
    routes: {
      type: 'array',
      description: 'The routes, in order. Setting this replaces the built-in `example` route.',
      default: [EXAMPLE_ROUTE],
      items: ROUTE_SCHEMA,
    },
  },
};

// ---------------------------------------------------------------------------------------------------
// Walking the schema: value kinds and the environment variables derived from it.

/** What a scalar option holds, as far as coercing text (an environment variable) into it goes. */
export type ValueKind = 'string' | 'integer' | 'number' | 'boolean' | 'duration' | 'size' | 'string[]';

/** The kind of a leaf, or null for objects and anything else that text cannot be coerced into. */
export function kindOf(node: SchemaNode | undefined): ValueKind | null {
  if (node === undefined) return null;
  const unit = unitOf(node);
  if (unit !== null) return unit;
  switch (node.type) {
    case 'string':
    case 'integer':
    case 'number':
    case 'boolean':
      return node.type;
    case 'array':
      return node.items?.type === 'string' ? 'string[]' : null;
    default:
      return null;
  }
}

/** `deadLetters.maxCount` → `DISPATCHER_DEAD_LETTERS_MAX_COUNT`. */
export function envVariableName(path: readonly string[]): string {
  return ['DISPATCHER', ...path.map((key) => key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase())].join('_');
}

export interface EnvOption {
  /** `DISPATCHER_SERVER_PORT`. */
  readonly variable: string;
  /** `['server', 'port']`. */
  readonly path: readonly string[];
  readonly kind: ValueKind;
  readonly node: SchemaNode;
}

/** The schema node at a path of keys (array indexes step into `items`), or undefined when there is none. */
export function schemaAt(path: readonly (string | number)[], root: SchemaNode = CONFIG_SCHEMA): SchemaNode | undefined {
  let node: SchemaNode | undefined = root;
  for (const key of path) {
    if (node === undefined) return undefined;
    if (node.type === 'array') {
      node = node.items;
    } else {
      const named: SchemaNode | undefined = node.properties?.[String(key)];
      node = named ?? (typeof node.additionalProperties === 'object' ? node.additionalProperties : undefined);
    }
  }
  return node;
}

function collectEnvOptions(): EnvOption[] {
  const options: EnvOption[] = [];
  const visit = (node: SchemaNode, path: string[]): void => {
    for (const [key, child] of Object.entries(node.properties ?? {})) {
      const childPath = [...path, key];
      const kind = kindOf(child);
      if (kind !== null) options.push({ variable: envVariableName(childPath), path: childPath, kind, node: child });
      else if (child.type === 'object') visit(child, childPath);
    }
  };
  for (const section of FIXED_SECTIONS) {
    const path = section.split('.');
    const node = schemaAt(path);
    if (node !== undefined) visit(node, path);
  }
  return options;
}

/** Every option that an environment variable can set: each scalar leaf of the fixed sections. */
export const ENV_OPTIONS: readonly EnvOption[] = collectEnvOptions();
