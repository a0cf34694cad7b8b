/**
 * The `dispatcher` executable, run as a user runs it: `node dist/cli/main.js …` in a child process, in a
 * temporary working directory, checking what it prints and its exit code (0 done, 1 failed, 2 usage).
 * The commands that talk to a dispatcher run against a real `dispatcher serve` child on a free port.
 *
 * Needs the build (`npx tsc -p tsconfig.build.json`; `npm test` builds first).
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startReceiver, type Receiver } from './helpers.js';
import { kill, startChild, waitHealthy, type Child } from './child.js';

const MAIN = resolve(import.meta.dirname, '..', 'dist', 'cli', 'main.js');

let dir: string;

beforeAll(() => {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: build first with npx tsc -p tsconfig.build.json`);
  dir = mkdtempSync(join(tmpdir(), 'dispatcher-cli-'));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment without any DISPATCHER_* variable of whoever runs the tests. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DISPATCHER_')) env[k] = v;
  return { ...env, NO_COLOR: '1', ...extra };
}

/** Runs `run` until it exits with `code`; fails with the last result after `timeoutMs`. */
async function waitForExit(run: () => Promise<Result>, code: number, timeoutMs: number): Promise<Result> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await run();
    if (r.code === code) return r;
    if (Date.now() > until) throw new Error(`still exits ${r.code}, not ${code}: ${r.stdout} ${r.stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** Runs the CLI to its end (killed after `timeoutMs`), feeding `input` on standard input. */
function cli(args: string[], options: { input?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<Result> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { cwd: dir, env: cleanEnv(options.env), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`dispatcher ${args.join(' ')} did not end within ${options.timeoutMs ?? 20_000} ms; stdout: ${stdout}; stderr: ${stderr}`));
    }, options.timeoutMs ?? 20_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout, stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** A port nothing listens on right now: bind port 0, read it, let go. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** Polls `read` until `done` holds; fails with the last value seen. */
async function eventually<T>(read: () => Promise<T>, done: (value: T) => boolean, what: string, timeoutMs = 15_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last = await read();
  while (!done(last)) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(last)?.slice(0, 2000)}`);
    await new Promise((r) => setTimeout(r, 100));
    last = await read();
  }
  return last;
}

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function ce(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { specversion: '1.0', id: `e-${Math.random().toString(36).slice(2)}`, source: 'urn:cli-test', type: 'example.hello', data: { hi: 1 }, ...overrides };
}

const ALERT_TYPE = `
types:
  alert.raised:
    schema:
      type: object
      required: [severity, title]
      properties:
        severity: { enum: [low, high, critical] }
        title: { type: string }
`;

// ---------------------------------------------------------------------------------------------------------

describe('usage', () => {
  it('--help exits 0 and lists the commands', async () => {
    const r = await cli(['--help']);
    expect(r.code).toBe(0);
    for (const command of ['serve', 'migrate', 'send', 'runs', 'dlq', 'routes', 'init-config', 'validate-config']) expect(r.stdout).toContain(command);
  });

  it('--help of a subcommand and --version exit 0', async () => {
    const help = await cli(['runs', 'list', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--status');
    const version = await cli(['--version']);
    expect(version.code).toBe(0);
    expect(version.stdout).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('the built executable runs by itself, through its first line, as npx and npm bin links run it', () => {
    // Its first line starts Node with the flags `dispatcher serve` needs (a larger young generation); the
    // build marks the file executable.
    const r = spawnSync(MAIN, ['--version'], { cwd: dir, env: cleanEnv(), encoding: 'utf8' });
    expect(r.error).toBeUndefined();
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^\d+\.\d+\.\d+/);
    expect(readFileSync(MAIN, 'utf8').split('\n', 1)[0]).toMatch(/^#!\/usr\/bin\/env -S node --max-semi-space-size=\d+$/);
  });

  it('an unknown command exits 2 and says so', async () => {
    const r = await cli(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown command 'frobnicate'");
  });

  it('an unknown option exits 2 and says so', async () => {
    const r = await cli(['serve', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown option '--bogus'");
  });

  it('a command group without its subcommand exits 2', async () => {
    const r = await cli(['runs']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('list');
  });

  it('a missing argument exits 2', async () => {
    const r = await cli(['runs', 'get']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("missing required argument 'id'");
  });

  it('runs list --limit abc exits 2, before talking to anyone', async () => {
    const r = await cli(['runs', 'list', '--limit', 'abc', '--url', 'http://127.0.0.1:9']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--limit must be a whole number');
  });

  it('runs list --label without = exits 2', async () => {
    const r = await cli(['runs', 'list', '--label', 'team', '--url', 'http://127.0.0.1:9']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--label expects KEY=VALUE');
  });

  it('send --batch 0 exits 2', async () => {
    const r = await cli(['send', '-', '--batch', '0', '--url', 'http://127.0.0.1:9'], { input: JSON.stringify(ce()) });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--batch must be a whole number of at least 1');
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('init-config and validate-config', () => {
  it('init-config -y writes a starter file, and validate-config says it is valid', async () => {
    const r = await cli(['init-config', '-y', 'starter.yaml']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`wrote ${join(dir, 'starter.yaml')}`);
    const text = readFileSync(join(dir, 'starter.yaml'), 'utf8');
    expect(text).toContain('page-critical');
    const v = await cli(['validate-config', 'starter.yaml']);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout).toMatch(/starter\.yaml: valid \(2 routes, 1 type\)/);
  });

  it('init-config refuses to overwrite an existing file without --force, and leaves it unchanged', async () => {
    const path = file('mine.yaml', '# my own configuration\nserver: { port: 9999 }\n');
    const r = await cli(['init-config', '-y', 'mine.yaml']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('mine.yaml already exists');
    expect(r.stderr).toContain('--force');
    expect(readFileSync(path, 'utf8')).toBe('# my own configuration\nserver: { port: 9999 }\n');

    const forced = await cli(['init-config', '-y', '--force', 'mine.yaml']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(readFileSync(path, 'utf8')).toContain('written by `dispatcher init-config`');
  });

  it('init-config -i takes its answers from standard input, and the file validates', async () => {
    const answers = ['9191', 'sqlite:./answers.db', 'y', 'http://127.0.0.1:9000/hook', './keys/asked.key'].join('\n');
    const r = await cli(['init-config', '-i', 'asked.yaml'], { input: answers });
    expect(r.code, r.stderr).toBe(0);
    for (const question of ['HTTP port', 'Store URL', 'Include the example route', 'Webhook URL', 'Admin API key file']) expect(r.stdout).toContain(question);
    const text = readFileSync(join(dir, 'asked.yaml'), 'utf8');
    // Editors validate it against the JSON Schema shipped with the package.
    const modeline = /^# yaml-language-server: \$schema=(\S+)\n/.exec(text);
    expect(modeline).not.toBeNull();
    expect(existsSync(resolve(dir, modeline![1]!))).toBe(true);
    // The admin key is made at once, readable by its owner only, and named by auth.keyFile.
    expect(text).toContain('keyFile: "./keys/asked.key"');
    expect(r.stdout).toContain('wrote the admin API key to ./keys/asked.key');
    expect(readFileSync(join(dir, 'keys', 'asked.key'), 'utf8')).toMatch(/^[A-Za-z0-9]{43}\n$/);
    expect(statSync(join(dir, 'keys', 'asked.key')).mode & 0o777).toBe(0o600);
    expect(text).toMatch(/^\s+port: 9191\b/m);
    expect(text).toContain('url: "sqlite:./answers.db"');
    expect(text).toContain('url: "http://127.0.0.1:9000/hook"');
    // The loopback webhook is allowlisted, or the example would fail with address_blocked.
    expect(text).toMatch(/allow: \["127\.0\.0\.1"\]/);
    const v = await cli(['validate-config', 'asked.yaml']);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout).toContain('asked.yaml: valid');
  });

  it('init-config -i asks again after a bad answer, and takes defaults for empty ones', async () => {
    const r = await cli(['init-config', '-i', 'asked2.yaml'], { input: 'eighty\n8181\n\nn\n' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('a port is a number from 1 to 65535');
    const text = readFileSync(join(dir, 'asked2.yaml'), 'utf8');
    expect(text).toMatch(/^\s+port: 8181\b/m);
    expect(text).toContain('url: "sqlite:./data/dispatcher.db"');
    // No example route: it is written commented out.
    expect(text).toMatch(/^#\s+- name: page-critical/m);
    const v = await cli(['validate-config', 'asked2.yaml']);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout).toContain('asked2.yaml: valid (1 route, 0 types)');
  });

  const broken: Array<[string, string, RegExp]> = [
    ['an unknown key', 'server:\n  prot: 8080\n', /bad-key\.yaml:2: server\.prot: unknown key "prot" \(did you mean "port"\?\)/],
    ['a bad duration', 'runner:\n  lease: 30 sec\n', /bad-duration\.yaml:2: runner\.lease: must be a duration/],
    [
      'duplicate route names',
      'routes:\n  - { name: twice, match: { type: a }, actions: [ { noop: {} } ] }\n  - { name: twice, match: { type: b }, actions: [ { noop: {} } ] }\n',
      /bad-routes\.yaml:3: routes\[1\]\.name: route name "twice" is used twice/,
    ],
  ];
  it.each(broken.map(([what, text, expected], i) => ({ what, text, expected, name: ['bad-key', 'bad-duration', 'bad-routes'][i]! })))(
    'validate-config exits 1 for $what, naming the file and the path',
    async ({ text, expected, name }) => {
      file(`${name}.yaml`, text);
      const r = await cli(['validate-config', `${name}.yaml`]);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(expected);
    },
  );

  it('validate-config reports every problem of every stage at once, each with file, line and path', async () => {
    file(
      'bad-all.yaml',
      [
        'server:',
        '  prot: 1', // 2: schema
        'runner:',
        '  lease: soon', // 4: schema
        'types:',
        '  alert.raised:',
        '    schema:',
        '      type: object',
        '      properties:',
        '        severity: { type: strin }', // 10: a type schema that is not JSON Schema
        '      required: severity', // 11
        '  note: { schema: { $ref: "#/nowhere" } }', // 12: does not compile
        'routes:',
        '  - { name: x, match: { type: a }, actions: [ { noop: {} } ] }',
        '  - { name: x, match: { type: b }, actions: [ { noop: {} } ] }', // 15: duplicate name
        '  - name: hook',
        '    match: { type: c }',
        '    actions:',
        '      - http:',
        '          url: "https://example.com/{{ data.id "', // 20: template
        '      - teleport: {}', // 21: unknown action type
      ].join('\n'),
    );
    const r = await cli(['validate-config', '--config', 'bad-all.yaml']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('(8 problems)');
    const lines = r.stderr.split('\n').map((l) => l.trim());
    const expected = [
      'bad-all.yaml:2: server.prot: unknown key "prot"',
      'bad-all.yaml:4: runner.lease: must be a duration',
      'bad-all.yaml:10: types["alert.raised"].schema.properties.severity.type: must be one of array, boolean, integer, null, number, object or string (or a list of them), got "strin"',
      'bad-all.yaml:11: types["alert.raised"].schema.required: must be array, got "severity"',
      'bad-all.yaml:12: types.note.schema: the schema does not compile: can\'t resolve reference #/nowhere',
      'bad-all.yaml:15: routes[1].name: route name "x" is used twice',
      'bad-all.yaml:20: routes[2].actions[0].http.url: the template does not parse: output "{{ data.id " not closed',
      'bad-all.yaml:21: routes[2].actions[1]: unknown action type "teleport"',
    ];
    for (const line of expected) expect(lines.some((l) => l.startsWith(line)), `${line}\n${r.stderr}`).toBe(true);
    // In the file's order.
    expect(expected.map((line) => lines.findIndex((l) => l.startsWith(line)))).toEqual([...expected.keys()].map((i) => lines.findIndex((l) => l.startsWith(expected[i]!))).sort((a, b) => a - b));
  });

  it('validate-config warns of a schema format that nothing checks, and still passes', async () => {
    file('format.yaml', 'types:\n  contact:\n    schema: { type: object, properties: { mail: { type: string, format: emial } } }\n');
    const r = await cli(['validate-config', 'format.yaml']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('warning: format.yaml:3: types.contact.schema: format "emial" is not one the validator knows');
    expect(r.stdout).toContain('format.yaml: valid (1 route, 1 type)');
  });

  it('validate-config checks routes as serve would (an unknown action type)', async () => {
    file('bad-action.yaml', 'routes:\n  - { name: r, match: { type: a }, actions: [ { teleport: {} } ] }\n');
    const r = await cli(['validate-config', 'bad-action.yaml']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('routes[0].actions[0]: unknown action type "teleport"');
  });

  it('validate-config, routes test and serve refuse a template that does not parse, naming route, action and parameter', async () => {
    file('bad-template.yaml', 'routes:\n  - name: r\n    match: { type: a }\n    actions:\n      - http: { url: "https://example.com/{{ data.id ", body: { text: "{{ data.x | shout }}" } }\n');
    const expected = [
      'routes[0].actions[0].http.url: the template does not parse: output "{{ data.id " not closed',
      'routes[0].actions[0].http.body.text: the template does not parse: undefined filter: shout',
    ];
    const validate = await cli(['validate-config', 'bad-template.yaml']);
    expect(validate.code).toBe(1);
    for (const line of expected) expect(validate.stderr).toContain(line);
    const event = file('template-event.json', JSON.stringify(ce({ type: 'a' })));
    const test = await cli(['routes', 'test', event, '--config', 'bad-template.yaml']);
    expect(test.code).toBe(1);
    expect(test.stderr).toContain(expected[0]);
    const serve = await cli(['serve', '--config', 'bad-template.yaml'], { env: { DISPATCHER_STORE_URL: 'sqlite::memory:', DISPATCHER_SERVER_PORT: '0' } });
    expect(serve.code).toBe(1);
    expect(serve.stderr).toContain(expected[1]);
  });

  it('validate-config of a missing file exits 1 naming it; with no file at all it exits 2', async () => {
    const missing = await cli(['validate-config', 'nowhere.yaml']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('nowhere.yaml');
    const none = await cli(['validate-config']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('name a file');
  });

  it('validate-config takes DISPATCHER_CONFIG and substitutes ${VAR}', async () => {
    file('env.yaml', 'server:\n  port: ${CLI_TEST_PORT}\n');
    const ok = await cli(['validate-config'], { env: { DISPATCHER_CONFIG: 'env.yaml', CLI_TEST_PORT: '8123' } });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('env.yaml: valid');
    const unset = await cli(['validate-config', 'env.yaml']);
    expect(unset.code).toBe(1);
    expect(unset.stderr).toContain('CLI_TEST_PORT');
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('migrate', () => {
  it('creates the SQLite file and its schema, and is safe to run again', async () => {
    const db = join(dir, 'migrated', 'x.db');
    const r = await cli(['migrate', '--store', `sqlite:${db}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('the sqlite store is up to date');
    expect(existsSync(db)).toBe(true);
    const again = await cli(['migrate', '--store', `sqlite:${db}`]);
    expect(again.code, again.stderr).toBe(0);
  });

  it('a store URL that is neither sqlite nor postgres exits 1', async () => {
    const r = await cli(['migrate', '--store', 'mysql://localhost/x']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('store.url');
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('routes test', () => {
  let config: string;
  beforeAll(() => {
    config = file(
      'routes.yaml',
      `${ALERT_TYPE}
routes:
  - name: example
    match: { type: "example.*" }
    actions: [ { noop: {} } ]
  - name: page-critical
    match: { type: alert.raised, topic: "soar.*.noc.#", data: { severity: [critical] } }
    actions:
      - { noop: {}, name: page }
      - { noop: {}, name: ticket }
`,
    );
  });

  it('shows a matching route with ✓, why it matches, and its actions', async () => {
    const e = file('match.json', JSON.stringify(ce({ type: 'alert.raised', topic: 'soar.eu.noc.db', data: { severity: 'critical', title: 'disk' } }), null, 2));
    const r = await cli(['routes', 'test', e, '--config', config]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('✓ page-critical');
    expect(r.stdout).toContain('type "alert.raised" matches "alert.raised"');
    expect(r.stdout).toContain('topic "soar.eu.noc.db" matches "soar.*.noc.#"');
    expect(r.stdout).toContain('data.severity: "critical" matches [critical]');
    expect(r.stdout).toContain('→ page (noop)');
    expect(r.stdout).toContain('→ ticket (noop)');
    expect(r.stdout).toContain('✗ example');
    expect(r.stdout).toContain('type "alert.raised" does not match "example.*"');
    expect(r.stdout).toContain('1 route matches');
  });

  it('shows why no route matches a non-matching event', async () => {
    const e = file('nomatch.json', JSON.stringify(ce({ type: 'alert.raised', topic: 'soar.eu.sec.db', data: { severity: 'low', title: 'meh' } })));
    const r = await cli(['routes', 'test', e, '--config', config]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('✓');
    expect(r.stdout).toContain('✗ page-critical');
    expect(r.stdout).toContain('topic "soar.eu.sec.db" does not match "soar.*.noc.#"');
    expect(r.stdout).toContain('data.severity: "low" is not one of [critical]');
    expect(r.stdout).toContain('no route matches: the event would be recorded as unrouted');
  });

  it('--json prints one parseable document', async () => {
    const e = file('match2.json', JSON.stringify(ce({ type: 'example.hi' })));
    const r = await cli(['routes', 'test', e, '--config', config, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const body = JSON.parse(r.stdout);
    expect(body.valid).toBe(true);
    expect(body.problems).toEqual([]);
    expect(body.routes).toEqual([
      { route: 'example', matched: true, reasons: ['type "example.hi" matches "example.*"'], actions: ['noop (noop)'] },
      { route: 'page-critical', matched: false, reasons: expect.arrayContaining([expect.stringContaining('does not match')]), actions: [] },
    ]);
  });

  it('an event that fails its type schema exits 1 and names the problem', async () => {
    const e = file('invalid.json', JSON.stringify(ce({ type: 'alert.raised', topic: 'soar.eu.noc.db', data: { severity: 'apocalyptic' } })));
    const r = await cli(['routes', 'test', e, '--config', config]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('the event would be refused');
    expect(r.stdout).toContain("/data: must have required property 'title'");
    expect(r.stdout).toContain('/data/severity: must be equal to one of the allowed values');

    const json = await cli(['routes', 'test', e, '--config', config, '--json']);
    expect(json.code).toBe(1);
    const body = JSON.parse(json.stdout);
    expect(body.valid).toBe(false);
    expect(body.problems).toContainEqual({ pointer: '/data/severity', message: expect.stringContaining('allowed values') });
  });

  it('an event that is not a CloudEvent exits 1 and names the attribute', async () => {
    const e = file('noenvelope.json', JSON.stringify({ specversion: '1.0', source: 'urn:x', type: 'example.hi' }));
    const r = await cli(['routes', 'test', e, '--config', config]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('/id: required attribute is missing');
  });

  it('reads the event from standard input with -', async () => {
    const r = await cli(['routes', 'test', '-', '--config', config], { input: JSON.stringify(ce({ type: 'example.stdin' })) });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('✓ example');
  });

  it('more than one event, or a missing file, exits 1', async () => {
    const two = file('two.json', JSON.stringify([ce(), ce()]));
    const r = await cli(['routes', 'test', two, '--config', config]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('expected one event');
    const missing = await cli(['routes', 'test', 'nowhere.json', '--config', config]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('cannot read nowhere.json');
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('against a served dispatcher', () => {
  let server: ChildProcess | undefined;
  let serverExit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  let serverOutput = '';
  let url: string;
  let receiver: Receiver;
  let receiverStatus = 404;

  beforeAll(async () => {
    receiver = await startReceiver((_req, _body, res) => {
      res.statusCode = receiverStatus;
      res.end(receiverStatus === 200 ? 'ok' : 'no such hook');
    });
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const config = file(
      'serve.yaml',
      `server: { host: 127.0.0.1, port: ${port} }
store: { url: "sqlite:${join(dir, 'serve', 'dispatcher.db')}" }
log: { level: info }
runner: { poll: 100ms, sweepInterval: 200ms, shutdownTimeout: 2s }
actions:
  http: { allow: ["127.0.0.1/32"] }
${ALERT_TYPE}
routes:
  - name: example
    match: { type: "example.*" }
    actions: [ { noop: {} } ]
  - name: hook
    match: { type: hook.fire }
    actions: [ { http: { url: "${receiver.url}/hook" }, name: call } ]
    retry: { attempts: 1 }
`,
    );
    const child = spawn(process.execPath, [MAIN, 'serve', '--config', config], { cwd: dir, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    server = child;
    child.stdout.setEncoding('utf8').on('data', (c: string) => (serverOutput += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (serverOutput += c));
    serverExit = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })));
    let exited = false;
    void serverExit.then(() => (exited = true));
    const until = Date.now() + 20_000;
    for (;;) {
      if (exited) throw new Error(`dispatcher serve exited before it was healthy:\n${serverOutput}`);
      try {
        const res = await fetch(`${url}/healthz`);
        if (res.ok) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > until) throw new Error(`dispatcher serve was not healthy within 20 s:\n${serverOutput}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  afterAll(async () => {
    if (server !== undefined && server.exitCode === null && server.signalCode === null) {
      server.kill('SIGKILL');
      await Promise.race([serverExit, new Promise((r) => setTimeout(r, 5_000))]);
    }
    await receiver?.close();
  });

  async function api(path: string, init?: RequestInit): Promise<any> {
    // The admin key the server generated on its first start (no credential is configured), as the CLI reads it.
    const key = readFileSync(join(dir, 'data', 'admin.key'), 'utf8').trim();
    const res = await fetch(`${url}${path}`, { ...init, headers: { ...(init?.headers as Record<string, string>), authorization: `PSK ${key}` } });
    return { status: res.status, body: await res.json() };
  }

  async function runsJson(...args: string[]): Promise<any> {
    const r = await cli(['runs', 'list', '--url', url, '--json', ...args]);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout);
  }

  const batch = Array.from({ length: 50 }, (_, i) => ce({ id: `bulk-${i}`, data: { n: i } }));
  const jsonl = () => file('bulk.jsonl', `${batch.map((e) => JSON.stringify(e)).join('\n')}\n`);

  it('send: a JSON Lines file of 50 events is accepted, with a summary', async () => {
    const r = await cli(['send', jsonl(), '--url', url]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^sent 50 events in \d+\.\d\d s: 50 accepted, 0 duplicates, 0 refused, 50 runs planned\n$/);
  });

  it('send: the same file again is 50 duplicates and plans no runs', async () => {
    const r = await cli(['send', jsonl(), '--url', url, '--batch', '7']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('0 accepted, 50 duplicates, 0 refused, 0 runs planned');
  });

  it('send -: a JSON array from standard input', async () => {
    const events = [ce({ id: 'stdin-1' }), ce({ id: 'stdin-2' }), ce({ id: 'stdin-3', type: 'nobody.cares' })];
    const r = await cli(['send', '-', '--url', url], { input: JSON.stringify(events, null, 2) });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('sent 3 events');
    expect(r.stdout).toContain('3 accepted, 0 duplicates, 0 refused, 2 runs planned');
  });

  it('send: one pretty-printed event from standard input, the URL from DISPATCHER_URL', async () => {
    const r = await cli(['send'], { input: JSON.stringify(ce({ id: 'env-url' }), null, 2), env: { DISPATCHER_URL: url } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('1 accepted');
  });

  it('send: a line that is not JSON is named and skipped, the others are sent, and send exits 1', async () => {
    const path = file('badline.jsonl', [JSON.stringify(ce({ id: 'before-bad' })), '', '{"specversion": "1.0", oops', JSON.stringify(ce({ id: 'after-bad' }))].join('\n'));
    const r = await cli(['send', path, '--url', url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('badline.jsonl line 3: not valid JSON, not sent');
    expect(r.stdout).toMatch(/^sent 2 events in \d+\.\d\d s: 2 accepted, 0 duplicates, 0 refused, 2 runs planned; 1 line not valid JSON$/m);
    for (const id of ['before-bad', 'after-bad']) expect((await api(`/v1/events?filter[id]=${id}`)).body.meta.total).toBe(1);
  });

  it('send: a JSON array that stops parsing sends what came before and names the line', async () => {
    const text = `[\n${JSON.stringify(ce({ id: 'array-before' }))},\n{"specversion": oops}\n]`;
    const r = await cli(['send', '-', '--url', url], { input: text });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('stdin line 3: not valid JSON');
    expect(r.stderr).toContain('1 event before it sent (1 accepted');
    expect((await api('/v1/events?filter[id]=array-before')).body.meta.total).toBe(1);
  });

  it('send: a batch keeps its good events; each refused one is named with its line and kept as a dead letter, the rest is sent, exit 1', async () => {
    const lines = [
      ce({ id: 'keep-1' }),
      ce({ id: 'refuse-1', type: 'alert.raised', data: { severity: 'nope', title: 't' } }),
      ce({ id: 'keep-2' }),
      ce({ id: 'refuse-2', type: 'alert.raised', data: { severity: 'low', title: 1 } }),
      ce({ id: 'refuse-3', type: 'alert.raised', data: {} }),
      ce({ id: 'keep-3' }),
    ];
    // Batches of two: each one taken in part.
    const path = file('partial.jsonl', lines.map((e) => JSON.stringify(e)).join('\n'));
    const r = await cli(['send', path, '--url', url, '--batch', '2']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('sent 6 events');
    expect(r.stdout).toContain('3 accepted, 0 duplicates, 3 refused, 3 runs planned');
    expect(r.stderr).toMatch(/event 2 \(line 2\): refused, schema_violation: \/data\/severity: .* \(dead letter \S+\)/);
    expect(r.stderr).toMatch(/event 4 \(line 4\): refused, schema_violation: \/data\/title/);
    expect(r.stderr).toMatch(/event 5 \(line 5\): refused, schema_violation/);
    expect(r.stderr).toContain('3 events refused (kept as dead letters: dispatcher dlq list)');
    for (const id of ['keep-1', 'keep-2', 'keep-3']) expect((await api(`/v1/events?filter[id]=${id}`)).body.meta.total).toBe(1);
    for (const id of ['refuse-1', 'refuse-2', 'refuse-3']) expect((await api(`/v1/events?filter[id]=${id}`)).body.meta.total).toBe(0);
    const deadLetter = /event 2 \(line 2\).*\(dead letter (\S+)\)/.exec(r.stderr)![1]!;
    const { body: dl } = await api(`/v1/dead-letters/${deadLetter}`);
    expect(JSON.parse(dl.raw).id).toBe('refuse-1');
    expect(dl.details).toEqual({ index: 1, problems: [expect.objectContaining({ pointer: '/data/severity' })] });
  });

  it('send: a batch whose every event is bad is refused whole; send goes on with the next batch and exits 1', async () => {
    const bad = ce({ id: 'all-bad-1', type: 'alert.raised', data: { severity: 'nope', title: 't' } });
    const path = file('refused.jsonl', [bad, ce({ id: 'all-bad-2', specversion: '0.3' }), ce({ id: 'next-batch' })].map((e) => JSON.stringify(e)).join('\n'));
    const r = await cli(['send', path, '--url', url, '--batch', '2']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('event 1 (line 1) to event 2 (line 2): 2 events refused, schema_violation');
    expect(r.stderr).toMatch(/event 1 \(line 1\): \/data\/severity: must be equal to one of the allowed values/);
    expect(r.stderr).toMatch(/event 2 \(line 2\): \/specversion: /);
    expect(r.stdout).toContain('1 accepted, 0 duplicates, 2 refused');
    expect((await api('/v1/events?filter[id]=next-batch')).body.meta.total).toBe(1);
  });

  it('send: an empty input or a missing file exits 1', async () => {
    const empty = await cli(['send', '-', '--url', url], { input: '  \n' });
    expect(empty.code).toBe(1);
    expect(empty.stderr).toContain('no events to send');
    const missing = await cli(['send', 'nowhere.jsonl', '--url', url]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('cannot read nowhere.jsonl');
  });

  it('runs list --status success --json eventually lists every run', async () => {
    const body = await eventually(
      () => runsJson('--status', 'success', '--route', 'example', '--limit', '100'),
      (b) => b.meta.total >= 53,
      '53 successful runs of the example route',
    );
    expect(body.data.length).toBe(body.meta.total);
    for (const run of body.data) {
      expect(run.status).toBe('success');
      expect(run.route).toBe('example');
    }
    expect(body.links.first).toContain('/v1/runs?');
  });

  it('runs list prints a table, filters and pages', async () => {
    const r = await cli(['runs', 'list', '--url', url, '--status', 'success', '--limit', '5', '--offset', '2', '--sort', 'created_at']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+STATUS\s+ROUTE\s+ACTION\s+EVENT_TYPE\s+ATTEMPTS\s+CREATED_AT$/);
    expect(lines).toHaveLength(7);
    expect(lines[6]).toMatch(/^5 of \d+ runs$/);
    const none = await runsJson('--type', 'nobody.cares');
    expect(none.meta.total).toBe(0);
    // One event's runs; a time window in the future holds none.
    const all = await runsJson('--status', 'success', '--limit', '1');
    const one = await runsJson('--event', all.data[0].event);
    expect(one.data.map((x: { id: string }) => x.id)).toEqual([all.data[0].id]);
    expect((await runsJson('--since', new Date(Date.now() + 60_000).toISOString())).meta.total).toBe(0);
    expect((await runsJson('--until', new Date(Date.now() + 60_000).toISOString())).meta.total).toBeGreaterThan(0);
  });

  it('runs list with a value the API refuses exits 1 with its reason', async () => {
    const r = await cli(['runs', 'list', '--url', url, '--status', 'finished']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('HTTP 400 bad_request: filter[status]: unknown status "finished"');
  });

  it('runs get ID prints the run and its attempts; --json parses', async () => {
    const { data } = await runsJson('--status', 'success', '--limit', '1');
    const id = data[0].id as string;
    const r = await cli(['runs', 'get', id, '--url', url]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^id\\s+${id}$`, 'm'));
    expect(r.stdout).toMatch(/^status\s+success$/m);
    expect(r.stdout).toMatch(/^N\s+OUTCOME\s+STARTED_AT\s+ENDED_AT\s+HTTP_STATUS\s+ERROR_CODE\s+ERROR_MESSAGE$/m);
    expect(r.stdout).toMatch(/^1\s+success\s+\d{4}-/m);

    const json = await cli(['runs', 'get', id, '--url', url, '--json']);
    expect(json.code, json.stderr).toBe(0);
    const run = JSON.parse(json.stdout);
    expect(run.id).toBe(id);
    expect(run.attempts_log).toEqual([expect.objectContaining({ n: 1, outcome: 'success' })]);
  });

  it('runs get of an unknown id exits 1 with not_found', async () => {
    const r = await cli(['runs', 'get', 'no-such-run', '--url', url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('HTTP 404 not_found: no run no-such-run');
  });

  let intakeDeadLetter: string;

  it('dlq list shows an event refused at intake', async () => {
    const { status } = await api('/v1/events', {
      method: 'POST',
      headers: { 'content-type': 'application/cloudevents+json' },
      body: JSON.stringify(ce({ id: 'bad-alert', type: 'alert.raised', data: { severity: 'apocalyptic', title: 'x' } })),
    });
    expect(status).toBe(400);
    const r = await cli(['dlq', 'list', '--url', url, '--origin', 'intake', '--reason', 'schema_violation']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ID\s+ORIGIN\s+SOURCE\s+REASON\s+ATTEMPTS\s+LAST_SEEN_AT\s+ERROR$/m);
    expect(r.stdout).toMatch(/intake\s+http\s+schema_violation\s+1\s+\S+\s+\/data\/severity: must be equal to one of the allowed values/);

    const json = await cli(['dlq', 'list', '--url', url, '--origin', 'intake', '--reason', 'schema_violation', '--json']);
    const body = JSON.parse(json.stdout);
    const dl = body.data.find((d: any) => JSON.parse(d.raw).id === 'bad-alert');
    expect(dl).toBeDefined();
    intakeDeadLetter = dl.id;
    // Not replayed yet: listed under --replayed no, not under --replayed yes.
    const ids = async (flag: string) => JSON.parse((await cli(['dlq', 'list', '--url', url, '--replayed', flag, '--limit', '100', '--json'])).stdout).data.map((d: any) => d.id);
    expect(await ids('no')).toContain(dl.id);
    expect(await ids('yes')).not.toContain(dl.id);
    expect((await cli(['dlq', 'list', '--url', url, '--replayed', 'maybe'])).code).toBe(2);
  });

  it('dlq replay of a dead letter that is still bad exits 1, and counts the attempt', async () => {
    const r = await cli(['dlq', 'replay', intakeDeadLetter, '--url', url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${intakeDeadLetter}: POST /v1/dead-letters/${intakeDeadLetter}/replay: HTTP 400 schema_violation`);
    expect(r.stderr).toContain('1 of 1 replay failed');
    const { body } = await api(`/v1/dead-letters/${intakeDeadLetter}`);
    expect(body.attempts).toBe(2);
  });

  it('dlq replay of an unknown id exits 1', async () => {
    const r = await cli(['dlq', 'replay', 'no-such-dead-letter', '--url', url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('HTTP 404 not_found');
  });

  it('dlq list --origin bogus exits 1 with the API reason', async () => {
    const r = await cli(['dlq', 'list', '--url', url, '--origin', 'bogus']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('filter[origin]: must be intake or run');
  });

  it('dlq replay of a failed run queues it again, and it succeeds once the receiver is fixed', async () => {
    receiverStatus = 404;
    const sent = await cli(['send', '-', '--url', url], { input: JSON.stringify(ce({ id: 'hook-1', type: 'hook.fire' })) });
    expect(sent.code, sent.stderr).toBe(0);
    expect(sent.stdout).toContain('1 accepted, 0 duplicates, 0 refused, 1 run planned');

    // 404 is not retryable: one attempt, failure, and a run dead letter.
    const failed = await eventually(() => runsJson('--route', 'hook'), (b) => b.data.length === 1 && b.data[0].status === 'failure', 'the hook run to fail');
    const runId = failed.data[0].id as string;
    expect(failed.data[0].error.code).toBe('http_status');

    const listed = await cli(['dlq', 'list', '--url', url, '--origin', 'run', '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    const dl = JSON.parse(listed.stdout).data.find((d: any) => d.run_id === runId);
    expect(dl).toMatchObject({ origin: 'run', source: 'hook', reason: 'http_status' });
    const table = await cli(['dlq', 'list', '--url', url, '--origin', 'run']);
    expect(table.stdout).toMatch(new RegExp(`^${dl.id}\\s+run\\s+hook\\s+http_status\\s+1\\s`, 'm'));

    receiverStatus = 200;
    const replayed = await cli(['dlq', 'replay', dl.id, '--url', url]);
    expect(replayed.code, replayed.stderr).toBe(0);
    expect(replayed.stdout).toBe(`${dl.id}: replayed, run ${runId} queued again\n`);

    const done = await eventually(
      async () => JSON.parse((await cli(['runs', 'get', runId, '--url', url, '--json'])).stdout),
      (run) => run.status === 'success',
      'the replayed run to succeed',
    );
    expect(done.attempts_log.map((a: any) => [a.n, a.outcome, a.http_status])).toEqual([
      [1, 'failure', 404],
      [2, 'success', 200],
    ]);
    const shown = await cli(['runs', 'get', runId, '--url', url]);
    expect(shown.stdout).toMatch(/^1\s+failure\s+\S+\s+\S+\s+404\s+http_status\s/m);
    expect(shown.stdout).toMatch(/^2\s+success\s+\S+\s+\S+\s+200\s/m);
    expect(receiver.requests.filter((q) => q.url === '/hook')).toHaveLength(2);

    const { body } = await api(`/v1/dead-letters/${dl.id}`);
    expect(body.replayed_at).not.toBeNull();
  });

  it('a run that is not failed cannot be replayed again: exit 1 with invalid_state', async () => {
    const listed = JSON.parse((await cli(['dlq', 'list', '--url', url, '--origin', 'run', '--json'])).stdout);
    const r = await cli(['dlq', 'replay', listed.data[0].id, '--url', url]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('HTTP 409 invalid_state');
  });

  it('runs retry queues a failed run again; runs cancel of a finished or unknown run exits 1 naming each', async () => {
    receiverStatus = 404;
    const sent = await cli(['send', '-', '--url', url], { input: JSON.stringify(ce({ id: 'hook-retry', type: 'hook.fire' })) });
    expect(sent.code, sent.stderr).toBe(0);
    const event = (await api('/v1/events?filter[id]=hook-retry')).body.data[0].id as string;
    const failed = await eventually(() => runsJson('--event', event), (b) => b.data[0]?.status === 'failure', 'the hook run to fail');
    const runId = failed.data[0].id as string;
    receiverStatus = 200;
    const retried = await cli(['runs', 'retry', runId, '--url', url]);
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stdout).toMatch(new RegExp(`^${runId}: queued again \\(\\w+, up to \\d+ attempts\\)$`, 'm'));
    await eventually(() => runsJson('--event', event), (b) => b.data[0]?.status === 'success', 'the retried run to succeed');

    const canceled = await cli(['runs', 'cancel', runId, 'no-such-run', '--url', url]);
    expect(canceled.code).toBe(1);
    expect(canceled.stderr).toContain(`${runId}: POST /v1/runs/${runId}/cancel: HTTP 409 invalid_state`);
    expect(canceled.stderr).toContain('no-such-run: POST /v1/runs/no-such-run/cancel: HTTP 404 not_found');
    expect(canceled.stderr).toContain('2 of 2 runs could not be canceled');
  });

  it('events list filters by type, source, routing and time; events get shows an event with its runs', async () => {
    const r = await cli(['events', 'list', '--url', url, '--type', 'example.hello', '--limit', '3', '--since', '1h']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+TYPE\s+SOURCE\s+CE_ID\s+INPUT\s+RUNS\s+RECEIVED_AT$/);
    expect(lines).toHaveLength(5);
    expect(lines[4]).toMatch(/^3 of \d+ events$/);
    const json = JSON.parse((await cli(['events', 'list', '--url', url, '--id', 'bulk-7', '--json'])).stdout);
    expect(json.data).toHaveLength(1);
    expect(json.data[0].event.data).toEqual({ n: 7 });
    const unrouted = JSON.parse((await cli(['events', 'list', '--url', url, '--routed', 'no', '--limit', '100', '--json'])).stdout);
    expect(unrouted.data.map((e: any) => e.event.id)).toContain('stdin-3');
    expect(unrouted.data.every((e: any) => e.run_count === 0)).toBe(true);
    // Nothing was received before an hour ago, nor after a minute from now.
    expect(JSON.parse((await cli(['events', 'list', '--url', url, '--until', '1h', '--json'])).stdout).meta.total).toBe(0);
    expect(JSON.parse((await cli(['events', 'list', '--url', url, '--since', new Date(Date.now() + 60_000).toISOString(), '--json'])).stdout).meta.total).toBe(0);

    const shown = await cli(['events', 'get', json.data[0].id, '--url', url]);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(new RegExp(`^id\\s+${json.data[0].id}$`, 'm'));
    expect(shown.stdout).toMatch(/^ID\s+STATUS\s+ROUTE\s+ACTION\s+ATTEMPTS\s+CREATED_AT$/m);
    expect(shown.stdout).toMatch(/\s+success\s+example\s+/);
    const missing = await cli(['events', 'get', 'no-such-event', '--url', url]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('HTTP 404 not_found');
  });

  it('dlq get shows the refused bytes; dlq delete removes a dead letter', async () => {
    const got = await cli(['dlq', 'get', intakeDeadLetter, '--url', url]);
    expect(got.code, got.stderr).toBe(0);
    expect(got.stdout).toMatch(/^reason\s+schema_violation$/m);
    expect(got.stdout).toContain('"id":"bad-alert"');
    const deleted = await cli(['dlq', 'delete', intakeDeadLetter, 'no-such-dead-letter', '--url', url]);
    expect(deleted.code).toBe(1);
    expect(deleted.stdout).toBe(`${intakeDeadLetter}: deleted\n`);
    expect(deleted.stderr).toContain('1 of 2 dead letters could not be deleted');
    expect((await cli(['dlq', 'get', intakeDeadLetter, '--url', url])).code).toBe(1);
  });

  it('dlq replay by filter replays every matching dead letter not yet replayed, and says how many', async () => {
    receiverStatus = 500;
    // Only what this test makes: the dead letters of earlier tests were last seen before.
    const since = new Date().toISOString();
    const ids = ['hook-many-1', 'hook-many-2', 'hook-many-3'];
    const sent = await cli(['send', '-', '--url', url], { input: JSON.stringify(ids.map((id) => ce({ id, type: 'hook.fire' }))) });
    expect(sent.code, sent.stderr).toBe(0);
    const letters = await eventually(
      () => api(`/v1/dead-letters?filter[origin]=run&filter[replayed]=false&filter[reason]=http_status&filter[last_seen_at][gte]=${since}`),
      (r) => r.body.meta.total === 3,
      'three run dead letters',
    );
    const expected = letters.body.meta.total as number;
    receiverStatus = 200;
    const replayed = await cli(['dlq', 'replay', '--url', url, '--origin', 'run', '--reason', 'http_status', '--since', since]);
    expect(replayed.code, replayed.stderr).toBe(0);
    expect(replayed.stderr).toContain(`replaying ${expected} dead letters`);
    expect(replayed.stdout).toBe(`${expected} dead letters replayed, 0 failed\n`);
    for (const id of ids) {
      const event = (await api(`/v1/events?filter[id]=${id}`)).body.data[0].id as string;
      await eventually(() => runsJson('--event', event), (b) => b.data[0]?.status === 'success', `the run of ${id} to succeed`);
    }
    const again = await cli(['dlq', 'replay', '--url', url, '--origin', 'run', '--reason', 'http_status', '--since', since]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toBe('no dead letter matches\n');
  });

  it('runs tail follows run events as they happen, and stops after --max', async () => {
    const tail = spawn(process.execPath, [MAIN, 'runs', 'tail', '--url', url, '--route', 'example', '--max', '2', '--json'], { cwd: dir, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    tail.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    tail.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    const exited = new Promise<number | null>((r) => tail.on('exit', (code) => r(code)));
    // Connected once the server counts the stream: send until the tail has seen its events.
    const until = Date.now() + 15_000;
    let n = 0;
    while (out.split('\n').filter(Boolean).length < 2 && Date.now() < until) {
      await cli(['send', '-', '--url', url], { input: JSON.stringify(ce({ id: `tail-${n++}` })) });
      await new Promise((r) => setTimeout(r, 300));
    }
    expect(await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]), err).toBe(0);
    const lines = out.trimEnd().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(2);
    for (const l of lines) {
      expect(l.event).toMatch(/^run\.(create|update)$/);
      expect(l.run.route).toBe('example');
      expect(l.seq).toBeGreaterThan(0);
    }
    expect(lines[1].seq).toBeGreaterThan(lines[0].seq);
    // Resuming after the first one's sequence number gives the second one first.
    const resumed = await cli(['runs', 'tail', '--url', url, '--route', 'example', '--after', String(lines[0].seq), '--max', '1', '--json']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(JSON.parse(resumed.stdout).seq).toBe(lines[1].seq);
  });

  it('every usage error exits 2: a time that is not one, yes/no that is neither, ids and filters together, nothing to replay', async () => {
    for (const args of [
      ['runs', 'list', '--since', 'yesterday'],
      ['events', 'list', '--routed', 'maybe'],
      ['dlq', 'replay', 'some-id', '--reason', 'http_status'],
      ['dlq', 'replay'],
      ['runs', 'tail', '--after', 'x'],
      ['runs', 'list', '--limit', '0'],
      ['runs', 'list', '--bogus'],
    ]) {
      const r = await cli([...args, '--url', url]);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).not.toBe('');
    }
  });

  it('send to a URL where nothing listens exits 1 with "cannot reach"', async () => {
    const nowhere = `http://127.0.0.1:${await freePort()}`;
    const r = await cli(['send', jsonl(), '--url', nowhere]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot reach ${nowhere}`);
    const runs = await cli(['runs', 'list', '--url', nowhere]);
    expect(runs.code).toBe(1);
    expect(runs.stderr).toContain('cannot reach');
  });

  it('clients create|list|rotate-secret|delete, token, audit list|verify: the life of a client', async () => {
    const cfg = ['--config', 'serve.yaml'];
    expect((await cli(['clients', 'create', '--name', 'ops', ...cfg])).code).toBe(2);
    expect((await cli(['clients', 'create', '--name', 'ops', '-P', 'runs:read', ...cfg])).code).toBe(2);
    const created = await cli(['clients', 'create', '--name', 'ops', '-P', 'dispatcher:runs:read', 'dispatcher:audit:read@ops,cli', ...cfg, '--json']);
    expect(created.code, created.stderr).toBe(0);
    const { id, secret } = JSON.parse(created.stdout) as { id: string; secret: string };
    const listed = await cli(['clients', 'list', ...cfg]);
    expect(listed.stdout).toContain(id);
    expect(listed.stdout).not.toContain(secret);

    const token = await cli(['token', '--client-id', id, '--url', url], { env: { DISPATCHER_CLIENT_SECRET: secret } });
    expect(token.code, token.stderr).toBe(0);
    const bearer = token.stdout.trim();
    // What the client may do, and not beyond it.
    expect((await cli(['runs', 'list', '--url', url, '--json'], { env: { DISPATCHER_TOKEN: bearer } })).code).toBe(0);
    const dlq = await cli(['dlq', 'list', '--url', url], { env: { DISPATCHER_TOKEN: bearer } });
    expect(dlq.code).toBe(1);
    expect(dlq.stderr).toContain('HTTP 403 forbidden');
    const audit = await cli(['audit', 'list', '--url', url, '--action', 'clients.create', '--json'], { env: { DISPATCHER_TOKEN: bearer } });
    expect(JSON.parse(audit.stdout).data[0]).toMatchObject({ action: 'clients.create', records: [id], actor_kind: 'cli', service: 'cli' });
    const wrong = await cli(['token', '--client-id', id, '--url', url], { input: 'not-the-secret' });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('HTTP 401 unauthorized');

    // Rotating the secret in another process revokes the token once the server's cached client expires (5 s).
    const rotated = await cli(['clients', 'rotate-secret', id, ...cfg, '--json']);
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(JSON.parse(rotated.stdout).secret).not.toBe(secret);
    await waitForExit(() => cli(['runs', 'list', '--url', url], { env: { DISPATCHER_TOKEN: bearer } }), 1, 10_000);
    expect((await cli(['clients', 'delete', id, ...cfg])).stdout).toContain(`deleted client ${id}`);
    expect((await cli(['clients', 'delete', id, ...cfg])).code).toBe(1);

    const verified = await cli(['audit', 'verify', ...cfg]);
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    expect(verified.stdout).toMatch(/^\d+ entries checked: the chain is intact; last entry \d+, hash [0-9a-f]{64}$/m);
  });

  it('audit verify exits 1 naming the entry that was changed', async () => {
    const store = ['--store', `sqlite:${join(dir, 'tamper.db')}`];
    for (const name of ['a', 'b', 'c']) expect((await cli(['clients', 'create', '--name', name, '-P', 'dispatcher:runs:read', ...store])).code).toBe(0);
    expect((await cli(['audit', 'verify', ...store])).code).toBe(0);
    const { default: Database } = await import('better-sqlite3');
    const db = new Database(join(dir, 'tamper.db'));
    db.exec("DROP TRIGGER audit_log_no_update; UPDATE audit_log SET outcome = 'denied' WHERE seq = 2");
    db.close();
    const r = await cli(['audit', 'verify', ...store]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('entry 2: modified: entry 2 was changed: its content does not give its hash\n');
    expect(r.stderr).toContain('1 problem in 3 entries: the audit log was tampered with');
  });

  it('SIGTERM stops the server: it exits 0 within a few seconds', async () => {
    expect(server!.exitCode).toBeNull();
    const started = Date.now();
    server!.kill('SIGTERM');
    const exit = await Promise.race([serverExit, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 10_000))]);
    expect(exit, serverOutput).toEqual({ code: 0, signal: null });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(serverOutput).toContain('stopping');
    expect(serverOutput).toContain('stopped');
  });
});

// ---------------------------------------------------------------------------------------------------------

describe('the CLI follows the configuration', () => {
  let project: string;
  let server: Child | undefined;
  let port: number;

  /** The CLI run in `cwd`, with no -u and no DISPATCHER_* but `env`. */
  function cliIn(cwd: string, args: string[], env: Record<string, string> = {}): Promise<Result> {
    return new Promise((resolvePromise, reject) => {
      const child = spawn(process.execPath, [MAIN, ...args], { cwd, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
      child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      child.on('error', reject);
      child.on('close', (code, signal) => resolvePromise({ code, signal, stdout, stderr }));
    });
  }

  beforeAll(async () => {
    project = join(dir, 'project');
    mkdirSync(project, { recursive: true });
    port = await freePort();
    writeFileSync(
      join(project, 'dispatcher.yaml'),
      `server: { port: ${port} }\nstore: { url: "sqlite:./data/dispatcher.db" }\nlog: { level: info }\nroutes:\n  - name: from-the-file\n    match: { type: "project.*" }\n    actions: [ { noop: {} } ]\n`,
    );
    // No --config: serve finds ./dispatcher.yaml, and generates ./data/admin.key.
    server = startChild(undefined, project, cleanEnv() as Record<string, string>);
    await waitHealthy(server, port);
  });

  afterAll(async () => {
    await kill(server);
  });

  it('serve reads ./dispatcher.yaml when no file is named, and says so', () => {
    expect(server!.log()).toContain('configured by dispatcher.yaml');
  });

  it('status, send and runs list find the server and its admin key from ./dispatcher.yaml, with no -u and no key given', async () => {
    const status = await cliIn(project, ['status']);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/^status\s+ready$/m);
    const event = join(project, 'event.json');
    writeFileSync(event, JSON.stringify(ce({ id: 'project-1', type: 'project.made' })));
    const sent2 = await cliIn(project, ['send', event]);
    expect(sent2.code, sent2.stderr).toBe(0);
    const runs = await cliIn(project, ['runs', 'list', '--json']);
    expect(runs.code, runs.stderr).toBe(0);
    expect(JSON.parse(runs.stdout).data.map((r: { route: string }) => r.route)).toContain('from-the-file');
  });

  it('from elsewhere, DISPATCHER_CONFIG gives the address; the key is looked for where auth.keyFile says, and a 401 says what was sent', async () => {
    const elsewhere = join(dir, 'elsewhere');
    mkdirSync(elsewhere, { recursive: true });
    const env = { DISPATCHER_CONFIG: join(project, 'dispatcher.yaml') };
    const denied = await cliIn(elsewhere, ['runs', 'list'], env);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain('HTTP 401');
    expect(denied.stderr).toContain('sent no credential');
    expect(denied.stderr).toContain(`${join(elsewhere, 'data', 'admin.key')} (auth.keyFile) does not exist here`);
    expect(denied.stderr).toContain('give another with DISPATCHER_TOKEN');
    const wrong = await cliIn(elsewhere, ['runs', 'list'], { ...env, DISPATCHER_PSK: 'wrongwrongwrong' });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain(`sent the pre-shared key in DISPATCHER_PSK to http://127.0.0.1:${port} (server.host and server.port of ${join(project, 'dispatcher.yaml')})`);
    const keyed = await cliIn(elsewhere, ['runs', 'list'], { ...env, DISPATCHER_KEY_FILE: join(project, 'data', 'admin.key') });
    expect(keyed.code, keyed.stderr).toBe(0);
  });

  it('DISPATCHER_SERVER_PORT counts for the CLI as it does for serve', async () => {
    const other = await freePort();
    const r = await cliIn(project, ['status'], { DISPATCHER_SERVER_PORT: String(other) });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot reach http://127.0.0.1:${other} (server.host and server.port of dispatcher.yaml)`);
    expect(r.stderr).toContain('-u URL or DISPATCHER_URL');
  });

  it('routes test and validate-config read ./dispatcher.yaml too', async () => {
    const event = join(project, 'event.json');
    const r = await cliIn(project, ['routes', 'test', event]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('✓ from-the-file');
    const v = await cliIn(project, ['validate-config']);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout).toBe('dispatcher.yaml: valid (1 route, 0 types)\n');
  });
});
