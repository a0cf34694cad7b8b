/**
 * The configuration: one JSON Schema, composed of the sections the parts declare (core/options.ts is their
 * vocabulary), and the types of what it describes.
 *
 * Words (see ../shared/DESIGN.md §1):
 * - **raw configuration** (`RawConfig`): what a person writes in the YAML file, the environment or flags;
 *   durations and sizes as text (`30s`, `1MiB`) or plain numbers (milliseconds, bytes).
 * - **configuration** (`DispatcherConfig`): what `loadConfig` returns once the layers are merged, checked
 *   against the schema and normalized: durations in milliseconds, sizes in bytes, relative paths made
 *   absolute, `schemaFile`s read into `schema`; deep-frozen (its arrays too, though typed as plain arrays so
 *   that they can be handed to functions that take them).
 * - **section**: an object of options with their defaults, declared once beside the code that reads it
 *   (`server` in api/settings.ts, `runner` in core/runner.ts, a profile's in its folder); its options, their
 *   defaults, their types and their documentation all come from that declaration.
 * - **fixed section**: a section whose keys are all known (`server`, `store`, `log`, `intake`, `runner`,
 *   `deadLetters`, `retention`, `metrics`, `auth`, `actions.http`). An unknown key in one is an error, so typos
 *   are caught; each of its scalar options can also be set from an environment variable `DISPATCHER_<PATH>`.
 *
 * docs/configuration.md and docs/config.schema.json are generated from the schema (src/config/docs.ts).
 */

import { HTTP_ACTION_SECTION, type HttpActionSettings } from '../actions/http/settings.js';
import { PLAYBOOK_ACTION_SECTION, type PlaybookActionSettings } from '../actions/playbook/settings.js';
import { SERVER_SECTION, type ServerConfig } from '../api/settings.js';
import { INTAKE_SECTION, type IntakeConfig } from '../core/intake.js';
import { defaultsOf, map, object, unitOf, Type, type Raw, type SchemaNode } from '../core/options.js';
import { qualified, type StreamKind } from '../core/profile.js';
import { EXAMPLE_ROUTE, ROUTE_SCHEMA, type RouteConfig } from '../core/routes.js';
import { RETENTION_SECTION, RUNNER_SECTION, type RetentionConfig, type RunnerConfig } from '../core/runner.js';
import { INBOXES_SECTION, type InboxesConfig } from '../core/inboxes.js';
import { AUTH_SECTION, DEAD_LETTERS_SECTION, LOG_SECTION, METRICS_SECTION, NAME_PATTERN, type AuthConfig, type DeadLettersConfig, type LogConfig, type MetricsConfig } from '../core/settings.js';
import { TYPE_SCHEMA, type TypeDefinition } from '../core/type-registry.js';
import { PRESET, type Preset } from '../preset.js';
import { STORE_SECTION, type StoreConfig } from '../store/settings.js';
import type { DecoderConfig } from '../transports/decode.js';
import { inputSchema, OUTPUT_SCHEMA, type TransportName } from '../transports/schema.js';

export type { SchemaNode } from '../core/options.js';
export { unitOf } from '../core/options.js';
export { LOG_LEVELS, type LogLevel, type AuthConfig, type PskConfig } from '../core/settings.js';
export type { ServerConfig, StoreConfig, IntakeConfig, RunnerConfig, RetentionConfig, DeadLettersConfig, LogConfig, MetricsConfig, HttpActionSettings, RouteConfig };

/** `500ms`, `30s`, `5m`, `1h`, `7d`, or a number of milliseconds. */
export type Duration = string | number;
/** `512B`, `64KiB`, `1MiB`, `1MB`, or a number of bytes. */
export type Size = string | number;

/** A JSON Schema, as given for an event type. */
export type JsonSchema = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------------
// The schema, composed of the sections.

/** The sections whose scalar options can be set from `DISPATCHER_*` environment variables. */
export const FIXED_SECTIONS = ['server', 'store', 'log', 'intake', 'runner', 'deadLetters', 'retention', 'inboxes', 'metrics', 'auth', 'actions.http', 'actions.playbook'] as const;

const ACTIONS_SCHEMA = Type.Unsafe<{ http: Raw<typeof HTTP_ACTION_SECTION>; playbook: Raw<typeof PLAYBOOK_ACTION_SECTION> } & Record<string, Record<string, unknown>>>({
  type: 'object',
  description: 'Settings shared by every action of a type; the key is the action type.',
  default: {},
  properties: { http: HTTP_ACTION_SECTION, playbook: PLAYBOOK_ACTION_SECTION },
  additionalProperties: { type: 'object', description: 'Settings of one action type, as the action defines them (not normalized).' },
});

/** The decoders and presenters the preset's profiles offer, by the names the configuration uses. */
export function presetNames(preset: Preset): { decoders: string[]; presenters: Map<string, { profile: string; stream: StreamKind }> } {
  const decoders: string[] = [];
  const presenters = new Map<string, { profile: string; stream: StreamKind }>();
  for (const p of preset) {
    for (const name of Object.keys(p.decoders ?? {})) decoders.push(qualified(p, name));
    for (const [name, presenter] of Object.entries(p.presenters ?? {})) presenters.set(qualified(p, name), { profile: p.name, stream: presenter.stream });
  }
  return { decoders, presenters };
}

function profilesSchema(preset: Preset): SchemaNode {
  const switchable = preset.filter((p) => p.builtIn !== true);
  return Type.Unsafe<Record<string, Record<string, unknown>>>({
    type: 'object',
    description:
      'The profiles switched on, by name: each makes the dispatcher speak one seed system\'s interface (its routes, actions, decoders, ' +
      'presenters; see docs/profiles/). A profile\'s key switches it on, with its options (`{}` or nothing for the defaults).',
    default: {},
    additionalProperties: false,
    // A profile's section has no default of its own: only its key in the configuration makes it appear.
    properties: Object.fromEntries(
      switchable.map((p) => {
        const { default: _none, ...section } = (p.config ?? object({})) as SchemaNode;
        return [p.name, { ...section, description: `${p.description}${section.description === undefined ? '' : ` ${section.description}`}` }];
      }),
    ),
  }) as SchemaNode;
}

const schemas = new WeakMap<Preset, SchemaNode>();

/** The schema of the whole configuration, with the sections of the preset's profiles (built once per preset). */
export function configSchema(preset: Preset = PRESET): SchemaNode {
  let schema = schemas.get(preset);
  if (schema === undefined) {
    schema = object(
      {
        server: SERVER_SECTION,
        store: STORE_SECTION,
        log: LOG_SECTION,
        intake: INTAKE_SECTION,
        runner: RUNNER_SECTION,
        deadLetters: DEAD_LETTERS_SECTION,
        retention: RETENTION_SECTION,
        inboxes: INBOXES_SECTION,
        metrics: METRICS_SECTION,
        auth: AUTH_SECTION,
        actions: ACTIONS_SCHEMA,
        inputs: map(Type.Unsafe(inputSchema(presetNames(preset).decoders)), {
          description: 'Bus inputs, by name (see docs/transports.md). Each names exactly one transport: `kafka`, `amqp`, `nats`, `sqs` or `mqtt`.',
          default: {},
          propertyNames: { type: 'string', pattern: NAME_PATTERN },
        }),
        outputs: map(Type.Unsafe(OUTPUT_SCHEMA), {
          description: 'Bus outputs, by name (see docs/transports.md and docs/outputs.md): the streams relayed to them (run events, host events, dead letters) and where `publish` actions may send.',
          default: {},
          propertyNames: { type: 'string', pattern: NAME_PATTERN },
        }),
        plugins: map(
          Type.String({
            minLength: 1,
            description:
              'A module path (`./plugins/x.js`: relative to the configuration file) or a package name; its default export ' +
              '(or export `action`) is the action type.',
          }),
          { description: 'Action types provided by modules: action type → module.', default: {}, propertyNames: { type: 'string', minLength: 1 } },
        ),
        types: map(TYPE_SCHEMA, { description: 'Registered event types, keyed by CloudEvents `type`.', default: {}, propertyNames: { type: 'string', minLength: 1 } }),
        routes: Type.Array(ROUTE_SCHEMA, { description: 'The routes, in order. Setting this replaces the built-in `example` route.', default: [EXAMPLE_ROUTE] }),
        profiles: Type.Unsafe<Record<string, Record<string, unknown>>>(profilesSchema(preset)),
      },
      {
        $schema: 'http://json-schema.org/draft-07/schema#',
        title: 'Dispatcher configuration',
        description:
          'Configuration of the Dispatcher event dispatcher. Layers, each overriding the one before: defaults ← this ' +
          'file ← environment (`DISPATCHER_*`) ← command-line flags. Durations: `500ms`, `30s`, `5m`, `1h`, `7d` or ' +
          'milliseconds; sizes: `512B`, `64KiB`, `1MiB`, `1MB` or bytes.',
      },
    ) as SchemaNode;
    schemas.set(preset, schema);
  }
  return schema;
}

/** The schema of the shipped preset: what docs/config.schema.json holds. */
export const CONFIG_SCHEMA: SchemaNode = configSchema(PRESET);

// ---------------------------------------------------------------------------------------------------
// The types.

/** The configuration as written: every section with its defaults filled in (the file may leave any out). */
export interface RawConfig {
  server: Raw<typeof SERVER_SECTION>;
  store: Raw<typeof STORE_SECTION>;
  log: Raw<typeof LOG_SECTION>;
  intake: Raw<typeof INTAKE_SECTION>;
  runner: Raw<typeof RUNNER_SECTION>;
  deadLetters: Raw<typeof DEAD_LETTERS_SECTION>;
  retention: Raw<typeof RETENTION_SECTION>;
  inboxes: Raw<typeof INBOXES_SECTION>;
  metrics: Raw<typeof METRICS_SECTION>;
  auth: Raw<typeof AUTH_SECTION>;
  actions: Raw<typeof ACTIONS_SCHEMA>;
  plugins: Record<string, string>;
  inputs: Record<string, Record<string, unknown>>;
  outputs: Record<string, Record<string, unknown>>;
  types: Record<string, Raw<typeof TYPE_SCHEMA>>;
  routes: Array<Raw<typeof ROUTE_SCHEMA>>;
  /** The profiles switched on (`null`: with their defaults). */
  profiles: Record<string, Record<string, unknown> | null>;
}

export type RawRoute = Raw<typeof ROUTE_SCHEMA>;

/** Every property optional, all the way down; arrays stay whole (a layer that sets one replaces it). */
export type DeepPartial<T> = T extends readonly unknown[]
  ? T
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

/** `actions`: settings shared by every action of a type, keyed by action type. The built-in types' are normalized. */
export type ActionsConfig = { readonly http: HttpActionSettings; readonly playbook: PlaybookActionSettings } & Readonly<Record<string, Readonly<Record<string, unknown>>>>;

/** A registered event type: `schemaFile` read into `schema`. */
export type TypeConfig = TypeDefinition;

export interface InputConfig {
  readonly name: string;
  readonly transport: TransportName;
  /** The transport's options, as checked against its schema. */
  readonly options: Readonly<Record<string, unknown>>;
  readonly decoder: DecoderConfig;
  readonly service: string;
  readonly orgId: string;
  readonly maxBytes: number;
}

/** One stream of an output: what it relays, where, in which shape, and what it leaves out. */
export interface StreamConfig {
  /** The key of its cursor. */
  readonly name: string;
  readonly kind: StreamKind;
  readonly topic: string;
  /** A presenter's name: `run`, `host`, `deadLetter`, or `<profile>.<name>`. */
  readonly presenter: string;
  readonly filter: { readonly route?: readonly string[]; readonly service?: readonly string[]; readonly profile?: readonly string[] };
}

export interface OutputConfig {
  readonly name: string;
  readonly transport: TransportName;
  readonly options: Readonly<Record<string, unknown>>;
  readonly streams: readonly StreamConfig[];
}

export interface DispatcherConfig {
  readonly server: ServerConfig;
  readonly store: StoreConfig;
  readonly log: LogConfig;
  readonly intake: IntakeConfig;
  readonly runner: RunnerConfig;
  readonly deadLetters: DeadLettersConfig;
  readonly retention: RetentionConfig;
  readonly inboxes: InboxesConfig;
  readonly metrics: MetricsConfig;
  readonly auth: AuthConfig;
  readonly actions: ActionsConfig;
  /** Action type → module: an absolute path (relative ones were resolved) or a package name. */
  readonly plugins: Readonly<Record<string, string>>;
  /** Bus inputs, in the order configured. */
  readonly inputs: readonly InputConfig[];
  /** Bus outputs, in the order configured. */
  readonly outputs: readonly OutputConfig[];
  readonly types: Readonly<Record<string, TypeConfig>>;
  readonly routes: RouteConfig[];
  /** The profiles switched on, each with its section normalized (`{}` for one without options). */
  readonly profiles: Readonly<Record<string, Readonly<Record<string, unknown>>>>;
}

/** The defaults of every section, as a person would write them (`30s`, `1MiB`): the first layer of the configuration. */
export function defaultConfig(preset: Preset = PRESET): RawConfig {
  // The root has no default of its own (nothing holds it): each section's is taken.
  return defaultsOf({ ...configSchema(preset), default: {} }) as RawConfig;
}

// ---------------------------------------------------------------------------------------------------
// Walking the schema: value kinds and the environment variables derived from it.

/** What a scalar option holds, as far as coercing text (an environment variable) into it goes. */
export type ValueKind = 'string' | 'integer' | 'number' | 'boolean' | 'duration' | 'size' | 'string[]';

/** The kind of a leaf, or null for objects and anything else that text cannot be coerced into. */
export function kindOf(node: SchemaNode | undefined): ValueKind | null {
  if (node === undefined) return null;
  const unit = unitOf(node);
  if (unit !== null) return unit;
  switch (node.type) {
    case 'string':
    case 'integer':
    case 'number':
    case 'boolean':
      return node.type;
    case 'array':
      return node.items?.type === 'string' ? 'string[]' : null;
    default:
      return null;
  }
}

/** `deadLetters.maxCount` → `DISPATCHER_DEAD_LETTERS_MAX_COUNT`. */
export function envVariableName(path: readonly string[]): string {
  return ['DISPATCHER', ...path.map((key) => key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase())].join('_');
}

export interface EnvOption {
  /** `DISPATCHER_SERVER_PORT`. */
  readonly variable: string;
  /** `['server', 'port']`. */
  readonly path: readonly string[];
  readonly kind: ValueKind;
  readonly node: SchemaNode;
}

/** An environment variable of a profile (`Profile.environment`), read while the profile is on. */
export interface ProfileEnvOption extends EnvOption {
  readonly profile: string;
  readonly map?: (value: unknown) => unknown;
}

/** The variables the preset's profiles read, each with the option it sets (`['profiles', <name>, …]`). */
export function profileEnvOptions(preset: Preset = PRESET): ProfileEnvOption[] {
  const out: ProfileEnvOption[] = [];
  for (const p of preset) {
    for (const [variable, v] of Object.entries(p.environment ?? {})) {
      const path = ['profiles', p.name, ...v.path];
      const node = schemaAt(path, configSchema(preset));
      const kind = v.kind ?? kindOf(node);
      if (node === undefined || kind === null) throw new Error(`profile ${p.name}: ${variable} names ${v.path.join('.')}, which is not an option of its section that text can set`);
      out.push({ variable, path, kind, node, profile: p.name, ...(v.map === undefined ? {} : { map: v.map }) });
    }
  }
  return out;
}

/** The schema node at a path of keys (array indexes step into `items`), or undefined when there is none. */
export function schemaAt(path: readonly (string | number)[], root: SchemaNode = CONFIG_SCHEMA): SchemaNode | undefined {
  let node: SchemaNode | undefined = root;
  for (const key of path) {
    if (node === undefined) return undefined;
    if (node.type === 'array') {
      node = node.items;
    } else {
      const named: SchemaNode | undefined = node.properties?.[String(key)];
      node = named ?? (typeof node.additionalProperties === 'object' ? node.additionalProperties : undefined);
    }
  }
  return node;
}

function collectEnvOptions(): EnvOption[] {
  const options: EnvOption[] = [];
  const visit = (node: SchemaNode, path: string[]): void => {
    for (const [key, child] of Object.entries(node.properties ?? {})) {
      const childPath = [...path, key];
      const kind = kindOf(child);
      if (kind !== null) options.push({ variable: envVariableName(childPath), path: childPath, kind, node: child });
      else if (child.type === 'object') visit(child, childPath);
    }
  };
  for (const section of FIXED_SECTIONS) {
    const path = section.split('.');
    const node = schemaAt(path);
    if (node !== undefined) visit(node, path);
  }
  return options;
}

/** Every option that an environment variable can set: each scalar leaf of the fixed sections. */
export const ENV_OPTIONS: readonly EnvOption[] = collectEnvOptions();
