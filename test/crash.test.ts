/**
 * A real `dispatcher serve` child process, SIGKILLed while it takes events and runs them; then restarted on
 * the same SQLite file. Producers resend whatever they did not see acknowledged (at-least-once), and a few
 * batches that were acknowledged. Afterwards, read straight from the file: every acknowledged event is
 * there once with its two runs, duplicates made no runs, every run ended in `success` with its attempts
 * and run events, and the receiver saw every http run's idempotency key.
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ensureBuilt, exited, freePort, kill, startChild as startServe, waitHealthy as waitServing, type Child } from './child.js';
import { startReceiver, waitFor, type Receiver } from './helpers.js';

const BATCH = 20;
const PARALLEL = 4;
const KILL_AFTER_MS = 1500;
const SOURCE = 'urn:crash-test';

interface Batch {
  n: number;
  events: Array<{ specversion: '1.0'; id: string; source: string; type: string; data: { batch: number; i: number } }>;
  /** The answer of the first send, when it arrived with 202. */
  answer?: { accepted: number; duplicates: number; events: Array<{ id: string; status: string; runs: string[] }> };
  /** What went wrong with the first send (status, or the network error). */
  failed?: string;
}

let dir: string;
let receiver: Receiver;
let child: Child | undefined;
let port: number;

function startChild(config: string): Child {
  return startServe(config, dir, { PSK_AUTH_CRASH: CRASH_KEY });
}

function waitHealthy(c: Child): Promise<void> {
  return waitServing(c, port);
}

/** The pre-shared key of service `crash`, given to the child in `PSK_AUTH_CRASH`. */
const CRASH_KEY = 'crashTestKey0123456789';

async function post(b: Batch): Promise<Response> {
  return fetch(`http://127.0.0.1:${port}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/cloudevents-batch+json', authorization: `PSK ${CRASH_KEY}` },
    body: JSON.stringify(b.events),
    signal: AbortSignal.timeout(10_000),
  });
}

function makeBatch(n: number): Batch {
  return {
    n,
    events: Array.from({ length: BATCH }, (_, i) => ({
      specversion: '1.0' as const,
      id: `b${n}-e${i}-${Math.random().toString(36).slice(2, 8)}`,
      source: SOURCE,
      type: 'crash.load',
      data: { batch: n, i },
    })),
  };
}

beforeAll(async () => {
  ensureBuilt();
  dir = mkdtempSync(join(tmpdir(), 'dispatcher-crash-'));
  receiver = await startReceiver((_req, _body, res) => {
    setTimeout(() => res.end('ok'), Math.floor(Math.random() * 21));
  });
  port = await freePort();
}, 120_000);

afterAll(async () => {
  await kill(child);
  await receiver?.close();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

it('loses nothing and doubles nothing when the process is SIGKILLed under load', async () => {
  const db = join(dir, 'd.db');
  const config = join(dir, 'd.yaml');
  writeFileSync(
    config,
    [
      `server: { host: 127.0.0.1, port: ${port} }`,
      `store: { url: "sqlite:${db}" }`,
      `log: { level: warn }`,
      `actions: { http: { allow: ["127.0.0.1/32"] } }`,
      // A short lease so that runs the killed process held come back within the test.
      `runner: { lease: 2s, poll: 200ms, sweepInterval: 500ms }`,
      `routes:`,
      `  - name: crash`,
      `    match: { type: "crash.*" }`,
      `    actions:`,
      `      - http: { url: "${receiver.url}/hook" }`,
      `      - noop: {}`,
      `    retry: { attempts: 10, backoff: 50ms, maxBackoff: 500ms }`,
      '',
    ].join('\n'),
  );

  child = startChild(config);
  await waitHealthy(child);

  // Load: PARALLEL producers, each posting one batch after another, until the kill.
  const batches: Batch[] = [];
  let killed = false;
  let inFlightAtKill = 0;
  let inFlight = 0;
  const send = async (): Promise<void> => {
    const b = makeBatch(batches.length);
    batches.push(b);
    inFlight += 1;
    try {
      const res = await post(b);
      if (res.status === 202) b.answer = (await res.json()) as Batch['answer'];
      else b.failed = `HTTP ${res.status}: ${await res.text()}`;
    } catch (err) {
      b.failed = String((err as Error).cause ?? err);
    } finally {
      inFlight -= 1;
    }
  };
  const producer = async (): Promise<void> => {
    while (!killed) await send();
  };
  const loadStarted = Date.now();
  const producers = Array.from({ length: PARALLEL }, () => producer());
  await new Promise((r) => setTimeout(r, KILL_AFTER_MS));
  // Kill while posts are in flight (there are PARALLEL producers; wait for one to be mid-request).
  await waitFor(async () => inFlight, (n) => n > 0, 5000, 'a post in flight');
  // The producers' posts may all have been answered an instant before the kill (their answers are read
  // after it); one more, posted in the same turn as the kill, cannot be: at least one batch is unanswered.
  const lastPost = send();
  inFlightAtKill = inFlight;
  child.process.kill('SIGKILL');
  killed = true;
  await exited(child.process);
  await Promise.all([...producers, lastPost]);
  const loadMs = Date.now() - loadStarted;

  const acknowledged = batches.filter((b) => b.answer !== undefined);
  const lost = batches.filter((b) => b.answer === undefined);
  const acceptedBeforeKill = acknowledged.reduce((n, b) => n + b.answer!.accepted, 0);
  expect(acknowledged.length).toBeGreaterThan(0);
  expect(lost.length).toBeGreaterThan(0);
  for (const b of acknowledged) {
    expect(b.answer!.accepted).toBe(BATCH);
    for (const e of b.answer!.events) expect(e.runs).toHaveLength(2);
  }

  // Restart on the same file, and resend: every batch whose answer never came, and a few that did.
  child = startChild(config);
  await waitHealthy(child);
  const resentOk = acknowledged.slice(0, 3);
  const resends = new Map<number, Batch['answer']>();
  for (const b of [...lost, ...resentOk]) {
    const res = await post(b);
    expect(res.status, `resending batch ${b.n}`).toBe(202);
    resends.set(b.n, (await res.json()) as Batch['answer']);
  }
  // A batch that was acknowledged is all duplicates now: same keys, no runs.
  for (const b of resentOk) {
    const again = resends.get(b.n)!;
    expect(again.accepted).toBe(0);
    expect(again.duplicates).toBe(BATCH);
    expect(again.events.map((e) => e.id)).toEqual(b.answer!.events.map((e) => e.id));
    for (const e of again.events) expect(e.runs).toEqual([]);
  }
  // A lost batch was committed before the kill (duplicates) or not at all (accepted): never half of it.
  let lostButCommitted = 0;
  for (const b of lost) {
    const again = resends.get(b.n)!;
    expect([0, BATCH]).toContain(again.accepted);
    if (again.accepted === 0) lostButCommitted += 1;
  }

  const ro = () => new Database(db, { readonly: true, fileMustExist: true });
  const reader = ro();
  let pending: { queued: number; running: number };
  try {
    const count = reader.prepare(
      `SELECT sum(status = 'queued') AS queued, sum(status = 'running') AS running FROM runs`,
    );
    pending = await waitFor(
      async () => count.get() as { queued: number; running: number },
      (c) => c.queued === 0 && c.running === 0,
      30_000,
      'no run queued or running',
    );
  } finally {
    reader.close();
  }
  expect(pending).toEqual({ queued: 0, running: 0 });

  // Stop the child cleanly, then read the file on its own.
  child.process.kill('SIGTERM');
  await Promise.race([exited(child.process), new Promise((r) => setTimeout(r, 10_000))]);
  expect(child.process.exitCode ?? child.process.signalCode).toBe(0);

  const sql = ro();
  try {
    const eventCount = (sql.prepare('SELECT count(*) FROM events WHERE source = ?').pluck().get(SOURCE) as number) ?? 0;
    const runRows = sql
      .prepare(
        `SELECT r.id, r.event_key, r.action, r.status FROM runs r JOIN events e ON e.key = r.event_key WHERE e.source = ?`,
      )
      .all(SOURCE) as Array<{ id: string; event_key: string; action: string; status: string }>;
    const attemptCount = sql
      .prepare('SELECT count(*) FROM attempts a JOIN runs r ON r.id = a.run_id JOIN events e ON e.key = r.event_key WHERE e.source = ?')
      .pluck()
      .get(SOURCE) as number;

    // Every event sent exists exactly once: everything was resent until acknowledged.
    const sentIds = new Set(batches.flatMap((b) => b.events.map((e) => e.id)));
    expect(eventCount).toBe(sentIds.size);
    const stored = new Set((sql.prepare('SELECT id FROM events WHERE source = ?').pluck().all(SOURCE) as string[]));
    expect([...sentIds].filter((id) => !stored.has(id))).toEqual([]);
    expect(sql.prepare('SELECT source, id, count(*) AS n FROM events GROUP BY source, id HAVING n > 1').all()).toEqual([]);

    // Every acknowledged event has exactly its 2 runs (the ones the answer named), and no more were made.
    const runsByEvent = new Map<string, string[]>();
    for (const r of runRows) runsByEvent.set(r.event_key, [...(runsByEvent.get(r.event_key) ?? []), r.id]);
    for (const b of acknowledged) {
      for (const e of b.answer!.events) {
        expect(runsByEvent.get(e.id)?.sort(), `runs of event ${e.id}`).toEqual([...e.runs].sort());
      }
    }
    for (const [key, ids] of runsByEvent) expect(ids, `runs of event ${key}`).toHaveLength(2);
    expect(runsByEvent.size).toBe(eventCount);
    expect(runRows).toHaveLength(2 * eventCount);

    // Every run ended in success, with at least one attempt, and its last run event says success.
    expect(runRows.filter((r) => r.status !== 'success')).toEqual([]);
    const withoutAttempt = sql
      .prepare(
        `SELECT r.id FROM runs r JOIN events e ON e.key = r.event_key WHERE e.source = ?
           AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.run_id = r.id)`,
      )
      .pluck()
      .all(SOURCE);
    expect(withoutAttempt).toEqual([]);
    const lastEvents = sql
      .prepare(
        `SELECT re.run_id, re.status FROM run_events re
           JOIN (SELECT run_id, max(seq) AS seq FROM run_events GROUP BY run_id) last ON last.run_id = re.run_id AND last.seq = re.seq`,
      )
      .all() as Array<{ run_id: string; status: string }>;
    const lastStatus = new Map(lastEvents.map((x) => [x.run_id, x.status]));
    expect(runRows.filter((r) => lastStatus.get(r.id) !== 'success').map((r) => [r.id, lastStatus.get(r.id)])).toEqual([]);
    // Every success attempt is the last attempt of its run.
    const successAttempts = sql.prepare(`SELECT count(*) FROM attempts WHERE outcome = 'success'`).pluck().get() as number;
    expect(successAttempts).toBe(runRows.length);

    // The receiver saw every http run's id as its webhook-id (repeats across the crash are allowed).
    const httpRuns = runRows.filter((r) => r.action === 'http').map((r) => r.id);
    expect(httpRuns).toHaveLength(eventCount);
    const seen = new Set(receiver.requests.map((q) => q.headers['webhook-id'] as string));
    expect(httpRuns.filter((id) => !seen.has(id))).toEqual([]);
    expect([...seen].filter((id) => !httpRuns.includes(id))).toEqual([]);
    for (const q of receiver.requests) expect(q.headers['idempotency-key']).toBe(q.headers['webhook-id']);
    const repeats = receiver.requests.length - seen.size;

    const interrupted = sql.prepare(`SELECT count(*) FROM attempts WHERE error_code = 'lease_expired'`).pluck().get() as number;
    console.log(
      `crash test: load ran ${loadMs} ms; ${batches.length} batches of ${BATCH} posted before the kill ` +
        `(${acknowledged.length} acknowledged = ${acceptedBeforeKill} events accepted before the kill; ` +
        `${lost.length} unanswered, of which ${lostButCommitted} had been committed; ${inFlightAtKill} posts in flight at the kill); ` +
        `after the restart: ${eventCount} events, ${runRows.length} runs, ${attemptCount} attempts ` +
        `(${interrupted} ended by lease expiry), ${receiver.requests.length} webhook requests (${repeats} repeats)`,
    );
  } finally {
    sql.close();
  }
}, 90_000);
