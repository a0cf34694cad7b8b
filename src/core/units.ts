/** Durations and sizes as people write them in configuration: `30s`, `5m`, `1MiB`. */

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/;
const DURATION_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `500ms`, `30s`, `5m`, `1h`, `7d`, or a number of milliseconds. Returns null when it is neither. */
export function parseDuration(value: unknown): number | null {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.round(value) : null;
  if (typeof value !== 'string') return null;
  const m = DURATION.exec(value.trim());
  if (!m) return null;
  return Math.round(Number(m[1]) * DURATION_MS[m[2]!]!);
}

const SIZE = /^(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)$/i;
const SIZE_BYTES: Record<string, number> = {
  b: 1,
  kb: 1000,
  kib: 1024,
  mb: 1_000_000,
  mib: 1024 ** 2,
  gb: 1_000_000_000,
  gib: 1024 ** 3,
};

/** `512B`, `64KiB`, `1MiB`, `1MB`, or a number of bytes. Returns null when it is neither. */
export function parseSize(value: unknown): number | null {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? value : null;
  if (typeof value !== 'string') return null;
  const m = SIZE.exec(value.trim());
  if (!m) return null;
  return Math.round(Number(m[1]) * SIZE_BYTES[m[2]!.toLowerCase()]!);
}

/** JSON Schema fragments for the two, used by the configuration schema and by action parameters. */
export const DURATION_SCHEMA = {
  anyOf: [
    { type: 'integer', minimum: 0, description: 'milliseconds' },
    { type: 'string', pattern: '^\\d+(\\.\\d+)?\\s*(ms|s|m|h|d)$' },
  ],
} as const;

export const SIZE_SCHEMA = {
  anyOf: [
    { type: 'integer', minimum: 0, description: 'bytes' },
    { type: 'string', pattern: '^\\d+(\\.\\d+)?\\s*([Bb]|[KkMmGg][Bb]|[KkMmGg]i[Bb])$' },
  ],
} as const;

/** A duration option: the fragment with its description, and its default when it has one. */
export function durationSchema(description: string, value?: string | number) {
  return { ...DURATION_SCHEMA, description, ...(value === undefined ? {} : { default: value }) };
}

/** A size option: the fragment with its description, and its default when it has one. */
export function sizeSchema(description: string, value?: string | number) {
  return { ...SIZE_SCHEMA, description, ...(value === undefined ? {} : { default: value }) };
}
