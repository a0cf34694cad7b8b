/**
 * Getting a directive's playbook: downloaded from its payload URL (bounded in size and time), then checked
 * to be a YAML playbook (a list of plays) and stripped of the `insights_signature` variables a signed
 * playbook carries (binary values ansible-runner cannot take), as the original's worker does. The agent
 * does not verify signatures.
 */

import { fetch } from 'undici';
import { isMap, isSeq, parseDocument } from 'yaml';

export const DEFAULT_PLAYBOOK_MAX_BYTES = 10 * 1024 * 1024;

export class PlaybookError extends Error {
  constructor(
    message: string,
    /** Which step failed. */
    readonly step: 'download' | 'yaml',
  ) {
    super(message);
  }
}

export interface DownloadOptions {
  authorization?: string;
  /** The largest playbook taken (bytes). Default 10 MiB. */
  maxBytes?: number;
  /** The whole download (ms). Default 60 000. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** The playbook at `url`, as text; a PlaybookError (`download`) when it cannot be had. */
export async function downloadPlaybook(url: string, options: DownloadOptions = {}): Promise<string> {
  const maxBytes = options.maxBytes ?? DEFAULT_PLAYBOOK_MAX_BYTES;
  const timeoutMs = options.timeoutMs ?? 60_000;
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = options.signal === undefined ? timeout : AbortSignal.any([timeout, options.signal]);
  const headers: Record<string, string> = { 'user-agent': 'dispatcher-agent', accept: 'application/x-yaml, text/yaml, text/plain, */*' };
  if (options.authorization !== undefined) headers.authorization = options.authorization;
  const failed = (why: string) => new PlaybookError(`cannot download the playbook from ${url}: ${why}`, 'download');
  const why = (err: unknown) => (timeout.aborted ? `no complete answer within ${timeoutMs} ms` : ((err as Error & { cause?: Error }).cause?.message ?? (err as Error).message));
  let response;
  try {
    response = await fetch(url, { headers, signal });
  } catch (err) {
    throw failed(why(err));
  }
  if (!response.ok) {
    await response.body?.cancel().catch(() => undefined);
    throw failed(`HTTP ${response.status}`);
  }
  const length = Number(response.headers.get('content-length') ?? NaN);
  if (length > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw failed(`it is ${length} bytes, more than the ${maxBytes} taken`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of response.body ?? []) {
      size += chunk.length;
      if (size > maxBytes) {
        await response.body?.cancel().catch(() => undefined);
        throw failed(`it is more than the ${maxBytes} bytes taken`);
      }
      chunks.push(Buffer.from(chunk));
    }
  } catch (err) {
    if (err instanceof PlaybookError) throw err;
    throw failed(why(err));
  }
  return Buffer.concat(chunks).toString('utf8');
}

const SIGNATURE_VARS = ['insights_signature', 'insights_signature_exclude'];

/** The playbook as ansible-runner will get it: a PlaybookError (`yaml`) unless it is a YAML list of plays; the signature variables removed. */
export function preparePlaybook(text: string): string {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new PlaybookError(`the playbook is not valid YAML: ${doc.errors[0]!.message}`, 'yaml');
  if (!isSeq(doc.contents)) throw new PlaybookError('the playbook is not a list of plays', 'yaml');
  let changed = false;
  for (const play of doc.contents.items) {
    if (!isMap(play)) throw new PlaybookError('the playbook is not a list of plays: an item is not a mapping', 'yaml');
    const vars = play.get('vars', true);
    if (!isMap(vars)) continue;
    for (const name of SIGNATURE_VARS) if (vars.delete(name)) changed = true;
  }
  return changed ? doc.toString() : text;
}
