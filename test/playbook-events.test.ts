import { readFileSync } from 'node:fs';
import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { parse } from 'yaml';
import { describe, it, expect } from 'vitest';
import type { Presented } from '../src/core/outbox.js';
import type { Host, HostEvent, RunEvent, RunEventType, RunStatus, RunSummary } from '../src/core/types.js';
import { PRESENTERS, presentHostEvent, presentRunEvent } from '../src/profiles/playbook-dispatcher/events.js';
import type { PlaybookResult } from '../src/profiles/playbook-dispatcher/model.js';

// The original's schemas (copied verbatim from its `schema/`), both in one Ajv, in strict mode: the one
// keyword it does not know is `javaType`, jsonschema2pojo's annotation naming the generated class.
const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;
const ajv = new Ajv({ allErrors: true, strict: true });
addFormats(ajv);
ajv.addKeyword({ keyword: 'javaType', schemaType: 'string' });
for (const file of ['run.event.yaml', 'run.host.event.yaml']) {
  ajv.addSchema(parse(readFileSync(new URL(`./fixtures/playbook-dispatcher/schema/${file}`, import.meta.url), 'utf8')) as object);
}
const runSchema = ajv.getSchema('run') as ValidateFunction;
const hostSchema = ajv.getSchema('runhost') as ValidateFunction;

function valid(validate: ValidateFunction, value: unknown): true | string {
  return validate(value) ? true : ajv.errorsText(validate.errors);
}

const RUN_ID = '0190f3a2-7c1e-7d3a-9b1f-2a3c4d5e6f70';
const HOST_ID = '0190f3a2-7c1e-7d3a-9b1f-aaaaaaaaaaaa';
const RECIPIENT = 'dd018b96-da04-4651-84d1-187fa5c23f6c';
const CORRELATION = '97b04495-68f0-4a41-93b9-d239c0a59b4f';
const INVENTORY = '48e144d2-50c6-4886-8044-7e0791603d97';
const SAT_ID = '16372e6f-1c18-4cdb-b780-50ab4b88e74b';
const CREATED = Date.UTC(2021, 2, 10, 8, 18, 12, 370);
const UPDATED = Date.UTC(2021, 2, 10, 9, 18, 12, 5);

function result(over: Partial<PlaybookResult> = {}): PlaybookResult {
  return {
    recipient: RECIPIENT,
    correlationId: CORRELATION,
    directive: 'rhc-worker-playbook',
    url: 'https://console.example.com/api/remediations/v1/remediations/1/playbook',
    name: 'Remediation plan 1',
    webConsoleUrl: 'https://console.example.com/insights/remediations/1',
    principal: 'jdoe',
    timeout: 3600,
    satId: null,
    satOrgId: null,
    responseFull: true,
    messageId: 'c7c0a0d4-5b8e-4e0e-9a3f-0d1f2e3a4b5c',
    ...over,
  };
}

function run(status: RunStatus, over: Partial<RunSummary> = {}): RunSummary {
  return {
    id: RUN_ID,
    eventKey: '0190f3a2-7c1e-7d3a-9b1f-000000000001',
    eventType: 'com.redhat.playbook.dispatch',
    route: 'playbook-dispatcher',
    action: 'playbook',
    actionType: 'playbook',
    status,
    attempts: 1,
    maxAttempts: 1,
    createdAt: CREATED,
    updatedAt: UPDATED,
    availableAt: CREATED,
    deadlineAt: CREATED + 3_600_000,
    expiresAt: CREATED + 3_600_000,
    orderingKey: null,
    correlationId: CORRELATION,
    labels: { 'state-id': '1234' },
    error: null,
    result: result(),
    finishedAt: null,
    service: 'remediations',
    orgId: '5318290',
    ...over,
  };
}

function runEvent(eventType: RunEventType, payload: RunSummary): RunEvent {
  return { kind: 'run', seq: 7, runId: payload.id, eventType, status: payload.status, service: payload.service, orgId: payload.orgId, at: payload.updatedAt, payload };
}

function host(status: RunStatus, over: Partial<Host> = {}): Host {
  return {
    id: HOST_ID,
    runId: RUN_ID,
    name: 'web-1.example.com',
    status,
    log: '',
    sequence: null,
    details: { inventoryId: INVENTORY },
    createdAt: CREATED,
    updatedAt: UPDATED,
    service: 'remediations',
    orgId: '5318290',
    ...over,
  };
}

function hostEvent(eventType: RunEventType, payload: Host): HostEvent {
  return {
    kind: 'host',
    seq: 8,
    runId: payload.runId,
    hostId: payload.id,
    eventType,
    status: payload.status,
    service: payload.service,
    orgId: payload.orgId,
    at: payload.updatedAt,
    payload,
    route: 'playbook-dispatcher',
    actionType: 'playbook',
  };
}

interface Value {
  event_type: string;
  payload: Record<string, unknown>;
}
function value(m: Presented): Value {
  return JSON.parse(m.body.toString('utf8')) as Value;
}

/** The original's run payload fields (notes §8, the SMT's `Payload`), in its order. */
const RUN_FIELDS = ['id', 'org_id', 'recipient', 'correlation_id', 'service', 'url', 'labels', 'name', 'web_console_url', 'recipient_config', 'status', 'timeout', 'created_at', 'updated_at'];
const HOST_FIELDS = ['id', 'run_id', 'inventory_id', 'host', 'stdout', 'status', 'created_at', 'updated_at'];

describe('the schemas as loaded', () => {
  it('reject what the original would not send, so that the checks below can fail', () => {
    const ok = value(presentRunEvent(runEvent('update', run('success'))));
    expect(valid(runSchema, ok)).toBe(true);
    expect(runSchema({ ...ok, event_type: 'upsert' })).toBe(false);
    expect(runSchema({ ...ok, payload: { ...ok.payload, status: 'queued' } })).toBe(false);
    expect(runSchema({ ...ok, payload: { ...ok.payload, name: null } })).toBe(false);
    expect(runSchema({ ...ok, payload: { ...ok.payload, url: 'not a uri' } })).toBe(false);
    expect(runSchema({ ...ok, payload: { ...ok.payload, timeout: 1.5 } })).toBe(false);
    const { recipient: _r, ...noRecipient } = ok.payload;
    expect(runSchema({ ...ok, payload: noRecipient })).toBe(false);
    const h = value(presentHostEvent(hostEvent('update', host('success'))));
    expect(valid(hostSchema, h)).toBe(true);
    expect(hostSchema({ ...h, payload: { ...h.payload, inventory_id: null } })).toBe(false);
    expect(hostSchema({ ...h, payload: { ...h.payload, status: 'queued' } })).toBe(false);
  });
});

describe('run events (platform.playbook-dispatcher.runs)', () => {
  it('a run the connector took: key the run id, the four headers, the whole payload in the original field order', () => {
    const m = presentRunEvent(runEvent('create', run('running')));
    expect(m.key).toBe(RUN_ID);
    expect(m.headers).toEqual({ event_type: 'create', service: 'remediations', status: 'running', org_id: '5318290' });
    expect(m.contentType).toBeUndefined();
    const v = value(m);
    expect(valid(runSchema, v)).toBe(true);
    expect(v.event_type).toBe('create');
    expect(v.payload).toEqual({
      id: RUN_ID,
      org_id: '5318290',
      recipient: RECIPIENT,
      correlation_id: CORRELATION,
      service: 'remediations',
      url: 'https://console.example.com/api/remediations/v1/remediations/1/playbook',
      labels: { 'state-id': '1234' },
      name: 'Remediation plan 1',
      web_console_url: 'https://console.example.com/insights/remediations/1',
      recipient_config: {},
      status: 'running',
      timeout: 3600,
      created_at: '2021-03-10T08:18:12.370Z',
      updated_at: '2021-03-10T09:18:12.005Z',
    });
    expect(Object.keys(v.payload)).toEqual(RUN_FIELDS);
    expect(Object.keys(v)).toEqual(['event_type', 'payload']);
  });

  it('the update that leaves a run waiting with its result is the original\'s create (its row is inserted once sent)', () => {
    const m = presentRunEvent(runEvent('update', run('running')));
    expect(m.headers.event_type).toBe('create');
    expect(value(m).event_type).toBe('create');
    expect(value(m).payload.status).toBe('running');
  });

  it.each(['success', 'failure', 'timeout', 'canceled'] as const)('an update to %s', (status) => {
    const m = presentRunEvent(runEvent('update', run(status, { finishedAt: UPDATED })));
    expect(m.key).toBe(RUN_ID);
    expect(m.headers).toEqual({ event_type: 'update', service: 'remediations', status, org_id: '5318290' });
    const v = value(m);
    expect(valid(runSchema, v)).toBe(true);
    expect(v.event_type).toBe('update');
    expect(v.payload.status).toBe(status);
    expect(v.payload.updated_at).toBe('2021-03-10T09:18:12.005Z');
  });

  it('shows the stored status: a running run past its deadline is not shown as timeout (no event until the sweeper writes it)', () => {
    const late = run('running', { deadlineAt: CREATED + 1000, updatedAt: CREATED + 7_200_000 });
    const m = presentRunEvent(runEvent('update', late));
    expect(m.headers.status).toBe('running');
    expect(value(m).payload.status).toBe('running');
  });

  it('read (a republished snapshot) and delete keep their names', () => {
    for (const t of ['read', 'delete'] as const) {
      const m = presentRunEvent(runEvent(t, run('success')));
      expect(m.headers.event_type).toBe(t);
      expect(value(m).event_type).toBe(t);
      expect(valid(runSchema, value(m))).toBe(true);
    }
  });

  it('a Satellite run carries its recipient_config, and its service and tenant in the headers', () => {
    const sat = run('running', {
      service: 'config_manager',
      orgId: '11789772',
      result: result({ directive: 'foreman_rh_cloud', satId: SAT_ID, satOrgId: '6826', responseFull: false }),
    });
    const m = presentRunEvent(runEvent('create', sat));
    expect(m.headers).toEqual({ event_type: 'create', service: 'config_manager', status: 'running', org_id: '11789772' });
    const v = value(m);
    expect(valid(runSchema, v)).toBe(true);
    expect(v.payload.recipient_config).toEqual({ sat_id: SAT_ID, sat_org_id: '6826' });
    expect(Object.keys(v.payload.recipient_config as object)).toEqual(['sat_id', 'sat_org_id']);
    expect(v.payload.org_id).toBe('11789772');
    expect(v.payload.service).toBe('config_manager');
  });

  it('labels are the run\'s, as an object of strings; none is {}', () => {
    const labels = { 'state-id': '1234', 'playbook-run': 'c7c0a0d4', empty: '' };
    const v = value(presentRunEvent(runEvent('update', run('success', { labels }))));
    expect(v.payload.labels).toEqual(labels);
    expect(valid(runSchema, v)).toBe(true);
    const none = value(presentRunEvent(runEvent('update', run('success', { labels: {} }))));
    expect(none.payload.labels).toEqual({});
    expect(valid(runSchema, none)).toBe(true);
  });

  it('a run without name and web console URL leaves both out (the original writes no nulls)', () => {
    const m = presentRunEvent(runEvent('create', run('running', { result: result({ name: null, webConsoleUrl: null }) })));
    const v = value(m);
    expect(valid(runSchema, v)).toBe(true);
    expect('name' in v.payload).toBe(false);
    expect('web_console_url' in v.payload).toBe(false);
    expect(Object.keys(v.payload)).toEqual(RUN_FIELDS.filter((f) => f !== 'name' && f !== 'web_console_url'));
    expect(m.body.toString('utf8')).not.toContain('null');
  });

  it('shows nothing of the action\'s own: no principal, response_full, directive or message id', () => {
    const text = presentRunEvent(runEvent('create', run('running'))).body.toString('utf8');
    for (const leak of ['principal', 'jdoe', 'response_full', 'rhc-worker-playbook', 'c7c0a0d4-5b8e', 'route', 'attempts']) expect(text).not.toContain(leak);
  });

  describe('what the original has no event for', () => {
    it('a planned run (queued, no result yet) is published with what is known only, and fails the schema', () => {
      const planned = run('queued', { result: null, correlationId: null, attempts: 0 });
      let m: Presented | undefined;
      expect(() => (m = presentRunEvent(runEvent('create', planned)))).not.toThrow();
      expect(m!.key).toBe(RUN_ID);
      expect(m!.headers).toEqual({ event_type: 'create', service: 'remediations', status: 'queued', org_id: '5318290' });
      const v = value(m!);
      expect(v.payload).toEqual({ id: RUN_ID, org_id: '5318290', service: 'remediations', labels: { 'state-id': '1234' }, status: 'queued', created_at: '2021-03-10T08:18:12.370Z', updated_at: '2021-03-10T09:18:12.005Z' });
      expect(runSchema(v)).toBe(false);
    });

    it('a queued run that somehow kept a result is not shown as running either', () => {
      const m = presentRunEvent(runEvent('update', run('queued')));
      expect(m.headers.status).toBe('queued');
      expect(value(m).payload).not.toHaveProperty('recipient');
      expect(runSchema(value(m))).toBe(false);
    });

    it('a claimed run without its result yet (accept-first create, a claim) invents no recipient or correlation id', () => {
      for (const t of ['create', 'update'] as const) {
        const m = presentRunEvent(runEvent(t, run('running', { result: null })));
        const v = value(m);
        expect(m.headers.event_type).toBe(t);
        expect(v.payload).not.toHaveProperty('recipient');
        expect(v.payload).not.toHaveProperty('correlation_id');
        expect(runSchema(v)).toBe(false);
      }
    });

    it('a run of another action (its result is not a playbook result) does not throw', () => {
      const other = run('success', { action: 'http', actionType: 'http', result: { status: 200, body: 'ok' } });
      const m = presentRunEvent(runEvent('update', other));
      expect(m.headers).toEqual({ event_type: 'update', service: 'remediations', status: 'success', org_id: '5318290' });
      expect(runSchema(value(m))).toBe(false);
    });

    it('a malformed payload does not throw', () => {
      const broken = { ...run('success'), createdAt: undefined, updatedAt: Number.NaN, labels: undefined } as unknown as RunSummary;
      const m = presentRunEvent(runEvent('update', broken));
      expect(m.key).toBe(RUN_ID);
      expect(value(m).payload.labels).toEqual({});
      expect(value(m).payload).not.toHaveProperty('created_at');
    });
  });
});

describe('run-host events (platform.playbook-dispatcher.run-hosts)', () => {
  it('a host with its inventory id: key the host id, headers event_type and status only', () => {
    const m = presentHostEvent(hostEvent('create', host('running')));
    expect(m.key).toBe(HOST_ID);
    expect(m.headers).toEqual({ event_type: 'create', status: 'running' });
    expect(m.contentType).toBeUndefined();
    const v = value(m);
    expect(valid(hostSchema, v)).toBe(true);
    expect(v.event_type).toBe('create');
    expect(v.payload).toEqual({
      id: HOST_ID,
      run_id: RUN_ID,
      inventory_id: INVENTORY,
      host: 'web-1.example.com',
      stdout: '',
      status: 'running',
      created_at: '2021-03-10T08:18:12.370Z',
      updated_at: '2021-03-10T09:18:12.005Z',
    });
    expect(Object.keys(v.payload)).toEqual(HOST_FIELDS);
  });

  it('a host without an inventory id leaves it out', () => {
    const m = presentHostEvent(hostEvent('create', host('running', { name: 'localhost', details: {} })));
    const v = value(m);
    expect(valid(hostSchema, v)).toBe(true);
    expect(v.payload).not.toHaveProperty('inventory_id');
    expect(Object.keys(v.payload)).toEqual(HOST_FIELDS.filter((f) => f !== 'inventory_id'));
    expect(v.payload.host).toBe('localhost');
    expect(m.body.toString('utf8')).not.toContain('null');
  });

  it('an update carries the host\'s output as stdout and its new status; no subscription-manager id', () => {
    const log = '\r\nPLAY [ping] ***\r\nok: [web-1]\r\n"quoted" \u2026\n';
    const m = presentHostEvent(hostEvent('update', host('failure', { log, details: { inventoryId: INVENTORY, subscriptionManagerId: SAT_ID } })));
    expect(m.headers).toEqual({ event_type: 'update', status: 'failure' });
    const v = value(m);
    expect(valid(hostSchema, v)).toBe(true);
    expect(v.payload.stdout).toBe(log);
    expect(v.payload.status).toBe('failure');
    expect(m.body.toString('utf8')).not.toContain('subscription_manager_id');
  });

  it.each(['success', 'timeout', 'canceled'] as const)('a host %s', (status) => {
    const m = presentHostEvent(hostEvent('update', host(status)));
    expect(m.headers.status).toBe(status);
    expect(value(m).payload.status).toBe(status);
    expect(valid(hostSchema, value(m))).toBe(true);
  });

  it('a queued host is shown running, as the original\'s hosts start', () => {
    const m = presentHostEvent(hostEvent('create', host('queued')));
    expect(m.headers.status).toBe('running');
    expect(valid(hostSchema, value(m))).toBe(true);
  });
});

describe('PRESENTERS', () => {
  it('names run and run-host, for the run and host streams', () => {
    expect(Object.keys(PRESENTERS).sort()).toEqual(['run', 'run-host']);
    expect(PRESENTERS.run?.stream).toBe('runEvents');
    expect(PRESENTERS['run-host']?.stream).toBe('hostEvents');
    expect(PRESENTERS.run?.present).toBe(presentRunEvent);
    expect(PRESENTERS['run-host']?.present).toBe(presentHostEvent);
    expect(PRESENTERS.run?.description).toMatch(/platform\.playbook-dispatcher\.runs/);
    expect(PRESENTERS['run-host']?.description).toMatch(/platform\.playbook-dispatcher\.run-hosts/);
  });
});
