/**
 * Clients, settings and the audit log in PostgreSQL (see ../access.ts). Appends to the audit log take a
 * transaction-scoped advisory lock, so that processes sharing the database extend one chain in turn.
 */

import type pg from 'pg';
import { chainEntries, GENESIS_HASH, type AuditEntry, type AuditHead, type NewAuditEntry } from '../../core/audit.js';
import { auditWhere, toAuditEntry, toClient, type AccessStore, type AuditQuery, type AuditRow, type ClientRecord, type ClientRow } from '../access.js';
import type { Listing } from '../types.js';

type Queryable = Pick<pg.PoolClient, 'query'>;

export interface PostgresAccessDeps {
  query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
  transaction<T>(fn: (c: Queryable) => Promise<T>): Promise<T>;
  /** Names the advisory lock, so that stores in different schemas do not share one. */
  lockName: string;
}

export class PostgresAccess implements AccessStore {
  readonly #deps: PostgresAccessDeps;

  constructor(deps: PostgresAccessDeps) {
    this.#deps = deps;
  }

  async createClient(c: ClientRecord): Promise<void> {
    await this.#deps.query(
      `INSERT INTO clients (id, name, service, org_id, permissions, secret_hash, secret_version, subscription, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10)`,
      [c.id, c.name, c.service, c.orgId, JSON.stringify(c.permissions), c.secretHash, c.secretVersion, c.subscription, c.createdAt, c.updatedAt],
    );
  }

  async getClient(id: string): Promise<ClientRecord | null> {
    const row = (await this.#deps.query<ClientRow>('SELECT * FROM clients WHERE id = $1', [id])).rows[0];
    return row === undefined ? null : toClient(row);
  }

  async listClients(orgId?: string): Promise<ClientRecord[]> {
    const result =
      orgId === undefined
        ? await this.#deps.query<ClientRow>('SELECT * FROM clients ORDER BY created_at, id')
        : await this.#deps.query<ClientRow>('SELECT * FROM clients WHERE org_id = $1 ORDER BY created_at, id', [orgId]);
    return result.rows.map(toClient);
  }

  async rotateClientSecret(id: string, secretHash: string, now: number): Promise<ClientRecord | null> {
    const row = (
      await this.#deps.query<ClientRow>(
        'UPDATE clients SET secret_hash = $1, secret_version = secret_version + 1, updated_at = $2 WHERE id = $3 RETURNING *',
        [secretHash, now, id],
      )
    ).rows[0];
    return row === undefined ? null : toClient(row);
  }

  async updateClient(id: string, changes: { name?: string; subscription?: string | null }, now: number): Promise<ClientRecord | null> {
    // A subscription given as null clears it: "not given" is told apart by a flag, not by null.
    const row = (
      await this.#deps.query<ClientRow>(
        'UPDATE clients SET name = coalesce($1, name), subscription = CASE WHEN $2::boolean THEN $3::text ELSE subscription END, updated_at = $4 WHERE id = $5 RETURNING *',
        [changes.name ?? null, changes.subscription !== undefined, changes.subscription ?? null, now, id],
      )
    ).rows[0];
    return row === undefined ? null : toClient(row);
  }

  async deleteClient(id: string): Promise<boolean> {
    return ((await this.#deps.query('DELETE FROM clients WHERE id = $1', [id])).rowCount ?? 0) > 0;
  }

  async ensureSetting(key: string, value: string): Promise<string> {
    await this.#deps.query('INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [key, value]);
    return (await this.#deps.query<{ value: string }>('SELECT value FROM settings WHERE key = $1', [key])).rows[0]!.value;
  }

  async appendAudit(entries: NewAuditEntry[]): Promise<AuditEntry[]> {
    if (entries.length === 0) return [];
    return this.#deps.transaction((c) => this.appendAuditInTransaction(c, entries));
  }

  /**
   * Appends to the chain inside the caller's transaction (intake's, for its entries). The advisory lock is
   * held to the end of that transaction: take it last, after the transaction's other writes, to hold it briefly.
   */
  async appendAuditInTransaction(c: Queryable, entries: NewAuditEntry[]): Promise<AuditEntry[]> {
    if (entries.length === 0) return [];
    await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`dispatcher:audit:${this.#deps.lockName}`]);
    const head = (await c.query<AuditHead>('SELECT seq, hash FROM audit_head WHERE id = 1')).rows[0];
    const chained = chainEntries(head?.hash ?? GENESIS_HASH, Number(head?.seq ?? 0) + 1, entries);
    const values: unknown[] = [];
    const tuples = chained.map((e) => {
      const at = values.length;
      values.push(e.seq, e.at, e.actor, e.actorKind, e.service, e.orgId, e.action, JSON.stringify(e.records), e.outcome, e.details === null ? null : JSON.stringify(e.details), e.prevHash, e.hash);
      const p = (i: number) => `$${at + i}`;
      return `(${p(1)}, ${p(2)}, ${p(3)}, ${p(4)}, ${p(5)}, ${p(6)}, ${p(7)}, ${p(8)}::jsonb, ${p(9)}, ${p(10)}::jsonb, ${p(11)}, ${p(12)})`;
    });
    const last = chained[chained.length - 1]!;
    const seqAt = values.push(last.seq);
    const hashAt = values.push(last.hash);
    // The entries and the new head in one statement: one round trip fewer inside the lock. (The lock and the
    // head's read above stay two statements: one statement would read the head from a snapshot taken before
    // it got the lock.)
    await c.query(
      `WITH entries AS (
         INSERT INTO audit_log (seq, at, actor, actor_kind, service, org_id, action, records, outcome, details, prev_hash, hash) VALUES ${tuples.join(', ')}
       )
       INSERT INTO audit_head (id, seq, hash) VALUES (1, $${seqAt}, $${hashAt}) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash`,
      values,
    );
    return chained;
  }

  async listAudit(query: AuditQuery): Promise<Listing<AuditEntry>> {
    const params: unknown[] = [];
    const where = auditWhere(
      query,
      (v) => `$${params.push(v)}`,
      (p) => `records @> jsonb_build_array(${p}::text)`,
    );
    const total = Number((await this.#deps.query<{ n: string }>(`SELECT count(*) AS n FROM audit_log ${where}`, params)).rows[0]!.n);
    const rows = (
      await this.#deps.query<AuditRow>(
        `SELECT * FROM audit_log ${where} ORDER BY seq ${query.ascending ? 'ASC' : 'DESC'} LIMIT $${params.length + 1} OFFSET $${params.length + 2}`,
        [...params, query.limit, query.offset],
      )
    ).rows;
    return { items: rows.map(toAuditEntry), total };
  }

  async readAudit(afterSeq: number, limit: number): Promise<AuditEntry[]> {
    return (await this.#deps.query<AuditRow>('SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2', [afterSeq, limit])).rows.map(toAuditEntry);
  }

  async auditHead(): Promise<AuditHead | null> {
    const row = (await this.#deps.query<AuditHead>('SELECT seq, hash FROM audit_head WHERE id = 1')).rows[0];
    return row === undefined ? null : { seq: Number(row.seq), hash: row.hash };
  }
}
