/**
 * The parts and how they may lean on each other (../shared/DESIGN.md §3, src/preset.ts): no file imports,
 * through any chain (type imports and dynamic imports included), a file that imports it back; the core
 * imports no outer part (transports, the API, the CLI, actions, profiles, the configuration loader, the
 * composition root) and no driver, HTTP framework or command-line library, only the Store port's types;
 * the API never reaches the dispatcher or the configuration; a profile never reaches another profile.
 */

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = resolve(import.meta.dirname, '..', 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return path.endsWith('.ts') && !path.endsWith('.test.ts') ? [path] : [];
  });
}

const IMPORT = /(?:import|export)\s[^'"`;]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

/** Every file of src/ (relative, `core/runner.ts`) → what it imports: files of src/ and packages. */
const graph = new Map<string, { files: string[]; packages: string[] }>();
for (const file of sourceFiles(SRC)) {
  const text = readFileSync(file, 'utf8');
  const files: string[] = [];
  const packages: string[] = [];
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2]!;
    if (spec.startsWith('.')) files.push(relative(SRC, normalize(join(dirname(file), spec))).replace(/\.js$/, '.ts'));
    else packages.push(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
  }
  graph.set(relative(SRC, file), { files, packages });
}

/** The first cycle found (a list of files that ends where it starts), or null. */
function findCycle(): string[] | null {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (file: string): string[] | null => {
    if (state.get(file) === 'done') return null;
    if (state.get(file) === 'open') return [...stack.slice(stack.indexOf(file)), file];
    state.set(file, 'open');
    stack.push(file);
    for (const next of graph.get(file)?.files ?? []) {
      if (!graph.has(next)) continue;
      const cycle = visit(next);
      if (cycle !== null) return cycle;
    }
    stack.pop();
    state.set(file, 'done');
    return null;
  };
  for (const file of graph.keys()) {
    const cycle = visit(file);
    if (cycle !== null) return cycle;
  }
  return null;
}

const part = (file: string): string => (file.includes('/') ? file.split('/')[0]! : file);

describe('the parts', () => {
  it('reads the source it checks', () => {
    expect(graph.size).toBeGreaterThan(80);
    expect(graph.get('core/runner.ts')?.files).toContain('core/run-state.ts');
  });

  it('has no import cycle between files, type and dynamic imports included', () => {
    expect(findCycle()).toBeNull();
  });

  it('keeps the core free of outer parts, drivers and frameworks; it reaches the store only through its port', () => {
    const STORE_PORT = new Set(['store/types.ts', 'store/access.ts', 'store/inboxes.ts', 'store/paging.ts']);
    const FORBIDDEN_PACKAGES = /^(fastify|@fastify\/.*|commander|kafkajs|amqplib|pg|better-sqlite3|kysely|mqtt|@nats-io\/.*|@aws-sdk\/.*|undici)$/;
    const wrong: string[] = [];
    for (const [file, { files, packages }] of graph) {
      if (part(file) !== 'core') continue;
      for (const f of files) if (part(f) !== 'core' && !STORE_PORT.has(f)) wrong.push(`${file} → ${f}`);
      for (const p of packages) if (FORBIDDEN_PACKAGES.test(p)) wrong.push(`${file} → ${p}`);
    }
    expect(wrong).toEqual([]);
  });

  it('gives the API the services, never the dispatcher or the configuration', () => {
    const wrong = [...graph].filter(([file]) => part(file) === 'api').flatMap(([file, { files }]) => files.filter((f) => f === 'dispatcher.ts' || part(f) === 'config' || f === 'preset.ts').map((f) => `${file} → ${f}`));
    expect(wrong).toEqual([]);
  });

  it('keeps each profile to itself: no profile imports another', () => {
    const profileOf = (file: string) => (file.startsWith('profiles/') ? file.split('/')[1] : undefined);
    const wrong = [...graph].flatMap(([file, { files }]) => {
      const own = profileOf(file);
      if (own === undefined) return [];
      return files.filter((f) => profileOf(f) !== undefined && profileOf(f) !== own).map((f) => `${file} → ${f}`);
    });
    expect(wrong).toEqual([]);
  });
});
