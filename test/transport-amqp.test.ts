/** The delivery suite against the real RabbitMQ on this machine (DISPATCHER_TEST_AMQP_URL to use another). */

import { spawn } from 'node:child_process';
import amqp from 'amqplib';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureBuilt, MAIN } from './child.js';
import { authed, startDispatcher, TEST_KEY, waitFor, type TestDispatcher } from './helpers.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';
import { describeDeliveries, type PeerMessage } from './transport.suite.js';

const URL = process.env.DISPATCHER_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

async function probe(): Promise<string | null> {
  try {
    const c = await amqp.connect(URL, { timeout: 3000 });
    await c.close();
    return null;
  } catch (err) {
    return (err as Error).message || String(err);
  }
}
const reachable = (await probe()) === null;

await describeDeliveries({
  transport: 'amqp',
  probe,
  async place(name) {
    const connection = await amqp.connect(URL);
    const channel = await connection.createConfirmChannel();
    await channel.assertQueue(name, { durable: true });
    return {
      input: { url: URL, queue: name, prefetch: 200 },
      async send(messages: PeerMessage[]) {
        for (const m of messages) {
          channel.publish('', name, Buffer.from(m.body), {
            persistent: true,
            ...(m.contentType ? { contentType: m.contentType } : {}),
            ...(m.headers ? { headers: m.headers } : {}),
          });
        }
        await channel.waitForConfirms();
      },
      async close() {
        await channel.deleteQueue(name).catch(() => {});
        await connection.close().catch(() => {});
      },
    };
  },
  binary(attributes) {
    return Object.fromEntries(Object.entries(attributes).map(([k, v]) => [`cloudEvents:${k}`, v]));
  },
});

describe('amqp input health', () => {
  let proxy: TcpProxy | undefined;
  let d: TestDispatcher | undefined;
  afterAll(async () => {
    await d?.close();
    await proxy?.close();
  });

  it.skipIf(process.env.CI !== 'true' && !reachable)('is in /readyz, /metrics and dispatcher status; a lost broker shows, and the input reconnects', async () => {
    ensureBuilt();
    const brokerPort = Number(new globalThis.URL(URL).port || 5672);
    proxy = await startTcpProxy(brokerPort);
    const queue = `dispatcher-test-health-${process.pid}`;
    const url = `amqp://guest:guest@127.0.0.1:${proxy.port}`;
    d = await startDispatcher({
      server: { host: '127.0.0.1', port: 0 },
      inputs: { orders: { amqp: { url, queue } } },
      routes: [{ name: 'all', match: { type: '**' }, actions: [{ noop: {} }] }],
    });
    const address = await d.d.listen();
    const app = await d.d.app();
    const readyz = async () => (await app.inject({ method: 'GET', url: '/readyz' })).json();
    const metrics = async () => (await authed(app).inject({ method: 'GET', url: '/metrics' })).body;

    let body = await readyz();
    expect(body).toMatchObject({ status: 'ready', inputs: [{ name: 'orders', transport: 'amqp', connected: true, paused: false, lag: 0, last_error: null }] });
    expect(await metrics()).toContain('dispatcher_transport_connected{kind="input",name="orders",transport="amqp"} 1');
    expect(await metrics()).toContain('dispatcher_input_lag_messages{name="orders",transport="amqp"} 0');
    const status = await cliStatus(address);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/status\s+ready/);
    expect(status.stdout).toMatch(/orders\s+amqp\s+true\s+false\s+0/);

    proxy.cut();
    body = await waitFor(readyz, (b) => b.inputs[0].connected === false, 15_000, 'the input to show the lost broker');
    expect(body.status).toBe('degraded');
    expect(body.inputs[0].last_error).toEqual(expect.any(String));
    expect(await metrics()).toContain('dispatcher_transport_connected{kind="input",name="orders",transport="amqp"} 0');
    const degraded = await cliStatus(address);
    expect(degraded.code).toBe(1);
    expect(degraded.stderr).toContain('degraded');

    proxy.restore();
    await waitFor(readyz, (b) => b.status === 'ready' && b.inputs[0].connected === true, 30_000, 'the input to reconnect');
    const connection = await amqp.connect(URL);
    const channel = await connection.createConfirmChannel();
    channel.sendToQueue(queue, Buffer.from(JSON.stringify({ specversion: '1.0', id: 'after-reconnect', source: 'urn:x', type: 'health.test' })), { persistent: true });
    await channel.waitForConfirms();
    await waitFor(() => d!.d.store.listEvents({ limit: 10, offset: 0 }), (l) => l.items.some((e) => e.event.id === 'after-reconnect'), 15_000, 'an event after the reconnect');
    await channel.deleteQueue(queue);
    await connection.close();
  }, 90_000);
});

function cliStatus(url: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, 'status', '--url', url], { env: { ...process.env, DISPATCHER_PSK: TEST_KEY, NO_COLOR: '1' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b));
    child.stderr.on('data', (b: Buffer) => (stderr += b));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
