/**
 * How a Playbook Dispatcher run is a core run (../shared/DESIGN.md: one store, one model, no copy).
 *
 * - A **run** of the `playbook` action: its tenant is the run's `orgId`, the service that dispatched it the
 *   run's `service`, its labels the run's `labels`, its correlation id the run's `correlationId`, its
 *   `created_at`/`updated_at` the run's; what the directive carried (recipient, playbook URL, name, console
 *   URL, principal, timeout, Satellite ids) is the action's `result` (`PlaybookResult`), written when the
 *   connector accepted the directive and kept until the run ends.
 * - Its **status**: the core's, read at `now`: a run still `running` past its deadline (created + timeout) is
 *   reported `timeout`, as the original reports it before its cleaner writes it; `queued` (a run of a
 *   configured route not yet attempted) is `running`.
 * - A **run host** is a core host of the run: `host` is the host's `name`, `stdout` its `log`, and its
 *   inventory and subscription-manager ids are in its `details` (`HostDetails`).
 */

import type { PlaybookResult } from '../../actions/playbook/index.js';
import type { Host, Run, RunStatus, RunSummary } from '../../core/types.js';

export { RUNNER_DIRECTIVE, SATELLITE_DIRECTIVE, type PlaybookResult } from '../../actions/playbook/index.js';

/** What a run host keeps in its `details`. */
export interface HostDetails {
  inventoryId?: string;
  subscriptionManagerId?: string;
}

/** The statuses the original knows. */
export const PLAYBOOK_STATUSES = ['running', 'success', 'failure', 'timeout', 'canceled'] as const;
export type PlaybookStatus = (typeof PLAYBOOK_STATUSES)[number];

/** A run as the original's API and event interface show it (every field; the API keeps those asked for). */
export interface PlaybookRunView {
  id: string;
  org_id: string;
  recipient: string;
  correlation_id: string;
  url: string;
  labels: Record<string, string>;
  timeout: number;
  status: PlaybookStatus;
  service: string;
  name: string | null;
  web_console_url: string | null;
  principal: string | null;
  recipient_config: { sat_id?: string; sat_org_id?: string };
  response_full: boolean;
  created_at: string;
  updated_at: string;
}

/** A run host as the original's API shows it. */
export interface PlaybookHostView {
  id: string;
  run_id: string;
  host: string;
  status: PlaybookStatus;
  stdout: string;
  inventory_id: string | null;
  subscription_manager_id: string | null;
  created_at: string;
  updated_at: string;
}

/** The action's result of a run, or null when the run has none (not a playbook run, or not yet sent). */
export function playbookResult(run: Pick<Run, 'result'>): PlaybookResult | null {
  const r = run.result as Partial<PlaybookResult> | null;
  return r !== null && typeof r === 'object' && typeof r.recipient === 'string' && typeof r.correlationId === 'string' ? (r as PlaybookResult) : null;
}

/** A core status as the original shows it at `now` (ms): expired running runs are `timeout`. */
export function playbookStatus(status: RunStatus, deadlineAt: number, now: number): PlaybookStatus {
  if (status === 'queued' || status === 'running') return deadlineAt <= now ? 'timeout' : 'running';
  return status;
}

/** The original's time format: RFC 3339 in UTC. */
export function timeText(ms: number): string {
  return new Date(ms).toISOString();
}

/** A run as the original shows it, its status read at `now`; null when it is not a playbook run. */
export function runView(run: RunSummary, now: number): PlaybookRunView | null {
  const r = playbookResult(run);
  if (r === null) return null;
  const config: PlaybookRunView['recipient_config'] = {};
  if (r.satId !== null) config.sat_id = r.satId;
  if (r.satOrgId !== null) config.sat_org_id = r.satOrgId;
  return {
    id: run.id,
    org_id: run.orgId,
    recipient: r.recipient,
    correlation_id: r.correlationId,
    url: r.url,
    labels: run.labels,
    timeout: r.timeout,
    status: playbookStatus(run.status, run.deadlineAt, now),
    service: run.service,
    name: r.name,
    web_console_url: r.webConsoleUrl,
    principal: r.principal,
    recipient_config: config,
    response_full: r.responseFull,
    created_at: timeText(run.createdAt),
    updated_at: timeText(run.updatedAt),
  };
}

/** A host as the original shows it: its stored status (no read-time timeout, as the original). */
export function hostView(host: Host): PlaybookHostView {
  const d = host.details as HostDetails;
  return {
    id: host.id,
    run_id: host.runId,
    host: host.name,
    status: host.status === 'queued' ? 'running' : host.status,
    stdout: host.log,
    inventory_id: typeof d.inventoryId === 'string' ? d.inventoryId : null,
    subscription_manager_id: typeof d.subscriptionManagerId === 'string' ? d.subscriptionManagerId : null,
    created_at: timeText(host.createdAt),
    updated_at: timeText(host.updatedAt),
  };
}
