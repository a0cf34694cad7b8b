/**
 * Registered event types and their JSON Schemas, compiled once with Ajv when the configuration loads.
 * An event whose `data` fails its type's schema is rejected with `schema_violation` and the validator's
 * messages, each with a JSON pointer into the request.
 */

import { Ajv2020 } from 'ajv/dist/2020.js';
import type { ErrorObject, ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { configProblems, type ErrorProblem } from './errors.js';
import { object, Type, type Options } from './options.js';
import { fromPointer, toDisplayPath, toPointer } from './paths.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

export const TYPE_SCHEMA = object(
  {
    description: Type.Optional(Type.String({ description: 'What events of this type mean.' })),
    schema: Type.Optional(
      Type.Unsafe<Record<string, unknown>>({
        type: 'object',
        description: "JSON Schema that the event's `data` must satisfy (else the event is a dead letter, `schema_violation`).",
      }),
    ),
    schemaFile: Type.Optional(
      Type.String({ minLength: 1, description: 'File holding the JSON Schema (JSON or YAML), relative to the configuration file; read into `schema`.' }),
    ),
  },
  {
    description: 'A registered event type (the key is the CloudEvents `type`). Give `schema` or `schemaFile`, not both.',
    not: { type: 'object', required: ['schema', 'schemaFile'] },
  },
);

/** A type as the normalized configuration gives it: `schemaFile` (an absolute path) read into `schema`. */
export type TypeDefinition = Options<typeof TYPE_SCHEMA>;

export class TypeRegistry {
  readonly #validators = new Map<string, ValidateFunction | null>();
  /** What is accepted but not checked: a `format` that no validator knows (`format: url`). */
  readonly warnings: ErrorProblem[] = [];

  /**
   * Compile every type's schema. A schema that is not a valid JSON Schema (checked against its meta-schema
   * first) or does not compile (a `$ref` to nothing, a `pattern` that is not a regular expression) is a
   * problem at its place (`/types/<name>/schema/<where>`); all of them are thrown at once, as `config_invalid`.
   */
  constructor(types: Readonly<Record<string, TypeDefinition>>) {
    const formats: string[] = [];
    const ajv = new Ajv2020({
      allErrors: true,
      strict: false,
      allowUnionTypes: true,
      logger: { log: () => {}, warn: (message: unknown) => formats.push(String(message)), error: () => {} },
    });
    addFormats(ajv);
    const problems: ErrorProblem[] = [];
    for (const [name, def] of Object.entries(types)) {
      if (def.schema === undefined) {
        this.#validators.set(name, null);
        continue;
      }
      const at = toPointer(['types', name, 'schema']);
      const from = def.schemaFile === undefined ? '' : ` (in ${def.schemaFile})`;
      if (!ajv.validateSchema(def.schema)) {
        for (const p of schemaProblems(ajv.errors ?? [], def.schema)) problems.push({ pointer: at + p.pointer, message: p.message + from });
        continue;
      }
      formats.length = 0;
      try {
        this.#validators.set(name, ajv.compile(def.schema));
      } catch (err) {
        problems.push({ pointer: at, message: `the schema does not compile: ${(err as Error).message}${from}` });
      }
      for (const warning of new Set(formats)) {
        const format = /unknown format "([^"]*)"/.exec(warning)?.[1];
        const message = format === undefined ? warning : `format "${format}" is not one the validator knows: values are not checked against it${from}`;
        this.warnings.push({ pointer: at, message });
      }
    }
    if (problems.length > 0) {
      throw configProblems('types', problems.map((p) => `${toDisplayPath(fromPointer(p.pointer))}: ${p.message}`), problems);
    }
  }

  has(type: string): boolean {
    return this.#validators.has(type);
  }

  get names(): string[] {
    return [...this.#validators.keys()];
  }

  /** Problems of `data` against the type's schema; empty when valid or when the type has no schema. */
  check(type: string, data: unknown, pointer: string): ErrorProblem[] {
    const validate = this.#validators.get(type);
    if (!validate) return [];
    if (validate(data)) return [];
    return (validate.errors ?? []).map((e) => ({
      pointer: `${pointer}/data${e.instancePath}`,
      message: e.keyword === 'enum' ? `${e.message}: ${JSON.stringify(e.params.allowedValues)}` : e.message ?? 'is invalid',
    }));
  }
}

const JSON_TYPES = 'array, boolean, integer, null, number, object or string';

/**
 * The meta-schema's complaints about a schema, one sentence per place: the branches of an `anyOf` that
 * all failed become what the place accepts (`"type" must be one of array, …, got "strin"`), and a place
 * whose inner part is wrong (`type[1]`) speaks for its parent.
 */
export function schemaProblems(errors: readonly ErrorObject[], schema: unknown): ErrorProblem[] {
  const paths = [...new Set(errors.map((e) => e.instancePath))];
  // A deeper place explains its parent's failed alternatives better than they do.
  const kept = paths.filter((p) => !paths.some((q) => q !== p && q.startsWith(`${p}/`)));
  return kept.map((pointer) => {
    const here = errors.filter((e) => e.instancePath === pointer && e.keyword !== 'anyOf' && e.keyword !== 'oneOf');
    const segments = fromPointer(pointer);
    const last = segments[segments.length - 1];
    const keyword = typeof last === 'number' ? segments[segments.length - 2] : last;
    const got = `, got ${JSON.stringify(valueAt(schema, segments)) ?? 'nothing'}`;
    if (keyword === 'type') return { pointer, message: `must be one of ${JSON_TYPES}${typeof last === 'number' ? '' : ' (or a list of them)'}${got}` };
    const said = new Set<string>();
    for (const e of here) {
      if (e.keyword === 'type') said.add(`must be ${String(e.params.type).split(',').join(' or ')}`);
      else if (e.keyword === 'enum') said.add(`must be one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`);
      else said.add(e.message ?? 'is not valid here');
    }
    return { pointer, message: `${said.size === 0 ? 'is not valid here' : [...said].join(', or ')}${got}` };
  });
}

function valueAt(value: unknown, path: readonly (string | number)[]): unknown {
  let node = value;
  for (const key of path) node = node !== null && typeof node === 'object' ? (node as Record<string | number, unknown>)[key] : undefined;
  return node;
}
