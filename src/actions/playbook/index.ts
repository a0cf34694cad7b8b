/**
 * `playbook`: an Ansible playbook sent to a recipient as a directive, its run then waiting for the recipient's
 * uploads (../shared/DESIGN.md: waiting runs, recipients, hosts).
 *
 * One attempt: render the parameters, wait for the token bucket (`actions.playbook.rps`, `bucket`), hand the
 * directive to the connector (the recipients connected to this dispatcher, or a Cloud Connector), and, once
 * the connector took it, return `waiting` with a new correlation id, the run's deadline at its creation plus
 * `timeout` seconds, what was sent to whom as the run's result (`PlaybookResult`) and the hosts it was sent
 * for. A recipient that is not connected is `recipient_not_found` (retryable: it may connect later); with
 * the accept-first receive (`services.receiveAccepted`) the run is then never stored, as in the original.
 *
 * Two directives, as the original sends them:
 * - `rhc-worker-playbook` (a host's rhc worker, or `dispatcher agent`): metadata `return_url`,
 *   `response_interval`, `crc_dispatcher_correlation_id`;
 * - `foreman_rh_cloud` (a Satellite, when `satellite` is given): `operation: run`, `correlation_id`,
 *   `playbook_run_name`, `playbook_run_url`, `sat_id`, `sat_org_id`, `initiator_user_id` (the SHA-256 of the
 *   principal), `hosts` and `subscription_manager_ids` (comma-joined), `response_full`.
 */

import { createHash, randomUUID } from 'node:crypto';
import { validate as isUuid } from 'uuid';
import type { Action, ActionContext, ActionOutcome, ActionSettings, ActionType, OutcomeHost } from '../../core/action.js';
import type { RecipientMessage } from '../../core/connector.js';
import { DispatcherError } from '../../core/errors.js';
import { decodeOptions, defaultsOf, type SchemaNode } from '../../core/options.js';
import type { Template } from '../../core/template.js';
import { PLAYBOOK_ACTION_SECTION, type PlaybookActionSettings } from './settings.js';

/** The directives the action sends: to rhc-worker-playbook on a host, or to Satellite's foreman_rh_cloud. */
export const RUNNER_DIRECTIVE = 'rhc-worker-playbook';
export const SATELLITE_DIRECTIVE = 'foreman_rh_cloud';

/** The nil UUID: every correlation id in demo mode. */
export const NIL_UUID = '00000000-0000-0000-0000-000000000000';

/** The path recipients upload results to, on the dispatcher's public URL, unless `returnUrl` says otherwise. */
export const UPLOAD_PATH = '/api/ingress/v1/upload';

/** The action's result while its run waits, and after: what was sent to whom. */
export interface PlaybookResult {
  recipient: string;
  correlationId: string;
  directive: typeof RUNNER_DIRECTIVE | typeof SATELLITE_DIRECTIVE;
  /** The playbook's URL (the directive's payload). */
  url: string;
  name: string | null;
  webConsoleUrl: string | null;
  /** Who asked for the run (the original's `principal`; its SHA-256 goes to Satellite). */
  principal: string | null;
  /** Seconds the run may take from its creation. */
  timeout: number;
  satId: string | null;
  satOrgId: string | null;
  /** Satellite sends the whole console with each update (true) or only what is new (false). */
  responseFull: boolean;
  /** The connector's id for the message it sent. */
  messageId: string | null;
}

/** A target of the playbook, as dispatch items give them. */
export interface PlaybookHost {
  ansible_host?: string;
  inventory_id?: string;
  subscription_manager_id?: string;
}

const TEMPLATE_STRING = { type: 'string', minLength: 1 };

const paramsSchema = {
  type: 'object',
  required: ['recipient', 'url'],
  additionalProperties: false,
  properties: {
    recipient: { ...TEMPLATE_STRING, description: 'The recipient’s id (a UUID; template).' },
    url: { ...TEMPLATE_STRING, description: 'The playbook’s URL, http or https (template): the directive’s payload.' },
    name: { type: 'string', description: 'The playbook’s name (template).' },
    webConsoleUrl: { type: 'string', description: 'Where a person follows the run (template).' },
    principal: { type: 'string', description: 'Who asked for the run (template); Satellite gets its SHA-256.' },
    timeout: {
      type: ['integer', 'string'],
      description: 'Seconds the run may take from its creation, 0–604800 (a number or a template); default `actions.playbook.defaultTimeout`.',
    },
    hosts: {
      type: ['array', 'string'],
      description: 'The targets: `[{ansible_host, inventory_id, subscription_manager_id}]`, or a template whose value is that list. Each becomes a host of the run.',
      items: {
        type: 'object',
        additionalProperties: false,
        properties: { ansible_host: { type: 'string' }, inventory_id: { type: 'string' }, subscription_manager_id: { type: 'string' } },
      },
    },
    satellite: {
      type: ['object', 'string'],
      description: 'Send to a Satellite (`foreman_rh_cloud`): `{satId, satOrgId}` (templates), or a template whose value is `{sat_id, sat_org_id}` (absent values: not a Satellite run).',
      additionalProperties: false,
      properties: { satId: { type: 'string' }, satOrgId: { type: 'string' } },
    },
  },
};

const DEFAULT_SETTINGS = decodeOptions(PLAYBOOK_ACTION_SECTION as SchemaNode, defaultsOf(PLAYBOOK_ACTION_SECTION)) as PlaybookActionSettings;

/** What one attempt renders from its event. */
interface Rendered {
  recipient: string;
  url: string;
  name: string | null;
  webConsoleUrl: string | null;
  principal: string | null;
  timeout: number;
  hosts: PlaybookHost[];
  satId: string | null;
  satOrgId: string | null;
}

export const playbookAction: ActionType = {
  type: 'playbook',
  paramsSchema,
  create(params, settings): Action {
    return new PlaybookAction(params, settings);
  },
};

class PlaybookAction implements Action {
  readonly #templates: Record<string, Template | undefined>;
  readonly #settings: PlaybookActionSettings;

  constructor(params: Record<string, unknown>, settings: ActionSettings) {
    this.#settings = { ...DEFAULT_SETTINGS, ...(settings.settings as Partial<PlaybookActionSettings>) };
    const at = (key: string) => (params[key] === undefined ? undefined : settings.compile(params[key], { at: [key] }));
    this.#templates = {
      recipient: at('recipient'),
      url: at('url'),
      name: at('name'),
      webConsoleUrl: at('webConsoleUrl'),
      principal: at('principal'),
      timeout: at('timeout'),
      hosts: at('hosts'),
      satellite: at('satellite'),
    };
  }

  async execute(ctx: ActionContext): Promise<ActionOutcome> {
    const r = this.#render(ctx);
    const connector = ctx.services.connector;
    if (connector === undefined) throw new DispatcherError('internal', 'the playbook action needs a connector to reach recipients');
    const correlationId = this.#settings.demoMode ? NIL_UUID : randomUUID();
    const satellite = r.satId !== null;
    const responseFull = satellite ? this.#settings.satelliteResponseFull : true;
    const message: RecipientMessage = {
      directive: satellite ? SATELLITE_DIRECTIVE : RUNNER_DIRECTIVE,
      metadata: satellite ? this.#satelliteMetadata(ctx, r, correlationId, responseFull) : this.#runnerMetadata(ctx, correlationId),
      payload: r.url,
    };
    const sent = await connector.send(r.recipient, message, { orgId: ctx.run.orgId, requestId: ctx.runId, signal: ctx.signal });
    const result: PlaybookResult = {
      recipient: r.recipient,
      correlationId,
      directive: message.directive as PlaybookResult['directive'],
      url: r.url,
      name: r.name,
      webConsoleUrl: r.webConsoleUrl,
      principal: r.principal,
      timeout: r.timeout,
      satId: r.satId,
      satOrgId: r.satOrgId,
      responseFull,
      messageId: sent.id,
    };
    return {
      status: 'waiting',
      correlationId,
      deadlineAt: ctx.run.createdAt + r.timeout * 1000,
      response: `${message.directive} directive ${sent.id} taken for recipient ${r.recipient}`,
      result,
      hosts: r.hosts.map(hostOf),
    };
  }

  #returnUrl(ctx: ActionContext): string {
    if (this.#settings.returnUrl !== undefined) return this.#settings.returnUrl;
    const base = ctx.services.publicUrl?.();
    if (base === undefined) throw new DispatcherError('internal', 'the playbook action has no return URL: set actions.playbook.returnUrl or server.publicUrl');
    return `${base}${UPLOAD_PATH}`;
  }

  #runnerMetadata(ctx: ActionContext, correlationId: string): Record<string, string> {
    return {
      return_url: this.#returnUrl(ctx),
      response_interval: String(this.#settings.responseInterval),
      crc_dispatcher_correlation_id: correlationId,
    };
  }

  #satelliteMetadata(ctx: ActionContext, r: Rendered, correlationId: string, responseFull: boolean): Record<string, string> {
    const metadata: Record<string, string> = {
      return_url: this.#returnUrl(ctx),
      response_interval: String(this.#settings.responseInterval),
      operation: 'run',
      correlation_id: correlationId,
      playbook_run_name: r.name ?? '',
      playbook_run_url: r.webConsoleUrl ?? '',
      sat_id: r.satId ?? '',
      sat_org_id: r.satOrgId ?? '',
      initiator_user_id: principalHash(r.principal ?? ''),
      hosts: r.hosts.map((h) => h.inventory_id ?? '').join(','),
      response_full: String(responseFull),
    };
    const subman = r.hosts.map((h) => h.subscription_manager_id).filter((id): id is string => id !== undefined && id !== '');
    if (subman.length > 0) metadata.subscription_manager_ids = subman.join(',');
    return metadata;
  }

  /** The parameters for this event, checked: what cannot be sent is `action_failed` (no retry mends it). */
  #render(ctx: ActionContext): Rendered {
    const t = this.#templates;
    const text = (key: string): string | null => {
      const template = t[key];
      if (template === undefined) return null;
      const value = ctx.render(template);
      return value === undefined || value === null || value === '' ? null : String(value);
    };
    const recipient = text('recipient');
    if (recipient === null || !isUuid(recipient)) throw invalid(`recipient must be a UUID (got ${JSON.stringify(recipient)})`);
    const url = text('url');
    if (url === null || !/^https?:\/\//i.test(url)) throw invalid(`url must be an http or https URL (got ${JSON.stringify(url)})`);
    const timeoutText = text('timeout');
    const timeout = timeoutText === null ? this.#settings.defaultTimeout : Number(timeoutText);
    if (!Number.isInteger(timeout) || timeout < 0 || timeout > 604800) throw invalid(`timeout must be a whole number of seconds from 0 to 604800 (got ${timeoutText})`);
    const hosts = this.#hosts(ctx);
    const { satId, satOrgId } = this.#satellite(ctx);
    if ((satId === null) !== (satOrgId === null)) throw invalid('a Satellite run needs both its satId and its satOrgId');
    if (satId !== null) {
      if (hosts.length === 0) throw invalid('a Satellite run needs hosts');
      if (hosts.some((h) => h.inventory_id === undefined || h.inventory_id === '')) throw invalid('every host of a Satellite run needs its inventory_id');
    }
    return { recipient, url, name: text('name'), webConsoleUrl: text('webConsoleUrl'), principal: text('principal'), timeout, hosts, satId, satOrgId };
  }

  #hosts(ctx: ActionContext): PlaybookHost[] {
    const template = this.#templates.hosts;
    if (template === undefined) return [];
    const value = ctx.render(template);
    if (value === undefined || value === null || value === '') return [];
    if (!Array.isArray(value)) throw invalid('hosts must be a list of {ansible_host, inventory_id, subscription_manager_id}');
    return value.map((h, i) => {
      if (h === null || typeof h !== 'object' || Array.isArray(h)) throw invalid(`hosts[${i}] must be an object`);
      const host: PlaybookHost = {};
      for (const key of ['ansible_host', 'inventory_id', 'subscription_manager_id'] as const) {
        const v = (h as Record<string, unknown>)[key];
        if (v === undefined || v === null) continue;
        if (typeof v !== 'string' || v === '') throw invalid(`hosts[${i}].${key} must be a non-empty string`);
        host[key] = v;
      }
      if (host.ansible_host === undefined && host.inventory_id === undefined) throw invalid(`hosts[${i}] needs an ansible_host or an inventory_id`);
      return host;
    });
  }

  #satellite(ctx: ActionContext): { satId: string | null; satOrgId: string | null } {
    const template = this.#templates.satellite;
    if (template === undefined) return { satId: null, satOrgId: null };
    const rendered = ctx.render(template);
    if (rendered === undefined || rendered === null || rendered === '') return { satId: null, satOrgId: null };
    if (typeof rendered !== 'object' || Array.isArray(rendered)) throw invalid('satellite must be an object');
    const value = rendered as Record<string, unknown>;
    const pick = (...keys: string[]) => {
      for (const k of keys) {
        const v = value[k];
        if (v !== undefined && v !== null && v !== '') return String(v);
      }
      return null;
    };
    return { satId: pick('satId', 'sat_id'), satOrgId: pick('satOrgId', 'sat_org_id') };
  }
}

/** A target as a host of the run: named by its Ansible host name, else its inventory id. */
function hostOf(h: PlaybookHost): OutcomeHost {
  const details: Record<string, unknown> = {};
  if (h.inventory_id !== undefined) details.inventoryId = h.inventory_id;
  if (h.subscription_manager_id !== undefined) details.subscriptionManagerId = h.subscription_manager_id;
  return { name: h.ansible_host ?? h.inventory_id!, status: 'running', details };
}

/** What Satellite is told of who asked: the lower-case hex SHA-256 of the principal, as the original sends it. */
export function principalHash(principal: string): string {
  return createHash('sha256').update(principal).digest('hex');
}

function invalid(message: string): DispatcherError {
  return new DispatcherError('action_failed', `playbook: ${message}`);
}
