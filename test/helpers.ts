/**
 * Test helpers: a real dispatcher on a real SQLite file in a fresh temporary folder, built through the same
 * configuration loader as `serve`; polling helpers that fail with what they last saw.
 */

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance, InjectOptions } from 'fastify';
import pg from 'pg';
import { pino } from 'pino';
import { loadConfig } from '../src/config/load.js';
import type { DispatcherConfig } from '../src/config/schema.js';
import { createDispatcher, type Dispatcher } from '../src/dispatcher.js';
import type { ActionType } from '../src/core/action.js';
import type { Run } from '../src/core/types.js';
import type { Preset } from '../src/preset.js';

/** The pre-shared key of service `test` that `startDispatcher` configures (every permission, tenant `default`). */
export const TEST_KEY = 'testKey0123456789abcdefABCDEF';
export const AUTH = { authorization: `PSK ${TEST_KEY}` } as const;

/**
 * The app, with every injected request carrying `authorization` (the test service's key unless another is
 * given), unless the request sets its own. Tests of authentication itself use the app as it is.
 */
export function authed(app: FastifyInstance, authorization: string = AUTH.authorization): FastifyInstance {
  return new Proxy(app, {
    get(target, property, receiver) {
      if (property !== 'inject') return Reflect.get(target, property, receiver);
      return (options: InjectOptions) => target.inject({ ...options, headers: { authorization, ...(options.headers ?? {}) } });
    },
  });
}

export interface TestDispatcher {
  d: Dispatcher;
  config: DispatcherConfig;
  dir: string;
  close(): Promise<void>;
}

/** `overrides` are configuration in the file's shape (durations as text), applied over the defaults. */
export async function startDispatcher(
  overrides: Record<string, unknown> = {},
  options: { start?: boolean; actionTypes?: ActionType[]; storeUrl?: string; preset?: Preset; env?: NodeJS.ProcessEnv } = {},
): Promise<TestDispatcher> {
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-test-'));
  const config = await loadConfig({
    env: options.env ?? {},
    ...(options.preset === undefined ? {} : { preset: options.preset }),
    overrides: {
      store: { url: options.storeUrl ?? `sqlite:${join(dir, 'dispatcher.db')}` },
      log: { level: 'silent' },
      runner: { poll: '100ms', sweepInterval: '200ms' },
      auth: { psk: [{ service: 'test', key: TEST_KEY }], keyFile: '' },
      ...overrides,
    } as never,
  });
  const d = await createDispatcher({ config, logger: pino({ level: 'silent' }), actionTypes: options.actionTypes, ...(options.preset === undefined ? {} : { preset: options.preset }) });
  if (options.start !== false) await d.start();
  return {
    d,
    config,
    dir,
    async close() {
      await d.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function event(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    specversion: '1.0',
    id: `e-${Math.random().toString(36).slice(2)}`,
    source: 'urn:test',
    type: 'example.hello',
    data: { hello: 'world' },
    ...overrides,
  };
}

/** Polls `read` until `done` holds; fails with the last value seen. */
export async function waitFor<T>(read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: T = await read();
  while (!done(last)) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(last)?.slice(0, 2000)}`);
    await new Promise((r) => setTimeout(r, 20));
    last = await read();
  }
  return last;
}

export async function waitForRun(d: Dispatcher, id: string, statuses: Run['status'][], timeoutMs = 10_000): Promise<Run> {
  const run = await waitFor(() => d.store.getRun(id), (r) => r !== null && statuses.includes(r.status), timeoutMs, `run ${id} to be ${statuses.join('|')}`);
  return run!;
}

export interface Receiver {
  url: string;
  requests: Array<{ method: string; url: string; headers: IncomingMessage['headers']; body: string; at: number }>;
  server: Server;
  close(): Promise<void>;
}

/** A real HTTP server on 127.0.0.1 that records requests and answers with `handler` (default 200). */
export async function startReceiver(
  handler: (req: IncomingMessage, body: string, res: ServerResponse, n: number) => void | Promise<void> = (_req, _body, res) => {
    res.end('ok');
  },
): Promise<Receiver> {
  const requests: Receiver['requests'] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, at: Date.now() });
      void handler(req, body, res, requests.length);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The PostgreSQL server the tests use (DISPATCHER_TEST_POSTGRES_URL, else the local `test` database). */
/** The time a UUIDv7 (an event's key, a run's id) carries: its first 48 bits, in milliseconds. */
export function idTime(id: string): number {
  return parseInt(id.replace(/-/g, '').slice(0, 12), 16);
}

export const POSTGRES_URL = process.env.DISPATCHER_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** Null when PostgreSQL answers; otherwise why not. */
export async function probePostgres(url = POSTGRES_URL): Promise<string | null> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return null;
  } catch (err) {
    const e = err as Error & { code?: string; errors?: Error[] };
    return e.message || e.code || e.errors?.map((x) => x.message).join('; ') || String(err);
  } finally {
    await client.end().catch(() => {});
  }
}

/** How many PostgreSQL backends wait for a lock that the backend `pid` holds. */
export async function waitingForLock(db: pg.Client | pg.Pool, pid: number): Promise<number> {
  return Number((await db.query('SELECT count(*) AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [pid])).rows[0].n);
}

/** A destination for a dispatcher's own logger (`logDestination`): every chunk it writes, kept in `chunks`. */
export function logSink(): { sink: Writable; chunks: string[] } {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, callback) {
      chunks.push(String(chunk));
      callback();
    },
  });
  return { sink, chunks };
}

/** Whether a command runs here (`ansible-runner --version`). */
export function hasCommand(command: string, args: string[] = ['--version']): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
