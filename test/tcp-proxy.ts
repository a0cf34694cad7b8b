/**
 * A TCP proxy in front of a real server (PostgreSQL, a broker) that a test can cut, stall and restore: a
 * network failure between the dispatcher and that server, with nothing faked on either side.
 */

import net from 'node:net';

export interface TcpProxy {
  port: number;
  /** Drop every connection and refuse new ones. */
  cut(): void;
  /**
   * Stop forwarding, without closing anything: open connections go silent, new ones are accepted and
   * held silent too. What was sent meanwhile waits, and flows again on `restore()`.
   */
  stall(): void;
  restore(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  let open = true;
  let stalled = false;
  const sockets = new Set<net.Socket>();
  const pairs = new Set<[net.Socket, net.Socket]>();
  /** Clients accepted while stalled: connected upstream on restore. */
  const waiting = new Set<net.Socket>();
  const forward = (client: net.Socket) => {
    const upstream = net.connect(targetPort, targetHost);
    sockets.add(upstream);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
      pairs.delete(pair);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  };
  const server = net.createServer((client) => {
    if (!open) {
      client.destroy();
      return;
    }
    sockets.add(client);
    if (stalled) {
      client.pause();
      waiting.add(client);
      client.on('error', () => client.destroy()).on('close', () => waiting.delete(client));
      return;
    }
    forward(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    cut() {
      open = false;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    stall() {
      stalled = true;
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    },
    restore() {
      open = true;
      if (!stalled) return;
      stalled = false;
      for (const [client, upstream] of pairs) {
        client.pipe(upstream);
        upstream.pipe(client);
      }
      for (const client of waiting) forward(client);
      waiting.clear();
    },
    close() {
      open = false;
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
