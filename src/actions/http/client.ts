/**
 * The guarded HTTP client the dispatcher lends to profiles (`Services.http`): requests to other services (a
 * Cloud Connector, a REST API, Slack) through the same address policy as the `http` action
 * (`actions.http.allow`, ./guard.ts), with its timeout and user agent, and the same coded failures.
 */

import { Agent, buildConnector, request } from 'undici';
import { DispatcherError } from '../../core/errors.js';
import type { HttpAnswer, HttpClient, HttpRequest } from '../../core/http.js';
import { createAddressGuard, type AddressGuard } from './guard.js';
import type { HttpActionSettings } from './settings.js';

/** The most bytes of an answer kept unless a request asks for another bound. */
const DEFAULT_MAX_BYTES = 1024 * 1024;

/**
 * What a failed request means, coded: `attempt_timeout` when it outlived its time (or was aborted),
 * `action_failed` for a request undici refuses, `network_error` for everything that kept it from the
 * receiver (refused, reset, DNS), and the guard's own `address_blocked` as it is.
 */
export function requestFailure(err: unknown, target: string, timeoutMs: number, timedOut: boolean, aborted: boolean): DispatcherError {
  if (timedOut) return new DispatcherError('attempt_timeout', `${target} did not answer within ${timeoutMs}ms`, { cause: err });
  if (aborted) return new DispatcherError('attempt_timeout', `${target} was aborted before it answered`, { cause: err });
  if (err instanceof DispatcherError) return err;
  const code = (err as { code?: unknown }).code;
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new DispatcherError('attempt_timeout', `${target} did not answer within ${timeoutMs}ms`, { cause: err });
  }
  if (code === 'UND_ERR_INVALID_ARG') return new DispatcherError('action_failed', `${target}: the request is invalid: ${describe(err)}`, { cause: err });
  return new DispatcherError('network_error', `${target} could not be reached: ${describe(err)}`, { cause: err });
}

/**
 * A request's abort signal: aborted after `ms`, or as soon as `parent` is. One cleared timer and one
 * listener, where `AbortSignal.any` and `AbortSignal.timeout` cost a dependent signal and a timer that is
 * never cleared for every request (tens of microseconds each, and the timers pile up until they fire).
 */
export class RequestDeadline {
  readonly #controller = new AbortController();
  readonly #timer: NodeJS.Timeout;
  readonly #parent: AbortSignal | undefined;
  readonly #onParentAbort = (): void => this.#controller.abort(this.#parent?.reason);
  #timedOut = false;

  constructor(ms: number, parent?: AbortSignal) {
    this.#parent = parent;
    this.#timer = setTimeout(() => {
      this.#timedOut = true;
      this.#controller.abort(new DOMException(`no answer within ${ms}ms`, 'TimeoutError'));
    }, ms);
    if (parent?.aborted === true) this.#controller.abort(parent.reason);
    else parent?.addEventListener('abort', this.#onParentAbort, { once: true });
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** True when it was its own time that ran out (not the parent's abort). */
  get timedOut(): boolean {
    return this.#timedOut;
  }

  /** Done with the request: the timer and the listener go. */
  clear(): void {
    clearTimeout(this.#timer);
    this.#parent?.removeEventListener('abort', this.#onParentAbort);
  }
}

export function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  if (err.message !== '') return err.message;
  // Racing IPv4 and IPv6 ends in an AggregateError with an empty message.
  if (err instanceof AggregateError && err.errors.length > 0) return err.errors.map(describe).join('; ');
  return String((err as { code?: unknown }).code ?? err.name);
}

/**
 * The guard's connector, but with TLS certificates not verified (`rejectUnauthorized: false`): for the
 * requests that ask for it (`insecure`). The address policy is the same: names resolve through the guard's
 * lookup, and refused IP-literal hosts are refused here.
 */
function insecureConnector(guard: AddressGuard): buildConnector.connector {
  const base = buildConnector({ lookup: guard.lookup, keepAlive: true, rejectUnauthorized: false });
  return (connectOptions, callback) => {
    const blocked = guard.blockedLiteral(connectOptions.hostname);
    if (blocked !== null) {
      callback(blocked, null);
      return;
    }
    base(connectOptions, callback);
  };
}

/**
 * A client with its own connection pools; `close` ends them. Requests with `insecure` go through a second
 * pool whose TLS connections do not verify the server's certificate, so that they never share a
 * connection with verified requests.
 */
export function createHttpClient(settings: Pick<HttpActionSettings, 'allow' | 'timeout' | 'userAgent'>): HttpClient & { close(): Promise<void> } {
  const guard = createAddressGuard(settings.allow);
  const agent = new Agent({ connect: guard.connector });
  let insecureAgent: Agent | undefined;
  const agentFor = (insecure: boolean | undefined): Agent => {
    if (insecure !== true) return agent;
    insecureAgent ??= new Agent({ connect: insecureConnector(guard) });
    return insecureAgent;
  };
  return {
    async request(url: string | URL, r: HttpRequest = {}): Promise<HttpAnswer> {
      let target: URL;
      try {
        target = new URL(url);
      } catch {
        throw new DispatcherError('action_failed', `"${String(url)}" is not an absolute URL`);
      }
      if (target.protocol !== 'http:' && target.protocol !== 'https:') throw new DispatcherError('action_failed', `scheme ${target.protocol} is not http: or https:`);
      const method = (r.method ?? 'GET').toUpperCase();
      // Where the request goes, for messages: no query string, which often carries tokens.
      const shown = `${method} ${target.origin}${target.pathname}`;
      const blocked = guard.blockedLiteral(target.hostname);
      if (blocked !== null) throw blocked;
      const timeoutMs = r.timeoutMs ?? settings.timeout;
      const max = r.maxBytes ?? DEFAULT_MAX_BYTES;
      const deadline = new RequestDeadline(timeoutMs, r.signal);
      const { signal } = deadline;
      try {
        const res = await request(target, {
          dispatcher: agentFor(r.insecure),
          method,
          headers: { 'user-agent': settings.userAgent, ...(r.headers ?? {}) },
          body: r.body ?? null,
          signal,
          headersTimeout: timeoutMs,
          bodyTimeout: timeoutMs,
        });
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const chunk of res.body) {
          size += (chunk as Buffer).length;
          if (size > max) {
            res.body.destroy();
            throw new DispatcherError('action_failed', `${shown} answered more than ${max} bytes`);
          }
          chunks.push(chunk as Buffer);
        }
        return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks, size) };
      } catch (err) {
        throw requestFailure(err, shown, timeoutMs, deadline.timedOut, r.signal?.aborted === true);
      } finally {
        deadline.clear();
      }
    },
    async close() {
      await Promise.all([agent.close(), insecureAgent?.close()]);
    },
  };
}
