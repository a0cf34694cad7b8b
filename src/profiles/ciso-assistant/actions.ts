/**
 * The profile's two action types, both on the core's `rest` action and its client:
 *
 * - `ciso-update` (`update_applied_control`, `update_requirement_assessment`, the configured types): the
 *   core's `rest` action with the API's address and credentials filled in from the section (so that no
 *   token is written in a route), the observation's `selector` and `values`.
 * - `ciso-upload` (`upload_attachment`, notes §5.3): the file from base64 `file_content` or from S3
 *   (`file_s3_bucket`, `file_name`), the evidence found by the selector (or created, named `values.name` or
 *   the file's name), the file uploaded to it, then the applied controls `values.applied_controls` finds
 *   linked to it. The evidence and each control are hosts of the run. A retry does not create a second
 *   evidence: it first looks for the one a failed attempt made, by its name.
 *
 * Failures follow the `rest` action's rules: transport errors, 408/425/429/5xx are retried with backoff
 * (Retry-After honoured), any other 4xx fails at once, and a 401 says the token expired (or logs in again
 * when `api.autoRenew` is on and `api.email`/`api.password` are set).
 */

import type { Action, ActionContext, ActionOutcome, ActionType, OutcomeHost } from '../../core/action.js';
import { DispatcherError } from '../../core/errors.js';
import { idOf, restAction, RestClient, resourcePath, type RestClientOptions, type RestSession } from '../../actions/rest/index.js';
import { canLogIn, type CisoAssistantConfig } from './config.js';
import { S3Files } from './s3.js';

export const UPDATE_ACTION = 'ciso-update';
export const UPLOAD_ACTION = 'ciso-upload';

const EVIDENCES = 'evidences';
const APPLIED_CONTROLS = 'applied-controls';

/** The API's address and credentials, as `rest` takes them. */
function connection(config: CisoAssistantConfig): Record<string, unknown> {
  const { api } = config;
  // The original logs in when it has no token (the `auth` command), and again on a 401 only with auto-renew.
  const login = canLogIn(api) && (api.autoRenew || api.token === undefined) ? { username: api.email, password: api.password } : undefined;
  return {
    url: api.url,
    ...(api.token === undefined ? {} : { token: api.token }),
    ...(login === undefined ? {} : { login }),
    verifyTls: api.verifyCertificate,
    timeout: api.timeout,
  };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

const nonEmpty = (value: unknown): value is Record<string, unknown> => isObject(value) && Object.keys(value).length > 0;

/** With `debug` on (`DEBUG`), a run's logger at debug: its observation and every API call are logged, as the original's debug mode did. */
function traced(config: CisoAssistantConfig, ctx: ActionContext): ActionContext {
  if (!config.debug) return ctx;
  const log = ctx.log.child({}, { level: 'debug' });
  const data = ctx.event.data as { values?: Record<string, unknown> } | null;
  // The observation, without the file it may carry.
  const values = isObject(data?.values) && typeof data.values.file_content === 'string' ? { ...data.values, file_content: `(${data.values.file_content.length} base64 characters)` } : data?.values;
  log.debug({ observation: { ...(isObject(data) ? data : {}), values } }, 'ciso-assistant: observation');
  return { ...ctx, log };
}

/** The evidence an earlier attempt of this run made, or null. */
async function evidenceMadeBefore(ctx: ActionContext): Promise<string | null> {
  const listed = await ctx.services.records?.listHosts({ runId: [ctx.runId], limit: 100, offset: 0 });
  const host = listed?.items.find((h) => h.name.startsWith(`${EVIDENCES}/`) && h.details.made === true);
  return host === undefined ? null : host.name.slice(EVIDENCES.length + 1);
}

/**
 * A file name as the original put it in `Content-Disposition`: Python's `urllib.parse.quote` (UTF-8, `/`
 * and the unreserved characters `A-Z a-z 0-9 _ . - ~` as they are, everything else percent-encoded).
 */
function pythonQuote(text: string): string {
  return encodeURIComponent(text)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%2F/g, '/');
}

export function cisoActionTypes(config: CisoAssistantConfig): ActionType[] {
  const api = connection(config);
  const update: ActionType = {
    type: UPDATE_ACTION,
    paramsSchema: {
      type: 'object',
      required: ['resource'],
      additionalProperties: false,
      properties: { resource: { type: 'string', minLength: 1 }, method: { enum: ['PATCH', 'PUT', 'POST', 'DELETE'], default: 'PATCH' } },
    },
    async create(params, settings) {
      const method = params.method ?? 'PATCH';
      const inner = await restAction.create({ ...api, resource: params.resource, method, selector: '{{ data.selector }}', body: '{{ data.values }}' }, settings);
      // POST without a selector creates an object (the decoder lets such an observation through).
      const creating = method === 'POST' ? await restAction.create({ ...api, resource: params.resource, method, body: '{{ data.values }}' }, settings) : undefined;
      return {
        execute: (ctx) => {
          const data = ctx.event.data as { selector?: unknown } | null;
          return (creating !== undefined && data?.selector === undefined ? creating : inner).execute(traced(config, ctx));
        },
        close: async () => {
          await inner.close?.();
          await creating?.close?.();
        },
      };
    },
  };

  const upload: ActionType = {
    type: UPLOAD_ACTION,
    paramsSchema: { type: 'object', additionalProperties: false, properties: {} },
    create(): Action {
      const session: RestSession = {};
      let s3: S3Files | undefined;
      const files = () => (s3 ??= new S3Files({ url: config.s3.url, accessKey: config.s3.accessKey, secretKey: config.s3.secretKey, region: config.s3.region }));
      const login = api.login as RestClientOptions['login'] | undefined;
      return {
        async execute(run: ActionContext): Promise<ActionOutcome> {
          const ctx = traced(config, run);
          const http = ctx.services.http;
          if (http === undefined) throw new DispatcherError('internal', 'the ciso-upload action needs the HTTP client of the dispatcher');
          const message = ctx.event.data as { selector?: unknown; values?: Record<string, unknown> } | null;
          const values = isObject(message?.values) ? message.values : {};
          const fileName = values.file_name;
          if (typeof fileName !== 'string' || fileName === '') throw new DispatcherError('invalid_event', 'No file_name provided', { retryable: false });
          const client = new RestClient(http, {
            url: config.api.url,
            ...(config.api.token === undefined ? {} : { token: config.api.token }),
            ...(login === undefined ? {} : { login }),
            session,
            verifyTls: config.api.verifyCertificate,
            timeoutMs: config.api.timeout,
            signal: ctx.signal,
            onExchange: (e) => ctx.log.debug(e, 'rest: request'),
          });

          // 1. The file: base64 wins when both are given, as in the original.
          let bytes: Buffer;
          if (typeof values.file_content === 'string') {
            bytes = Buffer.from(values.file_content, 'base64');
          } else if (typeof values.file_s3_bucket === 'string') {
            bytes = await files().get(values.file_s3_bucket, fileName, { maxBytes: config.maxFileBytes, signal: ctx.signal });
          } else {
            throw new DispatcherError('invalid_event', 'No valid file source provided. Provide base64 file content or S3 bucket and key.', { retryable: false });
          }
          if (bytes.length > config.maxFileBytes) {
            throw new DispatcherError('payload_too_large', `the attachment is ${bytes.length} bytes, more than maxFileBytes (${config.maxFileBytes})`, { retryable: false });
          }

          // 2. The evidence: found by the selector (one), or made.
          const name = typeof values.name === 'string' && values.name !== '' ? values.name : fileName;
          let evidence: string;
          if (nonEmpty(message?.selector)) {
            evidence = (await client.find(EVIDENCES, { ...message.selector, target: 'single' }))[0]!;
          } else {
            // A retry takes the evidence its own earlier attempt made before it failed (kept as a host of the
            // run as soon as it was made), instead of making another; never one found by name, which may be
            // somebody else's.
            const earlier = ctx.attempt > 1 ? await evidenceMadeBefore(ctx) : null;
            if (earlier !== null) evidence = earlier;
            else {
              const made = await client.request('POST', resourcePath(EVIDENCES), { form: { name } });
              const id = idOf(made);
              if (id === null) throw new DispatcherError('action_failed', "the new evidence's answer has no id", { retryable: false });
              evidence = id;
              await ctx.services.upsertHosts?.([{ runId: ctx.runId, name: `${EVIDENCES}/${evidence}`, at: Date.now(), status: 'running', details: { file_name: fileName, made: true } }]);
            }
          }
          const hosts: OutcomeHost[] = [];

          // 3. The upload.
          await client.request('POST', `${resourcePath(EVIDENCES, evidence)}upload/`, {
            bytes,
            headers: { 'content-disposition': `attachment; filename=${pythonQuote(fileName)}`, 'content-type': 'application/octet-stream' },
            expect: 'any',
          });
          hosts.push({ name: `${EVIDENCES}/${evidence}`, status: 'success', details: { file_name: fileName, bytes: bytes.length } });

          // 4. The applied controls, each given the evidence beside the ones it has.
          const linked: string[] = [];
          if (nonEmpty(values.applied_controls)) {
            const controls = await client.find(APPLIED_CONTROLS, values.applied_controls);
            for (const control of controls) {
              const current = await client.request('GET', resourcePath(APPLIED_CONTROLS, control));
              const existing = isObject(current) && Array.isArray(current.evidences) ? current.evidences.map((e) => (isObject(e) ? idOf(e) : typeof e === 'string' || typeof e === 'number' ? String(e) : null)).filter((e): e is string => e !== null) : [];
              if (!existing.includes(evidence)) {
                await client.request('PATCH', resourcePath(APPLIED_CONTROLS, control), { json: { evidences: [...existing, evidence] } });
              }
              linked.push(control);
              hosts.push({ name: `${APPLIED_CONTROLS}/${control}`, status: 'success', details: { evidence } });
            }
          }
          return {
            status: 'success',
            response: `uploaded ${fileName} (${bytes.length} bytes) to evidence ${evidence}${linked.length > 0 ? `, linked to ${linked.length} applied control${linked.length === 1 ? '' : 's'}` : ''}`,
            result: { evidence, file_name: fileName, bytes: bytes.length, applied_controls: linked },
            hosts,
          };
        },
        async close() {
          s3?.close();
        },
      };
    },
  };
  return [update, upload];
}
