/**
 * SQLite schema. Times are integer milliseconds since the epoch; JSON is text.
 *
 * Indexes are chosen for the hot path first: every index on `runs` is written for every run, so the queue
 * and lease indexes are partial (only the rows in that state are in them), and the listing goes by the
 * primary key, whose ids carry the creation time (migration 0005).
 */

/**
 * The time a UUIDv7 (a run's id, an event's key) carries: its first 12 hex digits (the 9th character is a
 * dash), in milliseconds.
 */
const ID_TIME = (column: string): string =>
  `(${[1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13].map((at, i) => `(instr('0123456789abcdef', substr(${column}, ${at}, 1)) - 1) * ${16 ** (11 - i)}`).join(' + ')})`;
/** A UUIDv7 in a column, as a GLOB pattern. */
const V7 = `${'[0-9a-f]'.repeat(8)}-${'[0-9a-f]'.repeat(4)}-7*`;

export const SQLITE_MIGRATIONS: Readonly<Record<string, readonly string[]>> = {
  '0001_initial': [
    `CREATE TABLE events (
      key TEXT PRIMARY KEY,
      source TEXT NOT NULL,
      id TEXT NOT NULL,
      type TEXT NOT NULL,
      topic TEXT,
      subject TEXT,
      envelope TEXT NOT NULL,
      input TEXT NOT NULL,
      hops INTEGER NOT NULL,
      service TEXT NOT NULL,
      org_id TEXT NOT NULL,
      received_at INTEGER NOT NULL,
      run_count INTEGER NOT NULL
    )`,
    `CREATE UNIQUE INDEX events_identity ON events (source, id)`,
    `CREATE INDEX events_unrouted ON events (received_at) WHERE run_count = 0`,
    `CREATE TABLE runs (
      id TEXT PRIMARY KEY,
      event_key TEXT NOT NULL,
      event_type TEXT NOT NULL,
      route TEXT NOT NULL,
      action TEXT NOT NULL,
      action_type TEXT NOT NULL,
      status TEXT NOT NULL,
      attempts INTEGER NOT NULL,
      max_attempts INTEGER NOT NULL,
      created_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL,
      available_at INTEGER NOT NULL,
      deadline_at INTEGER NOT NULL,
      expires_at INTEGER NOT NULL,
      lease_owner TEXT,
      lease_until INTEGER,
      ordering_key TEXT,
      correlation_id TEXT,
      labels TEXT NOT NULL,
      service TEXT NOT NULL,
      org_id TEXT NOT NULL,
      error_code TEXT,
      error_message TEXT,
      result TEXT,
      finished_at INTEGER
    )`,
    // Covers the claim query (ordering_key is NULL for most runs, so it costs next to nothing).
    `CREATE INDEX runs_queue ON runs (available_at, id, ordering_key) WHERE status = 'queued'`,
    `CREATE INDEX runs_ordering ON runs (ordering_key, id) WHERE ordering_key IS NOT NULL AND status IN ('queued', 'running')`,
    `CREATE INDEX runs_leases ON runs (lease_until) WHERE status = 'running' AND lease_owner IS NOT NULL`,
    `CREATE INDEX runs_deadlines ON runs (deadline_at) WHERE status IN ('queued', 'running')`,
    `CREATE INDEX runs_correlation ON runs (correlation_id) WHERE correlation_id IS NOT NULL`,
    `CREATE INDEX runs_event ON runs (event_key)`,
    `CREATE INDEX runs_created ON runs (created_at)`,
    `CREATE TABLE attempts (
      run_id TEXT NOT NULL,
      n INTEGER NOT NULL,
      started_at INTEGER NOT NULL,
      ended_at INTEGER NOT NULL,
      outcome TEXT NOT NULL,
      error_code TEXT,
      error_message TEXT,
      http_status INTEGER,
      response TEXT,
      PRIMARY KEY (run_id, n)
    ) WITHOUT ROWID`,
    `CREATE TABLE run_events (
      seq INTEGER PRIMARY KEY,
      run_id TEXT NOT NULL,
      event_type TEXT NOT NULL,
      status TEXT NOT NULL,
      service TEXT NOT NULL,
      org_id TEXT NOT NULL,
      at INTEGER NOT NULL,
      payload TEXT NOT NULL
    )`,
    // The highest run-event seq pruning deleted: seqs are given by the store (see SqliteStore #nextSeq),
    // from the highest one stored or kept here, so a seq is never given twice.
    `CREATE TABLE run_event_seq (last INTEGER NOT NULL)`,
    `INSERT INTO run_event_seq (last) VALUES (0)`,
    `CREATE TABLE dead_letters (
      id TEXT PRIMARY KEY,
      origin TEXT NOT NULL,
      source TEXT NOT NULL,
      reason TEXT NOT NULL,
      error TEXT NOT NULL,
      details TEXT,
      raw BLOB NOT NULL,
      raw_truncated INTEGER NOT NULL,
      content_type TEXT,
      headers TEXT NOT NULL,
      run_id TEXT,
      event_key TEXT,
      service TEXT NOT NULL,
      org_id TEXT NOT NULL,
      fingerprint TEXT NOT NULL,
      attempts INTEGER NOT NULL,
      first_seen_at INTEGER NOT NULL,
      last_seen_at INTEGER NOT NULL,
      replayed_at INTEGER
    )`,
    `CREATE UNIQUE INDEX dead_letters_fingerprint ON dead_letters (fingerprint)`,
    `CREATE INDEX dead_letters_last_seen ON dead_letters (last_seen_at)`,
  ],
  '0002_access': [
    `CREATE TABLE clients (
      id TEXT PRIMARY KEY,
      name TEXT NOT NULL,
      service TEXT NOT NULL,
      org_id TEXT NOT NULL,
      permissions TEXT NOT NULL,
      secret_hash TEXT NOT NULL,
      secret_version INTEGER NOT NULL,
      subscription TEXT,
      created_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL
    )`,
    `CREATE INDEX clients_org ON clients (org_id)`,
    `CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
    `CREATE TABLE audit_log (
      seq INTEGER PRIMARY KEY,
      at INTEGER NOT NULL,
      actor TEXT NOT NULL,
      actor_kind TEXT NOT NULL,
      service TEXT NOT NULL,
      org_id TEXT NOT NULL,
      action TEXT NOT NULL,
      records TEXT NOT NULL,
      outcome TEXT NOT NULL,
      details TEXT,
      prev_hash TEXT NOT NULL,
      hash TEXT NOT NULL
    )`,
    `CREATE INDEX audit_log_org ON audit_log (org_id, seq)`,
    `CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL)`,
    // Append-only: the dispatcher never changes or deletes an entry, and refuses to be made to.
    `CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END`,
    `CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END`,
  ],
  '0003_outputs': [
    // Dead letters in the order they were made, for the outputs' relays: a seq given from a counter (never
    // twice, even after the newest dead letter was deleted), kept when the same dead letter is seen again.
    `ALTER TABLE dead_letters ADD COLUMN seq INTEGER`,
    `UPDATE dead_letters SET seq = rowid`,
    `CREATE INDEX dead_letters_seq ON dead_letters (seq)`,
    `CREATE TABLE dead_letter_seq (last INTEGER NOT NULL)`,
    `INSERT INTO dead_letter_seq (last) SELECT coalesce(max(seq), 0) FROM dead_letters`,
    // Each output's relay of a stream (run_events, dead_letters): its durable cursor, and the lease of the
    // one process that relays it.
    `CREATE TABLE output_cursors (
      output TEXT NOT NULL,
      stream TEXT NOT NULL,
      seq INTEGER NOT NULL,
      owner TEXT,
      lease_until INTEGER NOT NULL,
      PRIMARY KEY (output, stream)
    ) WITHOUT ROWID`,
  ],
  '0005_created_by_id': [
    // A run's id carries its created_at (NewRun.id): creation order is id order, and a created_at range a
    // range of ids, through the primary key. Runs written before carry a time in their id at most a moment
    // after their created_at; they are given that time, so that the two agree for every run. Then
    // runs_created goes, as in PostgreSQL.
    `UPDATE runs SET created_at = ${ID_TIME('id')}, updated_at = max(updated_at, ${ID_TIME('id')})
     WHERE id GLOB '${V7}' AND created_at <> ${ID_TIME('id')}`,
    `DROP INDEX runs_created`,
    // Likewise an event's key carries its received_at: a received_at range is a range of keys.
    `UPDATE events SET received_at = ${ID_TIME('key')} WHERE key GLOB '${V7}' AND received_at <> ${ID_TIME('key')}`,
  ],
  '0006_hosts': [
    // The targets inside runs, each with its own status, log and sequence; one per (run, name).
    `CREATE TABLE hosts (
      id TEXT PRIMARY KEY,
      run_id TEXT NOT NULL,
      name TEXT NOT NULL,
      status TEXT NOT NULL,
      log TEXT NOT NULL,
      sequence INTEGER,
      details TEXT NOT NULL,
      service TEXT NOT NULL,
      org_id TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL
    )`,
    `CREATE UNIQUE INDEX hosts_run_name ON hosts (run_id, name)`,
    // Host events share the outbox (and its seq) with run events: a host event names its host.
    `ALTER TABLE run_events ADD COLUMN host_id TEXT`,
  ],
  '0007_inboxes': [
    // Clients' inboxes (../inboxes.ts): messages in delivery order (seq, the rowid), each once per run and
    // client. visible_at starts at 0 (visible at once, whatever the clock of whoever takes it); a lease moves
    // it into the future.
    `CREATE TABLE inbox_messages (
      seq INTEGER PRIMARY KEY,
      id TEXT NOT NULL,
      client_id TEXT NOT NULL,
      org_id TEXT NOT NULL,
      topic TEXT,
      body TEXT NOT NULL,
      sender TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      run_id TEXT,
      deliveries INTEGER NOT NULL DEFAULT 0,
      visible_at INTEGER NOT NULL DEFAULT 0
    )`,
    `CREATE UNIQUE INDEX inbox_messages_id ON inbox_messages (id)`,
    `CREATE UNIQUE INDEX inbox_messages_run_client ON inbox_messages (run_id, client_id) WHERE run_id IS NOT NULL`,
    // Receiving: a client's oldest first. Expiry: the oldest of all.
    `CREATE INDEX inbox_messages_client ON inbox_messages (client_id, seq)`,
    `CREATE INDEX inbox_messages_created ON inbox_messages (created_at)`,
    // Messages per client, kept in the transaction of every change: "is it full" is one row read, not a count.
    `CREATE TABLE inbox_counts (client_id TEXT PRIMARY KEY, messages INTEGER NOT NULL) WITHOUT ROWID`,
  ],
};
