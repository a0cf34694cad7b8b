/**
 * A result upload applied to its run and hosts, as the original's response consumer applies it (notes §6):
 *
 * - **Runner** (`playbook`): the run's status from the whole upload (finished by `playbook_on_stats` or
 *   `executor_on_failed`, failed by any failure); success and failure are terminal, a run that timed out or
 *   was canceled may still end; progress (`running`) keeps a waiting run waiting. Each host named in the
 *   events (else `localhost`) gets its status and the whole run's output, unless it already ended.
 * - **Satellite** (`playbook-sat`): hosts are only updated (never created), found by inventory id, in
 *   sequence order; an older chunk changes nothing; with `response_full: false` chunks are appended, with the
 *   gap marker where sequences skip, and the run ends only on `playbook_run_completed`. A run that failed or
 *   was canceled stays so.
 *
 * One call per upload: the run first (one transaction with its run event), then its hosts (one transaction
 * with their host events).
 */

import type { Services } from '../../core/services.js';
import type { Run, RunStatus } from '../../core/types.js';
import type { HostUpsert, ResolveOutcome, RunResolution } from '../../store/types.js';
import { playbookResult } from './model.js';
import { GAP_MARKER, runnerOutcome, satelliteOutcome } from './results.js';
import type { ParsedUpload } from './upload.js';

/** Host statuses an upload no longer changes. */
const ENDED: RunStatus[] = ['success', 'failure'];

export interface Applied {
  /** What the upload did to its run (`not_found`: no run of the tenant has its correlation id). */
  outcome: ResolveOutcome;
  runId: string | null;
  /** The run's status after it. */
  status: RunStatus | null;
  hosts: number;
}

export async function applyUpload(services: Pick<Services, 'records' | 'resolveRuns' | 'upsertHosts'>, orgId: string, upload: ParsedUpload, at: number): Promise<Applied> {
  return upload.kind === 'playbook' ? applyRunner(services, orgId, upload, at) : applySatellite(services, orgId, upload, at);
}

async function applyRunner(
  services: Pick<Services, 'records' | 'resolveRuns' | 'upsertHosts'>,
  orgId: string,
  upload: Extract<ParsedUpload, { kind: 'playbook' }>,
  at: number,
): Promise<Applied> {
  const outcome = runnerOutcome(upload.events);
  const found = await findRun(services, orgId, upload.correlationId);
  if (found === null) return { outcome: 'not_found', runId: null, status: null, hosts: 0 };
  const resolved = await resolve(services, found, outcome.status, at, ['timeout', 'canceled']);
  const run = resolved.run;
  const hosts: HostUpsert[] = outcome.hosts.map((h) => ({ runId: run.id, name: h.name, at, status: h.status, log: { replace: h.log }, keep: ENDED }));
  const changed = await services.upsertHosts(hosts);
  return { outcome: resolved.outcome, runId: run.id, status: run.status, hosts: changed.filter((h) => h.outcome === 'created' || h.outcome === 'updated').length };
}

/** Hosts read per page when an upload matches its events to a run's hosts. */
const HOST_PAGE = 1000;

/** The tenant's playbook run with this correlation id (a UUID, in any case), or null. */
async function findRun(services: Pick<Services, 'records'>, orgId: string, correlationId: string): Promise<Run | null> {
  const run = await services.records.getRunByCorrelation(orgId, correlationId.toLowerCase());
  return run?.actionType === 'playbook' ? run : null;
}

/**
 * The run ended by an upload, or left as it is when the upload says it still runs: progress changes no field
 * the original's run events show, so it writes no run event (its hosts' events say what changed).
 */
async function resolve(
  services: Pick<Services, 'resolveRuns'>,
  run: Run,
  status: 'running' | 'success' | 'failure' | 'canceled',
  at: number,
  reopen: RunResolution['reopen'],
): Promise<{ outcome: ResolveOutcome; run: Run }> {
  if (status === 'running') return { outcome: 'unchanged', run };
  const resolution: RunResolution = { runId: run.id, status, at, reopen };
  if (status === 'failure') resolution.error = { code: 'action_failed', message: 'the playbook failed' };
  const [resolved] = await services.resolveRuns([resolution]);
  return { outcome: resolved!.outcome, run: resolved!.run ?? run };
}

async function applySatellite(
  services: Pick<Services, 'records' | 'resolveRuns' | 'upsertHosts'>,
  orgId: string,
  upload: Extract<ParsedUpload, { kind: 'playbook-sat' }>,
  at: number,
): Promise<Applied> {
  const stored = await findRun(services, orgId, upload.correlationId);
  if (stored === null) return { outcome: 'not_found', runId: null, status: null, hosts: 0 };
  const responseFull = playbookResult(stored)?.responseFull ?? true;
  const outcome = satelliteOutcome(upload.events, responseFull);
  const resolved = await resolve(services, stored, outcome.completed || responseFull ? outcome.status : 'running', at, ['timeout']);
  const run = resolved.run;

  // Hosts are the ones dispatched, found by inventory id (a host is named by its Ansible name when it had one),
  // every page of them; ids compared as UUIDs are, whatever their case.
  const byInventory = new Map<string, string>();
  for (let offset = 0; ; offset += HOST_PAGE) {
    const listed = await services.records.listHosts({ runId: [run.id], limit: HOST_PAGE, offset });
    for (const h of listed.items) {
      const inventoryId = h.details.inventoryId;
      byInventory.set((typeof inventoryId === 'string' ? inventoryId : h.name).toLowerCase(), h.name);
    }
    if (listed.items.length < HOST_PAGE) break;
  }
  const hosts: HostUpsert[] = [];
  for (const h of outcome.hosts) {
    const name = byInventory.get(h.inventoryId.toLowerCase());
    if (name === undefined) continue;
    const upsert: HostUpsert = { runId: run.id, name, at, status: h.status, only: 'update' };
    if (h.sequence !== null) {
      upsert.sequence = h.sequence;
      upsert.log = responseFull ? { replace: h.console } : { append: h.console, gapMarker: GAP_MARKER };
    }
    hosts.push(upsert);
  }
  const changed = await services.upsertHosts(hosts);
  return { outcome: resolved.outcome, runId: run.id, status: run.status, hosts: changed.filter((h) => h.outcome === 'created' || h.outcome === 'updated').length };
}
