/**
 * The profile surface, through an example profile of the tests' own (./example-profile.ts) added to the
 * preset without touching a core file: its configuration section, its routes in their own scope (own
 * authentication and error bodies, permissions checked by the core), its decoder (and a dead letter
 * replayed through it), its action that waits and is resolved by a callback, hosts, its migration and
 * table, its presenter on a stream of its own to RabbitMQ, its command line command; on SQLite and on
 * PostgreSQL.
 *
 * RabbitMQ and PostgreSQL are needed for their parts: without them those parts are skipped with a printed
 * reason; with CI=true they fail.
 */

import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';
import pg from 'pg';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildProgram } from '../src/cli/program.js';
import { loadConfig } from '../src/config/load.js';
import { configSchema, ENV_OPTIONS } from '../src/config/schema.js';
import { PRESET, type Preset } from '../src/preset.js';
import { EXAMPLE_PERMISSION, EXAMPLE_PROFILE } from './example-profile.js';
import { AUTH, POSTGRES_URL, probePostgres, startDispatcher, waitFor, waitForRun, type TestDispatcher } from './helpers.js';

const PRESET_WITH_EXAMPLE: Preset = [...PRESET, EXAMPLE_PROFILE];
const TOKEN = 'exampleSecret42';
const AMQP_URL = 'amqp://guest:guest@127.0.0.1:5672';
const required = process.env.CI === 'true';

async function probe(what: () => Promise<void>): Promise<string | null> {
  try {
    await what();
    return null;
  } catch (err) {
    return (err as Error).message || String(err);
  }
}

const rabbitDown = await probe(async () => (await amqp.connect(AMQP_URL)).close());
const postgresDown = await probePostgres();
if (rabbitDown !== null && !required) console.warn(`profile.test.ts: the stream to RabbitMQ is skipped: ${AMQP_URL} is unreachable (${rabbitDown}).`);
if (postgresDown !== null && !required) console.warn(`profile.test.ts (PostgreSQL half) skipped: PostgreSQL is unreachable (${postgresDown}).`);

/** The example profile switched on, its route, and (when RabbitMQ is up) a stream of its own to an exchange. */
function exampleConfig(exchange: string | null): Record<string, unknown> {
  return {
    profiles: { example: { token: TOKEN } },
    routes: [
      { name: 'jobs', match: { type: 'example.job' }, actions: [{ 'example-wait': {} }], deadline: '1h' },
      { name: 'hello', match: { type: 'example.hello' }, actions: [{ noop: {} }] },
    ],
    ...(exchange === null
      ? {}
      : {
          outputs: {
            bus: {
              amqp: { url: AMQP_URL, exchange, exchangeType: 'topic' },
              streams: [{ stream: 'runEvents', topic: 'example.jobs', presenter: 'example.job', filter: { profile: ['example'] } }],
            },
          },
        }),
  };
}

const job = (id: string, correlation: string, hosts: string[]) => JSON.stringify({ id, correlation, hosts });

describe('the profile surface, configured', () => {
  it('checks a profile section with its own schema, and switches the profile on by its key alone', async () => {
    const on = await loadConfig({ env: {}, preset: PRESET_WITH_EXAMPLE, overrides: { profiles: { example: null } } as never });
    expect(on.profiles).toEqual({ example: { token: 'exampleToken123', tenant: 'default' } });
    const off = await loadConfig({ env: {}, preset: PRESET_WITH_EXAMPLE });
    expect(off.profiles).toEqual({});
    await expect(loadConfig({ env: {}, preset: PRESET_WITH_EXAMPLE, overrides: { profiles: { example: { tokn: 'x' } } } as never })).rejects.toThrow(
      /profiles\.example\.tokn: unknown key "tokn" \(did you mean "token"\?\)/,
    );
    await expect(loadConfig({ env: {}, preset: PRESET_WITH_EXAMPLE, overrides: { profiles: { example: { token: 'short' } } } as never })).rejects.toThrow(
      /profiles\.example\.token: must NOT have fewer than 8 characters/,
    );
    // Not in the preset: an unknown key, with the known profiles named.
    await expect(loadConfig({ env: {}, overrides: { profiles: { example: {} } } as never })).rejects.toThrow(/profiles\.example: unknown key "example"/);
    // The schema documents the profile's section; the environment does not switch profiles on.
    expect(configSchema(PRESET_WITH_EXAMPLE).properties?.profiles?.properties?.example?.properties?.token?.default).toBe('exampleToken123');
    expect(ENV_OPTIONS.some((o) => o.path[0] === 'profiles')).toBe(false);
  });

  it('adds the routes a profile brings while it is on, checked as configured routes are, and keeps their names its own', async () => {
    const withRoutes = (route: Record<string, unknown>): Preset =>
      PRESET_WITH_EXAMPLE.map((p) => (p.name === 'example' ? { ...p, routes: ({ config }) => [{ ...route, description: `for ${String(config.tenant)}` }] } : p));
    const own = { name: 'example.hello', match: { type: 'example.hello' }, actions: [{ noop: {} }], deadline: '2h' };
    const on = await loadConfig({ env: {}, preset: withRoutes(own), overrides: { profiles: { example: { tenant: 'acme' } } } as never });
    // After the configured ones (here the built-in `example` route of a file that sets none).
    expect(on.routes.map((r) => [r.name, r.deadline, r.description, r.retry.attempts])).toEqual([
      ['example', 3_600_000, undefined, 5],
      ['example.hello', 7_200_000, 'for acme', 5],
    ]);
    const off = await loadConfig({ env: {}, preset: withRoutes(own) });
    expect(off.routes.map((r) => r.name)).toEqual(['example']);
    // A configured route may not take the profile's route's name.
    const clash = loadConfig({ env: {}, preset: withRoutes(own), overrides: { profiles: { example: {} }, routes: [{ ...own, deadline: '1h' }] } as never });
    await expect(clash).rejects.toThrow(/routes\[0\]\.name: route name "example\.hello" is the example profile's own route/);
    // A profile's route that is not a route, or not named after the profile, is reported under the profile.
    await expect(loadConfig({ env: {}, preset: withRoutes({ ...own, actions: [] }), overrides: { profiles: { example: {} } } as never })).rejects.toThrow(
      /profiles\.example: the profile's route "example\.hello" is not a valid route: \/actions must NOT have fewer than 1 items/,
    );
    await expect(loadConfig({ env: {}, preset: withRoutes({ ...own, name: 'hello' }), overrides: { profiles: { example: {} } } as never })).rejects.toThrow(
      /the profile's route "hello" is not named after the profile/,
    );
  });

  it('accepts a profile\'s decoder and presenter only while the profile is on, and checks the decoder\'s options', async () => {
    const output = { amqp: { url: AMQP_URL, exchange: 'x' }, streams: [{ stream: 'runEvents', topic: 't', presenter: 'example.job' }] };
    const input = { amqp: { url: AMQP_URL, queue: 'q' }, decoder: { format: 'example.job', options: { type: 'example.other' } } };
    const off = loadConfig({ env: {}, preset: PRESET_WITH_EXAMPLE, overrides: { inputs: { jobs: input }, outputs: { bus: output } } as never });
    await expect(off).rejects.toThrow(/inputs\.jobs\.decoder\.format: the decoder "example\.job" is the profile example's: switch it on/);
    await expect(off).rejects.toThrow(/outputs\.bus\.streams\[0\]\.presenter: the presenter "example\.job" is the profile example's/);
    const on = await loadConfig({ env: {}, preset: PRESET_WITH_EXAMPLE, overrides: { profiles: { example: {} }, inputs: { jobs: input }, outputs: { bus: output } } as never });
    expect(on.inputs[0]!.decoder).toEqual({ format: 'example.job', options: { type: 'example.other' } });
    expect(on.outputs[0]!.streams).toEqual([{ name: 'run_events', kind: 'runEvents', topic: 't', presenter: 'example.job', filter: {} }]);
    const badOptions = loadConfig({
      env: {},
      preset: PRESET_WITH_EXAMPLE,
      overrides: { profiles: { example: {} }, inputs: { jobs: { ...input, decoder: { format: 'example.job', options: { typo: 1 } } } } } as never,
    });
    await expect(badOptions).rejects.toThrow(/inputs\.jobs\.decoder\.options\.typo: unknown key "typo"/);
    const wrongKind = loadConfig({
      env: {},
      preset: PRESET_WITH_EXAMPLE,
      overrides: { profiles: { example: {} }, outputs: { bus: { ...output, streams: [{ stream: 'deadLetters', topic: 't', presenter: 'example.job' }] } } } as never,
    });
    await expect(wrongKind).rejects.toThrow(/the presenter "example\.job" shows runEvents, not deadLetters/);
  });

  it('adds the inputs and outputs a profile brings while it is on, checked as configured ones are, and keeps their names its own', async () => {
    const input = { amqp: { url: AMQP_URL, queue: 'jobs' }, decoder: { format: 'example.job', options: { type: 'example.other' } } };
    const output = { amqp: { url: AMQP_URL, exchange: 'x' }, deadLetters: { topic: 'errors' } };
    const withBus = (inputs: Record<string, Record<string, unknown>>, outputs: Record<string, Record<string, unknown>> = {}): Preset =>
      PRESET_WITH_EXAMPLE.map((p) => (p.name === 'example' ? { ...p, inputs: () => inputs, outputs: () => outputs } : p));
    const on = await loadConfig({ env: {}, preset: withBus({ 'example.jobs': input }, { 'example.errors': output }), overrides: { profiles: { example: {} } } as never });
    expect(on.inputs.map((i) => [i.name, i.transport, i.decoder])).toEqual([['example.jobs', 'amqp', { format: 'example.job', options: { type: 'example.other' } }]]);
    expect(on.outputs.map((o) => [o.name, o.streams.map((st) => [st.kind, st.topic])])).toEqual([['example.errors', [['deadLetters', 'errors']]]]);
    const off = await loadConfig({ env: {}, preset: withBus({ 'example.jobs': input }, { 'example.errors': output }) });
    expect([off.inputs, off.outputs]).toEqual([[], []]);
    // A configured input may not take the profile's name; a profile's input must be named after it and valid.
    const clash = loadConfig({ env: {}, preset: withBus({ 'example.jobs': input }), overrides: { profiles: { example: {} }, inputs: { 'example.jobs': input } } as never });
    await expect(clash).rejects.toThrow(/inputs\.example\.jobs is the example profile's own: name this one otherwise/);
    await expect(loadConfig({ env: {}, preset: withBus({ jobs: input }), overrides: { profiles: { example: {} } } as never })).rejects.toThrow(
      /the profile's input "jobs" is not named after the profile/,
    );
    await expect(loadConfig({ env: {}, preset: withBus({ 'example.jobs': { amqp: { queue: 'q' } } }), overrides: { profiles: { example: {} } } as never })).rejects.toThrow(
      /profiles\.example: the profile's input "example\.jobs" is not valid/,
    );
  });

  it('reads a base layer under the file and the environment, and switches on the profiles it names', async () => {
    const base = { source: '.original.yaml', value: { profiles: { example: { tenant: 'from-base' } }, server: { port: 9001 } } };
    const under = await loadConfig({ env: {}, preset: PRESET_WITH_EXAMPLE, base: base as never });
    expect([under.server.port, (under.profiles as Record<string, { tenant?: string }>).example?.tenant]).toEqual([9001, 'from-base']);
    const over = await loadConfig({ env: { DISPATCHER_SERVER_PORT: '9002' }, preset: PRESET_WITH_EXAMPLE, base: base as never, overrides: { profiles: { example: { tenant: 'flag' } } } as never });
    expect([over.server.port, (over.profiles as Record<string, { tenant?: string }>).example?.tenant]).toEqual([9002, 'flag']);
    // A problem in it is reported under its source.
    await expect(loadConfig({ env: {}, preset: PRESET_WITH_EXAMPLE, base: { source: '.original.yaml', value: { server: { port: 'x' } } } as never })).rejects.toThrow(/\.original\.yaml/);
  });

  it('adds the profile\'s commands to the command line', () => {
    const names = (preset: Preset) => buildProgram(preset).commands.map((c) => c.name());
    expect(names(PRESET_WITH_EXAMPLE)).toContain('example');
    expect(names(PRESET)).not.toContain('example');
  });
});

/** The whole example profile on one store. */
function exampleSuite(storeName: string, storeUrl: () => string | undefined, down: string | null, cleanup: () => Promise<void> = async () => {}): void {
  describe.skipIf(down !== null && !required)(`the example profile on ${storeName}`, () => {
    let t: TestDispatcher;
    let app: FastifyInstance;
    let connection: amqp.ChannelModel | undefined;
    const published: Array<{ key: string | undefined; headers: Record<string, unknown>; body: unknown }> = [];
    const exchange = `dispatcher-example-${randomBytes(4).toString('hex')}`;

    beforeAll(async () => {
      if (down !== null) throw new Error(`${storeName} is unreachable (${down}); with CI=true this suite must run`);
      const withBus = rabbitDown === null;
      if (!withBus && required) throw new Error(`RabbitMQ is unreachable (${rabbitDown}); with CI=true this suite must run`);
      if (withBus) {
        connection = await amqp.connect(AMQP_URL);
        const channel = await connection.createChannel();
        await channel.assertExchange(exchange, 'topic', { durable: true });
        const { queue } = await channel.assertQueue('', { exclusive: true });
        await channel.bindQueue(queue, exchange, '#');
        await channel.consume(queue, (m) => {
          if (m === null) return;
          published.push({ key: m.properties.messageId as string | undefined, headers: m.properties.headers ?? {}, body: JSON.parse(m.content.toString()) });
        }, { noAck: true });
      }
      const url = storeUrl();
      t = await startDispatcher(exampleConfig(withBus ? exchange : null), { preset: PRESET_WITH_EXAMPLE, ...(url === undefined ? {} : { storeUrl: url }) });
      app = await t.d.app();
    });

    afterAll(async () => {
      await t?.close();
      if (connection !== undefined) {
        const channel = await connection.createChannel();
        await channel.deleteExchange(exchange);
        await connection.close();
      }
      await cleanup();
    });

    const post = (url: string, payload: string, headers: Record<string, string> = { 'x-example-token': TOKEN }) =>
      app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json', ...headers }, payload });

    it('answers in its own words: 401 and 403 with {"message"}, 400 as plain text; checks each route\'s permission', async () => {
      const none = await post('/example/jobs', job('j0', 'c0', []), {});
      expect([none.statusCode, none.json()]).toEqual([401, { message: 'Unauthorized' }]);
      const wrong = await post('/example/jobs', job('j0', 'c0', []), { 'x-example-token': 'notTheToken' });
      expect([wrong.statusCode, wrong.json()]).toEqual([403, { message: 'Forbidden' }]);
      // A core key is a principal, but not one with the profile's permission.
      const core = await post('/example/jobs', job('j0', 'c0', []), AUTH);
      expect([core.statusCode, core.json()]).toEqual([403, { message: 'Forbidden' }]);
      const bad = await post('/example/callback/c0', '{"status": "maybe"}');
      expect(bad.statusCode).toBe(400);
      expect(bad.headers['content-type']).toMatch(/^text\/plain/);
      expect(bad.body).toBe('Bad Request: status must be success or failure\n');
      // The profile's routes are in the route table, each with its permission or public, as the core's are.
      const own = app.routeTable.filter((r) => r.url.startsWith('/example/'));
      expect(own.map((r) => `${r.method} ${r.url} ${r.permission ?? 'public'}`).sort()).toEqual([
        'GET /example/callbacks/:correlation public',
        `POST /example/callback/:correlation ${EXAMPLE_PERMISSION}`,
        `POST /example/jobs ${EXAMPLE_PERMISSION}`,
      ]);
      // The core's routes still authenticate the core's way, beside the profile's scope.
      expect((await app.inject({ method: 'GET', url: '/v1/runs', headers: { 'x-example-token': TOKEN } })).statusCode).toBe(401);
      expect((await app.inject({ method: 'GET', url: '/v1/runs', headers: AUTH })).statusCode).toBe(200);
    });

    it('takes a job in through its decoder; its action creates the hosts and waits; the callback resolves the run and its hosts', async () => {
      const accepted = await post('/example/jobs', job('job-1', 'corr-1', ['web-1', 'web-2']));
      expect(accepted.statusCode).toBe(202);
      const [runId] = accepted.json().runs as string[];
      const waiting = await waitFor(() => t.d.store.getRun(runId!), (r) => r?.correlationId === 'corr-1', 10_000, 'the run to wait');
      expect(waiting).toMatchObject({ status: 'running', leaseOwner: null, result: { job: 'job-1', hosts: 2 }, service: 'example' });
      const event = (await t.d.store.getEvent(waiting!.eventKey))!;
      expect(event.event).toMatchObject({ id: 'job-1', source: 'example', type: 'example.job', data: { correlation: 'corr-1' } });
      const hosts = await app.inject({ method: 'GET', url: `/v1/runs/${runId}/hosts?sort=name`, headers: AUTH });
      expect(hosts.json().data.map((h: { name: string; status: string }) => [h.name, h.status])).toEqual([
        ['web-1', 'running'],
        ['web-2', 'running'],
      ]);

      const done = await post('/example/callback/corr-1', JSON.stringify({ status: 'success', hosts: { 'web-1': 'success', 'web-2': 'failure', 'web-9': 'success' } }));
      expect(done.statusCode).toBe(200);
      expect(done.json()).toEqual({ outcome: 'resolved', run: runId, status: 'success', hosts: ['updated', 'updated', 'not_found'] });
      expect(await t.d.store.getRun(runId!)).toMatchObject({ status: 'success', result: { callback: { status: 'success' } } });
      expect((await t.d.store.getAttempts(runId!)).map((a) => a.outcome)).toEqual(['success']);
      const listed = await app.inject({ method: 'GET', url: `/v1/hosts?filter[run]=${runId}&filter[status]=failure&fields[data]=name,status`, headers: AUTH });
      expect(listed.json()).toMatchObject({ data: [{ name: 'web-2', status: 'failure' }], meta: { count: 1, total: 1 } });

      // The same callback again changes nothing: terminal hosts are kept, the run is unchanged.
      const again = await post('/example/callback/corr-1', JSON.stringify({ status: 'success', hosts: { 'web-2': 'success' } }));
      expect(again.json()).toEqual({ outcome: 'unchanged', run: runId, status: 'success', hosts: ['unchanged'] });
      // Its table has both callbacks, through its own public route.
      const recorded = await app.inject({ method: 'GET', url: '/example/callbacks/corr-1' });
      expect(recorded.json().map((c: { status: string }) => c.status)).toEqual(['success', 'success']);
      // The run's events and its hosts' are in the stream, host events with their logs.
      const outbox = await t.d.store.readRunEvents(0, 1000);
      expect(outbox.filter((e) => e.runId === runId).map((e) => `${e.kind}:${e.eventType}:${e.status}`)).toEqual([
        'run:create:running',
        'host:create:running',
        'host:create:running',
        'run:update:running',
        'run:update:success',
        'host:update:success',
        'host:update:failure',
      ]);
      // An unknown correlation id is the profile's 404.
      const unknown = await post('/example/callback/nobody', JSON.stringify({ status: 'success' }));
      expect([unknown.statusCode, unknown.json()]).toEqual([404, { message: 'no job waits under nobody' }]);
    });

    it('publishes the runs of its own action to its stream in its own shape, and nothing else', async () => {
      if (rabbitDown !== null) return;
      // A run of another route (noop), then one more job: once the job's run events are out, the other's were passed over.
      const other = await t.d.send([{ specversion: '1.0', id: `other-${randomBytes(3).toString('hex')}`, source: 'urn:test', type: 'example.hello' }]);
      const otherRun = other.results[0]!.runIds[0]!;
      await waitForRun(t.d, otherRun, ['success']);
      const [last] = (await post('/example/jobs', job('job-4', 'corr-4', []))).json().runs as string[];
      await waitFor(async () => published.filter((m) => m.key === last).length, (n) => n >= 2, 10_000, 'the last job on the example stream');
      expect(published.filter((m) => m.key === otherRun)).toEqual([]);
      const forFirst = published.filter((m) => (m.body as { job: string | null }).job === 'corr-1').map((m) => (m.body as { state: string }).state);
      expect(forFirst).toEqual(['running', 'success']);
      expect(published.every((m) => m.headers.kind === 'example-job' && typeof m.key === 'string')).toBe(true);
    });

    it('keeps a job it cannot read as a dead letter that names its decoder, and replays it through that decoder', async () => {
      const bad = await post('/example/jobs', '{"id": "job-2"}');
      expect([bad.statusCode, bad.body]).toEqual([400, 'Bad Request: a job needs an "id", a "correlation" and a list of "hosts"\n']);
      const [letter] = (await t.d.store.listDeadLetters({ limit: 10, offset: 0, source: 'example.jobs' })).items;
      expect(letter).toMatchObject({ origin: 'intake', reason: 'invalid_event', headers: { ':decoder': 'example.job' } });
      // Replayed as it came, through the same decoder: still not a job, so it is refused the same way.
      await expect(t.d.replayDeadLetter(letter!.id)).rejects.toMatchObject({ code: 'invalid_event' });
      expect((await t.d.store.getDeadLetter(letter!.id))?.attempts).toBe(2);
    });

    it('times a waiting job out with its hosts, and lets a late callback complete it (it allows that)', async () => {
      const accepted = await post('/example/jobs', job('job-3', 'corr-3', ['db-1']));
      const [runId] = accepted.json().runs as string[];
      await waitFor(() => t.d.store.getRun(runId!), (r) => r?.correlationId === 'corr-3', 10_000, 'the run to wait');
      // A sweep of our own, two hours on; on PostgreSQL the dispatcher's own sweeper may hold the sweep lock
      // for a moment (then this round does nothing), so it is tried until one takes the run.
      const swept = await waitFor(() => t.d.store.sweep(Date.now() + 2 * 3_600_000, 100), (r) => r.timedOut >= 1, 5_000, 'a sweep to time the run out');
      expect(swept.timedOut).toBeGreaterThanOrEqual(1);
      expect((await t.d.store.getRun(runId!))?.status).toBe('timeout');
      expect((await t.d.store.listHosts({ runId: [runId!], limit: 10, offset: 0 })).items.map((h) => h.status)).toEqual(['timeout']);
      const late = await post('/example/callback/corr-3', JSON.stringify({ status: 'success', hosts: { 'db-1': 'success' } }));
      expect(late.json()).toEqual({ outcome: 'resolved', run: runId, status: 'success', hosts: ['updated'] });
      expect(await waitForRun(t.d, runId!, ['success'])).toMatchObject({ status: 'success' });
    });

    it('has its table made by its migration, recorded under its name', async () => {
      const names = await t.d.store.query({ sqlite: 'SELECT name FROM dispatcher_migrations ORDER BY name', postgres: 'SELECT name FROM dispatcher_migrations ORDER BY name' });
      expect(names.map((r) => r.name)).toContain('example/0001_callbacks');
    });
  });
}

exampleSuite('SQLite', () => undefined, null);

const schema = `dispatcher_profile_${randomBytes(4).toString('hex')}`;
exampleSuite(
  'PostgreSQL',
  () => {
    const url = new URL(POSTGRES_URL);
    url.searchParams.set('schema', schema);
    return url.toString();
  },
  postgresDown,
  async () => {
    if (postgresDown !== null) return;
    const admin = new pg.Client({ connectionString: POSTGRES_URL });
    await admin.connect();
    try {
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    } finally {
      await admin.end();
    }
  },
);
