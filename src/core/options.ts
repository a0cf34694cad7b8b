/**
 * The option vocabulary: how a part declares its section of the configuration, once.
 *
 * A section is a TypeBox schema written beside the code that reads it (`RUNNER_SECTION` in runner.ts, a
 * transport's options in its `schema.ts`, a profile's in its folder). Everything else comes from that one
 * declaration:
 *
 * - the JSON Schema the loader checks the merged configuration against (and docs/config.schema.json and
 *   docs/configuration.md, generated from it);
 * - the defaults: each option's `default` (Ajv fills them in; `defaultsOf` collects them);
 * - the types: `Raw<typeof S>` as a person writes it (durations as `30s`), `Options<typeof S>` once
 *   normalized (durations in milliseconds, sizes in bytes);
 * - the normalization itself: `decodeOptions(S, raw)`.
 *
 * Words: an **option** is one setting; a **section** is an object of options with defaults (`server`,
 * `runner`, a profile's); a **unit** option is a duration or a size, written as text or as a number.
 */

import { OptionalKind, TransformKind, Type, type ObjectOptions, type StaticDecode, type Static, type TObject, type TProperties, type TSchema, type TUnsafe } from '@sinclair/typebox';
import { DispatcherError } from './errors.js';
import { DURATION_SCHEMA, parseDuration, parseSize, SIZE_SCHEMA } from './units.js';

export { Type };
export type { TObject, TSchema };

/** An option as written (durations as text or milliseconds). */
export type Raw<T extends TSchema> = Static<T>;
/** An option once normalized: durations in milliseconds, sizes in bytes. */
export type Options<T extends TSchema> = StaticDecode<T>;

/** The subset of JSON Schema the configuration uses; enough for the loader and the docs generator to walk it. */
export interface SchemaNode {
  readonly $schema?: string;
  readonly title?: string;
  readonly description?: string;
  readonly type?: string | readonly string[];
  readonly default?: unknown;
  readonly examples?: readonly unknown[];
  readonly enum?: readonly unknown[];
  readonly const?: unknown;
  readonly pattern?: string;
  readonly format?: string;
  readonly minimum?: number;
  readonly maximum?: number;
  readonly minLength?: number;
  readonly maxLength?: number;
  readonly minItems?: number;
  readonly maxItems?: number;
  readonly minProperties?: number;
  readonly properties?: Readonly<Record<string, SchemaNode>>;
  readonly additionalProperties?: boolean | SchemaNode;
  readonly propertyNames?: SchemaNode;
  readonly required?: readonly string[];
  readonly items?: SchemaNode;
  readonly anyOf?: readonly SchemaNode[];
  readonly not?: SchemaNode;
}

function withDefault<T extends object>(options: T, value: unknown): T {
  return value === undefined ? options : { ...options, default: value };
}

function mustParse(value: unknown, parse: (v: unknown) => number | null, what: string): number {
  const n = parse(value);
  // The schema check let only valid values through; reaching this is a bug in a schema.
  if (n === null) throw new DispatcherError('internal', `not a ${what} after the schema check: ${JSON.stringify(value)}`);
  return n;
}

/** A duration option: `500ms`, `30s`, `5m`, `1h`, `7d` or milliseconds; normalized to milliseconds. */
export function duration(description: string, value?: string | number) {
  return Type.Transform(Type.Unsafe<string | number>(withDefault({ ...structuredClone(DURATION_SCHEMA), description }, value)))
    .Decode((v) => mustParse(v, parseDuration, 'duration'))
    .Encode((v) => v);
}

/** A size option: `512B`, `64KiB`, `1MiB`, `1MB` or bytes; normalized to bytes. */
export function size(description: string, value?: string | number) {
  return Type.Transform(Type.Unsafe<string | number>(withDefault({ ...structuredClone(SIZE_SCHEMA), description }, value)))
    .Decode((v) => mustParse(v, parseSize, 'size'))
    .Encode((v) => v);
}

/** The kind of a node holding a duration or a size, or null. */
export function unitOf(node: SchemaNode | undefined): 'duration' | 'size' | null {
  const pattern = node?.anyOf?.[1]?.pattern;
  if (pattern === undefined) return null;
  if (pattern === DURATION_SCHEMA.anyOf[1].pattern) return 'duration';
  if (pattern === SIZE_SCHEMA.anyOf[1].pattern) return 'size';
  return null;
}

/** Only the options without a default, and not marked optional, are required in what a person writes. */
function requireOnlyUndefaulted<T>(node: T): T {
  const properties = (node as unknown as { properties: Record<string, TSchema> }).properties;
  const required = Object.keys(properties).filter((key) => properties[key]!.default === undefined && properties[key]![OptionalKind] === undefined);
  const mutable = node as unknown as { required?: string[] };
  if (required.length > 0) mutable.required = required;
  else delete mutable.required;
  return node;
}

/**
 * A section: an object of options, unknown keys refused (so that typos are caught), filled with its
 * options' defaults when it is left out.
 */
export function section<P extends TProperties>(properties: P, options: ObjectOptions = {}): TObject<P> {
  return requireOnlyUndefaulted(Type.Object(properties, { additionalProperties: false, default: {}, ...options }));
}

/** An object of options that is absent unless given (no default of its own); unknown keys refused. */
export function object<P extends TProperties>(properties: P, options: ObjectOptions = {}): TObject<P> {
  return requireOnlyUndefaulted(Type.Object(properties, { additionalProperties: false, ...options }));
}

/** One of a list of values (`enum`). */
export function oneOf<const V extends readonly (string | number)[]>(values: V, options: { description?: string; default?: V[number] } = {}): TUnsafe<V[number]> {
  const typed = values.every((v) => typeof v === 'string') ? { type: 'string' } : {};
  return Type.Unsafe<V[number]>({ ...typed, enum: [...values], ...options });
}

/** A map from names the user chooses to values of one schema. */
export function map<T extends TSchema>(value: T, options: { description?: string; default?: unknown; propertyNames?: SchemaNode } = {}): TUnsafe<Record<string, Static<T>>> {
  return Type.Unsafe<Record<string, Static<T>>>({ type: 'object', ...options, additionalProperties: value });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * `value` normalized by `node`: every duration and size (at any depth) as a number, through the decode
 * of each TypeBox transform, or the unit of a plain node (`DURATION_SCHEMA`). Objects the node does not
 * describe are returned as they are. Call it on a value the schema check has passed.
 */
export function decodeOptions(node: SchemaNode | undefined, value: unknown): unknown {
  if (node === undefined || value === undefined || value === null) return value;
  const transform = (node as Record<symbol, { Decode(v: unknown): unknown } | undefined>)[TransformKind];
  if (transform !== undefined) return transform.Decode(value);
  const unit = unitOf(node);
  if (unit !== null) return unit === 'duration' ? mustParse(value, parseDuration, 'duration') : mustParse(value, parseSize, 'size');
  if (Array.isArray(value)) return node.items === undefined ? value : value.map((item) => decodeOptions(node.items, item));
  if (!isPlainObject(value)) return value;
  const rest = typeof node.additionalProperties === 'object' ? node.additionalProperties : undefined;
  if (node.properties === undefined && rest === undefined) return value;
  return Object.fromEntries(Object.entries(value).map(([key, v]) => [key, decodeOptions(node.properties?.[key] ?? rest, v)]));
}

/**
 * The defaults a node declares: its `default`; for a section, that object with each option's default
 * in it (recursively). A node without a `default` has none, whatever its options declare (an optional
 * object, or a profile's section, which appears only when it is switched on).
 */
export function defaultsOf(node: SchemaNode): unknown {
  if (node.default === undefined) return undefined;
  if (!isPlainObject(node.default) || node.properties === undefined) return structuredClone(node.default);
  const out: Record<string, unknown> = structuredClone(node.default);
  for (const [key, child] of Object.entries(node.properties)) {
    const value = defaultsOf(child);
    if (value !== undefined) out[key] = value;
  }
  return out;
}
