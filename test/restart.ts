/**
 * A broker restart under a running input, against a server of the test's own (the shared brokers are never
 * restarted): 50 messages, the server stopped and started again, 50 more. Nothing may be lost; those sent
 * after the restart come once. Returns the topics the input saw.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { expect } from 'vitest';
import type { InputDriver } from '../src/transports/types.js';
import { exited } from './child.js';
import { waitFor } from './helpers.js';

export interface RestartScenario {
  /** Starts the server (the same data folder each time). */
  command: [string, ...string[]];
  /** How the server is stopped: SIGKILL for a crash, SIGTERM for an orderly stop. */
  signal: NodeJS.Signals;
  /** Resolves once the server answers. */
  ready(): Promise<boolean>;
  input: InputDriver;
  publish(from: number, to: number): Promise<void>;
  /** Waits after the last message, for redeliveries to show. */
  settleMs: number;
  /** More checks while the server still runs. */
  after?: () => Promise<void>;
}

export async function restartUnderInput(s: RestartScenario): Promise<Set<string>> {
  const start = (): ChildProcess => spawn(s.command[0], s.command.slice(1), { stdio: 'ignore' });
  let server = start();
  const seen = new Map<string, number>();
  const topics = new Set<string>();
  try {
    await waitFor(() => s.ready(), (ok) => ok, 10_000, 'the test server to answer');
    await s.input.start({
      async deliver(d) {
        topics.add(d.topic ?? '');
        seen.set(d.raw.toString(), (seen.get(d.raw.toString()) ?? 0) + 1);
        return 'accepted';
      },
    });
    await s.publish(0, 50);
    await waitFor(async () => seen.size, (n) => n === 50, 10_000, 'the first 50');
    server.kill(s.signal);
    await exited(server);
    await waitFor(() => s.input.health(), (h) => !h.connected, 10_000, 'the input to see the server gone');
    server = start();
    await waitFor(() => s.input.health(), (h) => h.connected, 20_000, 'the input to reconnect');
    await s.publish(50, 100);
    await waitFor(async () => seen.size, (n) => n === 100, 20_000, 'all 100 after the restart');
    await new Promise((r) => setTimeout(r, s.settleMs));
    expect(seen.size).toBe(100);
    expect(Array.from({ length: 50 }, (_, i) => seen.get(String(50 + i)))).toEqual(Array(50).fill(1));
    await s.after?.();
    return topics;
  } finally {
    await s.input.stop();
    server.kill('SIGTERM');
    await exited(server);
  }
}
