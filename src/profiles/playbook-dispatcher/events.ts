/**
 * The original's event interface (its Debezium connector and the two SMTs of `event-streams/`): run events
 * on `platform.playbook-dispatcher.runs` and run-host events on `platform.playbook-dispatcher.run-hosts`,
 * shaped as `run.event.yaml` and `run.host.event.yaml` say.
 *
 * - a run event: key = the run's id; headers `event_type`, `service`, `status`, `org_id` (and no others);
 *   value `{"event_type": …, "payload": {id, org_id, recipient, correlation_id, service, url, labels, name?,
 *   web_console_url?, recipient_config, status, timeout, created_at, updated_at}}`;
 * - a run-host event: key = the host's own id (the SMT's, not the run id the original's README says);
 *   headers `event_type`, `status`; value `{"event_type": …, "payload": {id, run_id, inventory_id?, host,
 *   stdout, status, created_at, updated_at}}`.
 *
 * As the original's generated types (`@JsonInclude(NON_NULL)`), a null field is left out, never written as
 * `null` (the schemas type `name`, `web_console_url` and `inventory_id` as strings); `recipient_config` is
 * always there, `{}` for a run that is not Satellite's. Fields are written in the original's order. Times
 * are RFC 3339 in UTC (`timeText`); Debezium writes microseconds, the store keeps milliseconds.
 *
 * The status is the stored one, never the read-time `timeout` of the API: the original's events are row
 * changes, so an expired run shows no event until its cleaner writes `timeout` (here: the sweeper's event).
 *
 * No content type is set: the original's messages carry exactly the headers above, and a transport would
 * add the content type as one more header (Kafka's `content-type`).
 */

import type { Presenter } from '../../core/profile.js';
import type { Presented } from '../../core/outbox.js';
import type { HostEvent, RunEvent, RunEventType } from '../../core/types.js';
import { hostView, playbookResult, runView, timeText, type PlaybookHostView, type PlaybookRunView, type PlaybookStatus } from './model.js';

/** The payload of a run event, in the original's field order; null fields left out. */
export interface RunEventPayload {
  id: string;
  org_id: string;
  recipient: string;
  correlation_id: string;
  service: string;
  url: string;
  labels: Record<string, string>;
  name?: string;
  web_console_url?: string;
  recipient_config: { sat_id?: string; sat_org_id?: string };
  status: PlaybookStatus;
  timeout: number;
  created_at: string;
  updated_at: string;
}

/** The payload of a run-host event, in the original's field order; a null inventory id left out. */
export interface RunHostEventPayload {
  id: string;
  run_id: string;
  inventory_id?: string;
  host: string;
  stdout: string;
  status: PlaybookStatus;
  created_at: string;
  updated_at: string;
}

/**
 * The original's event type of a run event. The names are the same, not always the moments:
 *
 * - the original inserts a run's row (`create`, status `running`) only once Cloud Connector took the
 *   directive. Here a run is created before (queued, or claimed by accept-first) without the action's result,
 *   and the result comes with the `update` that leaves it waiting, still `running`: that update is the
 *   original's `create`. Run events are written when a run's state changes, and a waiting run changes only
 *   to end, so a `running` run event that can be shown is this one;
 * - `update` (the end: success, failure, timeout, canceled), `read` (a republished snapshot, as Debezium's)
 *   and `delete` keep their names.
 */
export function runEventType(e: Pick<RunEvent, 'eventType'>, status: PlaybookStatus): RunEventType {
  return e.eventType === 'update' && status === 'running' ? 'create' : e.eventType;
}

function runPayload(v: PlaybookRunView): RunEventPayload {
  return {
    id: v.id,
    org_id: v.org_id,
    recipient: v.recipient,
    correlation_id: v.correlation_id,
    service: v.service,
    url: v.url,
    labels: v.labels,
    ...(v.name !== null ? { name: v.name } : {}),
    ...(v.web_console_url !== null ? { web_console_url: v.web_console_url } : {}),
    recipient_config: v.recipient_config,
    status: v.status,
    timeout: v.timeout,
    created_at: v.created_at,
    updated_at: v.updated_at,
  };
}

function hostPayload(v: PlaybookHostView): RunHostEventPayload {
  return {
    id: v.id,
    run_id: v.run_id,
    ...(v.inventory_id !== null ? { inventory_id: v.inventory_id } : {}),
    host: v.host,
    stdout: v.stdout,
    status: v.status,
    created_at: v.created_at,
    updated_at: v.updated_at,
  };
}

function envelope(eventType: RunEventType, payload: unknown): Buffer {
  return Buffer.from(JSON.stringify({ event_type: eventType, payload }));
}

/** A time for the fallback below, which must not throw on a malformed one. */
function safeTime(ms: unknown): string | undefined {
  return typeof ms === 'number' && Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? timeText(ms) : undefined;
}

/**
 * A run event the original has no event for: a run that is not (yet) a playbook run as the original knows
 * one, i.e. without the action's result (its `create` when it was planned or claimed, its claim, an
 * attempt refused before the connector took the directive), or `queued`. The original never wrote a row
 * for such a run, and a presenter cannot leave an event out (the stream's filter can; a stream filtered to
 * the profile's runs still carries these, the first events of each of its runs).
 *
 * So it is published as what is known, and no more: the run's id, tenant, service, labels, its own status
 * (`queued` included) and times, with the original's key and headers. It lacks what the schema requires
 * (`recipient`, `correlation_id`, `url`, `timeout`), so a consumer that checks the schema drops it rather
 * than take a run nobody sent; no recipient or correlation id is made up. On the original's compacted topic
 * the run's own `create` (same key) supersedes it. Never throws, even on a malformed payload.
 */
function unshownRunEvent(e: RunEvent): Presented {
  const run = (e.payload ?? {}) as Partial<RunEvent['payload']>;
  const payload: Record<string, unknown> = {
    id: e.runId,
    org_id: e.orgId,
    service: e.service,
    labels: run.labels !== null && typeof run.labels === 'object' ? run.labels : {},
    status: typeof run.status === 'string' ? run.status : e.status,
    created_at: safeTime(run.createdAt),
    updated_at: safeTime(run.updatedAt) ?? safeTime(e.at),
  };
  return {
    key: e.runId,
    headers: { event_type: e.eventType, service: e.service, status: String(payload.status), org_id: e.orgId },
    body: envelope(e.eventType, payload),
  };
}

/**
 * Whether the original had an event for this one: a playbook run the connector took (it has the action's
 * result) and not `queued`. The others (a run's `create` before its directive was taken) are left out.
 */
export function showsRun(e: RunEvent): boolean {
  return e.payload !== null && typeof e.payload === 'object' && e.payload.status !== 'queued' && playbookResult(e.payload) !== null;
}

/** A run event as the original's `platform.playbook-dispatcher.runs` carries it. */
export function presentRunEvent(e: RunEvent): Presented {
  let payload: RunEventPayload;
  try {
    const run = e.payload;
    if (run.status === 'queued') return unshownRunEvent(e);
    // Read at the run's own time: the status below is the stored one in any case.
    const view = runView(run, run.updatedAt);
    if (view === null) return unshownRunEvent(e);
    payload = runPayload({ ...view, status: run.status });
  } catch {
    return unshownRunEvent(e);
  }
  const eventType = runEventType(e, payload.status);
  return {
    key: payload.id,
    headers: { event_type: eventType, service: payload.service, status: payload.status, org_id: payload.org_id },
    body: envelope(eventType, payload),
  };
}

/**
 * A host event as the original's `platform.playbook-dispatcher.run-hosts` carries it. A host's event types
 * are the original's (`create` when the host is added, `update` when its status or output changes); its
 * status is the stored one, `queued` shown as `running` as the original's hosts start (`hostView`).
 */
export function presentHostEvent(e: HostEvent): Presented {
  const payload = hostPayload(hostView(e.payload));
  return {
    key: payload.id,
    headers: { event_type: e.eventType, status: payload.status },
    body: envelope(e.eventType, payload),
  };
}

/** The profile's presenters: an output's stream names them `playbook-dispatcher.run` and `playbook-dispatcher.run-host`. */
export const PRESENTERS: Record<string, Presenter> = {
  run: {
    stream: 'runEvents',
    description:
      "Run events as Playbook Dispatcher's event interface publishes them (platform.playbook-dispatcher.runs): key the run id, headers event_type, service, status and org_id, value per run.event.yaml.",
    present: presentRunEvent,
    accepts: showsRun,
  },
  'run-host': {
    stream: 'hostEvents',
    description:
      "Run-host events as Playbook Dispatcher's event interface publishes them (platform.playbook-dispatcher.run-hosts): key the host id, headers event_type and status, value per run.host.event.yaml.",
    present: presentHostEvent,
  },
};
