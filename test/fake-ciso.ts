/**
 * A fake CISO Assistant API (../shared/seeds/notes/ciso-assistant-dispatcher.md §3, §5): a real HTTP (or
 * HTTPS) server on 127.0.0.1, port 0, speaking the endpoints its dispatcher calls, and recording what it
 * received.
 *
 * - `GET /api/<resource>/?filters…`: the seeded objects whose fields equal every filter (a `__` key such as
 *   `requirement__ref_id` is a plain field of the object, or else a path into it), DRF-paginated:
 *   `{count, next, previous, results}`, `next` an absolute URL with the filters and `page=N`.
 * - `GET|PATCH|PUT|DELETE|POST /api/<resource>/<id>/`: the object; PATCH merges JSON (or a form), PUT
 *   replaces, DELETE removes (204), POST answers the object.
 * - `POST /api/<resource>/`: a new object (JSON or form, `id` made here), 201: `POST /api/evidences/`
 *   form-encoded `name` → `{id, name}`.
 * - `POST /api/evidences/<id>/upload/`: raw bytes with `Content-Disposition: attachment; filename=…`,
 *   recorded in `uploads` (200, empty answer).
 * - `POST /api/iam/login/` `{username, password}` → `{token, expiry}` for configured users, 400 otherwise.
 * - Everything else needs `Authorization: Token <t>` with an accepted token: 401 `{"detail": "Invalid token."}`.
 *
 * Knobs: `failNext` answers the next N matching requests with a status (and `Retry-After`), an HTML page,
 * any body, or closes the connection; `delayMs` slows every answer; `expireToken` stops accepting a token.
 */

import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

export type FakeObject = Record<string, unknown>;

export interface FakeCisoOptions {
  /** Tokens accepted from the start (default `['test-token']`). */
  tokens?: string[];
  /** Who may log in at `/api/iam/login/` (default none). */
  users?: Array<{ username: string; password: string }>;
  /** Objects per page (default 100; `?page_size=` overrides it per request). */
  pageSize?: number;
  /** Objects by resource (`applied-controls` → […]): each needs an `id`. */
  objects?: Record<string, FakeObject[]>;
  /** Wait this long before every answer. */
  delayMs?: number;
  /** Listen on this port (default: any free one). */
  port?: number;
  /** Serve HTTPS with this key and certificate (PEM). */
  tls?: { key: string | Buffer; cert: string | Buffer };
}

export interface FakeRequest {
  method: string;
  /** The path, without the query string. */
  path: string;
  /** The whole request target, query included. */
  url: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  body: Buffer;
  at: number;
}

export interface Injection {
  /** Status of the answer (default 500). */
  status?: number;
  /** Seconds, or an HTTP date, sent as `Retry-After`. */
  retryAfter?: string | number;
  /** Answer an HTML page (`text/html`), as a proxy or a web UI would. */
  html?: boolean;
  /** The answer's body: an object or array is sent as JSON, a string as it is. */
  body?: unknown;
  headers?: Record<string, string>;
  /** Close the connection without answering. */
  close?: boolean;
  /** How many requests it answers (default 1). */
  times?: number;
  /** Which requests it answers (default: any, the login included). */
  method?: string;
  path?: string | RegExp;
}

export interface Upload {
  evidence: string;
  filename: string | null;
  contentDisposition: string | undefined;
  bytes: Buffer;
}

export interface FakeCiso {
  /** The API root: `http://127.0.0.1:<port>/api`. */
  url: string;
  origin: string;
  port: number;
  requests: FakeRequest[];
  objects: Record<string, FakeObject[]>;
  uploads: Upload[];
  /** Tokens accepted now. */
  tokens: Set<string>;
  /** Tokens handed out by logins, in order. */
  issued: string[];
  /** Stop accepting a token (default: every token accepted now). */
  expireToken(token?: string): void;
  /** Answer the next matching requests with a failure (see `Injection`). */
  failNext(injection?: Injection): void;
  /** Wait this long before every answer from now on. */
  setDelay(ms: number): void;
  /** Requests other than the login, by method and path: `GET /api/applied-controls/`. */
  calls(): string[];
  close(): Promise<void>;
}

const HTML_PAGE = '<!doctype html><html><head><title>CISO Assistant</title></head><body><div id="svelte">Loading…</div></body></html>';

export async function startFakeCiso(options: FakeCisoOptions = {}): Promise<FakeCiso> {
  const objects: Record<string, FakeObject[]> = {};
  for (const [resource, list] of Object.entries(options.objects ?? {})) objects[resource] = list.map((o) => ({ ...o }));
  const tokens = new Set(options.tokens ?? ['test-token']);
  const users = options.users ?? [];
  const pageSize = options.pageSize ?? 100;
  let delayMs = options.delayMs ?? 0;
  const requests: FakeRequest[] = [];
  const uploads: Upload[] = [];
  const issued: string[] = [];
  const injections: Array<Injection & { left: number }> = [];
  let origin = '';

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const target = new URL(req.url ?? '/', 'http://fake');
      const r: FakeRequest = {
        method: req.method ?? '',
        path: target.pathname,
        url: req.url ?? '',
        query: target.searchParams,
        headers: req.headers,
        body: Buffer.concat(chunks),
        at: Date.now(),
      };
      requests.push(r);
      const go = (): void => {
        try {
          answer(r, req, res);
        } catch (err) {
          send(res, 500, { detail: `fake-ciso: ${(err as Error).message}` });
        }
      };
      if (delayMs > 0) setTimeout(go, delayMs);
      else go();
    });
  };

  function answer(r: FakeRequest, req: IncomingMessage, res: ServerResponse): void {
    const injected = injections.find((i) => matches(i, r));
    if (injected !== undefined) {
      injected.left -= 1;
      if (injected.left <= 0) injections.splice(injections.indexOf(injected), 1);
      if (injected.close === true) {
        req.socket.destroy();
        return;
      }
      const headers: Record<string, string> = { ...(injected.headers ?? {}) };
      if (injected.retryAfter !== undefined) headers['retry-after'] = String(injected.retryAfter);
      if (injected.html === true) {
        res.writeHead(injected.status ?? 200, { 'content-type': 'text/html; charset=utf-8', ...headers });
        res.end(HTML_PAGE);
        return;
      }
      send(res, injected.status ?? 500, injected.body ?? { detail: 'Injected failure.' }, headers);
      return;
    }

    if (r.method === 'POST' && r.path === '/api/iam/login/') {
      const body = parseBody(r);
      const user = users.find((u) => isObject(body) && u.username === body.username && u.password === body.password);
      if (user === undefined) {
        send(res, 400, { non_field_errors: ['Unable to log in with provided credentials.'] });
        return;
      }
      const token = `knox-${randomUUID()}`;
      tokens.add(token);
      issued.push(token);
      send(res, 200, { expiry: new Date(Date.now() + 10 * 3600_000).toISOString(), token });
      return;
    }

    const auth = /^Token (.+)$/.exec(r.headers.authorization ?? '');
    if (auth === null) {
      send(res, 401, { detail: 'Authentication credentials were not provided.' }, { 'www-authenticate': 'Token' });
      return;
    }
    if (!tokens.has(auth[1]!)) {
      send(res, 401, { detail: 'Invalid token.' }, { 'www-authenticate': 'Token' });
      return;
    }

    const m = /^\/api\/([^/]+)\/(?:([^/]+)\/)?(upload\/)?$/.exec(r.path);
    if (m === null) {
      send(res, 404, { detail: 'Not found.' });
      return;
    }
    const resource = decodeURIComponent(m[1]!);
    const id = m[2] === undefined ? undefined : decodeURIComponent(m[2]);
    const list = (objects[resource] ??= []);

    if (m[3] !== undefined) {
      const evidence = list.find((o) => String(o.id) === id);
      if (resource !== 'evidences' || r.method !== 'POST' || evidence === undefined) {
        send(res, 404, { detail: 'Not found.' });
        return;
      }
      const disposition = r.headers['content-disposition'];
      const filename = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition ?? '')?.[1];
      const name = filename === undefined ? null : decodeURIComponent(filename);
      uploads.push({ evidence: id!, filename: name, contentDisposition: disposition, bytes: r.body });
      evidence.attachment = name;
      res.writeHead(200);
      res.end();
      return;
    }

    if (id === undefined) {
      if (r.method === 'GET') {
        listObjects(r, resource, list, res);
        return;
      }
      if (r.method === 'POST') {
        const body = parseBody(r);
        if (!isObject(body)) {
          send(res, 400, { detail: 'Expected an object.' });
          return;
        }
        const created = { ...body, id: randomUUID() };
        list.push(created);
        send(res, 201, created);
        return;
      }
      send(res, 405, { detail: `Method "${r.method}" not allowed.` });
      return;
    }

    const index = list.findIndex((o) => String(o.id) === id);
    if (index < 0) {
      send(res, 404, { detail: 'No object matches the given query.' });
      return;
    }
    const object = list[index]!;
    switch (r.method) {
      case 'GET':
      case 'POST':
        send(res, 200, object);
        return;
      case 'PATCH': {
        const body = parseBody(r);
        if (!isObject(body)) {
          send(res, 400, { detail: 'Expected an object.' });
          return;
        }
        Object.assign(object, body, { id: object.id });
        send(res, 200, object);
        return;
      }
      case 'PUT': {
        const body = parseBody(r);
        if (!isObject(body)) {
          send(res, 400, { detail: 'Expected an object.' });
          return;
        }
        list[index] = { ...body, id: object.id };
        send(res, 200, list[index]);
        return;
      }
      case 'DELETE':
        list.splice(index, 1);
        res.writeHead(204);
        res.end();
        return;
      default:
        send(res, 405, { detail: `Method "${r.method}" not allowed.` });
    }
  }

  function listObjects(r: FakeRequest, resource: string, list: FakeObject[], res: ServerResponse): void {
    const filters = [...r.query.entries()].filter(([k]) => k !== 'page' && k !== 'page_size');
    const found = list.filter((o) => filters.every(([k, v]) => fieldText(o, k) === v));
    const size = Number(r.query.get('page_size') ?? pageSize);
    const page = Number(r.query.get('page') ?? 1);
    const pages = Math.max(1, Math.ceil(found.length / size));
    if (!Number.isInteger(page) || page < 1 || page > pages) {
      send(res, 404, { detail: 'Invalid page.' });
      return;
    }
    const link = (n: number): string => {
      const q = new URLSearchParams(filters);
      if (r.query.has('page_size')) q.set('page_size', String(size));
      q.set('page', String(n));
      return `${origin}/api/${encodeURIComponent(resource)}/?${q}`;
    };
    send(res, 200, {
      count: found.length,
      next: page < pages ? link(page + 1) : null,
      previous: page > 1 ? link(page - 1) : null,
      results: found.slice((page - 1) * size, page * size),
    });
  }

  const server = options.tls === undefined ? createHttpServer(handler) : createHttpsServer({ key: options.tls.key, cert: options.tls.cert }, handler);
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  origin = `${options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`;

  return {
    url: `${origin}/api`,
    origin,
    port,
    requests,
    objects,
    uploads,
    tokens,
    issued,
    expireToken(token?: string) {
      if (token === undefined) tokens.clear();
      else tokens.delete(token);
    },
    failNext(injection: Injection = {}) {
      injections.push({ ...injection, left: injection.times ?? 1 });
    },
    setDelay(ms: number) {
      delayMs = ms;
    },
    calls: () => requests.filter((r) => r.path !== '/api/iam/login/').map((r) => `${r.method} ${r.path}`),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function matches(i: Injection, r: FakeRequest): boolean {
  if (i.method !== undefined && i.method.toUpperCase() !== r.method) return false;
  if (i.path === undefined) return true;
  return typeof i.path === 'string' ? i.path === r.path : i.path.test(r.path);
}

/** A field as the filter compares it: the plain key (`requirement__ref_id`), else the `__` path into the object. */
function fieldText(o: FakeObject, key: string): string | undefined {
  let value: unknown = key in o ? o[key] : undefined;
  if (!(key in o) && key.includes('__')) {
    value = key.split('__').reduce<unknown>((v, k) => (isObject(v) ? v[k] : undefined), o);
  }
  if (value === undefined || value === null) return undefined;
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}

function parseBody(r: FakeRequest): unknown {
  const type = (r.headers['content-type'] ?? '').split(';', 1)[0]!.trim();
  const text = r.body.toString('utf8');
  if (type === 'application/x-www-form-urlencoded') return Object.fromEntries(new URLSearchParams(text));
  if (type === 'application/json') {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json', ...headers });
  res.end(text);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
