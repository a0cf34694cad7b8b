/**
 * The CISO Assistant profile as its users switch to it: the original's environment variables through
 * `loadConfig`, the Kafka connection and the advice its section gives, and the verbs `dispatcher ciso
 * init-config | auth | consume` on the original's `.dispatcher_config.yaml` and `.tmp.yaml`
 * (../shared/seeds/notes/ciso-assistant-dispatcher.md §1–§3).
 *
 * The verbs run through the program's own parsing (`buildProgram().parseAsync`) in a temporary working
 * directory (the `forks` pool allows `process.chdir`), and as the built CLI (`dist/cli/main.js`) in a child
 * process wherever standard input is read (the prompts) or the verb serves (`consume`: the whole Docker
 * entrypoint, `init-config -y && auth && consume`, against librdkafka's mock cluster and the fake API).
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { parse, stringify } from 'yaml';
import { profileAdvice } from '../src/cli/advice.js';
import { buildProgram } from '../src/cli/program.js';
import { loadConfig } from '../src/config/load.js';
import { kafkaConfig, type KafkaConnectionOptions } from '../src/transports/kafka/index.js';
import { ensureBuilt, freePort, MAIN } from './child.js';
import { startFakeCiso, type FakeCiso } from './fake-ciso.js';
import { waitFor } from './helpers.js';
import { fileMockCluster } from './kafka-mock.js';

const { cluster } = await fileMockCluster('ciso-cli.test.ts', 1);

const PROFILE = 'ciso-assistant';
const on = { profiles: { [PROFILE]: {} } } as never;
const TEMPLATES = '/work/shared/seeds/data/ciso-assistant-dispatcher/samples-from-readme/';
/** The original's variables (notes §2): none of them may leak in from the environment the tests run in. */
const ORIGINAL_VARIABLES = [
  'API_URL',
  'USER_TOKEN',
  'VERIFY_CERTIFICATE',
  'USER_EMAIL',
  'USER_PASSWORD',
  'AUTO_RENEW_SESSION',
  'BOOTSTRAP_SERVERS',
  'KAFKA_USE_AUTH',
  'KAFKA_SASL_MECHANISM',
  'KAFKA_SECURITY_PROTOCOL',
  'KAFKA_USERNAME',
  'KAFKA_PASSWORD',
  'ERRORS_TOPIC',
  'S3_URL',
  'S3_ACCESS_KEY',
  'S3_SECRET_KEY',
  'DEBUG',
];
/** The user of the original's integration test (`auth --email admin@tests.com --password badpass12345`). */
const USER = { username: 'admin@tests.com', password: 'badpass12345' };

/**
 * The profile's section as `loadConfig` makes it with `env`, the profile switched on by a layer under the
 * environment holding `base` (as `dispatcher ciso …` switches it on, with the original's file).
 */
async function section(env: Record<string, string>, base: Record<string, unknown> = {}): Promise<Record<string, any>> {
  const config = await loadConfig({ env, base: { source: '.dispatcher_config.yaml', value: { profiles: { [PROFILE]: base } } as never } });
  return config.profiles[PROFILE] as Record<string, any>;
}

const modeOf = (file: string) => statSync(file).mode & 0o777;
const readYaml = (file: string) => parse(readFileSync(file, 'utf8')) as Record<string, any>;

describe('ciso-assistant: the original’s environment variables, through loadConfig', () => {
  it('has the original’s defaults when none is set (so that each variable below visibly changes one)', async () => {
    const s = await section({});
    expect(s.api).toEqual({ url: 'https://localhost:8443', verifyCertificate: true, timeout: 30_000, autoRenew: false });
    expect(s.kafka).toMatchObject({ bootstrapServers: ['localhost:9092'], useAuth: false, saslMechanism: 'PLAIN', securityProtocol: 'SASL_PLAINTEXT', username: '', password: '', topic: 'observation', groupId: 'my-group' });
    expect(s.errorsTopic).toBe('errors');
    expect(s.s3).toMatchObject({ url: 'http://localhost:9000', accessKey: '', secretKey: '' });
    expect(s.debug).toBe(false);
  });

  it('puts each variable at its path: trailing slash stripped, servers split, mechanism and protocol upper-cased', async () => {
    const s = await section({
      API_URL: 'https://ciso.example.org/api//',
      USER_TOKEN: 'pat-from-env',
      VERIFY_CERTIFICATE: 'False',
      USER_EMAIL: 'me@example.org',
      USER_PASSWORD: 'secret-pw',
      AUTO_RENEW_SESSION: 'True',
      BOOTSTRAP_SERVERS: 'k1:9092, k2:9093,',
      KAFKA_USE_AUTH: 'True',
      KAFKA_SASL_MECHANISM: 'scram-sha-512',
      KAFKA_SECURITY_PROTOCOL: 'sasl_ssl',
      KAFKA_USERNAME: 'kafka-user',
      KAFKA_PASSWORD: 'kafka-pw',
      ERRORS_TOPIC: 'my-errors',
      S3_URL: 'http://s3.example.org:9000',
      S3_ACCESS_KEY: 'access-key',
      S3_SECRET_KEY: 'secret-key',
      DEBUG: 'true',
    });
    expect(s.api).toEqual({ url: 'https://ciso.example.org/api', token: 'pat-from-env', verifyCertificate: false, timeout: 30_000, email: 'me@example.org', password: 'secret-pw', autoRenew: true });
    expect(s.kafka).toMatchObject({ bootstrapServers: ['k1:9092', 'k2:9093'], useAuth: true, saslMechanism: 'SCRAM-SHA-512', securityProtocol: 'SASL_SSL', username: 'kafka-user', password: 'kafka-pw' });
    expect(s.errorsTopic).toBe('my-errors');
    expect(s.s3).toMatchObject({ url: 'http://s3.example.org:9000', accessKey: 'access-key', secretKey: 'secret-key' });
    expect(s.debug).toBe(true);
  });

  const FLAGS = ['VERIFY_CERTIFICATE', 'AUTO_RENEW_SESSION', 'KAFKA_USE_AUTH', 'DEBUG'] as const;
  const read = (s: Record<string, any>) => [s.api.verifyCertificate, s.api.autoRenew, s.kafka.useAuth, s.debug];
  const all = (v: boolean) => ({ api: { verifyCertificate: v, autoRenew: v }, kafka: { useAuth: v, username: 'u', password: 'p' }, debug: v });

  it.each(['True', 'true', 'TRUE', 'yes', '1'])('reads %s as true in every boolean (the original took only "True")', async (text) => {
    // Under them, a layer that says false: each variable must turn its option over.
    const s = await section(Object.fromEntries(FLAGS.map((v) => [v, text])), all(false));
    expect(read(s)).toEqual([true, true, true, true]);
  });

  it.each(['False', 'false', '0', 'no'])('reads %s as false in every boolean (the original could not switch verification off)', async (text) => {
    const s = await section(Object.fromEntries(FLAGS.map((v) => [v, text])), all(true));
    expect(read(s)).toEqual([false, false, false, false]);
  });

  it('goes over the original’s file (the base layer) and empty means unset', async () => {
    const s = await section({ API_URL: 'https://env.example.org/api', ERRORS_TOPIC: '' }, { api: { url: 'https://file.example.org/api', token: 'file-pat' }, errorsTopic: 'file-errors' });
    expect(s.api).toMatchObject({ url: 'https://env.example.org/api', token: 'file-pat' });
    expect(s.errorsTopic).toBe('file-errors');
  });

  it('refuses a value it cannot take, naming the variable and the option', async () => {
    await expect(section({ KAFKA_SASL_MECHANISM: 'GSSAPI' })).rejects.toThrow(/KAFKA_SASL_MECHANISM: profiles\.ciso-assistant\.kafka\.saslMechanism: must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, got "GSSAPI"/);
    await expect(section({ VERIFY_CERTIFICATE: 'maybe' })).rejects.toThrow(/VERIFY_CERTIFICATE: profiles\.ciso-assistant\.api\.verifyCertificate: must be true or false, got "maybe"/);
    await expect(section({ KAFKA_SECURITY_PROTOCOL: 'TLS' })).rejects.toThrow(/KAFKA_SECURITY_PROTOCOL: .*securityProtocol: must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, got "TLS"/);
    // Every problem at once.
    const both = (await section({ KAFKA_SASL_MECHANISM: 'GSSAPI', DEBUG: 'very' }).catch((e: unknown) => e)) as Error;
    expect(both.message).toMatch(/\(2 problems\)/);
    expect(both.message).toMatch(/KAFKA_SASL_MECHANISM: .*got "GSSAPI"/);
    expect(both.message).toMatch(/DEBUG: profiles\.ciso-assistant\.debug: must be true or false, got "very"/);
  });

  it('reads them with the profile switched on by the flags layer too', async () => {
    const config = await loadConfig({ env: { API_URL: 'https://flags.example.org/api/', KAFKA_USE_AUTH: 'yes', KAFKA_USERNAME: 'ku', KAFKA_PASSWORD: 'kp' }, overrides: on });
    expect(config.profiles[PROFILE]).toMatchObject({ api: { url: 'https://flags.example.org/api' }, kafka: { useAuth: true, username: 'ku' } });
  });

  it('blames a bad value in the file on the file, not on a variable set beside it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ciso-env-'));
    try {
      writeFileSync(join(dir, 'dispatcher.yaml'), 'profiles:\n  ciso-assistant:\n    kafka:\n      saslMechanism: FOO\n');
      await expect(loadConfig({ file: join(dir, 'dispatcher.yaml'), env: { API_URL: 'https://ciso.example.org/api' } })).rejects.toThrow(/dispatcher\.yaml:4: profiles\.ciso-assistant\.kafka\.saslMechanism: must be one of/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('does not read them while the profile is off', async () => {
    const config = await loadConfig({ env: { API_URL: 'https://ciso.example.org/api', KAFKA_SASL_MECHANISM: 'GSSAPI', VERIFY_CERTIFICATE: 'maybe', BOOTSTRAP_SERVERS: 'k1:9092' } });
    expect(config.profiles[PROFILE]).toBeUndefined();
    expect(config.inputs.map((i) => i.name)).not.toContain(`${PROFILE}.observation`);
    expect(config.outputs.map((o) => o.name)).not.toContain(`${PROFILE}.errors`);
  });
});

describe('ciso-assistant: the Kafka connection its section makes, and its advice', () => {
  /** The profile's Kafka input and errors output as the loaded configuration has them. */
  async function transports(env: Record<string, string>, overrides: Record<string, unknown> = {}) {
    const config = await loadConfig({ env, overrides: { ...overrides, profiles: { [PROFILE]: {} } } as never });
    const input = config.inputs.find((i) => i.name === `${PROFILE}.observation`);
    const output = config.outputs.find((o) => o.name === `${PROFILE}.errors`);
    return { config, input: input!, output: output! };
  }
  const log = pino({ level: 'silent' });

  it.each([
    ['PLAIN', 'plain'],
    ['SCRAM-SHA-256', 'scram-sha-256'],
    ['scram-sha-512', 'scram-sha-512'],
  ])('useAuth with %s: SASL %s on the input and the errors output, to kafkajs', async (mechanism, expected) => {
    const { input, output } = await transports({ BOOTSTRAP_SERVERS: 'k1:9092,k2:9092', KAFKA_USE_AUTH: 'true', KAFKA_SASL_MECHANISM: mechanism, KAFKA_USERNAME: 'ku', KAFKA_PASSWORD: 'kp' });
    const sasl = { mechanism: expected, username: 'ku', password: 'kp' };
    for (const t of [input, output]) {
      expect(t.transport).toBe('kafka');
      expect(t.options).toMatchObject({ brokers: ['k1:9092', 'k2:9092'], sasl });
      // The default protocol is SASL_PLAINTEXT: no TLS.
      expect(t.options.tls).toBeUndefined();
      const client = kafkaConfig(t.options as unknown as KafkaConnectionOptions, log);
      expect(client.sasl).toEqual(sasl);
      expect(client.ssl).toBeUndefined();
    }
    expect(input.options).toMatchObject({ topics: ['observation'], groupId: 'my-group', fromBeginning: true });
    expect(input.decoder.format).toBe(`${PROFILE}.observation`);
  });

  it.each([
    ['SASL_SSL', 'true', true, true],
    ['SSL', 'false', true, false],
    ['SASL_PLAINTEXT', 'true', false, true],
    ['PLAINTEXT', 'false', false, false],
    // Authentication on, but a protocol without SASL: the original's librdkafka did no SASL either.
    ['PLAINTEXT', 'true', false, false],
    ['SSL', 'true', true, false],
  ] as const)('KAFKA_SECURITY_PROTOCOL=%s, KAFKA_USE_AUTH=%s: TLS %s, SASL %s', async (protocol, useAuth, tls, sasl) => {
    const { input, output } = await transports({ KAFKA_SECURITY_PROTOCOL: protocol, KAFKA_USE_AUTH: useAuth, KAFKA_USERNAME: 'ku', KAFKA_PASSWORD: 'kp' });
    for (const t of [input, output]) {
      expect(t.options.tls).toEqual(tls ? { enabled: true } : undefined);
      expect(t.options.sasl).toEqual(sasl ? { mechanism: 'plain', username: 'ku', password: 'kp' } : undefined);
      const client = kafkaConfig(t.options as unknown as KafkaConnectionOptions, log);
      expect(client.ssl).toBe(tls ? true : undefined);
      expect(client.sasl === undefined).toBe(!sasl);
    }
  });

  it('sends its dead letters to the errors topic, in the original’s shape', async () => {
    const { output } = await transports({ ERRORS_TOPIC: 'my-errors' });
    expect(output.streams).toEqual([{ name: 'ciso-assistant_errors', kind: 'deadLetters', topic: 'my-errors', presenter: `${PROFILE}.error`, filter: { profile: [PROFILE] } }]);
  });

  it.each([
    ['no user', { KAFKA_USE_AUTH: 'true', KAFKA_PASSWORD: 'kp' }],
    ['no password', { KAFKA_USE_AUTH: 'true', KAFKA_USERNAME: 'ku' }],
  ])('refuses useAuth with %s (the original’s ValueError), in its words, once', async (_, env) => {
    const failure = await transports(env).then(
      () => null,
      (err: Error) => err.message,
    );
    expect(failure).toMatch(/profiles\.ciso-assistant: KAFKA_USERNAME and KAFKA_PASSWORD \(kafka\.username, kafka\.password\) must be provided when authentication is enabled/);
    expect(failure!.match(/must be provided/g)).toHaveLength(1);
  });

  describe('advice', () => {
    const advice = async (env: Record<string, string>, overrides: Record<string, unknown> = {}) => profileAdvice((await transports(env, overrides)).config);
    const PUBLIC = { API_URL: 'https://ciso.example.org/api' };

    it('says when there is no token (nor email and password to log in with)', async () => {
      expect(await advice(PUBLIC)).toEqual([expect.stringMatching(/^profiles\.ciso-assistant: api\.token \(USER_TOKEN\) is not set/)]);
      expect(await advice({ ...PUBLIC, USER_TOKEN: 'pat' })).toEqual([]);
      expect(await advice({ ...PUBLIC, USER_EMAIL: 'me@example.org', USER_PASSWORD: 'pw' })).toEqual([]);
      // An email alone does not log in.
      expect(await advice({ ...PUBLIC, USER_EMAIL: 'me@example.org' })).toHaveLength(1);
    });

    it('says nothing of useAuth with a user and a password', async () => {
      expect(await advice({ ...PUBLIC, USER_TOKEN: 'pat', KAFKA_USE_AUTH: 'yes', KAFKA_USERNAME: 'ku', KAFKA_PASSWORD: 'kp' })).toEqual([]);
    });

    it.each(['localhost:8443', '127.0.0.1:8000', '10.1.2.3', '192.168.1.10', '172.20.0.5', '[::1]:8443', '169.254.169.254', '100.64.0.7', '[fd00::5]'])('says when the API is private (%s) and not in actions.http.allow', async (host) => {
      const url = `http://${host}/api`;
      const hostname = new URL(url).hostname;
      expect(await advice({ API_URL: url, USER_TOKEN: 'pat' })).toEqual([`profiles.ciso-assistant: api.url points at a private address (${hostname}): add it to actions.http.allow, or every API call is refused (address_blocked)`]);
      expect(await advice({ API_URL: url, USER_TOKEN: 'pat' }, { actions: { http: { allow: [hostname.replace(/^\[|\]$/g, '')] } } })).toEqual([]);
    });

    it('counts a CIDR of actions.http.allow as allowing the API', async () => {
      expect(await advice({ API_URL: 'http://10.1.2.3/api', USER_TOKEN: 'pat' }, { actions: { http: { allow: ['10.0.0.0/8'] } } })).toEqual([]);
      expect(await advice({ API_URL: 'http://10.1.2.3/api', USER_TOKEN: 'pat' }, { actions: { http: { allow: ['192.168.0.0/16'] } } })).toHaveLength(1);
    });

    it('says nothing of a public API host, nor of 172.32.x (not private)', async () => {
      expect(await advice({ API_URL: 'https://ciso.example.org/api', USER_TOKEN: 'pat' })).toEqual([]);
      expect(await advice({ API_URL: 'http://172.32.0.1/api', USER_TOKEN: 'pat' })).toEqual([]);
    });
  });
});

// ---------------------------------------------------------------------------------------------------
// The verbs, in process.

describe('dispatcher ciso init-config and auth, through the program’s own parsing', () => {
  const home = process.cwd();
  const saved = { ...process.env };
  let dir: string;
  let api: FakeCiso;
  let out: string[];
  let err: string[];

  /** `dispatcher ciso …` with these variables (and none other of the original's). */
  const ciso = (args: string[], env: Record<string, string> = {}) => {
    for (const name of ORIGINAL_VARIABLES) delete process.env[name];
    for (const name of Object.keys(process.env)) if (name.startsWith('DISPATCHER_')) delete process.env[name];
    Object.assign(process.env, env);
    return buildProgram().parseAsync(['node', 'dispatcher', 'ciso', ...args]);
  };
  const file = (name: string) => join(dir, name);

  beforeAll(async () => {
    api = await startFakeCiso({ tokens: [], users: [USER] });
  });
  afterAll(async () => {
    await api?.close();
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ciso-cli-'));
    process.chdir(dir);
    out = [];
    err = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => (out.push(String(chunk)), true));
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => (err.push(String(chunk)), true));
  });
  afterEach(() => {
    vi.restoreAllMocks();
    process.chdir(home);
    process.env = { ...saved };
    rmSync(dir, { recursive: true, force: true });
  });

  describe('init-config', () => {
    it('-y without a file: the original’s format (its README template’s keys and values), mode 0600', async () => {
      await ciso(['init-config', '-y']);
      const written = readYaml(file('.dispatcher_config.yaml'));
      // The README's (PAT) template, parsed as the original's PyYAML would: every key there, with its value.
      expect(written).toMatchObject(parse(readFileSync(join(TEMPLATES, 'dispatcher_config.yaml'), 'utf8')) as object);
      expect(written).toEqual({
        debug: false,
        rest: { url: 'https://localhost:8443', verify_certificate: true },
        credentials: { token: '' },
        auto_renew_session: false,
        bootstrap_servers: 'localhost:9092',
        kafka: { use_auth: false, sasl_mechanism: 'PLAIN', security_protocol: 'SASL_PLAINTEXT', sasl_plain_username: '', sasl_plain_password: '' },
        errors_topic: 'errors',
        s3_url: 'http://localhost:9000',
        s3_access_key: '',
        s3_secret_key: '',
      });
      expect(modeOf(file('.dispatcher_config.yaml'))).toBe(0o600);
      expect(err.join('')).toMatch(/Config file '\.dispatcher_config\.yaml' not found/);
      expect(err.join('')).toMatch(/wrote \.dispatcher_config\.yaml/);
    });

    it('-y over the pre-PAT template: the environment over the file, the rest of the file kept', async () => {
      const template = readFileSync(join(TEMPLATES, 'dispatcher_config.pre-PAT.yaml'), 'utf8').replace('password: ""', 'password: "file-pass"');
      writeFileSync(file('.dispatcher_config.yaml'), `${template}errors_topic: file-errors\nkafka:\n  use_auth: False\n  sasl_plain_username: file-user\n`, { mode: 0o600 });
      await ciso(['init-config', '-y'], {
        API_URL: 'https://env.example.org/api/',
        USER_TOKEN: 'env-pat',
        BOOTSTRAP_SERVERS: 'b1:9092,b2:9092',
        KAFKA_USE_AUTH: 'True',
        KAFKA_SASL_MECHANISM: 'scram-sha-256',
        KAFKA_PASSWORD: 'env-kafka-pw',
      });
      expect(readYaml(file('.dispatcher_config.yaml'))).toEqual({
        debug: false,
        rest: { url: 'https://env.example.org/api', verify_certificate: true },
        credentials: { token: 'env-pat', email: 'user@company.org', password: 'file-pass' },
        auto_renew_session: false,
        bootstrap_servers: 'b1:9092,b2:9092',
        kafka: { use_auth: true, sasl_mechanism: 'SCRAM-SHA-256', security_protocol: 'SASL_PLAINTEXT', sasl_plain_username: 'file-user', sasl_plain_password: 'env-kafka-pw' },
        errors_topic: 'file-errors',
        s3_url: 'http://localhost:9000',
        s3_access_key: '',
        s3_secret_key: '',
      });
    });

    it('without -y and without a file: writes it, asking nothing', async () => {
      await ciso(['init-config'], { ERRORS_TOPIC: 'asked-nothing' });
      expect(readYaml(file('.dispatcher_config.yaml')).errors_topic).toBe('asked-nothing');
    });

    it('refuses a file it cannot take, naming the file and the option, and leaves it as it is', async () => {
      const text = 'rest:\n  url: https://ciso.example.org/api\nkafka:\n  sasl_mechanism: FOO\n';
      writeFileSync(file('.dispatcher_config.yaml'), text);
      await expect(ciso(['init-config', '-y'])).rejects.toThrow(/\.dispatcher_config\.yaml: profiles\.ciso-assistant\.kafka\.saslMechanism: must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, got "FOO"/);
      expect(readFileSync(file('.dispatcher_config.yaml'), 'utf8')).toBe(text);
    });

    it('-y does not copy the session token of .tmp.yaml into credentials.token', async () => {
      writeFileSync(file('.tmp.yaml'), stringify({ expiry: '2030-01-01T00:00:00Z', token: 'session-token' }), { mode: 0o600 });
      await ciso(['init-config', '-y']);
      expect(readYaml(file('.dispatcher_config.yaml')).credentials).toEqual({ token: '' });
    });

    it('-y over an existing 0644 file leaves it 0600 (it holds the token and passwords)', async () => {
      writeFileSync(file('.dispatcher_config.yaml'), 'errors_topic: e\n');
      chmodSync(file('.dispatcher_config.yaml'), 0o644);
      await ciso(['init-config', '-y'], { USER_TOKEN: 'pat-secret' });
      expect(readYaml(file('.dispatcher_config.yaml')).credentials.token).toBe('pat-secret');
      expect(modeOf(file('.dispatcher_config.yaml'))).toBe(0o600);
    });
  });

  describe('consume', () => {
    it('refuses to start without a token or credentials, in the original’s words, consuming nothing', async () => {
      await expect(ciso(['consume'], { API_URL: api.url })).rejects.toThrow(/^Failed to obtain access token for API authentication: set USER_TOKEN .*dispatcher ciso auth/);
    });
  });

  describe('auth', () => {
    it('--email --password: logs in as the original did, keeps the token in .tmp.yaml (0600), prints the success line', async () => {
      const before = api.issued.length;
      await ciso(['auth', '--email', USER.username, '--password', USER.password], { API_URL: `${api.url}/` });
      expect(api.issued).toHaveLength(before + 1);
      const login = api.requests.filter((r) => r.path === '/api/iam/login/').at(-1)!;
      expect(login.method).toBe('POST');
      expect(JSON.parse(login.body.toString())).toEqual({ username: USER.username, password: USER.password });
      expect(login.headers).toMatchObject({ accept: 'application/json', 'content-type': 'application/json' });
      const saved = readYaml(file('.tmp.yaml'));
      expect(saved).toEqual({ expiry: expect.any(String), token: api.issued.at(-1) });
      expect(Date.parse(saved.expiry as string)).toBeGreaterThan(Date.now());
      expect(modeOf(file('.tmp.yaml'))).toBe(0o600);
      expect(out.join('')).toBe('Successfully authenticated. Token saved to .tmp.yaml\n');
    });

    it('takes the credentials from USER_EMAIL and USER_PASSWORD, or from the file', async () => {
      await ciso(['auth'], { API_URL: api.url, USER_EMAIL: USER.username, USER_PASSWORD: USER.password });
      expect(readYaml(file('.tmp.yaml')).token).toBe(api.issued.at(-1));
      rmSync(file('.tmp.yaml'));
      writeFileSync(file('.dispatcher_config.yaml'), stringify({ rest: { url: api.url, verify_certificate: true }, credentials: { email: USER.username, password: USER.password } }));
      await ciso(['auth']);
      expect(readYaml(file('.tmp.yaml')).token).toBe(api.issued.at(-1));
      // The flags over the file.
      writeFileSync(file('.dispatcher_config.yaml'), stringify({ rest: { url: api.url }, credentials: { email: 'someone@else.org', password: 'wrong' } }));
      await ciso(['auth', '--email', USER.username, '--password', USER.password]);
      expect(readYaml(file('.tmp.yaml')).token).toBe(api.issued.at(-1));
    });

    it('fails clearly for a wrong password, writing nothing', async () => {
      await expect(ciso(['auth', '--email', USER.username, '--password', 'not-it'], { API_URL: api.url })).rejects.toThrow(/\/api\/iam\/login\/ answered 400: .*Unable to log in with provided credentials/);
      expect(existsSync(file('.tmp.yaml'))).toBe(false);
      expect(out.join('')).not.toMatch(/Successfully/);
    });

    it('fails clearly when the API cannot be reached', async () => {
      const url = `http://127.0.0.1:${await freePort()}/api`;
      await expect(ciso(['auth', '--email', USER.username, '--password', USER.password], { API_URL: url })).rejects.toThrow(new RegExp(`cannot reach ${url}/iam/login/: .*ECONNREFUSED`));
      expect(existsSync(file('.tmp.yaml'))).toBe(false);
    });

    it('fails with the original’s words when there are no credentials, calling nothing', async () => {
      const before = api.requests.length;
      await expect(ciso(['auth'], { API_URL: api.url })).rejects.toThrow(/Could not find any usable credentials/);
      await expect(ciso(['auth', '--email', USER.username], { API_URL: api.url })).rejects.toThrow(/Could not find any usable credentials/);
      expect(api.requests.length).toBe(before);
      expect(existsSync(file('.tmp.yaml'))).toBe(false);
    });

    it('leaves an existing 0644 .tmp.yaml 0600', async () => {
      writeFileSync(file('.tmp.yaml'), 'token: old\n');
      chmodSync(file('.tmp.yaml'), 0o644);
      await ciso(['auth', '--email', USER.username, '--password', USER.password], { API_URL: api.url });
      expect(readYaml(file('.tmp.yaml')).token).toBe(api.issued.at(-1));
      expect(modeOf(file('.tmp.yaml'))).toBe(0o600);
    });
  });
});

// ---------------------------------------------------------------------------------------------------
// The verbs, as the built CLI in a child process.

const children = new Set<ChildProcess>();
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** The environment of a child: the tests' own, without the original's variables and `DISPATCHER_*`, plus `env`. */
function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!ORIGINAL_VARIABLES.includes(k) && !k.startsWith('DISPATCHER_')) out[k] = v;
  return { ...out, ...env };
}

function spawnCli(args: string[], cwd: string, env: Record<string, string> = {}) {
  const c = spawn(process.execPath, [MAIN, ...args], { cwd, env: childEnv(env), stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(c);
  let stdout = '';
  let stderr = '';
  c.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
  c.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  return { process: c, stdout: () => stdout, stderr: () => stderr };
}

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * `dispatcher ciso …` in `cwd`. `answers`: each answer is typed once its prompt (the pattern, against what
 * was written since the last answer) is on stderr, as a person would; `stdin`: all of it at once, as a pipe.
 */
function runCli(args: string[], cwd: string, options: { env?: Record<string, string>; answers?: Array<[RegExp, string]>; stdin?: string } = {}): Promise<Ran> {
  const child = spawnCli(['ciso', ...args], cwd, options.env);
  const c = child.process;
  const answers = [...(options.answers ?? [])];
  let from = 0;
  c.stdin!.on('error', () => {}); // the child may be gone before its standard input is closed
  if (options.stdin !== undefined) c.stdin!.end(options.stdin);
  else if (answers.length === 0) c.stdin!.end();
  else {
    c.stderr!.on('data', () => {
      const next = answers[0];
      if (next === undefined || !next[0].test(child.stderr().slice(from))) return;
      answers.shift();
      from = child.stderr().length;
      c.stdin!.write(`${next[1]}\n`);
      if (answers.length === 0) c.stdin!.end();
    });
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      c.kill('SIGKILL');
      reject(new Error(`dispatcher ciso ${args.join(' ')}: no end within 60 s; waiting for ${String(answers[0]?.[0] ?? 'the exit')}; stderr: ${child.stderr().slice(-2000)}`));
    }, 60_000);
    c.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: child.stdout(), stderr: child.stderr() });
    });
  });
}

/**
 * `dispatcher ciso …` on a terminal: util-linux's `script` gives the child a pseudo-terminal, so that what it
 * echoes is what a person would see. Each answer is typed (ending in a carriage return) once its prompt,
 * escape sequences left out, is on the terminal.
 */
function runOnTerminal(args: string[], cwd: string, answers: Array<[RegExp, string]>): Promise<{ code: number | null; screen: string }> {
  const command = [process.execPath, MAIN, 'ciso', ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const c = spawn('script', ['-qfec', command, '/dev/null'], { cwd, env: { ...childEnv({}), TERM: 'xterm' }, stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(c);
  const pending = answers.map(([prompt, answer]): [RegExp, string] => [new RegExp(prompt.source.replace(/\$$/, '')), answer]);
  let screen = '';
  let from = 0;
  const plain = (text: string) => text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
  c.stdin!.on('error', () => {});
  c.stdout!.on('data', (b: Buffer) => {
    screen += b.toString();
    const next = pending[0];
    if (next === undefined || !next[0].test(plain(screen.slice(from)))) return;
    pending.shift();
    from = screen.length;
    c.stdin!.write(`${next[1]}\r`);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      c.kill('SIGKILL');
      reject(new Error(`on a terminal, dispatcher ciso ${args.join(' ')}: no end within 60 s; waiting for ${String(pending[0]?.[0] ?? 'the exit')}; screen: ${plain(screen).slice(-2000)}`));
    }, 60_000);
    c.once('close', (code) => {
      clearTimeout(timer);
      c.stdin!.end();
      resolve({ code, screen: plain(screen) });
    });
  });
}

describe('dispatcher ciso init-config, asking (the built CLI)', () => {
  let dir: string;
  const config = () => join(dir, '.dispatcher_config.yaml');
  beforeAll(() => ensureBuilt(), 180_000);
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'ciso-cli-child-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const CONFIRM = /This will create\/reset '\.dispatcher_config\.yaml'\. Do you wish to continue\? \[y\/N\].*: $/;
  const EXISTING = 'rest:\n  url: https://kept.example.org/api\nerrors_topic: keep-me\n';

  it('without -y, over an existing file: asks, and "n" keeps the file as it was', { timeout: 90_000 }, async () => {
    writeFileSync(config(), EXISTING);
    const ran = await runCli(['init-config'], dir, { answers: [[CONFIRM, 'n']] });
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stderr).toMatch(/nothing written/);
    expect(readFileSync(config(), 'utf8')).toBe(EXISTING);
  });

  it('without -y, over an existing file: asks, and "y" writes it in the original’s format', { timeout: 90_000 }, async () => {
    writeFileSync(config(), EXISTING);
    const ran = await runCli(['init-config'], dir, { answers: [[CONFIRM, 'y']], env: { ERRORS_TOPIC: 'from-env' } });
    expect(ran.code, ran.stderr).toBe(0);
    expect(readYaml(config())).toMatchObject({ rest: { url: 'https://kept.example.org/api', verify_certificate: true }, credentials: { token: '' }, errors_topic: 'from-env', s3_url: 'http://localhost:9000' });
  });

  /** The prompts of `-i` in the original's order, with the answers given. */
  const interactive = (mechanism: string): Array<[RegExp, string]> => [
    [/API URL \[https:\/\/localhost:8443\]: $/, 'http://ciso.example.org/api'],
    [/Verify the API’s TLS certificate\? \(true\/false\) \[true\]: $/, 'False'],
    [/Personal Access Token: $/, 'typed-pat'],
    [/Kafka bootstrap servers \[localhost:9092\]: $/, 'k1:9092, k2:9092'],
    [/Does your Kafka broker require authentication\? \(yes\/no\) \[yes\]: $/, 'yes'],
    [/Kafka user: $/, 'kuser'],
    [/Kafka password: $/, 'kpass'],
    [/SASL mechanism \(SCRAM-SHA-256, SCRAM-SHA-512, PLAIN\) \[SCRAM-SHA-256\]: $/, mechanism],
    [/Security protocol \(SASL_SSL, SASL_PLAINTEXT\) \[SASL_SSL\]: $/, ''],
    [/Errors topic \[errors\]: $/, 'my-errors'],
    [/S3 URL \(optional\) \[http:\/\/localhost:9000\]: $/, 'http://s3.example.org'],
    [/S3 access key: $/, 'ak'],
    [/S3 secret key: $/, 'sk'],
  ];
  const ANSWERED = {
    debug: false,
    rest: { url: 'http://ciso.example.org/api', verify_certificate: false },
    credentials: { token: 'typed-pat' },
    auto_renew_session: false,
    bootstrap_servers: 'k1:9092,k2:9092',
    kafka: { use_auth: true, sasl_mechanism: 'SCRAM-SHA-512', security_protocol: 'SASL_SSL', sasl_plain_username: 'kuser', sasl_plain_password: 'kpass' },
    errors_topic: 'my-errors',
    s3_url: 'http://s3.example.org',
    s3_access_key: 'ak',
    s3_secret_key: 'sk',
  };

  it('-i -y: each answer lands in the file', { timeout: 90_000 }, async () => {
    const ran = await runCli(['init-config', '-i', '-y'], dir, { answers: interactive('scram-sha-512') });
    expect(ran.code, ran.stderr).toBe(0);
    expect(readYaml(config())).toEqual(ANSWERED);
    expect(modeOf(config())).toBe(0o600);
  });

  it('-i -y on a terminal: what is typed is echoed, except the secrets', { timeout: 90_000 }, async () => {
    const ran = await runOnTerminal(['init-config', '-i', '-y'], dir, interactive('SCRAM-SHA-512'));
    expect(ran.code, ran.screen).toBe(0);
    expect(readYaml(config())).toEqual(ANSWERED);
    // The answers that are not secret are on the screen, so the ones that are not were hidden.
    expect(ran.screen).toContain('kuser');
    expect(ran.screen).toContain('my-errors');
    expect(ran.screen).not.toContain('typed-pat');
    expect(ran.screen).not.toContain('kpass');
  });

  it('-i -y without Kafka authentication: the protocol prompt defaults to KAFKA_SECURITY_PROTOCOL, as the original’s did', { timeout: 90_000 }, async () => {
    const answers: Array<[RegExp, string]> = [
      [/API URL \[[^\]]*\]: $/, ''],
      [/Verify the API’s TLS certificate\? \(true\/false\) \[true\]: $/, ''],
      [/Personal Access Token: $/, ''],
      [/Kafka bootstrap servers \[localhost:9092\]: $/, ''],
      [/Does your Kafka broker require authentication\? \(yes\/no\) \[yes\]: $/, 'no'],
      [/Security protocol \(SSL, PLAINTEXT\) \[SSL\]: $/, ''],
      [/Errors topic \[errors\]: $/, ''],
      [/S3 URL \(optional\) \[http:\/\/localhost:9000\]: $/, ''],
      [/S3 access key: $/, ''],
      [/S3 secret key: $/, ''],
    ];
    const ran = await runCli(['init-config', '-i', '-y'], dir, { answers, env: { KAFKA_SECURITY_PROTOCOL: 'ssl' } });
    expect(ran.code, ran.stderr).toBe(0);
    expect(readYaml(config()).kafka).toMatchObject({ use_auth: false, security_protocol: 'SSL' });
  });

  it('-i -y: a SASL mechanism FOO is refused with a clear message, and nothing is written', { timeout: 90_000 }, async () => {
    const ran = await runCli(['init-config', '-i', '-y'], dir, { answers: interactive('FOO') });
    expect(ran.code).toBe(1);
    expect(ran.stderr).toMatch(/dispatcher: .*saslMechanism: must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, got "FOO"/s);
    expect(existsSync(config())).toBe(false);
  });

  it('-i -y: answers piped all at once land in the file', { timeout: 90_000 }, async () => {
    const ran = await runCli(['init-config', '-i', '-y'], dir, { stdin: `${interactive('SCRAM-SHA-512').map(([, a]) => a).join('\n')}\n` });
    expect(ran.code, ran.stderr).toBe(0);
    expect(readYaml(config())).toEqual(ANSWERED);
  });

  it('-i: input that ends before the last question fails, saying so, and writes nothing', { timeout: 90_000 }, async () => {
    const ran = await runCli(['init-config', '-i', '-y'], dir, { stdin: 'http://ciso.example.org/api\nfalse\n' });
    expect(ran.code).toBe(1);
    expect(ran.stderr).toMatch(/no answer to "Personal Access Token": the input ended .*nothing written/);
    expect(existsSync(config())).toBe(false);
  });

  it('-i -y keeps what it does not ask: credentials.email, credentials.password, auto_renew_session', { timeout: 90_000 }, async () => {
    writeFileSync(config(), stringify({ credentials: { token: '', email: 'me@example.org', password: 'pw' }, auto_renew_session: true }));
    const ran = await runCli(['init-config', '-i', '-y'], dir, { answers: interactive('SCRAM-SHA-512') });
    expect(ran.code, ran.stderr).toBe(0);
    expect(readYaml(config())).toMatchObject({ credentials: { token: 'typed-pat', email: 'me@example.org', password: 'pw' }, auto_renew_session: true });
  });

  it('-i -y: the answer wins over the environment (KAFKA_SASL_MECHANISM=PLAIN, SCRAM-SHA-512 typed)', { timeout: 90_000 }, async () => {
    const ran = await runCli(['init-config', '-i', '-y'], dir, { answers: interactive('SCRAM-SHA-512'), env: { KAFKA_SASL_MECHANISM: 'PLAIN' } });
    expect(ran.code, ran.stderr).toBe(0);
    expect(readYaml(config()).kafka.sasl_mechanism).toBe('SCRAM-SHA-512');
  });
});

describe.skipIf(cluster === undefined)('dispatcher ciso consume: the Docker entrypoint, init-config -y && auth && consume (the built CLI)', () => {
  beforeAll(() => ensureBuilt(), 180_000);

  it('consumes with the file’s settings and the token auth kept in .tmp.yaml, on the store and port of -c dispatcher.yaml', { timeout: 150_000 }, async () => {
    const api = await startFakeCiso({ tokens: [], users: [USER], objects: { 'applied-controls': [{ id: 'ac-1', ref_id: 'AC.1', priority: 3 }] } });
    const dir = mkdtempSync(join(tmpdir(), 'ciso-consume-'));
    const producer = new Kafka({ brokers: cluster!.brokers, clientId: 'ciso-cli-test', logLevel: logLevel.NOTHING }).producer({ allowAutoTopicCreation: true, idempotent: false });
    let consume: ReturnType<typeof spawnCli> | undefined;
    try {
      await producer.connect();
      // On the original's fixed topic, before the consumer starts (it reads from the beginning).
      await producer.send({ topic: 'observation', acks: -1, messages: [{ value: JSON.stringify({ message_type: 'update_applied_control', selector: { ref_id: 'AC.1' }, values: { priority: '1' } }) }] });

      const init = await runCli(['init-config', '-y'], dir, { env: { API_URL: api.url, BOOTSTRAP_SERVERS: cluster!.brokers.join(','), KAFKA_SECURITY_PROTOCOL: 'PLAINTEXT' } });
      expect(init.code, init.stderr).toBe(0);
      // No Personal Access Token in the file: consume can only have the token from .tmp.yaml.
      expect(readYaml(join(dir, '.dispatcher_config.yaml'))).toMatchObject({ rest: { url: api.url }, credentials: { token: '' }, bootstrap_servers: cluster!.brokers.join(',') });
      expect(readYaml(join(dir, '.dispatcher_config.yaml')).credentials.email).toBeUndefined();

      const auth = await runCli(['auth', '--email', USER.username, '--password', USER.password], dir);
      expect(auth.code, auth.stderr).toBe(0);
      expect(auth.stdout).toBe('Successfully authenticated. Token saved to .tmp.yaml\n');
      expect(api.issued).toHaveLength(1);

      // Everything else from a dispatcher.yaml: any free port, the store in the temporary directory.
      // Its own allow list, which the API's host (127.0.0.1, private) is added to, not replaced by.
      writeFileSync(join(dir, 'dispatcher.yaml'), stringify({ server: { host: '127.0.0.1', port: 0 }, store: { url: `sqlite:${join(dir, 'consume.db')}` }, log: { level: 'info' }, actions: { http: { allow: ['10.9.9.0/24'] } } }));
      consume = spawnCli(['ciso', 'consume', '-c', 'dispatcher.yaml'], dir);
      consume.process.stdin!.end();
      const c = consume;
      const patch = await waitFor(
        async () => {
          if (c.process.exitCode !== null || c.process.signalCode !== null) throw new Error(`consume exited (${c.process.exitCode ?? c.process.signalCode}): ${c.stdout().slice(-3000)}${c.stderr().slice(-3000)}`);
          return api.requests.find((r) => r.method === 'PATCH');
        },
        (r) => r !== undefined,
        60_000,
        'the PATCH of the observation',
      );
      expect(patch!.path).toBe('/api/applied-controls/ac-1/');
      expect(patch!.headers.authorization).toBe(`Token ${api.issued[0]}`);
      expect(JSON.parse(patch!.body.toString())).toEqual({ priority: '1' });
      expect(api.objects['applied-controls']![0]).toMatchObject({ priority: '1' });
      // consume did not log in again: the one token is auth's.
      expect(api.requests.filter((r) => r.path === '/api/iam/login/')).toHaveLength(1);
      // The store of dispatcher.yaml, not ./data.
      expect(existsSync(join(dir, 'consume.db'))).toBe(true);
      expect(existsSync(join(dir, 'data', 'dispatcher.db'))).toBe(false);
      expect(c.stdout() + c.stderr()).toMatch(/dispatcher serving on http:\/\/127\.0\.0\.1:\d+/);
      expect(c.stdout() + c.stderr()).not.toMatch(/:8080/);
    } finally {
      if (consume !== undefined) {
        const c = consume.process;
        if (c.exitCode === null && c.signalCode === null) {
          const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
          c.kill('SIGTERM');
          const hard = setTimeout(() => c.kill('SIGKILL'), 10_000);
          await exited;
          clearTimeout(hard);
        }
      }
      await producer.disconnect();
      await api.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
