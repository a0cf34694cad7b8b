/**
 * The defaults: the first layer of the configuration (defaults ← file ← environment ← flags).
 *
 * Written the way a person writes the file (`30s`, `1MiB`), so that the JSON Schema can show them as its
 * `default`s and the reference in docs/configuration.md reads like a configuration file. The loader
 * normalizes them together with everything else.
 */

import type { RawConfig, RawRetryPolicy, RawRoute } from './schema.js';

/** What a route gets for the fields it leaves out. */
export const ROUTE_DEFAULTS = {
  enabled: true,
  retry: { attempts: 5, backoff: '1s', maxBackoff: '5m', maxAge: '24h' } satisfies RawRetryPolicy,
  timeout: '30s',
  deadline: '1h',
  labels: {} as Record<string, string>,
} as const;

/**
 * With no configuration at all, the one built-in route turns every `example.*` event into a run of the
 * `noop` action, which succeeds: `dispatcher serve` plus one POST shows the whole way of an event.
 * A file that sets `routes` replaces this list.
 */
export const EXAMPLE_ROUTE: RawRoute = { name: 'example', match: { type: 'example.*' }, actions: [{ noop: {} }] };

export const DEFAULTS: RawConfig = {
  server: { host: '127.0.0.1', port: 8080, bodyLimit: '1MiB', requestTimeout: '30s', cors: [], rateLimit: { max: 20_000, window: '1s' } },
  store: { url: 'sqlite:./data/dispatcher.db', poolSize: 10 },
  log: { level: 'info' },
  intake: { strict: false, maxBatch: 1000, maxDepth: 32, maxHops: 8 },
  runner: { concurrency: 512, batchSize: 256, lease: '30s', poll: '1s', sweepInterval: '5s', shutdownTimeout: '10s', dispatchWait: '1s' },
  deadLetters: { maxBytes: '256KiB', maxCount: 100_000 },
  retention: { runs: '30d', events: '30d', runEvents: '7d', deadLetters: '30d', interval: '1m', batchSize: 500 },
  metrics: { enabled: true },
  auth: {
    enabled: true,
    psk: [],
    pskEnv: true,
    defaults: { orgId: 'default', permissions: ['dispatcher:*:*'] },
    keyFile: './data/admin.key',
    tokens: { secrets: [], lifetime: '1h' },
    identityHeader: { enabled: false, name: 'x-rh-identity', types: ['user', 'serviceaccount'], permissions: ['dispatcher:*:read'] },
    publicMetrics: false,
  },
  actions: {
    http: { allow: [], timeout: '10s', maxResponseBytes: '4KiB', userAgent: 'dispatcher' },
  },
  plugins: {},
  inputs: {},
  outputs: {},
  types: {},
  routes: [EXAMPLE_ROUTE],
};
