/**
 * `dispatcher clients …`, `dispatcher token`, `dispatcher audit …`.
 *
 * Clients and `audit verify` work on the store directly (the configuration names it), as an operator's
 * tools: the first client can be made before anyone holds a credential, and verification reads the whole
 * chain. `token` and `audit list` speak the HTTP API. Every change made here is in the audit log too, with
 * the operating-system user as its actor (`cli:<user>`).
 */

import { userInfo } from 'node:os';
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { type AuditEntry, verifyAuditChain } from '../core/audit.js';
import { Authenticator } from '../core/authenticator.js';
import { isDispatcherError } from '../core/errors.js';
import type { PermissionSpec } from '../core/principal.js';
import type { DispatcherConfig } from '../config/schema.js';
import { openStore } from '../store/index.js';
import type { Store } from '../store/types.js';
import type { ClientRecord } from '../store/access.js';
import { clientResource } from '../api/resources.js';
import { call, connect, type ConnectionOptions } from './connection.js';
import { CliError, count, integerOption, printJson, printTable, timeOption } from './output.js';
import { configFromFlags } from './serve.js';

interface StoreOptions {
  config?: string;
  store?: string;
  json?: boolean;
}

async function withStore<T>(options: StoreOptions, fn: (store: Store, config: DispatcherConfig) => Promise<T>): Promise<T> {
  const config = await configFromFlags(options);
  const store = await openStore({ url: config.store.url, poolSize: 2 });
  try {
    await store.migrate();
    return await fn(store, config);
  } finally {
    await store.close();
  }
}

function actor(): { actor: string; actorKind: 'cli'; service: string } {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no user database entry: keep "unknown"
  }
  return { actor: `cli:${user}`, actorKind: 'cli', service: 'cli' };
}

async function audit(store: Store, action: string, client: ClientRecord, details: Record<string, unknown> | null = null): Promise<void> {
  await store.access.appendAudit([{ at: Date.now(), ...actor(), orgId: client.orgId, action, records: [client.id], outcome: 'ok', details }]);
}

function showClient(c: ClientRecord, secret?: string) {
  return { ...clientResource(c), ...(secret === undefined ? {} : { secret }) };
}

function authenticator(store: Store, config: DispatcherConfig): Authenticator {
  return new Authenticator(config.auth, store.access, pino({ level: 'silent' }));
}

function printSecret(c: ClientRecord, secret: string, json: boolean | undefined): void {
  if (json) return printJson(showClient(c, secret));
  process.stdout.write(`client_id:     ${c.id}\nclient_secret: ${secret}\n`);
  process.stderr.write('The secret is shown this once: keep it now. Exchange both for a token with `dispatcher token` or POST /v1/token.\n');
}

export async function clientsCreateCommand(options: StoreOptions & { name: string; service?: string; org?: string; permission?: string[]; subscription?: string }): Promise<void> {
  if (options.permission === undefined || options.permission.length === 0) {
    throw new CliError('give the client at least one --permission, e.g. dispatcher:events:write', 2);
  }
  const permissions: PermissionSpec[] = options.permission.map((p) => {
    // `dispatcher:runs:read@svc1,svc2` limits the permission to those services' records.
    const at = p.indexOf('@');
    return at < 0 ? p : { permission: p.slice(0, at), service: p.slice(at + 1).split(',').filter(Boolean) };
  });
  await withStore(options, async (store, config) => {
    try {
      const { client, secret } = await authenticator(store, config).createClient({
        name: options.name,
        ...(options.service === undefined ? {} : { service: options.service }),
        orgId: options.org ?? config.auth.defaults.orgId,
        permissions,
        subscription: options.subscription ?? null,
      });
      await audit(store, 'clients.create', client, { name: client.name, service: client.service, permissions: client.permissions });
      printSecret(client, secret, options.json);
    } catch (err) {
      if (isDispatcherError(err) && err.code === 'bad_request') throw new CliError(err.message, 2);
      throw err;
    }
  });
}

export async function clientsListCommand(options: StoreOptions & { org?: string }): Promise<void> {
  await withStore(options, async (store) => {
    const clients = await store.access.listClients(options.org);
    if (options.json) return printJson(clients.map((c) => showClient(c)));
    printTable(
      clients.map((c) => ({ ...showClient(c), permissions: c.permissions.map((p) => (typeof p === 'string' ? p : `${p.permission}@…`)).join(' ') })),
      ['id', 'name', 'service', 'org_id', 'permissions', 'created_at'],
    );
  });
}

export async function clientsRotateCommand(id: string, options: StoreOptions): Promise<void> {
  await withStore(options, async (store, config) => {
    const { client, secret } = await authenticator(store, config)
      .rotateSecret(id)
      .catch((err: unknown) => {
        throw isDispatcherError(err) && err.code === 'not_found' ? new CliError(err.message) : err;
      });
    await audit(store, 'clients.rotate-secret', client);
    printSecret(client, secret, options.json);
  });
}

export async function clientsDeleteCommand(id: string, options: StoreOptions): Promise<void> {
  await withStore(options, async (store, config) => {
    const client = await authenticator(store, config)
      .deleteClient(id)
      .catch((err: unknown) => {
        throw isDispatcherError(err) && err.code === 'not_found' ? new CliError(err.message) : err;
      });
    await audit(store, 'clients.delete', client);
    process.stdout.write(`deleted client ${client.id} (${client.name}); its tokens no longer work\n`);
  });
}

export async function tokenCommand(options: ConnectionOptions & { clientId?: string; json?: boolean }): Promise<void> {
  const clientId = options.clientId ?? process.env.DISPATCHER_CLIENT_ID;
  if (!clientId) throw new CliError('give --client-id (or DISPATCHER_CLIENT_ID)', 2);
  let secret = process.env.DISPATCHER_CLIENT_SECRET;
  if (!secret) {
    if (process.stdin.isTTY) throw new CliError('give the secret in DISPATCHER_CLIENT_SECRET, or on standard input', 2);
    secret = readFileSync(0, 'utf8').trim();
  }
  const answer = await call(await connect(options), '/v1/token', {
    method: 'POST',
    // The client's own credentials, not whatever DISPATCHER_PSK or the admin key would add.
    headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}` },
    body: '{}',
  });
  if (options.json) return printJson(answer);
  process.stdout.write(`${answer.access_token}\n`);
}

export async function auditListCommand(options: ConnectionOptions & {
  actor?: string;
  action?: string;
  record?: string;
  outcome?: string;
  since?: string;
  until?: string;
  limit: string;
  offset: string;
  json?: boolean;
}): Promise<void> {
  const params = new URLSearchParams();
  if (options.actor) params.set('filter[actor]', options.actor);
  if (options.action) params.set('filter[action]', options.action);
  if (options.record) params.set('filter[record]', options.record);
  if (options.outcome) params.set('filter[outcome]', options.outcome);
  const since = timeOption('since', options.since);
  const until = timeOption('until', options.until);
  if (since !== undefined) params.set('filter[at][gte]', since);
  if (until !== undefined) params.set('filter[at][lt]', until);
  params.set('limit', String(integerOption('limit', options.limit, 1)));
  params.set('offset', String(integerOption('offset', options.offset)));
  const body = await call(await connect(options), `/v1/audit?${params}`);
  if (options.json) return printJson(body);
  printTable(
    (body.data as Array<Record<string, unknown>>).map((e) => ({ ...e, records: (e.records as string[]).join(' ') })),
    ['seq', 'at', 'actor', 'action', 'records', 'outcome'],
  );
  process.stdout.write(`${body.meta.count} of ${body.meta.total}\n`);
}

export async function auditVerifyCommand(options: StoreOptions): Promise<void> {
  await withStore(options, async (store) => {
    const pages = async function* (): AsyncIterable<AuditEntry> {
      let after = 0;
      for (;;) {
        const page = await store.access.readAudit(after, 1000);
        yield* page;
        if (page.length < 1000) return;
        after = page[page.length - 1]!.seq;
      }
    };
    const head = await store.access.auditHead();
    const { checked, problems, last } = await verifyAuditChain(pages, head);
    if (options.json) printJson({ checked, intact: problems.length === 0, problems, head: last });
    else if (problems.length === 0) {
      process.stdout.write(`${count(checked, 'entry', 'entries')} checked: the chain is intact${last ? `; last entry ${last.seq}, hash ${last.hash}` : ''}\n`);
    } else {
      for (const p of problems) process.stdout.write(`entry ${p.seq}: ${p.kind}: ${p.message}\n`);
    }
    if (problems.length > 0) throw new CliError(`${count(problems.length, 'problem')} in ${count(checked, 'entry', 'entries')}: the audit log was tampered with`);
  });
}
