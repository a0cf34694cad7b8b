/** What the benchmarks share. */

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

/** The `dispatcher` executable, built. */
export const DISPATCHER_MAIN = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));

let nodeFlags;

/**
 * The Node flags the executable's first line starts it with (`#!/usr/bin/env -S node …`), so that the
 * benchmarks run the dispatcher as `dispatcher serve` and `npm start` do.
 */
export function dispatcherNodeFlags() {
  if (nodeFlags === undefined) {
    const [first] = readFileSync(DISPATCHER_MAIN, 'utf8').split('\n', 1);
    const words = first.split(' ');
    nodeFlags = words.slice(words.indexOf('node') + 1).filter((w) => w !== '');
  }
  return nodeFlags;
}

/** The PostgreSQL the benchmarks use; each run makes a schema of its own there. */
export const PG_URL = process.env.DISPATCHER_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** The store URL of a schema of its own in PG_URL's database. */
export function postgresSchemaUrl(schema) {
  const url = new URL(PG_URL);
  url.searchParams.set('schema', schema);
  return url.toString();
}

/** Drops a schema made for a run, with all it holds. */
export async function dropPostgresSchema(schema) {
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  try {
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await admin.end();
  }
}

/**
 * Run events stored per run in a store the bench used: 2 when every run was started at intake (`create`,
 * then the outcome's `update`), up to 3 when runs were committed queued and claimed later (one more
 * `update`), more with retries.
 */
export async function runEventsPerRun(store, storeUrl, schema) {
  const q = 'SELECT (SELECT count(*) FROM run_events) AS run_events, (SELECT count(*) FROM runs) AS runs';
  if (store === 'sqlite') {
    const { default: Database } = await import('better-sqlite3');
    const db = new Database(storeUrl.slice('sqlite:'.length), { readonly: true });
    try {
      const c = db.prepare(q).get();
      return c.run_events / c.runs;
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    await client.query(`SET search_path TO ${schema}`);
    const c = (await client.query(q)).rows[0];
    return Number(c.run_events) / Number(c.runs);
  } finally {
    await client.end();
  }
}

/**
 * Waits until the dispatcher `child` at `url` answers `/healthz` (up to 30 s). Throws if it exits first, or
 * kills it and throws if it never answers; `detail` adds what it wrote to stderr.
 */
export async function waitServing(url, child, detail = () => '') {
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`dispatcher exited: ${detail()}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) return;
    } catch {
      // not yet
    }
    if (i > 600) {
      child.kill('SIGKILL');
      throw new Error(`dispatcher did not start: ${detail()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A port nothing listens on right now: bind port 0, read it, let go. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** The middle value (the upper one of an even count). */
export function median(values) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

let clockTicks;

/** A process's command name and CPU time so far (user + system, in seconds), from its /proc/<pid>/stat. */
function procStat(pid) {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of stat(5) (utime, stime); the slice starts at field 3.
  return { command: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), seconds: (Number(fields[11]) + Number(fields[12])) / clockTicks };
}

/**
 * CPU time (user + system, in seconds) a process has used so far, from /proc (Linux); NaN elsewhere. On a
 * shared machine this moves far less between runs than wall-clock rates do, so A/B comparisons use it.
 */
export function cpuSeconds(pid) {
  try {
    return procStat(pid).seconds;
  } catch {
    return Number.NaN;
  }
}

/** CPU seconds the whole machine was busy so far (every core, from /proc/stat; NaN elsewhere). */
export function machineBusy() {
  try {
    const [, ...ticks] = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).map(Number);
    // user nice system idle iowait irq softirq steal: all but idle and iowait were busy.
    clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    return (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]) / clockTicks;
  } catch {
    return Number.NaN;
  }
}

/**
 * CPU time (seconds) every process on the machine has used so far, summed by group: the processes in
 * `named` under the name given there, kernel worker threads as `kernel`, PostgreSQL's processes as
 * `postgres`, the rest by command name. Linux only (an empty map elsewhere). The difference of two of
 * these over a stretch of time shows where a machine's cores went.
 */
export function cpuByGroup(named) {
  const groups = new Map();
  let entries;
  try {
    entries = readdirSync('/proc');
  } catch {
    return groups;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let command;
    let seconds;
    try {
      ({ command, seconds } = procStat(entry));
    } catch {
      continue; // ended meanwhile
    }
    const group =
      named.get(Number(entry)) ?? (command.startsWith('kworker') ? 'kernel' : command.startsWith('postgres') ? 'postgres' : command);
    groups.set(group, (groups.get(group) ?? 0) + seconds);
  }
  return groups;
}

/** Cores each group used between two `cpuByGroup` readings `seconds` apart, the busiest first (at least 0.05). */
export function coresUsed(before, after, seconds) {
  return [...after]
    .map(([group, s]) => [group, (s - (before.get(group) ?? 0)) / seconds])
    .filter(([, cores]) => cores >= 0.05)
    .sort((a, b) => b[1] - a[1]);
}

/**
 * A control group that holds its processes to `cores` of CPU time (a quota per 100 ms period): cgroup v2's
 * `cpu.max`, or the v1 `cpu` controller's CFS quota. It stands in for a machine of that size, so that several
 * processes on one machine can be measured as if each ran on its own. Linux, as root; it throws, saying why,
 * where neither hierarchy can be written.
 */
export function cpuLimitedGroup(name, cores) {
  const period = 100_000;
  const quota = Math.max(1000, Math.round(cores * period));
  const v2 = '/sys/fs/cgroup';
  const v1 = '/sys/fs/cgroup/cpu';
  let dir;
  try {
    if (existsSync(join(v2, 'cgroup.controllers')) && readFileSync(join(v2, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('cpu')) {
      if (!readFileSync(join(v2, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('cpu')) writeFileSync(join(v2, 'cgroup.subtree_control'), '+cpu');
      dir = join(v2, name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'cpu.max'), `${quota} ${period}`);
    } else if (existsSync(join(v1, 'cpu.cfs_quota_us'))) {
      dir = join(v1, name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'cpu.cfs_period_us'), String(period));
      writeFileSync(join(dir, 'cpu.cfs_quota_us'), String(quota));
    } else {
      throw new Error('no cgroup cpu controller is mounted at /sys/fs/cgroup (v2) or /sys/fs/cgroup/cpu (v1)');
    }
  } catch (err) {
    throw new Error(`cannot limit processes to ${cores} cores: ${err.message} (Linux, as root)`);
  }
  return {
    /** Moves a process (every thread of it) into the group. */
    add(pid) {
      writeFileSync(join(dir, 'cgroup.procs'), String(pid));
    },
    /** Removes the group once its processes have ended. */
    remove() {
      try {
        rmdirSync(dir);
      } catch {
        // a process of it is still exiting; the next run's group has another name
      }
    },
  };
}

let mockCluster;

/**
 * The Kafka brokers the benchmarks use: `BENCH_KAFKA_BROKERS` (comma-separated), or else librdkafka's mock
 * cluster (3 brokers), started once with `kcat` and stopped when this process exits; its bootstrap address is
 * in the notice kcat prints.
 */
export function kafkaBrokers() {
  if (process.env.BENCH_KAFKA_BROKERS) return Promise.resolve(process.env.BENCH_KAFKA_BROKERS.split(','));
  mockCluster ??= new Promise((resolve, reject) => {
    const child = spawn('kcat', ['-X', 'test.mock.num.brokers=3', '-b', 'mock:1', '-C', '-t', 'dispatcher-bench-bootstrap'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let text = '';
    child.once('error', (err) => reject(new Error(`kcat could not be started (${err.message}): apt-get install kcat`)));
    child.stderr.on('data', (b) => {
      text += b;
      const m = /Mock cluster enabled: .* replaced with (\S+)/.exec(text);
      if (m) resolve({ child, brokers: m[1].split(',') });
    });
    process.once('exit', () => child.kill('SIGKILL'));
  });
  return mockCluster.then((c) => c.brokers);
}

/** The process id of the mock cluster `kafkaBrokers` started (undefined when the brokers were given). */
export async function kafkaMockPid() {
  return mockCluster === undefined ? undefined : (await mockCluster).child.pid;
}

/**
 * The errors and warnings a dispatcher logs (pino's JSON lines on `stdout`, a child's stream), and the first
 * error's message: a run that lost or redid work says so here, not only in its rate. The object returned is
 * kept up to date as lines come.
 */
export function countLogged(stdout) {
  const logged = { errors: 0, warnings: 0, first: undefined };
  let rest = '';
  stdout.setEncoding('utf8');
  stdout.on('data', (chunk) => {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop();
    for (const line of lines) {
      let level;
      let msg;
      try {
        ({ level, msg } = JSON.parse(line));
      } catch {
        continue;
      }
      if (level >= 50) {
        logged.errors += 1;
        logged.first ??= msg;
      } else if (level >= 40) {
        logged.warnings += 1;
      }
    }
  });
  return logged;
}
