/**
 * The agent: a recipient of the dispatcher's own connector that runs `rhc-worker-playbook` directives, as
 * the original's hosts do with rhc-worker-playbook. It is a client of the dispatcher, nothing more: it
 * holds a WebSocket to `GET {url}/v1/recipients/{id}/connect`, answers each directive at once (`accepted`
 * or `refused`), and runs the accepted ones (./job.ts), uploading their events to their `return_url`.
 *
 * The connection: authenticated like the HTTP API (`Authorization: Bearer …` or `PSK …`); the dispatcher
 * pings, and ws answers. A connection that drops, fails or is closed by the dispatcher (1001 stopping,
 * 1008 protocol error, anything else) is opened again after a backoff with full jitter (`baseMs` doubling
 * to `maxBackoffMs`), reset once a connection opens. Two things end the agent instead: 401 or 403 on the
 * upgrade (the credential will not do better next time) and close code 4000 (another agent connected with
 * the same id). Its running playbooks still finish and upload first.
 *
 * `stop()`: no more directives (the connection is closed), the running playbooks get `graceMs` to finish,
 * then are stopped; what they collected is uploaded; then it resolves.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { backoffDelay } from './backoff.js';
import type { JobOptions, PlaybookDirective } from './job.js';
import { runJob } from './job.js';
import type { AgentLog } from './log.js';
import { SILENT } from './log.js';
import { isHttpUrl } from '../core/url.js';

export { backoffCeiling, backoffDelay, type BackoffSettings } from './backoff.js';
export { executorOnFailed, executorOnStart, toUploadEvent, type FailureCode, type JobEvent } from './events.js';
export { runJob, type JobOptions, type JobOutcome, type PlaybookDirective } from './job.js';
export type { AgentLog } from './log.js';
export { downloadPlaybook, PlaybookError, preparePlaybook } from './playbook.js';
export { JobEventReader, runPlaybook, type PlaybookRunOptions, type PlaybookRunResult } from './runner.js';
export { encodeEvents, PLAYBOOK_UPLOAD_TYPE, UploadError, uploadEvents, uploadWithRetry } from './upload.js';

/** The directive this agent runs. */
export const PLAYBOOK_DIRECTIVE = 'rhc-worker-playbook';

/** Close codes the dispatcher uses. */
export const CLOSE_REPLACED = 4000;
export const CLOSE_PROTOCOL_ERROR = 1008;
export const CLOSE_GOING_AWAY = 1001;

/** What the original's worker takes when a directive has no `response_interval`. */
const DEFAULT_RESPONSE_INTERVAL_S = 300;

export interface AgentOptions {
  /** The dispatcher's base URL (http:// or https://). */
  url: string;
  /** The agent's recipient id (a UUID). */
  id: string;
  /** The `Authorization` header: `Bearer <token>` or `PSK <key>`. */
  authorization?: string;
  /** What the credential is and where it came from, for the message when it is refused. */
  credentialFrom?: string;
  /** Other origins (`https://host:port`) that get the credential with downloads and uploads, besides the dispatcher's. */
  trustedOrigins?: string[];
  /** Playbooks run at once; a directive beyond is refused. Default 4. */
  maxRuns?: number;
  /** The first reconnection wait's ceiling (ms). Default 1000. */
  baseBackoffMs?: number;
  /** The largest reconnection wait (ms). Default 60 000. */
  maxBackoffMs?: number;
  /** How long `stop()` lets running playbooks finish (ms). Default 30 000. */
  graceMs?: number;
  /** No ping nor message from the dispatcher for this long (ms): the connection is taken as dead and opened again. Default 120 000; 0: never. */
  idleTimeoutMs?: number;
  /** The WebSocket handshake's timeout (ms). Default 10 000. */
  handshakeTimeoutMs?: number;
  ansibleRunner?: string;
  log?: AgentLog;
  /** Passed to each run (upload tries, download limits, temporary directory …). */
  job?: Omit<JobOptions, 'authorizationFor' | 'ansibleRunner' | 'log' | 'signal'>;
}

/** Why the agent ended by itself. */
export class AgentError extends Error {
  constructor(
    message: string,
    readonly reason: 'unauthorized' | 'replaced' | 'invalid',
  ) {
    super(message);
  }
}

export interface Agent {
  /** Stop taking directives, let running playbooks finish (up to the grace time), upload what remains. */
  stop(): Promise<void>;
  /** Settles when the agent has ended: resolves after `stop()`, rejects with an AgentError when it ended by itself (after its runs ended). */
  readonly done: Promise<void>;
  /** The directives running now. */
  running(): number;
  /** Whether the connection is open. */
  connected(): boolean;
}

/** The WebSocket URL of the connect endpoint: http→ws, https→wss, under the base URL's path. */
export function connectUrl(base: string, id: string): string {
  const url = new URL(base);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new AgentError(`the dispatcher's URL must be http:// or https://, not ${base}`, 'invalid');
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/v1/recipients/${encodeURIComponent(id)}/connect`;
  url.search = '';
  url.hash = '';
  return url.toString();
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface DirectiveMessage {
  type: 'directive';
  id: string;
  directive?: unknown;
  metadata?: unknown;
  payload?: unknown;
}

/**
 * Why a directive is refused, or the run it describes: another directive; metadata without `return_url` or
 * `crc_dispatcher_correlation_id`; URLs that are not http(s); a correlation id that is not a UUID.
 */
export function readDirective(message: DirectiveMessage): { refused: string } | { directive: PlaybookDirective; warnings: string[] } {
  if (message.directive !== PLAYBOOK_DIRECTIVE) return { refused: `this agent runs only ${PLAYBOOK_DIRECTIVE} directives, not ${JSON.stringify(message.directive)}`.slice(0, 300) };
  const metadata = typeof message.metadata === 'object' && message.metadata !== null ? (message.metadata as Record<string, unknown>) : {};
  const returnUrl = metadata.return_url;
  const correlationId = metadata.crc_dispatcher_correlation_id;
  if (typeof returnUrl !== 'string' || returnUrl === '') return { refused: 'invalid metadata: missing return_url' };
  if (typeof correlationId !== 'string' || correlationId === '') return { refused: 'invalid metadata: missing crc_dispatcher_correlation_id' };
  if (!UUID.test(correlationId)) return { refused: 'invalid metadata: crc_dispatcher_correlation_id is not a UUID' };
  if (!isHttpUrl(returnUrl)) return { refused: 'invalid metadata: return_url is not an http(s) URL' };
  if (typeof message.payload !== 'string' || !isHttpUrl(message.payload)) return { refused: 'the payload is not the http(s) URL of a playbook' };
  const warnings: string[] = [];
  let responseIntervalS = DEFAULT_RESPONSE_INTERVAL_S;
  const interval = metadata.response_interval;
  if (interval === undefined) warnings.push(`metadata has no response_interval; uploading every ${DEFAULT_RESPONSE_INTERVAL_S} s`);
  else if (typeof interval === 'string' && /^\d+(\.\d+)?$/.test(interval.trim()) && Number(interval) > 0) responseIntervalS = Number(interval);
  else warnings.push(`metadata response_interval ${JSON.stringify(interval)} is not a number of seconds; uploading every ${DEFAULT_RESPONSE_INTERVAL_S} s`);
  return {
    directive: { id: message.id, returnUrl, correlationId: correlationId.toLowerCase(), responseIntervalS, playbookUrl: message.payload },
    warnings,
  };
}

/** The origin of a URL, or null when it is not one. */
function originOf(text: string): string | null {
  try {
    return new URL(text).origin;
  } catch {
    return null;
  }
}

type AttemptOutcome = { kind: 'retry'; reason: string; opened: boolean } | { kind: 'fatal'; error: AgentError } | { kind: 'stopped' };

interface Run {
  directive: PlaybookDirective;
  promise: Promise<void>;
  abort: AbortController;
}

/** Starts the agent: it connects, and keeps connecting, until `stop()` or a fatal answer. */
export function startAgent(options: AgentOptions): Agent {
  const log = options.log ?? SILENT;
  const wsUrl = connectUrl(options.url, options.id);
  if (!UUID.test(options.id)) throw new AgentError(`the agent's id must be a UUID, not "${options.id}"`, 'invalid');
  for (const origin of options.trustedOrigins ?? []) if (originOf(origin) === null) throw new AgentError(`${origin} is not an origin (https://host:port)`, 'invalid');
  const trusted = new Set([originOf(options.url)!, ...(options.trustedOrigins ?? []).map((o) => originOf(o)!)]);
  const authorizationFor = (url: string): string | undefined => {
    const origin = originOf(url);
    return origin !== null && trusted.has(origin) ? options.authorization : undefined;
  };
  const maxRuns = options.maxRuns ?? 4;
  const backoff = { baseMs: options.baseBackoffMs ?? 1000, maxMs: options.maxBackoffMs ?? 60_000 };
  const idleTimeoutMs = options.idleTimeoutMs ?? 120_000;

  const runs = new Map<string, Run>();
  const stopController = new AbortController();
  let stopping = false;
  let socket: WebSocket | null = null;
  let fatal: AgentError | null = null;

  const send = (ws: WebSocket, message: object) => {
    try {
      ws.send(JSON.stringify(message));
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'could not answer the dispatcher');
    }
  };

  const startRun = (directive: PlaybookDirective) => {
    const abort = new AbortController();
    const promise = runJob(directive, { ...options.job, authorizationFor, ansibleRunner: options.ansibleRunner, log, signal: abort.signal })
      .then(() => undefined)
      .catch((err: unknown) => log.error({ directive: directive.id, err: (err as Error).message }, 'the run failed'))
      .finally(() => runs.delete(directive.id));
    runs.set(directive.id, { directive, promise, abort });
  };

  const onDirective = (ws: WebSocket, message: DirectiveMessage) => {
    const read = readDirective(message);
    let refused: string | null = 'refused' in read ? read.refused : null;
    if (refused === null && 'directive' in read) {
      const d = read.directive;
      if (stopping) refused = 'the agent is stopping';
      else if ([...runs.values()].some((r) => r.directive.correlationId === d.correlationId)) refused = `a run with correlation id ${d.correlationId} is already under way`;
      else if (runs.size >= maxRuns) refused = `the agent is running ${runs.size} playbooks, its most (--max-runs ${maxRuns})`;
    }
    log.info({ directive: message.id, name: message.directive, payload: message.payload, refused: refused ?? undefined }, 'directive received');
    if (refused !== null || !('directive' in read)) {
      send(ws, { type: 'refused', id: message.id, reason: refused ?? 'refused' });
      return;
    }
    send(ws, { type: 'accepted', id: message.id });
    for (const warning of read.warnings) log.warn({ directive: message.id }, warning);
    startRun(read.directive);
  };

  const onMessage = (ws: WebSocket, data: WebSocket.RawData, isBinary: boolean) => {
    if (isBinary) return log.warn({}, 'a binary message from the dispatcher; ignored');
    let message: unknown;
    try {
      message = JSON.parse(Buffer.isBuffer(data) ? data.toString('utf8') : Array.isArray(data) ? Buffer.concat(data).toString('utf8') : Buffer.from(data).toString('utf8'));
    } catch {
      return log.warn({}, 'a message from the dispatcher that is not JSON; ignored');
    }
    if (typeof message !== 'object' || message === null || Array.isArray(message)) return log.warn({}, 'a message from the dispatcher that is not an object; ignored');
    const m = message as { type?: unknown; id?: unknown };
    if (m.type === 'pong') return;
    if (m.type !== 'directive') return log.warn({ type: m.type }, 'a message of an unknown type from the dispatcher; ignored');
    if (typeof m.id !== 'string' || m.id === '') return log.warn({}, 'a directive without an id; ignored');
    onDirective(ws, m as DirectiveMessage);
  };

  /** One connection, from opening to closing. */
  const attempt = (): Promise<AttemptOutcome> =>
    new Promise((resolve) => {
      const headers: Record<string, string> = { 'user-agent': 'dispatcher-agent' };
      if (options.authorization !== undefined) headers.authorization = options.authorization;
      const ws = new WebSocket(wsUrl, { headers, handshakeTimeout: options.handshakeTimeoutMs ?? 10_000, maxPayload: 1024 * 1024 });
      socket = ws;
      let opened = false;
      let outcome: AttemptOutcome | null = null;
      let lastError: string | null = null;
      let idle: NodeJS.Timeout | undefined;
      const alive = () => {
        if (idleTimeoutMs <= 0) return;
        clearTimeout(idle);
        idle = setTimeout(() => {
          outcome = { kind: 'retry', reason: `no ping from the dispatcher for ${idleTimeoutMs} ms`, opened };
          ws.terminate();
        }, idleTimeoutMs);
        idle.unref();
      };

      ws.on('open', () => {
        opened = true;
        log.info({ url: wsUrl, id: options.id }, 'connected');
        alive();
      });
      ws.on('ping', alive);
      ws.on('message', (data, isBinary) => {
        alive();
        try {
          onMessage(ws, data, isBinary);
        } catch (err) {
          log.error({ err: (err as Error).message }, 'handling a message from the dispatcher failed');
        }
      });
      ws.on('unexpected-response', (_request, response) => {
        const status = response.statusCode ?? 0;
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          if (body.length < 2000) body += chunk;
        });
        let settled = false;
        const settle = () => {
          if (settled) return;
          settled = true;
          let detail = body.trim();
          try {
            const parsed = JSON.parse(body) as { code?: string; message?: string };
            if (parsed.message !== undefined) detail = `${parsed.code ?? ''}${parsed.code === undefined ? '' : ': '}${parsed.message}`;
          } catch {
            // not JSON: the text as it is
          }
          detail = detail.slice(0, 300);
          if (status === 401 || status === 403) {
            const sent = options.credentialFrom ?? (options.authorization === undefined ? 'no credential' : 'the credential given');
            outcome = { kind: 'fatal', error: new AgentError(`the dispatcher refused the agent's connection: HTTP ${status}${detail === '' ? '' : ` ${detail}`} (sent ${sent} to ${options.url})`, 'unauthorized') };
          } else {
            outcome = { kind: 'retry', reason: `HTTP ${status}${detail === '' ? '' : ` ${detail}`}`, opened: false };
          }
          ws.terminate();
        };
        response.once('end', settle);
        response.once('error', settle);
        // A server that keeps the body coming is not waited for.
        setTimeout(settle, 2000).unref();
      });
      ws.on('error', (err) => {
        lastError = (err as Error & { cause?: Error }).cause?.message ?? err.message;
      });
      ws.on('close', (code, reasonBuffer) => {
        clearTimeout(idle);
        if (socket === ws) socket = null;
        const reason = reasonBuffer.toString('utf8');
        if (outcome !== null) return resolve(outcome);
        if (stopping) return resolve({ kind: 'stopped' });
        if (code === CLOSE_REPLACED) {
          return resolve({
            kind: 'fatal',
            error: new AgentError(`another agent connected to the dispatcher with the id ${options.id}, which took it over (close code 4000${reason === '' ? '' : `: ${reason}`})`, 'replaced'),
          });
        }
        if (!opened) return resolve({ kind: 'retry', reason: lastError ?? `the connection closed (code ${code})`, opened });
        const why = code === CLOSE_PROTOCOL_ERROR ? 'protocol error' : code === CLOSE_GOING_AWAY ? 'the dispatcher is stopping' : 'closed';
        if (code === CLOSE_PROTOCOL_ERROR) log.error({ code, reason }, 'the dispatcher closed the connection for a protocol error');
        resolve({ kind: 'retry', reason: `${why} (code ${code}${reason === '' ? '' : `: ${reason}`})`, opened });
      });
    });

  const loop = async (): Promise<void> => {
    let failures = 0;
    while (!stopping) {
      const outcome = await attempt();
      if (outcome.kind === 'stopped' || stopping) break;
      if (outcome.kind === 'fatal') {
        fatal = outcome.error;
        stopping = true;
        log.error({ err: outcome.error.message }, 'the agent cannot go on');
        break;
      }
      if (outcome.opened) failures = 0;
      const delay = backoffDelay(failures, backoff);
      failures += 1;
      log.warn({ attempt: failures, delayMs: delay, reason: outcome.reason }, `connection lost or refused; connecting again in ${(delay / 1000).toFixed(1)} s`);
      await sleep(delay, undefined, { signal: stopController.signal }).catch(() => undefined);
    }
  };

  /** Waits for the running playbooks: `graceMs` at most, then stops them and waits for their last uploads. */
  const drain = async (graceMs: number | null): Promise<void> => {
    const all = () => Promise.allSettled([...runs.values()].map((r) => r.promise));
    if (runs.size === 0) return;
    log.info({ running: runs.size, graceMs }, 'waiting for the running playbooks');
    if (graceMs === null) {
      await all();
      return;
    }
    const timer = sleep(graceMs, 'grace', { ref: false });
    const first = await Promise.race([all().then(() => 'done'), timer]);
    if (first !== 'done' && runs.size > 0) {
      log.warn({ running: runs.size }, 'the grace time is over; stopping the running playbooks');
      for (const r of runs.values()) r.abort.abort();
      await all();
    }
  };

  let stopped: Promise<void> | null = null;
  const looping = loop();
  const done = looping.then(async () => {
    if (fatal !== null) {
      // Ended by itself: what runs is still the dispatcher's; it finishes and uploads.
      await drain(null);
      throw fatal;
    }
    await stopped;
  });
  // `done` may never be awaited (a stop() caller awaits stop()); no unhandled rejection then.
  done.catch(() => undefined);

  const stop = (): Promise<void> => {
    if (stopped !== null) return stopped;
    stopping = true;
    stopped = (async () => {
      log.info({ running: runs.size }, 'stopping: no more directives');
      stopController.abort();
      const ws = socket;
      if (ws !== null) {
        if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
        else if (ws.readyState === WebSocket.OPEN) ws.close(1000, 'agent stopping');
      }
      await drain(options.graceMs ?? 30_000);
      // A dispatcher that does not answer the closing handshake is not waited for.
      socket?.terminate();
      await looping;
      log.info({}, 'stopped');
    })();
    return stopped;
  };

  return {
    stop,
    done,
    running: () => runs.size,
    connected: () => socket !== null && socket.readyState === WebSocket.OPEN,
  };
}
