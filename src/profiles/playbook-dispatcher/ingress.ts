/**
 * The original's upload path, for deployments that keep an ingress service (notes §7.1): the ingress service
 * stores each upload and announces it on `platform.upload.announce`; the validator downloads it, checks it
 * and answers `{...the announcement..., "validation": "success" | "failure"}` on `platform.upload.validation`
 * (key = the account). Instead of forwarding valid uploads to a runner-updates topic, the dispatcher applies
 * them to their runs at once (`applyUpload`), and answers only once that is done.
 *
 * - The decoder `playbook-dispatcher.announce` (a Kafka input on `platform.upload.announce`) makes each
 *   announcement one event `playbook-dispatcher.upload-announced`, its data the announcement as received.
 *   An announcement for another service than `playbook` or `playbook-sat` (the `service` header, else the
 *   value's `service`) decodes to no event at all: taken and acknowledged, kept nowhere, as the original skips
 *   it. Not JSON is `invalid_json`, not an object or one without `url` or `org_id` is `invalid_event`: dead
 *   letters, as on any input.
 * - The action `playbook-upload` (the profile's route `playbook-dispatcher.ingress`, there while
 *   `profiles.playbook-dispatcher.ingress` is set) does what the validator does, one attempt per try:
 *   a blocklisted tenant's upload is dropped (success, no answer); size 0 or over `upload.maxBytes` is
 *   answered `failure` and the run fails (`invalid_upload`); the file is downloaded through the dispatcher's
 *   HTTP client (`actions.http.allow` applies); a transport error, a timeout or a 408/425/429/5xx answer is
 *   retried without answering (after the last attempt the run fails, a dead letter, and nothing is answered,
 *   as the original answers nothing when it cannot fetch); any other answer, a file over the limit or one
 *   `parseUpload` refuses is answered `failure` and fails the run (`invalid_upload`); a valid one is applied,
 *   then answered `success`. A valid upload whose run is not found (after waiting a few seconds for its
 *   dispatch to commit) is still answered `success`, as the original's validator does, and the run fails
 *   with `not_found`, so that a dead letter keeps it.
 */

import { createHash } from 'node:crypto';
import type { Action, ActionContext, ActionOutcome, ActionType } from '../../core/action.js';
import { DispatcherError, toDispatcherError } from '../../core/errors.js';
import { parseJsonBytes } from '../../core/json.js';
import type { DecoderType } from '../../core/profile.js';
import type { PlaybookDispatcherConfig } from './config.js';
import { applyUpload, type Applied } from './ingest.js';
import { parseUpload, type ParsedUpload, type UploadKind, type UploadLimits } from './upload.js';

/** The event an announcement becomes. */
export const ANNOUNCED_TYPE = 'playbook-dispatcher.upload-announced';
/** The action type that validates and applies an announced upload. */
export const INGRESS_ACTION = 'playbook-upload';
/** The CloudEvents extension attribute that carries what the upload holds (`playbook` or `playbook-sat`). */
export const KIND_ATTRIBUTE = 'uploadkind';

const KINDS: ReadonlySet<string> = new Set<UploadKind>(['playbook', 'playbook-sat']);
/** The broker's id of a message (Kafka `topic/partition/offset`): the same when it is delivered again. */
const MESSAGE_ID_HEADER = ':message-id';
/** How long an upload whose run is not found yet is looked for again (its dispatch may still be committing). */
const OVERTAKE_MS = 3000;
/** Download answers that a later attempt may mend. */
const RETRYABLE_STATUS = (status: number) => status === 408 || status === 425 || status === 429 || status >= 500;

/** An announcement of the ingress service (the original's validator input), as far as it is read. */
export interface Announcement {
  account?: string;
  category?: string;
  metadata?: unknown;
  request_id?: string;
  org_id: string;
  service?: string;
  size?: number | string;
  url: string;
  id?: string;
  b64_identity?: string;
  timestamp?: string;
  [key: string]: unknown;
}

function notAnnouncement(pointer: string, message: string): DispatcherError {
  return new DispatcherError('invalid_event', `an upload announcement is an object with a url and an org_id: ${pointer || 'the message'} ${message}`, {
    problems: [{ pointer, message }],
  });
}

export const ANNOUNCE_DECODER: DecoderType = {
  description:
    'An ingress service’s announcement of an upload (`platform.upload.announce`) → a `playbook-dispatcher.upload-announced` event; ' +
    'announcements for other services than `playbook` and `playbook-sat` are skipped (no event).',
  create: (_options, context) => (message) => {
    const body = parseJsonBytes(message.raw) as Record<string, unknown> | null;
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw notAnnouncement('', 'must be an object');
    // The original reads the `service` header; an announcement without one is read by its value's `service`.
    const header = message.headers.service;
    const service = header !== undefined && header !== '' ? header : body.service;
    if (typeof service !== 'string' || !KINDS.has(service)) return { events: [], batch: false };
    if (typeof body.url !== 'string' || body.url === '') throw notAnnouncement('/url', 'must be a non-empty string');
    if (typeof body.org_id !== 'string' || body.org_id === '') throw notAnnouncement('/org_id', 'must be a non-empty string');
    const requestId = typeof body.request_id === 'string' && body.request_id !== '' ? body.request_id : undefined;
    const id = message.headers[MESSAGE_ID_HEADER] ?? requestId ?? createHash('sha256').update(message.raw).digest('hex');
    const event: Record<string, unknown> = {
      specversion: '1.0',
      id,
      source: context.source,
      type: ANNOUNCED_TYPE,
      datacontenttype: 'application/json',
      [KIND_ATTRIBUTE]: service,
      data: body,
    };
    if (requestId !== undefined) event.subject = requestId;
    return { events: [event], batch: false };
  },
};

/** The announcement's `size` as a number; what is not one counts as 0 (the original's missing field). */
function sizeOf(value: unknown): number {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value === 'string' && /^\d+$/.test(value)) return Number(value);
  return 0;
}

function need<T>(service: T | undefined, what: string): T {
  if (service === undefined) throw new DispatcherError('internal', `the ${INGRESS_ACTION} action needs the dispatcher's ${what}`);
  return service;
}

/** The `playbook-upload` action type, given the profile's normalized section. */
export function ingressActionType(config: PlaybookDispatcherConfig): ActionType {
  return {
    type: INGRESS_ACTION,
    paramsSchema: { type: 'object', additionalProperties: false, properties: {} },
    create(_params, settings): Action {
      const ingress = config.ingress;
      if (ingress === undefined) {
        throw new DispatcherError('config_invalid', `${INGRESS_ACTION}: profiles.playbook-dispatcher.ingress is not set (it names the output the validation answers go to)`);
      }
      const outputs = settings.outputs ?? [];
      if (!outputs.includes(ingress.output)) {
        throw new DispatcherError(
          'config_invalid',
          `profiles.playbook-dispatcher.ingress.output: no output "${ingress.output}" is configured (${outputs.length > 0 ? `known: ${outputs.join(', ')}` : 'none is'})`,
        );
      }
      const limits: UploadLimits = { ...config.upload };
      const blocklist = new Set(config.blocklist);
      return {
        async execute(ctx: ActionContext): Promise<ActionOutcome> {
          const announcement = ctx.event.data as Announcement | null;
          if (announcement === null || typeof announcement !== 'object' || typeof announcement.url !== 'string' || typeof announcement.org_id !== 'string') {
            throw new DispatcherError('invalid_event', 'the event is not an upload announcement (an object with a url and an org_id)');
          }
          const services = ctx.services;
          const publishTo = need(services.publishTo, 'outputs');
          const http = need(services.http, 'HTTP client');
          const store = { records: need(services.records, 'records'), resolveRuns: need(services.resolveRuns, 'runs'), upsertHosts: need(services.upsertHosts, 'hosts') };
          const orgId = announcement.org_id;
          const kindAttribute = ctx.event[KIND_ATTRIBUTE];
          const kind = (typeof kindAttribute === 'string' ? kindAttribute : announcement.service) as UploadKind;
          if (!KINDS.has(kind)) throw new DispatcherError('invalid_event', `the announcement is for service ${JSON.stringify(kind)}, not playbook or playbook-sat`);

          // 1. A blocked tenant's upload is dropped, unanswered.
          if (blocklist.has(orgId)) {
            ctx.log.info({ orgId, requestId: announcement.request_id }, 'upload of a blocklisted organization dropped');
            return { status: 'success', response: `dropped: organization ${orgId} is blocklisted`, result: { validation: null, dropped: 'blocklist' } };
          }

          // The validation answer: the announcement as received, and what the validation found.
          const answer = async (validation: 'success' | 'failure') => {
            const headers: Record<string, string> = {};
            if (typeof announcement.request_id === 'string') headers['x-rh-insights-request-id'] = announcement.request_id;
            await publishTo(ingress.output, {
              topic: ingress.validationTopic,
              ...(typeof announcement.account === 'string' ? { key: announcement.account } : {}),
              headers,
              body: JSON.stringify({ ...announcement, validation }),
              contentType: 'application/json',
            });
          };
          const refuse = async (message: string, cause?: unknown): Promise<never> => {
            await answer('failure');
            throw new DispatcherError('invalid_upload', message, { retryable: false, ...(cause === undefined ? {} : { cause }) });
          };

          // 2. Size 0 or over the limit: a failure without a download.
          const size = sizeOf(announcement.size);
          if (size <= 0) return refuse('The upload is empty (size 0)');
          if (size > limits.maxBytes) return refuse(`The upload is larger than ${limits.maxBytes} bytes (size ${size})`);

          // 3. The download: transport failures are retried (unanswered); a file the URL does not give is a failure.
          let bytes: Buffer;
          try {
            const got = await http.request(announcement.url, { method: 'GET', timeoutMs: ingress.downloadTimeout, maxBytes: limits.maxBytes, signal: ctx.signal });
            if (RETRYABLE_STATUS(got.status)) throw new DispatcherError('http_status', `the upload's URL answered ${got.status}`, { retryable: true });
            if (got.status < 200 || got.status >= 300) return await refuse(`The upload could not be downloaded: its URL answered ${got.status}`);
            bytes = got.body;
          } catch (err) {
            const e = toDispatcherError(err);
            // The client's own refusals (not a URL, not http(s), an answer over maxBytes): the announcement's fault.
            if (e.code === 'action_failed') return refuse(`The upload could not be downloaded: ${e.message}`, err);
            throw e;
          }

          // 4-7. Decompressed by its first bytes, checked line by line, its correlation id found, long outputs cut.
          let parsed: ParsedUpload;
          try {
            parsed = parseUpload(kind, bytes, limits);
          } catch (err) {
            return refuse((err as Error).message, err);
          }

          // Applied before it is answered: an answer `success` means the run has it.
          let applied: Applied = await applyUpload(store, orgId, parsed, Date.now());
          for (const until = Date.now() + OVERTAKE_MS; applied.outcome === 'not_found' && Date.now() < until && !ctx.signal.aborted; ) {
            await new Promise((resolve) => setTimeout(resolve, 100));
            applied = await applyUpload(store, orgId, parsed, Date.now());
          }
          await answer('success');
          if (applied.outcome === 'not_found') {
            throw new DispatcherError('not_found', `no run of tenant ${orgId} has the correlation id ${parsed.correlationId}`, { retryable: false });
          }
          return {
            status: 'success',
            response: `validation success; run ${applied.runId} ${applied.status ?? ''} (${applied.outcome})`,
            result: { validation: 'success', correlationId: parsed.correlationId, runId: applied.runId, status: applied.status, outcome: applied.outcome, hosts: applied.hosts },
          };
        },
      };
    },
  };
}
