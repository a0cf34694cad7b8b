/**
 * An example profile, for the tests only (it is not in the preset): everything a profile may bring, written
 * the way the five real ones are, without touching a core file.
 *
 * - a configuration section (`profiles: { example: { token } }`);
 * - routes in a scope of their own, with their own authentication (a token header, or a core pre-shared key
 *   through the authenticator's `psk` piece) and their own error answers (`{"message": …}`, plain-text 400s);
 * - a decoder (`example.job`) that makes an event of a job, and that a dead letter is replayed through;
 * - an action (`example-wait`) that creates the run's hosts and leaves the run waiting for a callback;
 * - a callback route that resolves the waiting run by its correlation id and updates its hosts;
 * - a migration (its own table) and statements on it;
 * - a presenter (`example.job`) for an output's run-event stream;
 * - a command line command (`dispatcher example`).
 */

import type { FastifyRequest } from 'fastify';
import type { ActionType } from '../src/core/action.js';
import { useAuthentication } from '../src/api/auth.js';
import { answerErrors } from '../src/api/errors.js';
import { intakeMessage } from '../src/api/intake.js';
import { DispatcherError } from '../src/core/errors.js';
import { parseJsonBytes } from '../src/core/json.js';
import { section, Type, type Options } from '../src/core/options.js';
import type { Principal } from '../src/core/principal.js';
import type { RunStatus } from '../src/core/types.js';
import type { DispatcherProfile } from '../src/preset.js';

const CONFIG = section(
  {
    token: Type.String({ minLength: 8, description: 'What callers send in `x-example-token`.', default: 'exampleToken123' }),
    tenant: Type.String({ minLength: 1, description: 'The tenant of what callers send.', default: 'default' }),
  },
  { description: 'Jobs in over HTTP, one waiting run per job, callbacks that end it.' },
);
type ExampleConfig = Options<typeof CONFIG>;

/** The permission the profile's routes need. */
export const EXAMPLE_PERMISSION = 'example:jobs:write';

interface Job {
  id: string;
  correlation: string;
  hosts: string[];
}

function isJob(value: unknown): value is Job {
  const v = value as Partial<Job> | null;
  return (
    v !== null &&
    typeof v === 'object' &&
    typeof v.id === 'string' &&
    v.id !== '' &&
    typeof v.correlation === 'string' &&
    Array.isArray(v.hosts) &&
    v.hosts.every((h) => typeof h === 'string' && h !== '')
  );
}

/** `example-wait`: creates a host per job host, and waits for the job's callback. */
const waitAction = (config: ExampleConfig): ActionType => ({
  type: 'example-wait',
  paramsSchema: { type: 'object', additionalProperties: false, properties: {} },
  create: () => ({
    async execute(ctx) {
      const job = ctx.event.data as Job;
      const at = Date.now();
      await ctx.services.upsertHosts!(job.hosts.map((name) => ({ runId: ctx.runId, name, at, details: { tenant: config.tenant } })));
      return { status: 'waiting', correlationId: job.correlation, result: { job: job.id, hosts: job.hosts.length } };
    },
  }),
});

export const EXAMPLE_PROFILE: DispatcherProfile = {
  name: 'example',
  description: 'An example profile (tests only).',
  config: CONFIG,
  permissions: { [EXAMPLE_PERMISSION]: 'send jobs and their callbacks' },
  actionTypes: (setup) => [waitAction(setup.config as ExampleConfig)],
  decoders: {
    job: {
      description: 'A job: `{"id", "correlation", "hosts": [names]}` → an `example.job` event.',
      options: { type: 'object', additionalProperties: false, properties: { type: { type: 'string', minLength: 1, default: 'example.job' } } },
      create: (options, context) => (message) => {
        const job = parseJsonBytes(message.raw);
        if (!isJob(job)) {
          throw new DispatcherError('invalid_event', 'a job needs an "id", a "correlation" and a list of "hosts"', { problems: [{ pointer: '', message: 'not a job' }] });
        }
        return { events: [{ specversion: '1.0', id: job.id, source: context.source, type: (options.type as string | undefined) ?? 'example.job', data: job }], batch: false };
      },
    },
  },
  migrations: {
    sqlite: { '0001_callbacks': ['CREATE TABLE example_callbacks (correlation TEXT NOT NULL, body TEXT NOT NULL, at INTEGER NOT NULL)'] },
    postgres: { '0001_callbacks': ['CREATE TABLE example_callbacks (correlation text NOT NULL, body text NOT NULL, at bigint NOT NULL)'] },
  },
  presenters: {
    job: {
      stream: 'runEvents',
      description: '`{"job": <correlation>, "state": <status>}`',
      present: (e) => ({
        key: e.runId,
        headers: { kind: 'example-job', event_type: e.eventType },
        body: Buffer.from(JSON.stringify({ job: e.payload.correlationId, state: e.status })),
        contentType: 'application/json',
      }),
    },
  },
  http(scope, { config, services }) {
    const { token, tenant } = config as ExampleConfig;
    // Its own error answers: `{"message": …}`, and 400s as plain text.
    answerErrors(scope, {
      format: (err, status) =>
        status === 400
          ? { body: `Bad Request: ${err.message}\n`, type: 'text/plain; charset=utf-8' }
          : { body: { message: status === 401 ? 'Unauthorized' : status === 403 ? 'Forbidden' : err.message } },
      refused: (request) => (request.url === '/example/jobs' ? { ...intakeMessage(request, Buffer.alloc(0), 'example.jobs'), headers: { ':decoder': 'example.job' } } : undefined),
      reject: (message, error) => services.reject(message, error),
    });
    // Its own authentication: its token, or a core pre-shared key (the authenticator's piece), refused with a 403.
    useAuthentication(scope, (request): Principal | null => {
      const given = request.headers['x-example-token'];
      if (typeof given === 'string') {
        if (given !== token) throw new DispatcherError('forbidden', 'wrong token');
        return { kind: 'psk', id: 'example:caller', service: 'example', orgId: tenant, grants: [{ app: 'example', resource: '*', verb: '*' }] };
      }
      const psk = /^PSK\s+(\S+)$/i.exec(String(request.headers.authorization ?? ''));
      if (psk === null) return null;
      try {
        return services.auth.psk(psk[1]!);
      } catch {
        throw new DispatcherError('forbidden', 'unknown key');
      }
    });
    const body = (request: FastifyRequest) => (Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0));

    scope.post('/example/jobs', { config: { permission: EXAMPLE_PERMISSION, audit: 'example.jobs' } }, async (request, reply) => {
      const answer = await services.receive(intakeMessage(request, body(request), 'example.jobs'), 'example.job');
      return reply.code(202).send({ ids: answer.results.map((r) => r.key), runs: answer.results.flatMap((r) => r.runIds) });
    });

    scope.post('/example/callback/:correlation', { config: { permission: EXAMPLE_PERMISSION, audit: 'example.callback' } }, async (request) => {
      const { correlation } = request.params as { correlation: string };
      const answer = parseJsonBytes(body(request)) as { status?: unknown; hosts?: Record<string, RunStatus> } | null;
      if (answer === null || typeof answer !== 'object' || (answer.status !== 'success' && answer.status !== 'failure')) {
        throw new DispatcherError('bad_request', 'status must be success or failure');
      }
      const at = Date.now();
      const [resolved] = await services.resolveRuns([{ orgId: tenant, correlationId: correlation, status: answer.status, at, result: { callback: answer }, reopen: ['timeout'] }]);
      if (resolved!.run === null) throw new DispatcherError('not_found', `no job waits under ${correlation}`);
      const hosts = Object.entries(answer.hosts ?? {}).map(([name, status]) => ({ runId: resolved!.run!.id, name, status, at, only: 'update' as const, keep: ['success', 'failure'] as RunStatus[] }));
      const changed = await services.upsertHosts(hosts);
      await services.query({ sqlite: 'INSERT INTO example_callbacks (correlation, body, at) VALUES (?, ?, ?)', postgres: 'INSERT INTO example_callbacks (correlation, body, at) VALUES ($1, $2, $3)' }, [
        correlation,
        body(request).toString('utf8'),
        at,
      ]);
      return { outcome: resolved!.outcome, run: resolved!.run.id, status: resolved!.run.status, hosts: changed.map((h) => h.outcome) };
    });

    scope.get('/example/callbacks/:correlation', { config: { public: true } }, async (request) => {
      const { correlation } = request.params as { correlation: string };
      const rows = await services.query(
        { sqlite: 'SELECT body FROM example_callbacks WHERE correlation = ? ORDER BY at', postgres: 'SELECT body FROM example_callbacks WHERE correlation = $1 ORDER BY at' },
        [correlation],
      );
      return rows.map((r) => JSON.parse(String(r.body)) as unknown);
    });
  },
  cli(program) {
    program
      .command('example')
      .description('say which profile this is')
      .action(() => {
        process.stdout.write('the example profile\n');
      });
  },
};
