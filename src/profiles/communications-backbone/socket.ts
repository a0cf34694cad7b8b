/**
 * The WebSocket endpoint the original planned (its issue "Add websockets"): `GET /ws` (`websocket.path`).
 *
 * 1. The client opens the socket and sends, within `websocket.handshakeTimeout`, the handshake:
 *    `{"token": "<bearer token from /token>"}` (optionally `"ack": true` to acknowledge what it receives).
 *    The answer is `{"type": "ready", "client_id"}`; a bad token closes with 4401, no handshake in time 4408.
 * 2. Inbox messages are pushed as they arrive: `{"type": "message", "id", "topic", "body", "sender", "time"}`.
 *    Without `ack` they leave the inbox as they are pushed (as `/receive` pops them); with it they are leased
 *    and the client sends `{"type": "ack", "ids": [...]}`, else they come again after `inboxes.lease`.
 * 3. What the client sends is published as by `/send` and `/notify`: `{"type": "send", "topic", "body", "ref"?}`
 *    and `{"type": "notify", "body", "ref"?}`, answered `{"type": "sent", "id", "ref"}` once committed, or
 *    `{"type": "error", "code", "message", "ref"}` (the socket stays open).
 *
 * Bounds: messages over `maxBodyBytes` (plus room for the envelope) close with 1009; more than
 * `websocket.maxMessagesPerSecond` (over a few seconds) close with 1008; a deleted client, a rotated secret or
 * an expired token closes with 4401 at its next check (every `websocket.recheck`, 30 s). Nothing a client sends can crash the process.
 */

import type { FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
import { DispatcherError, toDispatcherError } from '../../core/errors.js';
import type { TokenSigner } from '../../core/credentials.js';
import { scopeFor, type Principal } from '../../core/principal.js';
import type { Services } from '../../core/services.js';
import type { CommunicationsBackboneConfig } from './config.js';
import { RECEIVE, SEND, type Sender } from './sender.js';

export const CLOSE = { unauthorized: 4401, handshakeTimeout: 4408, policy: 1008, tooBig: 1009, stopping: 1001 } as const;
/** How often an open socket is pinged, so that a dead peer is noticed. */
const PING_MS = 30_000;
/** The rate limit's window: bursts are allowed within it. */
const RATE_WINDOW_S = 5;

function send(socket: WebSocket, value: unknown): void {
  if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(value));
}

/** A frame's `ref`, echoed in the answer: a string or a number only (anything else is not echoed). */
function refOf(frame: Record<string, unknown>): string | number | undefined {
  const ref = frame.ref;
  return typeof ref === 'string' || (typeof ref === 'number' && Number.isFinite(ref)) ? ref : undefined;
}

function parse(data: unknown, isBinary: boolean): Record<string, unknown> {
  if (isBinary) throw new DispatcherError('bad_request', 'send text frames of JSON objects');
  const raw = Array.isArray(data) ? Buffer.concat(data as Buffer[]) : Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer);
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new DispatcherError('invalid_json', 'a frame is not JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new DispatcherError('bad_request', 'a frame must be a JSON object');
  return value as Record<string, unknown>;
}

export function registerSocket(app: FastifyInstance, config: CommunicationsBackboneConfig, services: Services, sender: Sender, signer: TokenSigner): void {
  const ws = config.websocket;
  const maxPayload = config.maxBodyBytes + 4096;
  app.route({
    method: 'GET',
    url: ws.path,
    config: { public: true },
    schema: {
      tags: ['communications-backbone'],
      operationId: 'backboneSocket',
      summary: 'Push: a WebSocket; the first message is the handshake `{"token": …}`',
      description:
        'Inbox messages are pushed as `{"type":"message",…}`; `{"type":"send","topic","body"}` and `{"type":"notify","body"}` publish. ' +
        'Close codes: 4401 bad or revoked token, 4408 no handshake in time, 1008 flooding or protocol error, 1009 a frame too large. See docs/profiles/communications-backbone.md.',
      security: [],
      response: { 101: { description: 'Switching Protocols: the WebSocket is open.' } },
    },
    handler: async () => {
      throw new DispatcherError('bad_request', `GET ${ws.path} opens a WebSocket: send Connection: Upgrade and Upgrade: websocket`);
    },
    wsHandler: (socket) => {
      let principal: Principal | null = null;
      let clientId = '';
      let ack = false;
      let stop: (() => void) | undefined;
      let taking = false;
      let again = false;
      let closed = false;
      // A token bucket: maxMessagesPerSecond on average, a window's worth at once.
      let allowance = ws.maxMessagesPerSecond * RATE_WINDOW_S;
      let last = Date.now();
      const log = services.log.child({ part: 'backbone-socket' });

      const close = (code: number, reason: string) => {
        if (closed) return;
        closed = true;
        stop?.();
        try {
          socket.close(code, reason.slice(0, 120));
        } catch {
          socket.terminate();
        }
      };
      const handshakeTimer = setTimeout(() => close(CLOSE.handshakeTimeout, 'no handshake in time: send {"token": …} first'), ws.handshakeTimeout);
      const ping = setInterval(() => {
        if (socket.readyState === socket.OPEN) socket.ping();
      }, PING_MS);
      ping.unref();
      let recheck: NodeJS.Timeout | undefined;
      let token = '';
      let handshaking = false;

      /** Push what the inbox holds, a batch at a time, while the socket keeps up. */
      const push = () => {
        if (closed || principal === null) return;
        if (taking) {
          again = true;
          return;
        }
        taking = true;
        again = false;
        void (async () => {
          try {
            for (;;) {
              if (closed || socket.bufferedAmount > 4 * maxPayload) break;
              const messages = await services.inboxes.receive(clientId, { max: ws.pushBatch, lease: ack });
              for (const m of messages) send(socket, { type: 'message', ...m });
              if (messages.length < ws.pushBatch) break;
            }
          } catch (err) {
            log.warn({ err, client: clientId }, 'could not push inbox messages');
          } finally {
            taking = false;
            if (again && !closed) push();
          }
        })();
      };

      const handshake = async (frame: Record<string, unknown>) => {
        const given = typeof frame.token === 'string' ? frame.token : typeof frame.authorization === 'string' ? frame.authorization.replace(/^Bearer\s+/i, '') : '';
        if (given === '') throw new DispatcherError('unauthorized', 'the handshake is {"token": "<bearer token from /token>"}');
        const who = await services.auth.bearer(given, signer);
        if (who.kind !== 'client' || scopeFor(who, RECEIVE) === null) throw new DispatcherError('forbidden', `${who.id} may not receive`);
        clearTimeout(handshakeTimer);
        if (closed) return;
        principal = who;
        token = given;
        clientId = who.id.slice('client:'.length);
        ack = frame.ack === true || (frame.ack === undefined && config.receive.acknowledge);
        send(socket, { type: 'ready', client_id: clientId, ack });
        stop = services.inboxes.listen(clientId, push);
        recheck = setInterval(() => {
          services.auth.bearer(token, signer).catch((err: unknown) => close(CLOSE.unauthorized, toDispatcherError(err).message));
        }, ws.recheck);
        recheck.unref();
      };

      const handle = async (frame: Record<string, unknown>) => {
        const ref = refOf(frame);
        try {
          switch (frame.type) {
            case 'send':
            case 'notify': {
              if (scopeFor(principal!, SEND) === null) throw new DispatcherError('forbidden', `${principal!.id} may not send`);
              const topic = frame.type === 'send' ? (typeof frame.topic === 'string' ? frame.topic : null) : null;
              if (frame.type === 'send' && topic === null) throw new DispatcherError('bad_request', 'topic: missing (the dotted topic the message is published to)');
              const sent = await sender.send({ id: clientId, orgId: principal!.orgId }, topic, frame.body);
              send(socket, { type: 'sent', ...sent, ...(ref === undefined ? {} : { ref }) });
              return;
            }
            case 'ack': {
              const ids = Array.isArray(frame.ids) ? frame.ids.filter((id): id is string => typeof id === 'string') : [];
              if (ids.length === 0) throw new DispatcherError('bad_request', 'ack: {"type": "ack", "ids": [...]}');
              const n = await services.inboxes.ack(clientId, ids);
              send(socket, { type: 'acked', acknowledged: n, ...(ref === undefined ? {} : { ref }) });
              return;
            }
            default:
              throw new DispatcherError('bad_request', `unknown message type ${JSON.stringify(frame.type)}: send, notify or ack`);
          }
        } catch (err) {
          const e = toDispatcherError(err);
          if (e.code === 'internal') log.error({ err, client: clientId }, 'a socket message failed');
          send(socket, { type: 'error', code: e.code, message: e.code === 'internal' ? 'an unexpected error happened; the log has the details' : e.message, ...(ref === undefined ? {} : { ref }) });
        }
      };

      socket.on('message', (data, isBinary) => {
        if (closed) return;
        const size = Array.isArray(data) ? data.reduce((n, b: Buffer) => n + b.length, 0) : (data as Buffer | ArrayBuffer).byteLength;
        if (size > maxPayload) return close(CLOSE.tooBig, `a frame is larger than ${maxPayload} bytes`);
        const now = Date.now();
        allowance = Math.min(ws.maxMessagesPerSecond * RATE_WINDOW_S, allowance + ((now - last) / 1000) * ws.maxMessagesPerSecond);
        last = now;
        if (allowance < 1) return close(CLOSE.policy, `more than ${ws.maxMessagesPerSecond} messages per second`);
        allowance -= 1;
        let frame: Record<string, unknown>;
        try {
          frame = parse(data, isBinary);
        } catch (err) {
          if (principal === null) return close(CLOSE.policy, (err as Error).message);
          return send(socket, { type: 'error', code: toDispatcherError(err).code, message: (err as Error).message });
        }
        if (principal === null) {
          // One handshake: frames sent before it is answered are refused, not taken as more handshakes.
          if (handshaking) return send(socket, { type: 'error', code: 'bad_request', message: 'wait for "ready" before sending more' });
          handshaking = true;
          handshake(frame)
            .catch((err: unknown) => {
              const e = toDispatcherError(err);
              send(socket, { type: 'error', code: e.code, message: e.message });
              close(CLOSE.unauthorized, e.message);
            })
            .finally(() => (handshaking = false));
          return;
        }
        handle(frame).catch((err: unknown) => {
          log.error({ err, client: clientId }, 'a socket message could not be answered');
          close(CLOSE.policy, 'a message could not be answered');
        });
      });
      socket.on('close', () => {
        closed = true;
        clearTimeout(handshakeTimer);
        clearInterval(ping);
        clearInterval(recheck);
        stop?.();
      });
      socket.on('error', (err) => log.debug({ err }, 'socket error'));
    },
  });
}
