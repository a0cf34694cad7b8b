/**
 * `rest`: find objects of a REST API by a selector, then change each of them (PATCH by default, PUT, DELETE
 * or POST), or create one (POST without a selector). Written for CISO Assistant's API (Django REST framework,
 * `Authorization: Token …`), whose dispatcher it replaces, but nothing in it is particular to that API beyond
 * DRF's conventions (../../../shared/seeds/notes/ciso-assistant-dispatcher.md §3, §5).
 *
 * - A selector is an object of query parameters: `GET {url}/{resource}/?<selector>`, following DRF's `next`
 *   links (pages `{results, next}`, or a plain JSON array as the whole result), with the original's `target`
 *   (`single`: exactly one object; `multiple`: one or more) and its error texts.
 * - Every request goes through the guarded client the dispatcher lends (`ctx.services.http`): the address
 *   policy of `actions.http.allow` applies.
 * - Failures are coded as the `http` action codes them: a transport error or a timeout, 408, 425, 429 and 5xx
 *   are retryable (`Retry-After` honoured); any other status fails at once; an answer that is not the JSON
 *   the API should give (an HTML page: `url` is not the API root) is `action_failed`; so are the selector's
 *   errors. A 401 renews the token by logging in again when `login` is given, and otherwise fails at once.
 * - Each target is a host of the run (`<resource>/<id>`). When a target fails after others were changed,
 *   the hosts so far are recorded before the attempt fails, so the run shows what was changed.
 *
 * `RestClient` is the same machinery for profiles: find, and requests with a JSON, form or raw body.
 */

import type { Action, ActionContext, ActionOutcome, ActionSettings, ActionType, OutcomeHost } from '../../core/action.js';
import { DispatcherError } from '../../core/errors.js';
import type { HttpAnswer, HttpClient } from '../../core/http.js';
import type { Template } from '../../core/template.js';
import { DURATION_SCHEMA, parseDuration } from '../../core/units.js';
import { isRetryableStatus, parseRetryAfter, render, renderHeaders } from '../http/index.js';

// ---------------------------------------------------------------------------------------------------
// The original's texts (filtering.process_selector), kept word for word: they reach its errors topic.

export const NO_MATCH = 'No objects match the given selector.';
export const MISSING_ID = "API result is missing required 'id' field";
export const SOME_MISSING_ID = "Some API results are missing required 'id' field";
export const UNEXPECTED_FORMAT = 'Unexpected API response format';
export const NO_SELECTOR = 'No selector provided.';
export const TOKEN_REFUSED = 'the API refused the token (401): it has expired or was revoked — provision a new Personal Access Token';

export function expectedSingle(n: number): string {
  return `Expected a single object, but got ${n} objects. Please refine the selector or set the selector to target 'multiple' if you expect multiple objects.`;
}

export function unknownTarget(target: string): string {
  return `Unknown target specified in selector: ${target}`;
}

export function notJson(contentType: string): string {
  return `the API answered ${contentType} where JSON was expected (is url the API root?)`;
}

/** The login path of CISO Assistant (Knox), under the API root. */
export const DEFAULT_LOGIN_PATH = '/iam/login/';
export const DEFAULT_TIMEOUT_MS = 30_000;
/** Most pages a selector may span, and most objects it may find: a selector that matches more is refused. */
export const DEFAULT_MAX_PAGES = 1000;
export const DEFAULT_MAX_RESULTS = 10_000;
/** Most bytes of one answer (a page of objects). */
export const DEFAULT_MAX_BYTES = 16 * 1024 * 1024;
/** How much of an answer an error carries. */
const SUMMARY_CHARS = 300;

function failed(message: string, options: { httpStatus?: number; response?: string } = {}): DispatcherError {
  return new DispatcherError('action_failed', message, { retryable: false, ...options });
}

// ---------------------------------------------------------------------------------------------------
// The client

/** What the requests of one action share between its runs: the token a login gave (and a login under way). */
export interface RestSession {
  token?: string;
  renewing?: Promise<string>;
}

export interface RestLogin {
  /** Under the API root (default `/iam/login/`). */
  path?: string;
  username: string;
  password: string;
}

export interface RestClientOptions {
  /** The API root: `https://ciso.example.com/api` (a trailing `/` is dropped). */
  url: string;
  /** Sent as `Authorization: Token <token>` (DRF / Knox). */
  token?: string;
  /** Log in (`POST {url}{path}` `{username, password}` → `{token}`) when there is no token or the API refuses it. */
  login?: RestLogin;
  /** False: the server's TLS certificate is not verified (a self-signed internal API). Default true. */
  verifyTls?: boolean;
  /** Longest time one request may take (default 30 s). */
  timeoutMs?: number;
  /** Sent with every request (another authentication scheme, for instance). */
  headers?: Record<string, string>;
  /** Aborts every request (an attempt's signal). */
  signal?: AbortSignal;
  /** Where the login's token is kept, to share it between clients (an action's runs); a new one otherwise. */
  session?: RestSession;
  maxPages?: number;
  maxResults?: number;
  maxBytes?: number;
  /** Told of every request once answered (its status) or failed (status 0): for logs. */
  onExchange?: (exchange: RestExchange) => void;
}

/** One request of a client, as `onExchange` is told of it; the URL without its query (a selector may hold names). */
export interface RestExchange {
  method: string;
  url: string;
  status: number;
  ms: number;
}

export interface RestRequestOptions {
  /** Sent as `application/json` (any JSON value, `null` included). */
  json?: unknown;
  /** Sent as `application/x-www-form-urlencoded` (a list repeats its key; null and undefined are left out). */
  form?: Record<string, unknown>;
  /** Sent as they are (`content-type` from `headers`, else `application/octet-stream`). */
  bytes?: Buffer | Uint8Array;
  /** Query parameters added to the path's. */
  query?: Record<string, unknown>;
  headers?: Record<string, string>;
  /** `json` (default): a body that is not JSON fails; `any`: it is returned as text. An empty body is null either way. */
  expect?: 'json' | 'any';
}

export interface RestResponse {
  status: number;
  /** The parsed JSON answer; null when the body is empty; text when `expect: 'any'` and it is not JSON. */
  body: unknown;
}

/**
 * Requests to one REST API, with its authentication (a token, a login that renews it), its error rules and
 * selectors. Paths are relative to the API root (`/applied-controls/`, see `resourcePath`).
 */
export class RestClient {
  readonly #http: HttpClient;
  readonly #base: URL;
  readonly #token: string | undefined;
  readonly #login: Required<RestLogin> | undefined;
  readonly #insecure: boolean;
  readonly #timeoutMs: number;
  readonly #headers: Record<string, string>;
  readonly #signal: AbortSignal | undefined;
  readonly #session: RestSession;
  readonly #maxPages: number;
  readonly #maxResults: number;
  readonly #maxBytes: number;
  readonly #onExchange: ((exchange: RestExchange) => void) | undefined;

  constructor(http: HttpClient, options: RestClientOptions) {
    this.#http = http;
    this.#base = apiRoot(options.url);
    this.#token = options.token === '' ? undefined : options.token;
    this.#login = options.login === undefined ? undefined : { path: options.login.path ?? DEFAULT_LOGIN_PATH, username: options.login.username, password: options.login.password };
    this.#insecure = options.verifyTls === false;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#headers = lowerKeys(options.headers ?? {});
    this.#signal = options.signal;
    this.#session = options.session ?? {};
    this.#maxPages = options.maxPages ?? DEFAULT_MAX_PAGES;
    this.#maxResults = options.maxResults ?? DEFAULT_MAX_RESULTS;
    this.#maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    this.#onExchange = options.onExchange;
  }

  /** The API root, without a trailing slash. */
  get base(): string {
    return this.#base.href.replace(/\/$/, '');
  }

  /** A path under the API root (`/applied-controls/`) or an absolute URL on the API's origin, as a URL. */
  url(path: string): URL {
    if (/^https?:\/\//i.test(path)) {
      const url = new URL(path);
      if (url.origin !== this.#base.origin) {
        throw failed(`the API gave a link to another origin (${url.origin}), not its own (${this.#base.origin}): the token is not sent there`);
      }
      return url;
    }
    return new URL(`${this.base}${path.startsWith('/') ? path : `/${path}`}`);
  }

  /**
   * The ids of the objects the selector finds (`target`: `single`, the default, or `multiple`), with the
   * original's errors: none found, more than one for `single`, an object without an id, an unknown target.
   */
  async find(resource: string, selector: Record<string, unknown>): Promise<string[]> {
    const { target, ...filters } = selector;
    const results = await this.list(resource, filters);
    return selectIds(results, target === undefined || target === null || target === '' ? 'single' : String(target));
  }

  /** Every object `GET {url}/{resource}/?<query>` lists, all pages read (bounded). */
  async list(resource: string, query: Record<string, unknown> = {}): Promise<unknown[]> {
    let url = this.url(resourcePath(resource));
    appendQuery(url, query, 'selector');
    const out: unknown[] = [];
    const seen = new Set<string>([url.href]);
    for (let page = 1; ; page += 1) {
      const { body } = await this.#send('GET', url, {});
      if (Array.isArray(body)) {
        // A plain list is the whole result.
        out.push(...body);
        this.#bound(out.length);
        return out;
      }
      if (!isPlainObject(body) || !Array.isArray(body.results)) throw failed(UNEXPECTED_FORMAT);
      out.push(...body.results);
      this.#bound(out.length);
      const next = body.next;
      if (next === undefined || next === null || next === '') return out;
      if (typeof next !== 'string') throw failed(UNEXPECTED_FORMAT);
      if (page >= this.#maxPages) throw failed(`the selector's results span more than ${this.#maxPages} pages: refine the selector`);
      let following: URL;
      try {
        following = new URL(next, url);
      } catch {
        throw failed(`the API's next page link is not a URL (${JSON.stringify(next.slice(0, 200))})`);
      }
      url = this.url(following.href);
      if (seen.has(url.href)) throw failed(`the API's next page link goes back to a page already read (${url.origin}${url.pathname})`);
      seen.add(url.href);
    }
  }

  #bound(count: number): void {
    if (count > this.#maxResults) throw failed(`more than ${this.#maxResults} objects match the selector: refine the selector`);
  }

  /** The parsed answer of one request (see `send`). */
  async request(method: string, path: string, options: RestRequestOptions = {}): Promise<unknown> {
    return (await this.send(method, path, options)).body;
  }

  /**
   * One request, authenticated (renewing the token once by logging in when the API refuses it and `login` is
   * given). A 2xx answer resolves; anything else throws a coded error.
   */
  async send(method: string, path: string, options: RestRequestOptions = {}): Promise<RestResponse> {
    const url = this.url(path);
    appendQuery(url, options.query ?? {}, 'query');
    return this.#send(method.toUpperCase(), url, options);
  }

  async #send(method: string, url: URL, options: RestRequestOptions): Promise<RestResponse> {
    const shown = `${method} ${url.origin}${url.pathname}`;
    let token = this.#session.token ?? this.#token;
    if (token === undefined && this.#login !== undefined) token = await this.#renew(undefined);
    let answer = await this.#exchange(method, url, options, token);
    if (answer.status === 401 && this.#login !== undefined) {
      token = await this.#renew(token);
      answer = await this.#exchange(method, url, options, token);
      if (answer.status === 401) {
        throw new DispatcherError('http_status', `the API refused the token (401) even after a fresh login at ${this.#login.path}`, {
          retryable: false,
          httpStatus: 401,
          response: summarize(answer),
        });
      }
    }
    if (answer.status === 401) {
      const authenticated = token !== undefined || this.#headers.authorization !== undefined;
      throw new DispatcherError(
        'http_status',
        authenticated ? TOKEN_REFUSED : 'the API requires authentication (401): give a token (a Personal Access Token), headers or login',
        { retryable: false, httpStatus: 401, response: summarize(answer) },
      );
    }
    if (answer.status < 200 || answer.status > 299) throw statusError(answer, shown);
    return { status: answer.status, body: parseBody(answer, options.expect ?? 'json') };
  }

  async #exchange(method: string, url: URL, options: RestRequestOptions, token: string | undefined): Promise<HttpAnswer> {
    const headers: Record<string, string> = { accept: 'application/json', ...this.#headers, ...lowerKeys(options.headers ?? {}) };
    if (token !== undefined) headers.authorization = `Token ${token}`;
    let body: string | Buffer | undefined;
    if ('json' in options && options.json !== undefined) {
      body = JSON.stringify(options.json);
      headers['content-type'] = 'application/json';
    } else if (options.form !== undefined) {
      body = formEncode(options.form);
      headers['content-type'] = 'application/x-www-form-urlencoded';
    } else if (options.bytes !== undefined) {
      body = Buffer.from(options.bytes);
      headers['content-type'] ??= 'application/octet-stream';
    }
    const started = performance.now();
    let status = 0;
    try {
      const answer = await this.#http.request(url, {
        method,
        headers,
        ...(body === undefined ? {} : { body }),
        timeoutMs: this.#timeoutMs,
        maxBytes: this.#maxBytes,
        ...(this.#signal === undefined ? {} : { signal: this.#signal }),
        ...(this.#insecure ? { insecure: true } : {}),
      });
      status = answer.status;
      return answer;
    } finally {
      this.#onExchange?.({ method, url: `${url.origin}${url.pathname}`, status, ms: Math.round((performance.now() - started) * 10) / 10 });
    }
  }

  /**
   * A token from the login, shared by the session's clients: one login at a time; a client whose token was
   * already replaced by another's login takes the new one without logging in again.
   */
  async #renew(stale: string | undefined): Promise<string> {
    const session = this.#session;
    if (session.renewing !== undefined) return session.renewing;
    if (session.token !== undefined && session.token !== stale) return session.token;
    const renewing = this.#logIn().then((token) => {
      session.token = token;
      return token;
    });
    session.renewing = renewing;
    try {
      return await renewing;
    } finally {
      if (session.renewing === renewing) delete session.renewing;
    }
  }

  async #logIn(): Promise<string> {
    const login = this.#login!;
    const url = this.url(login.path);
    const shown = `the login at ${login.path}`;
    const answer = await this.#http.request(url, {
      method: 'POST',
      headers: { accept: 'application/json', 'content-type': 'application/json' },
      body: JSON.stringify({ username: login.username, password: login.password }),
      timeoutMs: this.#timeoutMs,
      maxBytes: 64 * 1024,
      ...(this.#signal === undefined ? {} : { signal: this.#signal }),
      ...(this.#insecure ? { insecure: true } : {}),
    });
    if (answer.status < 200 || answer.status > 299) {
      const retryable = isRetryableStatus(answer.status);
      const retryAfterMs = retryable ? parseRetryAfter(answer.headers['retry-after']) : undefined;
      throw new DispatcherError('http_status', `${shown} ${retryable ? 'failed' : 'was refused'} (HTTP ${answer.status}): ${summarize(answer)}`, {
        retryable,
        httpStatus: answer.status,
        response: summarize(answer),
        ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
      });
    }
    const body = parseBody(answer, 'json');
    const token = isPlainObject(body) ? body.token : undefined;
    if (typeof token !== 'string' || token === '') throw failed(`${shown} answered without a token`, { httpStatus: answer.status });
    return token;
  }
}

/** The ids a selector's results give for its target, with the original's errors. */
export function selectIds(results: readonly unknown[], target: string): string[] {
  if (results.length === 0) throw failed(NO_MATCH);
  if (target === 'single') {
    if (results.length > 1) throw failed(expectedSingle(results.length));
    const id = idOf(results[0]);
    if (id === null) throw failed(MISSING_ID);
    return [id];
  }
  if (target === 'multiple') {
    const ids = results.map(idOf);
    if (ids.some((id) => id === null)) throw failed(SOME_MISSING_ID);
    // An object seen twice (a page shifted while it was read) is one target.
    return [...new Set(ids as string[])];
  }
  throw failed(unknownTarget(target));
}

/** An object's `id` as text, or null when it has none. */
export function idOf(value: unknown): string | null {
  if (!isPlainObject(value)) return null;
  const id = value.id;
  if (typeof id === 'string' && id !== '') return id;
  if (typeof id === 'number' && Number.isFinite(id)) return String(id);
  return null;
}

/** `/applied-controls/`, or `/applied-controls/<id>/`: each segment percent-encoded, no dot segments. */
export function resourcePath(resource: string, id?: string): string {
  const segments = resource.split('/').filter((s) => s !== '');
  if (segments.length === 0) throw new DispatcherError('template_error', 'resource: is empty');
  for (const s of [...segments, ...(id === undefined ? [] : [id])]) {
    if (s === '.' || s === '..') throw new DispatcherError('template_error', `resource: "${s}" is a dot segment`);
  }
  const path = `/${segments.map(encodeURIComponent).join('/')}/`;
  if (id === undefined) return path;
  if (id === '') throw failed(MISSING_ID);
  return `${path}${encodeURIComponent(id)}/`;
}

function apiRoot(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new DispatcherError('template_error', `url: "${text.slice(0, 200)}" is not an absolute URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new DispatcherError('template_error', `url: scheme ${url.protocol} is not http: or https:`);
  if (url.username !== '' || url.password !== '') throw new DispatcherError('template_error', 'url: must not carry credentials; use token, login or headers');
  if (url.search !== '' || url.hash !== '') throw new DispatcherError('template_error', 'url: the API root takes no query or fragment');
  url.pathname = url.pathname.replace(/\/+$/, '');
  return url;
}

function appendQuery(url: URL, query: Record<string, unknown>, what: string): void {
  for (const [name, value] of Object.entries(query)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item === undefined || item === null) continue;
      if (typeof item === 'object') throw new DispatcherError('template_error', `${what}.${name}: is an object, not a query value`);
      url.searchParams.append(name, String(item));
    }
  }
}

function formEncode(form: Record<string, unknown>): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(form)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item === undefined || item === null) continue;
      if (typeof item === 'object') throw new DispatcherError('template_error', `body.${name}: is an object, which a form cannot carry`);
      params.append(name, String(item));
    }
  }
  return params.toString();
}

function contentTypeOf(answer: HttpAnswer): string {
  const raw = answer.headers['content-type'];
  const text = (Array.isArray(raw) ? raw[0] : raw) ?? '';
  return text.split(';', 1)[0]!.trim().toLowerCase();
}

function isJsonType(type: string): boolean {
  return type === 'application/json' || type.endsWith('+json');
}

/** The answer as JSON (null when empty); what is not JSON fails `action_failed`, unless `any` takes text. */
function parseBody(answer: HttpAnswer, expect: 'json' | 'any'): unknown {
  if (answer.body.length === 0 || answer.status === 204) return null;
  const type = contentTypeOf(answer);
  const text = answer.body.toString('utf8');
  if (type !== 'text/html') {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      // below
    }
  }
  if (expect === 'any') return text;
  throw failed(notJson(type === '' ? 'a body without a content type' : isJsonType(type) ? `invalid ${type}` : type), {
    httpStatus: answer.status,
    response: summarize(answer),
  });
}

/** A short summary of an answer for errors: DRF's `detail`, else the text's start; an HTML page is not quoted. */
export function summarize(answer: HttpAnswer): string {
  const type = contentTypeOf(answer);
  if (answer.body.length === 0) return '(empty)';
  if (type === 'text/html') return `(an HTML page of ${answer.body.length} bytes)`;
  const text = answer.body.toString('utf8', 0, Math.min(answer.body.length, 8192));
  let shown = text;
  try {
    const value = JSON.parse(answer.body.toString('utf8')) as unknown;
    if (isPlainObject(value) && typeof value.detail === 'string') shown = value.detail;
  } catch {
    // not JSON: its text
  }
  shown = shown.replace(/\s+/g, ' ').trim();
  return shown.length > SUMMARY_CHARS ? `${shown.slice(0, SUMMARY_CHARS)}…` : shown;
}

function statusError(answer: HttpAnswer, shown: string): DispatcherError {
  const retryable = isRetryableStatus(answer.status);
  const retryAfterMs = retryable ? parseRetryAfter(answer.headers['retry-after']) : undefined;
  const summary = summarize(answer);
  const hint = contentTypeOf(answer) === 'text/html' && !retryable ? ' (is url the API root?)' : '';
  return new DispatcherError('http_status', `HTTP ${answer.status} from ${shown}: ${summary}${hint}`, {
    retryable,
    httpStatus: answer.status,
    response: summary,
    ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
  });
}

function lowerKeys(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

// ---------------------------------------------------------------------------------------------------
// The action

const METHODS = ['PATCH', 'PUT', 'DELETE', 'POST'] as const;
type Method = (typeof METHODS)[number];

/** Headers the action or the HTTP client sets. */
const RESERVED_HEADERS = new Set(['idempotency-key', 'content-type', 'host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'expect']);
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const SCALAR = { type: ['string', 'number', 'boolean'] };
/** Most login sessions an action keeps (one per API root and user its templates render to). */
const MAX_SESSIONS = 64;

const paramsSchema = {
  type: 'object',
  required: ['url', 'resource'],
  additionalProperties: false,
  properties: {
    url: { type: 'string', minLength: 1, description: 'The API root (template): `https://ciso.example.com/api`.' },
    resource: { type: 'string', minLength: 1, description: 'The resource (template): `applied-controls`.' },
    selector: {
      type: ['object', 'string'],
      description: 'Query parameters that find the targets (templates), with `target`: `single` (default) or `multiple`; or a template whose value is that object.',
    },
    method: { type: 'string', enum: [...METHODS, ...METHODS.map((m) => m.toLowerCase())], default: 'PATCH' },
    body: { description: 'What is sent (any JSON template): as JSON, or as a form with `form: true`.' },
    form: { type: 'boolean', default: false, description: 'Send `body` as application/x-www-form-urlencoded.' },
    token: { type: 'string', description: 'Sent as `Authorization: Token <token>` (template).' },
    headers: { type: 'object', additionalProperties: SCALAR, description: 'More request headers (templates), for other authentication schemes.' },
    login: {
      type: 'object',
      required: ['username', 'password'],
      additionalProperties: false,
      properties: {
        path: { type: 'string', minLength: 1, default: DEFAULT_LOGIN_PATH },
        username: { type: 'string', minLength: 1 },
        password: { type: 'string', minLength: 1 },
      },
      description: 'Log in for a token when there is none or the API refuses it (templates).',
    },
    verifyTls: { type: 'boolean', default: true, description: "False: do not verify the API's TLS certificate." },
    timeout: { ...DURATION_SCHEMA, description: 'Longest time one request may take (default 30s).' },
  },
} as const;

export const restAction: ActionType = {
  type: 'rest',
  paramsSchema,
  create(params, settings): Action {
    return new RestAction(params, settings);
  },
};

/** The run's result. */
export interface RestResult {
  resource: string;
  method: Method;
  /** The ids of the objects changed (or the one created). */
  targets: string[];
  /** The id of the object a POST without a selector created. */
  created?: string;
}

interface Prepared {
  url: Template;
  resource: Template;
  selector: Template | null;
  method: Method;
  body: Template | null;
  form: boolean;
  token: Template | null;
  headers: Template | null;
  login: { path: Template; username: Template; password: Template } | null;
  verifyTls: boolean;
  timeoutMs: number;
}

function configError(pointer: string, message: string): DispatcherError {
  return new DispatcherError('config_invalid', `rest${pointer.replace(/\//g, '.')}: ${message}`, { problems: [{ pointer, message }] });
}

function prepare(params: Record<string, unknown>, settings: ActionSettings): Prepared {
  for (const key of Object.keys(params)) {
    if (!(key in paramsSchema.properties)) throw configError(`/${key}`, 'is not a parameter of the rest action');
  }
  const compile = (value: unknown, at: string[], escape?: 'url'): Template => settings.compile(value, { at, ...(escape === undefined ? {} : { escape }) });

  if (typeof params.url !== 'string' || params.url === '') throw configError('/url', 'is required (the API root, a URL template)');
  // Event data rendered into the URL is percent-encoded (`| raw` opts out), as in the http action.
  const url = compile(params.url, ['url'], 'url');
  if (url.isStatic) {
    try {
      apiRoot(params.url);
    } catch (err) {
      throw configError('/url', (err as Error).message.replace(/^url: /, ''));
    }
  }
  if (typeof params.resource !== 'string' || params.resource === '') throw configError('/resource', 'is required (a resource name, `applied-controls`)');
  const resource = compile(params.resource, ['resource']);
  if (resource.isStatic) {
    try {
      resourcePath(params.resource);
    } catch (err) {
      throw configError('/resource', (err as Error).message.replace(/^resource: /, ''));
    }
  }

  const methodParam = params.method ?? 'PATCH';
  const method = (typeof methodParam === 'string' ? methodParam.toUpperCase() : '') as Method;
  if (!METHODS.includes(method)) throw configError('/method', `must be one of ${METHODS.join(', ')}`);

  let selector: Template | null = null;
  if (params.selector !== undefined) {
    if (typeof params.selector !== 'string' && !isPlainObject(params.selector)) throw configError('/selector', 'must be an object of query parameters, or a template whose value is one');
    selector = compile(params.selector, ['selector']);
  } else if (method !== 'POST') {
    throw configError('/selector', `is required for ${method} (which objects to change); only POST creates without one`);
  }

  let body: Template | null = null;
  if (params.body !== undefined) {
    if (method === 'DELETE') throw configError('/body', 'a DELETE request has no body');
    body = compile(params.body, ['body']);
  } else if (method === 'PATCH' || method === 'PUT') {
    throw configError('/body', `is required for ${method} (what to change)`);
  }
  if (params.form !== undefined && typeof params.form !== 'boolean') throw configError('/form', 'must be true or false');
  const form = params.form === true;
  if (form && body === null) throw configError('/form', 'needs a body to send as a form');
  if (form && body!.isStatic && !isPlainObject(params.body)) throw configError('/body', 'must be an object to be sent as a form');

  let token: Template | null = null;
  if (params.token !== undefined) {
    if (typeof params.token !== 'string') throw configError('/token', 'must be a string template');
    token = compile(params.token, ['token']);
  }

  let headers: Template | null = null;
  if (params.headers !== undefined) {
    if (!isPlainObject(params.headers)) throw configError('/headers', 'must be an object of header templates');
    const lowered: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(params.headers)) {
      const lower = name.toLowerCase();
      if (!HEADER_NAME.test(name)) throw configError(`/headers/${name}`, 'is not a valid header name');
      if (RESERVED_HEADERS.has(lower)) throw configError(`/headers/${name}`, 'is set by the dispatcher and cannot be configured');
      if (lower === 'authorization' && token !== null) throw configError(`/headers/${name}`, 'and token both give the authorization header: keep one');
      if (lower in lowered) throw configError(`/headers/${name}`, 'is given twice');
      if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') throw configError(`/headers/${name}`, 'must be a string template');
      lowered[lower] = value;
    }
    headers = compile(lowered, ['headers']);
  }

  let login: Prepared['login'] = null;
  if (params.login !== undefined) {
    const l = params.login;
    if (!isPlainObject(l)) throw configError('/login', 'must be {path, username, password}');
    for (const key of Object.keys(l)) if (!['path', 'username', 'password'].includes(key)) throw configError(`/login/${key}`, 'is not a parameter of login');
    for (const key of ['username', 'password']) {
      if (typeof l[key] !== 'string' || l[key] === '') throw configError(`/login/${key}`, 'is required (a string template)');
    }
    const path = l.path ?? DEFAULT_LOGIN_PATH;
    if (typeof path !== 'string' || !(path.startsWith('/') || path.startsWith('{{'))) throw configError('/login/path', 'must be a path under the API root, starting with /');
    login = { path: compile(path, ['login', 'path']), username: compile(l.username, ['login', 'username']), password: compile(l.password, ['login', 'password']) };
  }

  if (params.verifyTls !== undefined && typeof params.verifyTls !== 'boolean') throw configError('/verifyTls', 'must be true or false');
  let timeoutMs = DEFAULT_TIMEOUT_MS;
  if (params.timeout !== undefined) {
    const ms = parseDuration(params.timeout);
    if (ms === null || ms <= 0) throw configError('/timeout', 'must be a positive duration (500ms, 30s, 1m, or milliseconds)');
    timeoutMs = ms;
  }
  return { url, resource, selector, method, body, form, token, headers, login, verifyTls: params.verifyTls !== false, timeoutMs };
}

interface Done {
  id: string;
  status: number;
}

class RestAction implements Action {
  readonly #p: Prepared;
  /** The tokens logins gave, by API root, login path and user: shared by the action's runs. */
  readonly #sessions = new Map<string, RestSession>();

  constructor(params: Record<string, unknown>, settings: ActionSettings) {
    this.#p = prepare(params, settings);
  }

  async execute(ctx: ActionContext): Promise<ActionOutcome> {
    const http = ctx.services.http;
    if (http === undefined) throw new DispatcherError('internal', 'the rest action needs the HTTP client of the dispatcher (services.http)');
    const p = this.#p;
    const url = text(ctx, p.url, 'url', true)!;
    const resource = text(ctx, p.resource, 'resource', true)!;
    const token = p.token === null ? undefined : text(ctx, p.token, 'token', false);
    const headers = p.headers === null ? {} : renderHeaders(ctx, p.headers);
    let login: RestLogin | undefined;
    let session: RestSession | undefined;
    if (p.login !== null) {
      login = { path: text(ctx, p.login.path, 'login.path', true)!, username: text(ctx, p.login.username, 'login.username', true)!, password: text(ctx, p.login.password, 'login.password', true)! };
      session = this.#session(`${url}\0${login.path}\0${login.username}`);
    }
    const client = new RestClient(http, {
      url,
      ...(token === undefined ? {} : { token }),
      ...(login === undefined ? {} : { login }),
      ...(session === undefined ? {} : { session }),
      verifyTls: p.verifyTls,
      timeoutMs: p.timeoutMs,
      headers,
      signal: ctx.signal,
      onExchange: (e) => ctx.log.debug(e, 'rest: request'),
    });
    const request: RestRequestOptions = { headers: { 'idempotency-key': ctx.runId } };
    if (p.body !== null) {
      const value = render(ctx, p.body, 'body');
      if (p.form) {
        if (!isPlainObject(value)) throw new DispatcherError('template_error', 'body: does not render to an object, which a form needs');
        request.form = value;
      } else {
        request.json = value ?? null;
      }
    }

    if (p.selector === null) {
      // POST without a selector: a new object.
      const answer = await client.send('POST', resourcePath(resource), request);
      const created = idOf(answer.body);
      const result: RestResult = { resource, method: 'POST', targets: created === null ? [] : [created], ...(created === null ? {} : { created }) };
      ctx.log.debug({ resource, created, httpStatus: answer.status }, 'rest: created');
      return {
        status: 'success',
        httpStatus: answer.status,
        response: created === null ? `POST ${resource}: created (the answer has no id)` : `POST ${resource}: created ${created}`,
        result,
        hosts: created === null ? [] : [host(resource, created, answer.status, 'POST')],
      };
    }

    const selector = render(ctx, p.selector, 'selector');
    if (!isPlainObject(selector)) throw new DispatcherError('template_error', 'selector: does not render to an object of query parameters');
    if (Object.keys(selector).filter((k) => k !== 'target').length === 0) throw failed(NO_SELECTOR);
    const ids = await client.find(resource, selector);
    const done: Done[] = [];
    for (const id of ids) {
      try {
        const answer = await client.send(p.method, resourcePath(resource, id), request);
        done.push({ id, status: answer.status });
      } catch (err) {
        await this.#recordPartial(ctx, resource, done, id, err);
        throw err;
      }
    }
    const hosts = done.map((d) => host(resource, d.id, d.status, p.method));
    // The outcome only creates hosts: one an earlier attempt recorded (failed, or done before another failed)
    // is updated here, its error cleared.
    if (ctx.attempt > 1) await this.#upsert(ctx, hosts.map((h) => ({ ...h, details: { ...h.details, error: null, code: null } })), 'update');
    const result: RestResult = { resource, method: p.method, targets: ids };
    const shown = ids.length <= 10 ? ids.join(', ') : `${ids.slice(0, 10).join(', ')} … (${ids.length})`;
    return {
      status: 'success',
      httpStatus: done[done.length - 1]!.status,
      response: `${p.method} ${resource}: ${shown}`,
      result,
      hosts,
    };
  }

  #session(key: string): RestSession {
    let session = this.#sessions.get(key);
    if (session === undefined) {
      session = {};
      this.#sessions.set(key, session);
      if (this.#sessions.size > MAX_SESSIONS) this.#sessions.delete(this.#sessions.keys().next().value!);
    }
    return session;
  }

  /** The targets done so far (success) and the one that failed (failure), as hosts of the run. */
  async #recordPartial(ctx: ActionContext, resource: string, done: readonly Done[], failedId: string, err: unknown): Promise<void> {
    const e = err instanceof DispatcherError ? err : undefined;
    const failure: OutcomeHost = {
      name: `${resource}/${failedId}`,
      status: 'failure',
      details: {
        method: this.#p.method,
        ...(e?.httpStatus === undefined ? {} : { httpStatus: e.httpStatus }),
        error: (err as Error).message,
        ...(e === undefined ? {} : { code: e.code }),
      },
    };
    await this.#upsert(ctx, [...done.map((d) => host(resource, d.id, d.status, this.#p.method)), failure]);
  }

  async #upsert(ctx: ActionContext, hosts: readonly OutcomeHost[], only?: 'update'): Promise<void> {
    const upsert = ctx.services.upsertHosts;
    if (upsert === undefined || hosts.length === 0) return;
    const at = Date.now();
    try {
      await upsert(hosts.map((h) => ({ runId: ctx.runId, name: h.name, at, status: h.status!, details: h.details ?? {}, ...(only === undefined ? {} : { only }) })));
    } catch (err) {
      // The attempt's own outcome matters more than the hosts: it is reported anyway.
      ctx.log.warn({ err }, 'rest: could not record the hosts of the run');
    }
  }
}

function host(resource: string, id: string, httpStatus: number, method: Method): OutcomeHost {
  return { name: `${resource}/${id}`, status: 'success', details: { method, httpStatus } };
}

/** A parameter that renders to text; an empty one is absent (or an error when `required`). */
function text(ctx: ActionContext, template: Template, what: string, required: boolean): string | undefined {
  const value = render(ctx, template, what);
  if (value === undefined || value === null || value === '') {
    if (required) throw new DispatcherError('template_error', `${what}: renders to nothing`);
    return undefined;
  }
  if (typeof value === 'object') throw new DispatcherError('template_error', `${what}: renders to an object, not text`);
  return String(value);
}

