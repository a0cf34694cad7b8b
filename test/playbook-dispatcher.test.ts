/**
 * The Playbook Dispatcher profile end to end, re-expressing the original's API tests (its notes §9): the
 * internal API (dispatch v2 and v1, cancel, recipients' status, run hosts, version, PSK authentication), the
 * public API (identity, permissions, filters, fields, paging, links, read-time timeout) and result uploads
 * (multipart, compression, the state machine), against a fake Cloud Connector over a real socket, on
 * SQLite and PostgreSQL.
 */

import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { POSTGRES_URL, probePostgres, startDispatcher, waitFor, type TestDispatcher } from './helpers.js';
import type { RunEvent } from '../src/core/types.js';
import { showsRun } from '../src/profiles/playbook-dispatcher/events.js';
import { startFakeCloudConnector, type FakeCloudConnector } from './fake-cloud-connector.js';

const FIXTURES = new URL('./fixtures/playbook-dispatcher/', import.meta.url);
const fixture = (path: string) => readFileSync(new URL(path, FIXTURES));

const PSK = '9yh9WuXWDj';
const PSK_OTHER = 'xwKhCUzgJ8';
const INTERNAL = { authorization: `PSK ${PSK}` };
const RECIPIENT = '35720ecb-bc23-4b06-a8cd-f0c264edf2c1';
const OFFLINE = 'b31955fb-3064-4b08-a9e0-e4d1be8b5a6f';
const SAT_ID = 'aa3b1faa-56f3-4d14-8258-615d11e20060';
const INVENTORY = ['16372e6f-1c18-4cdb-b780-50ab4b88e74b', '3d4e8b41-0a1f-4b2c-9d3e-2f5a6b7c8d9e'];

function identity(orgId: string, type = 'User'): string {
  const who = type === 'User' ? { user: { username: 'jdoe' } } : type === 'ServiceAccount' ? { service_account: { client_id: 'sa', username: 'sa' } } : { system: { cn: 'host' } };
  return Buffer.from(JSON.stringify({ identity: { org_id: orgId, internal: { org_id: orgId }, type, ...who } })).toString('base64');
}

function item(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { recipient: RECIPIENT, org_id: '5318290', principal: 'test_user', url: 'http://example.com/playbook.yml', name: 'Red Hat Playbook', ...overrides };
}

// PostgreSQL runs the same cases when it is there (and must be, under CI).
const pgProblem = await probePostgres();
if (pgProblem !== null) {
  if (process.env.CI === 'true') throw new Error(`PostgreSQL is needed under CI: ${pgProblem}`);
  console.log(`playbook-dispatcher on PostgreSQL skipped: ${pgProblem}`);
}
// A schema of its own in the `test` database, dropped afterwards.
const pgSchema = `dispatcher_playbook_${randomBytes(4).toString('hex')}`;
const pgUrl = (() => {
  const url = new URL(POSTGRES_URL);
  url.searchParams.set('schema', pgSchema);
  return url.toString();
})();
const backends: Array<[string, string | undefined]> = [['sqlite', undefined], ...(pgProblem === null ? [['postgres', pgUrl] as [string, string]] : [])];
afterAll(async () => {
  if (pgProblem !== null) return;
  const admin = new pg.Client({ connectionString: POSTGRES_URL });
  await admin.connect();
  try {
    await admin.query(`DROP SCHEMA IF EXISTS "${pgSchema}" CASCADE`);
  } finally {
    await admin.end();
  }
});

for (const [backend, storeUrl] of backends) {
  describe(`playbook-dispatcher profile (${backend})`, () => {
    let t: TestDispatcher;
    let app: FastifyInstance;
    let cc: FakeCloudConnector;

    beforeAll(async () => {
      cc = await startFakeCloudConnector([RECIPIENT]);
      t = await startDispatcher(
        {
          auth: { keyFile: '', psk: [{ service: 'test02', key: PSK }, { service: 'test', key: PSK_OTHER }] },
          actions: { http: { allow: ['127.0.0.1'] }, playbook: { cloudConnector: { url: cc.url, psk: 'ccpsk' }, rps: 1000, bucket: 100, returnUrl: 'https://ingress.example.com/api/ingress/v1/upload' } },
          profiles: { 'playbook-dispatcher': { blocklist: ['666'], tenants: { '901578': '5318290' } } },
        },
        storeUrl === undefined ? {} : { storeUrl },
      );
      app = await t.d.app();
    });
    afterAll(async () => {
      await t?.close();
      await cc?.close();
    });
    beforeEach(() => {
      cc.messages.length = 0;
      cc.failWith = null;
    });

    const dispatch = (body: unknown, headers: Record<string, string> = INTERNAL) =>
      app.inject({ method: 'POST', url: '/internal/v2/dispatch', headers: { ...headers, 'content-type': 'application/json' }, payload: JSON.stringify(body) });

    describe('POST /internal/v2/dispatch', () => {
      it('sends the directive, then stores the run with its defaults, its service and its hosts', async () => {
        const res = await dispatch([item({ labels: { 'remediation-id': '1234' }, hosts: [{ ansible_host: 'localhost', inventory_id: INVENTORY[0] }] })]);
        expect(res.statusCode).toBe(207);
        const [answer] = res.json() as Array<{ code: number; id: string }>;
        expect(answer!.code).toBe(201);
        expect(cc.messages).toHaveLength(1);
        const sent = cc.messages[0]!;
        expect(sent.recipient).toBe(RECIPIENT);
        expect(sent.headers['x-rh-cloud-connector-org-id']).toBe('5318290');
        expect(sent.body.directive).toBe('rhc-worker-playbook');
        expect(sent.body.payload).toBe('http://example.com/playbook.yml');
        expect(sent.body.metadata.return_url).toBe('https://ingress.example.com/api/ingress/v1/upload');
        expect(sent.body.metadata.response_interval).toBe('600');
        const run = await t.d.store.getRun(answer!.id);
        expect(run).toMatchObject({ orgId: '5318290', service: 'test02', status: 'running', labels: { 'remediation-id': '1234' }, correlationId: sent.body.metadata.crc_dispatcher_correlation_id });
        expect(run!.result).toMatchObject({ recipient: RECIPIENT, timeout: 3600, webConsoleUrl: 'https://console.redhat.com', name: 'Red Hat Playbook', principal: 'test_user', responseFull: true });
        expect(run!.deadlineAt).toBe(run!.createdAt + 3600 * 1000);
        const hosts = await t.d.store.listHosts({ runId: [run!.id], limit: 10, offset: 0 });
        expect(hosts.items.map((h) => [h.name, h.status, h.details])).toEqual([['localhost', 'running', { inventoryId: INVENTORY[0] }]]);
      });

      it('answers each item in order: 404 for a recipient not connected, 400 for a blocked org; stores nothing for them', async () => {
        const before = (await t.d.store.listRuns({ limit: 1, offset: 0 })).total;
        const res = await dispatch([item(), item({ recipient: OFFLINE }), item({ org_id: '666' })]);
        expect(res.statusCode).toBe(207);
        const answers = res.json() as Array<{ code: number; id?: string; message?: string }>;
        expect(answers.map((a) => a.code)).toEqual([201, 404, 400]);
        expect(answers[1]!.message).toBe('Receipient not found');
        expect(answers[2]!.message).toBe('Block listed org');
        expect((await t.d.store.listRuns({ limit: 1, offset: 0 })).total).toBe(before + 1);
      });

      it('answers 500 per item when the Cloud Connector fails', async () => {
        cc.failWith = 500;
        const res = await dispatch([item()]);
        expect(res.json()).toEqual([{ code: 500, message: 'Unexpected error during processing' }]);
      });

      it('sends Satellite runs to foreman_rh_cloud with the hashed principal and the hosts', async () => {
        const res = await dispatch([
          item({ recipient_config: { sat_id: SAT_ID, sat_org_id: '123' }, hosts: [{ inventory_id: INVENTORY[0], subscription_manager_id: INVENTORY[1] }, { inventory_id: INVENTORY[1] }] }),
        ]);
        expect((res.json() as Array<{ code: number }>)[0]!.code).toBe(201);
        const m = cc.messages[0]!.body;
        expect(m.directive).toBe('foreman_rh_cloud');
        expect(m.metadata).toMatchObject({
          operation: 'run',
          sat_id: SAT_ID,
          sat_org_id: '123',
          playbook_run_name: 'Red Hat Playbook',
          initiator_user_id: createHash('sha256').update('test_user').digest('hex'),
          hosts: INVENTORY.join(','),
          subscription_manager_ids: INVENTORY[1],
          response_full: 'true',
        });
      });

      const invalid: Array<[string, unknown, string]> = [
        ['an empty list', [], "request body has an error: doesn't match schema: minimum number of items is 1"],
        ['no org_id', [item({ org_id: undefined })], 'property "org_id" is missing'],
        ['no principal', [item({ principal: undefined })], 'property "principal" is missing'],
        ['no name', [item({ name: undefined })], 'property "name" is missing'],
        ['no url', [item({ url: undefined })], 'property "url" is missing'],
        ['a long org_id', [item({ org_id: '12345678901' })], 'maximum string length is 10'],
        ['a negative timeout', [item({ timeout: -1 })], 'number must be at least 0'],
        ['a huge timeout', [item({ timeout: 1000000 })], 'number must be at most 604800'],
        ['an empty principal', [item({ principal: '' })], 'minimum string length is 1'],
        ['an empty ansible_host', [item({ hosts: [{ ansible_host: '' }] })], 'minimum string length is 1'],
        ['a bad url', [item({ url: 'ftp://x' })], 'doesn\'t match the format "url"'],
        ['a bad sat_id', [item({ recipient_config: { sat_id: 'x', sat_org_id: '1' } })], 'doesn\'t match the format "sat-id-uuid"'],
        ['sat_id alone', [item({ recipient_config: { sat_id: SAT_ID } })], 'Both sat_id and sat_org need to be defined'],
        ['sat_org_id alone', [item({ recipient_config: { sat_org_id: '1' } })], 'Both sat_id and sat_org need to be defined'],
        ['a Satellite run without hosts', [item({ recipient_config: { sat_id: SAT_ID, sat_org_id: '1' } })], 'Hosts need to be defined'],
        ['a Satellite host without inventory id', [item({ recipient_config: { sat_id: SAT_ID, sat_org_id: '1' }, hosts: [{ ansible_host: 'a' }] })], 'Inventory ID needs to be defined'],
        ['51 items', Array.from({ length: 51 }, () => item()), 'maximum number of items is 50'],
      ];
      for (const [what, body, message] of invalid) {
        it(`refuses ${what} with 400 and the original's message`, async () => {
          const res = await dispatch(body);
          expect(res.statusCode).toBe(400);
          expect((res.json() as { message: string }).message).toContain(message);
          expect(cc.messages).toHaveLength(0);
        });
      }
    });

    describe('PSK authentication', () => {
      it('401 without a key, 401 for a key of another format, 403 for an unknown key', async () => {
        const none = await dispatch([item()], {});
        expect([none.statusCode, none.json()]).toEqual([401, { message: 'Unauthorized' }]);
        const format = await dispatch([item()], { authorization: 'Bearer abc' });
        expect([format.statusCode, format.json()]).toEqual([401, { message: 'Unsupported authentication key format' }]);
        const unknown = await dispatch([item()], { authorization: 'PSK unknownKey123' });
        expect([unknown.statusCode, unknown.json()]).toEqual([403, { message: 'Forbidden' }]);
      });

      it('GET /internal/version needs nothing', async () => {
        const res = await app.inject({ method: 'GET', url: '/internal/version' });
        expect([res.statusCode, res.json()]).toEqual([200, 'dispatcher']);
      });
    });

    describe('POST /internal/dispatch (v1)', () => {
      it('translates the account to its org id; an unknown account is Tenant not found', async () => {
        const res = await app.inject({
          method: 'POST',
          url: '/internal/dispatch',
          headers: { ...INTERNAL, 'content-type': 'application/json' },
          payload: JSON.stringify([
            { recipient: RECIPIENT, account: '901578', url: 'http://example.com/p.yml' },
            { recipient: RECIPIENT, account: '000000', url: 'http://example.com/p.yml' },
          ]),
        });
        const answers = res.json() as Array<{ code: number; id?: string; message?: string }>;
        expect(answers.map((a) => a.code)).toEqual([201, 404]);
        expect(answers[1]!.message).toBe('Tenant not found');
        expect((await t.d.store.getRun(answers[0]!.id!))!.orgId).toBe('5318290');
      });
    });

    describe('POST /internal/v2/cancel', () => {
      const cancel = (body: unknown) => app.inject({ method: 'POST', url: '/internal/v2/cancel', headers: { ...INTERNAL, 'content-type': 'application/json' }, payload: JSON.stringify(body) });
      const NOT_A_RUN = '7a5b0a4e-6f0f-4a59-8d4d-3c0f3d0b9a11';

      it('signals Satellite to cancel; refuses unknown runs, other tenants, runner runs and ended runs in the original’s codes', async () => {
        const sat = ((await dispatch([item({ recipient_config: { sat_id: SAT_ID, sat_org_id: '123' }, hosts: [{ inventory_id: INVENTORY[0] }] })])).json() as Array<{ id: string }>)[0]!.id;
        const runner = ((await dispatch([item()])).json() as Array<{ id: string }>)[0]!.id;
        const correlationId = cc.messages[0]!.body.metadata.correlation_id;
        cc.messages.length = 0;
        const res = await cancel([
          { run_id: sat, org_id: '5318290', principal: 'test_user' },
          { run_id: NOT_A_RUN, org_id: '5318290', principal: 'test_user' },
          { run_id: sat, org_id: '111', principal: 'test_user' },
          { run_id: runner, org_id: '5318290', principal: 'test_user' },
        ]);
        expect(res.statusCode).toBe(207);
        expect(res.json()).toEqual([
          { code: 202, run_id: sat },
          { code: 404, run_id: '00000000-0000-0000-0000-000000000000' },
          { code: 400, run_id: '00000000-0000-0000-0000-000000000000' },
          { code: 400, run_id: '00000000-0000-0000-0000-000000000000' },
        ]);
        expect(cc.messages).toHaveLength(1);
        expect(cc.messages[0]!.body).toEqual({
          directive: 'foreman_rh_cloud',
          payload: '',
          metadata: { operation: 'cancel', correlation_id: correlationId, initiator_user_id: createHash('sha256').update('test_user').digest('hex') },
        });
        // The cancel changes nothing yet: Satellite's events will say it was canceled.
        expect((await t.d.store.getRun(sat))!.status).toBe('running');
        await t.d.cancelRun(sat);
        expect((await cancel([{ run_id: sat, org_id: '5318290', principal: 'test_user' }])).json()).toEqual([{ code: 409, run_id: '00000000-0000-0000-0000-000000000000' }]);
      });
    });

    describe('timeouts', () => {
      it('the sweeper turns a run past its timeout and its running hosts into timeout, with their events', async () => {
        const id = ((await dispatch([item({ timeout: 1, hosts: [{ ansible_host: 'web1' }] })])).json() as Array<{ id: string }>)[0]!.id;
        const listed = await app.inject({ method: 'GET', url: '/api/playbook-dispatcher/v1/runs?filter[status]=running&fields[data]=id', headers: { 'x-rh-identity': identity('5318290') } });
        expect((listed.json() as { data: Array<{ id: string }> }).data).toContainEqual({ id });
        const run = await waitFor(() => t.d.store.getRun(id), (r) => r?.status === 'timeout', 10_000, 'the run to time out');
        expect(run!.status).toBe('timeout');
        const hosts = await t.d.store.listHosts({ runId: [id], limit: 5, offset: 0 });
        expect(hosts.items.map((h) => h.status)).toEqual(['timeout']);
        const events = await t.d.store.readRunEvents(0, 10_000);
        const shown = events.filter((e) => e.kind === 'run' && e.runId === id).filter((e) => showsRun(e as RunEvent)).map((e) => e.eventType + ':' + e.status);
        expect(shown).toEqual(['update:running', 'update:timeout']);
        // A late upload may still end it (timeout is not terminal for uploads).
        const correlationId = run!.correlationId!;
        const late = await uploadAs(withCorrelation(fixture('examples/events-success.jsonl'), correlationId), 'application/vnd.redhat.playbook.v1+jsonl');
        expect(late.statusCode).toBe(202);
        expect((await t.d.store.getRun(id))!.status).toBe('success');
      });
    });

    describe('POST /internal/v2/recipients/status', () => {
      it('says which recipients are connected', async () => {
        const res = await app.inject({
          method: 'POST',
          url: '/internal/v2/recipients/status',
          headers: { ...INTERNAL, 'content-type': 'application/json' },
          payload: JSON.stringify([
            { recipient: RECIPIENT, org_id: '5318290' },
            { recipient: OFFLINE, org_id: '5318290' },
          ]),
        });
        expect(res.statusCode).toBe(200);
        expect(res.json()).toEqual([
          { recipient: RECIPIENT, org_id: '5318290', connected: true },
          { recipient: OFFLINE, org_id: '5318290', connected: false },
        ]);
      });
    });

    const uploadAs = (file: Buffer, type: string, orgId = '5318290', identityType = 'System') => {
      const boundary = '----dispatcher-test';
      const payload = Buffer.concat([
        Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="events"\r\nContent-Type: ${type}\r\n\r\n`),
        file,
        Buffer.from(`\r\n--${boundary}--\r\n`),
      ]);
      return app.inject({ method: 'POST', url: '/api/ingress/v1/upload', headers: { 'x-rh-identity': identity(orgId, identityType), 'content-type': `multipart/form-data; boundary=${boundary}` }, payload });
    };
    const withCorrelation = (file: Buffer, correlationId: string) => Buffer.from(file.toString('utf8').replaceAll('00000000-0000-0000-0000-000000000000', correlationId));

    describe('uploads and the public API', () => {
      const upload = uploadAs;

      it('a successful Runner upload ends the run as success, with its host and output', async () => {
        const res = await dispatch([item()]);
        const id = (res.json() as Array<{ id: string }>)[0]!.id;
        const correlationId = cc.messages[0]!.body.metadata.crc_dispatcher_correlation_id!;
        const up = await upload(gzipSync(withCorrelation(fixture('examples/events-success.jsonl'), correlationId)), 'application/vnd.redhat.playbook.v1+gzip');
        expect(up.statusCode).toBe(202);
        const run = await t.d.store.getRun(id);
        expect(run!.status).toBe('success');
        const hosts = await t.d.store.listHosts({ runId: [id], limit: 10, offset: 0 });
        expect(hosts.items).toHaveLength(1);
        expect(hosts.items[0]!.status).toBe('success');
        expect(hosts.items[0]!.log).toContain('PLAY');

        const listed = await app.inject({ method: 'GET', url: `/api/playbook-dispatcher/v1/runs?filter[recipient]=${RECIPIENT}&fields[data]=id,status,correlation_id`, headers: { 'x-rh-identity': identity('5318290') } });
        expect(listed.statusCode).toBe(200);
        const body = listed.json() as { data: Array<Record<string, unknown>>; meta: { count: number; total: number } };
        expect(body.data).toContainEqual({ id, status: 'success', correlation_id: correlationId });
        const runHosts = await app.inject({ method: 'GET', url: `/api/playbook-dispatcher/v1/run_hosts?filter[run][id]=${id}&fields[data]=host,status,run`, headers: { 'x-rh-identity': identity('5318290') } });
        expect(runHosts.json()).toMatchObject({ data: [{ host: 'localhost', status: 'success', run: { id } }], meta: { count: 1, total: 1 } });
      });

      it('a Satellite upload ends every host of a run of more than a page of them; hosts found by an inventory id in upper case', async () => {
        const count = 1205;
        const inventory = Array.from({ length: count }, (_, i) => `aaaaaaaa-0000-4000-8000-${i.toString(16).padStart(12, '0')}`);
        const res = await dispatch([item({ recipient_config: { sat_id: SAT_ID, sat_org_id: '123' }, hosts: inventory.map((id) => ({ inventory_id: id })) })]);
        expect(res.statusCode, res.body).toBe(207);
        const id = (res.json() as Array<{ id: string }>)[0]!.id;
        const correlationId = cc.messages[0]!.body.metadata.correlation_id!;
        const line = (o: Record<string, unknown>) => JSON.stringify({ version: 3, correlation_id: correlationId, ...o });
        const events = [
          ...inventory.map((host) => line({ type: 'playbook_run_update', sequence: 0, host, console: `${host} ok` })),
          ...inventory.map((host) => line({ type: 'playbook_run_finished', host, status: 'success', connection_code: 0, execution_code: 0 })),
          line({ type: 'playbook_run_completed', status: 'success', satellite_connection_code: 0, satellite_infrastructure_code: 0 }),
        ];
        const up = await upload(gzipSync(Buffer.from(`${events.join('\n')}\n`)), 'application/vnd.redhat.playbook-sat.v3+gzip');
        expect(up.statusCode, up.body).toBe(202);
        expect((await t.d.store.getRun(id))!.status).toBe('success');
        const byStatus: Record<string, number> = {};
        for (let offset = 0; offset < count; offset += 1000) {
          for (const h of (await t.d.store.listHosts({ runId: [id], limit: 1000, offset })).items) byStatus[h.status] = (byStatus[h.status] ?? 0) + 1;
        }
        expect(byStatus).toEqual({ success: count });
        // A UUID filter in upper case finds what the original's uuid column found.
        const last = inventory.at(-1)!.toUpperCase();
        const found = await app.inject({ method: 'GET', url: `/api/playbook-dispatcher/v1/run_hosts?filter[inventory_id]=${last}&fields[data]=inventory_id,status`, headers: { 'x-rh-identity': identity('5318290') } });
        expect(found.json()).toMatchObject({ data: [{ inventory_id: inventory.at(-1), status: 'success' }], meta: { total: 1 } });
      }, 60_000);

      it('keeps a label with an empty value, and finds runs by a recipient written in upper case', async () => {
        const res = await dispatch([item({ labels: { keep: 'x', empty: '' } })]);
        expect(res.statusCode, res.body).toBe(207);
        const id = (res.json() as Array<{ code: number; id: string }>)[0]!.id;
        expect((await t.d.store.getRun(id))!.labels).toEqual({ keep: 'x', empty: '' });
        const list = async (query: string) =>
          ((await app.inject({ method: 'GET', url: `/api/playbook-dispatcher/v1/runs?${query}&fields[data]=id,labels,recipient`, headers: { 'x-rh-identity': identity('5318290') } })).json() as { data: Array<{ id: string; labels: unknown; recipient: string }> }).data;
        expect((await list('filter[labels][empty]=')).map((r) => r.id)).toContain(id);
        const upper = await list(`filter[recipient]=${RECIPIENT.toUpperCase()}`);
        expect(upper.find((r) => r.id === id)).toEqual({ id, labels: { keep: 'x', empty: '' }, recipient: RECIPIENT });
      });

      it('an upload with an unknown correlation id is refused and kept as a dead letter', async () => {
        const up = await upload(withCorrelation(fixture('examples/events-success.jsonl'), '1b36f2a2-8e35-4a0e-9bc4-4b0b3a0ff000'), 'application/vnd.redhat.playbook.v1+jsonl');
        expect(up.statusCode).toBe(404);
        const letters = await t.d.store.listDeadLetters({ limit: 5, offset: 0 });
        expect(letters.items[0]).toMatchObject({ source: 'playbook-dispatcher.upload', reason: 'not_found' });
      });

      it('an upload over upload.maxBytes is a 413 that names the limit, and a dead letter says so', async () => {
        const up = await upload(randomBytes(1024 * 1024 + 1), 'application/vnd.redhat.playbook.v1+gzip');
        expect([up.statusCode, up.json()]).toEqual([413, { message: "the upload's file is larger than upload.maxBytes (1048576 bytes)" }]);
        const letters = await t.d.store.listDeadLetters({ limit: 5, offset: 0 });
        expect(letters.items[0]).toMatchObject({ source: 'playbook-dispatcher.upload', reason: 'payload_too_large' });
      });

      it('an invalid upload is refused with invalid_upload and kept as a dead letter', async () => {
        const up = await upload(Buffer.from('{"event": "x"}\n'), 'application/vnd.redhat.playbook.v1+jsonl');
        expect(up.statusCode).toBe(400);
        const letters = await t.d.store.listDeadLetters({ limit: 5, offset: 0 });
        expect(letters.items[0]).toMatchObject({ source: 'playbook-dispatcher.upload', reason: 'invalid_upload' });
      });

      it('the public API needs the identity header, of a user or a service account', async () => {
        const none = await app.inject({ method: 'GET', url: '/api/playbook-dispatcher/v1/runs' });
        expect([none.statusCode, none.body]).toEqual([400, 'Bad Request: missing x-rh-identity header\n']);
        const system = await app.inject({ method: 'GET', url: '/api/playbook-dispatcher/v1/runs', headers: { 'x-rh-identity': identity('5318290', 'System') } });
        expect([system.statusCode, system.body]).toEqual([403, 'unauthorized principal type: system\n']);
        const sa = await app.inject({ method: 'GET', url: '/api/playbook-dispatcher/v1/runs', headers: { 'x-rh-identity': identity('5318290', 'ServiceAccount'), 'x-rh-insights-request-id': 'req-1' } });
        expect(sa.statusCode).toBe(200);
        expect(sa.headers['x-rh-insights-request-id']).toBe('req-1');
        expect(sa.headers['x-rh-playbook-dispatcher-internal-request-id']).toMatch(/^[0-9a-f-]{36}$/);
      });

      it('serves its OpenAPI document without credentials', async () => {
        const res = await app.inject({ method: 'GET', url: '/api/playbook-dispatcher/v1/openapi.json' });
        expect(res.statusCode).toBe(200);
        const doc = res.json() as { openapi: string; paths: Record<string, { get?: { parameters?: Array<{ name: string }> } }> };
        expect(Object.keys(doc.paths).sort()).toEqual(['/api/playbook-dispatcher/v1/run_hosts', '/api/playbook-dispatcher/v1/runs']);
        expect(doc.paths['/api/playbook-dispatcher/v1/runs']!.get!.parameters!.map((p) => p.name)).toContain('filter[recipient]');
      });

      it('isolates tenants', async () => {
        const other = await app.inject({ method: 'GET', url: '/api/playbook-dispatcher/v1/runs', headers: { 'x-rh-identity': identity('999') } });
        expect(other.json()).toMatchObject({ data: [], meta: { count: 0, total: 0 } });
      });
    });
  });
}

describe('playbook-dispatcher public API: permissions from an RBAC service', () => {
  let t: TestDispatcher;
  let app: FastifyInstance;
  let cc: FakeCloudConnector;
  let rbac: Server;
  /** What the fake RBAC answers, by the identity's org id. */
  const answers = new Map<string, { status: number; body: unknown }>();
  const asked: string[] = [];
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    rbac = createServer((req, res) => {
      const who = JSON.parse(Buffer.from(String(req.headers['x-rh-identity']), 'base64').toString()) as { identity: { org_id: string } };
      asked.push(`${req.url} ${who.identity.org_id}`);
      const answer = answers.get(who.identity.org_id) ?? { status: 200, body: { data: [] } };
      res.writeHead(answer.status, { 'content-type': 'application/json' }).end(JSON.stringify(answer.body));
    });
    await new Promise<void>((resolve) => rbac.listen(0, '127.0.0.1', resolve));
    cc = await startFakeCloudConnector([RECIPIENT]);
    t = await startDispatcher({
      auth: { keyFile: '', psk: [{ service: 'remediations', key: PSK }, { service: 'config_manager', key: PSK_OTHER }] },
      actions: { http: { allow: ['127.0.0.1'] }, playbook: { cloudConnector: { url: cc.url, psk: 'ccpsk' } } },
      profiles: { 'playbook-dispatcher': { rbac: { url: `http://127.0.0.1:${(rbac.address() as AddressInfo).port}`, cache: '1ms' } } },
    });
    app = await t.d.app();
    for (const [service, key] of [['remediations', PSK], ['config_manager', PSK_OTHER]] as const) {
      const res = await app.inject({ method: 'POST', url: '/internal/v2/dispatch', headers: { authorization: `PSK ${key}`, 'content-type': 'application/json' }, payload: JSON.stringify([item({ org_id: '77' })]) });
      ids[service] = (res.json() as Array<{ id: string }>)[0]!.id;
    }
  });
  afterAll(async () => {
    await t?.close();
    await cc?.close();
    await new Promise((resolve) => rbac?.close(resolve));
  });

  const access = (...entries: unknown[]) => ({ status: 200, body: { meta: { count: entries.length }, links: { next: null }, data: entries } });
  const listed = async (orgId: string) => {
    const res = await app.inject({ method: 'GET', url: '/api/playbook-dispatcher/v1/runs?fields[data]=id,service', headers: { 'x-rh-identity': identity(orgId) } });
    return { status: res.statusCode, body: res.body, services: res.statusCode === 200 ? (res.json() as { data: Array<{ service: string }> }).data.map((r) => r.service).sort() : [] };
  };

  it('asks RBAC with the caller’s identity, and narrows to the services of `equal` and `in` filters', async () => {
    answers.set('77', access({ permission: 'playbook-dispatcher:run:read', resourceDefinitions: [{ attributeFilter: { key: 'service', operation: 'equal', value: 'remediations' } }] }));
    expect((await listed('77')).services).toEqual(['remediations']);
    expect(asked.at(-1)).toMatch(/^\/api\/rbac\/v1\/access\/\?application=playbook-dispatcher.* 77$/);
    answers.set('77', access({ permission: 'playbook-dispatcher:run:read', resourceDefinitions: [{ attributeFilter: { key: 'service', operation: 'in', value: ['remediations', 'config_manager'] } }] }));
    expect((await listed('77')).services).toEqual(['config_manager', 'remediations']);
  });

  it('takes wildcards, and refuses other verbs and other applications', async () => {
    for (const permission of ['playbook-dispatcher:*:read', 'playbook-dispatcher:run:*', 'playbook-dispatcher:*:*']) {
      answers.set('77', access({ permission, resourceDefinitions: [] }));
      expect((await listed('77')).services, permission).toEqual(['config_manager', 'remediations']);
    }
    for (const permission of ['playbook-dispatcher:run:write', 'playbook-dispatcher:*:destroy', 'inventory:*:*']) {
      answers.set('77', access({ permission, resourceDefinitions: [] }));
      expect((await listed('77')).status, permission).toBe(403);
    }
  });

  it('follows the original’s rule: the services named by any matching permission, a filter on another attribute ignored', async () => {
    // An unfiltered permission beside one filtered to remediations: the filters' union, remediations only.
    answers.set('77', access({ permission: 'playbook-dispatcher:run:read', resourceDefinitions: [] }, { permission: 'playbook-dispatcher:run:read', resourceDefinitions: [{ attributeFilter: { key: 'service', operation: 'equal', value: 'remediations' } }] }));
    expect((await listed('77')).services).toEqual(['remediations']);
    // A filter on another attribute restricts nothing.
    answers.set('77', access({ permission: 'playbook-dispatcher:run:read', resourceDefinitions: [{ attributeFilter: { key: 'group.id', operation: 'equal', value: 'g1' } }] }));
    expect(await listed('77')).toMatchObject({ status: 200, services: ['config_manager', 'remediations'] });
    // The application must be named: `*:*:*` is not playbook-dispatcher's permission.
    answers.set('77', access({ permission: '*:*:*', resourceDefinitions: [] }));
    expect((await listed('77')).status).toBe(403);
  });

  it('answers 503 when RBAC fails or pages its answer', async () => {
    answers.set('77', { status: 500, body: {} });
    const failed = await listed('77');
    expect([failed.status, JSON.parse(failed.body)]).toEqual([503, { message: 'error getting permissions from RBAC' }]);
    answers.set('77', { status: 200, body: { links: { next: '/api/rbac/v1/access/?offset=10' }, data: [{ permission: 'playbook-dispatcher:run:read', resourceDefinitions: [] }] } });
    expect((await listed('77')).status).toBe(503);
  });
});
