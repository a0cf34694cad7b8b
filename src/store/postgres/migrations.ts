/**
 * PostgreSQL schema: the same tables and columns as SQLite (so `rows.ts` and `queries.ts` serve both).
 * Times are integer milliseconds since the epoch as `bigint` (the pool parses int8 to a JS number); JSON is
 * `jsonb`, except the texts that are only written and read back whole (`json`, migration 0004); raw bytes are
 * `bytea`.
 *
 * Text columns that are compared with `<` or sorted (ids, keys, status, route) use the "C" collation, so
 * that order is byte order as in SQLite whatever the database's default collation, and so that the
 * ordering-key head check (`p.id < r.id` on UUIDv7 ids) means "created earlier" in both dialects.
 *
 * Indexes follow SQLite's: the queue, lease, deadline and running-by-route indexes are partial, so a run is
 * in them only while it is in that state. `runs.labels` has a GIN index for `labels @> …` filters.
 */

/** The time a UUIDv7 (a run's id, an event's key) carries: its first 48 bits, as milliseconds since the epoch. */
const ID_TIME = (column: string): string => `('x' || substr(${column}, 1, 8) || substr(${column}, 10, 4))::bit(48)::bigint`;
/** A UUIDv7 in a column, as a regular expression. */
const V7 = `'^[0-9a-f]{8}-[0-9a-f]{4}-7'`;

export const POSTGRES_MIGRATIONS: Readonly<Record<string, readonly string[]>> = {
  '0001_initial': [
    `CREATE TABLE events (
      key text COLLATE "C" PRIMARY KEY,
      source text NOT NULL,
      id text NOT NULL,
      type text NOT NULL,
      topic text,
      subject text,
      envelope jsonb NOT NULL,
      input text NOT NULL,
      hops integer NOT NULL,
      service text NOT NULL,
      org_id text NOT NULL,
      received_at bigint NOT NULL,
      run_count integer NOT NULL
    )`,
    `CREATE UNIQUE INDEX events_identity ON events (source, id)`,
    `CREATE INDEX events_unrouted ON events (received_at) WHERE run_count = 0`,
    `CREATE TABLE runs (
      id text COLLATE "C" PRIMARY KEY,
      event_key text COLLATE "C" NOT NULL,
      event_type text NOT NULL,
      route text COLLATE "C" NOT NULL,
      action text COLLATE "C" NOT NULL,
      action_type text NOT NULL,
      status text COLLATE "C" NOT NULL,
      attempts integer NOT NULL,
      max_attempts integer NOT NULL,
      created_at bigint NOT NULL,
      updated_at bigint NOT NULL,
      available_at bigint NOT NULL,
      deadline_at bigint NOT NULL,
      expires_at bigint NOT NULL,
      lease_owner text,
      lease_until bigint,
      ordering_key text,
      correlation_id text,
      labels jsonb NOT NULL,
      service text NOT NULL,
      org_id text NOT NULL,
      error_code text,
      error_message text,
      result jsonb,
      finished_at bigint
    )`,
    `CREATE INDEX runs_queue ON runs (available_at, id) WHERE status = 'queued'`,
    `CREATE INDEX runs_ordering ON runs (ordering_key, id) WHERE ordering_key IS NOT NULL AND status IN ('queued', 'running')`,
    `CREATE INDEX runs_leases ON runs (lease_until) WHERE status = 'running' AND lease_owner IS NOT NULL`,
    `CREATE INDEX runs_deadlines ON runs (deadline_at) WHERE status IN ('queued', 'running')`,
    `CREATE INDEX runs_running_route ON runs (route) WHERE status = 'running' AND lease_owner IS NOT NULL`,
    `CREATE INDEX runs_correlation ON runs (correlation_id) WHERE correlation_id IS NOT NULL`,
    `CREATE INDEX runs_event ON runs (event_key)`,
    `CREATE INDEX runs_created ON runs (created_at)`,
    `CREATE INDEX runs_labels ON runs USING gin (labels jsonb_path_ops)`,
    `CREATE TABLE attempts (
      run_id text COLLATE "C" NOT NULL,
      n integer NOT NULL,
      started_at bigint NOT NULL,
      ended_at bigint NOT NULL,
      outcome text NOT NULL,
      error_code text,
      error_message text,
      http_status integer,
      response text,
      PRIMARY KEY (run_id, n)
    )`,
    `CREATE TABLE run_events (
      seq bigserial PRIMARY KEY,
      run_id text COLLATE "C" NOT NULL,
      event_type text NOT NULL,
      status text NOT NULL,
      service text NOT NULL,
      org_id text NOT NULL,
      at bigint NOT NULL,
      payload jsonb NOT NULL
    )`,
    `CREATE TABLE dead_letters (
      id text COLLATE "C" PRIMARY KEY,
      origin text NOT NULL,
      source text NOT NULL,
      reason text NOT NULL,
      error text NOT NULL,
      details jsonb,
      raw bytea NOT NULL,
      raw_truncated boolean NOT NULL,
      content_type text,
      headers jsonb NOT NULL,
      run_id text COLLATE "C",
      event_key text COLLATE "C",
      service text NOT NULL,
      org_id text NOT NULL,
      fingerprint text NOT NULL,
      attempts integer NOT NULL,
      first_seen_at bigint NOT NULL,
      last_seen_at bigint NOT NULL,
      replayed_at bigint
    )`,
    `CREATE UNIQUE INDEX dead_letters_fingerprint ON dead_letters (fingerprint)`,
    `CREATE INDEX dead_letters_last_seen ON dead_letters (last_seen_at)`,
  ],
  '0002_access': [
    `CREATE TABLE clients (
      id text COLLATE "C" PRIMARY KEY,
      name text NOT NULL,
      service text NOT NULL,
      org_id text NOT NULL,
      permissions jsonb NOT NULL,
      secret_hash text NOT NULL,
      secret_version integer NOT NULL,
      subscription text,
      created_at bigint NOT NULL,
      updated_at bigint NOT NULL
    )`,
    `CREATE INDEX clients_org ON clients (org_id)`,
    `CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL)`,
    `CREATE TABLE audit_log (
      seq bigint PRIMARY KEY,
      at bigint NOT NULL,
      actor text NOT NULL,
      actor_kind text NOT NULL,
      service text NOT NULL,
      org_id text NOT NULL,
      action text NOT NULL,
      records jsonb NOT NULL,
      outcome text NOT NULL,
      details jsonb,
      prev_hash text NOT NULL,
      hash text NOT NULL
    )`,
    `CREATE INDEX audit_log_org ON audit_log (org_id, seq)`,
    `CREATE TABLE audit_head (id integer PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL, hash text NOT NULL)`,
    // Append-only: the dispatcher never changes or deletes an entry, and refuses to be made to.
    `CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$`,
    `CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()`,
  ],
  '0003_outputs': [
    // Dead letters in the order they were made, for the outputs' relays (kept when one is seen again).
    `ALTER TABLE dead_letters ADD COLUMN seq bigserial`,
    `CREATE INDEX dead_letters_seq ON dead_letters (seq)`,
    // Each output's relay of a stream (run_events, dead_letters): its durable cursor, and the lease of the
    // one process that relays it.
    `CREATE TABLE output_cursors (
      output text NOT NULL,
      stream text NOT NULL,
      seq bigint NOT NULL,
      owner text,
      lease_until bigint NOT NULL,
      PRIMARY KEY (output, stream)
    )`,
  ],
  '0004_json_texts': [
    // Events' envelopes and run events' payloads are written once and read back whole, never searched inside:
    // `json` keeps the text as checked, where `jsonb` builds a binary tree of it that nothing here uses.
    // Measured: about a tenth of PostgreSQL's CPU per event through a bus (BENCHMARKS.md, 2026-11-24 (II)).
    // The ALTER rewrites both tables once.
    `ALTER TABLE events ALTER COLUMN envelope TYPE json USING envelope::json`,
    `ALTER TABLE run_events ALTER COLUMN payload TYPE json USING payload::json`,
  ],
  '0005_created_by_id': [
    // A run's id carries its created_at (NewRun.id): creation order is id order, and a created_at range a
    // range of ids, through the primary key. Runs written before carry a time in their id at most a moment
    // after their created_at; they are given that time, so that the two agree for every run. Then
    // runs_created goes: every outcome (never a HOT update) wrote a new entry into it. Measured: 8 to 11 % of
    // a bus's throughput into PostgreSQL (BENCHMARKS.md, 2026-11-24 (IV)).
    `UPDATE runs SET created_at = ${ID_TIME('id')}, updated_at = greatest(updated_at, ${ID_TIME('id')})
     WHERE id ~ ${V7} AND created_at <> ${ID_TIME('id')}`,
    `DROP INDEX runs_created`,
    // Likewise an event's key carries its received_at: a received_at range is a range of keys.
    `UPDATE events SET received_at = ${ID_TIME('key')} WHERE key ~ ${V7} AND received_at <> ${ID_TIME('key')}`,
  ],
  '0006_hosts': [
    // The targets inside runs, each with its own status, log and sequence; one per (run, name).
    `CREATE TABLE hosts (
      id text COLLATE "C" PRIMARY KEY,
      run_id text COLLATE "C" NOT NULL,
      name text COLLATE "C" NOT NULL,
      status text COLLATE "C" NOT NULL,
      log text NOT NULL,
      sequence bigint,
      details jsonb NOT NULL,
      service text NOT NULL,
      org_id text NOT NULL,
      created_at bigint NOT NULL,
      updated_at bigint NOT NULL
    )`,
    `CREATE UNIQUE INDEX hosts_run_name ON hosts (run_id, name)`,
    `CREATE INDEX hosts_details ON hosts USING gin (details jsonb_path_ops)`,
    // Host events share the outbox (and its seq) with run events: a host event names its host.
    `ALTER TABLE run_events ADD COLUMN host_id text COLLATE "C"`,
  ],
  '0007_inboxes': [
    // Clients' inboxes (../inboxes.ts): messages in delivery order (seq), each once per run and client.
    // visible_at starts at 0 (visible at once, whatever the clock of the process that takes it); a lease moves
    // it into the future. The body is `text`: JSON kept exactly as sent, never searched inside.
    `CREATE TABLE inbox_messages (
      seq bigserial PRIMARY KEY,
      id text COLLATE "C" NOT NULL,
      client_id text COLLATE "C" NOT NULL,
      org_id text NOT NULL,
      topic text,
      body text NOT NULL,
      sender text NOT NULL,
      created_at bigint NOT NULL,
      run_id text COLLATE "C",
      deliveries integer NOT NULL DEFAULT 0,
      visible_at bigint NOT NULL DEFAULT 0
    )`,
    `CREATE UNIQUE INDEX inbox_messages_id ON inbox_messages (id)`,
    `CREATE UNIQUE INDEX inbox_messages_run_client ON inbox_messages (run_id, client_id) WHERE run_id IS NOT NULL`,
    // Receiving: a client's oldest first. Expiry: the oldest of all.
    `CREATE INDEX inbox_messages_client ON inbox_messages (client_id, seq)`,
    `CREATE INDEX inbox_messages_created ON inbox_messages (created_at)`,
    // Messages per client, kept in the transaction of every change: "is it full" is one row read, not a
    // count; and its row is what writers of one inbox lock (see postgres/inboxes.ts).
    `CREATE TABLE inbox_counts (client_id text COLLATE "C" PRIMARY KEY, messages integer NOT NULL)`,
  ],
};
