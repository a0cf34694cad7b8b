/**
 * The built-in connector: recipients (agents that run directives) connect to the dispatcher itself, and
 * directives reach them over that connection. The hub knows no HTTP framework and no WebSocket library: it
 * works on `RecipientSocket`, which the API's route adapts a WebSocket to, and is fed the socket's incoming
 * text, its pongs and its close through the `RecipientLink` that `attach` returns.
 *
 * The protocol (JSON text messages; docs/api.md, "Recipients"):
 *
 *   dispatcher → recipient   {"type":"directive","id":…,"directive":…,"metadata":{…},"payload":…}
 *                            {"type":"pong"}                      (to the recipient's ping)
 *   recipient → dispatcher   {"type":"accepted","id":…}           the directive was taken
 *                            {"type":"refused","id":…,"reason":…} it will not be run
 *                            {"type":"ping"}
 *
 * Close codes: 1008 for a message that breaks the protocol, 4000 for a connection replaced by a newer one of
 * the same recipient, 1001 when the dispatcher stops. A recipient id is unique within its tenant, and the last
 * connection wins: a recipient that reconnects before its old connection is seen to drop is not refused.
 */

import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { Gauge, type Registry } from 'prom-client';
import type { Connector, ConnectorContext, RecipientMessage } from './connector.js';
import { DispatcherError } from './errors.js';

/** What the hub needs of a connection: a WebSocket, adapted by the route. */
export interface RecipientSocket {
  /** One text message. */
  send(text: string): void;
  /** A closing handshake with this code and reason. */
  close(code: number, reason: string): void;
  /** A protocol-level ping; its pong is reported with `RecipientLink.pong`. */
  ping(): void;
  /** Drop the connection without a closing handshake (one that stopped answering). */
  terminate(): void;
}

/** What the route feeds the hub about one attached socket. */
export interface RecipientLink {
  /** An incoming message: its text, or null for a binary one (which the protocol has none of). */
  message(text: string | null): void;
  /** The answer to the last protocol-level ping. */
  pong(): void;
  /** The socket closed (either side, or dropped). */
  closed(): void;
}

/** Who connected a recipient, and from where. */
export interface RecipientInfo {
  /** The service of the principal that connected it. */
  service: string;
  /** The client's address. */
  address: string;
}

/** A connected recipient. */
export interface ConnectedRecipient {
  recipient: string;
  orgId: string;
  service: string;
  /** When it connected (ms since the epoch). */
  connectedAt: number;
  address: string;
}

export interface RecipientHubSettings {
  /** How long a directive waits for its `accepted` or `refused` (ms). Default 10 000. */
  ackTimeoutMs: number;
  /** How often every connection is pinged; one that did not answer the last ping is terminated (ms). Default 30 000. */
  heartbeatMs: number;
  /** Directives awaiting an answer per connection; beyond, a send fails at once. Default 1000. */
  maxPending: number;
  /** The largest incoming message (bytes); a larger one closes the connection with 1008. Default 64 KiB. */
  maxMessageBytes: number;
}

export const RECIPIENT_HUB_DEFAULTS: RecipientHubSettings = { ackTimeoutMs: 10_000, heartbeatMs: 30_000, maxPending: 1000, maxMessageBytes: 64 * 1024 };

/** WebSocket close codes the hub uses (RFC 6455 §7.4; 4000–4999 are for applications). */
export const CLOSE_CODES = { goingAway: 1001, policyViolation: 1008, replaced: 4000 } as const;

interface Pending {
  resolve(value: { id: string }): void;
  reject(error: DispatcherError): void;
}

interface Connection {
  readonly key: string;
  readonly recipient: string;
  readonly orgId: string;
  readonly info: RecipientInfo;
  readonly connectedAt: number;
  readonly socket: RecipientSocket;
  readonly pending: Map<string, Pending>;
  /** Answered the last ping (or connected since). */
  alive: boolean;
  /** Detached: closed, replaced, refused or terminated; nothing more is taken from it. */
  gone: boolean;
}

export interface RecipientHubOptions extends Partial<RecipientHubSettings> {
  log: Logger;
  /** Where the `dispatcher_recipients_connected` gauge goes; none without it. */
  registry?: Registry;
}

export class RecipientHub implements Connector {
  readonly settings: RecipientHubSettings;
  readonly #log: Logger;
  /** `orgId \0 recipient` → its live connection. */
  readonly #connections = new Map<string, Connection>();
  #heartbeat: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: RecipientHubOptions) {
    const { log, registry, ...settings } = options;
    this.settings = { ...RECIPIENT_HUB_DEFAULTS, ...settings };
    this.#log = log;
    if (registry !== undefined) {
      const connections = this.#connections;
      new Gauge({
        name: 'dispatcher_recipients_connected',
        help: 'Recipients (agents) connected to this process',
        registers: [registry],
        collect() {
          this.set(connections.size);
        },
      });
    }
  }

  /**
   * A socket of `recipient` (a UUID) in tenant `orgId` is open. An earlier connection of the same recipient
   * is closed with 4000 and its directives awaiting an answer fail (`network_error`).
   */
  attach(recipient: string, orgId: string, socket: RecipientSocket, info: RecipientInfo): RecipientLink {
    const id = recipient.toLowerCase();
    const key = `${orgId}\u0000${id}`;
    const connection: Connection = { key, recipient: id, orgId, info, connectedAt: Date.now(), socket, pending: new Map(), alive: true, gone: false };
    if (this.#closed) {
      connection.gone = true;
      safely(() => socket.close(CLOSE_CODES.goingAway, 'dispatcher stopping'));
      return { message: () => {}, pong: () => {}, closed: () => {} };
    }
    const earlier = this.#connections.get(key);
    if (earlier !== undefined) {
      this.#log.info({ recipient: id, orgId, address: info.address, earlier: earlier.info.address }, 'recipient connected again; its earlier connection is replaced');
      this.#detach(earlier, () => new DispatcherError('network_error', `recipient ${id} connected again before it answered; its earlier connection was replaced`));
      safely(() => earlier.socket.close(CLOSE_CODES.replaced, 'replaced by a newer connection'));
    }
    this.#connections.set(key, connection);
    this.#log.info({ recipient: id, orgId, service: info.service, address: info.address }, 'recipient connected');
    this.#startHeartbeat();
    return {
      message: (text) => {
        try {
          this.#receive(connection, text);
        } catch (err) {
          // Never out of a socket's handler.
          this.#log.error({ err, recipient: id, orgId }, 'handling a message from a recipient failed');
        }
      },
      pong: () => {
        connection.alive = true;
      },
      closed: () => this.#detach(connection, () => new DispatcherError('network_error', `the connection of recipient ${id} closed before it answered`)),
    };
  }

  /**
   * Send a directive and wait for the recipient's answer: `accepted` resolves with the directive's id,
   * `refused` throws `action_failed`; no answer within `ackTimeoutMs`, or the connection closing first, is a
   * `network_error`; an aborted signal is `canceled` or `attempt_timeout`, as its reason says.
   */
  send(recipient: string, message: RecipientMessage, context: ConnectorContext): Promise<{ id: string }> {
    const { signal } = context;
    if (this.#closed) return Promise.reject(stopping());
    if (signal?.aborted === true) return Promise.reject(aborted(signal, recipient));
    const connection = this.#connections.get(`${context.orgId}\u0000${recipient.toLowerCase()}`);
    if (connection === undefined) return Promise.reject(new DispatcherError('recipient_not_found', `recipient ${recipient} is not connected to this dispatcher`));
    if (connection.pending.size >= this.settings.maxPending) {
      return Promise.reject(new DispatcherError('network_error', `recipient ${recipient}: too many directives awaiting an answer (${this.settings.maxPending})`));
    }
    const id = randomUUID();
    return new Promise<{ id: string }>((resolve, reject) => {
      const onAbort = () => settle(aborted(signal!, recipient));
      const settle = (outcome: { id: string } | DispatcherError) => {
        if (connection.pending.get(id) !== entry) return;
        connection.pending.delete(id);
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (outcome instanceof DispatcherError) reject(outcome);
        else resolve(outcome);
      };
      const entry: Pending = { resolve: settle, reject: settle };
      connection.pending.set(id, entry);
      const timer = setTimeout(() => settle(new DispatcherError('network_error', `recipient ${recipient} did not answer directive ${id} within ${this.settings.ackTimeoutMs} ms`)), this.settings.ackTimeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        connection.socket.send(JSON.stringify({ type: 'directive', id, directive: message.directive, metadata: message.metadata, payload: message.payload }));
      } catch (err) {
        settle(new DispatcherError('network_error', `could not send to recipient ${recipient}: ${(err as Error).message}`, { cause: err }));
      }
    });
  }

  async status(recipient: string, context: ConnectorContext): Promise<{ connected: boolean }> {
    return { connected: this.#connections.has(`${context.orgId}\u0000${recipient.toLowerCase()}`) };
  }

  /** The connected recipients, of one tenant or of all. */
  list(orgId?: string): ConnectedRecipient[] {
    const out: ConnectedRecipient[] = [];
    for (const c of this.#connections.values()) {
      if (orgId !== undefined && c.orgId !== orgId) continue;
      out.push({ recipient: c.recipient, orgId: c.orgId, service: c.info.service, connectedAt: c.connectedAt, address: c.info.address });
    }
    return out;
  }

  /** Close every connection (1001) and fail every directive awaiting an answer (`shutting_down`); attaches after it are refused. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    for (const c of [...this.#connections.values()]) {
      this.#detach(c, stopping);
      safely(() => c.socket.close(CLOSE_CODES.goingAway, 'dispatcher stopping'));
    }
  }

  #receive(connection: Connection, text: string | null): void {
    if (connection.gone) return;
    if (text === null) return this.#refuse(connection, 'binary messages are not part of the protocol');
    if (Buffer.byteLength(text, 'utf8') > this.settings.maxMessageBytes) return this.#refuse(connection, `message larger than ${this.settings.maxMessageBytes} bytes`);
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return this.#refuse(connection, 'message is not JSON');
    }
    if (message === null || typeof message !== 'object' || Array.isArray(message)) return this.#refuse(connection, 'message is not a JSON object');
    const m = message as { type?: unknown; id?: unknown; reason?: unknown };
    switch (m.type) {
      case 'ping':
        safely(() => connection.socket.send('{"type":"pong"}'));
        return;
      case 'accepted':
      case 'refused': {
        if (typeof m.id !== 'string' || m.id === '') return this.#refuse(connection, `${m.type} needs the directive's id`);
        if (m.type === 'refused' && m.reason !== undefined && typeof m.reason !== 'string') return this.#refuse(connection, 'reason is not a string');
        const pending = connection.pending.get(m.id);
        // A late answer (after the directive timed out or was aborted) changes nothing.
        if (pending === undefined) {
          this.#log.debug({ recipient: connection.recipient, orgId: connection.orgId, id: m.id, type: m.type }, 'an answer for no directive awaiting one');
          return;
        }
        if (m.type === 'accepted') pending.resolve({ id: m.id });
        else {
          const reason = typeof m.reason === 'string' && m.reason !== '' ? m.reason.slice(0, 1000) : 'no reason given';
          pending.reject(new DispatcherError('action_failed', `recipient ${connection.recipient} refused the directive: ${reason}`, { response: reason }));
        }
        return;
      }
      default:
        return this.#refuse(connection, typeof m.type === 'string' ? `unknown message type "${m.type.slice(0, 40)}"` : 'message has no type');
    }
  }

  /** A message that breaks the protocol: the connection is closed with 1008 and the reason (short: a close frame holds 123 bytes). */
  #refuse(connection: Connection, reason: string): void {
    this.#log.warn({ recipient: connection.recipient, orgId: connection.orgId, address: connection.info.address, reason }, 'recipient broke the protocol; closing its connection');
    this.#detach(connection, () => new DispatcherError('network_error', `recipient ${connection.recipient} broke the protocol (${reason}); its connection was closed`));
    safely(() => connection.socket.close(CLOSE_CODES.policyViolation, closeReason(reason)));
  }

  /** Forget a connection (once) and fail what it had awaiting an answer. */
  #detach(connection: Connection, error: () => DispatcherError): void {
    if (connection.gone) return;
    connection.gone = true;
    // Only this connection: a newer one of the same recipient stays.
    if (this.#connections.get(connection.key) === connection) this.#connections.delete(connection.key);
    for (const p of [...connection.pending.values()]) p.reject(error());
    if (this.#connections.size === 0) {
      clearInterval(this.#heartbeat);
      this.#heartbeat = undefined;
    }
  }

  /**
   * One timer for every connection: each tick terminates the connections that did not answer the previous
   * tick's ping, and pings the others. A connection is so given between one and two periods to answer.
   */
  #startHeartbeat(): void {
    if (this.#heartbeat !== undefined || !(this.settings.heartbeatMs > 0)) return;
    this.#heartbeat = setInterval(() => {
      for (const c of [...this.#connections.values()]) {
        if (!c.alive) {
          this.#log.warn({ recipient: c.recipient, orgId: c.orgId, address: c.info.address }, `recipient did not answer a ping within ${this.settings.heartbeatMs} ms; terminating its connection`);
          this.#detach(c, () => new DispatcherError('network_error', `recipient ${c.recipient} stopped answering pings before it answered`));
          safely(() => c.socket.terminate());
          continue;
        }
        c.alive = false;
        safely(() => c.socket.ping());
      }
    }, this.settings.heartbeatMs);
    this.#heartbeat.unref();
  }
}

function stopping(): DispatcherError {
  return new DispatcherError('shutting_down', 'the dispatcher is stopping');
}

/**
 * An aborted signal as a coded error, as the `http` action reads one: `canceled` when its reason says the
 * run was canceled, `attempt_timeout` otherwise (the attempt's timeout, a shutdown).
 */
function aborted(signal: AbortSignal, recipient: string): DispatcherError {
  const reason: unknown = signal.reason;
  if (reason instanceof DispatcherError && reason.code === 'canceled') {
    return new DispatcherError('canceled', `the directive to recipient ${recipient} was canceled before it was answered`, { cause: reason });
  }
  return new DispatcherError('attempt_timeout', `the directive to recipient ${recipient} was aborted before it was answered`, { cause: reason });
}

/** A close frame's reason holds at most 123 bytes of UTF-8 (RFC 6455 §5.5): cut at a character's edge. */
function closeReason(text: string): string {
  if (Buffer.byteLength(text, 'utf8') <= 123) return text;
  let out = '';
  for (const ch of text) {
    if (Buffer.byteLength(out + ch, 'utf8') > 120) break;
    out += ch;
  }
  return `${out}…`;
}

/** Socket calls that may throw on a socket already closing: what they would say is said by its close. */
function safely(call: () => void): void {
  try {
    call();
  } catch {
    // the socket is going away; its close event detaches it
  }
}
