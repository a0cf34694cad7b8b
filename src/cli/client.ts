/**
 * Commands that talk to a running dispatcher over its HTTP API: `status`, `runs …`, `events …`, `dlq …`.
 * Where they find it, and with which credential: ./connection.ts.
 */

import { setTimeout as pause } from 'node:timers/promises';
import { createParser } from 'eventsource-parser';
import { answerError, answerOf, call, connect, request, type Connection, type ConnectionOptions } from './connection.js';
import { CliError, count, integerOption, printJson, printTable, progressBar, timeOption } from './output.js';

interface ListOptions extends ConnectionOptions {
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
  source?: string;
  id?: string;
  routed?: string;
  progress?: boolean;
  yes?: boolean;
}

/** `--since` and `--until` as a range filter on `field`. */
function timeRange(params: URLSearchParams, field: string, options: { since?: string; until?: string }): void {
  const since = timeOption('since', options.since);
  const until = timeOption('until', options.until);
  if (since !== undefined) params.set(`filter[${field}][gte]`, since);
  if (until !== undefined) params.set(`filter[${field}][lt]`, until);
}

function paging(params: URLSearchParams, options: { limit: string; offset: string }): void {
  params.set('limit', String(integerOption('limit', options.limit, 1)));
  params.set('offset', String(integerOption('offset', options.offset)));
}

function yesNo(name: string, value: string | undefined): 'true' | 'false' | undefined {
  if (value === undefined) return undefined;
  if (value !== 'yes' && value !== 'no') throw new CliError(`--${name} expects yes or no, got "${value}"`, 2);
  return value === 'yes' ? 'true' : 'false';
}

/** A page's footer: `20 of 143`. */
function shown(meta: { count: number; total: number }, what: string): void {
  process.stdout.write(`${meta.count} of ${count(meta.total, what)}\n`);
}

/** `filter[<name>]` for each of these options that was given, by option: `{ correlationId: 'correlation_id' }`. */
function filters<O extends object>(options: O, names: Partial<Record<keyof O, string>>): URLSearchParams {
  const params = new URLSearchParams();
  for (const [option, name] of Object.entries(names) as Array<[keyof O, string]>) {
    const value = options[option];
    if (typeof value === 'string' && value !== '') params.set(`filter[${name}]`, value);
  }
  return params;
}

/** The run filters `runs list` and `runs republish` share. */
function runFilters(options: ListOptions): URLSearchParams {
  const params = filters(options, { status: 'status', route: 'route', type: 'type' });
  timeRange(params, 'created_at', options);
  return params;
}

export async function runsListCommand(options: ListOptions): Promise<void> {
  const params = runFilters(options);
  for (const [name, value] of filters(options, { event: 'event', correlationId: 'correlation_id' })) params.set(name, value);
  for (const pair of options.label ?? []) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new CliError(`--label expects KEY=VALUE, got "${pair}"`, 2);
    params.set(`filter[labels][${pair.slice(0, at)}]`, pair.slice(at + 1));
  }
  paging(params, options);
  if (options.sort) params.set('sort', options.sort);
  const body = await call(await connect(options), `/v1/runs?${params}`);
  if (options.json) return printJson(body);
  printTable(body.data, ['id', 'status', 'route', 'action', 'event_type', 'attempts', 'created_at']);
  shown(body.meta, 'run');
}

/** `dispatcher runs republish`: a `read` run event for every matching run (see `POST /v1/runs/republish`). */
export async function runsRepublishCommand(options: ListOptions & { service?: string; org?: string }): Promise<void> {
  const params = runFilters(options);
  for (const [name, value] of filters(options, { service: 'service', org: 'org_id' })) params.set(name, value);
  const body = await call(await connect(options), `/v1/runs/republish?${params}`, { method: 'POST' });
  if (options.json) return printJson(body);
  process.stdout.write(`${count(body.republished, 'run')} republished\n`);
}

function printRecord(record: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(record)) process.stdout.write(`${k.padEnd(16)} ${typeof v === 'object' && v !== null ? JSON.stringify(v) : (v ?? '-')}\n`);
}

export async function runsGetCommand(id: string, options: ConnectionOptions & { json?: boolean }): Promise<void> {
  const run = await call(await connect(options), `/v1/runs/${encodeURIComponent(id)}`);
  if (options.json) return printJson(run);
  const { attempts_log: attempts, ...rest } = run;
  printRecord(rest);
  if (attempts.length > 0) {
    process.stdout.write('\n');
    printTable(attempts, ['n', 'outcome', 'started_at', 'ended_at', 'http_status', 'error_code', 'error_message']);
  }
}

/**
 * `runs cancel|retry ID…`: one request per run, each result on its own line; exit 1 when any failed,
 * after all were tried.
 */
async function eachRun(ids: string[], options: ConnectionOptions & { json?: boolean }, verb: 'cancel' | 'retry'): Promise<void> {
  const connection = await connect(options);
  const results: unknown[] = [];
  let failed = 0;
  for (const id of ids) {
    try {
      const run = await call(connection, `/v1/runs/${encodeURIComponent(id)}/${verb}`, { method: 'POST' });
      results.push(run);
      if (!options.json) process.stdout.write(`${id}: ${verb === 'cancel' ? 'canceled' : `queued again (${run.status}, up to ${run.max_attempts} attempts)`}\n`);
    } catch (err) {
      failed += 1;
      results.push({ id, error: (err as Error).message });
      process.stderr.write(`${id}: ${(err as Error).message}\n`);
    }
  }
  if (options.json) printJson(results);
  if (failed > 0) throw new CliError(`${failed} of ${count(ids.length, 'run')} could not be ${verb === 'cancel' ? 'canceled' : 'retried'}`);
}

export const runsCancelCommand = (ids: string[], options: ConnectionOptions & { json?: boolean }) => eachRun(ids, options, 'cancel');
export const runsRetryCommand = (ids: string[], options: ConnectionOptions & { json?: boolean }) => eachRun(ids, options, 'retry');

interface TailOptions extends ConnectionOptions {
  run?: string;
  route?: string;
  status?: string;
  kind?: string;
  after?: string;
  max?: string;
  json?: boolean;
}

/**
 * `dispatcher runs tail`: the run-event stream (`GET /v1/stream`), live, one line per event. A dropped
 * connection is resumed where it stopped (`Last-Event-ID`), with a growing pause; an error answer ends it.
 */
export async function runsTailCommand(options: TailOptions): Promise<void> {
  const params = filters(options, { run: 'run', route: 'route', status: 'status', kind: 'kind' });
  if (options.after !== undefined && !/^\d+$/.test(options.after)) throw new CliError('--after takes a run-event sequence number (the id of a streamed event)', 2);
  const max = options.max === undefined ? Infinity : integerOption('max', options.max, 1);
  const connection = await connect(options);
  const path = `/v1/stream${params.size > 0 ? `?${params}` : ''}`;
  let last = options.after;
  let seen = 0;
  let pause = 500;
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    while (seen < max && !controller.signal.aborted) {
      let response: Response;
      try {
        response = await request(connection, path, { headers: last === undefined ? {} : { 'last-event-id': last }, signal: controller.signal });
      } catch (err) {
        if (controller.signal.aborted) break;
        // Not there (yet, or any more): say so once per try, and try again.
        process.stderr.write(`${(err as Error).message}; retrying in ${pause / 1000}s\n`);
        await sleep(pause, controller.signal);
        pause = Math.min(pause * 2, 30_000);
        continue;
      }
      if (!response.ok) throw answerError(connection, 'GET', path, response.status, await answerOf(response));
      pause = 500;
      const parser = createParser({
        onEvent(message) {
          if (seen >= max) return;
          if (message.id !== undefined) last = message.id;
          seen += 1;
          printStreamed(message.id, message.event, message.data, options.json === true);
          if (seen >= max) controller.abort();
        },
      });
      try {
        const decoder = new TextDecoder();
        for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) parser.feed(decoder.decode(chunk, { stream: true }));
      } catch (err) {
        if (controller.signal.aborted) break;
        process.stderr.write(`the stream broke (${(err as Error).message}); resuming after ${last ?? 'the start'}\n`);
      }
      if (!controller.signal.aborted) await sleep(pause, controller.signal);
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

function printStreamed(id: string | undefined, event: string | undefined, data: string, json: boolean): void {
  let payload: Record<string, any> = {};
  try {
    payload = JSON.parse(data) as Record<string, any>;
  } catch {
    payload = { data };
  }
  if (json) {
    process.stdout.write(`${JSON.stringify({ seq: id === undefined ? null : Number(id), event, ...payload })}\n`);
    return;
  }
  // `run.<event_type>` carries the run, `host.<event_type>` the host of a run.
  const run = payload.run as Record<string, any> | undefined;
  const host = payload.host as Record<string, any> | undefined;
  const fields = run
    ? [id ?? '-', payload.at ?? '-', event ?? '-', run.id, run.route ?? '-', run.action ?? '-', run.status]
    : [id ?? '-', payload.at ?? '-', event ?? '-', host?.run ?? '-', host?.name ?? '-', host?.status ?? '-'];
  process.stdout.write(`${fields.join('  ')}\n`);
}

/** A pause that an abort (Ctrl-C, `--max` reached) ends early. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return pause(ms, undefined, { signal }).catch(() => undefined);
}

export async function eventsListCommand(options: ListOptions): Promise<void> {
  const params = filters(options, { type: 'type', source: 'source', id: 'id' });
  const routed = yesNo('routed', options.routed);
  if (routed !== undefined) params.set('filter[routed]', routed);
  timeRange(params, 'received_at', options);
  paging(params, options);
  if (options.sort) params.set('sort', options.sort);
  const body = await call(await connect(options), `/v1/events?${params}`);
  if (options.json) return printJson(body);
  printTable(
    (body.data as Array<Record<string, any>>).map((e) => ({ ...e, type: e.event?.type, source: e.event?.source, ce_id: e.event?.id, runs: e.run_count })),
    ['id', 'type', 'source', 'ce_id', 'input', 'runs', 'received_at'],
  );
  shown(body.meta, 'event');
}

export async function eventsGetCommand(id: string, options: ConnectionOptions & { json?: boolean }): Promise<void> {
  const event = await call(await connect(options), `/v1/events/${encodeURIComponent(id)}`);
  if (options.json) return printJson(event);
  const { runs, ...rest } = event;
  printRecord(rest);
  if (runs.length > 0) {
    process.stdout.write('\n');
    printTable(runs, ['id', 'status', 'route', 'action', 'attempts', 'created_at']);
  }
}

/** The dead-letter filters `dlq list` and `dlq replay` share. */
function deadLetterFilters(options: ListOptions): URLSearchParams {
  const params = filters(options, { origin: 'origin', reason: 'reason', source: 'source' });
  const replayed = yesNo('replayed', options.replayed);
  if (replayed !== undefined) params.set('filter[replayed]', replayed);
  timeRange(params, 'last_seen_at', options);
  return params;
}

export async function dlqListCommand(options: ListOptions): Promise<void> {
  const params = deadLetterFilters(options);
  paging(params, options);
  const body = await call(await connect(options), `/v1/dead-letters?${params}`);
  if (options.json) return printJson(body);
  printTable(body.data, ['id', 'origin', 'source', 'reason', 'attempts', 'last_seen_at', 'error']);
  shown(body.meta, 'dead letter');
}

export async function dlqGetCommand(id: string, options: ConnectionOptions & { json?: boolean }): Promise<void> {
  const dl = await call(await connect(options), `/v1/dead-letters/${encodeURIComponent(id)}`);
  if (options.json) return printJson(dl);
  const { raw, raw_base64: base64, ...rest } = dl;
  printRecord(rest);
  process.stdout.write(`\n${raw ?? `(binary, base64) ${base64}`}\n`);
}

export async function dlqDeleteCommand(ids: string[], options: ConnectionOptions): Promise<void> {
  const connection = await connect(options);
  let failed = 0;
  for (const id of ids) {
    try {
      await call(connection, `/v1/dead-letters/${encodeURIComponent(id)}`, { method: 'DELETE' });
      process.stdout.write(`${id}: deleted\n`);
    } catch (err) {
      failed += 1;
      process.stderr.write(`${id}: ${(err as Error).message}\n`);
    }
  }
  if (failed > 0) throw new CliError(`${failed} of ${count(ids.length, 'dead letter')} could not be deleted`);
}

/**
 * `dlq replay ID…`, or `dlq replay --origin … --reason … --since …` for every dead letter that matches
 * (not yet replayed, unless `--replayed` says otherwise): the ids are collected first, then replayed one by
 * one with a progress bar; each failure is printed, and the command exits 1 when any failed.
 */
export async function dlqReplayCommand(ids: string[], options: ListOptions): Promise<void> {
  const filtered = options.origin !== undefined || options.reason !== undefined || options.source !== undefined || options.since !== undefined || options.until !== undefined || options.replayed !== undefined;
  if (ids.length > 0 && filtered) throw new CliError('give dead-letter ids or filters (--origin, --reason, --source, --since, --until, --replayed), not both', 2);
  if (ids.length === 0 && !filtered) throw new CliError('give dead-letter ids, or filters to replay every dead letter that matches (e.g. --reason invalid_event --since 1h)', 2);
  const connection = await connect(options);
  let targets = ids;
  if (filtered) {
    const params = deadLetterFilters({ ...options, replayed: options.replayed ?? 'no' });
    targets = await collect(connection, params);
    if (targets.length === 0) {
      process.stdout.write('no dead letter matches\n');
      return;
    }
    process.stderr.write(`replaying ${count(targets.length, 'dead letter')}\n`);
  }
  const bar = progressBar(targets.length, 'replayed', options.progress !== false && filtered && process.stderr.isTTY === true);
  let failed = 0;
  let done = 0;
  for (const id of targets) {
    try {
      const r = await call(connection, `/v1/dead-letters/${encodeURIComponent(id)}/replay`, { method: 'POST' });
      const what = r.run ? `run ${r.run.id} queued again` : `${count(r.events.length, 'event')}: ${r.events.map((e: { status: string }) => e.status).join(', ')}`;
      if (!filtered) process.stdout.write(`${id}: replayed, ${what}\n`);
    } catch (err) {
      failed += 1;
      bar.note(`${id}: ${(err as Error).message}`);
    }
    done += 1;
    bar.update(done);
  }
  bar.done();
  if (filtered) process.stdout.write(`${count(done - failed, 'dead letter')} replayed, ${failed} failed\n`);
  if (failed > 0) throw new CliError(`${failed} of ${count(targets.length, 'replay')} failed`);
}

/** Every id a dead-letter filter matches, page by page (newest first). */
async function collect(connection: Connection, params: URLSearchParams): Promise<string[]> {
  const ids: string[] = [];
  for (let offset = 0; ; offset += 1000) {
    params.set('limit', '1000');
    params.set('offset', String(offset));
    const page = await call(connection, `/v1/dead-letters?${params}`);
    ids.push(...(page.data as Array<{ id: string }>).map((d) => d.id));
    if (page.data.length < 1000 || ids.length >= page.meta.total) return ids;
  }
}

/** `dispatcher status`: the store, the backlog and each input and output, from `/readyz`. Exit 1 unless all is well. */
export async function statusCommand(options: ConnectionOptions & { json?: boolean }): Promise<void> {
  let body: any;
  try {
    body = await call(await connect(options), '/readyz');
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
