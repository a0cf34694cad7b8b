/** `dispatcher serve` and `dispatcher migrate`. */

import { findConfigFile, loadConfig } from '../config/load.js';
import type { DispatcherConfig } from '../config/schema.js';
import { createDispatcher } from '../dispatcher.js';
import { profileAdvice } from './advice.js';
import { openStore } from '../store/index.js';
import { CliError, integerOption } from './output.js';

export interface ServeOptions {
  config?: string;
  /** Settings under the file: a seed system's own configuration (see `LoadConfigOptions.base`). */
  base?: { source: string; value: Record<string, unknown> };
  /** Settings over everything, as flags are. */
  overrides?: Record<string, unknown>;
  /** Hosts the HTTP client may reach beside `actions.http.allow` (a profile's API, named by its user). */
  allow?: readonly string[];
  port?: string;
  host?: string;
  store?: string;
  logLevel?: string;
}

export async function configFromFlags(options: ServeOptions): Promise<DispatcherConfig> {
  const overrides: Record<string, Record<string, unknown>> = {};
  if (options.port !== undefined) overrides.server = { ...overrides.server, port: integerOption('port', options.port) };
  if (options.host !== undefined) overrides.server = { ...overrides.server, host: options.host };
  if (options.store !== undefined) overrides.store = { url: options.store };
  if (options.logLevel !== undefined) overrides.log = { level: options.logLevel };
  const config = await loadConfig({
    file: findConfigFile(options.config),
    env: process.env,
    overrides: { ...(options.overrides ?? {}), ...overrides } as never,
    ...(options.base === undefined ? {} : { base: options.base as never }),
  });
  if (options.allow === undefined || options.allow.length === 0) return config;
  // Added to the merged list, which a layer's own `allow` would otherwise replace.
  const allow = [...new Set([...config.actions.http.allow, ...options.allow])];
  return { ...config, actions: { ...config.actions, http: { ...config.actions.http, allow } } };
}

export async function serveCommand(options: ServeOptions): Promise<void> {
  const config = await configFromFlags(options);
  const dispatcher = await createDispatcher({ config });
  for (const advice of profileAdvice(config)) dispatcher.log.warn(advice);
  const address = await dispatcher.listen();
  const file = findConfigFile(options.config);
  dispatcher.log.info(
    { address, config: file ?? null, store: config.store.url.replace(/:[^:@/]*@/, ':***@'), routes: dispatcher.plan.routes.length },
    `dispatcher serving on ${address}, configured by ${file ?? 'the defaults and the environment (no dispatcher.yaml here)'}`,
  );

  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        // A second signal: the operator is not waiting any more.
        dispatcher.log.warn({ signal }, 'second signal: exiting now');
        process.exit(1);
      }
      stopping = true;
      dispatcher.log.info({ signal }, 'stopping: no new events, finishing or releasing runs in flight');
      // Bounded: the runner waits at most shutdownTimeout; past that plus a margin, exit anyway.
      const hard = setTimeout(() => {
        dispatcher.log.error('shutdown took too long; exiting');
        process.exit(1);
      }, config.runner.shutdownTimeout + 5_000);
      hard.unref();
      dispatcher.close().then(
        () => {
          dispatcher.log.info('stopped');
          resolve();
        },
        (err) => {
          dispatcher.log.error({ err }, 'stopping failed');
          process.exitCode = 1;
          resolve();
        },
      );
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

export async function migrateCommand(options: { config?: string; store?: string }): Promise<void> {
  const config = await configFromFlags(options);
  const { configuredMigrations } = await import('../dispatcher.js');
  const store = await openStore({ url: config.store.url, poolSize: 1 });
  try {
    await store.migrate(configuredMigrations(config));
  } catch (err) {
    throw new CliError(`migration failed: ${(err as Error).message}`);
  } finally {
    await store.close();
  }
  process.stdout.write(`the ${store.dialect} store is up to date\n`);
}
