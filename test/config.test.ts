import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { DispatcherError } from '../src/core/errors.js';
import { DEFAULTS } from '../src/config/defaults.js';
import { renderConfigurationReference, renderSchemaJson } from '../src/config/docs.js';
import { DEFAULT_ANSWERS, initConfig, renderStarterConfig } from '../src/config/init.js';
import { loadConfig, validateConfigFile, type ConfigProblem, type LoadConfigOptions } from '../src/config/load.js';
import { ENV_OPTIONS, FIXED_SECTIONS } from '../src/config/schema.js';

const dirs: string[] = [];

function tmp(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-config-'));
  dirs.push(dir);
  return dir;
}

function write(dir: string, name: string, text: string): string {
  const file = path.join(dir, name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return file;
}

/** Write `text` as a config file in a fresh folder and return its path. */
function configFile(text: string): string {
  return write(tmp(), 'dispatcher.yaml', text);
}

async function loadError(options: LoadConfigOptions): Promise<DispatcherError> {
  try {
    await loadConfig(options);
  } catch (err) {
    expect(err).toBeInstanceOf(DispatcherError);
    expect((err as DispatcherError).code).toBe('config_invalid');
    return err as DispatcherError;
  }
  throw new Error('loadConfig did not throw');
}

afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

describe('defaults', () => {
  it('with no configuration at all, gives the normalized defaults and the example route', async () => {
    const config = await loadConfig({ env: {} });
    expect(config.server).toEqual({
      host: '127.0.0.1',
      port: 8080,
      bodyLimit: 1024 * 1024,
      requestTimeout: 30_000,
      cors: [],
      rateLimit: { max: 20_000, window: 1000 },
    });
    expect(config.store).toEqual({ url: 'sqlite:./data/dispatcher.db', poolSize: 10, queryTimeout: 30_000 });
    expect(config.retention).toEqual({ runs: 30 * 86_400_000, events: 30 * 86_400_000, runEvents: 7 * 86_400_000, deadLetters: 30 * 86_400_000, interval: 60_000, batchSize: 500 });
    expect(config.log).toEqual({ level: 'info', requests: false });
    expect(config.intake).toEqual({ strict: false, maxBatch: 1000, maxDepth: 32, maxHops: 8, commitTimeout: 5000 });
    expect(config.runner).toEqual({ concurrency: 512, batchSize: 256, lease: 30_000, poll: 1000, sweepInterval: 5000, shutdownTimeout: 10_000, dispatchWait: 1000 });
    expect(config.deadLetters).toEqual({ maxBytes: 256 * 1024, maxCount: 100_000 });
    expect(config.metrics).toEqual({ enabled: true });
    expect(config.actions).toEqual({
      http: { allow: [], timeout: 10_000, maxResponseBytes: 4096, userAgent: 'dispatcher' },
      playbook: { rps: 100, bucket: 60, responseInterval: 600, satelliteResponseFull: true, defaultTimeout: 3600, demoMode: false },
    });
    expect(config.plugins).toEqual({});
    expect(config.types).toEqual({});
    expect(config.routes).toEqual([
      {
        name: 'example',
        enabled: true,
        match: { type: 'example.*' },
        actions: [{ noop: {} }],
        retry: { attempts: 5, backoff: 1000, maxBackoff: 300_000, maxAge: 86_400_000 },
        timeout: 30_000,
        deadline: 3_600_000,
        labels: {},
      },
    ]);
  });

  it('reads the file named by DISPATCHER_CONFIG when no file is given', async () => {
    const file = configFile('server: { port: 9001 }\n');
    expect((await loadConfig({ env: { DISPATCHER_CONFIG: file } })).server.port).toBe(9001);
    // An explicit file wins over the variable.
    const other = configFile('server: { port: 9002 }\n');
    expect((await loadConfig({ file: other, env: { DISPATCHER_CONFIG: file } })).server.port).toBe(9002);
  });

  it('treats an empty file (or one with only comments) as no settings', async () => {
    const config = await loadConfig({ file: configFile('# nothing yet\n'), env: {} });
    expect(config.server.port).toBe(8080);
    expect(config.routes.map((r) => r.name)).toEqual(['example']);
  });

  it('does not let one load change the defaults another load sees', async () => {
    const before = structuredClone(DEFAULTS);
    const first = await loadConfig({ file: configFile('routes:\n  - { name: a, match: {}, actions: [ { noop: ~ } ] }\n'), env: {} });
    expect(first.routes[0]!.actions).toEqual([{ noop: {} }]);
    const second = await loadConfig({ env: {} });
    expect(second.routes.map((r) => r.name)).toEqual(['example']);
    expect(DEFAULTS).toEqual(before);
  });
});

describe('precedence: defaults ← file ← environment ← flags', () => {
  const fileText = 'server:\n  host: 0.0.0.0\n  port: 9000\nlog: { level: debug }\n';

  it('lets each layer override the one before, key by key', async () => {
    const file = configFile(fileText);
    const fromFile = await loadConfig({ file, env: {} });
    expect(fromFile.server).toMatchObject({ host: '0.0.0.0', port: 9000, bodyLimit: 1024 * 1024 });
    expect(fromFile.log.level).toBe('debug');

    const env = { DISPATCHER_SERVER_PORT: '9100', DISPATCHER_LOG_LEVEL: 'warn' };
    const fromEnv = await loadConfig({ file, env });
    expect(fromEnv.server).toMatchObject({ host: '0.0.0.0', port: 9100 });
    expect(fromEnv.log.level).toBe('warn');

    const fromFlags = await loadConfig({ file, env, overrides: { server: { port: 9200 } } });
    expect(fromFlags.server).toMatchObject({ host: '0.0.0.0', port: 9200, requestTimeout: 30_000 });
    expect(fromFlags.log.level).toBe('warn');
  });

  it('skips flags that are undefined (options not given)', async () => {
    const config = await loadConfig({ file: configFile(fileText), env: {}, overrides: { server: { port: undefined, host: undefined } } });
    expect(config.server).toMatchObject({ host: '0.0.0.0', port: 9000 });
  });

  it('merges objects deeply and replaces arrays', async () => {
    const file = configFile(
      [
        'actions:',
        '  http: { allow: [a.internal, b.internal, c.internal], userAgent: acme }',
        'routes:',
        '  - { name: mine, match: { topic: x }, actions: [ { http: { url: "https://example.com" } } ] }',
      ].join('\n'),
    );
    const config = await loadConfig({ file, env: { DISPATCHER_ACTIONS_HTTP_ALLOW: 'd.internal, 10.0.0.0/8' } });
    expect(config.routes).toHaveLength(1);
    expect(config.routes[0]).toMatchObject({ name: 'mine', match: { topic: 'x' }, actions: [{ http: { url: 'https://example.com' } }] });
    expect(config.routes[0]!.match).toEqual({ topic: 'x' });
    expect(config.routes[0]!.actions).toEqual([{ http: { url: 'https://example.com' } }]);
    expect(config.actions.http).toMatchObject({ allow: ['d.internal', '10.0.0.0/8'], userAgent: 'acme', timeout: 10_000 });
    const flagged = await loadConfig({ file, env: {}, overrides: { routes: [] } });
    expect(flagged.routes).toEqual([]);
  });
});

describe('environment variables', () => {
  it('derives DISPATCHER_<PATH> for every scalar option of the fixed sections', () => {
    const names = new Set(ENV_OPTIONS.map((o) => o.variable));
    const expected: string[] = [];
    for (const section of FIXED_SECTIONS) {
      const keys = section.split('.');
      let node: unknown = DEFAULTS;
      for (const key of keys) node = (node as Record<string, unknown>)[key];
      // Scalars and arrays of scalars have a variable; a nested object's scalars do too; arrays of objects do not.
      const walk = (path: string[], value: unknown) => {
        // Lists of objects or of permissions (which may be objects) have no variable.
        if (['server.cors', 'auth.psk', 'auth.defaults.permissions', 'auth.identityHeader.permissions'].includes(path.join('.'))) return;
        if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
          for (const [k, v] of Object.entries(value)) walk([...path, k], v);
          return;
        }
        expected.push(['DISPATCHER', ...path].join('_').replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase());
      };
      for (const [key, value] of Object.entries(node as object)) walk([...keys, key], value);
    }
    // Optional, so not in DEFAULTS.
    expected.push('DISPATCHER_ACTIONS_HTTP_SIGNING_SECRET', 'DISPATCHER_SERVER_PUBLIC_URL', 'DISPATCHER_ACTIONS_PLAYBOOK_RETURN_URL');
    for (const key of ['URL', 'CLIENT_ID', 'PSK', 'TIMEOUT']) expected.push(`DISPATCHER_ACTIONS_PLAYBOOK_CLOUD_CONNECTOR_${key}`);
    expect([...names].sort()).toEqual(expected.sort());
    expect(names).toContain('DISPATCHER_DEAD_LETTERS_MAX_COUNT');
    expect(names).toContain('DISPATCHER_SERVER_PORT');
  });

  it('coerces values by the schema type', async () => {
    const config = await loadConfig({
      env: {
        DISPATCHER_SERVER_PORT: '8181',
        DISPATCHER_SERVER_BODY_LIMIT: '2MiB',
        DISPATCHER_SERVER_REQUEST_TIMEOUT: '1500',
        DISPATCHER_INTAKE_STRICT: 'yes',
        DISPATCHER_METRICS_ENABLED: 'false',
        DISPATCHER_RUNNER_LEASE: '2m',
        DISPATCHER_DEAD_LETTERS_MAX_COUNT: '50',
        DISPATCHER_DEAD_LETTERS_MAX_BYTES: '1000',
        DISPATCHER_ACTIONS_HTTP_MAX_RESPONSE_BYTES: '1KB',
        DISPATCHER_ACTIONS_HTTP_SIGNING_SECRET: 'whsec_abc',
        DISPATCHER_LOG_LEVEL: 'trace',
        DISPATCHER_STORE_URL: 'postgres://u@db:5432/d',
        DISPATCHER_SERVER_HOST: '', // empty counts as unset
      },
    });
    expect(config.server).toMatchObject({ host: '127.0.0.1', port: 8181, bodyLimit: 2 * 1024 * 1024, requestTimeout: 1500 });
    expect(config.intake.strict).toBe(true);
    expect(config.metrics.enabled).toBe(false);
    expect(config.runner.lease).toBe(120_000);
    expect(config.deadLetters).toEqual({ maxCount: 50, maxBytes: 1000 });
    expect(config.actions.http).toMatchObject({ maxResponseBytes: 1000, signingSecret: 'whsec_abc' });
    expect(config.log.level).toBe('trace');
    expect(config.store.url).toBe('postgres://u@db:5432/d');
  });

  it('rejects bad values, naming the variable and the option', async () => {
    const err = await loadError({
      env: {
        DISPATCHER_SERVER_PORT: 'abc',
        DISPATCHER_INTAKE_STRICT: 'maybe',
        DISPATCHER_RUNNER_LEASE: '30 sec',
        DISPATCHER_LOG_LEVEL: 'loud',
        DISPATCHER_STORE_POOL_SIZE: '0',
      },
    });
    expect(err.message).toContain('DISPATCHER_SERVER_PORT: server.port: must be an integer, got "abc"');
    expect(err.message).toContain('DISPATCHER_INTAKE_STRICT: intake.strict: must be true or false');
    expect(err.message).toContain('DISPATCHER_RUNNER_LEASE: runner.lease: must be a duration');
    // Values that read but fail the schema are still blamed on their variable.
    expect(err.message).toContain('DISPATCHER_LOG_LEVEL: log.level: must be one of fatal, error, warn, info, debug, trace, silent, got "loud"');
    expect(err.message).toContain('DISPATCHER_STORE_POOL_SIZE: store.poolSize: must be >= 1');
    expect(err.problems?.map((p) => p.pointer).sort()).toEqual(['/intake/strict', '/log/level', '/runner/lease', '/server/port', '/store/poolSize']);
  });
});

describe('${VAR} substitution', () => {
  it('substitutes variables, defaults and escapes in string values, then reads them by type', async () => {
    const file = configFile(
      [
        'server:',
        '  host: ${HOST}',
        '  port: ${PORT:-8081}',
        '  requestTimeout: ${TIMEOUT:-45s}',
        'store: { url: "postgres://app:${PGPASSWORD}@${PGHOST:-localhost}:5432/app" }',
        'intake: { strict: "${STRICT:-true}" }',
        'routes:',
        '  - name: r',
        '    match: { type: "$${not.a.variable}" }',
        '    actions: [ { noop: {} } ]',
        '    labels: { team: "${EMPTY:-noc}" }',
      ].join('\n'),
    );
    const config = await loadConfig({ file, env: { HOST: '0.0.0.0', PGPASSWORD: 's3cret', EMPTY: '' } });
    expect(config.server).toMatchObject({ host: '0.0.0.0', port: 8081, requestTimeout: 45_000 });
    expect(config.store.url).toBe('postgres://app:s3cret@localhost:5432/app');
    expect(config.intake.strict).toBe(true);
    expect(config.routes[0]!.match).toEqual({ type: '${not.a.variable}' });
    expect(config.routes[0]!.labels).toEqual({ team: 'noc' });

    const withPort = await loadConfig({ file, env: { HOST: 'h', PGPASSWORD: 'p', PORT: '7000' } });
    expect(withPort.server.port).toBe(7000);
  });

  it('rejects an unset variable without a default, naming the file, the option and the variable', async () => {
    const file = configFile(
      ['routes:', '  - name: r', '    match: {}', '    actions:', '      - http: { url: "${HOOK_URL}/x" }'].join('\n'),
    );
    const err = await loadError({ file, env: {} });
    expect(err.message).toContain(`${file}:5: routes[0].actions[0].http.url: environment variable HOOK_URL is not set`);
    expect(err.problems).toEqual([expect.objectContaining({ pointer: '/routes/0/actions/0/http/url', source: file })]);
  });

  it('rejects an unclosed or malformed reference', async () => {
    const err = await loadError({ file: configFile('server: { host: "${HOST" }\nstore: { url: "${1BAD}" }\n'), env: {} });
    expect(err.message).toContain('server.host: unclosed "${"');
    expect(err.message).toContain('store.url: bad substitution "${1BAD}"');
  });
});

describe('units', () => {
  it('normalizes durations to milliseconds and sizes to bytes, leaving action parameters as written', async () => {
    const file = configFile(
      [
        'server: { bodyLimit: 64KB, requestTimeout: 2500 }',
        'runner: { lease: 1.5m, poll: 250ms, sweepInterval: 1h, shutdownTimeout: 2d, dispatchWait: 0 }',
        'deadLetters: { maxBytes: 1GiB }',
        'actions:',
        '  http: { timeout: 3s, maxResponseBytes: 512B }',
        '  slack: { timeout: 5s }',
        'routes:',
        '  - name: r',
        '    match: { type: a }',
        '    actions: [ { http: { url: "https://example.com", timeout: 5s } } ]',
        '    retry: { backoff: 250ms, maxAge: 1d }',
        '    timeout: 1500',
        '    deadline: 1.5h',
      ].join('\n'),
    );
    const config = await loadConfig({ file, env: {} });
    expect(config.server).toMatchObject({ bodyLimit: 64_000, requestTimeout: 2500 });
    expect(config.runner).toMatchObject({ lease: 90_000, poll: 250, sweepInterval: 3_600_000, shutdownTimeout: 172_800_000, dispatchWait: 0 });
    expect(config.deadLetters.maxBytes).toBe(1024 ** 3);
    expect(config.actions.http).toMatchObject({ timeout: 3000, maxResponseBytes: 512 });
    expect(config.actions.slack).toEqual({ timeout: '5s' });
    const route = config.routes[0]!;
    expect(route.retry).toEqual({ attempts: 5, backoff: 250, maxBackoff: 300_000, maxAge: 86_400_000 });
    expect(route.timeout).toBe(1500);
    expect(route.deadline).toBe(5_400_000);
    expect(route.actions[0]).toEqual({ http: { url: 'https://example.com', timeout: '5s' } });
  });

  it('rejects values that are not durations or sizes', async () => {
    const file = configFile('server: { bodyLimit: 1 megabyte }\nrunner: { lease: 30 sec, poll: -1 }\n');
    const err = await loadError({ file, env: {} });
    expect(err.message).toContain(`${file}:1: server.bodyLimit: must be a size (512B, 64KiB, 1MiB, 1MB) or a number of bytes, got "1 megabyte"`);
    expect(err.message).toContain(`${file}:2: runner.lease: must be a duration (500ms, 30s, 5m, 1h, 7d) or a number of milliseconds, got "30 sec"`);
    expect(err.message).toContain(`${file}:2: runner.poll: must be a duration`);
    expect(err.problems).toHaveLength(3);
  });
});

describe('errors name the source, the option and the problem', () => {
  it('rejects unknown keys in fixed sections, with their path', async () => {
    const file = configFile(
      [
        'rotues: []',
        'server: { prot: 80 }',
        'actions: { http: { alow: [] }, slack: { anything: goes } }',
        'types: { t: { schema: {}, descriptoin: x } }',
        'routes:',
        '  - { name: r, match: { anything: goes }, actions: [ { noop: { anything: goes } } ], retyr: {} }',
      ].join('\n'),
    );
    const err = await loadError({ file, env: {} });
    expect(err.message).toContain(`${file}:1: rotues: unknown key "rotues" (did you mean "routes"?)`);
    expect(err.message).toContain(`${file}:2: server.prot: unknown key "prot" (did you mean "port"?)`);
    expect(err.message).toContain(`${file}:3: actions.http.alow: unknown key "alow" (did you mean "allow"?)`);
    expect(err.message).toContain(`${file}:4: types.t.descriptoin: unknown key "descriptoin"`);
    expect(err.message).toContain(`${file}:6: routes[0].retyr: unknown key "retyr" (did you mean "retry"?)`);
    expect(err.problems?.map((p) => p.pointer).sort()).toEqual(['/actions/http/alow', '/rotues', '/routes/0/retyr', '/server/prot', '/types/t/descriptoin']);
  });

  it('gives the line and column of a YAML syntax error', async () => {
    const file = configFile('server:\n  port: 8080\n  host: [127.0.0.1\nlog: { level: info }\n');
    const err = await loadError({ file, env: {} });
    expect(err.message).toMatch(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: YAML syntax error at line \\d+, column \\d+`));
    expect(err.message).toContain('line 4');
  });

  it('reports duplicate keys in the YAML', async () => {
    const err = await loadError({ file: configFile('server: { port: 1 }\nserver: { port: 2 }\n'), env: {} });
    expect(err.message).toContain('YAML syntax error at line 2, column 1: Map keys must be unique');
  });

  it('rejects duplicate route names, naming both indexes', async () => {
    const file = configFile(
      ['routes:', '  - { name: page, match: {}, actions: [ { noop: {} } ] }', '  - { name: other, match: {}, actions: [ { noop: {} } ] }', '  - { name: page, match: {}, actions: [ { noop: {} } ] }'].join('\n'),
    );
    const err = await loadError({ file, env: {} });
    expect(err.message).toBe(`Invalid configuration: ${file}:4: routes[2].name: route name "page" is used twice: by routes[0] and routes[2]`);
    expect(err.problems).toEqual([{ pointer: '/routes/2/name', source: file, line: 4, message: expect.stringContaining('routes[0] and routes[2]') }]);
  });

  it('checks the shape of routes and their actions', async () => {
    const file = configFile(
      [
        'routes:',
        '  - name: "bad name"',
        '    match: {}',
        '    actions: []',
        '  - name: two',
        '    match: {}',
        '    actions: [ { http: {}, noop: {} }, { name: only-a-name }, { noop: {}, name: n }, { noop: {}, name: n } ]',
        '    retry: { attempts: 0 }',
        '  - { match: {}, actions: [ { noop: {} } ] }',
      ].join('\n'),
    );
    const err = await loadError({ file, env: {} });
    expect(err.message).toContain('routes[0].name: must match pattern');
    expect(err.message).toContain('routes[0].actions: must hold at least 1 item');
    expect(err.message).toContain('routes[1].actions[0]: an action has exactly one action-type key (http, publish, noop, …) besides "name"; found http, noop');
    expect(err.message).toContain('routes[1].actions[1]: an action has exactly one action-type key (http, publish, noop, …) besides "name"; found none');
    expect(err.message).toContain('routes[1].actions[3].name: action name "n" is used twice in the route: by actions[2] and actions[3]');
    expect(err.message).toContain('routes[1].retry.attempts: must be >= 1, got 0');
    expect(err.message).toContain('routes[2].name: is required');
  });

  it('blames each value on the layer it came from', async () => {
    const file = configFile('server: { port: 99999 }\n');
    const err = await loadError({ file, env: { DISPATCHER_RUNNER_POLL: 'soon' }, overrides: { log: { level: 'chatty' as never } } });
    expect(Object.fromEntries((err.problems as ConfigProblem[]).map((p) => [p.pointer, p.source]))).toEqual({
      '/runner/poll': 'DISPATCHER_RUNNER_POLL',
      '/server/port': file,
      '/log/level': 'flags',
    });
    expect(err.message).toContain('flags: log.level: must be one of');
    expect(err.message).toMatch(/^Invalid configuration \(3 problems\):\n {2}/);
  });

  it('rejects a file that cannot be read or does not hold a mapping', async () => {
    const missing = path.join(tmp(), 'nope.yaml');
    expect((await loadError({ file: missing, env: {} })).message).toContain(`${missing}: cannot read the configuration file`);
    const list = configFile('- server\n- store\n');
    expect((await loadError({ file: list, env: {} })).message).toContain(`${list}: the file must hold a mapping of sections`);
  });

  it('validateConfigFile returns the configuration or throws', async () => {
    const good = configFile('server: { port: 1234 }\n');
    expect((await validateConfigFile(good, {})).server.port).toBe(1234);
    await expect(validateConfigFile(configFile('server: { port: x }\n'), {})).rejects.toThrow(/server\.port: must be integer, got "x"/);
    // It reads the environment too: a bad variable fails the check.
    await expect(validateConfigFile(good, { DISPATCHER_SERVER_PORT: 'x' })).rejects.toThrow(/DISPATCHER_SERVER_PORT/);
  });
});

describe('types and plugins', () => {
  const alertSchema = { type: 'object', required: ['severity', 'title'], properties: { title: { type: 'string' } } };

  it('reads schemaFile (JSON or YAML) relative to the configuration file into schema', async () => {
    const dir = tmp();
    write(dir, 'conf/schemas/alert.json', JSON.stringify(alertSchema));
    write(dir, 'conf/schemas/note.yaml', 'type: object\nproperties:\n  text: { type: string }\n');
    const file = write(
      dir,
      'conf/dispatcher.yaml',
      'types:\n  alert.raised: { description: An alert., schemaFile: ./schemas/alert.json }\n  note: { schemaFile: schemas/note.yaml }\n  bare: {}\n',
    );
    // From another working directory, so a path taken from the cwd would not be found.
    const config = await loadConfig({ file: path.relative(process.cwd(), file), env: {} });
    expect(config.types['alert.raised']).toEqual({
      description: 'An alert.',
      schema: alertSchema,
      schemaFile: path.join(dir, 'conf/schemas/alert.json'),
    });
    expect(config.types.note!.schema).toEqual({ type: 'object', properties: { text: { type: 'string' } } });
    expect(config.types.bare).toEqual({});
    expect(Object.keys(config.types)).toEqual(['alert.raised', 'note', 'bare']);
  });

  it('rejects schema and schemaFile together', async () => {
    const dir = tmp();
    write(dir, 'alert.json', JSON.stringify(alertSchema));
    const file = write(dir, 'dispatcher.yaml', 'types:\n  alert.raised:\n    schema: { type: object }\n    schemaFile: ./alert.json\n');
    const err = await loadError({ file, env: {} });
    expect(err.message).toBe(`Invalid configuration: ${file}:2: types["alert.raised"]: give either "schema" or "schemaFile", not both`);
    expect(err.problems?.[0]?.pointer).toBe('/types/alert.raised');
  });

  it('reports a schemaFile that is missing, not parseable or not an object', async () => {
    const dir = tmp();
    write(dir, 'broken.json', '{ "type": ');
    write(dir, 'list.yaml', '- a\n');
    const file = write(dir, 'dispatcher.yaml', 'types:\n  a: { schemaFile: ./missing.json }\n  b: { schemaFile: ./broken.json }\n  c: { schemaFile: ./list.yaml }\n');
    const err = await loadError({ file, env: {} });
    expect(err.message).toContain(`${file}:2: types.a.schemaFile: cannot read the schema file`);
    expect(err.message).toContain(`${file}:3: types.b.schemaFile: ${path.join(dir, 'broken.json')} is not valid JSON`);
    expect(err.message).toContain(`${file}:4: types.c.schemaFile: ${path.join(dir, 'list.yaml')} must hold a JSON Schema object, not a list`);
  });

  it('resolves relative plugin paths from the configuration file and leaves package names alone', async () => {
    const dir = tmp();
    const file = write(dir, 'conf/dispatcher.yaml', 'plugins:\n  collect: ./plugins/collect.js\n  up: ../shared/up.js\n  pkg: "@acme/dispatcher-action"\n');
    const config = await loadConfig({ file, env: {} });
    expect(config.plugins).toEqual({
      collect: path.join(dir, 'conf/plugins/collect.js'),
      up: path.join(dir, 'shared/up.js'),
      pkg: '@acme/dispatcher-action',
    });
    const flagged = await loadConfig({ env: {}, overrides: { plugins: { x: './x.js' } } });
    expect(flagged.plugins.x).toBe(path.resolve('x.js'));
  });
});

describe('freezing', () => {
  it('deep-freezes the configuration', async () => {
    const dir = tmp();
    write(dir, 's.json', '{"type":"object","properties":{"a":{"type":"string"}}}');
    const file = write(dir, 'd.yaml', 'types: { t: { schemaFile: ./s.json } }\nactions: { slack: { nested: { deep: [1] } } }\n');
    const config = await loadConfig({ file, env: {} });
    const reachable: unknown[] = [
      config,
      config.server,
      config.actions,
      config.actions.http,
      config.actions.http.allow,
      config.actions.slack!.nested,
      (config.actions.slack!.nested as { deep: unknown }).deep,
      config.types.t!.schema,
      (config.types.t!.schema as { properties: { a: unknown } }).properties.a,
      config.routes,
      config.routes[0]!.actions[0],
      config.routes[0]!.retry,
      config.routes[0]!.match,
    ];
    for (const value of reachable) expect(Object.isFrozen(value)).toBe(true);
    expect(() => {
      (config.server as { port: number }).port = 1;
    }).toThrow(TypeError);
    expect(() => config.routes.push(config.routes[0]!)).toThrow(TypeError);
  });
});

describe('init-config', () => {
  /** Answers written before the questions are asked, as a pipe would. */
  function answering(lines: string[]): { input: PassThrough; output: PassThrough; said: () => string } {
    const input = new PassThrough();
    input.end(lines.map((l) => `${l}\n`).join(''));
    const output = new PassThrough();
    let text = '';
    output.on('data', (chunk: Buffer) => (text += chunk.toString()));
    return { input, output, said: () => text };
  }

  it('writes a commented starter file that loads, with the example route', async () => {
    const file = path.join(tmp(), 'sub', 'dispatcher.yaml');
    const result = await initConfig({ file });
    expect(result.file).toBe(file);
    const text = fs.readFileSync(file, 'utf8');
    // The first line points editors at the JSON Schema shipped with the package.
    expect(text).toMatch(/^# yaml-language-server: \$schema=\S*docs\/config\.schema\.json\n/);
    expect(text.replace(/^# yaml-language-server: .*\n/, '')).toBe(renderStarterConfig(DEFAULT_ANSWERS));
    // Every section is explained by a comment right above it.
    for (const section of ['server', 'store', 'log', 'intake', 'runner', 'deadLetters', 'metrics', 'actions', 'plugins', 'types', 'routes']) {
      const lines = text.split('\n');
      const at = lines.findIndex((l) => l.startsWith(`${section}:`));
      expect(at, section).toBeGreaterThan(0);
      expect(lines[at - 1], section).toMatch(/^#/);
    }
    const config = await loadConfig({ file, env: {} });
    expect(config.routes.map((r) => r.name)).toEqual(['example', 'page-critical']);
    const page = config.routes[1]!;
    expect(page).toMatchObject({
      match: { type: 'alert.raised', topic: 'soar.*.noc.#', data: { severity: ['critical'] } },
      retry: { attempts: 5, backoff: 1000, maxBackoff: 300_000, maxAge: 86_400_000 },
      timeout: 30_000,
      deadline: 3_600_000,
      concurrency: 10,
      orderingKey: '{{ subject }}',
      labels: { team: 'noc' },
    });
    expect(config.types['alert.raised']!.schema).toMatchObject({ required: ['severity', 'title'] });
    // Apart from the routes and types, the starter holds exactly the defaults.
    const defaults = await loadConfig({ env: {} });
    expect({ ...config, routes: [], types: {} }).toEqual({ ...defaults, routes: [], types: {} });
  });

  it('with yes, takes the defaults without asking', async () => {
    const file = path.join(tmp(), 'dispatcher.yaml');
    const input = new PassThrough(); // never answers: asking would hang
    const output = new PassThrough();
    await initConfig({ file, interactive: true, yes: true, input, output });
    expect(output.read()).toBeNull();
    expect(fs.readFileSync(file, 'utf8').replace(/^# yaml-language-server: .*\n/, '')).toBe(renderStarterConfig(DEFAULT_ANSWERS));
  }, 5000);

  it('interactive: asks for port, store, example route and webhook, and writes a file that loads', async () => {
    const file = path.join(tmp(), 'dispatcher.yaml');
    const { input, output, said } = answering(['abc', '9191', 'mysql://nope', 'postgres://app@db:5432/app', 'y', 'http://127.0.0.1:9000/hook?${x}']);
    await initConfig({ file, interactive: true, input, output });
    expect(said()).toContain('HTTP port [8080]: ');
    expect(said()).toContain('a port is a number from 1 to 65535');
    expect(said()).toContain('write sqlite:<file> or postgres://user@host:5432/db');
    expect(said()).toContain('Webhook URL');
    const config = await loadConfig({ file, env: {} });
    expect(config.server.port).toBe(9191);
    expect(config.store.url).toBe('postgres://app@db:5432/app');
    expect(config.routes[1]!.actions).toEqual([
      { http: { url: 'http://127.0.0.1:9000/hook?${x}', body: { text: '{{ data.title }}' } }, name: 'notify' },
    ]);
    // The webhook is on a loopback address, which the http action blocks unless allowed.
    expect(config.actions.http.allow).toEqual(['127.0.0.1']);
  });

  it('interactive: without the example, and with empty answers taking the defaults', async () => {
    const file = path.join(tmp(), 'dispatcher.yaml');
    const { input, output, said } = answering(['', '', 'n']);
    await initConfig({ file, interactive: true, input, output });
    expect(said()).not.toContain('Webhook URL');
    const config = await loadConfig({ file, env: {} });
    expect(config.server.port).toBe(8080);
    expect(config.store.url).toBe('sqlite:./data/dispatcher.db');
    expect(config.routes.map((r) => r.name)).toEqual(['example']);
    expect(config.types).toEqual({});
    // The example is still in the file, commented out.
    expect(fs.readFileSync(file, 'utf8')).toContain('#   - name: page-critical');
  });

  it('refuses to overwrite an existing file unless forced', async () => {
    const file = write(tmp(), 'dispatcher.yaml', 'server: { port: 1 }\n');
    await expect(initConfig({ file })).rejects.toThrow(/already exists/);
    // Refused before asking anything.
    const { input, output, said } = answering(['9999', '', '', '']);
    await expect(initConfig({ file, interactive: true, input, output })).rejects.toThrow(DispatcherError);
    expect(said()).toBe('');
    expect(fs.readFileSync(file, 'utf8')).toBe('server: { port: 1 }\n');
    await initConfig({ file, force: true });
    expect((await loadConfig({ file, env: {} })).server.port).toBe(8080);
  });
});

describe('docs', () => {
  const docs = fileURLToPath(new URL('../docs/', import.meta.url));

  it('docs/config.schema.json and docs/configuration.md are what src/config/docs.ts generates', () => {
    const hint = 'stale docs: run `npm run build && node dist/config/docs.js`';
    expect(fs.readFileSync(path.join(docs, 'config.schema.json'), 'utf8'), hint).toBe(renderSchemaJson());
    expect(fs.readFileSync(path.join(docs, 'configuration.md'), 'utf8'), hint).toBe(renderConfigurationReference());
  });

  it('the published JSON Schema refuses what the loader refuses: an unknown action type, an http action without url', async () => {
    const { Ajv } = await import('ajv');
    const { parse } = await import('yaml');
    const validate = new Ajv({ allErrors: true, strict: false }).compile(JSON.parse(fs.readFileSync(path.join(docs, 'config.schema.json'), 'utf8')));
    const valid = (text: string) => validate(parse(text));
    // The starter configuration, as init-config writes it, passes.
    expect(valid(renderStarterConfig(DEFAULT_ANSWERS)), JSON.stringify(validate.errors)).toBe(true);
    const route = (action: string) => `routes:\n  - name: r\n    match: { type: x }\n    actions:\n      - ${action}\n`;
    expect(valid(route('noop:'))).toBe(true);
    expect(valid(route('http: { url: "https://example.com/{{ id }}" }'))).toBe(true);
    expect(valid(route('http: { method: POST }'))).toBe(false);
    expect(valid(route('http:'))).toBe(false);
    expect(valid(route('http: { url: "https://x", bogus: 1 }'))).toBe(false);
    expect(valid(route('htp: { url: "https://x" }'))).toBe(false);
    // A plugin brings its own type: then any name is left to the loader.
    expect(valid(`plugins: { custom: ./custom.js }\n${route('custom: { anything: 1 }')}`)).toBe(true);
    // And the loader refuses the same ones.
    const dir = tmp();
    for (const action of ['http: { method: POST }', 'htp: { url: "https://x" }']) {
      const file = path.join(dir, 'c.yaml');
      fs.writeFileSync(file, route(action));
      const { compileForCheck } = await import('../src/cli/routes-test.js');
      await expect(loadConfig({ file, env: {} }).then(compileForCheck)).rejects.toMatchObject({ code: 'config_invalid' });
    }
  });

  it('the reference lists every option with its environment variable and default', () => {
    const reference = renderConfigurationReference();
    for (const option of ENV_OPTIONS) {
      expect(reference).toContain(`| \`${option.path.join('.')}\` |`);
      expect(reference).toContain(`| \`${option.variable}\` |`);
    }
    for (const option of ['routes[].retry.attempts', 'routes[].orderingKey', 'types.<name>.schemaFile', 'plugins.<type>', 'actions.<type>', 'routes[].actions[].name']) {
      expect(reference).toContain(`| \`${option}\` |`);
    }
    expect(reference).toContain('| `runner.lease` | duration | `30s` | `DISPATCHER_RUNNER_LEASE` |');
    for (const topic of ['## Layers and precedence', '## Substitution: `${VAR}`', '## Units']) expect(reference).toContain(topic);
  });
});
