import { readFileSync } from 'node:fs';
import { describe, it, expect } from 'vitest';
import { GAP_MARKER, runnerOutcome, satelliteOutcome } from '../src/profiles/playbook-dispatcher/results.js';
import type { RunnerEvent, SatelliteEvent } from '../src/profiles/playbook-dispatcher/upload.js';

// Fixtures are read with JSON.parse directly, so the expectations do not depend on the upload parser.
function lines<T>(path: string): T[] {
  const text = readFileSync(new URL(`./fixtures/playbook-dispatcher/${path}`, import.meta.url), 'utf8');
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as T);
}
const runner = (name: string): RunnerEvent[] => lines<RunnerEvent>(`test-fixtures/ansible/${name}`);
const sat = (name: string): SatelliteEvent[] => lines<SatelliteEvent>(`test-fixtures/satellite/${name}`);

const H1 = '2798f2ab-35b2-4d4e-af0c-0478dcb4a324';
const H2 = 'e8f05d27-5af9-4547-a30c-5be04e099ffe';
const CID = '0465783c-2e36-4e57-8514-c2cb962d323a';

describe('Runner outcome', () => {
  it('a finished run on localhost is a success, its log every multi-line stdout followed by a line break', () => {
    const events = runner('test-events1.jsonl');
    const out = runnerOutcome(events);
    expect(out.status).toBe('success');
    // Counters -1..6: lines 2, 3, 5 and 6 (0-based) span lines (end_line > start_line); the others have empty stdout.
    const s = (i: number): string => events[i]?.stdout as string;
    expect(s(0) + s(1) + s(4)).toBe('');
    expect(out.hosts).toEqual([{ name: 'localhost', status: 'success', log: `${s(2)}\n${s(3)}\n${s(5)}\n${s(6)}\n` }]);
    expect(out.hosts[0]?.log.startsWith('\r\nPLAY [ping] ***')).toBe(true);
    expect(out.hosts[0]?.log.endsWith('ignored=0   \r\n\n')).toBe(true);
  });

  it('a run with a failed task is a failure', () => {
    const out = runnerOutcome(runner('test-events2.jsonl'));
    expect(out.status).toBe('failure');
    expect(out.hosts.map((h) => [h.name, h.status])).toEqual([['localhost', 'failure']]);
  });

  it('a run without its stats is still running', () => {
    const out = runnerOutcome(runner('test-events3.jsonl'));
    expect(out.status).toBe('running');
    expect(out.hosts.map((h) => [h.name, h.status])).toEqual([['localhost', 'running']]);
  });

  it('an upload with only executor_on_start gives localhost with an empty log', () => {
    expect(runnerOutcome(runner('test-events4.jsonl'))).toEqual({ status: 'running', hosts: [{ name: 'localhost', status: 'running', log: '' }] });
  });

  it('lists the distinct hosts sorted, each with the whole run log', () => {
    const events = runner('test-events5.jsonl');
    const out = runnerOutcome(events);
    expect(out.hosts.map((h) => [h.name, h.status])).toEqual([
      ['jharting1', 'success'],
      ['jharting2', 'success'],
    ]);
    const expected = 'Identity added: ssh_key_data (ssh_key_data)\n' + `${events[2]?.stdout}\n${events[3]?.stdout}\n` + '\u001b[0;32mok: [jharting2]\u001b[0m\n\u001b[0;32mok: [jharting1]\u001b[0m\n' + `${events[8]?.stdout}\n`;
    expect(out.hosts[0]?.log).toBe(expected);
    expect(out.hosts[1]?.log).toBe(expected);
  });

  it('gives localhost when no event names a host', () => {
    expect(runnerOutcome(runner('test-events7.jsonl')).hosts.map((h) => [h.name, h.status])).toEqual([['localhost', 'success']]);
  });

  it('orders the log by counter, not by line order', () => {
    const ev = (counter: number, stdout: string): RunnerEvent => ({ event: 'verbose', uuid: 'u', counter, stdout, start_line: 0, end_line: 0 });
    expect(runnerOutcome([ev(3, 'c'), ev(1, 'a'), ev(2, 'b')]).hosts[0]?.log).toBe('abc');
  });

  it('judges each host by its own events and the host-less ones', () => {
    const ev = (counter: number, event: string, host?: string): RunnerEvent => ({ event, uuid: 'u', counter, stdout: '', start_line: 0, end_line: 0, event_data: host === undefined ? {} : { host } });
    const out = runnerOutcome([ev(1, 'runner_on_ok', 'b'), ev(2, 'runner_on_failed', 'a'), ev(3, 'playbook_on_stats')]);
    expect(out.status).toBe('failure');
    expect(out.hosts.map((h) => [h.name, h.status])).toEqual([
      ['a', 'failure'],
      ['b', 'success'],
    ]);
  });

  it('an executor failure ends the run as failed and its details close the log', () => {
    const start: RunnerEvent = { event: 'executor_on_start', uuid: 'u', counter: -1, stdout: 'started', start_line: 0, end_line: 0 };
    const failed: RunnerEvent = { event: 'executor_on_failed', uuid: 'u', counter: 0, start_line: 0, end_line: 0, event_data: { crc_dispatcher_error_code: 'SIGNATURE_INVALID', crc_dispatcher_error_details: 'bad signature' } };
    expect(runnerOutcome([start, failed])).toEqual({ status: 'failure', hosts: [{ name: 'localhost', status: 'failure', log: 'started\nbad signature' }] });
    expect(runnerOutcome([failed]).hosts[0]?.log).toBe('bad signature');
  });
});

describe('Satellite outcome', () => {
  it('a host with updates only is running, with its last sequence', () => {
    expect(satelliteOutcome(sat('sat-test-events1.jsonl'), true)).toEqual({ status: 'running', completed: false, hosts: [{ inventoryId: H1, status: 'running', sequence: 0, console: '' }] });
  });

  it('a completed failure', () => {
    const out = satelliteOutcome(sat('sat-test-events2.jsonl'), true);
    expect(out.status).toBe('failure');
    expect(out.completed).toBe(true);
    expect(out.hosts).toEqual([{ inventoryId: H1, status: 'failure', sequence: 1, console: 'localhost | FAILED => {\n    "changed": false,\n    "ping": "runtime_error"\n}' }]);
  });

  it('a canceled host makes the run canceled when Satellite sends full output', () => {
    const out = satelliteOutcome(sat('sat-test-events3.jsonl'), true);
    expect(out.status).toBe('canceled');
    expect(out.hosts[0]?.status).toBe('canceled');
  });

  it('keeps the run running without a completion when Satellite sends only new output', () => {
    const out = satelliteOutcome(sat('sat-test-events3.jsonl'), false);
    expect(out.status).toBe('running');
    expect(out.completed).toBe(false);
    expect(out.hosts[0]?.status).toBe('canceled');
    expect(satelliteOutcome(sat('sat-test-events2.jsonl'), false).status).toBe('failure');
  });

  it('two finished hosts make a success, each with its own sequence and console', () => {
    const out = satelliteOutcome(sat('sat-test-events4.jsonl'), true);
    expect(out.status).toBe('success');
    const hosts = [...out.hosts].sort((a, b) => a.inventoryId.localeCompare(b.inventoryId));
    expect(hosts).toEqual([
      { inventoryId: H1, status: 'success', sequence: 0, console: 'host1 | SUCCESS => {\n    "changed": false,\n    "ping": "pong"\n}' },
      { inventoryId: H2, status: 'success', sequence: 4, console: 'host2 | SUCCESS => {\n    "changed": false,\n    "ping": "pong"\n}' },
    ]);
  });

  it('reads the example upload of three hosts', () => {
    const out = satelliteOutcome(lines<SatelliteEvent>('examples/rhcsat-success.jsonl'), true);
    expect(out.status).toBe('success');
    expect(out.completed).toBe(true);
    const first = out.hosts.find((h) => h.inventoryId === H1);
    expect(first).toEqual({ inventoryId: H1, status: 'success', sequence: 1, console: `${H1} | SUCCESS => {\n    "changed": false,\n    "ping": "pong"\n}` });
    expect(out.hosts).toHaveLength(3);
  });

  const e = (over: Partial<SatelliteEvent>): SatelliteEvent => ({ type: 'playbook_run_update', version: 3, correlation_id: CID, ...over });

  it('orders console chunks by sequence, events without one last', () => {
    const out = satelliteOutcome([e({ host: H1, console: 'c' }), e({ host: H1, sequence: 2, console: 'b' }), e({ host: H1, sequence: 1, console: 'a' })], true);
    expect(out.hosts[0]?.console).toBe('abc');
    expect(out.hosts[0]?.sequence).toBe(2);
  });

  it('takes the first finished status of a host', () => {
    const out = satelliteOutcome([e({ type: 'playbook_run_finished', host: H1, status: 'failure' }), e({ type: 'playbook_run_finished', host: H1, status: 'success' })], true);
    expect(out.hosts[0]?.status).toBe('failure');
    expect(out.status).toBe('failure');
  });

  it('aggregates hosts: running wins over failure, failure over canceled', () => {
    const fin = (host: string, status: SatelliteEvent['status']): SatelliteEvent => e({ type: 'playbook_run_finished', host, status });
    expect(satelliteOutcome([fin(H1, 'failure'), e({ host: H2, sequence: 0 })], true).status).toBe('running');
    expect(satelliteOutcome([fin(H1, 'failure'), fin(H2, 'canceled')], true).status).toBe('failure');
    expect(satelliteOutcome([fin(H1, 'success'), fin(H2, 'canceled')], true).status).toBe('canceled');
  });

  it('a completion decides the run even over running hosts', () => {
    const out = satelliteOutcome([e({ host: H1, sequence: 0 }), e({ type: 'playbook_run_completed', status: 'success' })], false);
    expect(out).toMatchObject({ status: 'success', completed: true });
    expect(out.hosts[0]?.status).toBe('running');
  });

  it('adds host-less console and Satellite errors to every host console', () => {
    const done = e({ type: 'playbook_run_completed', status: 'failure', console: ' end', satellite_connection_code: 1, satellite_connection_error: ' no connection', satellite_infrastructure_code: 1, satellite_infrastructure_error: ' infra down' });
    const out = satelliteOutcome([e({ host: H1, sequence: 0, console: 'one' }), e({ host: H2, sequence: 0, console: 'two' }), done], true);
    expect(out.hosts.map((h) => h.console)).toEqual(['one end no connection infra down', 'two end no connection infra down']);
  });

  it('leaves Satellite errors out when their codes are zero', () => {
    const done = e({ type: 'playbook_run_completed', status: 'success', satellite_connection_code: 0, satellite_connection_error: 'x', satellite_infrastructure_code: 0, satellite_infrastructure_error: 'y' });
    expect(satelliteOutcome([e({ host: H1, sequence: 0, console: 'one' }), done], true).hosts[0]?.console).toBe('one');
  });

  it('a host without a sequence has sequence null', () => {
    expect(satelliteOutcome([e({ type: 'playbook_run_finished', host: H1, status: 'success' })], true).hosts[0]?.sequence).toBeNull();
  });
});

describe('GAP_MARKER', () => {
  it('is the backslash literal the original stores, not a newline and an ellipsis', () => {
    // backslash n (2) + backslash u2026 (6) + backslash n (2)
    expect(GAP_MARKER).toHaveLength(10);
    expect([...GAP_MARKER].map((c) => c.charCodeAt(0))).toEqual([0x5c, 0x6e, 0x5c, 0x75, 0x32, 0x30, 0x32, 0x36, 0x5c, 0x6e]);
    expect(`first console log${GAP_MARKER}second console log`).toBe('first console log\\n\\u2026\\nsecond console log');
    expect(GAP_MARKER.includes('\n')).toBe(false);
  });
});
