/**
 * The Store contract, as one suite that every implementation runs against its real database
 * (`store-sqlite.test.ts`, `store-postgres.test.ts`). Each test gets a fresh, migrated, empty store from
 * `open()` and gives it back with `cleanup()`, so no test sees another's runs.
 *
 * Times are fixed (`T0` and offsets) and passed in, as the Store takes them: nothing here waits on a clock.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { v7 as uuidv7 } from 'uuid';
import { newId } from '../src/core/ids.js';
import { DispatcherError } from '../src/core/errors.js';
import { MAX_LEASE_EXPIRIES } from '../src/core/run-state.js';
import { GENESIS_HASH, verifyAuditChain } from '../src/core/audit.js';
import type { Attempt, CloudEvent, Run, RunEvent } from '../src/core/types.js';
import type { ClaimOptions, ClaimedRun, HostQuery, HostUpsert, IntakeItem, IntakeResult, NewDeadLetter, NewRun, RunOutcome, RunQuery, EventQuery, Store } from '../src/store/types.js';
import type { InboxLimits, NewInboxMessage } from '../src/store/inboxes.js';

export interface StoreFixture {
  store: Store;
  /** Closes the store and removes its database (file, schema). */
  cleanup: () => Promise<void>;
  /**
   * Another store on the same database, with its own connections (a second process, as far as the
   * database can tell). The suite closes it. Without it, the tests of concurrent callers use two
   * concurrent calls on one store.
   */
  openPeer?: () => Promise<Store>;
}

const T0 = 1_700_000_000_000;
const HOUR = 3_600_000;
const LEASE = 30_000;

let counter = 0;

function cloudEvent(overrides: Partial<CloudEvent> = {}): CloudEvent {
  counter += 1;
  return {
    specversion: '1.0',
    id: `ev-${counter}-${Math.random().toString(36).slice(2, 10)}`,
    source: 'urn:test',
    type: 'test.created',
    data: { n: counter, text: 'quotes " and \\ backslashes, ünïcode' },
    ...overrides,
  };
}

function newRun(overrides: Partial<NewRun> = {}, at = T0): NewRun {
  return {
    // As intake makes it: the id carries the time of its event's receivedAt (NewRun.id).
    id: newId(at),
    route: 'route-a',
    action: 'call',
    actionType: 'http',
    maxAttempts: 3,
    availableAt: at,
    deadlineAt: at + HOUR,
    expiresAt: at + HOUR,
    orderingKey: null,
    labels: {},
    ...overrides,
  };
}

interface ItemOptions {
  event?: Partial<CloudEvent>;
  /** Runs to plan; default one run. */
  runs?: Array<Partial<NewRun>>;
  at?: number;
  service?: string;
  orgId?: string;
  input?: string;
  hops?: number;
  key?: string;
}

function intakeItem(o: ItemOptions = {}): IntakeItem {
  const at = o.at ?? T0;
  return {
    record: {
      key: o.key ?? newId(at),
      event: cloudEvent(o.event),
      input: o.input ?? 'http',
      hops: o.hops ?? 0,
      service: o.service ?? 'svc-a',
      orgId: o.orgId ?? 'org-1',
      receivedAt: at,
    },
    runs: (o.runs ?? [{}]).map((r) => newRun(r, at)),
  };
}

/** Commits one event with these runs; returns the run ids in order. */
async function seed(store: Store, runs: Array<Partial<NewRun>>, o: Omit<ItemOptions, 'runs'> = {}): Promise<string[]> {
  const item = intakeItem({ ...o, runs });
  const [result] = await store.commitIntake([item]);
  expect(result?.status).toBe('accepted');
  return result!.runIds;
}

function claim(store: Store, o: Partial<ClaimOptions> = {}): Promise<ClaimedRun[]> {
  return store.claimRuns({ owner: 'worker-1', limit: 10, now: T0, leaseMs: LEASE, routeLimits: new Map(), ...o });
}

async function claimOne(store: Store, o: Partial<ClaimOptions> = {}): Promise<Run> {
  const claimed = await claim(store, { limit: 1, ...o });
  expect(claimed).toHaveLength(1);
  return claimed[0]!.run;
}

/** An outcome for a claimed run; `success` unless told otherwise. */
function outcome(run: Run, o: Partial<RunOutcome> & { attemptOutcome?: Attempt['outcome'] } = {}): RunOutcome {
  const at = o.at ?? run.updatedAt + 100;
  const { attemptOutcome, ...rest } = o;
  return {
    run,
    owner: run.leaseOwner ?? 'worker-1',
    status: 'success',
    at,
    attempt: {
      runId: run.id,
      n: run.attempts,
      startedAt: run.updatedAt,
      endedAt: at,
      outcome: attemptOutcome ?? (o.status === undefined || o.status === 'success' ? 'success' : 'failure'),
      errorCode: o.error?.code ?? null,
      errorMessage: o.error?.message ?? null,
      httpStatus: 200,
      response: 'ok',
    },
    ...rest,
  };
}

function deadLetter(o: Partial<NewDeadLetter> = {}): NewDeadLetter {
  return {
    origin: 'intake',
    source: 'http',
    reason: 'invalid_json',
    error: 'Unexpected token } in JSON at position 7',
    details: [{ pointer: '', message: 'not JSON' }],
    raw: Buffer.from(`{"bad": ${Math.random()}}`),
    rawTruncated: false,
    contentType: 'application/json',
    headers: { 'content-type': 'application/json', 'ce-id': 'x' },
    service: 'svc-a',
    orgId: 'org-1',
    at: T0,
    ...o,
  };
}

function withoutLease(run: Run): Omit<Run, 'leaseOwner' | 'leaseUntil'> {
  const { leaseOwner: _o, leaseUntil: _u, ...rest } = run;
  return rest;
}

/** Every run event in the outbox (host events left out), in `seq` order. */
async function allRunEvents(store: Store): Promise<RunEvent[]> {
  return (await store.readRunEvents(0, 100_000)).filter((e): e is RunEvent => e.kind === 'run');
}

/** The run events of one run as `eventType:status`, in `seq` order. */
async function historyOf(store: Store, runId: string): Promise<string[]> {
  return (await allRunEvents(store)).filter((e) => e.runId === runId).map((e) => `${e.eventType}:${e.status}`);
}

/**
 * What a store may keep of text that UTF-8 or the database cannot hold as is: the text itself, or U+FFFD
 * in place of lone surrogates (UTF-8 has no code for them), and maybe of U+0000. Runs of U+FFFD count as
 * one: SQLite keeps a lone surrogate as three bytes that read back as three of them.
 */
function expectStorable(kept: string | null | undefined, text: string): void {
  const one = (s: string) => s.replace(/\ufffd+/g, '\ufffd');
  const wellFormed = text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
  expect(typeof kept).toBe('string');
  expect([text, wellFormed, wellFormed.replace(/\u0000/g, '\ufffd')].map(one)).toContainEqual(one(kept!));
}

async function expectError(promise: Promise<unknown>, code: string): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, `expected a DispatcherError ${code}`).toBeInstanceOf(DispatcherError);
  expect((err as DispatcherError).code).toBe(code);
}

/**
 * For the upgrade tests of migration 0005 (store-sqlite and store-postgres): three events received 10 ms
 * apart with a run each, the run ids in creation order. The test then moves the runs' created_at and the
 * events' received_at back a little, as before 0005.
 */
export async function commitOld(store: Store): Promise<string[]> {
  const ids: string[] = [];
  for (const at of [T0, T0 + 10, T0 + 20]) ids.push(...(await seed(store, [{}], { at })));
  return ids;
}

/**
 * After migration 0005: every run has the time its id carries and every event the time its key carries, and
 * they are listed and found by it.
 */
export async function expectCreatedById(store: Store, ids: string[]): Promise<void> {
  const keys: string[] = [];
  for (const [i, id] of ids.entries()) {
    const run = await store.getRun(id);
    expect(run?.createdAt).toBe(T0 + 10 * i);
    expect(run!.updatedAt).toBeGreaterThanOrEqual(run!.createdAt);
    expect((await store.getEvent(run!.eventKey))?.receivedAt).toBe(T0 + 10 * i);
    keys.push(run!.eventKey);
  }
  const events = async (q: Partial<EventQuery>) => (await store.listEvents({ limit: 10, offset: 0, ...q })).items.map((e) => e.key);
  expect(await events({ receivedAt: { from: T0 + 10 } })).toEqual([keys[2], keys[1]]);
  expect(await events({ receivedAt: { to: T0 + 10 } })).toEqual([keys[0]]);
  const list = async (q: Partial<RunQuery>) => (await store.listRuns({ limit: 10, offset: 0, ...q })).items.map((r) => r.id);
  expect(await list({})).toEqual([...ids].reverse());
  expect(await list({ sort: { field: 'created_at', direction: 'asc' } })).toEqual(ids);
  expect(await list({ createdAt: { from: T0 + 10 } })).toEqual([ids[2], ids[1]]);
  expect(await list({ createdAt: { to: T0 + 10 } })).toEqual([ids[0]]);
  expect(await list({ createdAt: { from: T0 + 10, to: T0 + 20 } })).toEqual([ids[1]]);
}

export function defineStoreSuite(name: string, open: () => Promise<StoreFixture>): void {
  describe(`Store contract: ${name}`, () => {
    let fixture: StoreFixture;
    let store: Store;
    const peers: Store[] = [];

    beforeEach(async () => {
      fixture = await open();
      store = fixture.store;
    });

    afterEach(async () => {
      for (const peer of peers.splice(0)) await peer.close();
      await fixture.cleanup();
    });

    /** A second store on the same database when the fixture has one, else the same store. */
    async function peer(): Promise<Store> {
      if (fixture.openPeer === undefined) return store;
      const other = await fixture.openPeer();
      peers.push(other);
      return other;
    }

    describe('schema', () => {
      it('migrate() again changes nothing and keeps the data; ping() answers', async () => {
        const [id] = await seed(store, [{}]);
        await store.migrate();
        await store.ping();
        expect((await store.getRun(id!))?.status).toBe('queued');
      });

      it('a second store on the same database migrates concurrently and sees the same data', async () => {
        const [id] = await seed(store, [{}]);
        const other = await peer();
        await Promise.all([store.migrate(), other.migrate()]);
        expect((await other.getRun(id!))?.id).toBe(id);
      });
    });

    describe('commitIntake', () => {
      it('keeps text that array syntax gives meaning to exactly as given (quotes, backslashes, commas, braces, NULL, spaces)', async () => {
        const awkward = [' NULL', 'NULL', 'null', '{a,b}', 'x", "y', 'back\\slash\\', '"quoted"', ' spaced ', '', 'ünï\u2028'];
        const items = awkward.map((text, i) =>
          intakeItem({
            event: { source: `urn:${text}`, subject: text, topic: text, data: { text } },
            runs: [{ route: `route ${text}`, orderingKey: text, labels: { [text]: text } }],
            service: text,
            orgId: `org ${i}`,
          }),
        );
        const results = await store.commitIntake(items);
        expect(results.map((r) => r.status)).toEqual(awkward.map(() => 'accepted'));
        for (const item of items) {
          expect(await store.getEvent(item.record.key)).toEqual({ ...item.record, runCount: 1 });
          const run = await store.getRun(item.runs[0]!.id);
          expect(run).toMatchObject({ route: item.runs[0]!.route, orderingKey: item.runs[0]!.orderingKey, labels: item.runs[0]!.labels, service: item.record.service });
        }
      });

      it('stores accepted events and their runs, with a create run event per run in order', async () => {
        const a = intakeItem({
          event: { topic: 'orders.created', subject: 'order-1', data: { nested: { list: [1, 2, 3] } } },
          runs: [
            { route: 'r1', labels: { team: 'red' }, orderingKey: 'k-1', maxAttempts: 5 },
            { route: 'r2', action: 'emit', actionType: 'publish', availableAt: T0 + 500 },
          ],
          at: T0 + 5,
          hops: 2,
          input: 'kafka',
          service: 'svc-x',
          orgId: 'org-x',
        });
        const b = intakeItem({ runs: [], at: T0 + 6 });
        const results = await store.commitIntake([a, b]);
        expect(results).toEqual([
          { key: a.record.key, status: 'accepted', runIds: a.runs.map((r) => r.id) },
          { key: b.record.key, status: 'accepted', runIds: [] },
        ]);

        expect(await store.getEvent(a.record.key)).toEqual({ ...a.record, runCount: 2 });
        expect(await store.getEvent(b.record.key)).toEqual({ ...b.record, runCount: 0 });

        const [r1, r2] = a.runs as [NewRun, NewRun];
        const run1 = await store.getRun(r1.id);
        expect(run1).toEqual({
          id: r1.id,
          eventKey: a.record.key,
          eventType: a.record.event.type,
          route: 'r1',
          action: 'call',
          actionType: 'http',
          status: 'queued',
          attempts: 0,
          maxAttempts: 5,
          createdAt: T0 + 5,
          updatedAt: T0 + 5,
          availableAt: T0 + 5,
          deadlineAt: r1.deadlineAt,
          expiresAt: r1.expiresAt,
          leaseOwner: null,
          leaseUntil: null,
          orderingKey: 'k-1',
          correlationId: null,
          labels: { team: 'red' },
          service: 'svc-x',
          orgId: 'org-x',
          error: null,
          result: null,
          finishedAt: null,
        });
        const run2 = await store.getRun(r2.id);
        expect(run2).toMatchObject({ route: 'r2', action: 'emit', actionType: 'publish', availableAt: T0 + 500, orderingKey: null, labels: {} });

        const events = await allRunEvents(store);
        expect(events.map((e) => [e.runId, e.eventType, e.status, e.service, e.orgId, e.at])).toEqual([
          [r1.id, 'create', 'queued', 'svc-x', 'org-x', T0 + 5],
          [r2.id, 'create', 'queued', 'svc-x', 'org-x', T0 + 5],
        ]);
        expect(events[0]!.seq).toBeLessThan(events[1]!.seq);
        expect(events[0]!.payload).toEqual(withoutLease(run1!));
        expect(events[1]!.payload).toEqual(withoutLease(run2!));
      });

      it('answers duplicate for a known (source, id) and makes no runs or run events for it', async () => {
        const first = intakeItem({ runs: [{}, {}] });
        await store.commitIntake([first]);
        const again = intakeItem({ runs: [{}], event: { id: first.record.event.id, source: first.record.event.source } });
        const other = intakeItem({ runs: [{}], event: { id: first.record.event.id, source: 'urn:elsewhere' } });
        const results = await store.commitIntake([again, other]);
        expect(results).toEqual([
          { key: first.record.key, status: 'duplicate', runIds: [] },
          { key: other.record.key, status: 'accepted', runIds: [other.runs[0]!.id] },
        ]);
        expect(await store.getEvent(again.record.key)).toBeNull();
        expect(await store.getRun(again.runs[0]!.id)).toBeNull();
        expect((await store.listRuns({ limit: 100, offset: 0 })).total).toBe(3);
        expect((await allRunEvents(store)).map((e) => e.runId)).not.toContain(again.runs[0]!.id);
        expect((await store.getEvent(first.record.key))?.runCount).toBe(2);
      });

      it('accepts the first of two copies of one event inside one batch and answers duplicate for the second', async () => {
        const a = intakeItem({ runs: [{}] });
        const b = intakeItem({ runs: [{}, {}], event: { id: a.record.event.id, source: a.record.event.source } });
        const c = intakeItem({ runs: [{}] });
        const results = await store.commitIntake([a, b, c]);
        expect(results).toEqual([
          { key: a.record.key, status: 'accepted', runIds: [a.runs[0]!.id] },
          { key: a.record.key, status: 'duplicate', runIds: [] },
          { key: c.record.key, status: 'accepted', runIds: [c.runs[0]!.id] },
        ]);
        for (const r of b.runs) expect(await store.getRun(r.id)).toBeNull();
        const listed = await store.listRuns({ limit: 100, offset: 0 });
        expect(listed.items.map((r) => r.id).sort()).toEqual([a.runs[0]!.id, c.runs[0]!.id].sort());
        expect((await allRunEvents(store)).map((e) => e.runId).sort()).toEqual([a.runs[0]!.id, c.runs[0]!.id].sort());
      });

      it('accepts the same item given twice in one batch once', async () => {
        const a = intakeItem({ runs: [{}, {}] });
        const results = await store.commitIntake([a, a]);
        expect(results).toEqual([
          { key: a.record.key, status: 'accepted', runIds: a.runs.map((r) => r.id) },
          { key: a.record.key, status: 'duplicate', runIds: [] },
        ]);
        expect((await store.listRuns({ limit: 10, offset: 0 })).total).toBe(2);
        expect(await allRunEvents(store)).toHaveLength(2);
      });

      it('commits a batch whole or not at all: a run that cannot be stored leaves nothing of the batch behind', async () => {
        const first = intakeItem({ runs: [{}] });
        await store.commitIntake([first]);
        const a = intakeItem({ runs: [{}] });
        // A run id already taken: its insert fails after the batch's events (and a's run) were written.
        const clash = intakeItem({ runs: [{ id: first.runs[0]!.id }] });
        await expect(store.commitIntake([a, clash])).rejects.toThrow();
        expect(await store.getEvent(a.record.key)).toBeNull();
        expect(await store.getEvent(clash.record.key)).toBeNull();
        expect(await store.getRun(a.runs[0]!.id)).toBeNull();
        expect((await store.listRuns({ limit: 10, offset: 0 })).total).toBe(1);
        expect((await allRunEvents(store)).map((e) => e.runId)).toEqual([first.runs[0]!.id]);
        // And the batch goes in once the clash is gone.
        const again = intakeItem({ runs: [{}] });
        expect((await store.commitIntake([a, again])).map((r) => r.status)).toEqual(['accepted', 'accepted']);
      });

      it('stores a directly dispatched run already claimed: running, leased, its first attempt started', async () => {
        const item = intakeItem({ runs: [{ claimedBy: { owner: 'worker-9', leaseUntil: T0 + 5000 } }, {}], at: T0 + 3 });
        await store.commitIntake([item]);
        const [direct, queued] = item.runs as [NewRun, NewRun];
        const run = await store.getRun(direct.id);
        expect(run).toMatchObject({ status: 'running', attempts: 1, leaseOwner: 'worker-9', leaseUntil: T0 + 5000, updatedAt: T0 + 3 });
        expect(await historyOf(store, direct.id)).toEqual(['create:running']);
        expect((await allRunEvents(store)).find((e) => e.runId === direct.id)?.payload).toEqual(withoutLease(run!));
        expect(await store.stats(T0 + 3)).toMatchObject({ running: 1, queued: 1 });
        expect((await claim(store, { now: T0 + 3 })).map((c) => c.run.id)).toEqual([queued.id]);
        expect(await store.renewLeases('worker-9', [direct.id], T0 + 9000)).toBe(1);
        expect(await store.finishRuns([outcome({ ...run!, leaseUntil: T0 + 9000 }, { at: T0 + 50 })])).toEqual([direct.id]);
        expect(await store.getAttempts(direct.id)).toMatchObject([{ n: 1, outcome: 'success' }]);
      });

      it('a directly dispatched run whose worker died is swept back to the queue', async () => {
        const item = intakeItem({ runs: [{ claimedBy: { owner: 'worker-9', leaseUntil: T0 + 100 } }] });
        await store.commitIntake([item]);
        expect(await store.sweep(T0 + 101, 10)).toEqual({ requeued: 1, timedOut: 0, failed: 0 });
        expect(await store.getRun(item.runs[0]!.id)).toMatchObject({ status: 'queued', attempts: 1, leaseOwner: null });
        expect((await claimOne(store, { now: T0 + 101 })).attempts).toBe(2);
      });

      it('stores the envelope text the caller already has', async () => {
        const item = intakeItem({ event: { data: { a: [1, { b: null }], s: 'x' } } });
        await store.commitIntake([{ ...item, envelope: JSON.stringify(item.record.event) }]);
        expect((await store.getEvent(item.record.key))?.event).toEqual(item.record.event);
        expect(JSON.parse((await claim(store))[0]!.envelope)).toEqual(item.record.event);
      });

      it('stores a large batch in one call', async () => {
        const items = Array.from({ length: 300 }, (_, i) => intakeItem({ runs: i % 3 === 0 ? [] : [{}, {}], at: T0 + i }));
        const results = await store.commitIntake(items);
        expect(results.map((r) => r.status)).toEqual(items.map(() => 'accepted'));
        expect(results.map((r) => r.key)).toEqual(items.map((i) => i.record.key));
        const runs = items.flatMap((i) => i.runs);
        expect((await store.listRuns({ limit: 1, offset: 0 })).total).toBe(runs.length);
        expect((await allRunEvents(store)).map((e) => e.runId)).toEqual(runs.map((r) => r.id));
        expect((await store.listEvents({ limit: 1, offset: 0, unrouted: true })).total).toBe(100);
      });
    });

    describe('claimRuns', () => {
      it('claims queued runs whose time has come, oldest first, writes the lease and a run event', async () => {
        const item = intakeItem({ runs: [{ availableAt: T0 + 200 }, { availableAt: T0 + 100 }, { availableAt: T0 + 1000 }], hops: 3 });
        await store.commitIntake([item]);
        const [late, early, future] = item.runs as [NewRun, NewRun, NewRun];

        expect(await claim(store, { now: T0 + 99 })).toEqual([]);
        const claimed = await claim(store, { now: T0 + 200, owner: 'worker-7', leaseMs: 5000 });
        expect(claimed.map((c) => c.run.id)).toEqual([early.id, late.id]);
        for (const c of claimed) {
          expect(c.hops).toBe(3);
          expect(JSON.parse(c.envelope)).toEqual(item.record.event);
          expect(c.run).toMatchObject({ status: 'running', attempts: 1, leaseOwner: 'worker-7', leaseUntil: T0 + 5200, updatedAt: T0 + 200 });
          expect(await store.getRun(c.run.id)).toEqual(c.run);
          expect(await historyOf(store, c.run.id)).toEqual(['create:queued', 'update:running']);
        }
        const events = await allRunEvents(store);
        expect(events.at(-1)!.payload).toEqual(withoutLease(claimed[1]!.run));
        expect((await store.getRun(future.id))?.status).toBe('queued');
        expect(await claim(store, { now: T0 + 999 })).toEqual([]);
        expect((await claim(store, { now: T0 + 1000 })).map((c) => c.run.id)).toEqual([future.id]);
      });

      it('claims at most limit runs', async () => {
        await seed(store, [{}, {}, {}, {}, {}]);
        expect(await claim(store, { limit: 2 })).toHaveLength(2);
        expect(await claim(store, { limit: 2 })).toHaveLength(2);
        expect(await claim(store, { limit: 2 })).toHaveLength(1);
        expect(await claim(store, { limit: 2 })).toHaveLength(0);
      });

      it('runs one run per ordering key at a time, in order; a retrying head still blocks', async () => {
        const [k1a, k2a, free] = await seed(store, [{ orderingKey: 'k1' }, { orderingKey: 'k2' }, {}]);
        const [k1b, k2b] = await seed(store, [{ orderingKey: 'k1' }, { orderingKey: 'k2' }], { at: T0 + 1 });

        const first = await claim(store, { now: T0 + 10 });
        expect(first.map((c) => c.run.id).sort()).toEqual([k1a, k2a, free].sort());
        expect(await claim(store, { now: T0 + 10 })).toEqual([]);

        const byId = new Map(first.map((c) => [c.run.id, c.run]));
        // k1's head fails and retries later; k2's head succeeds.
        expect(
          await store.finishRuns([
            outcome(byId.get(k1a!)!, { status: 'queued', at: T0 + 20, availableAt: T0 + 1000, error: { code: 'http_status', message: '503' }, attemptOutcome: 'retry' }),
            outcome(byId.get(k2a!)!, { at: T0 + 20 }),
          ]),
        ).toHaveLength(2);
        expect((await claim(store, { now: T0 + 30 })).map((c) => c.run.id)).toEqual([k2b]);
        expect(await claim(store, { now: T0 + 999 })).toEqual([]);

        const again = await claim(store, { now: T0 + 1000 });
        expect(again.map((c) => c.run.id)).toEqual([k1a]);
        expect(again[0]!.run.attempts).toBe(2);
        expect(await claim(store, { now: T0 + 1000 })).toEqual([]);
        await store.finishRuns([outcome(again[0]!.run, { at: T0 + 1100 })]);
        expect((await claim(store, { now: T0 + 1100 })).map((c) => c.run.id)).toEqual([k1b]);
      });

      it('a canceled head unblocks the next run of its key', async () => {
        const [a, b] = await seed(store, [{ orderingKey: 'k' }, { orderingKey: 'k' }]);
        expect((await claim(store)).map((c) => c.run.id)).toEqual([a]);
        await store.cancelRun(a!, T0 + 5);
        expect((await claim(store, { now: T0 + 5 })).map((c) => c.run.id)).toEqual([b]);
      });

      it('keeps at most the route limit of runs running, counting runs claimed earlier', async () => {
        const limited = await seed(store, Array.from({ length: 5 }, () => ({ route: 'limited' })));
        const others = await seed(store, [{ route: 'free' }, { route: 'free' }]);
        const routeLimits = new Map([['limited', 2]]);

        const first = await claim(store, { routeLimits });
        expect(first.filter((c) => c.run.route === 'limited')).toHaveLength(2);
        expect(first.filter((c) => c.run.route === 'free').map((c) => c.run.id).sort()).toEqual([...others].sort());
        expect(await claim(store, { routeLimits })).toEqual([]);

        const done = first.find((c) => c.run.route === 'limited')!.run;
        await store.finishRuns([outcome(done)]);
        const next = await claim(store, { routeLimits, now: T0 + 200 });
        expect(next).toHaveLength(1);
        expect(next[0]!.run.route).toBe('limited');
        expect(limited).toContain(next[0]!.run.id);
        // Without a limit, the rest are claimable.
        expect(await claim(store, { now: T0 + 200 })).toHaveLength(2);
      });

      it('does not count a waiting run against its route limit', async () => {
        await seed(store, Array.from({ length: 3 }, () => ({ route: 'limited' })));
        const routeLimits = new Map([['limited', 1]]);
        const [first] = await claim(store, { routeLimits });
        expect(await claim(store, { routeLimits })).toEqual([]);
        // The first hands its work to someone else: it waits, holding no slot.
        await store.finishRuns([outcome(first!.run, { status: 'running', correlationId: 'c-1', deadlineAt: T0 + 50_000, attemptOutcome: 'waiting' })]);
        const next = await claim(store, { routeLimits, now: T0 + 200 });
        expect(next).toHaveLength(1);
        expect(next[0]!.run.id).not.toBe(first!.run.id);
      });

      it('a route at its limit does not hold back the runs of other routes behind its backlog', async () => {
        const limited = await seed(store, Array.from({ length: 100 }, () => ({ route: 'limited' })));
        const free = await seed(store, Array.from({ length: 5 }, () => ({ route: 'free' })), { at: T0 + 1 });
        const routeLimits = new Map([['limited', 1]]);
        const first = await claim(store, { routeLimits, now: T0 + 10 });
        expect(first.map((c) => c.run.id)).toEqual([limited[0], ...free]);
        await seed(store, [{ route: 'free' }], { at: T0 + 20 });
        // Steady state: the limited route has one slot again, and the free run still gets its turn.
        await store.finishRuns([outcome(first[0]!.run, { at: T0 + 20 })]);
        const second = await claim(store, { routeLimits, now: T0 + 20 });
        expect(second.map((c) => c.run.route)).toEqual(['limited', 'free']);
        expect(second[0]!.run.id).toBe(limited[1]);
      });

      it('two concurrent claimers never claim the same run', async () => {
        const total = 240;
        for (let i = 0; i < total / 40; i++) await seed(store, Array.from({ length: 40 }, () => ({})), { at: T0 + i });
        const other = await peer();
        const claimedBy = new Map<string, string[]>();
        async function worker(s: Store, owner: string): Promise<void> {
          for (let round = 0, empty = 0; round < 500 && empty < 3; round++) {
            const claimed = await s.claimRuns({ owner, limit: 7, now: T0 + 100, leaseMs: LEASE, routeLimits: new Map() });
            empty = claimed.length === 0 ? empty + 1 : 0;
            for (const c of claimed) claimedBy.set(c.run.id, [...(claimedBy.get(c.run.id) ?? []), owner]);
          }
        }
        await Promise.all([worker(store, 'worker-a'), worker(other, 'worker-b'), worker(store, 'worker-c'), worker(other, 'worker-d')]);

        const twice = [...claimedBy].filter(([, owners]) => owners.length > 1);
        expect(twice).toEqual([]);
        expect(claimedBy.size).toBe(total);
        const running = await store.listRuns({ limit: 1000, offset: 0, status: ['running'] });
        expect(running.total).toBe(total);
        for (const run of running.items) {
          expect(run.attempts).toBe(1);
          expect(run.leaseOwner).toBe(claimedBy.get(run.id)![0]);
        }
        const claims = (await allRunEvents(store)).filter((e) => e.status === 'running');
        expect(claims).toHaveLength(total);
        // The claimers did take turns (this is a test of concurrency, not of one claimer draining the queue).
        expect(new Set([...claimedBy.values()].flat()).size).toBeGreaterThan(1);
      });

      it('concurrent claimers together respect a route limit', async () => {
        // More runs than one claimer's candidates (4 × its limit), so that every claimer finds some.
        await seed(store, Array.from({ length: 200 }, () => ({ route: 'limited' })));
        await seed(store, Array.from({ length: 20 }, () => ({ route: 'free' })), { at: T0 + 1 });
        const other = await peer();
        const routeLimits = new Map([['limited', 3]]);
        const claimed: ClaimedRun[] = [];
        for (let round = 0; round < 3; round++) {
          const claims = await Promise.all(
            [store, other, store, other].map((s, i) => s.claimRuns({ owner: `worker-${i}`, limit: 5, now: T0 + 10, leaseMs: LEASE, routeLimits })),
          );
          claimed.push(...claims.flat());
        }
        expect(claimed.filter((c) => c.run.route === 'limited')).toHaveLength(3);
        expect((await store.listRuns({ limit: 1, offset: 0, status: ['running'], route: ['limited'] })).total).toBe(3);
        // The limit holds back only its own route.
        expect(claimed.filter((c) => c.run.route === 'free')).toHaveLength(20);
      });
    });

    describe('renewLeases', () => {
      it("extends only the owner's running runs", async () => {
        await seed(store, [{}, {}]);
        const [a, b] = (await claim(store)).map((c) => c.run) as [Run, Run];
        expect(await store.renewLeases('worker-2', [a.id, b.id], T0 + 99_000)).toBe(0);
        expect(await store.renewLeases('worker-1', [a.id], T0 + 99_000)).toBe(1);
        expect((await store.getRun(a.id))?.leaseUntil).toBe(T0 + 99_000);
        expect((await store.getRun(b.id))?.leaseUntil).toBe(T0 + LEASE);
        await store.finishRuns([outcome(b)]);
        expect(await store.renewLeases('worker-1', [a.id, b.id], T0 + 100_000)).toBe(1);
        expect(await store.renewLeases('worker-1', [], T0 + 100_000)).toBe(0);
      });
    });

    describe('finishRuns', () => {
      it('records a success: status, result, attempt, run event, lease cleared', async () => {
        await seed(store, [{}]);
        const run = await claimOne(store);
        const applied = await store.finishRuns([outcome(run, { at: T0 + 300, result: { status: 201, body: 'created' } })]);
        expect(applied).toEqual([run.id]);
        const after = await store.getRun(run.id);
        expect(after).toEqual({
          ...run,
          status: 'success',
          updatedAt: T0 + 300,
          finishedAt: T0 + 300,
          leaseOwner: null,
          leaseUntil: null,
          result: { status: 201, body: 'created' },
        });
        expect(await store.getAttempts(run.id)).toEqual([
          { runId: run.id, n: 1, startedAt: T0, endedAt: T0 + 300, outcome: 'success', errorCode: null, errorMessage: null, httpStatus: 200, response: 'ok' },
        ]);
        const last = (await allRunEvents(store)).at(-1)!;
        expect(last).toMatchObject({ runId: run.id, eventType: 'update', status: 'success', at: T0 + 300 });
        expect(last.payload).toEqual(withoutLease(after!));
        expect(await claim(store, { now: T0 + 10_000 })).toEqual([]);
      });

      it('applies nothing for a wrong owner: no state change, attempt or run event', async () => {
        await seed(store, [{}]);
        const run = await claimOne(store);
        const before = await allRunEvents(store);
        expect(await store.finishRuns([{ ...outcome(run), owner: 'worker-2' }])).toEqual([]);
        expect(await store.getRun(run.id)).toEqual(run);
        expect(await store.getAttempts(run.id)).toEqual([]);
        expect(await allRunEvents(store)).toEqual(before);
      });

      it('applies nothing to a run canceled meanwhile', async () => {
        await seed(store, [{}]);
        const run = await claimOne(store);
        await store.cancelRun(run.id, T0 + 50);
        const before = await allRunEvents(store);
        expect(await store.finishRuns([outcome(run, { at: T0 + 100 })])).toEqual([]);
        expect((await store.getRun(run.id))?.status).toBe('canceled');
        expect((await store.getAttempts(run.id)).map((a) => a.outcome)).toEqual(['canceled']);
        expect(await allRunEvents(store)).toEqual(before);
      });

      it('in one batch, applies the fenced outcomes and reports only those', async () => {
        await seed(store, [{}, {}, {}]);
        const [a, b, c] = (await claim(store)).map((x) => x.run) as [Run, Run, Run];
        await store.cancelRun(b.id, T0 + 10);
        const applied = await store.finishRuns([outcome(a), outcome(b), { ...outcome(c), owner: 'nobody' }]);
        expect(applied).toEqual([a.id]);
        expect((await store.getRun(a.id))?.status).toBe('success');
        expect((await store.getRun(c.id))?.status).toBe('running');
        expect(await store.getAttempts(c.id)).toEqual([]);
        expect(await store.finishRuns([])).toEqual([]);
      });

      it('a retry outcome queues the run until availableAt, keeping the error', async () => {
        await seed(store, [{}]);
        const run = await claimOne(store);
        const error = { code: 'http_status', message: 'the receiver answered 503' };
        expect(await store.finishRuns([outcome(run, { status: 'queued', at: T0 + 100, availableAt: T0 + 5000, error, attemptOutcome: 'retry' })])).toEqual([run.id]);
        expect(await store.getRun(run.id)).toMatchObject({ status: 'queued', availableAt: T0 + 5000, error, leaseOwner: null, leaseUntil: null, finishedAt: null, attempts: 1 });
        expect(await store.getAttempts(run.id)).toMatchObject([{ n: 1, outcome: 'retry', errorCode: 'http_status', errorMessage: error.message }]);
        expect(await historyOf(store, run.id)).toEqual(['create:queued', 'update:running', 'update:queued']);
        expect(await store.nextAvailableAt()).toBe(T0 + 5000);
        expect(await claim(store, { now: T0 + 4999 })).toEqual([]);
        const again = await claimOne(store, { now: T0 + 5000 });
        expect(again.attempts).toBe(2);
      });

      it('lists runs and hosts by their status as read at a time (under way past the deadline: timeout), by service, action type and result', async () => {
        // Three runs waiting for answers (deadlines T0+1000, T0+5000, T0+9000), and one that ended in timeout.
        const ids: string[] = [];
        for (const [i, deadlineAt] of [T0 + 1000, T0 + 5000, T0 + 9000].entries()) {
          const [id] = await seed(store, [{ deadlineAt, actionType: i === 2 ? 'noop' : 'playbook' }], { service: i === 0 ? 'svc-b' : 'svc-a', at: T0 + i });
          const run = await claimOne(store, { now: T0 + 5 });
          await store.finishRuns([outcome(run, { status: 'running', at: T0 + 10, correlationId: `c-${i}`, deadlineAt, attemptOutcome: 'waiting', result: { recipient: `r-${i}`, n: i } })]);
          await store.upsertHosts([{ runId: id!, name: `host-${i}`, at: T0 + 20 }]);
          ids.push(id!);
        }
        const [ended] = await seed(store, [{ deadlineAt: T0 + 100 }], { at: T0 + 3 });
        await store.upsertHosts([{ runId: ended!, name: 'host-3', at: T0 + 20 }]);
        expect(await store.sweep(T0 + 200, 100)).toMatchObject({ timedOut: 1 });
        const runs = async (q: Partial<RunQuery>) => (await store.listRuns({ limit: 10, offset: 0, sort: { field: 'created_at', direction: 'asc' }, ...q })).items.map((r) => r.id);
        const hosts = async (q: Partial<HostQuery>) => (await store.listHosts({ limit: 10, offset: 0, sort: { field: 'name', direction: 'asc' }, ...q })).items.map((h) => h.name);

        // Stored statuses: three running, one timeout.
        expect(await runs({ status: ['running'] })).toEqual(ids);
        expect(await runs({ status: ['timeout'] })).toEqual([ended]);
        // At T0+5000 the first two are past their deadlines.
        expect(await runs({ status: ['running'], statusAt: T0 + 5000 })).toEqual([ids[2]]);
        expect(await runs({ status: ['timeout'], statusAt: T0 + 5000 })).toEqual([ids[0], ids[1], ended]);
        expect(await runs({ status: ['running', 'timeout'], statusAt: T0 + 5000 })).toEqual([ids[0], ids[1], ids[2], ended]);
        expect(await runs({ status: ['success'], statusAt: T0 + 5000 })).toEqual([]);
        expect(await hosts({ status: ['running'], statusAt: T0 + 5000 })).toEqual(['host-2']);
        expect(await hosts({ status: ['timeout'], statusAt: T0 + 5000 })).toEqual(['host-0', 'host-1', 'host-3']);
        expect(await hosts({ status: ['running'] })).toEqual(['host-0', 'host-1', 'host-2']);

        expect(await runs({ service: ['svc-b'] })).toEqual([ids[0]]);
        expect(await runs({ actionType: ['playbook'] })).toEqual([ids[0], ids[1]]);
        expect(await hosts({ actionType: ['noop'] })).toEqual(['host-2']);
        expect(await runs({ result: { recipient: 'r-1' } })).toEqual([ids[1]]);
        expect(await runs({ result: { recipient: 'r-9' } })).toEqual([]);
      });

      it('a waiting outcome keeps the run running, without a lease, with a correlation id', async () => {
        await seed(store, [{}]);
        const run = await claimOne(store);
        const applied = await store.finishRuns([
          outcome(run, { status: 'running', at: T0 + 100, correlationId: 'corr-1', deadlineAt: T0 + 50_000, attemptOutcome: 'waiting' }),
        ]);
        expect(applied).toEqual([run.id]);
        const waiting = await store.getRun(run.id);
        expect(waiting).toMatchObject({ status: 'running', leaseOwner: null, leaseUntil: null, correlationId: 'corr-1', deadlineAt: T0 + 50_000, finishedAt: null });
        expect(await store.getAttempts(run.id)).toMatchObject([{ outcome: 'waiting' }]);
        expect((await store.listRuns({ limit: 10, offset: 0, correlationId: 'corr-1' })).items.map((r) => r.id)).toEqual([run.id]);
        expect(await store.stats(T0 + 100)).toMatchObject({ running: 0, waiting: 1, queued: 0 });
        // No lease to expire, no renewal to make.
        expect(await store.renewLeases('worker-1', [run.id], T0 + 99_000)).toBe(0);
        expect(await store.sweep(T0 + 40_000, 100)).toEqual({ requeued: 0, timedOut: 0, failed: 0 });
        expect(await claim(store, { now: T0 + 40_000 })).toEqual([]);
        // Its deadline makes it a timeout; it keeps its correlation id, so that a late answer can still find it.
        expect(await store.sweep(T0 + 50_001, 100)).toEqual({ requeued: 0, timedOut: 1, failed: 0 });
        expect(await store.getRun(run.id)).toMatchObject({ status: 'timeout', correlationId: 'corr-1', error: { code: 'deadline_exceeded' } });
        expect((await store.getAttempts(run.id)).map((a) => a.outcome)).toEqual(['waiting']);
      });

      it('a final failure keeps its dead letter', async () => {
        await seed(store, [{}], { service: 'svc-f', orgId: 'org-f' });
        const run = await claimOne(store);
        const error = { code: 'action_failed', message: 'the receiver said no' };
        const dead: NewDeadLetter = {
          origin: 'run', source: run.route, reason: error.code, error: error.message, details: { attempts: 1 },
          raw: Buffer.from(JSON.stringify({ runId: run.id })), contentType: 'application/json', runId: run.id, eventKey: run.eventKey,
          service: run.service, orgId: run.orgId, at: T0 + 100,
        };
        expect(await store.finishRuns([outcome(run, { status: 'failure', at: T0 + 100, error, deadLetter: dead })])).toEqual([run.id]);
        expect(await store.getRun(run.id)).toMatchObject({ status: 'failure', error, finishedAt: T0 + 100 });
        const letters = await store.listDeadLetters({ limit: 10, offset: 0, runId: run.id });
        expect(letters.total).toBe(1);
        expect(letters.items[0]).toMatchObject({
          origin: 'run', reason: 'action_failed', error: error.message, runId: run.id, eventKey: run.eventKey, attempts: 1,
          service: 'svc-f', orgId: 'org-f', firstSeenAt: T0 + 100, lastSeenAt: T0 + 100, details: { attempts: 1 },
        });
        expect(letters.items[0]!.raw.equals(dead.raw)).toBe(true);
      });

      it('records outcomes whose text holds NUL characters or half a surrogate pair', async () => {
        await seed(store, [{}, {}]);
        const [a, b] = (await claim(store)).map((c) => c.run) as [Run, Run];
        const body = 'body \u0000 with a cut emoji \ud83d';
        const ok = outcome(a, { result: { status: 200, body } });
        ok.attempt.response = body;
        const error = { code: 'action_failed', message: 'receiver said \u0000' };
        const failed = outcome(b, { status: 'failure', error, deadLetter: deadLetter({ origin: 'run', runId: b.id, error: error.message }) });
        failed.attempt.errorMessage = error.message;
        expect((await store.finishRuns([ok, failed])).sort()).toEqual([a.id, b.id].sort());
        expectStorable(((await store.getRun(a.id))?.result as { body: string }).body, body);
        expectStorable((await store.getAttempts(a.id))[0]?.response, body);
        expectStorable((await store.getRun(b.id))?.error?.message, error.message);
        expectStorable((await store.getAttempts(b.id))[0]?.errorMessage, error.message);
        const events = (await allRunEvents(store)).filter((e) => e.eventType === 'update' && e.status !== 'running');
        expect(events).toHaveLength(2);
        expect((await store.listDeadLetters({ limit: 10, offset: 0, runId: b.id })).total).toBe(1);
      });

      it('keeps no dead letter when the failure is not applied', async () => {
        await seed(store, [{}]);
        const run = await claimOne(store);
        const dead = deadLetter({ origin: 'run', runId: run.id });
        expect(await store.finishRuns([{ ...outcome(run, { status: 'failure', deadLetter: dead }), owner: 'worker-2' }])).toEqual([]);
        expect((await store.listDeadLetters({ limit: 10, offset: 0 })).total).toBe(0);
      });
    });

    describe('releaseRuns', () => {
      it("gives the owner's runs back: queued, attempt not counted, claimable now", async () => {
        await seed(store, [{}, {}]);
        const [a, b] = (await claim(store)).map((c) => c.run) as [Run, Run];
        expect(await store.releaseRuns('worker-2', [a.id, b.id], T0 + 50)).toBe(0);
        expect(await store.releaseRuns('worker-1', [a.id], T0 + 50)).toBe(1);
        expect(await store.getRun(a.id)).toMatchObject({ status: 'queued', attempts: 0, leaseOwner: null, leaseUntil: null, availableAt: T0 + 50, updatedAt: T0 + 50 });
        expect((await store.getRun(b.id))?.status).toBe('running');
        expect(await historyOf(store, a.id)).toEqual(['create:queued', 'update:running', 'update:queued']);
        expect((await allRunEvents(store)).at(-1)!.payload).toMatchObject({ id: a.id, status: 'queued', attempts: 0 });
        expect(await store.getAttempts(a.id)).toEqual([]);
        const again = await claimOne(store, { now: T0 + 50 });
        expect(again).toMatchObject({ id: a.id, attempts: 1 });
        expect(await store.releaseRuns('worker-1', [], T0 + 60)).toBe(0);
      });
    });

    describe('sweep', () => {
      it('requeues a run whose lease expired, with a lease_expired attempt', async () => {
        await seed(store, [{}]);
        const run = await claimOne(store, { leaseMs: 1000 });
        expect(await store.sweep(T0 + 1000, 100)).toEqual({ requeued: 0, timedOut: 0, failed: 0 });
        expect(await store.sweep(T0 + 1001, 100)).toEqual({ requeued: 1, timedOut: 0, failed: 0 });
        expect(await store.getRun(run.id)).toMatchObject({
          status: 'queued', attempts: 1, availableAt: T0 + 1001, leaseOwner: null, leaseUntil: null, error: { code: 'lease_expired' },
        });
        expect(await store.getAttempts(run.id)).toMatchObject([{ n: 1, outcome: 'failure', errorCode: 'lease_expired', endedAt: T0 + 1001 }]);
        expect(await historyOf(store, run.id)).toEqual(['create:queued', 'update:running', 'update:queued']);
        expect((await claimOne(store, { now: T0 + 1001 })).attempts).toBe(2);
      });

      it('does not charge a lost lease to the retry budget, up to MAX_LEASE_EXPIRIES times', async () => {
        await seed(store, [{ maxAttempts: 1 }]);
        const run = await claimOne(store, { leaseMs: 1000 });
        // A worker died holding the run's only attempt: it is queued again, with one more attempt allowed.
        expect(await store.sweep(T0 + 2000, 100)).toEqual({ requeued: 1, timedOut: 0, failed: 0 });
        expect(await store.getRun(run.id)).toMatchObject({ status: 'queued', maxAttempts: 2, leaseOwner: null, error: { code: 'lease_expired' } });
        expect((await store.getAttempts(run.id)).map((a) => a.errorCode)).toEqual(['lease_expired']);
        expect(await historyOf(store, run.id)).toEqual(['create:queued', 'update:running', 'update:queued']);
      });

      it('fails a run that lost its worker more than MAX_LEASE_EXPIRIES times, with a dead letter', async () => {
        await seed(store, [{ maxAttempts: 1 }]);
        let id = '';
        let at = T0;
        for (let i = 1; i <= MAX_LEASE_EXPIRIES; i++) {
          id = (await claimOne(store, { leaseMs: 1000, now: at })).id;
          at += 2000;
          expect(await store.sweep(at, 100)).toEqual({ requeued: 1, timedOut: 0, failed: 0 });
        }
        await claimOne(store, { leaseMs: 1000, now: at });
        expect(await store.sweep(at + 2000, 100)).toEqual({ requeued: 0, timedOut: 0, failed: 1 });
        expect(await store.getRun(id)).toMatchObject({ status: 'failure', finishedAt: at + 2000, leaseOwner: null, error: { code: 'attempts_exhausted' } });
        const attempts = await store.getAttempts(id);
        expect(attempts.map((a) => a.errorCode)).toEqual(Array(MAX_LEASE_EXPIRIES + 1).fill('lease_expired'));
        expect(attempts.map((a) => a.n)).toEqual(Array.from({ length: MAX_LEASE_EXPIRIES + 1 }, (_, i) => i + 1));
        const letters = await store.listDeadLetters({ limit: 10, offset: 0, runId: id });
        expect(letters.items.map((d) => [d.origin, d.reason])).toEqual([['run', 'attempts_exhausted']]);
      });

      it('fails a run past its age limit when its lease expires', async () => {
        await seed(store, [{ maxAttempts: 5, expiresAt: T0 + 1500 }]);
        const run = await claimOne(store, { leaseMs: 1000 });
        expect(await store.sweep(T0 + 2000, 100)).toEqual({ requeued: 0, timedOut: 0, failed: 1 });
        expect(await store.getRun(run.id)).toMatchObject({ status: 'failure', error: { code: 'attempts_exhausted' } });
        const [letter] = (await store.listDeadLetters({ limit: 10, offset: 0, runId: run.id })).items;
        const raw = JSON.parse((await store.getDeadLetter(letter!.id))!.raw.toString('utf8')) as { event: unknown };
        expect(raw.event).toEqual((await store.getEvent(run.eventKey))!.event);
      });

      it('times out runs past their deadline, queued or running, with dead letters; the deadline wins over an expired lease', async () => {
        const [queued, running, fine] = await seed(store, [{ deadlineAt: T0 + 500 }, { deadlineAt: T0 + 500 }, { deadlineAt: T0 + 10_000 }]);
        const claimed = await claim(store, { limit: 3, leaseMs: 100 });
        // Keep only `running` claimed: give the others back.
        await store.releaseRuns('worker-1', claimed.map((c) => c.run.id).filter((id) => id !== running), T0 + 1);
        // At T0 + 501 the running run's lease (until T0 + 100) has expired too.
        const result = await store.sweep(T0 + 501, 100);
        expect(result).toEqual({ requeued: 0, timedOut: 2, failed: 0 });
        for (const id of [queued!, running!]) {
          expect(await store.getRun(id)).toMatchObject({ status: 'timeout', finishedAt: T0 + 501, leaseOwner: null, error: { code: 'deadline_exceeded' } });
          expect((await historyOf(store, id)).at(-1)).toBe('update:timeout');
        }
        expect(await store.getAttempts(queued!)).toEqual([]);
        expect(await store.getAttempts(running!)).toMatchObject([{ n: 1, outcome: 'timeout', errorCode: 'deadline_exceeded' }]);
        expect((await store.getRun(fine!))?.status).toBe('queued');
        const letters = await store.listDeadLetters({ limit: 10, offset: 0, reason: ['deadline_exceeded'] });
        expect(letters.items.map((d) => d.runId).sort()).toEqual([queued, running].sort());
        expect(letters.items.map((d) => d.origin)).toEqual(['run', 'run']);
        // Each holds its run's event, as the worker's own dead letters do: a presenter shows what failed.
        for (const item of letters.items) {
          const letter = await store.getDeadLetter(item.id);
          const run = await store.getRun(item.runId!);
          const event = (await store.getEvent(run!.eventKey))!.event;
          expect(JSON.parse(letter!.raw.toString('utf8'))).toEqual({ runId: run!.id, eventKey: run!.eventKey, route: run!.route, action: run!.action, event });
        }
      });

      it('sweeps at most limit runs per kind at a time', async () => {
        await seed(store, Array.from({ length: 5 }, () => ({ deadlineAt: T0 + 10 })));
        expect((await store.sweep(T0 + 10, 2)).timedOut).toBe(0);
        expect((await store.sweep(T0 + 11, 2)).timedOut).toBe(2);
        expect((await store.sweep(T0 + 11, 2)).timedOut).toBe(2);
        expect((await store.sweep(T0 + 11, 2)).timedOut).toBe(1);
        expect((await store.sweep(T0 + 11, 2)).timedOut).toBe(0);
      });

      it('two concurrent sweepers handle each expired run once', async () => {
        await seed(store, Array.from({ length: 40 }, () => ({ deadlineAt: T0 + 10 })));
        const other = await peer();
        const results = await Promise.all([store.sweep(T0 + 11, 1000), other.sweep(T0 + 11, 1000)]);
        expect(results[0]!.timedOut + results[1]!.timedOut).toBe(40);
        const timeouts = (await allRunEvents(store)).filter((e) => e.status === 'timeout');
        expect(timeouts).toHaveLength(40);
        expect((await store.listDeadLetters({ limit: 1, offset: 0 })).items[0]?.attempts).toBe(1);
        expect((await store.listDeadLetters({ limit: 1, offset: 0 })).total).toBe(40);
      });
    });

    describe('cancelRun', () => {
      it('cancels a queued run, with a run event; a second cancel is invalid_state', async () => {
        const [id] = await seed(store, [{}]);
        const canceled = await store.cancelRun(id!, T0 + 10);
        expect(canceled).toMatchObject({ id, status: 'canceled', finishedAt: T0 + 10, updatedAt: T0 + 10, error: { code: 'canceled' } });
        expect(await store.getRun(id!)).toEqual(canceled);
        expect(await historyOf(store, id!)).toEqual(['create:queued', 'update:canceled']);
        expect(await claim(store, { now: T0 + 20 })).toEqual([]);
        await expectError(store.cancelRun(id!, T0 + 20), 'invalid_state');
        expect(await historyOf(store, id!)).toEqual(['create:queued', 'update:canceled']);
      });

      it('cancels a running run and records the attempt as canceled', async () => {
        await seed(store, [{}]);
        const run = await claimOne(store);
        const canceled = await store.cancelRun(run.id, T0 + 10);
        expect(canceled).toMatchObject({ status: 'canceled', leaseOwner: null, leaseUntil: null });
        expect(await store.getAttempts(run.id)).toMatchObject([{ n: 1, outcome: 'canceled', endedAt: T0 + 10 }]);
        expect(await store.renewLeases('worker-1', [run.id], T0 + 99_000)).toBe(0);
      });

      it('is not_found for an unknown run or one out of scope, and leaves it alone', async () => {
        const [id] = await seed(store, [{}], { orgId: 'org-1', service: 'svc-a' });
        await expectError(store.cancelRun('no-such-run', T0), 'not_found');
        await expectError(store.cancelRun(id!, T0, { orgId: 'org-2' }), 'not_found');
        await expectError(store.cancelRun(id!, T0, { services: ['svc-b'] }), 'not_found');
        expect((await store.getRun(id!))?.status).toBe('queued');
        expect(await historyOf(store, id!)).toEqual(['create:queued']);
        expect((await store.cancelRun(id!, T0, { orgId: 'org-1', services: ['svc-b', 'svc-a'] })).status).toBe('canceled');
      });
    });

    describe('retryRun', () => {
      it('queues a failed run again with more attempts and a new deadline', async () => {
        await seed(store, [{ maxAttempts: 1 }]);
        const run = await claimOne(store);
        await store.finishRuns([outcome(run, { status: 'failure', at: T0 + 100, error: { code: 'action_failed', message: 'no' } })]);
        const retried = await store.retryRun(run.id, T0 + 200, 2, T0 + 9000);
        expect(retried).toMatchObject({
          status: 'queued', attempts: 1, maxAttempts: 3, availableAt: T0 + 200, deadlineAt: T0 + 9000, expiresAt: T0 + 9000,
          error: null, finishedAt: null, updatedAt: T0 + 200,
        });
        expect(await store.getRun(run.id)).toEqual(retried);
        expect(await historyOf(store, run.id)).toEqual(['create:queued', 'update:running', 'update:failure', 'update:queued']);
        expect(await claim(store, { now: T0 + 199 })).toEqual([]);
        expect((await claimOne(store, { now: T0 + 200 })).attempts).toBe(2);
      });

      it('retries canceled and timed-out runs; refuses queued, running and successful ones', async () => {
        const [canceled, timedOut] = await seed(store, [{}, { deadlineAt: T0 + 5 }]);
        const [queued] = await seed(store, [{ availableAt: T0 + 1000 }]);
        await store.cancelRun(canceled!, T0 + 1);
        expect(await store.sweep(T0 + 6, 10)).toMatchObject({ timedOut: 1 });
        const [succeeded, running] = await seed(store, [{}, {}]);
        const claimed = await claim(store, { now: T0 + 7 });
        expect(claimed.map((c) => c.run.id)).toEqual([succeeded, running]);
        await store.finishRuns([outcome(claimed[0]!.run)]);

        expect((await store.retryRun(canceled!, T0 + 10, 1, T0 + HOUR)).status).toBe('queued');
        expect((await store.retryRun(timedOut!, T0 + 10, 1, T0 + HOUR)).status).toBe('queued');
        for (const id of [queued!, running!, succeeded!]) {
          const before = await store.getRun(id);
          await expectError(store.retryRun(id, T0 + 10, 1, T0 + HOUR), 'invalid_state');
          expect(await store.getRun(id)).toEqual(before);
        }
      });

      it('is not_found for an unknown run or one out of scope', async () => {
        const [id] = await seed(store, [{}], { orgId: 'org-1', service: 'svc-a' });
        await store.cancelRun(id!, T0);
        await expectError(store.retryRun('no-such-run', T0, 1, T0 + HOUR), 'not_found');
        await expectError(store.retryRun(id!, T0, 1, T0 + HOUR, { orgId: 'org-2' }), 'not_found');
        await expectError(store.retryRun(id!, T0, 1, T0 + HOUR, { services: ['svc-b'] }), 'not_found');
        expect((await store.getRun(id!))?.status).toBe('canceled');
        expect((await store.retryRun(id!, T0, 1, T0 + HOUR, { orgId: 'org-1' })).status).toBe('queued');
      });
    });

    describe('resolveRuns', () => {
      /** Claims the runs seeded and records each as waiting under `corr-<i>`. */
      async function waiting(count: number, o: { orgId?: string; deadlineAt?: number } = {}): Promise<Run[]> {
        await seed(store, Array.from({ length: count }, () => ({})), { orgId: o.orgId ?? 'org-1' });
        const claimed = await claim(store, { limit: count });
        await store.finishRuns(
          claimed.map((c, i) =>
            outcome(c.run, { status: 'running', at: T0 + 100, correlationId: `corr-${i}`, deadlineAt: o.deadlineAt ?? T0 + HOUR, attemptOutcome: 'waiting' }),
          ),
        );
        return Promise.all(claimed.map(async (c) => (await store.getRun(c.run.id))!));
      }

      it('finds a tenant\'s run by its correlation id, and no other tenant\'s', async () => {
        const [, b] = await waiting(2);
        expect((await store.getRunByCorrelation('org-1', 'corr-1'))?.id).toBe(b!.id);
        expect((await store.getRunByCorrelation('org-1', 'corr-1'))).toMatchObject({ status: 'running', correlationId: 'corr-1', orgId: 'org-1' });
        expect(await store.getRunByCorrelation('org-2', 'corr-1')).toBeNull();
        expect(await store.getRunByCorrelation('org-1', 'corr-9')).toBeNull();
      });

      it('ends waiting runs by id or by tenant and correlation id, with their attempts and run events; the same answer again changes nothing', async () => {
        const [a, b] = await waiting(2);
        const results = await store.resolveRuns([
          { runId: a!.id, status: 'success', at: T0 + 200, result: { hosts: 2 }, response: 'uploaded' },
          { orgId: 'org-1', correlationId: 'corr-1', status: 'failure', at: T0 + 201, error: { code: 'action_failed', message: 'the playbook failed' } },
        ]);
        expect(results.map((r) => [r.outcome, r.run?.id, r.run?.status])).toEqual([
          ['resolved', a!.id, 'success'],
          ['resolved', b!.id, 'failure'],
        ]);
        expect(await store.getRun(a!.id)).toMatchObject({ status: 'success', finishedAt: T0 + 200, updatedAt: T0 + 200, result: { hosts: 2 }, error: null, leaseOwner: null, correlationId: 'corr-0' });
        expect(await store.getRun(b!.id)).toMatchObject({ status: 'failure', finishedAt: T0 + 201, error: { code: 'action_failed', message: 'the playbook failed' } });
        expect(await store.getAttempts(a!.id)).toMatchObject([{ n: 1, outcome: 'success', endedAt: T0 + 200, response: 'uploaded' }]);
        expect(await store.getAttempts(b!.id)).toMatchObject([{ n: 1, outcome: 'failure', errorCode: 'action_failed' }]);
        expect(await historyOf(store, a!.id)).toEqual(['create:queued', 'update:running', 'update:running', 'update:success']);
        expect(await store.stats(T0 + 300)).toMatchObject({ waiting: 0, running: 0 });

        const again = await store.resolveRuns([
          { runId: a!.id, status: 'success', at: T0 + 300, result: { hosts: 3 } },
          { runId: b!.id, status: 'success', at: T0 + 300 },
        ]);
        expect(again.map((r) => r.outcome)).toEqual(['unchanged', 'conflict']);
        expect(await store.getRun(a!.id)).toMatchObject({ status: 'success', result: { hosts: 2 }, updatedAt: T0 + 200 });
        expect((await store.getRun(b!.id))?.status).toBe('failure');
        expect(await historyOf(store, a!.id)).toEqual(['create:queued', 'update:running', 'update:running', 'update:success']);
      });

      it('finds a correlation id only in its tenant; an unknown run is not_found', async () => {
        const [run] = await waiting(1, { orgId: 'org-1' });
        const results = await store.resolveRuns([
          { orgId: 'org-2', correlationId: 'corr-0', status: 'success', at: T0 + 200 },
          { runId: 'no-such-run', status: 'success', at: T0 + 200 },
          { orgId: 'org-1', correlationId: 'no-such-correlation', status: 'success', at: T0 + 200 },
        ]);
        expect(results).toEqual([
          { outcome: 'not_found', run: null },
          { outcome: 'not_found', run: null },
          { outcome: 'not_found', run: null },
        ]);
        expect((await store.getRun(run!.id))?.status).toBe('running');
      });

      it('completes a run that timed out only where the answer may reopen it', async () => {
        const [run] = await waiting(1, { deadlineAt: T0 + 1000 });
        expect(await store.sweep(T0 + 1001, 10)).toMatchObject({ timedOut: 1 });
        const refused = await store.resolveRuns([{ orgId: 'org-1', correlationId: 'corr-0', status: 'success', at: T0 + 2000 }]);
        expect(refused.map((r) => [r.outcome, r.run?.status])).toEqual([['conflict', 'timeout']]);
        const late = await store.resolveRuns([{ orgId: 'org-1', correlationId: 'corr-0', status: 'success', at: T0 + 2001, reopen: ['timeout'] }]);
        expect(late.map((r) => [r.outcome, r.run?.status])).toEqual([['resolved', 'success']]);
        expect(await store.getRun(run!.id)).toMatchObject({ status: 'success', error: null, finishedAt: T0 + 2001 });
        expect(await store.getAttempts(run!.id)).toMatchObject([{ n: 1, outcome: 'success', endedAt: T0 + 2001 }]);
        expect(await historyOf(store, run!.id)).toEqual(['create:queued', 'update:running', 'update:running', 'update:timeout', 'update:success']);
      });

      it('records progress on a waiting run and keeps it waiting; progress for a run that ended is a conflict', async () => {
        const [run] = await waiting(1);
        const progress = await store.resolveRuns([{ runId: run!.id, status: 'running', at: T0 + 150, result: { events: 3 } }]);
        expect(progress[0]).toMatchObject({ outcome: 'resolved', run: { status: 'running', result: { events: 3 } } });
        expect(await store.getRun(run!.id)).toMatchObject({ status: 'running', leaseOwner: null, result: { events: 3 }, updatedAt: T0 + 150, finishedAt: null });
        expect(await store.stats(T0 + 160)).toMatchObject({ waiting: 1 });
        // Progress, then the end, in one batch: applied in order.
        const both = await store.resolveRuns([
          { runId: run!.id, status: 'running', at: T0 + 170, result: { events: 5 } },
          { runId: run!.id, status: 'canceled', at: T0 + 171 },
        ]);
        expect(both.map((r) => r.outcome)).toEqual(['resolved', 'resolved']);
        expect(await store.getRun(run!.id)).toMatchObject({ status: 'canceled', result: { events: 5 }, error: { code: 'canceled' } });
        expect((await store.resolveRuns([{ runId: run!.id, status: 'running', at: T0 + 180, result: { events: 6 } }]))[0]!.outcome).toBe('conflict');
        expect((await store.getRun(run!.id))?.result).toEqual({ events: 5 });
      });

      it('lets an answer overtake the waiting outcome it answers: the outcome recorded after it is fenced out', async () => {
        await seed(store, [{}]);
        const run = await claimOne(store);
        expect((await store.resolveRuns([{ runId: run.id, status: 'success', at: T0 + 50 }]))[0]!.outcome).toBe('resolved');
        const applied = await store.finishRuns([outcome(run, { status: 'running', at: T0 + 60, correlationId: 'late', attemptOutcome: 'waiting' })]);
        expect(applied).toEqual([]);
        expect(await store.getRun(run.id)).toMatchObject({ status: 'success', finishedAt: T0 + 50 });
        expect(await store.getAttempts(run.id)).toMatchObject([{ n: 1, outcome: 'success' }]);
      });
    });

    describe('hosts', () => {
      /** The host events in the outbox, as `eventType:name:status`, in seq order. */
      async function hostHistory(): Promise<string[]> {
        return (await store.readRunEvents(0, 10_000)).flatMap((e) => (e.kind === 'host' ? [`${e.eventType}:${e.payload.name}:${e.status}`] : []));
      }

      it('creates the hosts of a run with host events, changes them, lists them with filters and finds them by id', async () => {
        const [runId, other] = await seed(store, [{ labels: { team: 'noc' } }, { route: 'route-b' }], { service: 'svc-h', orgId: 'org-h' });
        const created = await store.upsertHosts([
          { runId: runId!, name: 'web-1', at: T0 + 10 },
          { runId: runId!, name: 'web-2', at: T0 + 11, status: 'success', log: { replace: 'ok\n' }, details: { inventory_id: 'inv-2' } },
          { runId: other!, name: 'db-1', at: T0 + 12 },
        ]);
        expect(created.map((r) => r.outcome)).toEqual(['created', 'created', 'created']);
        const web1 = created[0]!.host!;
        expect(web1).toMatchObject({ runId, name: 'web-1', status: 'running', log: '', sequence: null, details: {}, service: 'svc-h', orgId: 'org-h', createdAt: T0 + 10, updatedAt: T0 + 10 });
        expect(await store.getHost(web1.id)).toEqual(web1);
        expect(await store.getHost(web1.id, { orgId: 'org-x' })).toBeNull();
        expect(await store.getHost('no-such-host')).toBeNull();

        const updated = await store.upsertHosts([{ runId: runId!, name: 'web-1', at: T0 + 20, status: 'failure', log: { append: 'boom' }, details: { inventory_id: 'inv-1' } }]);
        expect(updated[0]).toMatchObject({ outcome: 'updated', host: { id: web1.id, status: 'failure', log: 'boom', details: { inventory_id: 'inv-1' }, updatedAt: T0 + 20, createdAt: T0 + 10 } });
        const same = await store.upsertHosts([{ runId: runId!, name: 'web-1', at: T0 + 30, status: 'failure' }]);
        expect(same[0]).toMatchObject({ outcome: 'unchanged', host: { updatedAt: T0 + 20 } });
        expect(await hostHistory()).toEqual(['create:web-1:running', 'create:web-2:success', 'create:db-1:running', 'update:web-1:failure']);
        const events = (await store.readRunEvents(0, 100)).filter((e) => e.kind === 'host');
        // A host event carries the host's log as it is when it is read.
        expect(events[0]).toMatchObject({ kind: 'host', hostId: web1.id, runId, service: 'svc-h', orgId: 'org-h', route: 'route-a', actionType: 'http', payload: { name: 'web-1', log: 'boom' } });

        const list = (q: Partial<HostQuery>) => store.listHosts({ limit: 10, offset: 0, ...q }).then((l) => [l.total, l.items.map((h) => h.name)]);
        expect(await list({ runId: [runId!] })).toEqual([2, ['web-2', 'web-1']]);
        expect(await list({ runId: [runId!], sort: { field: 'name', direction: 'asc' } })).toEqual([2, ['web-1', 'web-2']]);
        expect(await list({ status: ['failure', 'running'] })).toEqual([2, ['db-1', 'web-1']]);
        expect(await list({ details: { inventory_id: 'inv-2' } })).toEqual([1, ['web-2']]);
        expect(await list({ name: ['db-1'] })).toEqual([1, ['db-1']]);
        expect(await list({ route: ['route-b'] })).toEqual([1, ['db-1']]);
        expect(await list({ runLabels: { team: 'noc' } })).toEqual([2, ['web-2', 'web-1']]);
        expect(await list({ scope: { orgId: 'org-h', services: ['svc-other'] } })).toEqual([0, []]);
        expect(await list({ createdAt: { from: T0 + 11 }, sort: { field: 'created_at', direction: 'asc' } })).toEqual([2, ['web-2', 'db-1']]);
        expect(await list({ limit: 1, offset: 1, sort: { field: 'created_at', direction: 'asc' } })).toEqual([3, ['web-2']]);
      });

      it('leaves alone what it must: terminal statuses it is told to keep, older chunks; marks gaps in an appended log', async () => {
        const [runId] = await seed(store, [{}]);
        const up = (u: Partial<HostUpsert>) => store.upsertHosts([{ runId: runId!, name: 'h', at: T0, ...u }]).then((r) => r[0]!);
        const marker = '\n\u2026\n';
        expect((await up({ sequence: 0, log: { append: 'first', gapMarker: marker } })).host).toMatchObject({ log: 'first', sequence: 0 });
        expect((await up({ sequence: 2, log: { append: 'third', gapMarker: marker } })).host).toMatchObject({ log: `first${marker}third`, sequence: 2 });
        expect(await up({ sequence: 1, log: { append: 'second', gapMarker: marker } })).toMatchObject({ outcome: 'unchanged', host: { log: `first${marker}third` } });
        expect(await up({ sequence: 2, log: { append: 'third' } })).toMatchObject({ outcome: 'unchanged' });
        expect((await up({ sequence: 3, log: { append: '!' }, status: 'success' })).host).toMatchObject({ log: `first${marker}third!`, status: 'success' });
        expect(await up({ status: 'failure', log: { replace: 'x' }, keep: ['success', 'failure'] })).toMatchObject({ outcome: 'unchanged', host: { status: 'success' } });
        // A new host whose first chunk is not the first is marked too.
        const late = await store.upsertHosts([{ runId: runId!, name: 'late', at: T0, sequence: 4, log: { append: 'fifth', gapMarker: marker } }]);
        expect(late[0]!.host).toMatchObject({ log: `${marker}fifth`, sequence: 4 });
      });

      it('only updates or only creates when told to; a host of no run is not_found', async () => {
        const [runId] = await seed(store, [{}]);
        const results = await store.upsertHosts([
          { runId: runId!, name: 'missing', at: T0, only: 'update', status: 'success' },
          { runId: 'no-such-run', name: 'x', at: T0 },
          { runId: runId!, name: 'new', at: T0, only: 'create', status: 'queued' },
          { runId: runId!, name: 'new', at: T0 + 1, only: 'create', status: 'success' },
        ]);
        expect(results.map((r) => r.outcome)).toEqual(['not_found', 'not_found', 'created', 'unchanged']);
        expect((await store.listHosts({ limit: 10, offset: 0 })).items.map((h) => [h.name, h.status])).toEqual([['new', 'queued']]);
      });

      it('ends the hosts still under way when their run times out or is canceled, with host events', async () => {
        const [late, canceled] = await seed(store, [{ deadlineAt: T0 + 100 }, {}]);
        await store.upsertHosts([
          { runId: late!, name: 'done', at: T0, status: 'success' },
          { runId: late!, name: 'busy', at: T0 },
          { runId: canceled!, name: 'waiting', at: T0, status: 'queued' },
        ]);
        expect(await store.sweep(T0 + 101, 10)).toMatchObject({ timedOut: 1 });
        await store.cancelRun(canceled!, T0 + 102);
        const hosts = await store.listHosts({ limit: 10, offset: 0, sort: { field: 'name', direction: 'asc' } });
        expect(hosts.items.map((h) => [h.name, h.status, h.updatedAt])).toEqual([
          ['busy', 'timeout', T0 + 101],
          ['done', 'success', T0],
          ['waiting', 'canceled', T0 + 102],
        ]);
        expect((await hostHistory()).slice(3)).toEqual(['update:busy:timeout', 'update:waiting:canceled']);
      });

      it('goes with its run when the run is pruned', async () => {
        await seed(store, [{}]);
        const run = await claimOne(store);
        await store.upsertHosts([{ runId: run.id, name: 'h', at: T0 }]);
        await store.finishRuns([outcome(run)]);
        expect(await store.prune({ runsBefore: T0 + HOUR, limit: 10 })).toMatchObject({ runs: 1 });
        expect((await store.listHosts({ limit: 10, offset: 0 })).total).toBe(0);
      });
    });

    describe('run events', () => {
      it('record every change of a run, in order, with the status after it', async () => {
        const [id] = await seed(store, [{ maxAttempts: 5 }]);
        let run = await claimOne(store, { now: T0 + 1, leaseMs: 100 });
        await store.finishRuns([outcome(run, { status: 'queued', at: T0 + 2, availableAt: T0 + 3, error: { code: 'network_error', message: 'reset' }, attemptOutcome: 'retry' })]);
        run = await claimOne(store, { now: T0 + 3, leaseMs: 100 });
        await store.releaseRuns('worker-1', [id!], T0 + 4);
        run = await claimOne(store, { now: T0 + 5, leaseMs: 100 });
        await store.sweep(T0 + 200, 10); // lease expired → queued
        run = await claimOne(store, { now: T0 + 300, leaseMs: 100 });
        await store.finishRuns([outcome(run, { status: 'failure', at: T0 + 301, error: { code: 'action_failed', message: 'no' } })]);
        await store.retryRun(id!, T0 + 400, 1, T0 + HOUR);
        await store.cancelRun(id!, T0 + 500);

        expect(await historyOf(store, id!)).toEqual([
          'create:queued',
          'update:running',
          'update:queued',
          'update:running',
          'update:queued',
          'update:running',
          'update:queued',
          'update:running',
          'update:failure',
          'update:queued',
          'update:canceled',
        ]);
        const events = (await allRunEvents(store)).filter((e) => e.runId === id);
        expect(events.map((e) => e.at)).toEqual([T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5, T0 + 200, T0 + 300, T0 + 301, T0 + 400, T0 + 500]);
        expect(events.map((e) => e.payload.status)).toEqual(events.map((e) => e.status));
        expect(events.map((e) => e.payload.attempts)).toEqual([0, 1, 1, 2, 1, 2, 2, 3, 3, 3, 3]);
        for (let i = 1; i < events.length; i++) expect(events[i]!.seq).toBeGreaterThan(events[i - 1]!.seq);
      });

      it('are read after a seq, up to a limit, within a scope; lastRunEventSeq is the newest', async () => {
        expect(await store.lastRunEventSeq()).toBe(0);
        expect(await store.readRunEvents(0, 10)).toEqual([]);
        const [a1, a2] = await seed(store, [{}, {}], { orgId: 'org-1', service: 'svc-a' });
        const [b1] = await seed(store, [{}], { orgId: 'org-2', service: 'svc-b' });
        const [c1] = await seed(store, [{}], { orgId: 'org-1', service: 'svc-c' });
        const all = await store.readRunEvents(0, 100);
        expect(all.map((e) => e.runId)).toEqual([a1, a2, b1, c1]);
        expect(await store.lastRunEventSeq()).toBe(all[3]!.seq);
        expect(await store.readRunEvents(all[0]!.seq, 2)).toEqual(all.slice(1, 3));
        expect(await store.readRunEvents(all[3]!.seq, 10)).toEqual([]);
        expect((await store.readRunEvents(0, 100, { orgId: 'org-1' })).map((e) => e.runId)).toEqual([a1, a2, c1]);
        expect((await store.readRunEvents(0, 100, { services: ['svc-b', 'svc-c'] })).map((e) => e.runId)).toEqual([b1, c1]);
        expect((await store.readRunEvents(all[1]!.seq, 100, { orgId: 'org-1', services: ['svc-a'] })).map((e) => e.runId)).toEqual([]);
      });
    });

    describe('outputs: republish, relay cursors, dead letters in order', () => {
      it('republishRuns writes one read run event per matching run, with the whole run, after what came before', async () => {
        const [a1, a2] = await seed(store, [{ route: 'route-a' }, { route: 'route-b' }], { orgId: 'org-1', service: 'svc-a', at: T0 });
        const [b1] = await seed(store, [{ route: 'route-a' }], { orgId: 'org-2', service: 'svc-b', at: T0 + 10 });
        const run = await claimOne(store, { now: T0 + 20 });
        await store.finishRuns([outcome(run, { status: 'success', at: T0 + 21, result: { ok: true } })]);
        const before = await store.lastRunEventSeq();

        expect(await store.republishRuns({ route: ['route-a'] }, T0 + 30)).toBe(2);
        const reads = await store.readRunEvents(before, 100);
        expect(reads.map((e) => e.runId).sort()).toEqual([a1, b1].sort());
        for (const e of reads) {
          expect(e.eventType).toBe('read');
          expect(e.at).toBe(T0 + 30);
          const current = await store.getRun(e.runId);
          expect(e.status).toBe(current!.status);
          expect(e.payload).toEqual(withoutLease(current!));
        }
        expect(await store.republishRuns({ status: ['success'] }, T0 + 31)).toBe(1);
        expect(await store.republishRuns({ orgId: ['org-2'], service: ['svc-b'] }, T0 + 32)).toBe(1);
        expect(await store.republishRuns({ service: ['svc-a'], createdAt: { from: T0, to: T0 + 1 } }, T0 + 33)).toBe(2);
        expect(await store.republishRuns({ scope: { orgId: 'org-1' }, route: ['route-b'] }, T0 + 34)).toBe(1);
        expect(await store.republishRuns({ scope: { services: [] } }, T0 + 35)).toBe(0);
        expect(await store.republishRuns({ type: ['no.such.type'] }, T0 + 36)).toBe(0);
        expect((await store.readRunEvents(before, 100)).filter((e) => e.runId === a2).map((e) => e.at)).toEqual([T0 + 33, T0 + 34]);
      });

      it('republishRuns pages through more runs than one batch', async () => {
        const items = Array.from({ length: 2100 }, () => intakeItem({ runs: [{}] }));
        for (let i = 0; i < items.length; i += 500) await store.commitIntake(items.slice(i, i + 500));
        const before = await store.lastRunEventSeq();
        expect(await store.republishRuns({}, T0 + 1)).toBe(2100);
        const reads = await store.readRunEvents(before, 10_000);
        expect(reads).toHaveLength(2100);
        expect(new Set(reads.map((e) => e.runId)).size).toBe(2100);
      });

      it('a relay cursor starts at 0, is leased to one owner at a time, and moves only for its holder', async () => {
        const other = await peer();
        expect(await store.acquireRelay('bus', 'run_events', 'p1', T0, LEASE)).toBe(0);
        expect(await other.acquireRelay('bus', 'run_events', 'p2', T0 + 1, LEASE)).toBeNull();
        // Another stream or output is another lease.
        expect(await other.acquireRelay('bus', 'dead_letters', 'p2', T0 + 1, LEASE)).toBe(0);
        expect(await other.acquireRelay('other', 'run_events', 'p2', T0 + 1, LEASE)).toBe(0);
        expect(await store.advanceRelay('bus', 'run_events', 'p1', 42, T0 + 2, LEASE)).toBe(true);
        expect(await other.advanceRelay('bus', 'run_events', 'p2', 99, T0 + 2, LEASE)).toBe(false);
        // Renewed by its holder; taken over once expired.
        expect(await store.acquireRelay('bus', 'run_events', 'p1', T0 + 3, LEASE)).toBe(42);
        expect(await other.acquireRelay('bus', 'run_events', 'p2', T0 + 3 + LEASE - 1, LEASE)).toBeNull();
        expect(await other.acquireRelay('bus', 'run_events', 'p2', T0 + 4 + LEASE, LEASE)).toBe(42);
        expect(await store.advanceRelay('bus', 'run_events', 'p1', 50, T0 + 5 + LEASE, LEASE)).toBe(false);
        // Released: taken at once.
        await other.releaseRelay('bus', 'run_events', 'p2');
        expect(await store.acquireRelay('bus', 'run_events', 'p1', T0 + 6 + LEASE, LEASE)).toBe(42);
      });

      it('dead letters are read in the order they were made; one seen again keeps its place', async () => {
        expect(await store.lastDeadLetterSeq()).toBe(0);
        const first = deadLetter({ raw: Buffer.from('first') });
        const [id1] = await store.addDeadLetters([first]);
        const [id2, id3] = await store.addDeadLetters([deadLetter({ raw: Buffer.from('second') }), deadLetter({ raw: Buffer.from('third') })]);
        const read = await store.readDeadLetters(0, 10);
        // One batch is one step: its dead letters come after the ones before, in some order.
        expect(read.map((r) => r.deadLetter.id)[0]).toBe(id1);
        expect(read.map((r) => r.deadLetter.id).slice(1).sort()).toEqual([id2, id3].sort());
        expect(read[0]!.deadLetter.raw).toEqual(Buffer.from('first'));
        for (let i = 1; i < read.length; i++) expect(read[i]!.seq).toBeGreaterThan(read[i - 1]!.seq);
        expect(await store.lastDeadLetterSeq()).toBe(read[2]!.seq);
        expect((await store.readDeadLetters(read[0]!.seq, 1)).map((r) => r.deadLetter.id)).toEqual([read[1]!.deadLetter.id]);

        await store.addDeadLetters([{ ...first, at: T0 + 5 }]);
        expect((await store.readDeadLetters(read[2]!.seq, 10)).map((r) => r.deadLetter.id)).toEqual([]);
        // The newest deleted: its seq is not given again.
        await store.deleteDeadLetter(read[2]!.deadLetter.id);
        const [id4] = await store.addDeadLetters([deadLetter({ raw: Buffer.from('fourth') })]);
        const after = await store.readDeadLetters(read[2]!.seq, 10);
        expect(after.map((r) => r.deadLetter.id)).toEqual([id4]);
      });

      it('a visibility mark is settled once the transactions under way at it have ended', async () => {
        const mark = await store.visibilityMark();
        expect(await store.visibilitySettled(mark)).toBe(true);
      });
    });

    describe('reads', () => {
      it('getRun and getEvent respect the scope', async () => {
        const item = intakeItem({ orgId: 'org-1', service: 'svc-a' });
        await store.commitIntake([item]);
        const id = item.runs[0]!.id;
        expect(await store.getRun('no-such-run')).toBeNull();
        expect(await store.getRun(id, { orgId: 'org-2' })).toBeNull();
        expect(await store.getRun(id, { services: ['svc-b'] })).toBeNull();
        expect((await store.getRun(id, { orgId: 'org-1', services: ['svc-a'] }))?.id).toBe(id);
        // A list of no service reaches nothing, never everything.
        expect(await store.getRun(id, { services: [] })).toBeNull();
        expect((await store.listRuns({ scope: { services: [] }, limit: 10, offset: 0 })).items).toEqual([]);
        expect((await store.getRun(id, { orgId: 'org-1' }))?.id).toBe(id);
        expect(await store.getEvent('no-such-event')).toBeNull();
        expect(await store.getEvent(item.record.key, { orgId: 'org-2' })).toBeNull();
        expect(await store.getEvent(item.record.key, { services: ['svc-b'] })).toBeNull();
        expect((await store.getEvent(item.record.key, { orgId: 'org-1' }))?.key).toBe(item.record.key);
      });

      it('getAttempts lists attempts in order', async () => {
        await seed(store, [{}]);
        let run = await claimOne(store);
        await store.finishRuns([outcome(run, { status: 'queued', at: T0 + 10, availableAt: T0 + 10, attemptOutcome: 'retry', error: { code: 'network_error', message: 'x' } })]);
        run = await claimOne(store, { now: T0 + 10 });
        await store.finishRuns([outcome(run, { at: T0 + 20 })]);
        expect((await store.getAttempts(run.id)).map((a) => [a.n, a.outcome, a.startedAt, a.endedAt])).toEqual([
          [1, 'retry', T0, T0 + 10],
          [2, 'success', T0 + 10, T0 + 20],
        ]);
        expect(await store.getAttempts('no-such-run')).toEqual([]);
      });

      describe('listRuns', () => {
        let ids: { redProd: string; blue: string; redDev: string; gamma: string; eventKey1: string };

        beforeEach(async () => {
          const e1 = intakeItem({
            event: { type: 'order.created' },
            runs: [{ route: 'alpha', labels: { team: 'red', env: 'prod' } }, { route: 'beta', action: 'notify', labels: { team: 'blue' } }],
            at: T0,
            orgId: 'org-1',
            service: 'svc-a',
          });
          const e2 = intakeItem({ event: { type: 'order.paid' }, runs: [{ route: 'alpha', labels: { team: 'red', env: 'dev' } }], at: T0 + 1000, orgId: 'org-1', service: 'svc-b' });
          const e3 = intakeItem({ event: { type: 'user.created' }, runs: [{ route: 'gamma' }], at: T0 + 2000, orgId: 'org-2', service: 'svc-a' });
          await store.commitIntake([e1, e2, e3]);
          ids = { redProd: e1.runs[0]!.id, blue: e1.runs[1]!.id, redDev: e2.runs[0]!.id, gamma: e3.runs[0]!.id, eventKey1: e1.record.key };
          // gamma succeeds at T0 + 5000.
          const run = (await claim(store, { now: T0 + 4000, limit: 10 })).find((c) => c.run.id === ids.gamma)!.run;
          await store.releaseRuns('worker-1', [ids.redProd, ids.blue, ids.redDev], T0 + 4000);
          await store.finishRuns([outcome(run, { at: T0 + 5000 })]);
        });

        const page = { limit: 100, offset: 0 };
        const list = async (q: Parameters<Store['listRuns']>[0]) => (await store.listRuns(q)).items.map((r) => r.id);
        const sorted = (...xs: string[]) => [...xs].sort();

        it('filters by status, type, route, action, event key and labels', async () => {
          expect(sorted(...(await list({ ...page, status: ['queued'] })))).toEqual(sorted(ids.redProd, ids.blue, ids.redDev));
          expect(await list({ ...page, status: ['success'] })).toEqual([ids.gamma]);
          expect(sorted(...(await list({ ...page, status: ['success', 'queued'] })))).toHaveLength(4);
          expect(sorted(...(await list({ ...page, type: ['order.created', 'order.paid'] })))).toEqual(sorted(ids.redProd, ids.blue, ids.redDev));
          expect(sorted(...(await list({ ...page, route: ['alpha'] })))).toEqual(sorted(ids.redProd, ids.redDev));
          expect(await list({ ...page, action: ['notify'] })).toEqual([ids.blue]);
          expect(sorted(...(await list({ ...page, eventKey: ids.eventKey1 })))).toEqual(sorted(ids.redProd, ids.blue));
          expect(sorted(...(await list({ ...page, labels: { team: 'red' } })))).toEqual(sorted(ids.redProd, ids.redDev));
          expect(await list({ ...page, labels: { team: 'red', env: 'prod' } })).toEqual([ids.redProd]);
          expect(await list({ ...page, labels: { team: 'green' } })).toEqual([]);
          expect(await list({ ...page, route: ['alpha'], status: ['success'] })).toEqual([]);
        });

        it('filters by time ranges: from inclusive, to exclusive', async () => {
          expect(sorted(...(await list({ ...page, createdAt: { from: T0 + 1000 } })))).toEqual(sorted(ids.redDev, ids.gamma));
          expect(sorted(...(await list({ ...page, createdAt: { to: T0 + 1000 } })))).toEqual(sorted(ids.redProd, ids.blue));
          expect(await list({ ...page, createdAt: { from: T0 + 1000, to: T0 + 2000 } })).toEqual([ids.redDev]);
          expect(await list({ ...page, updatedAt: { from: T0 + 5000 } })).toEqual([ids.gamma]);
          expect(await list({ ...page, updatedAt: { to: T0 + 4001 }, status: ['success'] })).toEqual([]);
        });

        it('sorts both ways, ties broken by id, and pages with a total', async () => {
          const asc = [...sorted(ids.redProd, ids.blue), ids.redDev, ids.gamma];
          expect(await list({ ...page, sort: { field: 'created_at', direction: 'asc' } })).toEqual(asc);
          expect(await list({ ...page, sort: { field: 'created_at', direction: 'desc' } })).toEqual([...asc].reverse());
          expect(await list(page)).toEqual([...asc].reverse());
          expect(await list({ ...page, sort: { field: 'route', direction: 'asc' } })).toEqual([...sorted(ids.redProd, ids.redDev), ids.blue, ids.gamma]);
          expect(await list({ ...page, sort: { field: 'updated_at', direction: 'desc' } })).toEqual([ids.gamma, ...sorted(ids.redProd, ids.blue, ids.redDev).reverse()]);
          const paged = await store.listRuns({ limit: 2, offset: 1, sort: { field: 'created_at', direction: 'asc' } });
          expect(paged.total).toBe(4);
          expect(paged.items.map((r) => r.id)).toEqual(asc.slice(1, 3));
          const beyond = await store.listRuns({ limit: 2, offset: 10 });
          expect(beyond).toEqual({ items: [], total: 4 });
        });

        it('keeps to the scope', async () => {
          expect(await list({ ...page, scope: { orgId: 'org-2' } })).toEqual([ids.gamma]);
          expect(await list({ ...page, scope: { services: ['svc-b'] } })).toEqual([ids.redDev]);
          expect(sorted(...(await list({ ...page, scope: { orgId: 'org-1', services: ['svc-a'] } })))).toEqual(sorted(ids.redProd, ids.blue));
          expect((await store.listRuns({ ...page, scope: { orgId: 'org-3' } })).total).toBe(0);
        });
      });

      it('listEvents filters by type, source, id, unrouted and time, sorts, pages and scopes', async () => {
        const a = intakeItem({ event: { type: 'order.created', source: 'urn:shop' }, at: T0, orgId: 'org-1', service: 'svc-a' });
        const b = intakeItem({ event: { type: 'order.paid', source: 'urn:shop' }, runs: [], at: T0 + 1000, orgId: 'org-1', service: 'svc-b' });
        const c = intakeItem({ event: { type: 'user.created', source: 'urn:users' }, runs: [{}, {}], at: T0 + 2000, orgId: 'org-2', service: 'svc-a' });
        await store.commitIntake([a, b, c]);
        const page = { limit: 100, offset: 0 };
        const keys = async (q: Parameters<Store['listEvents']>[0]) => (await store.listEvents(q)).items.map((e) => e.key);
        const byKey = [a, b, c].map((i) => i.record.key).sort();

        expect(await keys({ ...page, sort: { direction: 'asc' } })).toEqual(byKey);
        expect(await keys(page)).toEqual([...byKey].reverse());
        expect(await keys({ ...page, type: ['order.paid', 'user.created'], sort: { direction: 'asc' } })).toEqual([b, c].map((i) => i.record.key).sort());
        expect((await keys({ ...page, source: 'urn:shop' })).sort()).toEqual([a, b].map((i) => i.record.key).sort());
        expect(await keys({ ...page, id: c.record.event.id })).toEqual([c.record.key]);
        expect(await keys({ ...page, unrouted: true })).toEqual([b.record.key]);
        expect((await keys({ ...page, unrouted: false })).sort()).toEqual([a, c].map((i) => i.record.key).sort());
        expect((await keys({ ...page, receivedAt: { from: T0 + 1000 } })).sort()).toEqual([b, c].map((i) => i.record.key).sort());
        expect(await keys({ ...page, receivedAt: { from: T0, to: T0 + 1000 } })).toEqual([a.record.key]);
        expect(await keys({ ...page, scope: { orgId: 'org-2' } })).toEqual([c.record.key]);
        expect(await keys({ ...page, scope: { services: ['svc-b'] } })).toEqual([b.record.key]);
        const paged = await store.listEvents({ limit: 1, offset: 1, sort: { direction: 'asc' } });
        expect(paged.total).toBe(3);
        expect(paged.items.map((e) => e.key)).toEqual([byKey[1]]);
        expect(paged.items[0]).toEqual(await store.getEvent(byKey[1]!));
        const record = (await store.listEvents({ ...page, id: c.record.event.id })).items[0];
        expect(record).toEqual({ ...c.record, runCount: 2 });
      });
    });

    describe('prune', () => {
      it('deletes ended runs with their attempts, events left without runs, old run events and dead letters, at most limit of each', async () => {
        const ids: string[] = [];
        const keys: string[] = [];
        for (let i = 0; i < 3; i++) {
          const key = uuidv7({ msecs: T0 });
          keys.push(key);
          ids.push(...(await seed(store, [{}], { key })));
        }
        const claimed = await claim(store, { limit: 2 });
        await store.finishRuns(claimed.map((c) => outcome(c.run)));
        const ended = claimed.map((c) => c.run.id);
        const kept = ids.find((id) => !ended.includes(id))!;
        await store.addDeadLetters([deadLetter({ at: T0, raw: Buffer.from('old') }), deadLetter({ at: T0 + 10 * HOUR, raw: Buffer.from('new') })]);
        const cutoffs = { runsBefore: T0 + HOUR, eventsBefore: T0 + HOUR, runEventsBefore: T0 + HOUR, deadLettersBefore: T0 + HOUR };

        // Nothing is pruned of a kind without a cutoff.
        expect(await store.prune({ limit: 10 })).toEqual({ runs: 0, attempts: 0, events: 0, runEvents: 0, deadLetters: 0 });

        expect(await store.prune({ ...cutoffs, limit: 1 })).toEqual({ runs: 1, attempts: 1, events: 1, runEvents: 1, deadLetters: 1 });
        const second = await store.prune({ ...cutoffs, limit: 100 });
        expect(second).toMatchObject({ runs: 1, attempts: 1, events: 1, deadLetters: 0 });
        expect(await store.prune({ ...cutoffs, limit: 100 })).toEqual({ runs: 0, attempts: 0, events: 0, runEvents: 0, deadLetters: 0 });

        for (const id of ended) {
          expect(await store.getRun(id)).toBeNull();
          expect(await store.getAttempts(id)).toEqual([]);
        }
        // The run that has not ended stays, and so does its event.
        expect((await store.getRun(kept))?.status).toBe('queued');
        const keptEvent = keys[ids.indexOf(kept)]!;
        expect(await store.getEvent(keptEvent)).not.toBeNull();
        expect((await store.listEvents({ limit: 10, offset: 0 })).items.map((e) => e.key)).toEqual([keptEvent]);
        expect(await store.readRunEvents(0, 100)).toEqual([]);
        const letters = await store.listDeadLetters({ limit: 10, offset: 0 });
        expect(letters.items.map((d) => d.raw.toString())).toEqual(['new']);
      });
    });

    describe('dead letters', () => {
      it('are added, read back whole, and listed', async () => {
        const d = deadLetter({ rawTruncated: true, at: T0 + 7, raw: Buffer.from([0, 1, 2, 255, 254, 0x7b]) });
        const [id] = await store.addDeadLetters([d]);
        expect(await store.getDeadLetter(id!)).toEqual({
          id,
          origin: 'intake',
          source: 'http',
          reason: 'invalid_json',
          error: d.error,
          details: d.details,
          raw: d.raw,
          rawTruncated: true,
          contentType: 'application/json',
          headers: d.headers,
          runId: null,
          eventKey: null,
          service: 'svc-a',
          orgId: 'org-1',
          attempts: 1,
          firstSeenAt: T0 + 7,
          lastSeenAt: T0 + 7,
          replayedAt: null,
        });
        const bare = deadLetter({ details: undefined, headers: undefined, contentType: undefined, rawTruncated: undefined });
        const [bareId] = await store.addDeadLetters([bare]);
        expect(await store.getDeadLetter(bareId!)).toMatchObject({ details: null, headers: {}, contentType: null, rawTruncated: false });
        expect(await store.getDeadLetter('no-such-letter')).toBeNull();
        expect(await store.addDeadLetters([])).toEqual([]);
      });

      it('keep text the database cannot hold as is, and the raw bytes exactly', async () => {
        const raw = Buffer.from([0, 0xff, 0xfe, 0x00, 0x41]);
        const error = "Unexpected token '\u0000', \"\u0000abc\" is not valid JSON";
        const [id] = await store.addDeadLetters([
          deadLetter({ raw, error, details: { problems: [{ pointer: '/k\u0000', message: 'lone \udc00' }] }, headers: { 'ce-id': 'a\u0000' } }),
        ]);
        const kept = (await store.getDeadLetter(id!))!;
        expect(kept.raw.equals(raw)).toBe(true);
        expectStorable(kept.error, error);
        const problem = (kept.details as { problems: Array<{ pointer: string; message: string }> }).problems[0]!;
        expectStorable(problem.pointer, '/k\u0000');
        expectStorable(problem.message, 'lone \udc00');
        expectStorable(kept.headers['ce-id'], 'a\u0000');
      });

      it('count the same failure again instead of keeping it twice, also inside one batch', async () => {
        const raw = Buffer.from('{"same": true');
        const [first] = await store.addDeadLetters([deadLetter({ raw, at: T0 })]);
        const [again] = await store.addDeadLetters([deadLetter({ raw, at: T0 + 100, error: 'second time' })]);
        expect(again).toBe(first);
        expect(await store.getDeadLetter(first!)).toMatchObject({ attempts: 2, firstSeenAt: T0, lastSeenAt: T0 + 100, error: 'second time' });

        const other = Buffer.from('other bytes');
        const ids = await store.addDeadLetters([
          deadLetter({ raw: other, at: T0 + 200 }),
          deadLetter({ raw, at: T0 + 200 }),
          deadLetter({ raw: other, at: T0 + 300 }),
          deadLetter({ raw, reason: 'too_deep', at: T0 + 300 }),
        ]);
        expect(ids[0]).toBe(ids[2]);
        expect(ids[1]).toBe(first);
        expect(new Set(ids).size).toBe(3);
        expect(await store.getDeadLetter(ids[0]!)).toMatchObject({ attempts: 2, firstSeenAt: T0 + 200, lastSeenAt: T0 + 300 });
        expect(await store.getDeadLetter(first!)).toMatchObject({ attempts: 3, lastSeenAt: T0 + 200 });
        expect((await store.listDeadLetters({ limit: 10, offset: 0 })).total).toBe(3);
      });

      it('are marked replayed; a new occurrence clears the mark', async () => {
        const d = deadLetter();
        const [id] = await store.addDeadLetters([d]);
        await store.markReplayed(id!, T0 + 50);
        expect((await store.getDeadLetter(id!))?.replayedAt).toBe(T0 + 50);
        expect((await store.listDeadLetters({ limit: 10, offset: 0, replayed: true })).items.map((x) => x.id)).toEqual([id]);
        expect((await store.listDeadLetters({ limit: 10, offset: 0, replayed: false })).total).toBe(0);
        await store.addDeadLetters([{ ...d, at: T0 + 60 }]);
        expect((await store.getDeadLetter(id!))?.replayedAt).toBeNull();
      });

      it('are listed newest first with filters, paging and scope', async () => {
        const ids = await store.addDeadLetters([
          deadLetter({ at: T0, reason: 'invalid_json', source: 'http', orgId: 'org-1', service: 'svc-a' }),
          deadLetter({ at: T0 + 10, reason: 'schema_violation', source: 'kafka', orgId: 'org-1', service: 'svc-b' }),
          deadLetter({ at: T0 + 20, origin: 'run', reason: 'action_failed', source: 'route-a', runId: 'run-1', orgId: 'org-2', service: 'svc-a' }),
        ]);
        const [a, b, c] = ids as [string, string, string];
        const page = { limit: 10, offset: 0 };
        const list = async (q: Parameters<Store['listDeadLetters']>[0]) => (await store.listDeadLetters(q)).items.map((d) => d.id);
        expect(await list(page)).toEqual([c, b, a]);
        expect(await list({ ...page, origin: 'run' })).toEqual([c]);
        expect(await list({ ...page, origin: 'intake' })).toEqual([b, a]);
        expect(await list({ ...page, reason: ['invalid_json', 'action_failed'] })).toEqual([c, a]);
        expect(await list({ ...page, source: 'kafka' })).toEqual([b]);
        expect(await list({ ...page, runId: 'run-1' })).toEqual([c]);
        expect(await list({ ...page, lastSeenAt: { from: T0 + 10 } })).toEqual([c, b]);
        expect(await list({ ...page, lastSeenAt: { to: T0 + 10 } })).toEqual([a]);
        expect(await list({ ...page, scope: { orgId: 'org-1' } })).toEqual([b, a]);
        expect(await list({ ...page, scope: { services: ['svc-a'] } })).toEqual([c, a]);
        expect(await store.listDeadLetters({ limit: 1, offset: 1 })).toMatchObject({ total: 3, items: [{ id: b }] });
        expect(await store.getDeadLetter(c, { orgId: 'org-1' })).toBeNull();
        expect((await store.getDeadLetter(c, { orgId: 'org-2' }))?.id).toBe(c);
      });

      it('are deleted within the scope only', async () => {
        const [id] = await store.addDeadLetters([deadLetter({ orgId: 'org-1', service: 'svc-a' })]);
        expect(await store.deleteDeadLetter(id!, { orgId: 'org-2' })).toBe(false);
        expect(await store.deleteDeadLetter(id!, { services: ['svc-b'] })).toBe(false);
        expect(await store.getDeadLetter(id!)).not.toBeNull();
        expect(await store.deleteDeadLetter(id!, { orgId: 'org-1', services: ['svc-a'] })).toBe(true);
        expect(await store.getDeadLetter(id!)).toBeNull();
        expect(await store.deleteDeadLetter(id!)).toBe(false);
        expect(await store.deleteDeadLetter('no-such-letter')).toBe(false);
      });

      it('are trimmed to the newest maxCount', async () => {
        const ids = await store.addDeadLetters(Array.from({ length: 5 }, (_, i) => deadLetter({ at: T0 + i })));
        expect(await store.trimDeadLetters(10)).toBe(0);
        expect(await store.trimDeadLetters(2)).toBe(3);
        const left = await store.listDeadLetters({ limit: 10, offset: 0 });
        expect(left.items.map((d) => d.id)).toEqual([ids[4], ids[3]]);
        expect(await store.trimDeadLetters(2)).toBe(0);
        expect(await store.trimDeadLetters(0)).toBe(2);
        expect((await store.listDeadLetters({ limit: 10, offset: 0 })).total).toBe(0);
      });
    });

    describe('stats and nextAvailableAt', () => {
      it('are empty for an empty store', async () => {
        expect(await store.stats(T0)).toEqual({ queued: 0, running: 0, waiting: 0, oldestQueuedAt: null, deadLetters: 0 });
        expect(await store.nextAvailableAt()).toBeNull();
      });

      it('count queued, running and waiting runs, the oldest claimable time and dead letters', async () => {
        const [first, second, third, fourth] = await seed(store, [
          { availableAt: T0 },
          { availableAt: T0 + 1 },
          { availableAt: T0 + 500 },
          { availableAt: T0 + 1000 },
        ]);
        const claimed = await claim(store, { now: T0 + 1, limit: 2 });
        expect(claimed.map((c) => c.run.id)).toEqual([first, second]);
        await store.finishRuns([outcome(claimed[1]!.run, { status: 'running', correlationId: 'c-1', attemptOutcome: 'waiting' })]);
        expect(await store.nextAvailableAt()).toBe(T0 + 500);
        expect(await store.stats(T0 + 100)).toEqual({ queued: 2, running: 1, waiting: 1, oldestQueuedAt: null, deadLetters: 0 });
        expect(await store.stats(T0 + 600)).toEqual({ queued: 2, running: 1, waiting: 1, oldestQueuedAt: T0 + 500, deadLetters: 0 });
        await store.cancelRun(third!, T0 + 700);
        expect(await store.nextAvailableAt()).toBe(T0 + 1000);
        expect(await store.stats(T0 + 2000)).toMatchObject({ queued: 1, oldestQueuedAt: T0 + 1000 });
        await store.addDeadLetters([deadLetter(), deadLetter()]);
        expect((await store.stats(T0 + 2000)).deadLetters).toBe(2);
        await store.cancelRun(fourth!, T0 + 700);
        expect(await store.nextAvailableAt()).toBeNull();
        expect((await store.stats(T0 + 2000)).oldestQueuedAt).toBeNull();
      });
    });

    describe('inboxes', () => {
      const message = (clientId: string, o: Partial<NewInboxMessage> = {}): NewInboxMessage => ({
        id: uuidv7(), clientId, orgId: 'org-1', topic: 'things.created', body: '{"n":1}', sender: 'client-x', createdAt: T0, runId: null, ...o,
      });
      const REFUSE: InboxLimits = { maxMessages: 100, whenFull: 'refuse' };
      const pop = (clientId: string, max = 10, now = T0, on: Store = store) => on.inboxes.take({ clientId, max, now });
      const lease = (clientId: string, max: number, now: number, leaseUntil: number, on: Store = store) => on.inboxes.take({ clientId, max, now, leaseUntil });
      const ids = (messages: Array<{ id: string }>) => messages.map((m) => m.id);
      /** The counts of these clients, as one object. */
      const counts = async (...clientIds: string[]) => Object.fromEntries((await store.inboxes.counts(clientIds)).map((c) => [c.clientId, c.messages]));

      it('keeps each message exactly as put (null topic and run, body text as sent) and pops the oldest first', async () => {
        const a1 = message('a', { body: '{ "text" : "quotes \\" and \\\\ backslashes, ünïcode, {braces}, NULL, a,b" }', runId: 'run-1', createdAt: T0 + 1 });
        const b1 = message('b');
        const a2 = message('a', { topic: null, runId: null, sender: 'route:r', body: '[1, 2,3]' });
        const a3 = message('a', { orgId: 'org-2', body: '"x"' });
        expect(await store.inboxes.put([a1, b1, a2, a3], REFUSE)).toEqual({ stored: [a1.id, b1.id, a2.id, a3.id], duplicates: [], refused: [], dropped: [] });
        expect(await counts('a', 'b', 'nobody')).toEqual({ a: 3, b: 1, nobody: 0 });
        expect(await pop('a', 2)).toEqual([
          { ...a1, deliveries: 0 },
          { ...a2, deliveries: 0 },
        ]);
        expect(await counts('a', 'b')).toEqual({ a: 1, b: 1 });
        expect(await pop('a')).toEqual([{ ...a3, deliveries: 0 }]);
        expect(await pop('a')).toEqual([]);
        expect(await pop('a', 0)).toEqual([]);
        // Without ids: only the clients that have messages.
        expect(await store.inboxes.counts()).toEqual([{ clientId: 'b', messages: 1 }]);
        expect(await store.inboxes.counts(['b', 'a', 'b'])).toEqual([{ clientId: 'b', messages: 1 }, { clientId: 'a', messages: 0 }]);
      });

      it('leases: a leased message is hidden until leaseUntil, then handed out again with its deliveries counted; ack removes it', async () => {
        const m1 = message('a');
        const m2 = message('a');
        await store.inboxes.put([m1, m2], REFUSE);
        expect(await lease('a', 1, T0, T0 + 1000)).toEqual([{ ...m1, deliveries: 1 }]);
        expect(await lease('a', 10, T0 + 10, T0 + 1010)).toEqual([{ ...m2, deliveries: 1 }]);
        expect(await lease('a', 10, T0 + 999, T0 + 2000)).toEqual([]);
        expect(await pop('a', 10, T0 + 999)).toEqual([]);
        // Leased messages are still in the inbox.
        expect(await counts('a')).toEqual({ a: 2 });
        expect(await lease('a', 10, T0 + 1000, T0 + 2000)).toEqual([{ ...m1, deliveries: 2 }]);
        expect(await store.inboxes.ack('a', [m1.id])).toBe(1);
        expect(await store.inboxes.ack('a', [m1.id])).toBe(0);
        expect(await counts('a')).toEqual({ a: 1 });
        expect(await pop('a', 10, T0 + 5000)).toEqual([{ ...m2, deliveries: 1 }]);
        expect(await counts('a')).toEqual({ a: 0 });
        expect(await store.inboxes.ack('a', [])).toBe(0);
      });

      it("acknowledges only the client's own messages", async () => {
        const a1 = message('a');
        const b1 = message('b');
        await store.inboxes.put([a1, b1], REFUSE);
        expect(await store.inboxes.ack('a', [b1.id, 'no-such-message'])).toBe(0);
        expect(await store.inboxes.ack('b', [a1.id])).toBe(0);
        expect(await counts('a', 'b')).toEqual({ a: 1, b: 1 });
        expect(await store.inboxes.ack('a', [a1.id, b1.id])).toBe(1);
        expect(await counts('a', 'b')).toEqual({ a: 0, b: 1 });
        expect(ids(await pop('b'))).toEqual([b1.id]);
      });

      it('stores a message once per run and client, within a batch and across puts; messages without a run are never alike', async () => {
        const x = message('a', { runId: 'run-1' });
        const again = message('a', { runId: 'run-1' });
        const other = message('b', { runId: 'run-1' });
        expect(await store.inboxes.put([x, again, other], REFUSE)).toEqual({ stored: [x.id, other.id], duplicates: [again.id], refused: [], dropped: [] });
        const later = message('a', { runId: 'run-1' });
        const w1 = message('a');
        const w2 = message('a');
        expect(await store.inboxes.put([later, w1, w2], REFUSE)).toEqual({ stored: [w1.id, w2.id], duplicates: [later.id], refused: [], dropped: [] });
        // The same message again (a put repeated after a crash) is a duplicate too.
        expect(await store.inboxes.put([w1, x], REFUSE)).toEqual({ stored: [], duplicates: [w1.id, x.id], refused: [], dropped: [] });
        expect(await counts('a', 'b')).toEqual({ a: 3, b: 1 });
        expect(ids(await pop('a'))).toEqual([x.id, w1.id, w2.id]);
      });

      it('refuses messages for a full inbox, and takes them again once there is room', async () => {
        const limits: InboxLimits = { maxMessages: 2, whenFull: 'refuse' };
        const [a1, a2, a3, b1] = [message('a'), message('a'), message('a'), message('b')] as const;
        expect(await store.inboxes.put([a1, a2, a3, b1], limits)).toEqual({ stored: [a1.id, a2.id, b1.id], duplicates: [], refused: [{ id: a3.id, clientId: 'a' }], dropped: [] });
        expect(await counts('a', 'b')).toEqual({ a: 2, b: 1 });
        const a4 = message('a');
        expect(await store.inboxes.put([a4], limits)).toMatchObject({ stored: [], refused: [{ id: a4.id, clientId: 'a' }] });
        // A leased message still takes room.
        expect(ids(await lease('a', 1, T0, T0 + LEASE))).toEqual([a1.id]);
        expect(await store.inboxes.put([message('a')], limits)).toMatchObject({ stored: [] });
        expect(ids(await pop('a', 1))).toEqual([a2.id]);
        expect(await counts('a')).toEqual({ a: 1 });
        const [a5, a6] = [message('a'), message('a')] as const;
        expect(await store.inboxes.put([a5, a6], limits)).toEqual({ stored: [a5.id], duplicates: [], refused: [{ id: a6.id, clientId: 'a' }], dropped: [] });
        expect(await counts('a')).toEqual({ a: 2 });
        expect(ids(await pop('a', 10, T0 + LEASE))).toEqual([a1.id, a5.id]);
        expect(await counts('a', 'b')).toEqual({ a: 0, b: 1 });
      });

      it('drops the oldest messages of a full inbox to make room, leased ones and those of the same batch too', async () => {
        const limits: InboxLimits = { maxMessages: 2, whenFull: 'drop-oldest' };
        const [a1, a2, a3] = [message('a'), message('a'), message('a')] as const;
        await store.inboxes.put([a1, a2], limits);
        expect(ids(await lease('a', 1, T0, T0 + LEASE))).toEqual([a1.id]);
        expect(await store.inboxes.put([a3], limits)).toEqual({ stored: [a3.id], duplicates: [], refused: [], dropped: [{ id: a1.id, clientId: 'a' }] });
        expect(await counts('a')).toEqual({ a: 2 });
        expect(await store.inboxes.ack('a', [a1.id])).toBe(0);
        // Each message one outcome: a4 stored, then pushed out by a6, is reported dropped only.
        const [a4, a5, a6, b1] = [message('a'), message('a'), message('a'), message('b')] as const;
        expect(await store.inboxes.put([a4, b1, a5, a6], limits)).toEqual({
          stored: [b1.id, a5.id, a6.id],
          duplicates: [],
          refused: [],
          dropped: [{ id: a2.id, clientId: 'a' }, { id: a3.id, clientId: 'a' }, { id: a4.id, clientId: 'a' }],
        });
        expect(await counts('a', 'b')).toEqual({ a: 2, b: 1 });
        // A limit lowered since the inbox filled: as many are dropped as it takes.
        const c = [message('c'), message('c'), message('c'), message('c')] as const;
        await store.inboxes.put(c.slice(0, 3), { maxMessages: 5, whenFull: 'drop-oldest' });
        expect(await store.inboxes.put([c[3]], limits)).toMatchObject({ stored: [c[3].id], dropped: [{ id: c[0].id, clientId: 'c' }, { id: c[1].id, clientId: 'c' }] });
        expect(await counts('a', 'b', 'c')).toEqual({ a: 2, b: 1, c: 2 });
        expect(ids(await pop('a'))).toEqual([a5.id, a6.id]);
        expect(ids(await pop('c'))).toEqual([c[2].id, c[3].id]);
      });

      it('refuses a limit of less than one message', async () => {
        await expect(store.inboxes.put([message('a')], { maxMessages: 0, whenFull: 'drop-oldest' })).rejects.toMatchObject({ code: 'config_invalid' });
        expect(await counts('a')).toEqual({ a: 0 });
      });

      it('expires messages created before a time, the oldest first, at most a limit at a time', async () => {
        const a0 = message('a', { createdAt: T0 });
        const a1 = message('a', { createdAt: T0 + 1 });
        const b1 = message('b', { createdAt: T0 + 1 });
        const a2 = message('a', { createdAt: T0 + 2 });
        const c = message('c', { createdAt: T0 + 10 });
        await store.inboxes.put([a0, a1, b1, a2, c], REFUSE);
        // A leased message expires too.
        await lease('a', 1, T0, T0 + LEASE);
        expect(await store.inboxes.expire(T0 + 5, 3)).toEqual([{ clientId: 'a', messages: 2 }, { clientId: 'b', messages: 1 }]);
        expect(await counts('a', 'b', 'c')).toEqual({ a: 1, b: 0, c: 1 });
        expect(await store.inboxes.expire(T0 + 5, 10)).toEqual([{ clientId: 'a', messages: 1 }]);
        expect(await store.inboxes.expire(T0 + 5, 10)).toEqual([]);
        expect(await store.inboxes.expire(T0 + 11, 0)).toEqual([]);
        expect(await store.inboxes.counts()).toEqual([{ clientId: 'c', messages: 1 }]);
        expect(await pop('a', 10, T0 + LEASE)).toEqual([]);
        expect(ids(await pop('c'))).toEqual([c.id]);
      });

      it("clears a client's inbox and its count; a new message starts a new one", async () => {
        await store.inboxes.put([message('a'), message('a'), message('b'), message('a')], REFUSE);
        await lease('a', 1, T0, T0 + LEASE);
        expect(await store.inboxes.clear('a')).toBe(3);
        expect(await counts('a', 'b')).toEqual({ a: 0, b: 1 });
        expect(await store.inboxes.counts()).toEqual([{ clientId: 'b', messages: 1 }]);
        expect(await pop('a', 10, T0 + LEASE)).toEqual([]);
        expect(await store.inboxes.clear('a')).toBe(0);
        const again = message('a');
        expect(await store.inboxes.put([again], { maxMessages: 1, whenFull: 'refuse' })).toMatchObject({ stored: [again.id] });
        expect(await counts('a')).toEqual({ a: 1 });
      });

      it('never hands one message to two takers at once (pops and leases, on this store and another on the same database)', async () => {
        const other = await peer();
        const all = Array.from({ length: 120 }, () => message('a'));
        await store.inboxes.put(all, { maxMessages: 1000, whenFull: 'refuse' });
        const takers = Array.from({ length: 16 }, (_, i) => {
          const on = i % 2 === 0 ? store : other;
          return i % 4 < 2 ? pop('a', 10, T0, on).then((m) => ({ popped: m, leased: [] })) : lease('a', 10, T0, T0 + LEASE, on).then((m) => ({ popped: [], leased: m }));
        });
        const taken = await Promise.all(takers);
        const popped = taken.flatMap((t) => ids(t.popped));
        const leased = taken.flatMap((t) => ids(t.leased));
        expect(popped.length + leased.length).toBeGreaterThan(0);
        expect(new Set([...popped, ...leased]).size).toBe(popped.length + leased.length);
        // Each taker got its messages oldest first.
        const order = new Map(all.map((m, i) => [m.id, i]));
        for (const t of taken) {
          const got = [...t.popped, ...t.leased].map((m) => order.get(m.id)!);
          expect(got).toEqual([...got].sort((x, y) => x - y));
        }
        // Every message accounted for once: popped, leased (still counted, hidden), or left.
        expect(await counts('a')).toEqual({ a: all.length - popped.length });
        const left = ids(await pop('a', 1000, T0));
        expect(new Set([...popped, ...leased, ...left]).size).toBe(all.length);
        expect(popped.length + leased.length + left.length).toBe(all.length);
        expect(await counts('a')).toEqual({ a: leased.length });
      });

      it('keeps the counts right when several writers fill the same inboxes at once', async () => {
        const other = await peer();
        const limits: InboxLimits = { maxMessages: 25, whenFull: 'refuse' };
        // Clients in both orders across the batches, on this store and another.
        const batches = Array.from({ length: 10 }, (_, i) =>
          Array.from({ length: 10 }, (_, j) => message(i % 2 === 0 ? (j % 2 === 0 ? 'a' : 'b') : j % 2 === 0 ? 'b' : 'a', { runId: `run-${i}-${j}` })),
        );
        const results = await Promise.all(batches.map((b, i) => (i % 2 === 0 ? store : other).inboxes.put(b, limits)));
        const stored = results.flatMap((r) => r.stored);
        const refused = results.flatMap((r) => r.refused);
        expect(stored).toHaveLength(50);
        expect(refused).toHaveLength(50);
        expect(await counts('a', 'b')).toEqual({ a: 25, b: 25 });
        const a = ids(await pop('a', 100));
        const b = ids(await pop('b', 100));
        expect(new Set([...a, ...b])).toEqual(new Set(stored));
        expect(await counts('a', 'b')).toEqual({ a: 0, b: 0 });
        // Pops, acks and expiry at once with more puts: the counts still match what is there.
        await Promise.all(batches.map((batch, i) => (i % 2 === 0 ? store : other).inboxes.put(batch.map((m) => ({ ...m, id: uuidv7(), runId: null })), limits)));
        const held = await lease('a', 5, T0, T0 + LEASE);
        await Promise.all([
          pop('a', 3, T0, other),
          pop('b', 4, T0),
          store.inboxes.ack('a', ids(held).slice(0, 2)),
          other.inboxes.expire(T0 + 1, 7),
          store.inboxes.put([message('b'), message('a')], limits),
        ]);
        const remaining = { a: ids(await pop('a', 100, T0 + LEASE)).length, b: ids(await pop('b', 100, T0 + LEASE)).length };
        expect(remaining.a + remaining.b).toBeGreaterThan(0);
        expect(await counts('a', 'b')).toEqual({ a: 0, b: 0 });
      });
    });

    describe('access: clients, settings, the audit log', () => {
      const client = (overrides: Record<string, unknown> = {}) => ({
        id: uuidv7(), name: 'c', service: 'svc-a', orgId: 'org-1', permissions: ['dispatcher:runs:read', { permission: 'dispatcher:runs:write', service: ['svc-a'] }],
        secretHash: 'scrypt$32768$8$1$salt$hash', secretVersion: 1, createdAt: T0, updatedAt: T0, subscription: null, ...overrides,
      });
      const entry = (overrides: Record<string, unknown> = {}) => ({
        at: T0, actor: 'psk:svc-a', actorKind: 'psk' as const, service: 'svc-a', orgId: 'org-1', action: 'runs.cancel', records: ['r-1'], outcome: 'ok',
        details: { status: 200, nested: { b: 1, a: 'ü \u0000 nul' } }, ...overrides,
      });

      it('creates, reads, lists by tenant, rotates and deletes clients', async () => {
        const a = client();
        const b = client({ orgId: 'org-2', name: 'b' });
        await store.access.createClient(a);
        await store.access.createClient(b);
        expect(await store.access.getClient(a.id)).toEqual(a);
        expect(await store.access.getClient('nobody')).toBeNull();
        expect((await store.access.listClients('org-2')).map((c) => c.id)).toEqual([b.id]);
        expect((await store.access.listClients()).map((c) => c.id).sort()).toEqual([a.id, b.id].sort());
        const rotated = await store.access.rotateClientSecret(a.id, 'scrypt$new', T0 + 5);
        expect(rotated).toMatchObject({ secretHash: 'scrypt$new', secretVersion: 2, updatedAt: T0 + 5 });
        expect(await store.access.rotateClientSecret('nobody', 'x', T0)).toBeNull();
        expect(await store.access.deleteClient(a.id)).toBe(true);
        expect(await store.access.deleteClient(a.id)).toBe(false);
        expect(await store.access.getClient(a.id)).toBeNull();
      });

      it('changes a client\'s name and subscription, only what is given', async () => {
        const a = client({ subscription: 'things.#' });
        const b = client({ name: 'b' });
        await store.access.createClient(a);
        await store.access.createClient(b);
        expect(await store.access.updateClient(a.id, { name: 'renamed' }, T0 + 5)).toEqual({ ...a, name: 'renamed', updatedAt: T0 + 5 });
        expect(await store.access.updateClient(a.id, { subscription: 'other.*' }, T0 + 6)).toEqual({ ...a, name: 'renamed', subscription: 'other.*', updatedAt: T0 + 6 });
        expect(await store.access.updateClient(a.id, { subscription: null }, T0 + 7)).toEqual({ ...a, name: 'renamed', subscription: null, updatedAt: T0 + 7 });
        expect(await store.access.updateClient(a.id, { name: 'both', subscription: 'x.y' }, T0 + 8)).toMatchObject({ name: 'both', subscription: 'x.y', secretVersion: 1 });
        expect(await store.access.getClient(a.id)).toEqual({ ...a, name: 'both', subscription: 'x.y', updatedAt: T0 + 8 });
        // The other client is untouched; no such client is null.
        expect(await store.access.getClient(b.id)).toEqual(b);
        expect(await store.access.updateClient('nobody', { name: 'x' }, T0)).toBeNull();
      });

      it('keeps the first value of a generated setting', async () => {
        expect(await store.access.ensureSetting('k', 'first')).toBe('first');
        expect(await store.access.ensureSetting('k', 'second')).toBe('first');
      });

      it('appends entries to one chain with its head, and filters them', async () => {
        const first = await store.access.appendAudit([entry(), entry({ action: 'events.create', records: ['e-1', 'e-2'], orgId: 'org-2', service: 'svc-b' })]);
        expect(first.map((e) => e.seq)).toEqual([1, 2]);
        expect(first[0]!.prevHash).toBe(GENESIS_HASH);
        expect(first[1]!.prevHash).toBe(first[0]!.hash);
        const more = await store.access.appendAudit([entry({ outcome: 'forbidden', at: T0 + 10 })]);
        expect(more[0]).toMatchObject({ seq: 3, prevHash: first[1]!.hash });
        expect(await store.access.auditHead()).toEqual({ seq: 3, hash: more[0]!.hash });
        // Stored as written (text PostgreSQL cannot hold made storable before hashing), and it verifies.
        const read = await store.access.readAudit(0, 100);
        expect(read).toEqual([...first, ...more]);
        expect(read[0]!.details).toEqual({ status: 200, nested: { b: 1, a: 'ü \ufffd nul' } });
        const verified = await verifyAuditChain(async function* () {
          yield* read;
        }, await store.access.auditHead());
        expect(verified.problems).toEqual([]);
        const list = (q: Record<string, unknown>) => store.access.listAudit({ limit: 10, offset: 0, ...q }).then((l) => [l.total, l.items.map((e) => e.seq)]);
        expect(await list({})).toEqual([3, [3, 2, 1]]);
        expect(await list({ ascending: true, limit: 2 })).toEqual([3, [1, 2]]);
        expect(await list({ orgId: 'org-1' })).toEqual([2, [3, 1]]);
        expect(await list({ services: ['svc-b'] })).toEqual([1, [2]]);
        expect(await list({ services: [] })).toEqual([0, []]);
        expect(await list({ record: 'e-2' })).toEqual([1, [2]]);
        expect(await list({ action: ['runs.cancel'], outcome: 'ok' })).toEqual([1, [1]]);
        expect(await list({ actor: 'psk:svc-a', at: { from: T0 + 1 } })).toEqual([1, [3]]);
        expect(await store.access.readAudit(2, 100)).toEqual(more);
      });

      it('appends the audit entries of an intake batch in its transaction, one per message, from its results', async () => {
        await store.access.appendAudit([entry()]);
        const a = intakeItem();
        const b = intakeItem({ event: { id: a.record.event.id, source: a.record.event.source } });
        const c = intakeItem();
        const audited = (items: number) => ({ items, entry: (results: IntakeResult[]) => entry({ action: 'events.create', records: results.map((r) => r.key), details: { statuses: results.map((r) => r.status) } }) });
        a.audit = audited(1);
        c.audit = audited(2);
        await store.commitIntake([a, b, c]);
        const all = await store.access.readAudit(0, 100);
        expect(all.map((e) => [e.seq, e.action, e.records, e.details])).toEqual([
          [1, 'runs.cancel', ['r-1'], expect.anything()],
          [2, 'events.create', [a.record.key], { statuses: ['accepted'] }],
          [3, 'events.create', [a.record.key, c.record.key], { statuses: ['duplicate', 'accepted'] }],
        ]);
        expect(all[1]!.prevHash).toBe(all[0]!.hash);
        expect(await store.access.auditHead()).toEqual({ seq: 3, hash: all[2]!.hash });
      });

      it('commits an intake batch and its audit entries together or not at all', async () => {
        const a = intakeItem();
        a.audit = { items: 1, entry: () => { throw new Error('no entry'); } };
        await expect(store.commitIntake([a])).rejects.toThrow('no entry');
        expect(await store.getEvent(a.record.key)).toBeNull();
        expect(await store.access.auditHead()).toBeNull();
      });

      it('keeps one unbroken chain when several writers append at once, intake among them', async () => {
        const other = await peer();
        const intake = (s: Store, i: number) => {
          const item = intakeItem();
          item.audit = { items: 1, entry: (results) => entry({ action: 'events.create', records: results.map((r) => r.key), at: T0 + i }) };
          return s.commitIntake([item]);
        };
        await Promise.all(
          Array.from({ length: 20 }, (_, i) => {
            const s = i % 2 === 0 ? store : other;
            return i % 4 < 2 ? s.access.appendAudit([entry({ records: [`r-${i}`] }), entry({ records: [`r-${i}b`] })]) : intake(s, i);
          }),
        );
        const all = await store.access.readAudit(0, 100);
        expect(all.map((e) => e.seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
        expect(all.filter((e) => e.action === 'events.create')).toHaveLength(10);
        const verified = await verifyAuditChain(async function* () {
          yield* all;
        }, await store.access.auditHead());
        expect(verified.problems).toEqual([]);
      });
    });
  });
}

