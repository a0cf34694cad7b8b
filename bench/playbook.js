/**
 * The Playbook Dispatcher profile beside the core's generic batch path, in one run of one `dispatcher serve`
 * on SQLite (`node bench/playbook.js`):
 *
 * - core: `POST /v1/events`, batches of 50 events to a `noop` route; runs/s until every run ended;
 * - dispatch: `POST /internal/v2/dispatch`, 50 items per request, to recipients connected over the built-in
 *   connector (WebSocket clients of this script that accept every directive at once); runs/s until every
 *   207 came back (each run is stored waiting by then);
 * - upload: one gzip JSON Lines file of 100 Runner events per run to `POST /api/ingress/v1/upload`, which
 *   ends it `success`; uploads/s.
 *
 * A playbook run costs one dispatch and one upload; its cost per run is set beside the core's (the target:
 * at most twice). Each phase is `BENCH_RUNS` runs (default 2,000), 4 requests in flight; the whole is
 * repeated `BENCH_REPEAT` times (default 3) and the medians printed, with the server's CPU time per run.
 */

import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import WebSocket from 'ws';
import { cpuSeconds, DISPATCHER_MAIN, dispatcherNodeFlags, freePort, median, waitServing } from './common.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 2000);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
const BATCH = 50;
const IN_FLIGHT = 4;
const AGENTS = 8;
const KEY = 'benchKey0123456789abcdef';
const AUTH = { authorization: `PSK ${KEY}` };
const IDENTITY = Buffer.from(JSON.stringify({ identity: { org_id: 'default', type: 'System', system: { cn: 'bench' } } })).toString('base64');

/** `count` jobs, `IN_FLIGHT` at a time. */
async function pool(count, job) {
  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < count) await job(next++);
    }),
  );
}

/** A Runner upload of 100 events: executor_on_start with the correlation id, 98 task results, the stats. */
function runnerFile(correlationId) {
  const lines = [JSON.stringify({ event: 'executor_on_start', uuid: randomUUID(), counter: -1, stdout: '', start_line: 0, end_line: 0, event_data: { crc_dispatcher_correlation_id: correlationId } })];
  for (let i = 1; i <= 98; i++) {
    lines.push(
      JSON.stringify({
        event: 'runner_on_ok',
        uuid: randomUUID(),
        counter: i,
        stdout: `ok: [localhost] => task ${i}`,
        start_line: i - 1,
        end_line: i,
        event_data: { host: 'localhost', playbook: 'bench.yml', crc_dispatcher_correlation_id: correlationId },
      }),
    );
  }
  lines.push(JSON.stringify({ event: 'playbook_on_stats', uuid: randomUUID(), counter: 99, stdout: 'PLAY RECAP', start_line: 98, end_line: 99, event_data: { crc_dispatcher_correlation_id: correlationId } }));
  return gzipSync(lines.join('\n') + '\n');
}

function multipart(file) {
  const boundary = `----bench${randomUUID()}`;
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="events.jsonl.gz"\r\nContent-Type: application/vnd.redhat.playbook.v1+gzip\r\n\r\n`),
    file,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return { body, type: `multipart/form-data; boundary=${boundary}` };
}

async function post(url, headers, body) {
  const res = await fetch(url, { method: 'POST', headers, body });
  const text = await res.text();
  if (res.status >= 300 && res.status !== 207) throw new Error(`${url}: ${res.status} ${text.slice(0, 300)}`);
  return text === '' ? null : JSON.parse(text);
}

async function unfinished(url) {
  const res = await fetch(`${url}/v1/runs?filter[status]=queued,running&limit=1`, { headers: AUTH });
  return (await res.json()).meta.total;
}

async function once(round) {
  const dir = mkdtempSync(join(tmpdir(), 'dispatcher-bench-playbook-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const config = join(dir, 'dispatcher.json');
  writeFileSync(
    config,
    JSON.stringify({
      server: { port, rateLimit: { max: 0 } },
      store: { url: `sqlite:${join(dir, 'dispatcher.db')}` },
      log: { level: 'warn' },
      auth: { keyFile: '', psk: [{ service: 'bench', key: KEY }], identityHeader: { enabled: true } },
      actions: { playbook: { rps: 1e6, bucket: 100000 } },
      routes: [{ name: 'bench', match: { type: 'bench.*' }, actions: [{ noop: {} }] }],
      profiles: { 'playbook-dispatcher': {} },
    }),
  );
  const child = spawn(process.execPath, [...dispatcherNodeFlags(), DISPATCHER_MAIN, 'serve', '--config', config], { stdio: ['ignore', 'inherit', 'inherit'] });
  const agents = [];
  try {
    await waitServing(url, child);
    // Recipients that take every directive at once, and note its correlation id.
    const correlation = new Map();
    const recipients = Array.from({ length: AGENTS }, () => randomUUID());
    for (const id of recipients) {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/recipients/${id}/connect`, { headers: AUTH });
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      ws.on('message', (data) => {
        const m = JSON.parse(String(data));
        if (m.type !== 'directive') return;
        correlation.set(m.metadata.crc_dispatcher_correlation_id, true);
        ws.send(JSON.stringify({ type: 'accepted', id: m.id }));
      });
      agents.push(ws);
    }

    const batches = Math.ceil(RUNS / BATCH);
    const cpu0 = cpuSeconds(child.pid);
    // The core's batch path.
    let t0 = performance.now();
    await pool(batches, (b) =>
      post(`${url}/v1/events`, { ...AUTH, 'content-type': 'application/cloudevents-batch+json' }, JSON.stringify(Array.from({ length: BATCH }, (_, i) => ({ specversion: '1.0', id: `e-${round}-${b}-${i}`, source: 'urn:bench', type: 'bench.run' })))),
    );
    while ((await unfinished(url)) > 0) await new Promise((resolve) => setTimeout(resolve, 20));
    const core = { seconds: (performance.now() - t0) / 1000 };
    const cpu1 = cpuSeconds(child.pid);
    core.cpu = cpu1 - cpu0;

    // Dispatches of 50 items.
    const runIds = [];
    t0 = performance.now();
    await pool(batches, async (b) => {
      const items = Array.from({ length: BATCH }, (_, i) => ({ recipient: recipients[(b * BATCH + i) % AGENTS], org_id: 'default', principal: 'bench', url: 'https://example.com/bench.yml', name: 'bench' }));
      const answers = await post(`${url}/internal/v2/dispatch`, { ...AUTH, 'content-type': 'application/json' }, JSON.stringify(items));
      for (const a of answers) {
        if (a.code !== 201) throw new Error(`dispatch answered ${JSON.stringify(a)}`);
        runIds.push(a.id);
      }
    });
    const dispatch = { seconds: (performance.now() - t0) / 1000 };
    const cpu2 = cpuSeconds(child.pid);
    dispatch.cpu = cpu2 - cpu1;

    // Uploads of a 100-event Runner file, one per run.
    const files = [...correlation.keys()].map((id) => multipart(runnerFile(id)));
    t0 = performance.now();
    await pool(files.length, (i) => post(`${url}/api/ingress/v1/upload`, { 'x-rh-identity': IDENTITY, 'content-type': files[i].type }, files[i].body));
    const upload = { seconds: (performance.now() - t0) / 1000 };
    upload.cpu = cpuSeconds(child.pid) - cpu2;
    const left = await unfinished(url);
    if (left !== 0) throw new Error(`${left} runs did not end after their uploads`);
    return { core, dispatch, upload, runs: runIds.length, uploads: files.length };
  } finally {
    for (const ws of agents) ws.terminate();
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
    rmSync(dir, { recursive: true, force: true });
  }
}

const rounds = [];
for (let r = 0; r < REPEAT; r++) {
  const result = await once(r);
  rounds.push(result);
  const rate = (phase, n) => `${Math.round(n / phase.seconds)}/s, ${((phase.cpu / n) * 1e6).toFixed(0)} µs CPU each`;
  console.log(`round ${r + 1}: core ${rate(result.core, RUNS)}; dispatch ${rate(result.dispatch, result.runs)}; upload ${rate(result.upload, result.uploads)}`);
}
const m = (pick) => median(rounds.map(pick));
const coreRate = m((r) => RUNS / r.core.seconds);
const dispatchRate = m((r) => r.runs / r.dispatch.seconds);
const uploadRate = m((r) => r.uploads / r.upload.seconds);
const coreCpu = m((r) => r.core.cpu / RUNS) * 1e6;
const dispatchCpu = m((r) => r.dispatch.cpu / r.runs) * 1e6;
const uploadCpu = m((r) => r.upload.cpu / r.uploads) * 1e6;
const profilePerRun = 1 / dispatchRate + 1 / uploadRate;
console.log(`\nmedians of ${REPEAT} rounds, ${RUNS} runs each, batches of ${BATCH}, ${IN_FLIGHT} requests in flight:`);
console.log(`  core batch path (POST /v1/events → noop):     ${Math.round(coreRate)} runs/s, ${coreCpu.toFixed(0)} µs server CPU per run`);
console.log(`  dispatch (POST /internal/v2/dispatch, 50):    ${Math.round(dispatchRate)} runs/s, ${dispatchCpu.toFixed(0)} µs server CPU per run`);
console.log(`  upload (100 Runner events, gzip, multipart): ${Math.round(uploadRate)} uploads/s, ${uploadCpu.toFixed(0)} µs server CPU per upload`);
console.log(`  a playbook run (dispatch + upload):           ${Math.round(1 / profilePerRun)} runs/s; ${(profilePerRun * coreRate).toFixed(2)}× the core's time per run, ${((dispatchCpu + uploadCpu) / coreCpu).toFixed(2)}× its CPU`);
