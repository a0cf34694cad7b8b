/**
 * The docs run as written. Every YAML example in README.md and docs/ is checked as `validate-config`
 * checks a file (the schema, the routes, the actions and their templates, the type schemas); an example
 * that is part of a configuration (a route's `match`, an input, a list of actions, permissions) is checked
 * inside the smallest configuration that holds it. The README's quick start is run against a served
 * dispatcher, with the built command line, and its output compared with what the README shows.
 */

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { JSONParser } from '@streamparser/json';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inspectConfig } from '../src/config/load.js';
import { CONFIG_SCHEMA } from '../src/config/schema.js';
import { compileForCheck } from '../src/cli/routes-test.js';
import { TypeRegistry } from '../src/core/type-registry.js';
import { PRESET } from '../src/preset.js';
import { ensureBuilt, exited, freePort, MAIN, ROOT, startChild, waitHealthy, type Child } from './child.js';

const DOCS = ['README.md', 'docs/actions.md', 'docs/api.md', 'docs/auth.md', 'docs/configuration.md', 'docs/errors.md', 'docs/outputs.md', 'docs/routing.md', 'docs/transports.md', 'docs/profiles/README.md', 'docs/profiles/playbook-dispatcher.md', 'docs/profiles/communications-backbone.md', 'docs/profiles/ciso-assistant.md'];
const SECTIONS = new Set(Object.keys(CONFIG_SCHEMA.properties!));
const TRANSPORTS = new Set(['kafka', 'amqp', 'nats', 'sqs', 'mqtt']);
const PROFILES = new Set(PRESET.map((p) => p.name));

interface Example {
  where: string;
  text: string;
}

function examples(lang: string): Example[] {
  const out: Example[] = [];
  for (const file of DOCS) {
    const text = readFileSync(join(ROOT, file), 'utf8');
    const fence = new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g');
    for (let m = fence.exec(text); m !== null; m = fence.exec(text)) out.push({ where: `${file}:${text.slice(0, m.index).split('\n').length}`, text: m[1]! });
  }
  return out;
}

/** The smallest configuration that holds an example: itself, when it is one. */
function configOf(value: unknown): Record<string, unknown> | string {
  const route = (match: unknown, actions: unknown = [{ noop: {} }]) => ({ routes: [{ name: 'doc', match, actions }] });
  if (Array.isArray(value)) {
    // A route's actions; publishing ones name an output `bus`.
    const publishes = JSON.stringify(value).includes('"publish"');
    return { ...route({ type: 'doc.example' }, value), ...(publishes ? { outputs: { bus: { amqp: { url: 'amqp://127.0.0.1' } } } } : {}) };
  }
  if (value === null || typeof value !== 'object') return 'not a YAML mapping or list';
  const keys = Object.keys(value);
  if (keys.every((k) => SECTIONS.has(k))) return value as Record<string, unknown>;
  if (keys.length === 1 && keys[0] === 'match') return route((value as { match: unknown }).match);
  if (keys.every((k) => k === 'data' || k === '$or')) return route({ type: 'doc.example', ...(value as object) });
  if (keys.length === 1 && keys[0] === 'permissions') return { auth: { psk: [{ service: 'doc', key: 'placeholder0123456789', permissions: (value as { permissions: unknown }).permissions }] } };
  if (keys.length === 1 && TRANSPORTS.has(keys[0]!)) return { inputs: { doc: value } };
  return `no rule places an example with keys ${keys.join(', ')}`;
}

/**
 * The example's `${VAR}` references read a placeholder (letters and digits, long enough for a key or a
 * secret); nothing else is set, so that a profile's own variables (`DEBUG`, `API_URL`) keep the example's values.
 */
function envFor(text: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const m of text.matchAll(/\$\{([A-Z][A-Z0-9_]*)\}/g)) if (!m[1]!.startsWith('DISPATCHER_')) env[m[1]!] = 'placeholder0123456789abcdefghij';
  return env;
}

describe('the YAML examples of the docs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-docs-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const all = examples('yaml');
  // The code the docs show for a file (`// plugins/ticket.mjs` on its first line) is written there, so that
  // the configuration naming it loads it.
  for (const { text } of examples('js')) {
    const named = /^\/\/ ([\w./-]+\.m?js)\n/.exec(text);
    if (named === null) continue;
    const file = join(dir, named[1]!);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, text);
  }

  it('there are examples to check', () => {
    expect(all.length).toBeGreaterThan(25);
  });

  for (const [i, example] of all.entries()) {
    // What a profile brings is checked once the profile is in the preset; until then the example is skipped, saying why.
    const needs = [...example.text.matchAll(/\b(?:profiles:\s*\n\s+|presenter:\s*)([a-z][a-z0-9-]*)(?=[.:])/g)].map((m) => m[1]!).filter((p) => !PROFILES.has(p));
    if (needs.length > 0) console.warn(`docs-examples.test.ts: ${example.where} skipped: it needs the ${needs[0]} profile, which this build does not have`);
    it.skipIf(needs.length > 0)(`${example.where} is a valid configuration (or part of one)`, async () => {
      const config = configOf(parse(example.text));
      expect(typeof config, `${example.where}: ${String(config)}`).toBe('object');
      const file = join(dir, `example-${i}.yaml`);
      writeFileSync(file, JSON.stringify(config));
      const inspection = await inspectConfig({ file, env: envFor(example.text) });
      expect(inspection.problems.map((p) => p.message), example.where).toEqual([]);
      new TypeRegistry(inspection.config!.types);
      await (await compileForCheck(inspection.config!)).close();
    });
  }
});

describe("the README's quick start", () => {
  let dir: string;
  let server: Child | undefined;
  let port: number;

  beforeAll(async () => {
    ensureBuilt();
    dir = mkdtempSync(join(tmpdir(), 'dispatcher-quick-start-'));
    port = await freePort();
    // `npm start` is `dispatcher serve` with no configuration; only the port differs, so that tests can run side by side.
    server = startChild(undefined, dir, { DISPATCHER_SERVER_PORT: String(port), DISPATCHER_CONFIG: '' });
    await waitHealthy(server, port);
  });

  afterAll(async () => {
    if (server !== undefined) {
      server.process.kill('SIGTERM');
      await exited(server.process);
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('runs as written: the admin key, the event sent with curl, its run listed by curl and by the CLI', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const block = /Send an event and watch its run succeed:\n\n```sh\n([\s\S]*?)```/.exec(readme);
    expect(block, 'the quick start block').not.toBeNull();
    const script = block![1]!
      .replaceAll('127.0.0.1:8080', `127.0.0.1:${port}`)
      .replaceAll('npx dispatcher', `${JSON.stringify(process.execPath)} ${JSON.stringify(MAIN)}`)
      // The run is made as the event is taken; wait for it to end, as a reader would, before listing.
      .replace(/\ncurl -sg/, '\nsleep 1\ncurl -sg');
    const shown = /^# (\{.*\})$/m.exec(block![1]!)![1]!;
    // The command line finds the server as serve does: the port from DISPATCHER_SERVER_PORT, the key in ./data/admin.key.
    const run = spawnSync('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, encoding: 'utf8', env: { ...process.env, DISPATCHER_URL: '', DISPATCHER_CONFIG: '', DISPATCHER_SERVER_PORT: String(port) }, timeout: 30_000 });
    expect(run.status, `${run.stdout}\n${run.stderr}`).toBe(0);
    // curl prints each answer without a newline after it: the JSON values one after the other.
    const values: unknown[] = [];
    const parser = new JSONParser({ paths: ['$'], separator: '', keepStack: false });
    parser.onValue = ({ value }) => values.push(value);
    parser.write(run.stdout.slice(0, run.stdout.search(/ID\s+STATUS/)));
    const [answer, runs] = values as [any, any];
    // The answer has the shape the README shows, its ids aside.
    const expected = JSON.parse(shown.replaceAll('"…"', '"id"'));
    expect(Object.keys(answer)).toEqual(Object.keys(expected));
    expect(Object.keys(answer.events[0])).toEqual(Object.keys(expected.events[0]));
    expect(answer).toMatchObject({ accepted: 1, duplicates: 0, refused: 0, events: [{ index: 0, status: 'accepted' }] });
    expect(runs.data.map((r: { id: string }) => r.id)).toContain(answer.events[0].runs[0]);
    expect(run.stdout).toMatch(/ID\s+STATUS\s+ROUTE/);
    expect(run.stdout).toContain(answer.events[0].runs[0]);
  });
});
