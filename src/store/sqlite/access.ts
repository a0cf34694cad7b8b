/** Clients, settings and the audit log in SQLite (see ../access.ts). Writes go through the store's write queue. */

import type Database from 'better-sqlite3';
import { chainEntries, GENESIS_HASH, type AuditEntry, type AuditHead, type NewAuditEntry } from '../../core/audit.js';
import { auditWhere, toAuditEntry, toClient, type AccessStore, type AuditQuery, type AuditRow, type ClientRecord, type ClientRow } from '../access.js';
import type { Listing } from '../types.js';

export class SqliteAccess implements AccessStore {
  readonly #db: Database.Database;
  readonly #write: <T>(fn: () => T) => Promise<T>;
  /** The audit statements, prepared once (the tables exist only after migration): appends are on every audited request. */
  #audit: { head: Database.Statement; insert: Database.Statement; setHead: Database.Statement } | undefined;

  constructor(db: Database.Database, write: <T>(fn: () => T) => Promise<T>) {
    this.#db = db;
    this.#write = write;
  }

  get #auditStatements() {
    this.#audit ??= {
      head: this.#db.prepare('SELECT seq, hash FROM audit_head WHERE id = 1'),
      insert: this.#db.prepare(
        `INSERT INTO audit_log (seq, at, actor, actor_kind, service, org_id, action, records, outcome, details, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      setHead: this.#db.prepare('INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash'),
    };
    return this.#audit;
  }

  createClient(c: ClientRecord): Promise<void> {
    return this.#write(() => {
      this.#db
        .prepare(
          `INSERT INTO clients (id, name, service, org_id, permissions, secret_hash, secret_version, subscription, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(c.id, c.name, c.service, c.orgId, JSON.stringify(c.permissions), c.secretHash, c.secretVersion, c.subscription, c.createdAt, c.updatedAt);
    });
  }

  async getClient(id: string): Promise<ClientRecord | null> {
    const row = this.#db.prepare('SELECT * FROM clients WHERE id = ?').get(id) as ClientRow | undefined;
    return row === undefined ? null : toClient(row);
  }

  async listClients(orgId?: string): Promise<ClientRecord[]> {
    const rows = (orgId === undefined
      ? this.#db.prepare('SELECT * FROM clients ORDER BY created_at, id').all()
      : this.#db.prepare('SELECT * FROM clients WHERE org_id = ? ORDER BY created_at, id').all(orgId)) as ClientRow[];
    return rows.map(toClient);
  }

  rotateClientSecret(id: string, secretHash: string, now: number): Promise<ClientRecord | null> {
    return this.#write(() => {
      const row = this.#db
        .prepare('UPDATE clients SET secret_hash = ?, secret_version = secret_version + 1, updated_at = ? WHERE id = ? RETURNING *')
        .get(secretHash, now, id) as ClientRow | undefined;
      return row === undefined ? null : toClient(row);
    });
  }

  updateClient(id: string, changes: { name?: string; subscription?: string | null }, now: number): Promise<ClientRecord | null> {
    return this.#write(() => {
      // A subscription given as null clears it: "not given" is told apart by a flag, not by null.
      const row = this.#db
        .prepare('UPDATE clients SET name = coalesce(?, name), subscription = CASE WHEN ? THEN ? ELSE subscription END, updated_at = ? WHERE id = ? RETURNING *')
        .get(changes.name ?? null, changes.subscription === undefined ? 0 : 1, changes.subscription ?? null, now, id) as ClientRow | undefined;
      return row === undefined ? null : toClient(row);
    });
  }

  deleteClient(id: string): Promise<boolean> {
    return this.#write(() => this.#db.prepare('DELETE FROM clients WHERE id = ?').run(id).changes > 0);
  }

  ensureSetting(key: string, value: string): Promise<string> {
    return this.#write(() => {
      this.#db.prepare('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING').run(key, value);
      return (this.#db.prepare('SELECT value FROM settings WHERE key = ?').get(key) as { value: string }).value;
    });
  }

  appendAudit(entries: NewAuditEntry[]): Promise<AuditEntry[]> {
    return this.#write(() => this.appendAuditInTransaction(entries));
  }

  /** Appends to the chain inside the write transaction the caller holds (intake's, for its entries). */
  appendAuditInTransaction(entries: NewAuditEntry[]): AuditEntry[] {
    if (entries.length === 0) return [];
    const { head: readHead, insert, setHead } = this.#auditStatements;
    const head = readHead.get() as AuditHead | undefined;
    const chained = chainEntries(head?.hash ?? GENESIS_HASH, (head?.seq ?? 0) + 1, entries);
    for (const e of chained) {
      insert.run(e.seq, e.at, e.actor, e.actorKind, e.service, e.orgId, e.action, JSON.stringify(e.records), e.outcome, e.details === null ? null : JSON.stringify(e.details), e.prevHash, e.hash);
    }
    const last = chained[chained.length - 1]!;
    setHead.run(last.seq, last.hash);
    return chained;
  }

  async listAudit(query: AuditQuery): Promise<Listing<AuditEntry>> {
    const params: unknown[] = [];
    const where = auditWhere(
      query,
      (v) => (params.push(v), '?'),
      (p) => `EXISTS (SELECT 1 FROM json_each(audit_log.records) WHERE value = ${p})`,
    );
    const total = (this.#db.prepare(`SELECT count(*) AS n FROM audit_log ${where}`).get(...params) as { n: number }).n;
    const rows = this.#db
      .prepare(`SELECT * FROM audit_log ${where} ORDER BY seq ${query.ascending ? 'ASC' : 'DESC'} LIMIT ? OFFSET ?`)
      .all(...params, query.limit, query.offset) as AuditRow[];
    return { items: rows.map(toAuditEntry), total };
  }

  async readAudit(afterSeq: number, limit: number): Promise<AuditEntry[]> {
    return (this.#db.prepare('SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?').all(afterSeq, limit) as AuditRow[]).map(toAuditEntry);
  }

  async auditHead(): Promise<AuditHead | null> {
    const row = this.#auditStatements.head.get() as AuditHead | undefined;
    return row === undefined ? null : { seq: Number(row.seq), hash: row.hash };
  }
}
