/** Commands that talk to a running dispatcher over its HTTP API. */

import { existsSync, readFileSync } from 'node:fs';
import { CliError, count, integerOption, printJson, printTable } from './output.js';

/**
 * The credentials the commands send: `DISPATCHER_TOKEN` (a bearer token, from `dispatcher token`), else
 * `DISPATCHER_PSK` (a pre-shared key), else the key in `DISPATCHER_KEY_FILE` or `./data/admin.key` (the admin
 * key a fresh `serve` generates), else none. Environment rather than flags: flags show in process lists.
 */
export function credentials(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.DISPATCHER_TOKEN) return `Bearer ${env.DISPATCHER_TOKEN}`;
  if (env.DISPATCHER_PSK) return `PSK ${env.DISPATCHER_PSK}`;
  const file = env.DISPATCHER_KEY_FILE || './data/admin.key';
  if (existsSync(file)) return `PSK ${readFileSync(file, 'utf8').trim()}`;
  return undefined;
}

export async function api(base: string, path: string, init: RequestInit = {}): Promise<any> {
  let response: Response;
  const authorization = credentials();
  const headers = new Headers(init.headers);
  if (authorization !== undefined && !headers.has('authorization')) headers.set('authorization', authorization);
  try {
    response = await fetch(new URL(path, base), { ...init, headers });
  } catch (err) {
    throw new CliError(`cannot reach ${base}: ${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}`);
  }
  const text = await response.text();
  let body: any = text;
  try {
    body = text === '' ? null : JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  if (!response.ok) {
    const detail = body && typeof body === 'object' ? `${body.code}: ${body.message}` : String(text).slice(0, 200);
    throw new CliError(`${init.method ?? 'GET'} ${path}: HTTP ${response.status} ${detail}`);
  }
  return body;
}

interface ListOptions {
  url: string;
  status?: string;
  route?: string;
  type?: string;
  label?: string[];
  limit: string;
  offset: string;
  sort?: string;
  json?: boolean;
  origin?: string;
  reason?: string;
  event?: string;
  correlationId?: string;
  since?: string;
  until?: string;
  replayed?: string;
}

/** The run filters `runs list` and `runs republish` share. */
function runFilters(options: ListOptions): URLSearchParams {
  const params = new URLSearchParams();
  if (options.status) params.set('filter[status]', options.status);
  if (options.route) params.set('filter[route]', options.route);
  if (options.type) params.set('filter[type]', options.type);
  if (options.since) params.set('filter[created_at][gte]', options.since);
  if (options.until) params.set('filter[created_at][lt]', options.until);
  return params;
}

export async function runsListCommand(options: ListOptions): Promise<void> {
  const params = runFilters(options);
  if (options.event) params.set('filter[event]', options.event);
  if (options.correlationId) params.set('filter[correlation_id]', options.correlationId);
  for (const pair of options.label ?? []) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new CliError(`--label expects KEY=VALUE, got "${pair}"`, 2);
    params.set(`filter[labels][${pair.slice(0, at)}]`, pair.slice(at + 1));
  }
  params.set('limit', String(integerOption('limit', options.limit, 1)));
  params.set('offset', String(integerOption('offset', options.offset)));
  if (options.sort) params.set('sort', options.sort);
  const body = await api(options.url, `/v1/runs?${params}`);
  if (options.json) return printJson(body);
  printTable(body.data, ['id', 'status', 'route', 'action', 'event_type', 'attempts', 'created_at']);
  process.stdout.write(`${body.meta.count} of ${body.meta.total}\n`);
}

/** `dispatcher runs republish`: a `read` run event for every matching run (see `POST /v1/runs/republish`). */
export async function runsRepublishCommand(options: ListOptions & { service?: string; org?: string }): Promise<void> {
  const params = runFilters(options);
  if (options.service) params.set('filter[service]', options.service);
  if (options.org) params.set('filter[org_id]', options.org);
  const body = await api(options.url, `/v1/runs/republish?${params}`, { method: 'POST' });
  if (options.json) return printJson(body);
  process.stdout.write(`${count(body.republished, 'run')} republished\n`);
}

export async function runsGetCommand(id: string, options: { url: string; json?: boolean }): Promise<void> {
  const run = await api(options.url, `/v1/runs/${encodeURIComponent(id)}`);
  if (options.json) return printJson(run);
  const { attempts_log: attempts, ...rest } = run;
  for (const [k, v] of Object.entries(rest)) process.stdout.write(`${k.padEnd(16)} ${typeof v === 'object' && v !== null ? JSON.stringify(v) : v ?? '-'}\n`);
  if (attempts.length > 0) {
    process.stdout.write('\n');
    printTable(attempts, ['n', 'outcome', 'started_at', 'ended_at', 'http_status', 'error_code', 'error_message']);
  }
}

export async function dlqListCommand(options: ListOptions): Promise<void> {
  const params = new URLSearchParams();
  if (options.origin) params.set('filter[origin]', options.origin);
  if (options.reason) params.set('filter[reason]', options.reason);
  if (options.replayed !== undefined) {
    if (!['yes', 'no'].includes(options.replayed)) throw new CliError('--replayed expects yes or no', 2);
    params.set('filter[replayed]', options.replayed === 'yes' ? 'true' : 'false');
  }
  params.set('limit', String(integerOption('limit', options.limit, 1)));
  params.set('offset', String(integerOption('offset', options.offset)));
  const body = await api(options.url, `/v1/dead-letters?${params}`);
  if (options.json) return printJson(body);
  printTable(body.data, ['id', 'origin', 'source', 'reason', 'attempts', 'last_seen_at', 'error']);
  process.stdout.write(`${body.meta.count} of ${body.meta.total}\n`);
}

export async function dlqReplayCommand(ids: string[], options: { url: string }): Promise<void> {
  let failed = 0;
  for (const id of ids) {
    try {
      const r = await api(options.url, `/v1/dead-letters/${encodeURIComponent(id)}/replay`, { method: 'POST' });
      const what = r.run ? `run ${r.run.id} queued again` : `${count(r.events.length, 'event')}: ${r.events.map((e: { status: string }) => e.status).join(', ')}`;
      process.stdout.write(`${id}: replayed, ${what}\n`);
    } catch (err) {
      failed += 1;
      process.stderr.write(`${id}: ${(err as Error).message}\n`);
    }
  }
  if (failed > 0) throw new CliError(`${failed} of ${ids.length} replays failed`);
}

/** `dispatcher status`: the store, the backlog and each input and output, from `/readyz`. Exit 1 unless all is well. */
export async function statusCommand(options: { url: string; json?: boolean }): Promise<void> {
  let body: any;
  try {
    body = await api(options.url, '/readyz');
  } catch (err) {
    if (options.json) printJson({ status: 'unavailable', error: (err as Error).message });
    throw err;
  }
  if (options.json) printJson(body);
  else {
    process.stdout.write(`status           ${body.status}\n`);
    process.stdout.write(`store            ${body.store}\n`);
    process.stdout.write(`runs             queued ${body.runs.queued}, running ${body.runs.running}, waiting ${body.runs.waiting}\n`);
    process.stdout.write(`oldest queued    ${body.oldest_queued_age_seconds}s\n`);
    process.stdout.write(`dead letters     ${body.dead_letters}\n`);
    if (body.inputs.length > 0) {
      process.stdout.write('\ninputs\n');
      printTable(body.inputs, ['name', 'transport', 'connected', 'paused', 'lag', 'in_flight', 'last_error', 'last_error_at']);
    }
    if (body.outputs.length > 0) {
      process.stdout.write('\noutputs\n');
      printTable(body.outputs, ['name', 'transport', 'connected', 'last_error', 'last_error_at']);
      const relays = body.outputs.flatMap((o: any) => (o.relays ?? []).map((r: any) => ({ output: o.name, ...r })));
      if (relays.length > 0) {
        process.stdout.write('\nrelays\n');
        printTable(relays, ['output', 'stream', 'here', 'cursor', 'lag', 'last_error', 'last_error_at']);
      }
    }
  }
  if (body.status !== 'ready') throw new CliError(`the dispatcher is ${body.status}`);
}
