/**
 * Registered event types and their JSON Schemas, compiled once with Ajv when the configuration loads.
 * An event whose `data` fails its type's schema is rejected with `schema_violation` and the validator's
 * messages, each with a JSON pointer into the request.
 */

import { Ajv2020 } from 'ajv/dist/2020.js';
import type { ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { DispatcherError, type ErrorProblem } from './errors.js';
import { object, Type, type Options } from './options.js';

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

  constructor(types: Readonly<Record<string, TypeDefinition>>) {
    const ajv = new Ajv2020({ allErrors: true, strict: false, allowUnionTypes: true });
    addFormats(ajv);
    for (const [name, def] of Object.entries(types)) {
      if (def.schema === undefined) {
        this.#validators.set(name, null);
        continue;
      }
      try {
        this.#validators.set(name, ajv.compile(def.schema));
      } catch (err) {
        throw new DispatcherError('config_invalid', `types.${name}.schema: ${(err as Error).message}`, { cause: err });
      }
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
