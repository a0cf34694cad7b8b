/**
 * The inbox part of the store: each client's inbox, the messages the `deliver` action put there for it to
 * receive (../../shared/DESIGN.md: "client … an inbox"). Both stores implement it, and the shared store
 * suite tests it on both.
 *
 * - Messages are kept in delivery order (`seq`), per client, each once per run (`(runId, clientId)` is
 *   unique), so that a run delivered again after a crash does not double a message.
 * - An inbox is bounded: at most `maxMessages` per client. When a delivery finds an inbox full, `whenFull`
 *   says what happens: `refuse` leaves the message out of that inbox (the caller reports it), `drop-oldest`
 *   removes the oldest messages to make room (the caller counts and reports them).
 * - Receiving takes the oldest visible messages: `pop` removes them; `lease` hides them until `leaseUntil`
 *   (received again after that unless acknowledged) and counts the delivery.
 * - `expire` removes messages older than an age, a batch at a time, for the sweeper.
 * - A per-client count (kept in the same transactions) makes "is it full" one row read, not a count.
 */

export interface InboxMessage {
  /** A UUIDv7, given by the caller. */
  id: string;
  clientId: string;
  orgId: string;
  /** The topic it was sent with; null for a broadcast. */
  topic: string | null;
  /** The body as JSON text, exactly as sent. */
  body: string;
  /** Who sent it (a client id, or what the route names). */
  sender: string;
  /** When it was delivered (ms since the epoch). */
  createdAt: number;
  /** The run that delivered it; null when it came another way. */
  runId: string | null;
  /** How often it was handed out under a lease (0 for a message never received, or received by pop). */
  deliveries: number;
}

export type NewInboxMessage = Omit<InboxMessage, 'deliveries'>;

export type WhenFull = 'refuse' | 'drop-oldest';

export interface InboxLimits {
  /** Most messages one client's inbox holds. */
  maxMessages: number;
  whenFull: WhenFull;
}

export interface PutResult {
  /** Ids of the messages stored now. */
  stored: string[];
  /** Messages already there (the same run and client): not stored again. */
  duplicates: string[];
  /** Messages left out because their client's inbox was full (`refuse`). */
  refused: Array<{ id: string; clientId: string }>;
  /** Messages removed to make room (`drop-oldest`): their ids and clients. */
  dropped: Array<{ id: string; clientId: string }>;
}

export interface TakeOptions {
  clientId: string;
  /** At most this many, oldest first. */
  max: number;
  now: number;
  /** Absent: pop (the messages are removed). Given: a lease, the messages hidden until then. */
  leaseUntil?: number;
}

export interface InboxCount {
  clientId: string;
  /** Messages in the inbox, visible or leased. */
  messages: number;
}

export interface InboxStore {
  /** Store messages, in order, in one transaction; one outcome per message (see `PutResult`). */
  put(messages: NewInboxMessage[], limits: InboxLimits): Promise<PutResult>;
  /** The oldest visible messages of a client, removed (pop) or leased. */
  take(options: TakeOptions): Promise<InboxMessage[]>;
  /** Remove a client's messages by id (acknowledged); how many there were. Ids of another client are ignored. */
  ack(clientId: string, ids: string[]): Promise<number>;
  /** Remove messages created before `before`, at most `limit`; which clients lost how many. */
  expire(before: number, limit: number): Promise<Array<{ clientId: string; messages: number }>>;
  /** Messages per client (all clients with any when `clientIds` is absent). */
  counts(clientIds?: string[]): Promise<InboxCount[]>;
  /** Empty a client's inbox (the client is deleted); how many messages it held. */
  clear(clientId: string): Promise<number>;
}
