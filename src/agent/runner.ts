/**
 * Running one playbook with `ansible-runner`, in a private data directory of its own under the system's
 * temporary directory:
 *
 *   <dir>/project/playbook.yml     the playbook
 *   <dir>/inventory/hosts          `localhost`, reached without SSH (the host the agent runs on)
 *   <dir>/artifacts/<ident>/       what ansible-runner writes: job_events/<counter>-<uuid>.json, status, rc
 *
 * `ansible-runner run <dir> -p playbook.yml --ident <ident>`. While it runs, its job events are read as
 * their files appear (ansible-runner renames each complete file into place, so a file that is there is
 * whole) and handed on in `counter` order, each once. The directory is removed afterwards, whatever happened.
 */

import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentLog } from './log.js';
import { SILENT } from './log.js';

/** A job event file: `<counter>-<uuid>.json` (the `-partial.json` files and `.tmp` files are not events yet). */
const EVENT_FILE = /^(\d+)-([0-9a-fA-F-]+)\.json$/;

/**
 * Reads a `job_events` directory as it fills. Events come out in `counter` order with no repeats: one that
 * appears early waits for those before it, until they come or the gap has stood for `gapMs` (a counter
 * ansible-runner never wrote a file for); `final` hands out everything that is left.
 */
export class JobEventReader {
  readonly #dir: string;
  readonly #gapMs: number;
  readonly #read = new Set<string>();
  readonly #held = new Map<number, Record<string, unknown>>();
  #next = 1;
  #gapSince: number | null = null;

  constructor(dir: string, options: { gapMs?: number } = {}) {
    this.#dir = dir;
    this.#gapMs = options.gapMs ?? 5000;
  }

  /** The events that are ready, in order. With `final`, all of them, whatever gaps there are. */
  async poll(final = false, now = Date.now()): Promise<Array<Record<string, unknown>>> {
    let names: string[];
    try {
      names = await readdir(this.#dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') names = [];
      else throw err;
    }
    for (const name of names) {
      const m = EVENT_FILE.exec(name);
      if (m === null || this.#read.has(name)) continue;
      let event: unknown;
      try {
        event = JSON.parse(await readFile(join(this.#dir, name), 'utf8'));
      } catch {
        // Not readable yet (or never): tried again on the next poll, given up on at the end.
        if (final) this.#read.add(name);
        continue;
      }
      this.#read.add(name);
      if (typeof event !== 'object' || event === null || Array.isArray(event)) continue;
      const record = event as Record<string, unknown>;
      const counter = typeof record.counter === 'number' && Number.isInteger(record.counter) ? record.counter : Number(m[1]);
      if (counter < this.#next || this.#held.has(counter)) continue;
      this.#held.set(counter, record);
    }

    const out: Array<Record<string, unknown>> = [];
    const drain = () => {
      while (this.#held.has(this.#next)) {
        out.push(this.#held.get(this.#next)!);
        this.#held.delete(this.#next);
        this.#next += 1;
      }
    };
    drain();
    if (this.#held.size === 0) {
      this.#gapSince = null;
      return out;
    }
    if (final || (this.#gapSince !== null && now - this.#gapSince >= this.#gapMs)) {
      // Past the gap: on from the lowest counter held (at the end, through all of them).
      do {
        this.#next = Math.min(...this.#held.keys());
        drain();
      } while (final && this.#held.size > 0);
      this.#gapSince = this.#held.size > 0 ? now : null;
    } else if (this.#gapSince === null) {
      this.#gapSince = now;
    }
    return out;
  }
}

export interface PlaybookRunOptions {
  /** The playbook (YAML). */
  playbook: string;
  /** The run's name for ansible-runner (`--ident`): its artifacts directory. */
  ident: string;
  /** The ansible-runner command. Default `ansible-runner` on the PATH. */
  ansibleRunner?: string;
  /** Called with each batch of new job events, in counter order, as they appear. */
  onEvents(events: Array<Record<string, unknown>>): void;
  /** How often the events directory is read (ms). Default 250. */
  pollMs?: number;
  /** Aborting it stops the playbook: SIGTERM to ansible-runner's process group, SIGKILL `killAfterMs` later. */
  signal?: AbortSignal;
  /** From SIGTERM to SIGKILL (ms). Default 5000. */
  killAfterMs?: number;
  /** Where the private data directory is made. Default: the system's temporary directory. */
  tmpRoot?: string;
  /** Variables added to the agent's environment for ansible-runner. */
  env?: Record<string, string>;
  log?: AgentLog;
}

export interface PlaybookRunResult {
  /** ansible-runner's exit code (null when it was killed by a signal or never started). */
  exitCode: number | null;
  /** The signal that ended it, if one did. */
  signal: NodeJS.Signals | null;
  /** It could not be started (missing, not executable): what spawn said. */
  spawnError?: Error;
  /** The run was stopped through `signal`. */
  aborted: boolean;
  /** ansible-runner's `status` artifact: `successful`, `failed`, `timeout`, `canceled` … (null when absent). */
  status: string | null;
  /** How many job events were handed on. */
  events: number;
  /** The end of what ansible-runner printed (standard output and error), for an error's details. */
  output: string;
}

/** What is kept of ansible-runner's output for error details. */
const OUTPUT_TAIL = 4096;

/** The inventory: the host the agent runs on, reached locally, with the Python that runs Ansible (as its implicit localhost would be). */
const INVENTORY = 'localhost ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"\n';

/** Runs a playbook with ansible-runner; resolves when it has ended and every event was handed on, the directory removed. Never rejects for the playbook's own failure. */
export async function runPlaybook(options: PlaybookRunOptions): Promise<PlaybookRunResult> {
  const log = options.log ?? SILENT;
  const command = options.ansibleRunner ?? 'ansible-runner';
  const dir = await mkdtemp(join(options.tmpRoot ?? tmpdir(), 'dispatcher-agent-'));
  try {
    await mkdir(join(dir, 'project'), { mode: 0o700 });
    await mkdir(join(dir, 'inventory'), { mode: 0o700 });
    await writeFile(join(dir, 'project', 'playbook.yml'), options.playbook, { mode: 0o600 });
    await writeFile(join(dir, 'inventory', 'hosts'), INVENTORY, { mode: 0o600 });
    const artifacts = join(dir, 'artifacts', options.ident);
    const reader = new JobEventReader(join(artifacts, 'job_events'));
    let events = 0;
    const hand = (batch: Array<Record<string, unknown>>) => {
      if (batch.length === 0) return;
      events += batch.length;
      try {
        options.onEvents(batch);
      } catch (err) {
        log.error({ err }, 'handling job events failed');
      }
    };

    const ended = await spawnRunner(command, ['run', dir, '-p', 'playbook.yml', '--ident', options.ident], options, log, async () => hand(await reader.poll()));
    hand(await reader.poll(true));
    const status = await readFile(join(artifacts, 'status'), 'utf8').then(
      (text) => text.trim(),
      () => null,
    );
    return { ...ended, status, events };
  } finally {
    await rm(dir, { recursive: true, force: true }).catch((err: unknown) => log.warn({ err, dir }, 'could not remove the run directory'));
  }
}

/** Starts ansible-runner and polls while it runs; resolves when it has exited (or failed to start). */
function spawnRunner(
  command: string,
  args: string[],
  options: PlaybookRunOptions,
  log: AgentLog,
  poll: () => Promise<void>,
): Promise<Omit<PlaybookRunResult, 'status' | 'events'>> {
  return new Promise((resolve) => {
    let output = '';
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL);
    };
    let aborted = false;
    let killTimer: NodeJS.Timeout | undefined;
    let polling: Promise<void> = Promise.resolve();
    const pollTimer = setInterval(() => {
      polling = polling.then(poll).catch((err: unknown) => log.warn({ err }, 'reading job events failed'));
    }, options.pollMs ?? 250);
    let settled = false;

    const child = spawn(command, args, {
      // Its own process group: stopping it reaches ansible-playbook and the modules it started too.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', ...options.env },
    });
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);

    const kill = (sig: NodeJS.Signals) => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, sig);
      } catch {
        try {
          child.kill(sig);
        } catch {
          // gone already
        }
      }
    };
    const onAbort = () => {
      if (aborted || settled) return;
      aborted = true;
      log.warn({ pid: child.pid }, 'stopping ansible-runner');
      kill('SIGTERM');
      killTimer = setTimeout(() => kill('SIGKILL'), options.killAfterMs ?? 5000);
      killTimer.unref();
    };

    const finish = (result: Omit<PlaybookRunResult, 'status' | 'events' | 'output' | 'aborted'>) => {
      if (settled) return;
      settled = true;
      clearInterval(pollTimer);
      clearTimeout(killTimer);
      options.signal?.removeEventListener('abort', onAbort);
      // The last poll in flight first: events stay in order.
      void polling.then(() => resolve({ ...result, output, aborted }));
    };

    child.once('error', (err) => {
      // Not started at all: no exit follows.
      if (child.pid === undefined) finish({ exitCode: null, signal: null, spawnError: err });
      else log.warn({ err }, 'ansible-runner');
    });
    child.once('close', (code, sig) => finish({ exitCode: code, signal: sig }));
    if (child.pid !== undefined) log.debug({ pid: child.pid, command, args }, 'ansible-runner started');

    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener('abort', onAbort, { once: true });
  });
}
