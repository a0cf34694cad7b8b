/**
 * What an upload says about its run and hosts, as pure functions: the store applies the outcome under the
 * guards of the original (terminal statuses stay, Satellite hosts only updated, logs replaced or appended).
 */

import type { RunnerEvent, SatelliteEvent } from './upload.js';

export type RunnerStatus = 'running' | 'success' | 'failure';
export type SatelliteStatus = 'running' | 'success' | 'failure' | 'canceled';

/**
 * What the original stores between two Satellite console chunks when some were never received: the SQL
 * literal `'\n\u2026\n'` kept as written, i.e. 10 characters (backslash, n, backslash, u2026, backslash, n), not a newline and an ellipsis.
 */
export const GAP_MARKER = '\\n\\u2026\\n';

export interface RunnerOutcome {
  status: RunnerStatus;
  hosts: Array<{ name: string; status: RunnerStatus; log: string }>;
}

export interface SatelliteOutcome {
  status: SatelliteStatus;
  /** A `playbook_run_completed` with a status arrived: the run is over whatever `response_full` says. */
  completed: boolean;
  hosts: Array<{ inventoryId: string; status: SatelliteStatus; sequence: number | null; console: string }>;
}

/** Runner status of a set of events: finished by the stats (or an executor failure), failed by any failure. */
function inferStatus(events: RunnerEvent[]): RunnerStatus {
  let finished = false;
  let failed = false;
  for (const e of events) {
    if (e.event === 'playbook_on_stats') finished = true;
    else if (e.event === 'runner_on_failed') failed = true;
    else if (e.event === 'executor_on_failed') {
      finished = true;
      failed = true;
    }
  }
  if (!finished) return 'running';
  return failed ? 'failure' : 'success';
}

/** The whole run's output: stdout in counter order, a line break after multi-line events, then the executor's error. */
function runnerLog(events: RunnerEvent[]): string {
  const sorted = [...events].sort((a, b) => a.counter - b.counter);
  let log = '';
  for (const e of sorted) {
    log += e.stdout ?? '';
    if (e.end_line > e.start_line) log += '\n';
  }
  for (const e of sorted) {
    const details = e.event === 'executor_on_failed' ? e.event_data?.crc_dispatcher_error_details : undefined;
    if (typeof details === 'string') log += (log === '' ? '' : '\n') + details;
  }
  return log;
}

/** The run's status and each host's, from one Runner upload. Every host gets the whole run's log. */
export function runnerOutcome(events: RunnerEvent[]): RunnerOutcome {
  const names = [...new Set(events.map((e) => e.event_data?.host).filter((h): h is string => typeof h === 'string'))].sort();
  if (names.length === 0) names.push('localhost');
  const log = runnerLog(events);
  return {
    status: inferStatus(events),
    hosts: names.map((name) => {
      const own = events.filter((e) => e.event_data?.host === undefined || e.event_data.host === name);
      return { name, status: inferStatus(own), log };
    }),
  };
}

/** The run's status and each host's, from one Satellite upload; `responseFull` is the run's setting. */
export function satelliteOutcome(events: SatelliteEvent[], responseFull: boolean): SatelliteOutcome {
  // Stable sort: events without a sequence keep their order, after all sequenced ones.
  const sorted = [...events].sort((a, b) => (a.sequence ?? Number.POSITIVE_INFINITY) - (b.sequence ?? Number.POSITIVE_INFINITY) || 0);
  const hostIds: string[] = [];
  for (const e of sorted) if (e.host !== undefined && !hostIds.includes(e.host)) hostIds.push(e.host);

  const completedEvent = sorted.find((e) => e.type === 'playbook_run_completed' && e.status !== undefined);
  const hostless = (e: SatelliteEvent): boolean => e.host === undefined;

  const hosts = hostIds.map((inventoryId) => {
    const mine = sorted.filter((e) => e.host === inventoryId);
    const finished = mine.find((e) => e.type === 'playbook_run_finished' && e.status !== undefined);
    let sequence: number | null = null;
    for (const e of mine) if (typeof e.sequence === 'number') sequence = e.sequence;
    let console = '';
    for (const e of sorted) {
      if (e.host !== inventoryId && !hostless(e)) continue;
      console += e.console ?? '';
      if (typeof e.satellite_connection_code === 'number' && e.satellite_connection_code !== 0) console += e.satellite_connection_error ?? '';
      if (typeof e.satellite_infrastructure_code === 'number' && e.satellite_infrastructure_code !== 0) console += e.satellite_infrastructure_error ?? '';
    }
    return { inventoryId, status: (finished?.status ?? 'running') as SatelliteStatus, sequence, console };
  });

  let status: SatelliteStatus;
  if (completedEvent?.status !== undefined) status = completedEvent.status;
  else if (hosts.some((h) => h.status === 'running')) status = 'running';
  else if (hosts.some((h) => h.status === 'failure')) status = 'failure';
  else if (hosts.some((h) => h.status === 'canceled')) status = 'canceled';
  else status = 'success';
  const completed = completedEvent !== undefined;
  // Satellite sending only new output cannot be judged finished from its hosts alone: wait for the completion.
  if (!responseFull && !completed) status = 'running';
  return { status, completed, hosts };
}
