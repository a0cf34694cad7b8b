/**
 * One accepted `rhc-worker-playbook` directive, from start to end:
 *
 * 1. `executor_on_start` (with the correlation id) is uploaded at once;
 * 2. the playbook is downloaded from the payload URL and checked;
 * 3. ansible-runner runs it; its job events are collected as they appear;
 * 4. every `response_interval` seconds, when new events came, all the events so far are uploaded; at the
 *    end, once more with all of them;
 * 5. when the playbook could not be downloaded, read or started, or ended without finishing (no
 *    `playbook_on_stats`: ansible-runner missing, failing early, or stopped), an `executor_on_failed` with
 *    an error code and details ends the events, so that the dispatcher ends the run as failed.
 *
 * The events are kept until an upload of them succeeds; each upload holds them all, so a failed one is
 * made good by the next.
 */

import type { FailureCode, JobEvent } from './events.js';
import { executorOnFailed, executorOnStart, toUploadEvent } from './events.js';
import type { AgentLog } from './log.js';
import { SILENT } from './log.js';
import { downloadPlaybook, PlaybookError, preparePlaybook } from './playbook.js';
import { runPlaybook } from './runner.js';
import { uploadWithRetry } from './upload.js';

export interface PlaybookDirective {
  /** The directive's id, as the dispatcher sent it. */
  id: string;
  /** Where to upload the events. */
  returnUrl: string;
  /** The run's correlation id. */
  correlationId: string;
  /** Seconds between uploads while it runs. */
  responseIntervalS: number;
  /** The playbook's URL. */
  playbookUrl: string;
}

export interface JobOptions {
  /** The `Authorization` header for a URL: the agent's credential for the dispatcher's origin (and those trusted), else none. */
  authorizationFor(url: string): string | undefined;
  ansibleRunner?: string;
  log?: AgentLog;
  /** Aborting it stops the playbook (the grace time of a shutdown is over); what was collected is still uploaded. */
  signal?: AbortSignal;
  /** Tries per upload. Default 5. */
  uploadAttempts?: number;
  /** Backoff between upload tries (ms). Defaults 1000 and 30 000. */
  uploadBackoffMs?: { baseMs: number; maxMs: number };
  uploadTimeoutMs?: number;
  downloadMaxBytes?: number;
  downloadTimeoutMs?: number;
  /** How often ansible-runner's events are read (ms). */
  pollMs?: number;
  tmpRoot?: string;
}

export interface JobOutcome {
  /** The events, as last uploaded (or left to upload). */
  events: JobEvent[];
  /** The error code of the `executor_on_failed` sent, if one was. */
  failure: FailureCode | null;
  /** Whether the last upload, with every event, succeeded. */
  uploaded: boolean;
  /** ansible-runner's exit code, when it ran. */
  exitCode: number | null;
}

/** Runs the directive's playbook and uploads its events. Never rejects. */
export async function runJob(directive: PlaybookDirective, options: JobOptions): Promise<JobOutcome> {
  const log = options.log ?? SILENT;
  const context = { directive: directive.id, correlation_id: directive.correlationId };
  const events: JobEvent[] = [executorOnStart(directive.correlationId)];
  let uploadedCount = 0;
  let uploading: Promise<boolean> | null = null;

  /** Uploads all the events so far, one upload at a time; unless `final`, only when there are new ones and none is under way. */
  const upload = async (final: boolean): Promise<boolean> => {
    if (!final && (uploading !== null || events.length === uploadedCount)) return true;
    while (uploading !== null) await uploading;
    const snapshot = events.slice();
    uploading = uploadWithRetry(directive.returnUrl, snapshot, {
      authorization: options.authorizationFor(directive.returnUrl),
      attempts: final ? (options.uploadAttempts ?? 5) : Math.min(3, options.uploadAttempts ?? 5),
      baseMs: options.uploadBackoffMs?.baseMs,
      maxMs: options.uploadBackoffMs?.maxMs,
      timeoutMs: options.uploadTimeoutMs,
      log,
      context,
    });
    try {
      const ok = await uploading;
      if (ok) uploadedCount = Math.max(uploadedCount, snapshot.length);
      return ok;
    } finally {
      uploading = null;
    }
  };

  let failure: FailureCode | null = null;
  const fail = (code: FailureCode, details: string) => {
    failure = code;
    events.push(executorOnFailed(directive.correlationId, code, details));
    log.error({ ...context, code, details }, 'the playbook could not be run');
  };
  let exitCode: number | null = null;

  await upload(false);
  let playbook: string | null = null;
  try {
    playbook = preparePlaybook(
      await downloadPlaybook(directive.playbookUrl, {
        authorization: options.authorizationFor(directive.playbookUrl),
        maxBytes: options.downloadMaxBytes,
        timeoutMs: options.downloadTimeoutMs,
        signal: options.signal,
      }),
    );
  } catch (err) {
    const e = err as Error;
    fail(err instanceof PlaybookError && err.step === 'yaml' ? 'ANSIBLE_YAML_VALIDATION_FAILED' : 'DOWNLOAD_ERROR', e.message);
  }

  if (playbook !== null) {
    const interval = setInterval(() => void upload(false), Math.max(1, directive.responseIntervalS) * 1000);
    try {
      const started = Date.now();
      const result = await runPlaybook({
        playbook,
        ident: directive.correlationId,
        ansibleRunner: options.ansibleRunner,
        onEvents: (batch) => {
          for (const raw of batch) events.push(toUploadEvent(raw, directive.correlationId));
        },
        pollMs: options.pollMs,
        signal: options.signal,
        tmpRoot: options.tmpRoot,
        log,
      });
      exitCode = result.exitCode;
      const finished = events.some((e) => e.event === 'playbook_on_stats');
      log.info({ ...context, exitCode: result.exitCode, status: result.status, events: result.events, ms: Date.now() - started }, 'run finished');
      if (result.spawnError !== undefined) {
        fail('UNDEFINED_ERROR', `cannot start ansible-runner (${options.ansibleRunner ?? 'ansible-runner'}): ${result.spawnError.message}`);
      } else if (!finished) {
        const how = result.aborted
          ? 'the agent stopped the playbook before it finished'
          : `ansible-runner ended (${result.signal === null ? `exit code ${result.exitCode}` : `signal ${result.signal}`}) before the playbook finished`;
        const output = result.output.trim();
        fail('UNDEFINED_ERROR', output === '' ? how : `${how}: ${output.slice(-2000)}`);
      }
    } catch (err) {
      fail('UNDEFINED_ERROR', `cannot run the playbook: ${(err as Error).message}`);
    } finally {
      clearInterval(interval);
    }
  }

  const uploaded = await upload(true);
  if (!uploaded) log.error({ ...context, events: events.length }, 'the events of this run could not all be uploaded');
  return { events, failure, uploaded, exitCode };
}
