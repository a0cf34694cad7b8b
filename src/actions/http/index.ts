/**
 * `http`: the webhook action. Sends one HTTP request per attempt, rendered from the event, and reports
 * the receiver's answer.
 *
 * - Every request carries the run id as `idempotency-key` and `webhook-id` (the same on every attempt of
 *   a run, so the receiver can drop repeats), `webhook-timestamp` (this attempt's time) and, when a signing
 *   secret is set, a Standard Webhooks `webhook-signature` (see ./signature.ts).
 * - Targets are checked by the address policy (./guard.ts) when the socket connects; redirects are not
 *   followed (a 3xx is a failure, as Standard Webhooks recommends: the URL should be updated instead).
 * - Outcome: a success status (2xx unless `successStatus` says otherwise) is `success`; any other status
 *   is `http_status`, retryable for 408, 425, 429 and 5xx, with `Retry-After` honoured; unreachable
 *   receivers are `network_error`; a request slower than the timeout is `attempt_timeout`.
 *
 * One undici Agent (keep-alive connection pools, the guarded connector) serves every action created with
 * the same `actions.http` settings; the last action to close closes it.
 */

import { Agent, request, type Dispatcher } from 'undici';
import type { Action, ActionContext, ActionOutcome, ActionSettings, ActionType } from '../../core/action.js';
import { DispatcherError } from '../../core/errors.js';
import type { Template } from '../../core/template.js';
import { decodeOptions, defaultsOf } from '../../core/options.js';
import { DURATION_SCHEMA, parseDuration } from '../../core/units.js';
import { HTTP_ACTION_SECTION, type HttpActionSettings } from './settings.js';
import { RequestDeadline, requestFailure } from './client.js';
import { createAddressGuard, type AddressGuard } from './guard.js';
import { signWebhook, signingKey } from './signature.js';

/** `actions.http` as the action uses it; its defaults where the settings leave an option out (`HTTP_ACTION_SECTION`). */
type HttpSettings = HttpActionSettings;

const DEFAULT_SETTINGS = decodeOptions(HTTP_ACTION_SECTION, defaultsOf(HTTP_ACTION_SECTION)) as HttpSettings;

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
type Method = (typeof METHODS)[number];
const SENDS_EVENT_BY_DEFAULT: ReadonlySet<Method> = new Set(['POST', 'PUT', 'PATCH']);

/** Headers the action sets itself, or that only the HTTP client may set. */
const RESERVED_HEADERS = new Set([
  'idempotency-key',
  'webhook-id',
  'webhook-timestamp',
  'webhook-signature',
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'upgrade',
  'te',
  'trailer',
  'expect',
]);
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** After the summary, read at most this much more so the connection can be reused; past it, close it. */
const DRAIN_BYTES = 64 * 1024;
const DRAIN_MS = 1000;

const STATUS_ITEM_SCHEMA = {
  anyOf: [
    { type: 'integer', minimum: 100, maximum: 599 },
    { type: 'string', pattern: '^([1-5]xx|[1-5][0-9]{2}(-[1-5][0-9]{2})?)$' },
  ],
};
const SCALAR = { type: ['string', 'number', 'boolean'] };

const paramsSchema = {
  type: 'object',
  required: ['url'],
  additionalProperties: false,
  properties: {
    url: { type: 'string', minLength: 1, description: 'Target URL (template), http or https.' },
    method: { type: 'string', enum: [...METHODS, ...METHODS.map((m) => m.toLowerCase())], default: 'POST' },
    headers: { type: 'object', additionalProperties: SCALAR, description: 'Request headers (templates).' },
    query: {
      type: 'object',
      additionalProperties: { anyOf: [SCALAR, { type: 'array', items: SCALAR }] },
      description: 'Query parameters (templates), appended to those in the URL.',
    },
    body: {
      description:
        'Body (any JSON template). Objects and arrays are sent as JSON, strings as text/plain. Absent: POST, ' +
        'PUT and PATCH send the whole event as application/cloudevents+json.',
    },
    timeout: { ...DURATION_SCHEMA, description: 'Longest time one request may take (overrides actions.http.timeout).' },
    signingSecret: { type: 'string', minLength: 1, description: 'Overrides actions.http.signingSecret.' },
    successStatus: {
      description: 'Status codes that mean success: codes (204), ranges ("2xx", "200-299"). Default: 2xx.',
      anyOf: [STATUS_ITEM_SCHEMA, { type: 'array', minItems: 1, items: STATUS_ITEM_SCHEMA }],
    },
  },
} as const;

export const httpAction: ActionType = {
  type: 'http',
  paramsSchema,
  create(params, settings) {
    const shared = readSettings(settings.settings);
    const prepared = prepare(params, shared, settings);
    const lease = acquireAgent(settings.settings, shared.allow);
    let closed = false;
    return {
      execute: (ctx) => execute(prepared, lease, ctx),
      async close() {
        if (closed) return;
        closed = true;
        await releaseAgent(settings.settings, lease);
      },
    } satisfies Action;
  },
};

// ---------------------------------------------------------------------------------------------------
// Shared agent

interface AgentLease {
  agent: Agent;
  guard: AddressGuard;
  users: number;
}

/** Keyed by the `actions.http` settings object, which every action of the type shares. */
const agents = new WeakMap<object, AgentLease>();

function acquireAgent(key: object, allow: readonly string[]): AgentLease {
  let lease = agents.get(key);
  if (lease === undefined) {
    const guard = createAddressGuard(allow);
    lease = { guard, agent: new Agent({ connect: guard.connector }), users: 0 };
    agents.set(key, lease);
  }
  lease.users += 1;
  return lease;
}

async function releaseAgent(key: object, lease: AgentLease): Promise<void> {
  lease.users -= 1;
  if (lease.users > 0) return;
  if (agents.get(key) === lease) agents.delete(key);
  await lease.agent.close();
}

// ---------------------------------------------------------------------------------------------------
// Configuration, checked once

interface PreparedRequest {
  url: Template;
  method: Method;
  headers: Template | null;
  query: Template | null;
  /** null: no `body` parameter. */
  body: Template | null;
  /** Lower-cased header names given in `headers`, to know whether content-type is set. */
  headerNames: ReadonlySet<string>;
  timeout: number;
  key: Buffer | null;
  maxResponseBytes: number;
  userAgent: string;
  isSuccess: (status: number) => boolean;
}

function configError(pointer: string, message: string): DispatcherError {
  return new DispatcherError('config_invalid', `http${pointer.replace(/\//g, '.')}: ${message}`, {
    problems: [{ pointer, message }],
  });
}

function readSettings(raw: Record<string, unknown>): HttpSettings {
  const s: HttpSettings = { ...DEFAULT_SETTINGS };
  const bad = (key: string, message: string): DispatcherError =>
    new DispatcherError('config_invalid', `actions.http.${key}: ${message}`, {
      problems: [{ pointer: `/actions/http/${key}`, message }],
    });
  if (raw.allow !== undefined) {
    if (!Array.isArray(raw.allow) || raw.allow.some((a) => typeof a !== 'string')) throw bad('allow', 'must be a list of strings');
    s.allow = raw.allow as string[];
  }
  if (raw.signingSecret !== undefined) {
    if (typeof raw.signingSecret !== 'string') throw bad('signingSecret', 'must be a string');
    s.signingSecret = raw.signingSecret;
  }
  if (raw.timeout !== undefined) {
    const ms = parseDuration(raw.timeout);
    if (ms === null || ms <= 0) throw bad('timeout', 'must be a positive duration');
    s.timeout = ms;
  }
  if (raw.maxResponseBytes !== undefined) {
    if (typeof raw.maxResponseBytes !== 'number' || !Number.isInteger(raw.maxResponseBytes) || raw.maxResponseBytes < 0) {
      throw bad('maxResponseBytes', 'must be a number of bytes');
    }
    s.maxResponseBytes = raw.maxResponseBytes;
  }
  if (raw.userAgent !== undefined) {
    if (typeof raw.userAgent !== 'string') throw bad('userAgent', 'must be a string');
    s.userAgent = raw.userAgent;
  }
  return s;
}

function prepare(params: Record<string, unknown>, s: HttpSettings, settings: ActionSettings): PreparedRequest {
  for (const key of Object.keys(params)) {
    if (!(key in paramsSchema.properties)) throw configError(`/${key}`, 'is not a parameter of the http action');
  }

  if (typeof params.url !== 'string' || params.url === '') throw configError('/url', 'is required (a URL template)');
  // Event data rendered into the URL is percent-encoded: it stays a value, whatever it holds (`| raw` opts out).
  const url = settings.compile(params.url, { escape: 'url', at: ['url'] });
  if (url.isStatic) targetUrl(params.url, 'config');

  const methodParam = params.method ?? 'POST';
  const method = typeof methodParam === 'string' ? methodParam.toUpperCase() : '';
  if (!(METHODS as readonly string[]).includes(method)) throw configError('/method', `must be one of ${METHODS.join(', ')}`);

  const headerNames = new Set<string>();
  let headers: Template | null = null;
  if (params.headers !== undefined) {
    if (!isPlainObject(params.headers)) throw configError('/headers', 'must be an object of header templates');
    const lowered: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(params.headers)) {
      const lower = name.toLowerCase();
      if (!HEADER_NAME.test(name)) throw configError(`/headers/${name}`, 'is not a valid header name');
      if (RESERVED_HEADERS.has(lower)) throw configError(`/headers/${name}`, 'is set by the dispatcher and cannot be configured');
      if (headerNames.has(lower)) throw configError(`/headers/${name}`, 'is given twice');
      if (!isScalar(value)) throw configError(`/headers/${name}`, 'must be a string template');
      headerNames.add(lower);
      lowered[lower] = value;
    }
    headers = settings.compile(lowered, { at: ['headers'] });
  }

  let query: Template | null = null;
  if (params.query !== undefined) {
    if (!isPlainObject(params.query)) throw configError('/query', 'must be an object of parameter templates');
    for (const [name, value] of Object.entries(params.query)) {
      if (!isScalar(value) && !(Array.isArray(value) && value.every(isScalar))) {
        throw configError(`/query/${name}`, 'must be a template or a list of templates');
      }
    }
    query = settings.compile(params.query, { at: ['query'] });
  }

  let body: Template | null = null;
  if (params.body !== undefined) {
    if (method === 'GET' || method === 'HEAD') throw configError('/body', `a ${method} request has no body`);
    body = settings.compile(params.body, { at: ['body'] });
  }

  let timeout = s.timeout;
  if (params.timeout !== undefined) {
    const ms = parseDuration(params.timeout);
    if (ms === null || ms <= 0) throw configError('/timeout', 'must be a positive duration (500ms, 30s, 1m, or milliseconds)');
    timeout = ms;
  }

  const secret = params.signingSecret ?? s.signingSecret;
  let key: Buffer | null = null;
  if (secret !== undefined) {
    if (typeof secret !== 'string') throw configError('/signingSecret', 'must be a string');
    try {
      key = signingKey(secret);
    } catch (err) {
      // The message says what is wrong with the secret without repeating it.
      if (params.signingSecret !== undefined) throw configError('/signingSecret', (err as Error).message);
      throw new DispatcherError('config_invalid', `actions.http.signingSecret: ${(err as Error).message}`, {
        problems: [{ pointer: '/actions/http/signingSecret', message: (err as Error).message }],
      });
    }
  }

  return {
    url,
    method: method as Method,
    headers,
    query,
    body,
    headerNames,
    timeout,
    key,
    maxResponseBytes: s.maxResponseBytes,
    userAgent: s.userAgent,
    isSuccess: compileSuccessStatus(params.successStatus),
  };
}

/** `successStatus` as a predicate: codes (`204`, `"204"`), classes (`"2xx"`), ranges (`"200-299"`). */
export function compileSuccessStatus(spec: unknown): (status: number) => boolean {
  if (spec === undefined) return (status) => status >= 200 && status <= 299;
  const items = Array.isArray(spec) ? spec : [spec];
  if (items.length === 0) throw configError('/successStatus', 'must list at least one status');
  const ranges = items.map((item, i): [number, number] => {
    const pointer = Array.isArray(spec) ? `/successStatus/${i}` : '/successStatus';
    if (typeof item === 'number' && Number.isInteger(item) && item >= 100 && item <= 599) return [item, item];
    if (typeof item === 'string') {
      const cls = /^([1-5])xx$/i.exec(item);
      if (cls) return [Number(cls[1]) * 100, Number(cls[1]) * 100 + 99];
      const range = /^([1-5]\d\d)(?:-([1-5]\d\d))?$/.exec(item);
      if (range) {
        const lo = Number(range[1]);
        const hi = range[2] === undefined ? lo : Number(range[2]);
        if (hi >= lo) return [lo, hi];
      }
    }
    throw configError(pointer, 'must be a status code (204), a class ("2xx") or a range ("200-299")');
  });
  return (status) => ranges.some(([lo, hi]) => status >= lo && status <= hi);
}

// ---------------------------------------------------------------------------------------------------
// One attempt

async function execute(p: PreparedRequest, lease: AgentLease, ctx: ActionContext): Promise<ActionOutcome> {
  const url = targetUrl(render(ctx, p.url, 'url'), 'render');
  if (p.query !== null) appendQuery(url, render(ctx, p.query, 'query'));
  // Where the request goes, for messages: no credentials (refused anyway) and no query string, which
  // often carries tokens.
  const target = `${p.method} ${url.origin}${url.pathname}`;

  // IP-literal hosts never reach the connector's lookup; refuse them here, before anything is sent (the
  // connector checks them again when it connects).
  const blocked = lease.guard.blockedLiteral(url.hostname);
  if (blocked !== null) throw blocked;

  const headers: Record<string, string> = { 'user-agent': p.userAgent };
  if (p.headers !== null) Object.assign(headers, renderHeaders(ctx, p.headers));

  let payload: Buffer | undefined;
  if (p.body !== null) {
    const value = render(ctx, p.body, 'body');
    if (typeof value === 'string') {
      payload = Buffer.from(value, 'utf8');
      headers['content-type'] ??= 'text/plain; charset=utf-8';
    } else {
      let json: string | undefined;
      try {
        json = JSON.stringify(value ?? null);
      } catch (err) {
        throw new DispatcherError('template_error', `body: cannot be sent as JSON: ${(err as Error).message}`, { cause: err });
      }
      payload = Buffer.from(json ?? 'null', 'utf8');
      headers['content-type'] ??= 'application/json';
    }
  } else if (SENDS_EVENT_BY_DEFAULT.has(p.method)) {
    payload = Buffer.from(JSON.stringify(ctx.event), 'utf8');
    headers['content-type'] ??= 'application/cloudevents+json';
  }

  const timestamp = Math.floor(Date.now() / 1000);
  headers['idempotency-key'] = ctx.runId;
  headers['webhook-id'] = ctx.runId;
  headers['webhook-timestamp'] = String(timestamp);
  if (p.key !== null) headers['webhook-signature'] = signWebhook(p.key, ctx.runId, timestamp, payload ?? '');

  const answer = await send(p, lease, ctx, url, target, headers, payload);

  ctx.log.debug({ target, httpStatus: answer.status, attempt: ctx.attempt }, 'webhook answered');
  if (p.isSuccess(answer.status)) return { status: 'success', httpStatus: answer.status, response: answer.text };

  const retryAfterMs = parseRetryAfter(answer.headers['retry-after']);
  throw new DispatcherError('http_status', `HTTP ${answer.status} from ${target}`, {
    httpStatus: answer.status,
    response: answer.text,
    retryable: isRetryableStatus(answer.status),
    ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
  });
}

interface Answer {
  status: number;
  headers: Dispatcher.ResponseData['headers'];
  text: string;
}

async function send(
  p: PreparedRequest,
  lease: AgentLease,
  ctx: ActionContext,
  url: URL,
  target: string,
  headers: Record<string, string>,
  payload: Buffer | undefined,
): Promise<Answer> {
  const deadline = new RequestDeadline(p.timeout, ctx.signal);
  const { signal } = deadline;
  try {
    const res = await request(url, {
      dispatcher: lease.agent,
      method: p.method,
      headers,
      body: payload ?? null,
      signal,
      headersTimeout: p.timeout,
      bodyTimeout: p.timeout,
    });
    const text = await readSummary(res.body, p.maxResponseBytes, signal);
    return { status: res.statusCode, headers: res.headers, text };
  } catch (err) {
    throw requestFailure(err, target, p.timeout, deadline.timedOut, ctx.signal.aborted);
  } finally {
    deadline.clear();
  }
}

/**
 * The first `max` bytes of the answer as text. The rest is read and dropped (a little, so the connection
 * can be reused) or the connection is closed: never buffered.
 */
async function readSummary(body: Dispatcher.ResponseData['body'], max: number, signal: AbortSignal): Promise<string> {
  const decoder = new TextDecoder();
  let text = '';
  let size = 0;
  if (max > 0) {
    // destroyOnReturn: false, so that leaving the loop early keeps the stream for dump() below.
    for await (const chunk of body.iterator({ destroyOnReturn: false })) {
      const buf = chunk as Buffer;
      const take = Math.min(buf.length, max - size);
      // stream: true holds back a character cut in half at the limit instead of printing U+FFFD.
      text += decoder.decode(buf.subarray(0, take), { stream: true });
      size += take;
      if (size >= max) break;
    }
  }
  // The status is known: a slow or endless remainder must not turn the answer into a timeout.
  const drain = new RequestDeadline(DRAIN_MS, signal);
  try {
    await body.dump({ limit: max + DRAIN_BYTES, signal: drain.signal }).catch(() => undefined);
  } finally {
    drain.clear();
  }
  return text;
}

// ---------------------------------------------------------------------------------------------------
// Helpers

/** Render a parameter; a failure is `template_error`, naming the parameter. */
export function render(ctx: ActionContext, template: Template, what: string): unknown {
  try {
    return ctx.render(template);
  } catch (err) {
    if (err instanceof DispatcherError) throw err;
    throw new DispatcherError('template_error', `${what}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The URL to send to, from the `url` parameter (at configuration time when it is static, at each attempt
 * when it is a template).
 */
function targetUrl(value: unknown, when: 'config' | 'render'): URL {
  const fail = (message: string): DispatcherError =>
    when === 'config' ? configError('/url', message) : new DispatcherError('template_error', `url: ${message}`);
  if (typeof value !== 'string' || value === '') throw fail('does not render to a URL');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw fail(
      when === 'render' && /^https?%3A/i.test(value)
        ? 'is not an absolute URL: values from the event are percent-encoded; a whole URL from the event needs `| raw` ({{ data.url | raw }})'
        : 'is not an absolute URL',
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw fail(`scheme ${url.protocol} is not http: or https:`);
  if (url.username !== '' || url.password !== '') throw fail('must not carry credentials; send them in a header');
  return url;
}

function appendQuery(url: URL, value: unknown): void {
  if (!isPlainObject(value)) throw new DispatcherError('template_error', 'query: does not render to an object');
  for (const [name, v] of Object.entries(value)) {
    for (const item of Array.isArray(v) ? v : [v]) {
      if (item === undefined || item === null) continue;
      url.searchParams.append(name, typeof item === 'object' ? JSON.stringify(item) : String(item));
    }
  }
}

/** Rendered headers: null and undefined left out; an object, a line break or NUL is `template_error` (values never quoted). */
export function renderHeaders(ctx: ActionContext, template: Template): Record<string, string> {
  const rendered = render(ctx, template, 'headers') as Record<string, unknown>;
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(rendered)) {
    if (value === undefined || value === null) continue;
    if (typeof value === 'object') throw new DispatcherError('template_error', `headers.${name}: renders to an object, not a header value`);
    const text = String(value);
    // Values are never quoted in messages: headers often carry credentials.
    if (/[\r\n\0]/.test(text)) throw new DispatcherError('template_error', `headers.${name}: renders to a value with a line break or NUL`);
    out[name] = text;
  }
  return out;
}

/** 408 Request Timeout, 425 Too Early, 429 Too Many Requests and every 5xx may pass if tried again. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}

/**
 * RFC 9110 §10.2.3: `Retry-After = HTTP-date / delay-seconds`. Returns milliseconds from `now`, or
 * undefined when the header is absent or neither form.
 */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const text = (Array.isArray(value) ? value[0] : value)?.trim();
  if (text === undefined || text === '') return undefined;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  // All three HTTP-date forms (IMF-fixdate, RFC 850, asctime) open with the day name; Date.parse alone
  // would take "-5" for a year.
  if (!/^(mon|tue|wed|thu|fri|sat|sun)[a-z]*,? /i.test(text)) return undefined;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function isScalar(value: unknown): boolean {
  return typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean';
}
