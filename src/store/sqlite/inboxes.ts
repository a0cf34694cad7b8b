/**
 * Clients' inboxes in SQLite (see ../inboxes.ts). Writes go through the store's write queue: one process
 * owns the file and a write runs to its end without yielding, so a put reads and changes a client's count
 * row by row with nothing coming between.
 */

import type Database from 'better-sqlite3';
import { DispatcherError } from '../../core/errors.js';
import type { InboxCount, InboxLimits, InboxMessage, InboxStore, NewInboxMessage, PutResult, TakeOptions } from '../inboxes.js';

interface MessageRow {
  seq: number;
  id: string;
  client_id: string;
  org_id: string;
  topic: string | null;
  body: string;
  sender: string;
  created_at: number;
  run_id: string | null;
  deliveries: number;
}

const COLUMNS = 'seq, id, client_id, org_id, topic, body, sender, created_at, run_id, deliveries';

function toMessage(row: MessageRow): InboxMessage {
  return {
    id: row.id,
    clientId: row.client_id,
    orgId: row.org_id,
    topic: row.topic,
    body: row.body,
    sender: row.sender,
    createdAt: row.created_at,
    runId: row.run_id,
    deliveries: row.deliveries,
  };
}

/** RETURNING gives no order: the messages as taken, oldest first. */
function inOrder(rows: MessageRow[]): InboxMessage[] {
  return rows.sort((a, b) => a.seq - b.seq).map(toMessage);
}

export class SqliteInboxes implements InboxStore {
  readonly #db: Database.Database;
  readonly #write: <T>(fn: () => T) => Promise<T>;
  /** Prepared once, on first use (the tables exist only after migration): a put runs several per message. */
  #prepared: ReturnType<SqliteInboxes['prepare']> | undefined;

  constructor(db: Database.Database, write: <T>(fn: () => T) => Promise<T>) {
    this.#db = db;
    this.#write = write;
  }

  private prepare() {
    const db = this.#db;
    return {
      count: db.prepare('SELECT messages FROM inbox_counts WHERE client_id = ?').pluck(),
      setCount: db.prepare('INSERT INTO inbox_counts (client_id, messages) VALUES (?, ?) ON CONFLICT (client_id) DO UPDATE SET messages = excluded.messages'),
      addCount: db.prepare('UPDATE inbox_counts SET messages = messages + ? WHERE client_id = ?'),
      hasId: db.prepare('SELECT 1 FROM inbox_messages WHERE id = ?').pluck(),
      hasRun: db.prepare('SELECT 1 FROM inbox_messages WHERE run_id = ? AND client_id = ?').pluck(),
      oldest: db.prepare('DELETE FROM inbox_messages WHERE seq = (SELECT min(seq) FROM inbox_messages WHERE client_id = ?) RETURNING id'),
      insert: db.prepare(
        `INSERT INTO inbox_messages (id, client_id, org_id, topic, body, sender, created_at, run_id)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      pop: db.prepare(
        `DELETE FROM inbox_messages WHERE seq IN (SELECT seq FROM inbox_messages WHERE client_id = ? AND visible_at <= ? ORDER BY seq LIMIT ?)
         RETURNING ${COLUMNS}`,
      ),
      lease: db.prepare(
        `UPDATE inbox_messages SET visible_at = ?, deliveries = deliveries + 1
         WHERE seq IN (SELECT seq FROM inbox_messages WHERE client_id = ? AND visible_at <= ? ORDER BY seq LIMIT ?)
         RETURNING ${COLUMNS}`,
      ),
      ack: db.prepare('DELETE FROM inbox_messages WHERE client_id = ? AND id IN (SELECT value FROM json_each(?))'),
      expire: db
        .prepare('DELETE FROM inbox_messages WHERE seq IN (SELECT seq FROM inbox_messages WHERE created_at < ? ORDER BY created_at, seq LIMIT ?) RETURNING client_id')
        .pluck(),
      clear: db.prepare('DELETE FROM inbox_messages WHERE client_id = ?'),
      clearCount: db.prepare('DELETE FROM inbox_counts WHERE client_id = ?'),
    };
  }

  get #s() {
    this.#prepared ??= this.prepare();
    return this.#prepared;
  }

  async put(messages: NewInboxMessage[], limits: InboxLimits): Promise<PutResult> {
    checkLimits(limits);
    return this.#write(() => {
      const s = this.#s;
      const result: PutResult = { stored: [], duplicates: [], refused: [], dropped: [] };
      // What was there before this put, read before any of it is dropped (as PostgreSQL reads it).
      const existed = messages.map((m) => s.hasId.get(m.id) !== undefined || (m.runId !== null && s.hasRun.get(m.runId, m.clientId) !== undefined));
      /** Ids and (run, client) keys of the messages this put stored: a second copy in the batch is a duplicate. */
      const seen = new Set<string>();
      /** Each client's count, read once and written back once at the end (when it changed). */
      const counts = new Map<string, number>();
      const changed = new Set<string>();
      /** The messages of this batch stored and still there: id → index. */
      const storedNow = new Map<string, number>();
      messages.forEach((m, i) => {
        const runKey = m.runId === null ? null : `run:${m.runId}\0${m.clientId}`;
        if (existed[i] || seen.has(`id:${m.id}`) || (runKey !== null && seen.has(runKey))) {
          result.duplicates.push(m.id);
          return;
        }
        let count = counts.get(m.clientId) ?? ((s.count.get(m.clientId) as number | undefined) ?? 0);
        counts.set(m.clientId, count);
        if (count >= limits.maxMessages && limits.whenFull === 'refuse') {
          result.refused.push({ id: m.id, clientId: m.clientId });
          return;
        }
        // (More than one when the limit was lowered since the inbox filled.)
        while (count >= limits.maxMessages) {
          const dropped = s.oldest.get(m.clientId) as { id: string } | undefined;
          if (dropped === undefined) break;
          count -= 1;
          result.dropped.push({ id: dropped.id, clientId: m.clientId });
          storedNow.delete(dropped.id);
        }
        s.insert.run(m.id, m.clientId, m.orgId, m.topic, m.body, m.sender, m.createdAt, m.runId);
        storedNow.set(m.id, i);
        seen.add(`id:${m.id}`);
        if (runKey !== null) seen.add(runKey);
        counts.set(m.clientId, count + 1);
        changed.add(m.clientId);
      });
      for (const clientId of changed) s.setCount.run(clientId, counts.get(clientId));
      // One outcome per message: one of this batch that a later one pushed out is reported dropped only.
      result.stored = [...storedNow.values()].sort((a, b) => a - b).map((i) => messages[i]!.id);
      return result;
    });
  }

  take(o: TakeOptions): Promise<InboxMessage[]> {
    return this.#write(() => {
      if (o.max <= 0) return [];
      const s = this.#s;
      if (o.leaseUntil !== undefined) return inOrder(s.lease.all(o.leaseUntil, o.clientId, o.now, o.max) as MessageRow[]);
      const rows = s.pop.all(o.clientId, o.now, o.max) as MessageRow[];
      if (rows.length > 0) s.addCount.run(-rows.length, o.clientId);
      return inOrder(rows);
    });
  }

  ack(clientId: string, ids: string[]): Promise<number> {
    return this.#write(() => {
      if (ids.length === 0) return 0;
      const n = this.#s.ack.run(clientId, JSON.stringify(ids)).changes;
      if (n > 0) this.#s.addCount.run(-n, clientId);
      return n;
    });
  }

  expire(before: number, limit: number): Promise<Array<{ clientId: string; messages: number }>> {
    return this.#write(() => {
      if (limit <= 0) return [];
      const perClient = new Map<string, number>();
      for (const clientId of this.#s.expire.all(before, limit) as string[]) perClient.set(clientId, (perClient.get(clientId) ?? 0) + 1);
      const expired = [...perClient].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([clientId, messages]) => ({ clientId, messages }));
      for (const e of expired) this.#s.addCount.run(-e.messages, e.clientId);
      return expired;
    });
  }

  async counts(clientIds?: string[]): Promise<InboxCount[]> {
    if (clientIds === undefined) {
      const rows = this.#db.prepare('SELECT client_id, messages FROM inbox_counts WHERE messages > 0 ORDER BY client_id').all() as Array<{ client_id: string; messages: number }>;
      return rows.map((r) => ({ clientId: r.client_id, messages: r.messages }));
    }
    const asked = [...new Set(clientIds)];
    const rows = this.#db
      .prepare('SELECT client_id, messages FROM inbox_counts WHERE client_id IN (SELECT value FROM json_each(?))')
      .all(JSON.stringify(asked)) as Array<{ client_id: string; messages: number }>;
    const found = new Map(rows.map((r) => [r.client_id, r.messages]));
    return asked.map((clientId) => ({ clientId, messages: found.get(clientId) ?? 0 }));
  }

  clear(clientId: string): Promise<number> {
    return this.#write(() => {
      const n = this.#s.clear.run(clientId).changes;
      this.#s.clearCount.run(clientId);
      return n;
    });
  }
}

/** A full inbox makes room by dropping or refuses: either way it must hold at least one message. */
function checkLimits(limits: InboxLimits): void {
  if (!Number.isInteger(limits.maxMessages) || limits.maxMessages < 1) {
    throw new DispatcherError('config_invalid', `an inbox holds at least 1 message (maxMessages is ${limits.maxMessages})`);
  }
}
