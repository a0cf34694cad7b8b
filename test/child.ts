/**
 * Real `dispatcher serve` child processes for the tests that kill one mid-load: the build they run, a free
 * port, start, wait until serving, wait until exited.
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { waitFor } from './helpers.js';

export const ROOT = resolve(import.meta.dirname, '..');
export const MAIN = join(ROOT, 'dist', 'cli', 'main.js');

function newestMtime(path: string): number {
  let newest = 0;
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    const p = join(path, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** Builds `dist/` when it is missing or older than `src/`. */
export function ensureBuilt(): void {
  if (existsSync(MAIN) && statSync(MAIN).mtimeMs >= newestMtime(join(ROOT, 'src'))) return;
  const built = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (built.status !== 0) throw new Error(`the build failed: ${built.stdout}${built.stderr}`);
}

export async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

export interface Child {
  process: ChildProcess;
  /** The last 20,000 characters it wrote. */
  log(): string;
}

/** `dispatcher serve` in `cwd`, with `config`; without one, it reads `./dispatcher.yaml` if there is one, as a user's would. */
export function startChild(config: string | undefined, cwd: string, env: Record<string, string> = {}): Child {
  let log = '';
  const c = spawn(process.execPath, [MAIN, 'serve', ...(config === undefined ? [] : ['--config', config])], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  c.stdout!.on('data', (b: Buffer) => (log = (log + b.toString()).slice(-20_000)));
  c.stderr!.on('data', (b: Buffer) => (log = (log + b.toString()).slice(-20_000)));
  return { process: c, log: () => log };
}

export async function waitHealthy(child: Child, port: number): Promise<void> {
  const c = child.process;
  await waitFor(
    async () => {
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`the dispatcher exited (${c.exitCode ?? c.signalCode}): ${child.log()}`);
      try {
        return (await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(1000) })).status;
      } catch {
        return 0;
      }
    },
    (s) => s === 200,
    // A start takes seconds on an idle machine, and over 20 s with two suites loading both cores.
    60_000,
    'the dispatcher to serve',
  );
}

export function exited(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
  return new Promise((r) => c.once('exit', () => r()));
}

/** SIGKILL, and wait for the exit. */
export async function kill(child: Child | undefined): Promise<void> {
  if (child === undefined) return;
  const c = child.process;
  if (c.exitCode === null && c.signalCode === null) {
    c.kill('SIGKILL');
    await exited(c);
  }
}
