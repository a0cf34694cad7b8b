/**
 * Where a value is, in the two forms messages use: a JSON pointer (RFC 6901, `/routes/0/retry/attempts`),
 * which tools read, and the path the configuration reference writes (`routes[0].retry.attempts`,
 * `types["alert.raised"]`), which people read.
 */

export type Path = readonly (string | number)[];

/** `['routes', 0, 'retry']` → `/routes/0/retry`. */
export function toPointer(path: Path): string {
  return path.map((key) => `/${String(key).replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
}

/** `/routes/0/retry` → `['routes', 0, 'retry']`: segments of digits read as indexes. */
export function fromPointer(pointer: string): Path {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((raw) => raw.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((key) => (/^(0|[1-9]\d*)$/.test(key) ? Number(key) : key));
}

/** `['routes', 0, 'retry']` → `routes[0].retry`; `['types', 'alert.raised']` → `types["alert.raised"]`. */
export function toDisplayPath(path: Path): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(key)) out += out === '' ? key : `.${key}`;
    else out += `[${JSON.stringify(key)}]`;
  }
  return out;
}
