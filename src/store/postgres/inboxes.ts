/**
 * Clients' inboxes in PostgreSQL (see ../inboxes.ts), shared by any number of processes.
 *
 * A client's row in `inbox_counts` is the lock of its inbox: whatever changes how many messages a client
 * has (put, pop, ack, expire, clear) locks that row first, several of them in client id order, and only then
 * reads or deletes the client's messages. So every count is read and written by one transaction at a time,
 * and a put sees every message committed before it. Leases change no count and take no count lock: they
 * lock only the messages they hand out, with `SKIP LOCKED`, and never wait for anything. One order for
 * everyone (count rows, sorted, then messages), so writers cannot deadlock on each other.
 *
 * Two takers never get the same message: each locks what it takes with `FOR UPDATE SKIP LOCKED`, and a
 * message one of them holds is skipped by the other (and re-checked after a wait: a message deleted or
 * leased meanwhile is not taken again).
 */

import type pg from 'pg';
import { DispatcherError } from '../../core/errors.js';
import type { InboxCount, InboxLimits, InboxMessage, InboxStore, NewInboxMessage, PutResult, TakeOptions } from '../inboxes.js';

type Queryable = Pick<pg.PoolClient, 'query'>;

export interface PostgresInboxesDeps {
  query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
  transaction<T>(fn: (c: Queryable) => Promise<T>): Promise<T>;
}

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
    createdAt: Number(row.created_at),
    runId: row.run_id,
    deliveries: Number(row.deliveries),
  };
}

/** Byte order, as the "C" collation of the id columns sorts. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The lock of these clients' inboxes (see the top of this file), in client id order; a client without a count
 * row gets one. `DO UPDATE … WHERE false` locks a row that exists without writing it, and, unlike a
 * `SELECT … FOR UPDATE` after `INSERT … DO NOTHING`, still finds the row when a `clear` deleted it while this
 * waited: the insert is then tried again.
 */
async function lockInboxes(c: Queryable, clientIds: string[]): Promise<void> {
  await c.query(
    `INSERT INTO inbox_counts (client_id, messages) SELECT k, 0 FROM unnest($1::text[]) AS k ORDER BY k COLLATE "C"
     ON CONFLICT (client_id) DO UPDATE SET messages = inbox_counts.messages WHERE false`,
    [clientIds],
  );
}

export class PostgresInboxes implements InboxStore {
  readonly #deps: PostgresInboxesDeps;

  constructor(deps: PostgresInboxesDeps) {
    this.#deps = deps;
  }

  /**
   * Whole batches at a time: the inboxes locked (one statement), what is there read (one: counts, ids and
   * (run, client) pairs), the outcome of each message worked out here, then the drops, the inserts and the
   * new counts written (one).
   */
  async put(messages: NewInboxMessage[], limits: InboxLimits): Promise<PutResult> {
    checkLimits(limits);
    if (messages.length === 0) return { stored: [], duplicates: [], refused: [], dropped: [] };
    const clientIds = [...new Set(messages.map((m) => m.clientId))].sort(compare);
    const withRun = messages.filter((m) => m.runId !== null);
    return this.#deps.transaction(async (c) => {
      await lockInboxes(c, clientIds);
      // Read after the lock, in a statement of its own: its snapshot holds every put committed before.
      const found = (
        await c.query<{ kind: 'count' | 'id' | 'run'; a: string; b: string | null; n: number | null }>(
          `SELECT 'count' AS kind, client_id AS a, NULL::text AS b, messages AS n FROM inbox_counts WHERE client_id = ANY($1::text[])
           UNION ALL
           SELECT 'id', id, NULL, NULL FROM inbox_messages WHERE id = ANY($2::text[])
           UNION ALL
           SELECT 'run', m.run_id, m.client_id, NULL FROM inbox_messages m
             JOIN unnest($3::text[], $4::text[]) AS k(run_id, client_id) ON m.run_id = k.run_id AND m.client_id = k.client_id`,
          [clientIds, messages.map((m) => m.id), withRun.map((m) => m.runId), withRun.map((m) => m.clientId)],
        )
      ).rows;
      const counts = new Map<string, number>();
      const seen = new Set<string>();
      for (const r of found) {
        if (r.kind === 'count') counts.set(r.a, Number(r.n));
        else seen.add(r.kind === 'id' ? `id:${r.a}` : `run:${r.a}\0${r.b}`);
      }

      const plan = planPut(messages, limits, counts, seen);
      const stored = plan.stored.map((i) => messages[i]!);
      const dropClients = [...plan.dropsOfExisting.keys()];
      if (stored.length === 0 && dropClients.length === 0) return plan.result([], new Set());

      // The drops (each client's oldest: no one else deletes them while its count row is locked), the
      // inserts in batch order (so their seqs follow it) and the counts from what was really deleted and
      // inserted. ON CONFLICT: an id another client's put took meanwhile is a duplicate, not an error.
      const written = (
        await c.query<{ kind: 'stored' | 'dropped'; seq: number; id: string; client_id: string }>(
          `WITH del AS (
             DELETE FROM inbox_messages m USING (
               SELECT o.seq FROM unnest($1::text[], $2::int[]) AS k(client_id, n)
               CROSS JOIN LATERAL (SELECT seq FROM inbox_messages WHERE client_id = k.client_id ORDER BY seq LIMIT k.n) AS o
             ) AS d
             WHERE m.seq = d.seq
             RETURNING m.seq, m.id, m.client_id
           ),
           ins AS (
             INSERT INTO inbox_messages (id, client_id, org_id, topic, body, sender, created_at, run_id)
             SELECT id, client_id, org_id, topic, body, sender, created_at, run_id
             FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[])
               WITH ORDINALITY AS t(id, client_id, org_id, topic, body, sender, created_at, run_id, ord)
             ORDER BY ord
             ON CONFLICT DO NOTHING
             RETURNING seq, id, client_id
           ),
           counted AS (
             UPDATE inbox_counts c SET messages = c.messages - coalesce(d.n, 0) + coalesce(i.n, 0)
             FROM unnest($11::text[]) AS k(client_id)
               LEFT JOIN (SELECT client_id, count(*) AS n FROM del GROUP BY client_id) AS d ON d.client_id = k.client_id
               LEFT JOIN (SELECT client_id, count(*) AS n FROM ins GROUP BY client_id) AS i ON i.client_id = k.client_id
             WHERE c.client_id = k.client_id
           )
           SELECT 'stored' AS kind, seq, id, client_id FROM ins
           UNION ALL
           SELECT 'dropped', seq, id, client_id FROM del`,
          [
            dropClients,
            dropClients.map((k) => plan.dropsOfExisting.get(k)!),
            stored.map((m) => m.id),
            stored.map((m) => m.clientId),
            stored.map((m) => m.orgId),
            stored.map((m) => m.topic),
            stored.map((m) => m.body),
            stored.map((m) => m.sender),
            stored.map((m) => m.createdAt),
            stored.map((m) => m.runId),
            [...new Set([...dropClients, ...stored.map((m) => m.clientId)])].sort(compare),
          ],
        )
      ).rows;
      const inserted = new Set(written.filter((r) => r.kind === 'stored').map((r) => r.id));
      const droppedRows = written.filter((r) => r.kind === 'dropped').sort((a, b) => Number(a.seq) - Number(b.seq));
      return plan.result(droppedRows, inserted);
    });
  }

  async take(o: TakeOptions): Promise<InboxMessage[]> {
    if (o.max <= 0) return [];
    if (o.leaseUntil !== undefined) {
      // A lease changes no count: one statement, no count lock.
      const { rows } = await this.#deps.query<MessageRow>(
        `WITH picked AS (
           SELECT seq FROM inbox_messages WHERE client_id = $1 AND visible_at <= $2 ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED
         ),
         leased AS (
           UPDATE inbox_messages m SET visible_at = $4, deliveries = m.deliveries + 1 FROM picked WHERE m.seq = picked.seq
           RETURNING ${COLUMNS.split(', ').map((col) => `m.${col}`).join(', ')}
         )
         SELECT ${COLUMNS} FROM leased ORDER BY seq`,
        [o.clientId, o.now, o.max, o.leaseUntil],
      );
      return rows.map(toMessage);
    }
    return this.#deps.transaction(async (c) => {
      // An empty inbox is not locked (its row does not pass the filter): a poll of one writes nothing.
      const locked = await c.query('SELECT 1 FROM inbox_counts WHERE client_id = $1 AND messages > 0 FOR UPDATE', [o.clientId]);
      if (locked.rows.length === 0) return [];
      const { rows } = await c.query<MessageRow>(
        `WITH picked AS (
           SELECT seq FROM inbox_messages WHERE client_id = $1 AND visible_at <= $2 ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED
         ),
         taken AS (
           DELETE FROM inbox_messages m USING picked WHERE m.seq = picked.seq
           RETURNING ${COLUMNS.split(', ').map((col) => `m.${col}`).join(', ')}
         ),
         counted AS (
           UPDATE inbox_counts SET messages = messages - (SELECT count(*) FROM taken) WHERE client_id = $1 AND EXISTS (SELECT 1 FROM taken)
         )
         SELECT ${COLUMNS} FROM taken ORDER BY seq`,
        [o.clientId, o.now, o.max],
      );
      return rows.map(toMessage);
    });
  }

  async ack(clientId: string, ids: string[]): Promise<number> {
    if (ids.length === 0) return 0;
    return this.#deps.transaction(async (c) => {
      await c.query('SELECT 1 FROM inbox_counts WHERE client_id = $1 FOR UPDATE', [clientId]);
      const { rows } = await c.query<{ n: number }>(
        `WITH acked AS (DELETE FROM inbox_messages WHERE client_id = $1 AND id = ANY($2::text[]) RETURNING 1),
         counted AS (
           UPDATE inbox_counts SET messages = messages - (SELECT count(*) FROM acked) WHERE client_id = $1 AND EXISTS (SELECT 1 FROM acked)
         )
         SELECT count(*) AS n FROM acked`,
        [clientId, ids],
      );
      return Number(rows[0]!.n);
    });
  }

  async expire(before: number, limit: number): Promise<Array<{ clientId: string; messages: number }>> {
    if (limit <= 0) return [];
    // The candidates are read without a lock (a message lock taken before the count locks could deadlock with
    // an ack); their clients are then locked, and they are deleted only if still there and still old enough.
    const candidates = (
      await this.#deps.query<{ seq: number; client_id: string }>(
        'SELECT seq, client_id FROM inbox_messages WHERE created_at < $1 ORDER BY created_at, seq LIMIT $2',
        [before, limit],
      )
    ).rows;
    if (candidates.length === 0) return [];
    return this.#deps.transaction(async (c) => {
      await c.query('SELECT 1 FROM inbox_counts WHERE client_id = ANY($1::text[]) ORDER BY client_id FOR UPDATE', [
        [...new Set(candidates.map((r) => r.client_id))],
      ]);
      const { rows } = await c.query<{ client_id: string; messages: number }>(
        `WITH expired AS (DELETE FROM inbox_messages WHERE seq = ANY($1::bigint[]) AND created_at < $2 RETURNING client_id),
         n AS (SELECT client_id, count(*) AS messages FROM expired GROUP BY client_id),
         counted AS (UPDATE inbox_counts c SET messages = c.messages - n.messages FROM n WHERE c.client_id = n.client_id)
         SELECT client_id, messages FROM n ORDER BY client_id`,
        [candidates.map((r) => r.seq), before],
      );
      return rows.map((r) => ({ clientId: r.client_id, messages: Number(r.messages) }));
    });
  }

  async counts(clientIds?: string[]): Promise<InboxCount[]> {
    if (clientIds === undefined) {
      const { rows } = await this.#deps.query<{ client_id: string; messages: number }>(
        'SELECT client_id, messages FROM inbox_counts WHERE messages > 0 ORDER BY client_id',
      );
      return rows.map((r) => ({ clientId: r.client_id, messages: Number(r.messages) }));
    }
    const asked = [...new Set(clientIds)];
    if (asked.length === 0) return [];
    const { rows } = await this.#deps.query<{ client_id: string; messages: number }>(
      'SELECT client_id, messages FROM inbox_counts WHERE client_id = ANY($1::text[])',
      [asked],
    );
    const found = new Map(rows.map((r) => [r.client_id, Number(r.messages)]));
    return asked.map((clientId) => ({ clientId, messages: found.get(clientId) ?? 0 }));
  }

  async clear(clientId: string): Promise<number> {
    return this.#deps.transaction(async (c) => {
      // Locked first: a put waiting for it then finds the row gone and starts a new count, with its messages.
      await c.query('SELECT 1 FROM inbox_counts WHERE client_id = $1 FOR UPDATE', [clientId]);
      const { rows } = await c.query<{ n: number }>(
        `WITH cleared AS (DELETE FROM inbox_messages WHERE client_id = $1 RETURNING 1),
         uncounted AS (DELETE FROM inbox_counts WHERE client_id = $1)
         SELECT count(*) AS n FROM cleared`,
        [clientId],
      );
      return Number(rows[0]!.n);
    });
  }
}

/** What a put does to each message, worked out from what its inboxes hold (see `put`). */
interface PutPlan {
  /** Indexes of the messages to insert, in order. */
  stored: number[];
  /** How many of its oldest stored messages each client loses. */
  dropsOfExisting: Map<string, number>;
  /** The result, once the drops of stored messages are known (their ids, oldest first) and what was inserted. */
  result(droppedRows: Array<{ id: string; client_id: string }>, inserted: Set<string>): PutResult;
}

/**
 * The outcome of each message in order, as SQLite's put reaches it row by row: a duplicate of what was there
 * or of an earlier message of the batch; refused while full; or stored, after dropping the client's oldest
 * (those stored before this put first, then those of this batch).
 */
function planPut(messages: NewInboxMessage[], limits: InboxLimits, counts: Map<string, number>, seen: Set<string>): PutPlan {
  const duplicate = new Set<number>();
  const refused: Array<{ id: string; clientId: string }> = [];
  /** In the order they happen: a stored message's client (its id is known only once deleted), or one of this batch. */
  const drops: Array<{ clientId: string; id?: string }> = [];
  const dropsOfExisting = new Map<string, number>();
  /** Per client: how many stored before this put are left, and this batch's stored messages, oldest first. */
  const inboxes = new Map<string, { existing: number; count: number; batch: number[] }>();
  const storedNow = new Set<number>();
  messages.forEach((m, i) => {
    const runKey = m.runId === null ? null : `run:${m.runId}\0${m.clientId}`;
    if (seen.has(`id:${m.id}`) || (runKey !== null && seen.has(runKey))) {
      duplicate.add(i);
      return;
    }
    let inbox = inboxes.get(m.clientId);
    if (inbox === undefined) {
      const count = counts.get(m.clientId) ?? 0;
      inbox = { existing: count, count, batch: [] };
      inboxes.set(m.clientId, inbox);
    }
    if (inbox.count >= limits.maxMessages && limits.whenFull === 'refuse') {
      refused.push({ id: m.id, clientId: m.clientId });
      return;
    }
    while (inbox.count >= limits.maxMessages) {
      if (inbox.existing > 0) {
        inbox.existing -= 1;
        dropsOfExisting.set(m.clientId, (dropsOfExisting.get(m.clientId) ?? 0) + 1);
        drops.push({ clientId: m.clientId });
      } else if (inbox.batch.length > 0) {
        const j = inbox.batch.shift()!;
        storedNow.delete(j);
        drops.push({ clientId: m.clientId, id: messages[j]!.id });
      } else break;
      inbox.count -= 1;
    }
    inbox.batch.push(i);
    inbox.count += 1;
    storedNow.add(i);
    seen.add(`id:${m.id}`);
    if (runKey !== null) seen.add(runKey);
  });
  const stored = [...storedNow].sort((a, b) => a - b);
  return {
    stored,
    dropsOfExisting,
    result(droppedRows, inserted) {
      const oldest = new Map<string, string[]>();
      for (const r of droppedRows) oldest.set(r.client_id, [...(oldest.get(r.client_id) ?? []), r.id]);
      const dropped: PutResult['dropped'] = [];
      for (const d of drops) {
        // A count that said more than there was drops fewer: only those that went are reported.
        const id = d.id ?? oldest.get(d.clientId)?.shift();
        if (id !== undefined) dropped.push({ id, clientId: d.clientId });
      }
      return {
        stored: stored.filter((i) => inserted.has(messages[i]!.id)).map((i) => messages[i]!.id),
        duplicates: messages.filter((m, i) => duplicate.has(i) || (storedNow.has(i) && !inserted.has(m.id))).map((m) => m.id),
        refused,
        dropped,
      };
    },
  };
}

/** A full inbox makes room by dropping or refuses: either way it must hold at least one message. */
function checkLimits(limits: InboxLimits): void {
  if (!Number.isInteger(limits.maxMessages) || limits.maxMessages < 1) {
    throw new DispatcherError('config_invalid', `an inbox holds at least 1 message (maxMessages is ${limits.maxMessages})`);
  }
}
