/**
 * The Store contract against PostgreSQL: every test gets a fresh schema `dispatcher_test_<file>_<n>` in the
 * `test` database, dropped with CASCADE afterwards. Set DISPATCHER_TEST_POSTGRES_URL to use another server.
 *
 * Without a reachable server the suite is skipped with a warning that says why; in CI (`CI=true`) it fails.
 */

import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DispatcherError } from '../src/core/errors.js';
import { newId } from '../src/core/ids.js';
import type { CloudEvent, Run } from '../src/core/types.js';
import type { RunOutcome } from '../src/store/types.js';
import { PostgresStore } from '../src/store/postgres/index.js';
import { POSTGRES_MIGRATIONS } from '../src/store/postgres/migrations.js';
import { commitOld, defineStoreSuite, expectCreatedById } from './store.suite.js';
import { POSTGRES_URL, probePostgres, waitFor, waitingForLock } from './helpers.js';

const BASE_URL = POSTGRES_URL;
const SHOWN_URL = BASE_URL.replace(/:[^:@/]*@/, ':***@');
const FILE_ID = randomBytes(4).toString('hex');
/** Every connection this file opens says so, which lets the last check find leaked ones. */
const APP_NAME = `dispatcher_test_${FILE_ID}`;
const SCHEMA_PREFIX = `dispatcher_test_${FILE_ID}_`;

function urlWith(params: Record<string, string>): string {
  const url = new URL(BASE_URL);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.toString();
}

const unreachable = await probePostgres(BASE_URL);
const requireDatabase = process.env.CI === 'true';
if (unreachable !== null && !requireDatabase) {
  console.warn(`store-postgres.test.ts skipped: PostgreSQL at ${SHOWN_URL} is unreachable (${unreachable}). Start it, or set CI=true to make this a failure.`);
}

describe.skipIf(unreachable !== null && !requireDatabase)('PostgresStore', () => {
  let admin: pg.Pool;
  let n = 0;

  async function openStore(schema: string, poolSize = 4): Promise<PostgresStore> {
    const store = new PostgresStore({ connectionString: urlWith({ application_name: APP_NAME }), poolSize, schema });
    await store.migrate();
    return store;
  }

  beforeAll(() => {
    if (unreachable !== null) {
      throw new Error(`PostgreSQL at ${SHOWN_URL} is unreachable (${unreachable}); with CI=true the store suite must run against it`);
    }
    admin = new pg.Pool({ connectionString: BASE_URL, max: 2 });
  });

  afterAll(async () => {
    if (admin === undefined) return;
    try {
      // No connection left open (every store closed its pool) and no schema left behind. A backend goes
      // away shortly after its client hangs up, so wait for it a little.
      let left = -1;
      for (let i = 0; i < 50 && left !== 0; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, 100));
        left = Number((await admin.query('SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1', [APP_NAME])).rows[0].n);
      }
      expect(left, 'connections left open by the stores of this file').toBe(0);
      const schemas = await admin.query('SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)', [SCHEMA_PREFIX]);
      expect(schemas.rows).toEqual([]);
    } finally {
      await admin.end();
    }
  });

  defineStoreSuite('postgres', async () => {
    const schema = `${SCHEMA_PREFIX}${n++}`;
    const store = await openStore(schema);
    return {
      store,
      openPeer: () => openStore(schema),
      async cleanup() {
        await store.close();
        await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      },
    };
  });

  describe('PostgreSQL specifics', () => {
    it('migrates from several processes at once, into its own schema', async () => {
      const schema = `${SCHEMA_PREFIX}${n++}`;
      const stores = Array.from({ length: 4 }, () => new PostgresStore({ connectionString: urlWith({ application_name: APP_NAME }), poolSize: 1, schema }));
      try {
        await Promise.all(stores.map((s) => s.migrate()));
        const applied = await admin.query(`SELECT name FROM "${schema}".dispatcher_migrations ORDER BY name`);
        expect(applied.rows.map((r) => r.name)).toEqual(Object.keys(POSTGRES_MIGRATIONS).sort());
        const tables = await admin.query(`SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename`, [schema]);
        expect(tables.rows.map((r) => r.tablename)).toEqual(['attempts', 'audit_head', 'audit_log', 'clients', 'dead_letters', 'dispatcher_migrations', 'events', 'hosts', 'inbox_counts', 'inbox_messages', 'output_cursors', 'run_events', 'runs', 'settings']);
        const indexes = await admin.query(`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = 'runs'`, [schema]);
        const defs = new Map(indexes.rows.map((r) => [r.indexname as string, r.indexdef as string]));
        expect(defs.get('runs_labels')).toMatch(/USING gin/);
        expect(defs.get('runs_queue')).toMatch(/WHERE \(status = 'queued'::text\)/);
      } finally {
        for (const s of stores) await s.close();
        await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      }
    });

    it('keeps the events and run events of a database written before envelopes and payloads were json (migration 0004)', async () => {
      const schema = `${SCHEMA_PREFIX}${n++}`;
      const store = await openStore(schema);
      try {
        // Back to the columns as 0001 made them, with a row in each, as an older dispatcher left them.
        await admin.query(`ALTER TABLE "${schema}".events ALTER COLUMN envelope TYPE jsonb; ALTER TABLE "${schema}".run_events ALTER COLUMN payload TYPE jsonb;
          DELETE FROM "${schema}".dispatcher_migrations WHERE name = '0004_json_texts'`);
        const event: CloudEvent = { specversion: '1.0', id: 'e-1', source: 'urn:old', type: 'old.thing', data: { n: 1, s: 'x "quoted"' } };
        const [result] = await store.commitIntake([
          {
            record: { key: '0190a0f0-0000-7000-8000-000000000001', event, input: 'http', hops: 0, service: 's', orgId: 'o', receivedAt: 1 },
            runs: [{ id: '0190a0f0-0000-7000-8000-000000000002', route: 'r', action: 'a', actionType: 'noop', maxAttempts: 1, availableAt: 1, deadlineAt: 9, expiresAt: 9, orderingKey: null, labels: {} }],
          },
        ]);
        expect(result!.status).toBe('accepted');
        await store.migrate();
        const types = await admin.query(
          `SELECT table_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND column_name IN ('envelope', 'payload') ORDER BY table_name`,
          [schema],
        );
        expect(types.rows).toEqual([{ table_name: 'events', data_type: 'json' }, { table_name: 'run_events', data_type: 'json' }]);
        expect((await store.getEvent(result!.key))?.event).toEqual(event);
        const [created] = await store.readRunEvents(0, 10);
        expect(created).toMatchObject({ runId: '0190a0f0-0000-7000-8000-000000000002', eventType: 'create', payload: { status: 'queued' } });
      } finally {
        await store.close();
        await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      }
    });

    it('gives runs and events written before migration 0005 the time their id carries, and lists and finds them by id', async () => {
      const schema = `${SCHEMA_PREFIX}${n++}`;
      const store = await openStore(schema);
      try {
        // As an older dispatcher left them: the index, and runs whose created_at is a moment before their id's time.
        await admin.query(`CREATE INDEX runs_created ON "${schema}".runs (created_at);
          DELETE FROM "${schema}".dispatcher_migrations WHERE name = '0005_created_by_id'`);
        const ids = await commitOld(store);
        await admin.query(`UPDATE "${schema}".runs SET created_at = created_at - 3, updated_at = created_at - 3;
          UPDATE "${schema}".events SET received_at = received_at - 3`);
        await store.migrate();
        const indexes = await admin.query(`SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'runs'`, [schema]);
        expect(indexes.rows.map((r) => r.indexname)).not.toContain('runs_created');
        await expectCreatedById(store, ids);
      } finally {
        await store.close();
        await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      }
    });

    it('reports an unreachable server as store_unavailable, with the cause', async () => {
      const store = new PostgresStore({ connectionString: 'postgres://postgres:secret@127.0.0.1:1/test', poolSize: 1 });
      try {
        for (const attempt of [() => store.ping(), () => store.migrate(), () => store.getRun('x'), () => store.listRuns({ limit: 1, offset: 0 })]) {
          const err = await attempt().then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(err).toBeInstanceOf(DispatcherError);
          expect(err).toMatchObject({ code: 'store_unavailable', retryable: true });
          expect((err as Error).cause).toBeDefined();
          expect((err as Error).message).not.toContain('secret');
        }
      } finally {
        await store.close();
      }
    });

    it('recovers when the server ends its connections', async () => {
      const schema = `${SCHEMA_PREFIX}${n++}`;
      const app = `${APP_NAME}_kill`;
      const store = new PostgresStore({ connectionString: urlWith({ application_name: app }), poolSize: 2, schema });
      try {
        await store.migrate();
        await store.ping();
        await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [app]);
        let ok = false;
        for (let i = 0; i < 5 && !ok; i++) {
          try {
            await store.ping();
            ok = true;
          } catch (err) {
            expect(err).toMatchObject({ code: 'store_unavailable' });
          }
        }
        expect(ok).toBe(true);
        expect(await store.stats(0)).toMatchObject({ queued: 0 });
      } finally {
        await store.close();
        await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      }
    });

    /** Commits one event with `count` runs, directly dispatched to `w1` (running, leased until t0 + 30 s). */
    async function commitClaimed(store: PostgresStore, count: number, t0: number): Promise<Run[]> {
      const runs = Array.from({ length: count }, () => ({
        id: newId(t0), route: 'r', action: 'a', actionType: 'noop', maxAttempts: 3, availableAt: t0,
        deadlineAt: t0 + 60_000, expiresAt: t0 + 60_000, orderingKey: null, labels: {}, claimedBy: { owner: 'w1', leaseUntil: t0 + 30_000 },
      }));
      const event: CloudEvent = { specversion: '1.0', id: newId(t0), source: 'urn:held', type: 'held.thing' };
      await store.commitIntake([{ record: { key: newId(t0), event, input: 'http', hops: 0, service: 's', orgId: 'o', receivedAt: t0 }, runs }]);
      return Promise.all(runs.map(async (r) => (await store.getRun(r.id))!));
    }

    /**
     * A store on a fresh schema, and `locker`: a connection of its own into that schema, for the test to hold
     * rows locked in a transaction. Both closed and the schema dropped afterwards.
     */
    async function withLocker(test: (store: PostgresStore, locker: pg.Client) => Promise<void>): Promise<void> {
      const schema = `${SCHEMA_PREFIX}${n++}`;
      const store = await openStore(schema);
      const locker = new pg.Client({ connectionString: BASE_URL, options: `-c search_path="${schema}"` });
      await locker.connect();
      try {
        await test(store, locker);
      } finally {
        await locker.query('ROLLBACK').catch(() => {});
        await locker.end();
        await store.close();
        await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      }
    }

    it('records a batch of outcomes that PostgreSQL aborted to break a deadlock, by running it again', async () => {
      await withLocker(async (store, locker) => {
        const t0 = Date.now();
        const [first, second] = await commitClaimed(store, 2, t0);
        const success = (run: Run): RunOutcome => ({
          run, owner: 'w1', status: 'success', at: t0 + 10,
          attempt: { runId: run.id, n: 1, startedAt: t0, endedAt: t0 + 10, outcome: 'success', errorCode: null, errorMessage: null, httpStatus: null, response: null },
        });
        // The locker holds the second run; the batch locks the first and waits for the second...
        await locker.query('BEGIN');
        // (PostgreSQL looks for a deadlock in the backend that has waited deadlock_timeout: the batch's.)
        await locker.query("SET LOCAL deadlock_timeout = '60s'");
        await locker.query('SELECT id FROM runs WHERE id = $1 FOR UPDATE', [second!.id]);
        const lockerPid = Number((await locker.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
        const finishing = store.finishRuns([success(first!), success(second!)]);
        finishing.catch(() => {}); // awaited below; a failure must not count as unhandled meanwhile
        await waitFor(() => waitingForLock(admin, lockerPid), (w) => w === 1, 5000, 'the batch to wait for the second run');
        // ...and the locker asks for the first: a deadlock, which PostgreSQL breaks by aborting the batch.
        await locker.query('SELECT id FROM runs WHERE id = $1 FOR UPDATE', [first!.id]);
        await locker.query('COMMIT');
        expect((await finishing).sort()).toEqual([first!.id, second!.id].sort());
        for (const run of [first!, second!]) expect(await store.getRun(run.id)).toMatchObject({ status: 'success', leaseOwner: null });
        expect(await store.getAttempts(first!.id)).toMatchObject([{ n: 1, outcome: 'success' }]);
      });
    });

    it('renews leases and releases runs without waiting for a run that another transaction holds', async () => {
      // A batch of outcomes in flight holds some of the runs a renewal (or the release at shutdown) names.
      // Waiting for them while holding the others let the two deadlock under load; now the held ones are
      // skipped, and the statement does not wait at all.
      await withLocker(async (store, locker) => {
        const t0 = Date.now();
        const [a, b, c] = (await commitClaimed(store, 3, t0)).map((r) => r.id) as [string, string, string];
        await locker.query('BEGIN');
        await locker.query('SELECT id FROM runs WHERE id = $1 FOR UPDATE', [b]);
        const notWaiting = <T>(p: Promise<T>): Promise<T | 'waited'> =>
          Promise.race([p, new Promise<'waited'>((r) => setTimeout(() => r('waited'), 5000).unref())]);
        expect(await notWaiting(store.renewLeases('w1', [c, b, a], t0 + 90_000))).toBe(2);
        expect(await notWaiting(store.releaseRuns('w1', [a, b], t0 + 1))).toBe(1);
        await locker.query('COMMIT');
        const leases = await locker.query('SELECT id, status, lease_until FROM runs ORDER BY id');
        const byId = new Map(leases.rows.map((r) => [r.id as string, { status: r.status as string, leaseUntil: r.lease_until === null ? null : Number(r.lease_until) }]));
        expect(byId.get(a)).toEqual({ status: 'queued', leaseUntil: null });
        expect(byId.get(b)).toEqual({ status: 'running', leaseUntil: t0 + 30_000 });
        expect(byId.get(c)).toEqual({ status: 'running', leaseUntil: t0 + 90_000 });
        // Once free, the held run is renewed and released like the others.
        expect(await store.renewLeases('w1', [b], t0 + 90_000)).toBe(1);
        expect(await store.releaseRuns('w1', [b, c], t0 + 2)).toBe(2);
      });
    });

    it('refuses a schema name that is not a plain identifier', () => {
      expect(() => new PostgresStore({ connectionString: BASE_URL, poolSize: 1, schema: 'x"; DROP TABLE runs; --' })).toThrow(
        expect.objectContaining({ code: 'config_invalid' }),
      );
    });
  });
});
