/**
 * librdkafka's mock cluster, started by `kcat` (DISPATCHER_TEST_KCAT names another binary): a real Kafka
 * protocol peer in one process, for the tests that speak Kafka. Under `CI=true` a cluster that cannot be
 * started fails the file; elsewhere the file's Kafka tests are skipped with the reason printed.
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { afterAll } from 'vitest';

const KCAT = process.env.DISPATCHER_TEST_KCAT ?? 'kcat';

export interface MockCluster {
  brokers: string[];
  process: ChildProcess;
}

/** Start a mock cluster of `brokers` brokers; its bootstrap address is in the notice kcat prints on start. */
export function startMockCluster(brokers = 3): Promise<MockCluster> {
  const child = spawn(KCAT, ['-X', `test.mock.num.brokers=${brokers}`, '-b', 'mock:1', '-C', '-t', 'dispatcher-mock-bootstrap'], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.resume();
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${KCAT} printed no mock cluster address within 10s: ${text.slice(-500)}`));
    }, 10_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${KCAT} could not be started (${err.message}); install kcat (apt-get install kcat) to run the Kafka tests`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${KCAT} exited (${code}) before printing a mock cluster address: ${text.slice(-500)}`));
    });
    child.stderr.on('data', (b: Buffer) => {
      text += b.toString();
      const m = /Mock cluster enabled: .* replaced with (\S+)/.exec(text);
      if (m) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve({ brokers: m[1]!.split(','), process: child });
      }
    });
  });
}

/**
 * The test file's mock cluster, killed after the file: `cluster` when it started, else `error` (printed as
 * the reason the file's Kafka tests are skipped; thrown under `CI=true`).
 */
export async function fileMockCluster(file: string, brokers = 3): Promise<{ cluster: MockCluster | undefined; error: string | null }> {
  let cluster: MockCluster | undefined;
  let error: string | null = spawnSync(KCAT, ['-V'], { encoding: 'utf8' }).error === undefined ? null : `${KCAT} is not installed (librdkafka's mock cluster comes with it: apt-get install kcat)`;
  if (error === null) {
    try {
      cluster = await startMockCluster(brokers);
    } catch (err) {
      error = (err as Error).message;
    }
  }
  if (error !== null) {
    if (process.env.CI === 'true') throw new Error(`${file}: ${error}; with CI=true the Kafka tests must run`);
    console.warn(`${file} skipped: ${error}. Install kcat, or set CI=true to make this a failure.`);
  }
  afterAll(() => {
    cluster?.process.kill('SIGKILL');
  });
  return { cluster, error };
}
