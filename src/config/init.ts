/**
 * `init-config`: write a commented starter configuration file, every section explained where it is set.
 *
 * Non-interactive (or `yes`), the file holds the defaults plus the example from docs/configuration.md
 * (an `alert.raised` type and a `page-critical` route). Interactive, it asks for the HTTP port, the store
 * URL, whether to include the example route, an optional webhook URL for it, and where the admin API key is
 * kept (made at once, so that the CLI and curl can use it before the first start). The file's first line
 * points editors at the JSON Schema (a `yaml-language-server` modeline). The CLI wiring lives in
 * src/cli; this module only reads answers from the streams it is given, so tests can answer.
 */

import { existsSync } from 'node:fs';
import { access, chmod, mkdir, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline/promises';
import { fileURLToPath } from 'node:url';
import { generateSecret } from '../core/credentials.js';
import { DispatcherError } from '../core/errors.js';
import { DEFAULTS } from './defaults.js';
import { CONFIG_SCHEMA } from './schema.js';
import { isHttpUrl } from '../core/url.js';

export interface InitConfigOptions {
  /** Where to write the file. */
  file: string;
  /** Ask the questions on `input` / `output`. */
  interactive?: boolean;
  /** Take every default without asking (wins over `interactive`). */
  yes?: boolean;
  /** Overwrite an existing file. */
  force?: boolean;
  /** Default: `process.stdin`. */
  input?: NodeJS.ReadableStream;
  /** Default: `process.stdout`. */
  output?: NodeJS.WritableStream;
}

/** What the starter file is made from. */
export interface StarterAnswers {
  port: number;
  storeUrl: string;
  /** Include the `alert.raised` type and the `page-critical` route (else they are written commented out). */
  includeExample: boolean;
  /** Where the example route's `http` action posts; null: the example runs `noop` instead. */
  webhookUrl: string | null;
  /** `auth.keyFile`: the admin API key's file; '' for none. */
  keyFile: string;
  /** The JSON Schema for the modeline, relative to the file or absolute; null: no modeline. */
  schema?: string | null;
}

export const DEFAULT_ANSWERS: Readonly<StarterAnswers> = {
  port: DEFAULTS.server.port,
  storeUrl: DEFAULTS.store.url,
  includeExample: true,
  webhookUrl: null,
  keyFile: DEFAULTS.auth.keyFile,
};

/** The published JSON Schema (docs/config.schema.json, shipped with the package), as the modeline of `file` names it. */
function schemaFor(file: string): string | null {
  const schema = fileURLToPath(new URL('../../docs/config.schema.json', import.meta.url));
  if (!existsSync(schema)) return null;
  const relative = path.relative(path.dirname(file), schema);
  return relative.startsWith('..' + path.sep + '..' + path.sep + '..') ? schema : relative.split(path.sep).join('/');
}

/** The admin key made now in `keyFile` (as `serve` would on its first start), unless it exists. Returns whether it was made. */
async function makeKey(keyFile: string): Promise<boolean> {
  if (keyFile === '' || existsSync(keyFile)) return false;
  await mkdir(path.dirname(path.resolve(keyFile)), { recursive: true });
  await writeFile(keyFile, `${generateSecret()}\n`, { mode: 0o600, flag: 'wx' });
  await chmod(keyFile, 0o600);
  return true;
}

/** Write the starter file; refuses to replace an existing file unless `force`. Returns its absolute path. */
export async function initConfig(options: InitConfigOptions): Promise<{ file: string; keyFile: string | null }> {
  const file = path.resolve(options.file);
  // Checked before asking anything, so nobody answers four questions to be told the file exists.
  if (!options.force && (await exists(file))) throw alreadyExists(options.file);
  const answers =
    options.interactive && !options.yes
      ? await askAnswers(options.input ?? process.stdin, options.output ?? process.stdout)
      : { ...DEFAULT_ANSWERS };
  answers.schema = schemaFor(file);
  await mkdir(path.dirname(file), { recursive: true });
  try {
    // `wx` fails if the file appeared meanwhile: never overwrite without `force`.
    await writeFile(file, renderStarterConfig(answers), { encoding: 'utf8', flag: options.force ? 'w' : 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw alreadyExists(options.file);
    throw err;
  }
  // Asked for, the key is made now; else `serve` makes it on its first start, when no other credential is configured.
  const made = options.interactive && !options.yes ? await makeKey(answers.keyFile) : false;
  return { file, keyFile: made ? answers.keyFile : null };
}

function alreadyExists(file: string): DispatcherError {
  return new DispatcherError('config_invalid', `${file} already exists; pass force (--force) to overwrite it`);
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------
// Questions.

const STORE_URL = new RegExp((CONFIG_SCHEMA.properties?.store?.properties?.url?.pattern ?? '^.+$'));

async function askAnswers(input: NodeJS.ReadableStream, output: NodeJS.WritableStream): Promise<StarterAnswers> {
  const rl = createInterface({ input, output, terminal: false });
  // Read lines through the iterator, created at once: it buffers lines that arrive before a question is
  // asked (piped or pre-written answers), which `rl.question` would drop.
  const lines = rl[Symbol.asyncIterator]();
  const ask = async <T>(question: string, fallback: string, read: (answer: string) => T | string): Promise<T> => {
    for (;;) {
      output.write(`${question} [${fallback}]: `);
      const next = await lines.next();
      // End of input: take the default, as if every remaining answer were empty.
      const answer = next.done ? '' : String(next.value).trim();
      const result = read(answer === '' ? fallback : answer);
      if (typeof result !== 'string') return result;
      output.write(`  ${result}\n`);
      if (next.done) return read(fallback) as T;
    }
  };
  try {
    const port = await ask('HTTP port', String(DEFAULT_ANSWERS.port), (a) =>
      /^\d+$/.test(a) && Number(a) >= 1 && Number(a) <= 65535 ? { value: Number(a) } : 'a port is a number from 1 to 65535',
    );
    const storeUrl = await ask('Store URL (sqlite:<file> or postgres://user@host:5432/db)', DEFAULT_ANSWERS.storeUrl, (a) =>
      STORE_URL.test(a) ? { value: a } : 'write sqlite:<file> or postgres://user@host:5432/db',
    );
    const includeExample = await ask('Include the example route (alert.raised → page-critical)?', 'Y/n', (a) => {
      if (/^(y|yes|y\/n)$/i.test(a)) return { value: true };
      if (/^(n|no)$/i.test(a)) return { value: false };
      return 'answer y or n';
    });
    let webhookUrl: { value: string | null } = { value: null };
    if (includeExample.value) {
      webhookUrl = await ask('Webhook URL for the example route (none: it runs the noop action)', 'none', (a) => {
        if (a === 'none' || a === '-') return { value: null };
        return isHttpUrl(a) ? { value: a } : 'write an http:// or https:// URL, or leave it empty';
      });
    }
    const keyFile = await ask('Admin API key file (made now if missing; the CLI reads it; "none" to set up keys yourself)', DEFAULT_ANSWERS.keyFile, (a) =>
      a === 'none' || a === '-' ? { value: '' } : /\s/.test(a) ? 'write a file path without spaces, or none' : { value: a },
    );
    return { port: port.value, storeUrl: storeUrl.value, includeExample: includeExample.value, webhookUrl: webhookUrl.value, keyFile: keyFile.value };
  } finally {
    rl.close();
  }
}

/**
 * Webhooks to loopback, private and link-local addresses are blocked unless allowed; a starter whose
 * example posts to `http://127.0.0.1:9000/hook` allows that host, or the example would fail.
 */
function needsAllow(url: string): string | null {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  if (host === 'localhost') return host;
  if (isIP(host) === 4 && /^(127\.|10\.|192\.168\.|169\.254\.|172\.(1[6-9]|2\d|3[01])\.|0\.)/.test(host)) return host;
  if (isIP(host) === 6 && /^(::1$|f[cd]|fe[89ab])/i.test(host)) return host;
  return null;
}

// ---------------------------------------------------------------------------------------------------
// The file.

/** A YAML double-quoted string that the loader reads back as written (`${` would be substituted). */
function str(value: string): string {
  return JSON.stringify(value).replace(/\$\{/g, () => '$${');
}

/** `  key: value   # comment`, the comments lined up. */
function kv(key: string, value: string | number | boolean, comment?: string, indent = 2): string {
  const text = `${' '.repeat(indent)}${key}: ${value}`;
  return comment === undefined ? text : `${text.padEnd(32)} # ${comment}`;
}

function commentOut(block: string): string {
  return block
    .split('\n')
    .map((line) => (line === '' ? '#' : `# ${line}`))
    .join('\n');
}

/** The starter file's text. It loads with `loadConfig` (a test makes sure). */
export function renderStarterConfig(answers: StarterAnswers): string {
  const d = DEFAULTS;
  const allow = answers.includeExample && answers.webhookUrl !== null ? needsAllow(answers.webhookUrl) : null;
  const allowLine =
    allow === null
      ? kv('allow', '[]', 'private/loopback targets webhooks may reach anyway, e.g. ["127.0.0.1", "10.0.0.0/8"]', 4)
      : kv('allow', `[${str(allow)}]`, "the example's webhook is on a private or loopback address", 4);

  const action =
    answers.webhookUrl === null
      ? [
          `      # A webhook instead: - http: { url: "https://example.com/hook", body: { text: "{{ data.title }}" } }`,
          `      - noop: {}`,
          `        name: notify`,
        ]
      : [
          `      - http:`,
          `          url: ${str(answers.webhookUrl)}`,
          `          body: { text: "{{ data.title }}" }   # templates render from the event`,
          `        name: notify`,
        ];

  const exampleType = [
    `  alert.raised:`,
    `    description: An alert from monitoring.`,
    `    schema:`,
    `      type: object`,
    `      required: [severity, title]`,
    `      properties:`,
    `        severity: { enum: [low, high, critical] }`,
    `        title: { type: string }`,
    `    # Or keep the schema in its own file (JSON or YAML, relative to this file; not both):`,
    `    # schemaFile: ./schemas/alert.json`,
  ].join('\n');

  const exampleRoute = [
    `  - name: page-critical          # required, unique: letters, digits, _ . : -`,
    `    description: Page the NOC for critical alerts.`,
    `    enabled: true`,
    `    match:                       # checked by the router: type, topic, data, extensions`,
    `      type: alert.raised         # exact, or with * wildcards: "alert.*"`,
    `      topic: "soar.*.noc.#"      # AMQP pattern: * is one word, # any number of words`,
    `      data: { severity: [critical] }`,
    `    actions:                     # at least one: one action-type key each, plus an optional name`,
    ...action,
    `    retry: { attempts: 5, backoff: 1s, maxBackoff: 5m, maxAge: 24h }`,
    `    timeout: 30s                 # one attempt`,
    `    deadline: 1h                 # the whole run, retries and waiting included`,
    `    concurrency: 10              # at most this many runs of this route at once`,
    `    orderingKey: "{{ subject }}" # runs with the same key run one at a time, in order`,
    `    labels: { team: noc }        # put on every run; values are string templates`,
  ].join('\n');

  return `${answers.schema ? `# yaml-language-server: $schema=${answers.schema}\n` : ''}# Dispatcher configuration, written by \`dispatcher init-config\`.
#
# Every option with its default, its environment variable and what it does: docs/configuration.md
# (and docs/config.schema.json, the JSON Schema, for editors).
#
# Layers, each overriding the one before:
#   defaults <- this file <- environment (DISPATCHER_*) <- command-line flags
# Sections merge key by key; a list (routes, allow) replaces the one before it.
#
# In string values, \${VAR} is the environment variable VAR (an error when it is unset),
# \${VAR:-default} falls back to a default, and $\${ writes a literal \${ .
# Durations: 500ms, 30s, 5m, 1h, 7d (or milliseconds); sizes: 512B, 64KiB, 1MiB, 1MB (or bytes).
# Unknown keys are errors, so a typo never goes unnoticed: \`dispatcher validate-config\` checks the file.

# The HTTP server: the HTTP input (events are POSTed to it) and the API.
server:
${kv('host', str(d.server.host), '"0.0.0.0" to listen on every interface')}
${kv('port', answers.port)}
${kv('bodyLimit', d.server.bodyLimit, 'larger request bodies get payload_too_large')}
${kv('requestTimeout', d.server.requestTimeout, 'longest time to wait for a whole request')}

# Where events, runs, run events and dead letters are kept:
#   sqlite:<file>                          embedded, one file (relative to the working directory)
#   postgres://user:password@host:5432/db  scale-out: any number of dispatcher processes share the work
# Keep passwords out of the file: url: "postgres://dispatcher:\${PGPASSWORD}@db:5432/dispatcher"
store:
${kv('url', str(answers.storeUrl))}
${kv('poolSize', d.store.poolSize, 'connections (PostgreSQL)')}

# Logging, as JSON lines on standard output.
log:
${kv('level', d.log.level, 'fatal, error, warn, info, debug, trace or silent')}

# Intake: how events are taken in and checked.
intake:
${kv('strict', d.intake.strict, 'true: an event whose type is not under `types` is a dead letter')}
${kv('maxBatch', d.intake.maxBatch, 'most events in one batch')}
${kv('maxDepth', d.intake.maxDepth, 'deepest JSON nesting accepted')}
${kv('maxHops', d.intake.maxHops, 'most `publish` hops an event may take: stops routing loops')}

# The runner: claims queued runs (with a lease it renews) and executes their actions.
runner:
${kv('concurrency', d.runner.concurrency, 'runs executing at once in this process')}
${kv('batchSize', d.runner.batchSize, 'runs claimed per query')}
${kv('lease', d.runner.lease, 'a claim not renewed within this is taken back by the sweeper')}
${kv('poll', d.runner.poll, 'how often to look for queued runs when nothing signalled')}
${kv('sweepInterval', d.runner.sweepInterval, 'requeue expired leases, turn expired deadlines into timeout')}
${kv('shutdownTimeout', d.runner.shutdownTimeout, 'on stop, wait this long for executing runs')}
${kv('dispatchWait', d.runner.dispatchWait, 'intake may wait this long for room to start its runs at once, when runs end fast')}

# Dead letters: anything that could not be accepted or finished, kept for inspection and replay.
deadLetters:
${kv('maxBytes', d.deadLetters.maxBytes, 'raw bytes kept per dead letter')}
${kv('maxCount', d.deadLetters.maxCount, 'beyond it, the oldest are deleted')}

# How long finished records are kept (0 = forever); pruned in small batches. The audit log is kept.
retention:
${kv('runs', d.retention.runs, 'ended runs, with their attempts')}
${kv('events', d.retention.events, 'events, once none of their runs is left')}
${kv('runEvents', d.retention.runEvents, 'the run-event outbox')}
${kv('deadLetters', d.retention.deadLetters, 'by when each was last seen')}

# Prometheus metrics on the HTTP server.
metrics:
${kv('enabled', d.metrics.enabled)}

# Who may call the API (docs/auth.md). With no credential configured, serve generates an admin key
# in keyFile. Pre-shared keys also come from PSK_AUTH_<SERVICE>=<key> environment variables.
auth:
${kv('enabled', d.auth.enabled, 'false: anyone who reaches the port may do anything')}
${kv('keyFile', str(answers.keyFile), 'the admin key (PSK of service admin); "" for none')}
  psk: []
  #  - { service: billing, key: "\${BILLING_KEY}", permissions: [dispatcher:events:write, dispatcher:runs:read] }
  tokens:                         # bearer tokens for clients (dispatcher clients create …; POST /v1/token)
    secrets: []                   # signing secrets, the first signs; empty: one is generated and stored
${kv('lifetime', d.auth.tokens.lifetime, undefined, 4)}
  identityHeader:                 # set by a trusted gateway: turn on only behind one
${kv('enabled', d.auth.identityHeader.enabled, undefined, 4)}
${kv('name', str(d.auth.identityHeader.name), undefined, 4)}
${kv('publicMetrics', d.auth.publicMetrics, 'true: /metrics without credentials')}

# Settings shared by every action of a type; the key is the action type.
actions:
${'  http:'.padEnd(32)} # webhooks
${allowLine}
    # signingSecret: "\${WEBHOOK_SECRET}"    # sign requests, Standard Webhooks style; unset: unsigned
${kv('timeout', d.actions.http.timeout, 'longest time one request may take', 4)}
${kv('maxResponseBytes', d.actions.http.maxResponseBytes, 'how much of the answer is kept on the run', 4)}
${kv('userAgent', str(d.actions.http.userAgent), undefined, 4)}
  # Other action types take their own settings, e.g.  slack: { token: "\${SLACK_TOKEN}" }

# Action types from your own modules: action type -> module path (relative to this file) or package.
plugins: {}
#  collect: ./plugins/collect.js

# Registered event types, keyed by CloudEvents \`type\`, each with an optional JSON Schema for \`data\`.
# An event that fails its type's schema becomes a dead letter (schema_violation), never dropped.
${answers.includeExample ? `types:\n${exampleType}` : `types: {}\n${commentOut(exampleType)}`}

# Routes, in order: an event that matches a route becomes one run per action of the route.
# Setting \`routes\` replaces the built-in list (which holds only the \`example\` route below).
routes:
  # Every example.* event becomes a run of the noop action, which succeeds: POST an event of type
  # example.hello to try the whole way of an event. Delete this route once you have your own.
  - name: example
    match: { type: "example.*" }
    actions:
      - noop: {}

${answers.includeExample ? exampleRoute : commentOut(exampleRoute)}
`;
}
