/**
 * End to end, every part real: a dispatcher with only `profiles: { playbook-dispatcher: {} }` (SQLite, the
 * built-in connector), `dispatcher agent` connected as a recipient, a playbook dispatched through the
 * internal API, run on this host by ansible-runner, its events uploaded to the dispatcher's own upload
 * endpoint: the run and its host end `success` in the public API and in the run-event stream's presenter.
 */

import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent } from '../src/agent/index.js';
import type { HostEvent, RunEvent } from '../src/core/types.js';
import { presentHostEvent, presentRunEvent, showsRun } from '../src/profiles/playbook-dispatcher/events.js';
import { hasCommand, startDispatcher, TEST_KEY, waitFor, type TestDispatcher } from './helpers.js';

const hasAnsibleRunner = hasCommand('ansible-runner');
if (!hasAnsibleRunner) {
  if (process.env.CI === 'true') throw new Error('playbook-e2e.test.ts: ansible-runner is not installed (apt-get install ansible python3-ansible-runner); with CI=true it must run');
  console.warn('playbook-e2e.test.ts skipped: ansible-runner is not installed (apt-get install ansible python3-ansible-runner)');
}

const PLAYBOOK = '- name: hello\n  hosts: localhost\n  gather_facts: false\n  tasks:\n    - name: say hi\n      debug:\n        msg: hello from the end-to-end test\n';
const identity = (orgId: string) => Buffer.from(JSON.stringify({ identity: { org_id: orgId, type: 'User', user: { username: 'jdoe' } } })).toString('base64');

describe.skipIf(!hasAnsibleRunner)('dispatch → agent → ansible-runner → upload', () => {
  let t: TestDispatcher;
  let base: string;
  let files: Server;
  let filesUrl: string;
  let agent: Awaited<ReturnType<typeof startAgent>> | undefined;
  const recipient = randomUUID();

  beforeAll(async () => {
    files = createServer((req, res) => {
      if (req.url === '/hello.yml') res.writeHead(200, { 'content-type': 'text/yaml' }).end(PLAYBOOK);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => files.listen(0, '127.0.0.1', resolve));
    filesUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
    t = await startDispatcher({ server: { port: 0 }, auth: { keyFile: '', psk: [{ service: 'remediations', key: TEST_KEY }], identityHeader: { enabled: true } }, profiles: { 'playbook-dispatcher': {} } });
    base = await t.d.listen();
    agent = await startAgent({ url: base, id: recipient, authorization: `PSK ${TEST_KEY}`, log: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} } });
    await waitFor(async () => agent!.connected(), (c) => c, 10_000, 'the agent to connect');
  });
  afterAll(async () => {
    await agent?.stop();
    await t?.close();
    await new Promise((resolve) => files?.close(resolve));
  });

  it('ends the run and its host success, seen in the public API and the run events', { timeout: 90_000 }, async () => {
    const status = await fetch(`${base}/internal/v2/recipients/status`, {
      method: 'POST',
      headers: { authorization: `PSK ${TEST_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify([{ recipient, org_id: 'default' }]),
    });
    expect(await status.json()).toEqual([{ recipient, org_id: 'default', connected: true }]);

    const dispatched = await fetch(`${base}/internal/v2/dispatch`, {
      method: 'POST',
      headers: { authorization: `PSK ${TEST_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify([{ recipient, org_id: 'default', principal: 'jdoe', url: `${filesUrl}/hello.yml`, name: 'hello', hosts: [{ ansible_host: 'localhost' }] }]),
    });
    expect(dispatched.status).toBe(207);
    const [answer] = (await dispatched.json()) as Array<{ code: number; id: string }>;
    expect(answer!.code).toBe(201);

    const run = await waitFor(
      () => t.d.store.getRun(answer!.id),
      (r) => r !== null && r.status !== 'running' && r.status !== 'queued',
      60_000,
      'the run to end',
    );
    expect(run!.status).toBe('success');

    const runs = await fetch(`${base}/api/playbook-dispatcher/v1/runs?fields[data]=id,status,service,name`, { headers: { 'x-rh-identity': identity('default') } });
    expect(((await runs.json()) as { data: unknown[] }).data).toContainEqual({ id: answer!.id, status: 'success', service: 'remediations', name: 'hello' });
    const hosts = await fetch(`${base}/api/playbook-dispatcher/v1/run_hosts?filter[run][id]=${answer!.id}&fields[data]=host,status,stdout`, { headers: { 'x-rh-identity': identity('default') } });
    const [host] = ((await hosts.json()) as { data: Array<{ host: string; status: string; stdout: string }> }).data;
    expect(host).toMatchObject({ host: 'localhost', status: 'success' });
    expect(host!.stdout).toContain('hello from the end-to-end test');

    // The event stream, as its presenters publish it: the run's create (running), then its update (success).
    const events = await t.d.store.readRunEvents(0, 1000);
    const shown = events
      .filter((e): e is RunEvent => e.kind === 'run' && e.runId === answer!.id)
      .filter(showsRun)
      .map((e) => JSON.parse(presentRunEvent(e).body.toString()) as { event_type: string; payload: { status: string } });
    expect(shown.map((e) => [e.event_type, e.payload.status])).toEqual([
      ['create', 'running'],
      ['update', 'success'],
    ]);
    const hostEvents = events.filter((e): e is HostEvent => e.kind === 'host' && e.runId === answer!.id).map((e) => JSON.parse(presentHostEvent(e).body.toString()) as { payload: { status: string } });
    expect(hostEvents.at(-1)!.payload.status).toBe('success');
  });
});
