/**
 * The bodies of the internal API (dispatch v2 and v1, cancel, recipients' status), checked as the original
 * checks them: the request's schema first (1 to 50 items, the fields' formats), answered with its
 * `request body has an error: doesn't match schema: …` message, then the extra rules on Satellite runs
 * (`Both sat_id and sat_org need to be defined`, `Hosts need to be defined`, …). Pure: no store, no HTTP.
 */

import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { DispatcherError } from '../../core/errors.js';
import { parseJsonBytes } from '../../core/json.js';

/** A v4 UUID in lower-case hex, as the original's validator reads `format: uuid`. */
const UUID = '^[a-f0-9]{8}-[a-f0-9]{4}-4[a-f0-9]{3}-[89aAbB][a-f0-9]{3}-[a-f0-9]{12}$';
/** A Satellite id: a v4 or v5 UUID. */
const SAT_ID = '^[a-f0-9]{8}-[a-f0-9]{4}-[45][a-f0-9]{3}-[89aAbB][a-f0-9]{3}-[a-f0-9]{12}$';
const URL = '^https?:\\/\\/.*$';

const ajv = new Ajv({ allErrors: false, strict: false });
ajv.addFormat('uuid', new RegExp(UUID));
ajv.addFormat('sat-id-uuid', new RegExp(SAT_ID));
ajv.addFormat('url', new RegExp(URL));
// The runs' own ids are UUIDv7 (the original's were v4): a run id may be any version.
ajv.addFormat('run-id', /^[a-f0-9]{8}-[a-f0-9]{4}-[1-8][a-f0-9]{3}-[89aAbB][a-f0-9]{3}-[a-f0-9]{12}$/);

const recipient = { type: 'string', format: 'uuid' };
const orgId = { type: 'string', minLength: 1, maxLength: 10 };
const url = { type: 'string', format: 'url' };
const labels = { type: 'object', additionalProperties: { type: 'string' } };
const timeout = { type: 'integer', minimum: 0, maximum: 604800 };
const hosts = {
  type: 'array',
  items: {
    type: 'object',
    properties: {
      ansible_host: { type: 'string', minLength: 1 },
      inventory_id: { type: 'string', format: 'uuid' },
      subscription_manager_id: { type: 'string', format: 'uuid' },
    },
  },
};
const items = (item: object, max?: number) => ({ type: 'array', items: item, minItems: 1, ...(max === undefined ? {} : { maxItems: max }) });

export const DISPATCH_V2_SCHEMA = items(
  {
    type: 'object',
    properties: {
      recipient,
      org_id: orgId,
      principal: { type: 'string', minLength: 1 },
      url,
      name: { type: 'string', minLength: 1 },
      web_console_url: { type: 'string', minLength: 1, format: 'url' },
      labels,
      timeout,
      hosts,
      recipient_config: {
        type: 'object',
        properties: { sat_id: { type: 'string', format: 'sat-id-uuid' }, sat_org_id: { type: 'string', minLength: 1 } },
      },
    },
    required: ['recipient', 'org_id', 'principal', 'url', 'name'],
  },
  50,
);

export const DISPATCH_V1_SCHEMA = items(
  {
    type: 'object',
    properties: { recipient, account: orgId, url, labels, timeout, hosts },
    required: ['recipient', 'account', 'url'],
  },
  50,
);

export const CANCEL_SCHEMA = items(
  {
    type: 'object',
    properties: { run_id: { type: 'string', format: 'run-id' }, org_id: orgId, principal: { type: 'string', minLength: 1 } },
    required: ['run_id', 'org_id', 'principal'],
  },
  50,
);

export const STATUS_SCHEMA = items({ type: 'object', properties: { recipient, org_id: orgId }, required: ['recipient', 'org_id'] });

export interface DispatchHost {
  ansible_host?: string;
  inventory_id?: string;
  subscription_manager_id?: string;
}

/** A v2 dispatch item, with the original's defaults applied: what the dispatch event carries as its data. */
export interface DispatchItem {
  recipient: string;
  org_id: string;
  principal: string | null;
  url: string;
  name: string | null;
  web_console_url: string;
  labels: Record<string, string>;
  timeout: number | null;
  hosts: DispatchHost[];
  recipient_config: { sat_id?: string; sat_org_id?: string } | null;
}

/** A v2 dispatch item as it passed the schema. */
export interface RawDispatchItem {
  recipient: string;
  org_id: string;
  principal?: string;
  url: string;
  name?: string;
  web_console_url?: string;
  labels?: Record<string, string>;
  timeout?: number;
  hosts?: DispatchHost[];
  recipient_config?: { sat_id?: string; sat_org_id?: string };
}

export interface V1Item {
  recipient: string;
  account: string;
  url: string;
  labels?: Record<string, string>;
  timeout?: number;
  hosts?: DispatchHost[];
}

export interface CancelItem {
  run_id: string;
  org_id: string;
  principal: string;
}

export interface StatusItem {
  recipient: string;
  org_id: string;
}

const validators = new Map<object, ValidateFunction>();

/** The body as JSON, checked against `schema`; a `bad_request` with the original's message otherwise. */
export function checkBody<T>(raw: Buffer, schema: object): T {
  let body: unknown;
  try {
    body = parseJsonBytes(raw);
  } catch (err) {
    throw new DispatcherError('bad_request', `request body has an error: failed to decode request body: ${(err as Error).message}`);
  }
  let validate = validators.get(schema);
  if (validate === undefined) validators.set(schema, (validate = ajv.compile(schema)));
  if (!validate(body)) throw new DispatcherError('bad_request', `request body has an error: doesn't match schema: ${schemaMessage(validate.errors?.[0])}`);
  return body as T;
}

/** One schema error in the words of the original's validator (kin-openapi). */
export function schemaMessage(e: ErrorObject | undefined): string {
  if (e === undefined) return 'invalid value';
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'minItems':
      return `minimum number of items is ${String(p.limit)}`;
    case 'maxItems':
      return `maximum number of items is ${String(p.limit)}`;
    case 'required':
      return `property "${String(p.missingProperty)}" is missing`;
    case 'minLength':
      return `minimum string length is ${String(p.limit)}`;
    case 'maxLength':
      return `maximum string length is ${String(p.limit)}`;
    case 'minimum':
      return `number must be at least ${String(p.limit)}`;
    case 'maximum':
      return `number must be at most ${String(p.limit)}`;
    case 'type':
      return `value must be ${article(String(p.type))}`;
    case 'format':
      return `string doesn't match the format "${String(p.format)}"`;
    default:
      return e.message ?? 'invalid value';
  }
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

/** The extra rules of a Satellite dispatch, as the original words them. */
export function checkSatellite(item: Pick<RawDispatchItem, 'recipient_config' | 'hosts'>): void {
  const config = item.recipient_config ?? {};
  const satId = config.sat_id !== undefined;
  const satOrg = config.sat_org_id !== undefined;
  if (satId !== satOrg) throw new DispatcherError('bad_request', 'Both sat_id and sat_org need to be defined');
  if (!satId) return;
  if (item.hosts === undefined) throw new DispatcherError('bad_request', 'Hosts need to be defined');
  if (item.hosts.length === 0) throw new DispatcherError('bad_request', 'Hosts cannot be empty');
  if (item.hosts.some((h) => h.inventory_id === undefined)) throw new DispatcherError('bad_request', 'Inventory ID needs to be defined');
}

/**
 * A v2 item with its defaults: the web console URL, labels and hosts. A missing timeout stays null: the
 * `playbook` action applies `actions.playbook.defaultTimeout` (the original's `DEFAULT_RUN_TIMEOUT`).
 */
export function withDefaults(item: RawDispatchItem, defaults: { webConsoleUrl: string }): DispatchItem {
  return {
    recipient: item.recipient,
    org_id: item.org_id,
    principal: item.principal ?? null,
    url: item.url,
    name: item.name ?? null,
    web_console_url: item.web_console_url ?? defaults.webConsoleUrl,
    labels: item.labels ?? {},
    timeout: item.timeout ?? null,
    hosts: item.hosts ?? [],
    recipient_config: item.recipient_config === undefined || Object.keys(item.recipient_config).length === 0 ? null : item.recipient_config,
  };
}
