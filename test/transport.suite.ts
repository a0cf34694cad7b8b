/**
 * The delivery contract every bus input keeps, run for each transport against a real peer (RabbitMQ, NATS,
 * Mosquitto, Kafka through librdkafka's mock cluster, SQS through a local endpoint):
 *
 * - CloudEvents in structured, binary (where the transport has headers) and batched mode; plain JSON with the
 *   type from a field.
 * - Poison messages (not JSON, not an event, too large) become dead letters with their reason and the input
 *   as source, are acknowledged (not delivered again), and the messages after them flow on.
 * - Acknowledge after commit: while the store is unreachable (a real PostgreSQL behind a proxy the test cuts)
 *   the input pauses and acknowledges nothing; messages held then are taken in once it is back, exactly once
 *   and in the order they were sent. A dispatcher stopped while the store is unreachable leaves them with the
 *   broker, and the next one takes them.
 * - A process SIGKILLed between commit and acknowledgement: the broker delivers again, and no event gets a
 *   second run.
 *
 * Each transport's test file gives a `TransportPeer`: how to make a fresh destination and send to it as a
 * foreign producer would.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, freePort, kill, startChild, waitHealthy, type Child } from './child.js';
import { POSTGRES_URL, probePostgres, startDispatcher, waitFor, type TestDispatcher } from './helpers.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

export interface PeerMessage {
  body: Buffer | string;
  headers?: Record<string, string>;
  key?: string;
  contentType?: string;
}

export interface Place {
  /** The transport's options for an input reading this place. */
  input: Record<string, unknown>;
  /** Send as a foreign producer would, in this order. */
  send(messages: PeerMessage[]): Promise<void>;
  close(): Promise<void>;
}

export interface TransportPeer {
  transport: string;
  /** Null when the peer answers; otherwise why not. */
  probe(): Promise<string | null>;
  /** A fresh destination (queue, topic, subject) for one test. */
  place(name: string): Promise<Place>;
  /** Binary-mode headers carrying these attributes, as the transport's CloudEvents binding names them; absent when it has none. */
  binary?(attributes: Record<string, string>): Record<string, string>;
  /**
   * The most messages the broker keeps for a consumer that is away or behind, when it drops the rest
   * (Mosquitto's `max_queued_messages`, 1000 by default): the kill test sends no more than this.
   */
  maxBacklog?: number;
}

const requireServices = process.env.CI === 'true';

/** For a transport's own tests beside the suite: when its peer is down, fail under CI=true, else say why they skip. */
export function reportMissingPeer(file: string, unreachable: string | null): void {
  if (unreachable === null) return;
  if (requireServices) throw new Error(`${file}: ${unreachable}; with CI=true it must run`);
  console.warn(`${file} skipped: ${unreachable}. Start the service, or set CI=true to make this a failure.`);
}
let counter = 0;

function ce(id: string, data: unknown, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ specversion: '1.0', id, source: 'urn:peer', type: 'peer.test', data, ...extra });
}

/**
 * Defines the suite for one transport. Await it at the top of the test file: the peer and PostgreSQL are
 * probed first, so that a missing one skips the tests with a printed reason (and fails them under CI=true).
 */
export async function describeDeliveries(peer: TransportPeer): Promise<void> {
  const t = peer.transport;
  const file = `transport-${t}.test.ts`;
  const unreachable = await peer.probe();
  const pgUnreachable = await probePostgres();
  const missing = [unreachable && `${t}: ${unreachable}`, pgUnreachable && `PostgreSQL: ${pgUnreachable}`].filter(Boolean).join('; ');
  if (missing !== '' && !requireServices) console.warn(`${file}: ${missing}; the tests that need it are skipped. Start the service, or set CI=true to make this a failure.`);

  describe(`${t} input`, () => {
    beforeAll(() => {
      if (missing !== '' && requireServices) throw new Error(`${file}: ${missing}; with CI=true the delivery suite must run`);
    });

    const places: Place[] = [];
    const dispatchers: TestDispatcher[] = [];
    afterAll(async () => {
      await Promise.allSettled(dispatchers.map((d) => d.close()));
      await Promise.allSettled(places.map((p) => p.close()));
    });

    async function place(): Promise<Place> {
      const p = await peer.place(`dispatcher-test-${process.pid}-${Date.now().toString(36)}-${counter++}`);
      places.push(p);
      return p;
    }

    async function dispatcher(p: Place, extra: Record<string, unknown> = {}, storeUrl?: string): Promise<TestDispatcher> {
      const { decoder, maxBytes, ...rest } = extra;
      const d = await startDispatcher(
        {
          inputs: { bus: { [t]: p.input, ...(decoder ? { decoder } : {}), ...(maxBytes ? { maxBytes } : {}) } },
          routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }],
          ...rest,
        },
        storeUrl === undefined ? {} : { storeUrl },
      );
      dispatchers.push(d);
      return d;
    }

    const events = (d: TestDispatcher, limit = 500) => d.d.store.listEvents({ limit, offset: 0, sort: { direction: 'asc' } });
    const ready = () => unreachable === null;
    const readyWithPg = () => unreachable === null && pgUnreachable === null;

    it.skipIf(!ready() && !requireServices)('takes CloudEvents (structured, binary, batched) and plain JSON', async () => {
      const p = await place();
      const d = await dispatcher(p);
      const messages: PeerMessage[] = [
        { body: ce('structured-1', { n: 1 }), contentType: 'application/cloudevents+json' },
        { body: ce('structured-2', { n: 2 }) },
        { body: JSON.stringify([JSON.parse(ce('batch-1', { n: 3 })), JSON.parse(ce('batch-2', { n: 4 }))]), contentType: 'application/cloudevents-batch+json' },
      ];
      if (peer.binary) {
        messages.push({
          body: JSON.stringify({ n: 5 }),
          contentType: 'application/json',
          headers: peer.binary({ specversion: '1.0', id: 'binary-1', source: 'urn:peer', type: 'peer.binary', subject: 'héllo wörld' }),
        });
      }
      await p.send(messages);
      const want = peer.binary ? 5 : 4;
      const listing = await waitFor(() => events(d), (l) => l.total === want, 15_000, `${want} events`);
      const byId = new Map(listing.items.map((e) => [e.event.id, e]));
      expect([...byId.keys()].sort()).toEqual(['batch-1', 'batch-2', ...(peer.binary ? ['binary-1'] : []), 'structured-1', 'structured-2']);
      for (const e of listing.items) expect(e.input).toBe('bus');
      if (peer.binary) {
        const b = byId.get('binary-1')!.event;
        expect(b.type).toBe('peer.binary');
        expect(b.subject).toBe('héllo wörld');
        expect(b.data).toEqual({ n: 5 });
      }
      await waitFor(() => d.d.store.listRuns({ limit: 10, offset: 0, status: ['success'] }), (l) => l.total === want, 15_000, 'every run to succeed');

      // Plain JSON: the type from a field, the id from another; the same id twice is one event.
      const q = await place();
      const j = await dispatcher(q, { decoder: { format: 'json', typeField: 'message_type', idField: 'id' } });
      await q.send([
        { body: JSON.stringify({ id: 'm-1', message_type: 'update_requirement_assessment', selector: { ref_id: 'A.1' } }) },
        { body: JSON.stringify({ id: 'm-1', message_type: 'update_requirement_assessment', selector: { ref_id: 'A.1' } }) },
        { body: JSON.stringify({ id: 'm-2', message_type: 'upload_attachment' }) },
      ]);
      const plain = await waitFor(() => events(j), (l) => l.total === 2, 15_000, '2 plain events');
      expect(plain.items.map((e) => [e.event.id, e.event.type, e.event.source])).toEqual([
        ['m-1', 'update_requirement_assessment', `${t}://bus`],
        ['m-2', 'upload_attachment', `${t}://bus`],
      ]);
      expect(plain.items[0]!.event.data).toEqual({ id: 'm-1', message_type: 'update_requirement_assessment', selector: { ref_id: 'A.1' } });
      const received = await waitFor(
        async () => (await j.d.metrics.registry.getSingleMetric('dispatcher_events_received_total')!.get()).values,
        (v) => v.some((x) => x.labels.outcome === 'duplicate' && x.value === 1),
        10_000,
        'the duplicate to be counted',
      );
      expect(received.find((x) => x.labels.outcome === 'accepted')?.value).toBe(2);
    });

    it.skipIf(!ready() && !requireServices)('keeps poison messages as dead letters, acknowledges them, and flows on', async () => {
      const p = await place();
      const first = await dispatcher(p, { maxBytes: '2KiB' });
      await p.send([
        { body: ce('good-1', { n: 1 }) },
        { body: 'not json {' },
        { body: JSON.stringify({ hello: 'no specversion' }) },
        { body: ce('too-big', { pad: 'x'.repeat(4096) }) },
        { body: ce('bad-source', { n: 2 }, { source: '' }) },
        { body: ce('good-2', { n: 3 }) },
      ]);
      await waitFor(() => events(first), (l) => l.total === 2, 15_000, 'the two good events');
      const dead = await waitFor(() => first.d.store.listDeadLetters({ limit: 10, offset: 0 }), (l) => l.total === 4, 15_000, '4 dead letters');
      expect(dead.items.map((x) => x.reason).sort()).toEqual(['invalid_event', 'invalid_event', 'invalid_json', 'payload_too_large']);
      for (const x of dead.items) expect(x.source).toBe('bus');
      // Every input ends at the broker: a new dispatcher on the same store gets nothing again.
      await first.d.close();
      const second = await startDispatcher(
        { store: { url: first.config.store.url }, inputs: { bus: { [t]: p.input, maxBytes: '2KiB' } }, routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }] },
        {},
      );
      dispatchers.push(second);
      await p.send([{ body: ce('good-3', { n: 4 }) }]);
      const after = await waitFor(() => events(second), (l) => l.items.some((e) => e.event.id === 'good-3'), 15_000, 'good-3');
      expect(after.total).toBe(3);
      expect((await second.d.store.listDeadLetters({ limit: 10, offset: 0 })).total).toBe(4);

      // A dead letter is replayed through the decoder of the input it came from.
      const bad = dead.items.find((x) => x.error.includes('source'))!;
      expect(bad).toBeDefined();
      await expect(second.d.replayDeadLetter(bad.id)).rejects.toMatchObject({ code: 'invalid_event' });
    });

    it.skipIf(!readyWithPg() && !requireServices)(
      'acknowledges only after commit: pauses while the store is unreachable, loses and doubles nothing, keeps the order',
      async () => {
        const proxy: TcpProxy = await startTcpProxy(Number(new URL(POSTGRES_URL).port || 5432));
        const schema = `dispatcher_transport_${t}_${process.pid}`;
        const url = new URL(POSTGRES_URL);
        url.host = `127.0.0.1:${proxy.port}`;
        url.searchParams.set('schema', schema);
        const admin = new pg.Client({ connectionString: POSTGRES_URL });
        await admin.connect();
        await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        try {
          const p = await place();
          const ordered = (from: number, to: number): PeerMessage[] =>
            Array.from({ length: to - from }, (_, i) => ({ body: ce(`o-${from + i}`, { n: from + i }), key: 'one-key' }));
          // A short lease: runs the first dispatcher held when it stopped (it cannot release them while the
          // store is cut off) come back to the next one within the test.
          const runner = { lease: '2s', poll: '100ms', sweepInterval: '200ms' };
          const first = await dispatcher(p, { store: { url: url.toString(), poolSize: 2 }, runner }, url.toString());
          await p.send(ordered(0, 20));
          await waitFor(() => events(first), (l) => l.total === 20, 15_000, 'the first 20 events');

          proxy.cut();
          await p.send(ordered(20, 50));
          await waitFor(async () => (await first.d.inputHealth())[0]!, (h) => h.paused && h.held + h.inFlight >= 1, 20_000, 'the input to pause');
          proxy.restore();
          const all = await waitFor(() => events(first), (l) => l.total === 50, 30_000, 'all 50 events after the store came back');
          expect(all.items.map((e) => (e.event.data as { n: number }).n).join(' ')).toBe(Array.from({ length: 50 }, (_, i) => i).join(' '));
          expect((await first.d.inputHealth())[0]!.paused).toBe(false);

          // Stopped while the store is unreachable: nothing was acknowledged, so the next dispatcher gets it all.
          proxy.cut();
          await p.send(ordered(50, 60));
          await waitFor(async () => (await first.d.inputHealth())[0]!, (h) => h.paused, 20_000, 'the input to pause again');
          await first.d.close();
          proxy.restore();
          const second = await startDispatcher(
            { store: { url: url.toString() }, runner, inputs: { bus: { [t]: p.input } }, routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }] },
            { storeUrl: url.toString() },
          );
          dispatchers.push(second);
          const resumed = await waitFor(() => events(second, 100), (l) => l.total >= 60, 30_000, 'the 10 held messages, from the broker again');
          expect(resumed.total).toBe(60);
          expect(resumed.items.map((e) => (e.event.data as { n: number }).n)).toEqual(Array.from({ length: 60 }, (_, i) => i));
          const runs = await waitFor(() => second.d.store.listRuns({ limit: 1, offset: 0, status: ['success'] }), (l) => l.total === 60, 20_000, '60 runs');
          expect(runs.total).toBe(60);
          await second.close();
        } finally {
          proxy.restore();
          await proxy.close();
          await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
          await admin.end();
        }
      },
      90_000,
    );

    it.skipIf(!ready() && !requireServices)('a process killed between commit and acknowledgement: redelivered, no second run', async () => {
      ensureBuilt();
      const p = await place();
      const dir = mkdtempSync(join(tmpdir(), `dispatcher-${t}-kill-`));
      const port = await freePort();
      const key = 'deliveryTestKey0123456789';
      const config = join(dir, 'd.yaml');
      writeFileSync(
        config,
        JSON.stringify({
          server: { host: '127.0.0.1', port },
          store: { url: `sqlite:${join(dir, 'd.db')}` },
          log: { level: 'warn' },
          // A short lease, so that the runs the killed process held come back within the test.
          runner: { lease: '2s', poll: '200ms', sweepInterval: '500ms' },
          auth: { psk: [{ service: 'test', key }], keyFile: '' },
          inputs: { bus: { [t]: p.input } },
          routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }],
        }),
      );
      const total = Math.min(3000, peer.maxBacklog ?? 3000);
      const count = async (path: string): Promise<number> => {
        const r = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { authorization: `PSK ${key}` }, signal: AbortSignal.timeout(2000) });
        return ((await r.json()) as { meta: { total: number } }).meta.total;
      };
      let child: Child | undefined;
      let sending: Promise<void> | undefined;
      try {
        sending = p.send(Array.from({ length: total }, (_, i) => ({ body: ce(`k-${i}`, { n: i }), key: `k${i % 8}` })));
        child = startChild(config, dir);
        await waitHealthy(child, port);
        await waitFor(() => count('/v1/events?limit=1'), (n) => n >= 300, 30_000, 'some events before the kill');
        await kill(child);
        await sending;
        child = startChild(config, dir);
        await waitHealthy(child, port);
        await waitFor(() => count('/v1/events?limit=1'), (n) => n >= total, 60_000, `all ${total} events`);
        await waitFor(() => count('/v1/runs?limit=1&filter[status]=success'), (n) => n >= total, 60_000, 'every run to succeed');
        // Give redeliveries a moment to arrive; none may add an event or a run.
        await new Promise((r) => setTimeout(r, 1000));
        expect(await count('/v1/events?limit=1')).toBe(total);
        expect(await count('/v1/runs?limit=1')).toBe(total);
      } finally {
        await kill(child);
        await sending?.catch(() => {});
        rmSync(dir, { recursive: true, force: true });
      }
    }, 120_000);
  });
}
