/**
 * A fake Cloud Connector for the tests: it speaks the Cloud Connector's documented HTTP API over a real
 * socket (the dispatcher cannot run the real one here) and records what it received.
 *
 * - `POST /api/cloud-connector/v2/connections/{recipient}/message` → 201 `{"id"}` for a connected
 *   recipient, 404 for another;
 * - `GET /api/cloud-connector/v2/connections/{recipient}/status` → 200 `{"status": "connected" | "disconnected"}`.
 *
 * `failWith` makes every call answer that status instead (a broken connector).
 */

import { randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedMessage {
  recipient: string;
  headers: IncomingHttpHeaders;
  body: { directive: string; metadata: Record<string, string>; payload: string };
  id: string;
}

export interface FakeCloudConnector {
  url: string;
  /** Recipients that are connected. */
  connected: Set<string>;
  messages: ReceivedMessage[];
  statusCalls: Array<{ recipient: string; headers: IncomingHttpHeaders }>;
  failWith: number | null;
  close(): Promise<void>;
}

export async function startFakeCloudConnector(connected: Iterable<string> = []): Promise<FakeCloudConnector> {
  const fake: Omit<FakeCloudConnector, 'url' | 'close'> = { connected: new Set(connected), messages: [], statusCalls: [], failWith: null };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const send = (status: number, body?: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(body === undefined ? '' : JSON.stringify(body));
      };
      if (fake.failWith !== null) return send(fake.failWith, { message: 'broken' });
      const m = /^\/api\/cloud-connector\/v2\/connections\/([^/]+)\/(message|status)$/.exec(req.url ?? '');
      if (m === null) return send(404, { message: 'no such path' });
      const recipient = decodeURIComponent(m[1]!);
      if (m[2] === 'status' && req.method === 'GET') {
        fake.statusCalls.push({ recipient, headers: req.headers });
        return send(200, { status: fake.connected.has(recipient) ? 'connected' : 'disconnected' });
      }
      if (m[2] === 'message' && req.method === 'POST') {
        if (!fake.connected.has(recipient)) return send(404, { message: 'not found' });
        const id = randomUUID();
        fake.messages.push({ recipient, headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as ReceivedMessage['body'], id });
        return send(201, { id });
      }
      return send(405, { message: 'method not allowed' });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(fake, {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }) as FakeCloudConnector;
}
