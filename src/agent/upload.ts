/**
 * Uploading a run's job events to its `return_url`, as a host's worker does: `POST`, `multipart/form-data`
 * with one file field `file` of type `application/vnd.redhat.playbook.v1+gzip`, the events as gzip-compressed
 * JSON Lines. Every upload of a run holds all its events so far, `executor_on_start` first: the dispatcher
 * ties an upload to its run by that event's correlation id, and takes the run's output from the whole file.
 *
 * A failed upload is tried again with backoff: a network error, a timeout, 408, 429 and 5xx answers; any
 * other 4xx answer will not change by trying again.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { fetch, FormData } from 'undici';
import { backoffDelay } from './backoff.js';
import type { JobEvent } from './events.js';
import type { AgentLog } from './log.js';
import { SILENT } from './log.js';

export const PLAYBOOK_UPLOAD_TYPE = 'application/vnd.redhat.playbook.v1+gzip';

/** The events as gzip-compressed JSON Lines: one event per line, each line ended by `\n`. */
export function encodeEvents(events: readonly JobEvent[]): Buffer {
  return gzipSync(Buffer.from(events.map((e) => `${JSON.stringify(e)}\n`).join(''), 'utf8'));
}

export class UploadError extends Error {
  constructor(
    message: string,
    /** The HTTP status, when there was an answer. */
    readonly status: number | undefined,
    /** Whether trying again may help. */
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

export interface UploadOptions {
  /** The `Authorization` header to send, if any. */
  authorization?: string;
  /** Per request (ms). Default 30 000. */
  timeoutMs?: number;
  /** The file's name in the form. Default `runner-events.jsonl.gz`. */
  filename?: string;
  signal?: AbortSignal;
}

export interface UploadResult {
  status: number;
  /** The compressed size sent. */
  bytes: number;
  /** The answer's body (its first KiB). */
  body: string;
}

/** One upload; a non-2xx answer or a failed request is an UploadError. */
export async function uploadEvents(url: string, events: readonly JobEvent[], options: UploadOptions = {}): Promise<UploadResult> {
  const bytes = encodeEvents(events);
  const form = new FormData();
  form.append('file', new Blob([bytes], { type: PLAYBOOK_UPLOAD_TYPE }), options.filename ?? 'runner-events.jsonl.gz');
  const headers: Record<string, string> = { 'user-agent': 'dispatcher-agent' };
  if (options.authorization !== undefined) headers.authorization = options.authorization;
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 30_000);
  const signal = options.signal === undefined ? timeout : AbortSignal.any([timeout, options.signal]);
  let response;
  try {
    response = await fetch(url, { method: 'POST', body: form, headers, signal });
  } catch (err) {
    const cause = (err as Error & { cause?: Error }).cause?.message ?? (err as Error).message;
    throw new UploadError(`POST ${url}: ${timeout.aborted ? `no answer within ${options.timeoutMs ?? 30_000} ms` : cause}`, undefined, true);
  }
  const body = (await response.text().catch(() => '')).slice(0, 1024);
  if (!response.ok) {
    const retryable = response.status >= 500 || response.status === 408 || response.status === 429;
    throw new UploadError(`POST ${url}: HTTP ${response.status} ${body.slice(0, 300)}`.trim(), response.status, retryable);
  }
  return { status: response.status, bytes: bytes.length, body };
}

export interface RetryOptions extends UploadOptions {
  /** Tries in all. Default 5. */
  attempts?: number;
  /** Backoff between tries (ms): the first at most `baseMs`, doubling to `maxMs`. Defaults 1000 and 30 000. */
  baseMs?: number;
  maxMs?: number;
  log?: AgentLog;
  /** Fields added to every log line (the directive, the correlation id). */
  context?: object;
}

/** An upload tried until it succeeds, `attempts` times at most, or an answer says trying again is useless. Resolves whether it succeeded. */
export async function uploadWithRetry(url: string, events: readonly JobEvent[], options: RetryOptions = {}): Promise<boolean> {
  const log = options.log ?? SILENT;
  const attempts = Math.max(1, options.attempts ?? 5);
  const backoff = { baseMs: options.baseMs ?? 1000, maxMs: options.maxMs ?? 30_000 };
  for (let attempt = 1; ; attempt++) {
    try {
      const result = await uploadEvents(url, events, options);
      log.info({ ...options.context, url, events: events.length, bytes: result.bytes, status: result.status }, 'upload sent');
      return true;
    } catch (err) {
      const e = err instanceof UploadError ? err : new UploadError((err as Error).message, undefined, true);
      const last = attempt >= attempts || !e.retryable || options.signal?.aborted === true;
      log.error({ ...options.context, url, events: events.length, status: e.status, attempt, err: e.message }, last ? 'upload failed; giving up for now' : 'upload failed; trying again');
      if (last) return false;
      await sleep(Math.max(backoff.baseMs / 4, backoffDelay(attempt - 1, backoff)), undefined, { signal: options.signal }).catch(() => undefined);
    }
  }
}
