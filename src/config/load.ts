/**
 * Loading the configuration, in one visible order (../../shared/STYLE.md, example 6):
 *
 *   defaults ← file (YAML) ← environment (`DISPATCHER_*`) ← overrides (flags)
 *
 * Objects merge deeply; arrays and scalars replace. The merged result is checked ONCE against
 * `CONFIG_SCHEMA` (Ajv, all errors), then normalized (durations → milliseconds, sizes → bytes, relative
 * paths → absolute, `schemaFile` → `schema`) and deep-frozen. Nothing checks it again later.
 *
 * Every problem names where the bad value came from (the file, the environment variable, `flags` or
 * `defaults`), the option's path and what is wrong, e.g.
 *
 *   dispatcher.yaml: routes[0].retry.attempts: must be >= 1, got 0
 *
 * Messages write paths the way docs/configuration.md names options (`deadLetters.maxCount`, with
 * `routes[0]` for list items and `types["alert.raised"]` for keys that are not plain words);
 * `problems[].pointer` is the same place as an RFC 6901 JSON pointer (`/routes/0/retry/attempts`).
 * They are collected, not thrown one at a time, so one run of `validate-config` shows them all.
 */

import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { isMap, isNode, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import { HTTP_ACTION_SECTION } from '../actions/http/settings.js';
import { PLAYBOOK_ACTION_SECTION } from '../actions/playbook/settings.js';
import { SERVER_SECTION } from '../api/settings.js';
import { configProblems, DispatcherError, type ErrorProblem } from '../core/errors.js';
import { isPskKey } from '../core/credentials.js';
import { INTAKE_SECTION } from '../core/intake.js';
import { decodeOptions, type Options, type Raw, type TSchema } from '../core/options.js';
import { fromPointer, toDisplayPath, toPointer, type Path } from '../core/paths.js';
import { toGrant, type Grant, type PermissionSpec } from '../core/principal.js';
import { qualified, STREAM_KINDS, type StreamKind } from '../core/profile.js';
import { ROUTE_SCHEMA, routeActions, type RouteConfig } from '../core/routes.js';
import { RETENTION_SECTION, RUNNER_SECTION } from '../core/runner.js';
import { INBOXES_SECTION } from '../core/inboxes.js';
import { AUTH_SECTION, DEAD_LETTERS_SECTION, LOG_SECTION, METRICS_SECTION, type AuthConfig, type PskConfig } from '../core/settings.js';
import { parseDuration, parseSize } from '../core/units.js';
import { PRESET, type Preset } from '../preset.js';
import { STORE_SECTION } from '../store/settings.js';
import { BUILTIN_DECODERS, inputSchema, OUTPUT_SCHEMA, TRANSPORT_NAMES, type TransportName } from '../transports/schema.js';
import type { DecoderConfig } from '../transports/decode.js';
import {
  configSchema,
  defaultConfig,
  ENV_OPTIONS,
  kindOf,
  presetNames,
  profileEnvOptions,
  schemaAt,
  unitOf,
  type DeepPartial,
  type DispatcherConfig,
  type InputConfig,
  type JsonSchema,
  type OutputConfig,
  type RawConfig,
  type SchemaNode,
  type StreamConfig,
  type TypeConfig,
  type ValueKind,
} from './schema.js';

export interface LoadConfigOptions {
  /** The YAML file; else `env.DISPATCHER_CONFIG`; else none (defaults, environment and overrides only). */
  file?: string;
  /** Where `DISPATCHER_*` variables and `${VAR}` substitutions are read from. Default: `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** The last layer: command-line flags. Relative paths in it are taken from the working directory. */
  overrides?: DeepPartial<RawConfig>;
  /** What the overrides are called in messages (default: the flags). */
  overridesSource?: string;
  /**
   * A layer under the file (and so under the environment): settings read from a seed system's own
   * configuration file (`dispatcher ciso consume` reads `.dispatcher_config.yaml`), named by `source`.
   */
  base?: { source: string; value: DeepPartial<RawConfig> };
  /** What the dispatcher is made of: the profiles whose sections `profiles` may hold (default: src/preset.ts). */
  preset?: Preset;
}

/** One problem of a configuration: `pointer` and `message` as every DispatcherError has them, plus `source`. */
export interface ConfigProblem extends ErrorProblem {
  /** Where the bad value came from: the file as given, an environment variable, `flags` or `defaults`. */
  source: string;
  /** The line of the file where the value (or the nearest enclosing one that is there) is written. */
  line?: number;
}

/** What `inspectConfig` found: every problem, and a configuration to go on checking with. */
export interface ConfigInspection {
  /**
   * The configuration when it has no problem. With problems, a stand-in for the checks that come later
   * (templates, actions, type schemas): every section with a problem has its defaults, a route with one is
   * disabled, a type with one is left out. Null when even that cannot be made (the file does not read, or
   * a section the routes depend on, `actions`, `plugins`, `profiles` or `outputs`, has a problem).
   */
  config: DispatcherConfig | null;
  problems: ConfigProblem[];
  /** A problem a later check found (its pointer from the root), with its source and line. */
  place(problem: ErrorProblem): ConfigProblem;
}

/** The file the command line reads when none is named: `dispatcher.yaml` in the working directory. */
export const DEFAULT_CONFIG_FILE = 'dispatcher.yaml';

/**
 * The configuration file of a command, in the order every command looks: the one it was given
 * (`--config`), else `DISPATCHER_CONFIG`, else `./dispatcher.yaml` when it exists, else none (the defaults
 * and the environment).
 */
export function findConfigFile(given: string | undefined, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string | undefined {
  if (given !== undefined && given !== '') return given;
  if (env.DISPATCHER_CONFIG) return env.DISPATCHER_CONFIG;
  return existsSync(path.join(cwd, DEFAULT_CONFIG_FILE)) ? DEFAULT_CONFIG_FILE : undefined;
}

/** The source label of the last layer. */
const FLAGS_SOURCE = 'flags';
const DEFAULTS_SOURCE = 'defaults';

/**
 * Merge the layers, check the result once, normalize it and freeze it. Throws a DispatcherError with code
 * `config_invalid` listing every problem found.
 */
export async function loadConfig(options: LoadConfigOptions = {}): Promise<DispatcherConfig> {
  const inspection = await inspectConfig(options);
  if (inspection.problems.length > 0 || inspection.config === null) throw configInvalid(inspection.problems);
  return inspection.config;
}

/** The error for a list of problems: one line each, in the file's order. */
export function configInvalid(list: readonly ConfigProblem[]): DispatcherError {
  return configProblems('configuration', list.map((p) => p.message), list);
}

/** Load as `loadConfig` does, but return every problem instead of throwing, with what is needed to check further. */
export async function inspectConfig(options: LoadConfigOptions = {}): Promise<ConfigInspection> {
  const env = options.env ?? process.env;
  const file = options.file ?? (env.DISPATCHER_CONFIG || undefined);
  const preset = options.preset ?? PRESET;
  const problems = new Problems();

  const layers: Layer[] = [{ source: DEFAULTS_SOURCE, value: defaultConfig(preset) }];
  if (options.base !== undefined) layers.push({ source: options.base.source, value: structuredClone(options.base.value) });
  if (file !== undefined) {
    const fileLayer = await readFileLayer(file, env, problems, configSchema(preset));
    if (fileLayer !== null) layers.push(fileLayer);
  }
  // The original variables of the profiles the file (or the flags) switch on, after the file, before `DISPATCHER_*`.
  const on = new Set([...layers.flatMap((l) => Object.keys(profilesOf(l.value))), ...Object.keys(profilesOf(options.overrides))]);
  layers.push(...readProfileEnvLayers(env, preset, on, problems));
  layers.push(...readEnvLayers(env, problems));
  if (options.overrides !== undefined) {
    layers.push({ source: options.overridesSource ?? FLAGS_SOURCE, value: resolvePaths(structuredClone(options.overrides), process.cwd()) });
  }
  // A layer that could not be read (or a variable that did not parse) is left out, but the rest is still
  // checked, so that one run reports every problem.
  const origins = new Origins();
  let merged: unknown = {};
  for (const layer of layers) merged = mergeLayer(merged, layer.value, [], layer.source, origins);

  // `profiles: { name: }` (nothing after the key) switches a profile on with its defaults.
  if (isPlainObject(merged) && isPlainObject(merged.profiles)) {
    for (const [name, section] of Object.entries(merged.profiles)) if (section === null) merged.profiles[name] = {};
  }
  checkSchema(merged, preset, origins, problems);
  checkRoutes(merged, origins, problems);
  const inspection = (config: DispatcherConfig | null): ConfigInspection => ({
    config,
    problems: problems.sorted(),
    place: (p) => problems.make(p.pointer === '' ? '' : origins.of(fromPointer(p.pointer)), fromPointer(p.pointer), p.message),
  });
  let raw = merged as RawConfig;
  if (problems.list.length > 0) {
    const standIn = salvage(merged, problems.list, preset);
    if (standIn === null) return inspection(null);
    const again = new Problems();
    checkSchema(standIn, preset, origins, again);
    checkRoutes(standIn, origins, again);
    if (again.list.length > 0) return inspection(null);
    raw = standIn as RawConfig;
  }
  const config = await normalize(raw, preset, origins, problems, env);
  return inspection(deepFreeze(config));
}

/** Sections the routes are compiled with: with a problem in one of them, the routes cannot be checked further. */
const ROUTE_INPUTS = new Set(['actions', 'plugins', 'profiles', 'outputs']);

/**
 * The configuration with every part that has a problem set aside: a section back to its defaults, a route
 * disabled (so the others keep their indexes), a type left out. Null when a problem concerns the whole.
 */
function salvage(merged: unknown, list: readonly ConfigProblem[], preset: Preset): unknown {
  if (!isPlainObject(merged)) return null;
  const defaults = defaultConfig(preset) as unknown as Record<string, unknown>;
  const out = structuredClone(merged);
  for (const problem of list) {
    const [root, key] = fromPointer(problem.pointer);
    if (root === undefined || typeof root === 'number' || ROUTE_INPUTS.has(root)) return null;
    if (root === 'routes' || root === 'types') {
      if (key === undefined) return null;
      if (root === 'types') delete (out.types as Record<string | number, unknown>)[key];
      else if (typeof key === 'number' && Array.isArray(out.routes)) {
        out.routes[key] = { name: `invalid-route-${key}`, enabled: false, match: {}, actions: [{ noop: {} }] };
      } else return null;
    } else if (root in defaults) out[root] = structuredClone(defaults[root]);
    else delete out[root];
  }
  return out;
}

/** Load `file` the way `loadConfig` would (with the environment, without flags); for `validate-config`. */
export function validateConfigFile(file: string, env: NodeJS.ProcessEnv = process.env, preset: Preset = PRESET): Promise<DispatcherConfig> {
  return loadConfig({ file, env, preset });
}

// ---------------------------------------------------------------------------------------------------
// Paths and problems.


class Problems {
  readonly list: ConfigProblem[] = [];
  readonly #locators = new Map<string, (p: Path) => number | undefined>();

  /** Lines of `source` are found by `locate`. */
  locate(source: string, locate: (p: Path) => number | undefined): void {
    this.#locators.set(source, locate);
  }

  add(source: string, p: Path, problem: string): void {
    const made = this.make(source, p, problem);
    if (!this.list.some((x) => x.message === made.message)) this.list.push(made);
  }

  /** `file:12: routes[0].retry.attempts: must be >= 1, got 0`: the source, its line when known, the path, the problem. */
  make(source: string, p: Path, problem: string): ConfigProblem {
    const line = this.#locators.get(source)?.(p);
    const display = toDisplayPath(p);
    const where = display === '' || problem.startsWith(display) ? '' : `${display}: `;
    const from = source === '' ? '' : line === undefined ? `${source}: ` : `${source}:${line}: `;
    return { pointer: toPointer(p), source, ...(line === undefined ? {} : { line }), message: `${from}${where}${problem}` };
  }

  sorted(): ConfigProblem[] {
    return inFileOrder(this.list);
  }
}

/** Problems in the order their sources first appear, each source's by line (a problem without one first). */
export function inFileOrder(list: readonly ConfigProblem[]): ConfigProblem[] {
  const order = [...new Set(list.map((p) => p.source))];
  return list
    .map((p, i) => ({ p, i }))
    .sort((a, b) => order.indexOf(a.p.source) - order.indexOf(b.p.source) || (a.p.line ?? 0) - (b.p.line ?? 0) || a.i - b.i)
    .map(({ p }) => p);
}

/** Which layer gave each value: pointer → source. A path without an entry inherits its parent's. */
class Origins {
  readonly #map = new Map<string, string>();

  set(p: Path, source: string, replacesSubtree: boolean): void {
    const pointer = toPointer(p);
    if (replacesSubtree) {
      for (const key of this.#map.keys()) if (key.startsWith(`${pointer}/`)) this.#map.delete(key);
    }
    this.#map.set(pointer, source);
  }

  of(p: Path): string {
    for (let n = p.length; n >= 0; n--) {
      const source = this.#map.get(toPointer(p.slice(0, n)));
      if (source !== undefined) return source;
    }
    return DEFAULTS_SOURCE;
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}…` : text;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

// ---------------------------------------------------------------------------------------------------
// Layers.

interface Layer {
  source: string;
  value: unknown;
}

/**
 * Merge `over` into `base`: objects key by key, anything else (arrays included) replaces. `undefined`
 * means "not set" (an absent flag), so it never replaces anything.
 */
function mergeLayer(base: unknown, over: unknown, p: Path, source: string, origins: Origins): unknown {
  if (over === undefined) return base;
  if (isPlainObject(over)) {
    // An object where there was none starts empty, so that each of its values records its own source and a
    // later layer merging into it takes the blame for its own values only.
    const into = isPlainObject(base) ? base : {};
    origins.set(p, source, into !== base);
    for (const [key, value] of Object.entries(over)) {
      if (value === undefined) continue;
      into[key] = mergeLayer(into[key], value, [...p, key], source, origins);
    }
    return into;
  }
  origins.set(p, source, true);
  return structuredClone(over);
}

async function readFileLayer(file: string, env: NodeJS.ProcessEnv, problems: Problems, schema: SchemaNode): Promise<Layer | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    problems.add(file, [], `cannot read the configuration file: ${(err as Error).message}`);
    return null;
  }
  const value = parseYamlText(text, file, [], problems, (locate) => problems.locate(file, locate));
  if (value === undefined) return null;
  if (value === null) return { source: file, value: {} }; // an empty file, or only comments
  if (!isPlainObject(value)) {
    problems.add(file, [], `the file must hold a mapping of sections (server, store, routes, …), not ${describe(value)}`);
    return null;
  }
  const before = problems.list.length;
  const substituted: Path[] = [];
  const expanded = substituteTree(value, [], env, file, problems, substituted);
  if (problems.list.length > before) return null;
  for (const p of substituted) coerceSubstituted(expanded as Record<string, unknown>, p, schema);
  return { source: file, value: resolvePaths(expanded as Record<string, unknown>, path.dirname(path.resolve(file))) };
}

/**
 * Parse YAML (JSON is YAML too). Syntax errors are reported with line and column against `source`, at
 * `at` (the option that named the file, for schema files). Returns undefined when the text is not valid.
 */
function parseYamlText(text: string, source: string, at: Path, problems: Problems, lines?: (locate: (p: Path) => number | undefined) => void): unknown {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true, lineCounter });
  // The line of a path: where its key (or list item) is written, else the nearest enclosing one's.
  lines?.((p) => {
    let node: unknown = doc.contents;
    let line: number | undefined;
    for (const key of p) {
      let at: unknown;
      if (isMap(node)) {
        const pair = node.items.find((item) => (isScalar(item.key) ? item.key.value : item.key) === key);
        at = pair?.key;
        node = pair?.value;
      } else if (isSeq(node) && typeof key === 'number') at = node = node.items[key];
      else break;
      if (!isNode(at) || at.range === undefined || at.range === null) break;
      line = lineCounter.linePos(at.range[0]).line;
    }
    return line;
  });
  if (doc.errors.length > 0) {
    for (const err of doc.errors) {
      const pos = err.linePos?.[0];
      const where = pos === undefined ? '' : ` at line ${pos.line}, column ${pos.col}`;
      const what = err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
      problems.add(source, at, `YAML syntax error${where}: ${what}`);
    }
    return undefined;
  }
  try {
    // A low alias count keeps a "billion laughs" document from expanding without bound.
    return doc.toJS({ maxAliasCount: 100 }) as unknown;
  } catch (err) {
    problems.add(source, at, `cannot read the YAML: ${(err as Error).message}`);
    return undefined;
  }
}

function profilesOf(value: unknown): Record<string, unknown> {
  return isPlainObject(value) && isPlainObject(value.profiles) ? value.profiles : {};
}

/** The variables of the profiles switched on (`Profile.environment`): one layer each, named by the variable. */
function readProfileEnvLayers(env: NodeJS.ProcessEnv, preset: Preset, on: ReadonlySet<string>, problems: Problems): Layer[] {
  const layers: Layer[] = [];
  for (const option of profileEnvOptions(preset)) {
    if (!on.has(option.profile)) continue;
    const text = env[option.variable];
    if (text === undefined || text === '') continue;
    const coerced = coerceText(option.kind, text);
    if (!coerced.ok) {
      problems.add(option.variable, option.path, `must be ${coerced.expected}, got ${describe(text)}`);
      continue;
    }
    let value: unknown = option.map === undefined ? coerced.value : option.map(coerced.value);
    for (const key of [...option.path].reverse()) value = { [key]: value };
    layers.push({ source: option.variable, value });
  }
  return layers;
}

/** One layer per variable set, so that a problem with its value names that variable. */
function readEnvLayers(env: NodeJS.ProcessEnv, problems: Problems): Layer[] {
  const layers: Layer[] = [];
  for (const option of ENV_OPTIONS) {
    const text = env[option.variable];
    // Empty means unset, as `FOO= dispatcher serve` or a compose file's `${FOO:-}` intend.
    if (text === undefined || text === '') continue;
    const coerced = coerceText(option.kind, text);
    if (!coerced.ok) {
      problems.add(option.variable, option.path, `must be ${coerced.expected}, got ${describe(text)}`);
      continue;
    }
    let value: unknown = coerced.value;
    for (const key of [...option.path].reverse()) value = { [key]: value };
    layers.push({ source: option.variable, value });
  }
  return layers;
}

type Coerced = { ok: true; value: unknown } | { ok: false; expected: string };

const BOOLEANS: Record<string, boolean> = { true: true, false: false, yes: true, no: false, on: true, off: false, '1': true, '0': false };

/** Text (an environment variable, a substituted value) as the option's kind wants it. */
function coerceText(kind: ValueKind, text: string): Coerced {
  const trimmed = text.trim();
  switch (kind) {
    case 'string':
      return { ok: true, value: text };
    case 'integer':
      return /^[+-]?\d+$/.test(trimmed) ? { ok: true, value: Number(trimmed) } : { ok: false, expected: 'an integer' };
    case 'number': {
      const n = Number(trimmed);
      return trimmed !== '' && Number.isFinite(n) ? { ok: true, value: n } : { ok: false, expected: 'a number' };
    }
    case 'boolean': {
      const b = BOOLEANS[trimmed.toLowerCase()];
      return b === undefined ? { ok: false, expected: 'true or false' } : { ok: true, value: b };
    }
    case 'duration':
      if (/^\d+$/.test(trimmed)) return { ok: true, value: Number(trimmed) };
      return parseDuration(trimmed) === null ? { ok: false, expected: DURATION_EXPECTED } : { ok: true, value: trimmed };
    case 'size':
      if (/^\d+$/.test(trimmed)) return { ok: true, value: Number(trimmed) };
      return parseSize(trimmed) === null ? { ok: false, expected: SIZE_EXPECTED } : { ok: true, value: trimmed };
    case 'string[]':
      return { ok: true, value: text.split(',').map((s) => s.trim()).filter((s) => s !== '') };
  }
}

const DURATION_EXPECTED = 'a duration (500ms, 30s, 5m, 1h, 7d) or a number of milliseconds';
const SIZE_EXPECTED = 'a size (512B, 64KiB, 1MiB, 1MB) or a number of bytes';

// ---------------------------------------------------------------------------------------------------
// `${VAR}` substitution, in the string values of the file, before anything is checked.

const VARIABLE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-([\s\S]*))?$/;

/**
 * `${VAR}` is the variable's value (an error when it is unset); `${VAR:-default}` is the default when the
 * variable is unset or empty; `$${` is a literal `${`.
 */
function substituteString(text: string, env: NodeJS.ProcessEnv): { value: string; expanded: boolean } | { error: string } {
  if (!text.includes('$')) return { value: text, expanded: false };
  let out = '';
  let expanded = false;
  let i = 0;
  while (i < text.length) {
    if (text.startsWith('$${', i)) {
      out += '${';
      i += 3;
    } else if (text.startsWith('${', i)) {
      const end = text.indexOf('}', i + 2);
      if (end < 0) return { error: 'unclosed "${" (write "$${" for a literal "${")' };
      const expression = text.slice(i + 2, end);
      const m = VARIABLE.exec(expression);
      if (!m) return { error: `bad substitution "\${${expression}}": write \${NAME} or \${NAME:-default} (or "$\${" for a literal "\${")` };
      const name = m[1]!;
      const value = env[name];
      if (m[2] !== undefined) out += value === undefined || value === '' ? m[2] : value;
      else if (value === undefined) return { error: `environment variable ${name} is not set (write \${${name}:-default} to give a default)` };
      else out += value;
      expanded = true;
      i = end + 1;
    } else {
      out += text[i];
      i += 1;
    }
  }
  return { value: out, expanded };
}

function substituteTree(
  value: unknown,
  p: Path,
  env: NodeJS.ProcessEnv,
  file: string,
  problems: Problems,
  substituted: Path[],
): unknown {
  if (typeof value === 'string') {
    const result = substituteString(value, env);
    if ('error' in result) {
      problems.add(file, p, result.error);
      return value;
    }
    if (result.expanded) substituted.push(p);
    return result.value;
  }
  if (Array.isArray(value)) return value.map((item, i) => substituteTree(item, [...p, i], env, file, problems, substituted));
  if (isPlainObject(value)) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      if (key === '__proto__') {
        problems.add(file, [...p, key], 'the key "__proto__" is not allowed');
        continue;
      }
      out[key] = substituteTree(item, [...p, key], env, file, problems, substituted);
    }
    return out;
  }
  return value;
}

/**
 * A substituted value is text; where the schema wants a number, a boolean, a duration or a size, read it
 * as the environment variables are read (`port: ${PORT:-8080}` is a port, not the string "8080"). Values
 * that do not read are left alone for the schema check to report.
 */
function coerceSubstituted(root: Record<string, unknown>, p: Path, schema: SchemaNode): void {
  const kind = kindOf(schemaAt(p, schema));
  if (kind === null || kind === 'string') return;
  let parent: unknown = root;
  for (const key of p.slice(0, -1)) parent = (parent as Record<string | number, unknown>)[key];
  const last = p[p.length - 1]!;
  const container = parent as Record<string | number, unknown>;
  const text = container[last];
  if (typeof text !== 'string') return;
  const coerced = coerceText(kind, text);
  if (coerced.ok) container[last] = coerced.value;
}

/** `./x` and `../x` in `plugins`, and every relative `schemaFile`, are taken from `baseDir`. */
function resolvePaths<T>(value: T, baseDir: string): T {
  if (!isPlainObject(value)) return value;
  if (isPlainObject(value.plugins)) {
    for (const [type, specifier] of Object.entries(value.plugins)) {
      // Only paths: a bare specifier (`@acme/dispatcher-action`) is a package, found by Node as usual.
      if (typeof specifier === 'string' && /^\.\.?([/\\]|$)/.test(specifier)) value.plugins[type] = path.resolve(baseDir, specifier);
    }
  }
  if (isPlainObject(value.types)) {
    for (const type of Object.values(value.types)) {
      if (isPlainObject(type) && typeof type.schemaFile === 'string' && type.schemaFile !== '') {
        type.schemaFile = path.resolve(baseDir, type.schemaFile);
      }
    }
  }
  return value;
}

// ---------------------------------------------------------------------------------------------------
// The check: once, with Ajv, against CONFIG_SCHEMA; then what a schema cannot say.

const validators = new WeakMap<Preset, ValidateFunction>();

function compiledSchema(preset: Preset): ValidateFunction {
  let validate = validators.get(preset);
  // useDefaults fills what a route or type leaves out (retry, timeout, …) from the schema's defaults;
  // verbose gives each error its schema and value, for messages that say what was expected and found.
  if (validate === undefined) {
    validate = new Ajv({ allErrors: true, verbose: true, useDefaults: true, allowUnionTypes: true, strict: true, strictRequired: false }).compile(configSchema(preset) as object);
    validators.set(preset, validate);
  }
  return validate;
}

function checkSchema(data: unknown, preset: Preset, origins: Origins, problems: Problems): void {
  const validate = compiledSchema(preset);
  if (validate(data)) return;
  const errors = validate.errors ?? [];
  // An option that is a duration or a size is an anyOf of a number and a pattern; say that once, in words,
  // instead of repeating each branch's complaint.
  const unitErrors = errors.filter((e) => e.keyword === 'anyOf' && unitOf(e.parentSchema as SchemaNode) !== null);
  for (const e of errors) {
    if (unitErrors.some((u) => u !== e && u.instancePath === e.instancePath && e.schemaPath.startsWith(`${u.schemaPath}/`))) continue;
    if (e.keyword === 'propertyNames') continue; // its inner error says it better
    const { at, problem } = explain(e, data);
    problems.add(origins.of(at), at, problem);
  }
}

/** Turn an Ajv pointer back into keys and indexes by walking the data (a key may look like a number). */
function pointerToPath(pointer: string, data: unknown): Path {
  if (pointer === '') return [];
  const out: (string | number)[] = [];
  let node = data;
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(node)) {
      out.push(Number(key));
      node = node[Number(key)];
    } else {
      out.push(key);
      node = isPlainObject(node) ? node[key] : undefined;
    }
  }
  return out;
}

function explain(e: ErrorObject, data: unknown): { at: Path; problem: string } {
  const at = pointerToPath(e.instancePath, data);
  const got = `, got ${describe(e.data)}`;
  const parent = e.parentSchema as SchemaNode | undefined;
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String(e.params.additionalProperty);
      const known = Object.keys(parent?.properties ?? {});
      const near = closest(key, known);
      const hint = near === null ? '' : ` (did you mean "${near}"?)`;
      return { at: [...at, key], problem: `unknown key "${key}"${hint}; known keys: ${known.join(', ')}` };
    }
    case 'required':
      return { at: [...at, String(e.params.missingProperty)], problem: 'is required' };
    case 'anyOf': {
      const unit = unitOf(parent);
      if (unit !== null) return { at, problem: `must be ${unit === 'duration' ? DURATION_EXPECTED : SIZE_EXPECTED}${got}` };
      return { at, problem: `${e.message ?? 'is invalid'}${got}` };
    }
    case 'not':
      if (parent?.properties?.schemaFile !== undefined) return { at, problem: 'give either "schema" or "schemaFile", not both' };
      return { at, problem: e.message ?? 'is invalid' };
    case 'enum':
      return { at, problem: `must be one of ${(e.params.allowedValues as unknown[]).join(', ')}${got}` };
    case 'type':
      return { at, problem: `must be ${String(e.params.type).split(',').join(' or ')}${got}` };
    case 'minItems':
      return { at, problem: `must hold at least ${String(e.params.limit)} item${e.params.limit === 1 ? '' : 's'}` };
    case 'minProperties':
      return { at, problem: `must hold at least ${String(e.params.limit)} key${e.params.limit === 1 ? '' : 's'}` };
    default:
      return { at, problem: `${e.message ?? 'is invalid'}${isPlainObject(e.data) || Array.isArray(e.data) ? '' : got}` };
  }
}

/** The known key a typo most likely meant: at most two edits away. */
function closest(key: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = 3;
  for (const candidate of known) {
    const distance = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * What the schema cannot say: route names are unique; an action names exactly one action type; action
 * names are unique within their route. Runs beside the schema check (so it must not trust the shape).
 */
function checkRoutes(data: unknown, origins: Origins, problems: Problems): void {
  const routes = isPlainObject(data) && Array.isArray(data.routes) ? data.routes : [];
  const firstIndex = new Map<string, number>();
  routes.forEach((route: unknown, i) => {
    if (!isPlainObject(route)) return;
    if (typeof route.name === 'string') {
      const at: Path = ['routes', i, 'name'];
      const first = firstIndex.get(route.name);
      if (first === undefined) firstIndex.set(route.name, i);
      else problems.add(origins.of(at), at, `route name "${route.name}" is used twice: by routes[${first}] and routes[${i}]`);
    }
    const actions = Array.isArray(route.actions) ? route.actions : [];
    const actionNames = new Map<string, number>();
    actions.forEach((action: unknown, j) => {
      if (!isPlainObject(action)) return;
      const at: Path = ['routes', i, 'actions', j];
      const types = Object.keys(action).filter((key) => key !== 'name');
      if (types.length !== 1) {
        const found = types.length === 0 ? 'none' : types.join(', ');
        problems.add(origins.of(at), at, `an action has exactly one action-type key (http, publish, noop, …) besides "name"; found ${found}`);
      }
      if (typeof action.name !== 'string') return;
      const other = actionNames.get(action.name);
      if (other === undefined) actionNames.set(action.name, j);
      else problems.add(origins.of([...at, 'name']), [...at, 'name'], `action name "${action.name}" is used twice in the route: by actions[${other}] and actions[${j}]`);
    });
  });
}

// ---------------------------------------------------------------------------------------------------
// Normalization: units, schema files; then freeze.

function ms(value: unknown): number {
  const n = parseDuration(value);
  // The schema check let only valid durations through; reaching this is a bug in the schema.
  if (n === null) throw new DispatcherError('internal', `not a duration after the schema check: ${describe(value)}`);
  return n;
}

function bytes(value: unknown): number {
  const n = parseSize(value);
  if (n === null) throw new DispatcherError('internal', `not a size after the schema check: ${describe(value)}`);
  return n;
}

/** A section normalized by its declaration: durations in milliseconds, sizes in bytes. */
function decoded<T extends TSchema>(section: T, value: unknown): Options<T> {
  return decodeOptions(section as SchemaNode, value) as Options<T>;
}

async function normalize(given: RawConfig, preset: Preset, origins: Origins, problems: Problems, env: NodeJS.ProcessEnv): Promise<DispatcherConfig> {
  const { http, playbook, ...otherActions } = given.actions;
  const profiles = normalizeProfiles(given, preset);
  const raw: RawConfig = {
    ...given,
    inputs: { ...given.inputs, ...profileTransports('inputs', given, preset, profiles, origins, problems) },
    outputs: { ...given.outputs, ...profileTransports('outputs', given, preset, profiles, origins, problems) },
  };
  return {
    server: decoded(SERVER_SECTION, raw.server),
    store: decoded(STORE_SECTION, raw.store),
    log: decoded(LOG_SECTION, raw.log),
    intake: decoded(INTAKE_SECTION, raw.intake),
    runner: decoded(RUNNER_SECTION, raw.runner),
    deadLetters: decoded(DEAD_LETTERS_SECTION, raw.deadLetters),
    retention: decoded(RETENTION_SECTION, raw.retention),
    inboxes: decoded(INBOXES_SECTION, raw.inboxes),
    metrics: decoded(METRICS_SECTION, raw.metrics),
    auth: normalizeAuth(raw.auth, origins, problems, env),
    actions: { ...otherActions, http: decoded(HTTP_ACTION_SECTION, http), playbook: decoded(PLAYBOOK_ACTION_SECTION, playbook) },
    plugins: { ...raw.plugins },
    inputs: normalizeInputs(raw, preset, origins, problems),
    outputs: normalizeOutputs(raw, preset, origins, problems),
    types: await normalizeTypes(raw.types, origins, problems),
    routes: [...raw.routes, ...profileRoutes(raw, preset, profiles, origins, problems)].map((route): RouteConfig => ({ ...decoded(ROUTE_SCHEMA, route), actions: routeActions(route.actions) })),
    profiles,
  };
}

/**
 * The routes of the profiles switched on, after the configured ones: checked against the route schema as a
 * configured route is (a profile's route that does not pass is the profile's bug, reported under its name),
 * and named so that no configured route takes a profile's name.
 */
let routeValidator: ValidateFunction | undefined;

function profileRoutes(
  raw: RawConfig,
  preset: Preset,
  sections: Readonly<Record<string, Record<string, unknown>>>,
  origins: Origins,
  problems: Problems,
): RawConfig['routes'] {
  const out: RawConfig['routes'] = [];
  const taken = new Map(raw.routes.map((r, i) => [r.name, i]));
  for (const profile of preset) {
    if (profile.routes === undefined || sections[profile.name] === undefined) continue;
    for (const route of profile.routes({ name: profile.name, config: sections[profile.name]! })) {
      const name = String(route.name);
      const at: Path = ['profiles', profile.name];
      if (!(name === profile.name || name.startsWith(`${profile.name}.`))) {
        problems.add(origins.of(at), at, `the profile's route "${name}" is not named after the profile (${profile.name} or ${profile.name}.<name>)`);
        continue;
      }
      const clash = taken.get(name);
      if (clash !== undefined) {
        problems.add(origins.of(['routes', clash, 'name']), ['routes', clash, 'name'], `route name "${name}" is the ${profile.name} profile's own route: name this one otherwise`);
        continue;
      }
      const copy = structuredClone(route) as Record<string, unknown>;
      routeValidator ??= new Ajv({ allErrors: true, useDefaults: true, allowUnionTypes: true, strict: false }).compile(ROUTE_SCHEMA as object);
      if (!routeValidator(copy)) {
        const why = (routeValidator.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`).join('; ');
        problems.add(origins.of(at), at, `the profile's route "${name}" is not a valid route: ${why}`);
        continue;
      }
      taken.set(name, -1);
      out.push(copy as RawConfig['routes'][number]);
    }
  }
  return out;
}

/** Validators of the profiles' inputs and outputs, per preset (its decoders are in the input schema) and section. */
const transportValidators = new WeakMap<Preset, Partial<Record<'inputs' | 'outputs', ValidateFunction>>>();

/**
 * The inputs or outputs of the profiles switched on (`Profile.inputs`, `Profile.outputs`): checked against
 * the schema a configured one meets (a profile's that does not pass is reported under its name), named after
 * the profile, none taking a configured one's name.
 */
function profileTransports(
  section: 'inputs' | 'outputs',
  raw: RawConfig,
  preset: Preset,
  sections: Readonly<Record<string, Record<string, unknown>>>,
  origins: Origins,
  problems: Problems,
): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const profile of preset) {
    const make = profile[section];
    if (make === undefined || sections[profile.name] === undefined) continue;
    const at: Path = ['profiles', profile.name];
    let made: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
    try {
      made = make({ name: profile.name, config: sections[profile.name]! });
    } catch (err) {
      // A profile refuses a section it cannot make a transport of, in its users' words.
      if (!(err instanceof DispatcherError)) throw err;
      problems.add(origins.of(at), at, err.message);
      continue;
    }
    for (const [name, entry] of Object.entries(made)) {
      if (!(name === profile.name || name.startsWith(`${profile.name}.`))) {
        problems.add(origins.of(at), at, `the profile's ${section === 'inputs' ? 'input' : 'output'} "${name}" is not named after the profile (${profile.name} or ${profile.name}.<name>)`);
        continue;
      }
      if (Object.hasOwn(raw[section], name)) {
        problems.add(origins.of([section, name]), [section, name], `${section}.${name} is the ${profile.name} profile's own: name this one otherwise`);
        continue;
      }
      let validators = transportValidators.get(preset);
      if (validators === undefined) transportValidators.set(preset, (validators = {}));
      const node = section === 'inputs' ? inputSchema(presetNames(preset).decoders) : OUTPUT_SCHEMA;
      const validate = (validators[section] ??= new Ajv({ allErrors: true, useDefaults: true, allowUnionTypes: true, strict: false }).compile(node as object));
      const copy = structuredClone(entry) as Record<string, unknown>;
      if (!validate(copy)) {
        const why = (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`).join('; ');
        problems.add(origins.of(at), at, `the profile's ${section === 'inputs' ? 'input' : 'output'} "${name}" is not valid: ${why}`);
        continue;
      }
      out[name] = copy;
    }
  }
  return out;
}

/** The profiles switched on, each section normalized by its declaration (`{}` for a profile without one). */
function normalizeProfiles(raw: RawConfig, preset: Preset): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const [name, section] of Object.entries(raw.profiles)) {
    const profile = preset.find((p) => p.name === name && p.builtIn !== true);
    // The schema check let only the preset's profiles through.
    if (profile === undefined) continue;
    out[name] = (profile.config === undefined ? { ...(section ?? {}) } : decodeOptions(profile.config as SchemaNode, section ?? {})) as Record<string, unknown>;
  }
  return out;
}

/**
 * The inputs or outputs of the configuration: each names exactly one transport (the schema has let only
 * the transports of its direction through), whose options get their durations in milliseconds and sizes
 * in bytes, as the rest of the configuration does.
 */
function transportEntries(section: 'inputs' | 'outputs', raw: RawConfig, origins: Origins, problems: Problems): Array<{ name: string; transport: TransportName; options: Record<string, unknown>; entry: Record<string, unknown> }> {
  const out = [];
  for (const [name, entry] of Object.entries(raw[section])) {
    const at = [section, name];
    const named = TRANSPORT_NAMES.filter((t) => entry[t] !== undefined);
    if (named.length !== 1) {
      problems.add(
        origins.of(at),
        at,
        named.length === 0 ? `names no transport: set one of ${TRANSPORT_NAMES.join(', ')}` : `names ${named.length} transports (${named.join(', ')}): set exactly one`,
      );
      continue;
    }
    const transport = named[0]!;
    const options = decodeOptions(schemaAt([...at, transport]), entry[transport]) as Record<string, unknown>;
    out.push({ name, transport, options, entry });
  }
  return out;
}

/** Compiled validators of the profiles' decoder options, by decoder name. */
const decoderValidators = new Map<object, ValidateFunction>();

function normalizeInputs(raw: RawConfig, preset: Preset, origins: Origins, problems: Problems): InputConfig[] {
  return transportEntries('inputs', raw, origins, problems).map(({ name, transport, options, entry }) => {
    const decoder = (entry.decoder as DecoderConfig | undefined) ?? { format: 'cloudevents' };
    checkDecoder(decoder, ['inputs', name, 'decoder'], raw, preset, origins, problems);
    return {
      name,
      transport,
      options,
      decoder,
      service: (entry.service as string | undefined) ?? name,
      orgId: (entry.orgId as string | undefined) ?? raw.auth.defaults.orgId,
      maxBytes: bytes(entry.maxBytes ?? raw.server.bodyLimit),
    };
  });
}

/** A profile's decoder: its profile is switched on, and its options are what it takes. */
function checkDecoder(decoder: DecoderConfig, at: Path, raw: RawConfig, preset: Preset, origins: Origins, problems: Problems): void {
  if ((BUILTIN_DECODERS as readonly string[]).includes(decoder.format)) {
    if ('options' in decoder && decoder.options !== undefined) problems.add(origins.of([...at, 'options']), [...at, 'options'], `the ${decoder.format} decoder takes no options`);
    return;
  }
  const profile = preset.find((p) => Object.keys(p.decoders ?? {}).some((n) => qualified(p, n) === decoder.format));
  if (profile === undefined) return; // the schema check names the known formats
  if (profile.builtIn !== true && !(profile.name in raw.profiles)) {
    problems.add(origins.of([...at, 'format']), [...at, 'format'], `the decoder "${decoder.format}" is the profile ${profile.name}'s: switch it on with \`profiles: { ${profile.name}: {} }\``);
    return;
  }
  const type = profile.decoders![decoder.format.slice(profile.builtIn === true ? 0 : profile.name.length + 1)]!;
  if (type.options === undefined) return;
  let validate = decoderValidators.get(type);
  if (validate === undefined) {
    validate = new Ajv({ allErrors: true, verbose: true, useDefaults: true, allowUnionTypes: true, strict: false }).compile(type.options as object);
    decoderValidators.set(type, validate);
  }
  const options = ((decoder as { options?: Record<string, unknown> }).options ??= {});
  if (validate(options)) return;
  for (const e of validate.errors ?? []) {
    const { at: inner, problem } = explain(e, options);
    problems.add(origins.of([...at, 'options']), [...at, 'options', ...inner], problem);
  }
}

const DEFAULT_PRESENTERS: Record<StreamKind, string> = { runEvents: 'run', hostEvents: 'host', deadLetters: 'deadLetter' };
const DEFAULT_STREAM_NAMES: Record<StreamKind, string> = { runEvents: 'run_events', hostEvents: 'host_events', deadLetters: 'dead_letters' };

function normalizeOutputs(raw: RawConfig, preset: Preset, origins: Origins, problems: Problems): OutputConfig[] {
  const { presenters } = presetNames(preset);
  return transportEntries('outputs', raw, origins, problems).map(({ name, transport, options, entry }) => {
    const written: Array<{ kind: StreamKind; spec: Record<string, unknown>; at: Path }> = [];
    for (const kind of STREAM_KINDS) if (entry[kind] !== undefined) written.push({ kind, spec: entry[kind] as Record<string, unknown>, at: ['outputs', name, kind] });
    ((entry.streams as Array<Record<string, unknown>> | undefined) ?? []).forEach((spec, i) => written.push({ kind: spec.stream as StreamKind, spec, at: ['outputs', name, 'streams', i] }));
    const streams: StreamConfig[] = [];
    const names = new Map<string, Path>();
    for (const { kind, spec, at } of written) {
      const stream: StreamConfig = {
        name: (spec.name as string | undefined) ?? DEFAULT_STREAM_NAMES[kind],
        kind,
        topic: spec.topic as string,
        presenter: (spec.presenter as string | undefined) ?? DEFAULT_PRESENTERS[kind],
        filter: { ...((spec.filter as StreamConfig['filter'] | undefined) ?? {}) },
      };
      const other = names.get(stream.name);
      if (other !== undefined) {
        problems.add(origins.of(at), at, `its cursor "${stream.name}" is also the cursor of ${toDisplayPath(other)}: give one of them a \`name\``);
      }
      names.set(stream.name, at);
      const presenter = presenters.get(stream.presenter);
      if (presenter === undefined) {
        const known = [...presenters].filter(([, p]) => p.stream === kind).map(([n]) => n);
        problems.add(origins.of([...at, 'presenter']), [...at, 'presenter'], `no presenter "${stream.presenter}"; for ${kind}: ${known.join(', ')}`);
      } else if (presenter.stream !== kind) {
        problems.add(origins.of([...at, 'presenter']), [...at, 'presenter'], `the presenter "${stream.presenter}" shows ${presenter.stream}, not ${kind}`);
      } else if (!preset.find((p) => p.name === presenter.profile)!.builtIn && !(presenter.profile in raw.profiles)) {
        problems.add(origins.of([...at, 'presenter']), [...at, 'presenter'], `the presenter "${stream.presenter}" is the profile ${presenter.profile}'s: switch it on with \`profiles: { ${presenter.profile}: {} }\``);
      }
      for (const [i, profile] of (stream.filter.profile ?? []).entries()) {
        if (!(profile in raw.profiles)) problems.add(origins.of([...at, 'filter']), [...at, 'filter', 'profile', i], `no profile "${profile}" is switched on`);
      }
      streams.push(stream);
    }
    return { name, transport, options, streams };
  });
}

/** Permission specs → grants; a bad one is a problem at its path. */
function grants(specs: readonly PermissionSpec[], at: Path, origins: Origins, problems: Problems): Grant[] {
  const out: Grant[] = [];
  specs.forEach((spec, i) => {
    try {
      out.push(toGrant(spec));
    } catch (err) {
      problems.add(origins.of([...at, i]), [...at, i], (err as Error).message);
    }
  });
  return out;
}

/** `PSK_AUTH_<SERVICE>=<key>` variables, as the playbook dispatcher reads them. */
const PSK_VARIABLE = /^PSK_AUTH_(.+)$/;

function normalizeAuth(auth: Raw<typeof AUTH_SECTION>, origins: Origins, problems: Problems, env: NodeJS.ProcessEnv): AuthConfig {
  const defaults = { orgId: auth.defaults.orgId, grants: grants(auth.defaults.permissions, ['auth', 'defaults', 'permissions'], origins, problems) };
  const psk: PskConfig[] = auth.psk.map((p, i) => ({
    service: p.service,
    key: p.key,
    orgId: p.orgId ?? defaults.orgId,
    grants: p.permissions === undefined ? defaults.grants : grants(p.permissions, ['auth', 'psk', i, 'permissions'], origins, problems),
    from: origins.of(['auth', 'psk', i]),
  }));
  if (auth.pskEnv) {
    for (const [name, value] of Object.entries(env).sort(([a], [b]) => a.localeCompare(b))) {
      const m = PSK_VARIABLE.exec(name);
      if (m === null || value === undefined || value === '') continue;
      if (!isPskKey(value)) {
        problems.add(name, [], 'a pre-shared key is letters and digits only, at least 8 of them');
        continue;
      }
      psk.push({ service: m[1]!.toLowerCase(), key: value, orgId: defaults.orgId, grants: defaults.grants, from: name });
    }
  }
  const seen = new Map<string, string>();
  for (const p of psk) {
    const other = seen.get(p.key);
    if (other !== undefined) problems.add(p.from, [], `the same pre-shared key is given for ${other} and for ${p.service}: each service needs its own key`);
    seen.set(p.key, p.service);
  }
  return {
    enabled: auth.enabled,
    psk,
    defaults,
    keyFile: auth.keyFile === '' ? null : path.resolve(auth.keyFile),
    tokens: { secrets: [...auth.tokens.secrets], lifetime: ms(auth.tokens.lifetime), rateLimit: { ...auth.tokens.rateLimit, window: ms(auth.tokens.rateLimit.window) } },
    identityHeader: {
      enabled: auth.identityHeader.enabled,
      name: auth.identityHeader.name.toLowerCase(),
      types: auth.identityHeader.types.map((t) => t.toLowerCase()),
      grants: grants(auth.identityHeader.permissions, ['auth', 'identityHeader', 'permissions'], origins, problems),
    },
    publicMetrics: auth.publicMetrics,
  };
}

async function normalizeTypes(
  types: RawConfig['types'],
  origins: Origins,
  problems: Problems,
): Promise<Record<string, TypeConfig>> {
  const out: Record<string, TypeConfig> = {};
  await Promise.all(
    Object.entries(types).map(async ([name, type]) => {
      const description = type.description === undefined ? {} : { description: type.description };
      if (type.schemaFile === undefined) {
        out[name] = { ...description, ...(type.schema === undefined ? {} : { schema: type.schema }) };
        return;
      }
      const schema = await readSchemaFile(type.schemaFile, ['types', name, 'schemaFile'], origins, problems);
      if (schema !== undefined) out[name] = { ...description, schema, schemaFile: type.schemaFile };
    }),
  );
  // Keep the file's order (Promise.all finished them in any order).
  return Object.fromEntries(Object.keys(types).filter((name) => name in out).map((name) => [name, out[name]!]));
}

async function readSchemaFile(file: string, at: Path, origins: Origins, problems: Problems): Promise<JsonSchema | undefined> {
  const source = origins.of(at);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    problems.add(source, at, `cannot read the schema file: ${(err as Error).message}`);
    return undefined;
  }
  let value: unknown;
  if (/\.json$/i.test(file)) {
    try {
      value = JSON.parse(text) as unknown;
    } catch (err) {
      problems.add(source, at, `${file} is not valid JSON: ${(err as Error).message}`);
      return undefined;
    }
  } else {
    const sub = new Problems();
    value = parseYamlText(text, file, [], sub);
    for (const p of sub.list) problems.add(source, at, p.message);
    if (value === undefined) return undefined;
  }
  if (!isPlainObject(value)) {
    problems.add(source, at, `${file} must hold a JSON Schema object, not ${describe(value)}`);
    return undefined;
  }
  return value;
}

/** Freeze every object and array reachable from `value`. */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
