/**
 * The agent (src/agent/): its pieces for real. Playbooks run through the real ansible-runner; uploads go to
 * a local node:http server that takes the multipart body apart by hand and decompresses the file; the
 * reconnection backoff is a pure function. The WebSocket connection to the dispatcher is tested end to end
 * with the dispatcher itself, not here.
 */

import { hasCommand } from './helpers.js';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backoffCeiling,
  backoffDelay,
  connectUrl,
  encodeEvents,
  executorOnFailed,
  executorOnStart,
  JobEventReader,
  PLAYBOOK_UPLOAD_TYPE,
  preparePlaybook,
  readDirective,
  runJob,
  runPlaybook,
  toUploadEvent,
  uploadEvents,
  uploadWithRetry,
  type JobEvent,
} from '../src/agent/index.js';

const CORRELATION = '6d4ef5d2-3f5a-4b1e-9c0b-0f1e2d3c4b5a';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-agent-test-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Whether ansible-runner is here (Debian: python3-ansible-runner and ansible-core). */
const hasAnsibleRunner = hasCommand('ansible-runner');

// ------------------------------------------------------------------------------------------------ the server

interface Part {
  headers: Record<string, string>;
  body: Buffer;
}

interface Received {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  parts: Part[];
  /** The `file` part, decompressed and split into events. */
  events: JobEvent[];
}

/** A multipart/form-data body taken apart by hand (RFC 7578): the parts, their headers and bytes. */
function parseMultipart(body: Buffer, contentType: string): Part[] {
  const m = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType);
  if (m === null) throw new Error(`no boundary in ${contentType}`);
  const delimiter = Buffer.from(`--${m[1] ?? m[2]}`);
  const parts: Part[] = [];
  let at = body.indexOf(delimiter);
  while (at !== -1) {
    const start = at + delimiter.length;
    if (body.subarray(start, start + 2).toString() === '--') break;
    const next = body.indexOf(delimiter, start);
    if (next === -1) throw new Error('unterminated multipart body');
    // CRLF after the delimiter, headers, a blank line, the body, CRLF before the next delimiter.
    const chunk = body.subarray(start + 2, next - 2);
    const blank = chunk.indexOf('\r\n\r\n');
    const headers: Record<string, string> = {};
    for (const line of chunk.subarray(0, blank).toString('utf8').split('\r\n')) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    parts.push({ headers, body: chunk.subarray(blank + 4) });
    at = next;
  }
  return parts;
}

/** A local server: GET serves `files` (404 otherwise), POST /upload records the upload and answers `answers.shift()` (default 202). */
async function server(files: Record<string, string> = {}, answers: number[] = []) {
  const received: Received[] = [];
  const downloads: http.IncomingHttpHeaders[] = [];
  const srv = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method === 'GET') {
        downloads.push(req.headers);
        const file = files[req.url ?? ''];
        if (file === undefined) return void res.writeHead(404).end('not here');
        return void res.writeHead(200, { 'content-type': 'text/yaml' }).end(file);
      }
      const parts = parseMultipart(Buffer.concat(chunks), req.headers['content-type'] ?? '');
      const file = parts.find((p) => /name="file"/.test(p.headers['content-disposition'] ?? ''));
      const events = file === undefined ? [] : gunzipSync(file.body).toString('utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as JobEvent);
      received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, parts, events });
      const status = answers.shift() ?? 202;
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ status }));
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  return { base, received, downloads, close: () => new Promise<void>((resolve) => srv.close(() => resolve())) };
}

// ------------------------------------------------------------------------------------------------ pure parts

describe('reconnection backoff', () => {
  const settings = { baseMs: 1000, maxMs: 60_000 };

  it('doubles its ceiling from 1 s up to the maximum', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 20, 2000].map((n) => backoffCeiling(n, settings))).toEqual([1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000]);
    expect(backoffCeiling(3, { baseMs: 1000, maxMs: 5000 })).toBe(5000);
  });

  it('draws each wait uniformly below the ceiling (full jitter)', () => {
    expect(backoffDelay(0, settings, () => 0)).toBe(0);
    expect(backoffDelay(0, settings, () => 0.5)).toBe(500);
    expect(backoffDelay(3, settings, () => 0.25)).toBe(2000);
    expect(backoffDelay(10, settings, () => 0.999999)).toBe(59_999);
    for (let n = 0; n < 12; n++) {
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(n, settings);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(backoffCeiling(n, settings));
      }
    }
  });
});

describe('the connect URL and directives', () => {
  it('turns http into ws and https into wss, under the base path', () => {
    expect(connectUrl('http://127.0.0.1:8080', CORRELATION)).toBe(`ws://127.0.0.1:8080/v1/recipients/${CORRELATION}/connect`);
    expect(connectUrl('https://d.example/base/', CORRELATION)).toBe(`wss://d.example/base/v1/recipients/${CORRELATION}/connect`);
  });

  const ok = { type: 'directive' as const, id: 'd1', directive: 'rhc-worker-playbook', metadata: { return_url: 'http://h/upload', response_interval: '600', crc_dispatcher_correlation_id: CORRELATION }, payload: 'http://h/p.yml' };

  it('takes an rhc-worker-playbook directive with its metadata', () => {
    expect(readDirective(ok)).toEqual({ directive: { id: 'd1', returnUrl: 'http://h/upload', correlationId: CORRELATION, responseIntervalS: 600, playbookUrl: 'http://h/p.yml' }, warnings: [] });
    const noInterval = readDirective({ ...ok, metadata: { ...ok.metadata, response_interval: undefined } });
    expect(noInterval).toMatchObject({ directive: { responseIntervalS: 300 }, warnings: [expect.stringContaining('response_interval')] });
  });

  it('refuses another directive, missing metadata and bad URLs', () => {
    expect(readDirective({ ...ok, directive: 'foreman_rh_cloud' })).toEqual({ refused: expect.stringContaining('only rhc-worker-playbook') });
    expect(readDirective({ ...ok, metadata: { crc_dispatcher_correlation_id: CORRELATION } })).toEqual({ refused: 'invalid metadata: missing return_url' });
    expect(readDirective({ ...ok, metadata: { return_url: 'http://h/upload' } })).toEqual({ refused: 'invalid metadata: missing crc_dispatcher_correlation_id' });
    expect(readDirective({ ...ok, metadata: { ...ok.metadata, crc_dispatcher_correlation_id: 'nope' } })).toEqual({ refused: expect.stringContaining('not a UUID') });
    expect(readDirective({ ...ok, payload: 'file:///etc/passwd' })).toEqual({ refused: expect.stringContaining('payload') });
  });
});

describe('job events', () => {
  it('executor_on_start and executor_on_failed have the shape the dispatcher reads', () => {
    const start = executorOnStart(CORRELATION);
    expect(start).toEqual({ event: 'executor_on_start', uuid: expect.stringMatching(UUID), counter: -1, stdout: '', start_line: 0, end_line: 0, event_data: { crc_dispatcher_correlation_id: CORRELATION } });
    expect(executorOnFailed(CORRELATION, 'DOWNLOAD_ERROR', 'HTTP 404')).toEqual({
      event: 'executor_on_failed',
      uuid: expect.stringMatching(UUID),
      counter: -1,
      start_line: 0,
      end_line: 0,
      event_data: { crc_dispatcher_correlation_id: CORRELATION, crc_dispatcher_error_code: 'DOWNLOAD_ERROR', crc_dispatcher_error_details: 'HTTP 404' },
    });
  });

  it("narrows ansible-runner's events and adds the correlation id", () => {
    const raw = {
      uuid: 'ecdb1156-795e-43a3-aa3b-c6caf20e99c9',
      counter: 5,
      stdout: 'fatal: [localhost]: FAILED!',
      start_line: 4,
      end_line: 5,
      runner_ident: 'x',
      event: 'runner_on_failed',
      pid: 1,
      created: '2021-01-22T15:07:21.348184',
      event_data: { playbook: 'p.yml', playbook_uuid: 'f7349776-e8f9-4533-a793-bcecbe93ad4a', host: 'localhost', res: { msg: 'Always fail' }, task: 'fail' },
    };
    expect(toUploadEvent(raw, CORRELATION)).toEqual({
      event: 'runner_on_failed',
      uuid: raw.uuid,
      counter: 5,
      stdout: raw.stdout,
      start_line: 4,
      end_line: 5,
      runner_ident: 'x',
      event_data: { playbook: 'p.yml', playbook_uuid: raw.event_data.playbook_uuid, host: 'localhost', crc_dispatcher_correlation_id: CORRELATION },
    });
    // One that has its own correlation id keeps it; missing lines are 0, a missing counter -1.
    expect(toUploadEvent({ event: 'verbose', uuid: raw.uuid, event_data: { crc_dispatcher_correlation_id: 'other' } }, CORRELATION)).toEqual({
      event: 'verbose',
      uuid: raw.uuid,
      counter: -1,
      start_line: 0,
      end_line: 0,
      event_data: { crc_dispatcher_correlation_id: 'other' },
    });
  });

  it('reads a job_events directory in counter order, each event once, waiting for a gap to fill', async () => {
    const events = path.join(dir, 'reader', 'job_events');
    const reader = new JobEventReader(events, { gapMs: 1000 });
    expect(await reader.poll()).toEqual([]); // not there yet
    fs.mkdirSync(events, { recursive: true });
    const write = (n: number) => fs.writeFileSync(path.join(events, `${n}-0000000${n}-0000-4000-8000-000000000000.json`), JSON.stringify({ event: `e${n}`, counter: n }));
    write(2);
    write(1);
    write(4);
    fs.writeFileSync(path.join(events, '5-0000000a-0000-4000-8000-000000000000-partial.json'), '{}');
    fs.writeFileSync(path.join(events, '6-0000000b-0000-4000-8000-000000000000.json.tmp'), '{');
    const names = (batch: Array<Record<string, unknown>>) => batch.map((e) => e.event);
    expect(names(await reader.poll(false, 0))).toEqual(['e1', 'e2']); // 4 waits for 3
    expect(names(await reader.poll(false, 500))).toEqual([]);
    write(3);
    expect(names(await reader.poll(false, 600))).toEqual(['e3', 'e4']);
    write(7);
    expect(names(await reader.poll(false, 700))).toEqual([]);
    expect(names(await reader.poll(false, 1800))).toEqual(['e7']); // 5 and 6 never came
    write(9);
    write(8);
    expect(names(await reader.poll(true, 1900))).toEqual(['e8', 'e9']);
    expect(await reader.poll(true)).toEqual([]);
  });

  it('checks the playbook is a list of plays and strips the signature variables', () => {
    const signed = '- name: p\n  hosts: localhost\n  vars:\n    insights_signature: !!binary |\n      TFMwdExTMUNS\n    insights_signature_exclude: /hosts,/vars/insights_signature\n    keep: 1\n  tasks:\n    - debug: msg=hi\n';
    const stripped = preparePlaybook(signed);
    expect(stripped).not.toContain('insights_signature');
    expect(stripped).toContain('keep: 1');
    const plain = '- hosts: localhost\n  tasks: []\n';
    expect(preparePlaybook(plain)).toBe(plain);
    expect(() => preparePlaybook('hosts: localhost\n')).toThrow(/not a list of plays/);
    expect(() => preparePlaybook('- [unclosed\n')).toThrow(/not valid YAML/);
  });
});

// ------------------------------------------------------------------------------------------------ uploads

describe('uploads', () => {
  let srv: Awaited<ReturnType<typeof server>>;
  const answers: number[] = [];
  beforeAll(async () => {
    srv = await server({}, answers);
  });
  afterAll(() => srv.close());

  it('POSTs the events as gzip-compressed JSON Lines in the multipart file field', async () => {
    const events = [executorOnStart(CORRELATION), toUploadEvent({ event: 'playbook_on_start', uuid: CORRELATION, counter: 1, stdout: 'ünïcode', start_line: 0, end_line: 0 }, CORRELATION)];
    const result = await uploadEvents(`${srv.base}/upload`, events, { authorization: 'PSK k1' });
    expect(result.status).toBe(202);
    expect(result.bytes).toBe(encodeEvents(events).length);
    const got = srv.received.at(-1)!;
    expect(got.method).toBe('POST');
    expect(got.headers['content-type']).toMatch(/^multipart\/form-data; boundary=/);
    expect(got.headers.authorization).toBe('PSK k1');
    expect(got.parts).toHaveLength(1);
    expect(got.parts[0]!.headers['content-disposition']).toMatch(/^form-data; name="file"; filename="[^"]+"$/);
    expect(got.parts[0]!.headers['content-type']).toBe(PLAYBOOK_UPLOAD_TYPE);
    expect([...got.parts[0]!.body.subarray(0, 2)]).toEqual([0x1f, 0x8b]);
    expect(gunzipSync(got.parts[0]!.body).toString('utf8')).toBe(events.map((e) => `${JSON.stringify(e)}\n`).join(''));
    expect(got.events).toEqual(events);
  });

  it('tries again after 5xx and 429, not after another 4xx', async () => {
    const before = srv.received.length;
    answers.push(503, 429);
    expect(await uploadWithRetry(`${srv.base}/upload`, [executorOnStart(CORRELATION)], { attempts: 4, baseMs: 20, maxMs: 40 })).toBe(true);
    expect(srv.received.length - before).toBe(3);
    answers.push(404);
    expect(await uploadWithRetry(`${srv.base}/upload`, [executorOnStart(CORRELATION)], { attempts: 4, baseMs: 20, maxMs: 40 })).toBe(false);
    expect(srv.received.length - before).toBe(4);
    answers.push(500, 500);
    expect(await uploadWithRetry(`${srv.base}/upload`, [executorOnStart(CORRELATION)], { attempts: 2, baseMs: 20, maxMs: 40 })).toBe(false);
    expect(srv.received.length - before).toBe(6);
  });

  it('says so when nobody answers', async () => {
    await expect(uploadEvents('http://127.0.0.1:1/upload', [executorOnStart(CORRELATION)])).rejects.toMatchObject({ retryable: true, status: undefined });
  });
});

// ------------------------------------------------------------------------------------------------ runs

const directive = (base: string, playbook: string, interval = 600) => ({
  id: 'directive-1',
  returnUrl: `${base}/upload`,
  correlationId: CORRELATION,
  responseIntervalS: interval,
  playbookUrl: `${base}${playbook}`,
});

describe('a run that cannot start', () => {
  it('uploads executor_on_start, then executor_on_failed DOWNLOAD_ERROR when the playbook URL answers 404', async () => {
    const srv = await server();
    try {
      const outcome = await runJob(directive(srv.base, '/missing.yml'), { authorizationFor: (url) => (url.startsWith(srv.base) ? 'Bearer t0k' : undefined), uploadBackoffMs: { baseMs: 10, maxMs: 20 } });
      expect(outcome.failure).toBe('DOWNLOAD_ERROR');
      expect(outcome.uploaded).toBe(true);
      // The start at once, then everything at the end; each upload opens with executor_on_start.
      expect(srv.received.map((r) => r.events.map((e) => e.event))).toEqual([['executor_on_start'], ['executor_on_start', 'executor_on_failed']]);
      const [start, failed] = srv.received[1]!.events;
      expect(start!.uuid).toBe(srv.received[0]!.events[0]!.uuid);
      expect(start!.event_data?.crc_dispatcher_correlation_id).toBe(CORRELATION);
      expect(failed!.event_data).toEqual({ crc_dispatcher_correlation_id: CORRELATION, crc_dispatcher_error_code: 'DOWNLOAD_ERROR', crc_dispatcher_error_details: expect.stringContaining('HTTP 404') });
      // The credential goes to the dispatcher's origin, for the download and the uploads.
      expect(srv.downloads[0]!.authorization).toBe('Bearer t0k');
      expect(srv.received.every((r) => r.headers.authorization === 'Bearer t0k')).toBe(true);
    } finally {
      await srv.close();
    }
  });

  it('uploads executor_on_failed UNDEFINED_ERROR when ansible-runner is missing, and ANSIBLE_YAML_VALIDATION_FAILED for a playbook that is not one', async () => {
    const srv = await server({ '/p.yml': '- hosts: localhost\n  tasks: []\n', '/bad.yml': 'just: a map\n' });
    try {
      const missing = await runJob(directive(srv.base, '/p.yml'), { authorizationFor: () => undefined, ansibleRunner: path.join(dir, 'no-such-ansible-runner'), tmpRoot: dir });
      expect(missing.failure).toBe('UNDEFINED_ERROR');
      expect(missing.events.map((e) => e.event)).toEqual(['executor_on_start', 'executor_on_failed']);
      expect(missing.events[1]!.event_data?.crc_dispatcher_error_details).toMatch(/cannot start ansible-runner .*ENOENT/);
      const bad = await runJob(directive(srv.base, '/bad.yml'), { authorizationFor: () => undefined });
      expect(bad.failure).toBe('ANSIBLE_YAML_VALIDATION_FAILED');
      expect(srv.received.at(-1)!.events.map((e) => e.event)).toEqual(['executor_on_start', 'executor_on_failed']);
      expect(srv.received.every((r) => r.headers.authorization === undefined)).toBe(true);
      // The private data directory is gone.
      expect(fs.readdirSync(dir).filter((n) => n.startsWith('dispatcher-agent-'))).toEqual([]);
    } finally {
      await srv.close();
    }
  });
});

if (!hasAnsibleRunner) {
  if (process.env.CI === 'true') throw new Error('agent.test.ts: ansible-runner is not installed (apt-get install ansible python3-ansible-runner); with CI=true the real runs must run');
  console.warn('agent.test.ts: the real ansible-runner runs are skipped: ansible-runner is not installed (apt-get install ansible python3-ansible-runner)');
}

describe.skipIf(!hasAnsibleRunner)('real ansible-runner runs', () => {
  const SUCCESS = '- name: hello\n  hosts: localhost\n  gather_facts: false\n  tasks:\n    - name: say hi\n      debug:\n        msg: hi from the agent\n';
  const FAILURE =
    '- name: broken\n  hosts: localhost\n  gather_facts: false\n  tasks:\n    - name: wait\n      pause:\n        seconds: 2\n    - name: fail\n      fail:\n        msg: Always fail\n';

  it('runs a playbook and reads its job events in counter order, then removes its directory', async () => {
    const tmpRoot = fs.mkdtempSync(path.join(dir, 'run-'));
    const batches: Array<Array<Record<string, unknown>>> = [];
    const result = await runPlaybook({ playbook: SUCCESS, ident: CORRELATION, onEvents: (b) => batches.push(b), tmpRoot, pollMs: 100 });
    expect(result).toMatchObject({ exitCode: 0, status: 'successful', aborted: false });
    const events = batches.flat();
    expect(result.events).toBe(events.length);
    expect(events.map((e) => e.counter)).toEqual(events.map((_, i) => i + 1));
    const types = events.map((e) => e.event);
    expect(types[0]).toBe('playbook_on_start');
    expect(types.at(-1)).toBe('playbook_on_stats');
    expect(types).toEqual(expect.arrayContaining(['playbook_on_play_start', 'playbook_on_task_start', 'runner_on_start', 'runner_on_ok']));
    const ok = events.find((e) => e.event === 'runner_on_ok')!;
    expect(ok.stdout).toContain('hi from the agent');
    expect((ok.event_data as { host?: string }).host).toBe('localhost');
    expect(events.every((e) => e.runner_ident === CORRELATION)).toBe(true);
    expect(fs.readdirSync(tmpRoot)).toEqual([]);
  }, 60_000);

  it('runs a failing playbook, uploading all the events so far every interval and all of them at the end', async () => {
    const srv = await server({ '/failure.yml': FAILURE });
    try {
      const outcome = await runJob(directive(srv.base, '/failure.yml', 1), { authorizationFor: () => undefined, pollMs: 100, tmpRoot: dir });
      expect(outcome).toMatchObject({ failure: null, uploaded: true, exitCode: 2 });
      const uploads = srv.received.map((r) => r.events);
      expect(uploads.length).toBeGreaterThanOrEqual(3); // the start, at least one during the pause, the end
      const last = uploads.at(-1)!;
      expect(last).toEqual(outcome.events);
      // Each upload: executor_on_start first, then the runner's events in counter order, each once; a prefix of the last.
      for (const events of uploads) {
        expect(events[0]!.event).toBe('executor_on_start');
        expect(events).toEqual(last.slice(0, events.length));
        expect(new Set(events.map((e) => e.uuid)).size).toBe(events.length);
      }
      expect(uploads.some((events) => events.length > 1 && events.length < last.length)).toBe(true);
      const counters = last.slice(1).map((e) => e.counter);
      expect(counters).toEqual(counters.map((_, i) => i + 1));
      const types = last.map((e) => e.event);
      expect(types).toEqual(expect.arrayContaining(['playbook_on_start', 'runner_on_ok', 'runner_on_failed', 'playbook_on_stats']));
      expect(types).not.toContain('executor_on_failed');
      expect(last.every((e) => e.event_data?.crc_dispatcher_correlation_id === CORRELATION)).toBe(true);
      expect(last.find((e) => e.event === 'runner_on_failed')!.stdout).toContain('Always fail');
    } finally {
      await srv.close();
    }
  }, 60_000);

  it('stops a playbook when told to, and ends its events with executor_on_failed', async () => {
    const srv = await server({ '/long.yml': '- hosts: localhost\n  gather_facts: false\n  tasks:\n    - pause:\n        seconds: 60\n' });
    try {
      const abort = new AbortController();
      const started = Date.now();
      const timer = setTimeout(() => abort.abort(), 3000);
      const outcome = await runJob(directive(srv.base, '/long.yml'), { authorizationFor: () => undefined, signal: abort.signal, pollMs: 100, tmpRoot: dir });
      clearTimeout(timer);
      expect(Date.now() - started).toBeLessThan(20_000);
      expect(outcome.failure).toBe('UNDEFINED_ERROR');
      const last = srv.received.at(-1)!.events;
      expect(last[0]!.event).toBe('executor_on_start');
      expect(last.at(-1)).toMatchObject({ event: 'executor_on_failed', event_data: { crc_dispatcher_error_details: expect.stringContaining('stopped the playbook') } });
      expect(fs.readdirSync(dir).filter((n) => n.startsWith('dispatcher-agent-'))).toEqual([]);
    } finally {
      await srv.close();
    }
  }, 60_000);
});
