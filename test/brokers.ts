/**
 * Brokers of the tests' own, on ports below 32768, for tests that restart a broker mid-stream without
 * disturbing the shared ones: a RabbitMQ node (its own node name, data folder and listener) and a NATS
 * server with JetStream (its own store folder).
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

export interface PrivateBroker {
  url: string;
  /** Stop and start again; resolves once it accepts connections. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function waitPort(port: number, open: boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while ((await portOpen(port)) !== open) {
    if (Date.now() > until) throw new Error(`${what} did not ${open ? 'open' : 'close'} port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A port in 20000–31999 that nothing listens on. */
export async function privatePort(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (!(await portOpen(port)) && !(await portOpen(port + 10))) return port;
  }
}

/** Null when the program is installed; otherwise why not. */
export function missingProgram(name: string): string | null {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  return found.status === 0 ? null : `${name} is not installed`;
}

export async function startRabbitMq(): Promise<PrivateBroker> {
  const port = await privatePort();
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-rabbitmq-'));
  const node = `dispatcher${port}@localhost`;
  mkdirSync(join(dir, 'log'));
  mkdirSync(join(dir, 'mnesia'));
  writeFileSync(join(dir, 'plugins'), '[].');
  writeFileSync(join(dir, 'rabbitmq.conf'), `listeners.tcp.1 = 127.0.0.1:${port}\nloopback_users = none\n`);
  // rabbitmq-server runs as the rabbitmq user when started by root: it must own its folder.
  if (userInfo().uid === 0) {
    const id = spawnSync('id', ['-u', 'rabbitmq'], { encoding: 'utf8' });
    if (id.status === 0) {
      const uid = Number(id.stdout.trim());
      for (const p of [dir, join(dir, 'log'), join(dir, 'mnesia'), join(dir, 'plugins'), join(dir, 'rabbitmq.conf')]) chownSync(p, uid, -1);
    }
  }
  const env = {
    ...process.env,
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq.conf'),
    RABBITMQ_NODENAME: node,
    RABBITMQ_DIST_PORT: String(port + 10),
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_FEATURE_FLAGS_FILE: join(dir, 'feature_flags'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'plugins'),
    RABBITMQ_PID_FILE: join(dir, 'pid'),
  };
  const server: ChildProcess = spawn('rabbitmq-server', [], { env, stdio: 'ignore' });
  await waitPort(port, true, 'RabbitMQ');
  const ctl = (command: string) => {
    const r = spawnSync('rabbitmqctl', ['-n', node, command], { env, encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0) throw new Error(`rabbitmqctl ${command}: ${r.stderr || r.stdout}`);
  };
  return {
    url: `amqp://guest:guest@127.0.0.1:${port}`,
    async restart() {
      ctl('stop_app');
      await waitPort(port, false, 'RabbitMQ');
      ctl('start_app');
      await waitPort(port, true, 'RabbitMQ');
    },
    async stop() {
      try {
        ctl('stop');
      } catch {
        server.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function startNats(): Promise<PrivateBroker> {
  const port = await privatePort();
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-nats-'));
  let server: ChildProcess | undefined;
  const start = async () => {
    server = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir], { stdio: 'ignore' });
    await waitPort(port, true, 'NATS');
  };
  const halt = async () => {
    if (server === undefined || server.exitCode !== null) return;
    const s = server;
    const exited = new Promise((r) => s.once('exit', r));
    s.kill('SIGTERM');
    await exited;
  };
  await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    async restart() {
      await halt();
      await start();
    },
    async stop() {
      await halt();
      if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
    },
  };
}
