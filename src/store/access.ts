/**
 * The access part of the store: clients (their hashed secrets and permissions), settings the dispatcher
 * generates for itself (the token signing secret), and the audit log. Both stores implement it, and the
 * shared store suite tests it on both.
 */

import type { AuditEntry, AuditHead, AuditSink, NewAuditEntry } from '../core/audit.js';
import type { PermissionSpec } from '../core/principal.js';
import type { Listing, Page, TimeRange } from './paging.js';

export interface ClientRecord {
  id: string;
  name: string;
  /** The service its records are created under (its attribute for `service` filters). */
  service: string;
  orgId: string;
  permissions: PermissionSpec[];
  /** scrypt hash; never leaves the store layer in an API answer. */
  secretHash: string;
  /** Starts at 1; each rotation adds 1, which revokes the tokens issued before it. */
  secretVersion: number;
  createdAt: number;
  updatedAt: number;
  /** Optional Communications Backbone style topic subscription. */
  subscription: string | null;
}

export interface AuditQuery extends Page {
  orgId?: string;
  services?: string[];
  actor?: string;
  action?: string[];
  record?: string;
  outcome?: string;
  at?: TimeRange;
  /** Oldest first (default newest first). */
  ascending?: boolean;
}

export interface AccessStore extends AuditSink {
  createClient(client: ClientRecord): Promise<void>;
  getClient(id: string): Promise<ClientRecord | null>;
  listClients(orgId?: string): Promise<ClientRecord[]>;
  /** New secret hash and version + 1; null when there is no such client. */
  rotateClientSecret(id: string, secretHash: string, now: number): Promise<ClientRecord | null>;
  /** Change what is given of its name and subscription (null: none), and `updatedAt`; null when there is no such client. */
  updateClient(id: string, changes: { name?: string; subscription?: string | null }, now: number): Promise<ClientRecord | null>;
  deleteClient(id: string): Promise<boolean>;

  /** The value stored under `key`; when there is none, `value` is stored and returned (first writer wins). */
  ensureSetting(key: string, value: string): Promise<string>;

  /** Append entries to the chain, in order, in one transaction with the head. */
  appendAudit(entries: NewAuditEntry[]): Promise<AuditEntry[]>;
  listAudit(query: AuditQuery): Promise<Listing<AuditEntry>>;
  /** Entries with `seq > afterSeq`, oldest first: for verification. */
  readAudit(afterSeq: number, limit: number): Promise<AuditEntry[]>;
  /** The last entry written, as the store recorded it beside the log. */
  auditHead(): Promise<AuditHead | null>;
}

export interface ClientRow {
  id: string;
  name: string;
  service: string;
  org_id: string;
  permissions: string;
  secret_hash: string;
  secret_version: number;
  subscription: string | null;
  created_at: number;
  updated_at: number;
}

export function toClient(row: ClientRow): ClientRecord {
  return {
    id: row.id,
    name: row.name,
    service: row.service,
    orgId: row.org_id,
    permissions: typeof row.permissions === 'string' ? JSON.parse(row.permissions) : row.permissions,
    secretHash: row.secret_hash,
    secretVersion: Number(row.secret_version),
    subscription: row.subscription,
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
  };
}

export interface AuditRow {
  seq: number;
  at: number;
  actor: string;
  actor_kind: string;
  service: string;
  org_id: string;
  action: string;
  records: string | string[];
  outcome: string;
  details: string | Record<string, unknown> | null;
  prev_hash: string;
  hash: string;
}

export function toAuditEntry(row: AuditRow): AuditEntry {
  return {
    seq: Number(row.seq),
    at: Number(row.at),
    actor: row.actor,
    actorKind: row.actor_kind as AuditEntry['actorKind'],
    service: row.service,
    orgId: row.org_id,
    action: row.action,
    records: typeof row.records === 'string' ? JSON.parse(row.records) : row.records,
    outcome: row.outcome,
    details: typeof row.details === 'string' ? JSON.parse(row.details) : row.details,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

/** The WHERE clause of an audit query, as text with positional parameters made by `param`. */
export function auditWhere(query: AuditQuery, param: (value: unknown) => string, recordMatch: (p: string) => string): string {
  const where: string[] = [];
  if (query.orgId !== undefined) where.push(`org_id = ${param(query.orgId)}`);
  if (query.services !== undefined) where.push(query.services.length === 0 ? '1 = 0' : `service IN (${query.services.map(param).join(', ')})`);
  if (query.actor !== undefined) where.push(`actor = ${param(query.actor)}`);
  if (query.action !== undefined && query.action.length > 0) where.push(`action IN (${query.action.map(param).join(', ')})`);
  if (query.outcome !== undefined) where.push(`outcome = ${param(query.outcome)}`);
  if (query.record !== undefined) where.push(recordMatch(param(query.record)));
  if (query.at?.from !== undefined) where.push(`at >= ${param(query.at.from)}`);
  if (query.at?.to !== undefined) where.push(`at < ${param(query.at.to)}`);
  return where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`;
}
