/**
 * `dispatcher ciso …`: the original's verbs (notes §1), on its own files.
 *
 * - `init-config [-i] [-y]` writes `.dispatcher_config.yaml` in the original's format: the file as it is,
 *   with the original's environment variables over it (non-interactive), or what the prompts are given
 *   (`-i`, defaults from the environment and the file). It asks before it overwrites, unless `-y`.
 * - `auth [--email --password]` logs in (`POST {API_URL}/iam/login/`) and keeps the token in `.tmp.yaml`,
 *   which `consume` uses when no Personal Access Token is set.
 * - `consume` serves: the profile switched on with `.dispatcher_config.yaml` under the environment, the API's
 *   host allowed to the HTTP client, everything else as `dispatcher serve` (a `dispatcher.yaml` still applies).
 *
 * Booleans in the file and the environment read as a user means them (`true`, `True`, `yes`, `1`), where the
 * original took only the exact string `True` from the environment.
 */

import { closeSync, existsSync, fchmodSync, openSync, readFileSync, writeSync } from 'node:fs';
import { createInterface, type Interface } from 'node:readline/promises';
import { Writable } from 'node:stream';
import { Command } from 'commander';
import { parse, stringify } from 'yaml';
import type { CliApi } from '../../core/profile.js';
import { canLogIn, type CisoAssistantConfig } from './config.js';
import { PROFILE } from './observation.js';

export const CONFIG_FILE = '.dispatcher_config.yaml';
export const TOKEN_FILE = '.tmp.yaml';

const TRUE = new Set(['true', 'yes', 'on', '1']);
const FALSE = new Set(['false', 'no', 'off', '0']);

/** A boolean as a person writes it; other values are left for the schema to refuse. */
function flag(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  const v = value.trim().toLowerCase();
  return TRUE.has(v) ? true : FALSE.has(v) ? false : value;
}

type Original = Record<string, any>;

/** Set `out[key]` when `value` is given (the original's `None` never overrides). */
function put(out: Record<string, unknown>, key: string, value: unknown): void {
  if (value !== undefined && value !== null) out[key] = value;
}

/** The original's file (`rest.url`, `credentials.token`, `kafka.use_auth`, …) → the profile's section, as written. */
export function fromOriginal(file: Original): Record<string, unknown> {
  const api: Record<string, unknown> = {};
  put(api, 'url', typeof file.rest?.url === 'string' ? file.rest.url.replace(/\/+$/, '') : undefined);
  put(api, 'verifyCertificate', flag(file.rest?.verify_certificate));
  put(api, 'token', file.credentials?.token === '' ? undefined : file.credentials?.token);
  put(api, 'email', file.credentials?.email === '' ? undefined : file.credentials?.email);
  put(api, 'password', file.credentials?.password === '' ? undefined : file.credentials?.password);
  put(api, 'autoRenew', flag(file.auto_renew_session));
  const kafka: Record<string, unknown> = {};
  const servers = file.bootstrap_servers;
  put(kafka, 'bootstrapServers', typeof servers === 'string' ? servers.split(',').map((s) => s.trim()).filter(Boolean) : servers);
  put(kafka, 'useAuth', flag(file.kafka?.use_auth));
  put(kafka, 'saslMechanism', typeof file.kafka?.sasl_mechanism === 'string' ? file.kafka.sasl_mechanism.toUpperCase() : undefined);
  put(kafka, 'securityProtocol', typeof file.kafka?.security_protocol === 'string' ? file.kafka.security_protocol.toUpperCase() : undefined);
  put(kafka, 'username', file.kafka?.sasl_plain_username);
  put(kafka, 'password', file.kafka?.sasl_plain_password);
  const s3: Record<string, unknown> = {};
  put(s3, 'url', file.s3_url);
  put(s3, 'accessKey', file.s3_access_key);
  put(s3, 'secretKey', file.s3_secret_key);
  const out: Record<string, unknown> = {};
  if (Object.keys(api).length > 0) out.api = api;
  if (Object.keys(kafka).length > 0) out.kafka = kafka;
  if (Object.keys(s3).length > 0) out.s3 = s3;
  put(out, 'errorsTopic', file.errors_topic);
  put(out, 'debug', flag(file.debug));
  return out;
}

/** The profile's section (normalized) → the original's file. */
export function toOriginal(c: CisoAssistantConfig): Original {
  const credentials: Record<string, unknown> = { token: c.api.token ?? '' };
  if (c.api.email !== undefined) credentials.email = c.api.email;
  if (c.api.password !== undefined) credentials.password = c.api.password;
  return {
    debug: c.debug,
    rest: { url: c.api.url, verify_certificate: c.api.verifyCertificate },
    credentials,
    auto_renew_session: c.api.autoRenew,
    bootstrap_servers: c.kafka.bootstrapServers.join(','),
    kafka: {
      use_auth: c.kafka.useAuth,
      sasl_mechanism: c.kafka.saslMechanism,
      security_protocol: c.kafka.securityProtocol,
      sasl_plain_username: c.kafka.username,
      sasl_plain_password: c.kafka.password,
    },
    errors_topic: c.errorsTopic,
    s3_url: c.s3.url,
    s3_access_key: c.s3.accessKey,
    s3_secret_key: c.s3.secretKey,
  };
}

/** The original's file, or `{}` with a warning when there is none. */
export function readOriginal(path = CONFIG_FILE, warn: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): Original {
  if (!existsSync(path)) {
    warn(`Config file '${path}' not found: using the environment and the defaults`);
    return {};
  }
  const value = parse(readFileSync(path, 'utf8')) as unknown;
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Original) : {};
}

/**
 * The section the verbs start from: the file, and for `auth` and `consume` `.tmp.yaml`'s token when no PAT is
 * set (`init-config` never writes that session token into the file as a Personal Access Token).
 */
function baseSection(withSessionToken: boolean): Record<string, unknown> {
  const section = fromOriginal(readOriginal());
  const api = (section.api ?? {}) as Record<string, unknown>;
  if (withSessionToken && api.token === undefined && existsSync(TOKEN_FILE)) {
    const saved = parse(readFileSync(TOKEN_FILE, 'utf8')) as { token?: unknown } | null;
    if (typeof saved?.token === 'string' && saved.token !== '') section.api = { ...api, token: saved.token };
  }
  return section;
}

const base = (section: Record<string, unknown>) => ({ source: CONFIG_FILE, value: { profiles: { [PROFILE]: section } } });

/** Private files (the token, the passwords): 0600 whether created now or there before, set before they are written. */
function writePrivate(file: string, text: string): void {
  const fd = openSync(file, 'w', 0o600);
  try {
    fchmodSync(fd, 0o600);
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

/**
 * The questions of one command, on one reader of standard input: answers piped all at once are each read in
 * turn, and what is typed for a secret is not echoed on a terminal.
 */
class Prompts {
  #reader: { rl: Interface; lines: AsyncIterator<string> } | undefined;
  #muted = false;

  /** Standard input is read from the first question on only (`init-config -y` never touches it). */
  #open(): { rl: Interface; lines: AsyncIterator<string> } {
    if (this.#reader !== undefined) return this.#reader;
    const output = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        if (!this.#muted) process.stderr.write(chunk);
        done();
      },
    });
    const rl = createInterface({ input: process.stdin, output, terminal: process.stdin.isTTY === true });
    this.#reader = { rl, lines: rl[Symbol.asyncIterator]() };
    return this.#reader;
  }

  async ask(question: string, fallback: string, secret = false): Promise<string> {
    const shown = secret ? (fallback === '' ? '' : ' [keep]') : fallback === '' ? '' : ` [${fallback}]`;
    const { rl, lines } = this.#open();
    rl.setPrompt(`${question}${shown}: `);
    rl.prompt();
    this.#muted = secret;
    let line: IteratorResult<string>;
    try {
      line = await lines.next();
    } finally {
      this.#muted = false;
      if (secret && process.stdin.isTTY === true) process.stderr.write('\n');
    }
    if (line.done === true) throw new PromptEnded(question);
    const answer = line.value.trim();
    return answer === '' ? fallback : answer;
  }

  async confirm(question: string): Promise<boolean> {
    return /^y(es)?$/i.test(await this.ask(`${question} [y/N]`, 'n'));
  }

  close(): void {
    this.#reader?.rl.close();
  }
}

class PromptEnded extends Error {
  constructor(question: string) {
    super(`no answer to "${question}": the input ended (give one answer per line)`);
  }
}

export async function initConfigCommand(api: CliApi, options: { interactive?: boolean; yes?: boolean }): Promise<void> {
  const prompts = new Prompts();
  try {
    await initConfig(api, options, prompts);
  } catch (err) {
    if (err instanceof PromptEnded) throw api.fail(`${err.message}; nothing written`);
    throw err;
  } finally {
    prompts.close();
  }
}

async function initConfig(api: CliApi, options: { interactive?: boolean; yes?: boolean }, prompts: Prompts): Promise<void> {
  const file = base(baseSection(false));
  let section = (await api.section(PROFILE, file)) as unknown as CisoAssistantConfig;
  if (options.interactive === true) {
    const ask = prompts.ask.bind(prompts);
    const answers: Record<string, any> = { api: {}, kafka: {}, s3: {} };
    answers.api.url = (await ask('API URL', section.api.url)).replace(/\/+$/, '');
    answers.api.verifyCertificate = flag(await ask('Verify the API’s TLS certificate? (true/false)', String(section.api.verifyCertificate)));
    const token = await ask('Personal Access Token', section.api.token ?? '', true);
    if (token !== '') answers.api.token = token;
    answers.kafka.bootstrapServers = (await ask('Kafka bootstrap servers', section.kafka.bootstrapServers.join(','))).split(',').map((s) => s.trim()).filter(Boolean);
    answers.kafka.useAuth = flag(await ask('Does your Kafka broker require authentication? (yes/no)', 'yes'));
    if (answers.kafka.useAuth === true) {
      answers.kafka.username = await ask('Kafka user', section.kafka.username);
      answers.kafka.password = await ask('Kafka password', section.kafka.password, true);
      answers.kafka.saslMechanism = (await ask('SASL mechanism (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN)', 'SCRAM-SHA-256')).toUpperCase();
      answers.kafka.securityProtocol = (await ask('Security protocol (SASL_SSL, SASL_PLAINTEXT)', 'SASL_SSL')).toUpperCase();
    } else {
      // The file's or the environment's protocol when it is one of these, as the original's prompt took it.
      const protocol = section.kafka.securityProtocol.startsWith('SASL_') ? 'PLAINTEXT' : section.kafka.securityProtocol;
      answers.kafka.securityProtocol = (await ask('Security protocol (SSL, PLAINTEXT)', protocol)).toUpperCase();
    }
    answers.errorsTopic = await ask('Errors topic', section.errorsTopic);
    const s3 = await ask('S3 URL (optional)', section.s3.url);
    if (s3 !== '') {
      answers.s3.url = s3;
      answers.s3.accessKey = await ask('S3 access key', section.s3.accessKey);
      answers.s3.secretKey = await ask('S3 secret key', section.s3.secretKey, true);
    }
    // The answers over the file and the environment (which gave the defaults), checked and normalized as the
    // dispatcher reads them; what was not asked (credentials.email, auto_renew_session, …) is kept.
    section = (await api.section(PROFILE, file, { source: 'the answers', value: answers })) as unknown as CisoAssistantConfig;
  }
  if (options.yes !== true && existsSync(CONFIG_FILE) && !(await prompts.confirm(`This will create/reset '${CONFIG_FILE}'. Do you wish to continue?`))) {
    process.stderr.write('nothing written\n');
    return;
  }
  writePrivate(CONFIG_FILE, stringify(toOriginal(section)));
  process.stderr.write(`wrote ${CONFIG_FILE}\n`);
}

export async function authCommand(api: CliApi, options: { email?: string; password?: string }): Promise<void> {
  const section = (await api.section(PROFILE, base(baseSection(true)))) as unknown as CisoAssistantConfig;
  const email = options.email ?? section.api.email;
  const password = options.password ?? section.api.password;
  if (email === undefined || password === undefined || password === '') throw api.fail('Could not find any usable credentials: give --email and --password, or USER_EMAIL and USER_PASSWORD');
  const url = `${section.api.url}/iam/login/`;
  const { Agent, fetch } = await import('undici');
  let res: Awaited<ReturnType<typeof fetch>>;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { accept: 'application/json', 'content-type': 'application/json' },
      body: JSON.stringify({ username: email, password }),
      signal: AbortSignal.timeout(section.api.timeout),
      ...(section.api.verifyCertificate ? {} : { dispatcher: new Agent({ connect: { rejectUnauthorized: false } }) }),
    });
  } catch (err) {
    throw api.fail(`cannot reach ${url}: ${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}`);
  }
  const text = await res.text();
  if (!res.ok) throw api.fail(`${url} answered ${res.status}: ${text.slice(0, 200)}`);
  let answer: { token?: unknown; expiry?: unknown };
  try {
    answer = JSON.parse(text) as typeof answer;
  } catch {
    throw api.fail(`${url} answered what is not JSON: ${text.slice(0, 200)}`);
  }
  if (typeof answer.token !== 'string') throw api.fail(`${url} answered no token`);
  writePrivate(TOKEN_FILE, stringify({ expiry: answer.expiry ?? null, token: answer.token }));
  process.stdout.write(`Successfully authenticated. Token saved to ${TOKEN_FILE}\n`);
}

export async function consumeCommand(api: CliApi, options: { config?: string }): Promise<void> {
  const section = baseSection(true);
  const checked = (await api.section(PROFILE, base(section))) as unknown as CisoAssistantConfig;
  // As the original's consume: nothing is consumed without a way to call the API (every call would fail).
  if (checked.api.token === undefined && !canLogIn(checked.api)) {
    throw api.fail(`Failed to obtain access token for API authentication: set USER_TOKEN (credentials.token in ${CONFIG_FILE}), or run dispatcher ciso auth first`);
  }
  let host: string | undefined;
  try {
    host = new URL(checked.api.url).hostname;
  } catch {
    throw api.fail(`API URL is missing or not a URL in the configuration (${checked.api.url}): set API_URL or rest.url`);
  }
  // The API the user named is where the observations go: the HTTP client may reach it, private or not, beside
  // whatever actions.http.allow of a dispatcher.yaml lists.
  await api.serve({ ...(options.config === undefined ? {} : { config: options.config }), base: base(section), allow: [host] });
}

export function registerCisoCli(program: Command, api: CliApi): void {
  const ciso = program.command('ciso').description('CISO Assistant Dispatcher: its verbs, on its own .dispatcher_config.yaml and environment');
  ciso
    .command('init-config')
    .description(`write ${CONFIG_FILE} (the file, with API_URL, USER_TOKEN, BOOTSTRAP_SERVERS, … over it)`)
    .option('-i, --interactive', 'ask for each setting')
    .option('-y, --yes', 'overwrite without asking')
    .action((options: { interactive?: boolean; yes?: boolean }) => initConfigCommand(api, options));
  ciso
    .command('auth')
    .description(`log in to the API with an email and a password, and keep the token in ${TOKEN_FILE}`)
    .option('--email <email>', 'the account (default USER_EMAIL, credentials.email)')
    .option('--password <password>', 'its password (default USER_PASSWORD, credentials.password)')
    .action((options: { email?: string; password?: string }) => authCommand(api, options));
  ciso
    .command('consume')
    .description('consume observations and apply them to the API (serves, as dispatcher serve does)')
    .option('-c, --config <file>', 'a dispatcher.yaml for everything else (store, server, …)')
    .action((options: { config?: string }) => consumeCommand(api, options));
}
