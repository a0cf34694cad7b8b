/**
 * Sections of the configuration that belong to the core as a whole: logging, dead letters, metrics and
 * who may call (auth). The runner's and intake's own sections are declared in runner.ts and intake.ts;
 * the vocabulary is in options.ts.
 */

import { PSK_KEY_PATTERN } from './credentials.js';
import { duration, object, oneOf, section, size, Type, type Options, type SchemaNode } from './options.js';
import type { Grant, PermissionSpec } from './principal.js';

/** The names routes, inputs, outputs and services may have. */
export const NAME_PATTERN = '^[A-Za-z0-9_.:-]+$';
const PERMISSION_PATTERN = '^(\\*|[A-Za-z0-9_.-]+):(\\*|[A-Za-z0-9_.-]+):(\\*|[A-Za-z0-9_.-]+)$';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const LOG_SECTION = section(
  {
    level: oneOf(LOG_LEVELS, { description: 'Least severe level written.', default: 'info' }),
    requests: Type.Boolean({
      description: 'One line per HTTP request, at info: method, path, status, duration, the principal. Failures are logged whatever this says.',
      default: false,
    }),
  },
  { description: 'Logging (JSON lines on standard output).' },
);
export type LogConfig = Options<typeof LOG_SECTION>;

export const DEAD_LETTERS_SECTION = section(
  {
    maxBytes: size('Raw bytes kept per dead letter; the rest is cut off (marked truncated).', '256KiB'),
    maxCount: Type.Integer({ minimum: 1, description: 'Most dead letters kept; beyond it the oldest are deleted.', default: 100_000 }),
  },
  { description: 'What is kept of anything that could not be accepted or finished.' },
);
export type DeadLettersConfig = Options<typeof DEAD_LETTERS_SECTION>;

export const METRICS_SECTION = section(
  { enabled: Type.Boolean({ description: 'Expose metrics on the HTTP server.', default: true }) },
  { description: 'Prometheus metrics.' },
);
export type MetricsConfig = Options<typeof METRICS_SECTION>;

/** A permission as the configuration writes it (see `PermissionSpec`). */
const PERMISSION_NODE: SchemaNode = {
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

/** A list of permissions (strings, or objects with a service filter), as options of a section. */
export const permissions = (description: string, value?: PermissionSpec[]) =>
  Type.Array(Type.Unsafe<PermissionSpec>(PERMISSION_NODE), value === undefined ? { description } : { description, default: value });

export const AUTH_SECTION = section(
  {
    enabled: Type.Boolean({
      description: 'Require a principal. `false` makes every caller an anonymous principal holding every permission: only for a dispatcher no one else can reach.',
      default: true,
    }),
    psk: Type.Array(
      object({
        service: Type.String({ pattern: NAME_PATTERN, description: 'The service the key stands for.' }),
        key: Type.String({ pattern: PSK_KEY_PATTERN, description: 'The key: letters and digits, at least 8 (32 or more recommended; `${VAR}` keeps it out of the file).' }),
        orgId: Type.Optional(Type.String({ minLength: 1, description: 'Its tenant (default `defaults.orgId`).' })),
        permissions: Type.Optional(permissions('Its permissions (default `defaults.permissions`).')),
      }),
      {
        description: 'Pre-shared keys: each names a service (the principal, and the `service` of what it creates). Keys also come from `PSK_AUTH_<SERVICE>=<key>` variables.',
        default: [],
      },
    ),
    pskEnv: Type.Boolean({ description: 'Read pre-shared keys from `PSK_AUTH_<SERVICE>=<key>` environment variables (the service is `<SERVICE>` lower-cased).', default: true }),
    defaults: section(
      {
        orgId: Type.String({ minLength: 1, description: 'The tenant.', default: 'default' }),
        permissions: permissions('The permissions.', ['dispatcher:*:*']),
      },
      { description: 'What a pre-shared key that names none gets (keys from the environment, the generated admin key).' },
    ),
    keyFile: Type.String({
      description:
        'When no credential is configured at all (no pre-shared key, no client, no identity header), `serve` generates an admin key, ' +
        'writes it to this file (mode 0600) and accepts it as the pre-shared key of service `admin` with `defaults`. Empty: never.',
      default: './data/admin.key',
    }),
    tokens: section(
      {
        secrets: Type.Array(Type.String({ minLength: 32 }), {
          description:
            'Signing secrets (at least 32 characters). The first signs; every one verifies, so a new secret can be put first while the old ' +
            'one stays for a token lifetime. Empty: one is generated and kept in the store. In the environment: comma-separated.',
          default: [],
        }),
        lifetime: duration('How long a token is valid.', '1h'),
        rateLimit: section(
          {
            perAddress: Type.Integer({ minimum: 0, description: 'Token requests allowed per client address per window; 0: no such limit.', default: 30 }),
            perClient: Type.Integer({ minimum: 0, description: 'Failed token requests (a wrong secret) allowed per client id per window, from anywhere; 0: no such limit.', default: 10 }),
            window: duration('The window.', '1m'),
          },
          {
            description:
              '`POST /v1/token` has limits of its own, since each request costs a memory-hard hash: per client address, and per client id for ' +
              'failed requests (counted in each process). Over either, `rate_limited` (429) with Retry-After, before the secret is checked. ' +
              'The address limit replaces `server.rateLimit` on that route.',
          },
        ),
      },
      { description: 'Bearer tokens that clients get from `POST /v1/token` with their id and secret.' },
    ),
    identityHeader: section(
      {
        enabled: Type.Boolean({ description: 'Accept the header (when no Authorization header is given).', default: false }),
        name: Type.String({ minLength: 1, description: 'The header name.', default: 'x-rh-identity' }),
        types: Type.Array(Type.String({ minLength: 1 }), { description: 'Identity types accepted (compared lower-cased); others are refused.', default: ['user', 'serviceaccount'] }),
        permissions: permissions('What every identity may do.', ['dispatcher:*:read']),
      },
      {
        description:
          'A header that a trusted gateway sets: base64 JSON `{"identity": {"org_id": …, "type": …, "user": {"username": …}}}`. ' +
          'Anyone who can reach the dispatcher without the gateway could forge it: turn it on only behind one.',
      },
    ),
    publicMetrics: Type.Boolean({ description: '`/metrics` without credentials; otherwise it needs `dispatcher:metrics:read`.', default: false }),
  },
  {
    description:
      'Who may call the API (see docs/auth.md). Every route needs a principal except `/healthz`, `/readyz`, `/openapi.json`, `/docs` and ' +
      '`POST /v1/token` (and `/metrics` when `publicMetrics`): a service with a pre-shared key (`Authorization: PSK <key>`), a client with a ' +
      'bearer token (`Authorization: Bearer <token>`, from `POST /v1/token`), or a user behind a trusted gateway (`identityHeader`).',
  },
);

/** A pre-shared key and the principal it names. */
export interface PskConfig {
  readonly service: string;
  readonly key: string;
  readonly orgId: string;
  readonly grants: readonly Grant[];
  /** Where it was defined: `config` or the environment variable's name. */
  readonly from: string;
}

type AuthOptions = Options<typeof AUTH_SECTION>;

/** `auth`, normalized: permissions become grants, keys from the environment join the configured ones. */
export interface AuthConfig {
  readonly enabled: boolean;
  /** From the configuration and from `PSK_AUTH_<SERVICE>` variables. */
  readonly psk: readonly PskConfig[];
  readonly defaults: { readonly orgId: string; readonly grants: readonly Grant[] };
  /** Absolute path of the generated admin key, or null for none. */
  readonly keyFile: string | null;
  /** `lifetime` in milliseconds; no `secrets`: one is generated and kept in the store. */
  readonly tokens: AuthOptions['tokens'];
  readonly identityHeader: Omit<AuthOptions['identityHeader'], 'permissions'> & { readonly grants: readonly Grant[] };
  readonly publicMetrics: boolean;
}
