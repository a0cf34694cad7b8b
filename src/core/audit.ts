/**
 * The audit log: an append-only, hash-chained record of who changed what. Every state-changing API call,
 * every side effect of an action and every answer to a human prompt appends an **audit entry**.
 *
 * Each entry's `hash` is SHA-256 over the previous entry's hash and the entry's own content, so that
 * changing, removing or reordering an entry breaks the chain at that point; the store keeps the head (the
 * last sequence number and hash) beside the log, so that removing the last entries shows too.
 * `verifyAuditChain` walks the chain and names each break.
 */

import { createHash } from 'node:crypto';
import { Batcher } from './batcher.js';
import type { PrincipalKind } from './principal.js';

/** The hash before the first entry. */
export const GENESIS_HASH = '0'.repeat(64);

/** A principal's kind, or `cli` (an operator's command) or `action` (a route's action acting for an event). */
export type ActorKind = PrincipalKind | 'cli' | 'action';

export interface NewAuditEntry {
  at: number;
  /** Who: the principal id (`psk:billing`, `client:…`, `identity:alice`), `cli:<user>`, or `route:<name>` for an action. */
  actor: string;
  actorKind: ActorKind;
  /** On behalf of which service and tenant. */
  service: string;
  orgId: string;
  /** What: `events.create`, `runs.cancel`, `action.http`, `clients.create`, `token.issue`, … */
  action: string;
  /** Which records: run ids, event keys, client ids … */
  records: string[];
  /** `ok`, or the error code the operation ended with. */
  outcome: string;
  details: Record<string, unknown> | null;
}

export interface AuditEntry extends NewAuditEntry {
  seq: number;
  prevHash: string;
  hash: string;
}

/** Keys sorted at every level: one text for one value, whatever order its keys were built in. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += (i === 0 ? '' : ',') + canonicalJson(value[i]);
    return out + ']';
  }
  const o = value as Record<string, unknown>;
  // Plain sort: the default order compares UTF-16 code units, as `<` does.
  const keys = Object.keys(o).sort();
  let out = '{';
  for (const k of keys) {
    const v = o[k];
    if (v === undefined) continue;
    out += (out.length === 1 ? '' : ',') + JSON.stringify(k) + ':' + canonicalJson(v);
  }
  return out + '}';
}

/** The hashed text of an entry: its content without the sequence number. */
function auditContent(e: NewAuditEntry): string {
  return canonicalJson([e.at, e.actor, e.actorKind, e.service, e.orgId, e.action, e.records, e.outcome, e.details]);
}

function hashAfter(prevHash: string, content: string): string {
  return createHash('sha256').update(prevHash).update('\n').update(content).digest('hex');
}

/** The hash of an entry that follows `prevHash`. The sequence number is not part of it: the chain is. */
export function auditHash(prevHash: string, e: NewAuditEntry): string {
  return hashAfter(prevHash, auditContent(e));
}

// eslint-disable-next-line no-control-regex -- U+0000 is what PostgreSQL cannot store
const UNSTORABLE = /[\u0000\ud800-\udfff]/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** Text every store keeps as it is (PostgreSQL cannot hold U+0000 or lone surrogates): hashed as stored. */
function storable<T>(value: T): T {
  // eslint-disable-next-line no-control-regex -- U+0000 is what PostgreSQL cannot store
  if (typeof value === 'string') return (UNSTORABLE.test(value) ? value.replace(/\u0000/g, '\ufffd').replace(LONE_SURROGATE, '\ufffd') : value) as T;
  if (Array.isArray(value)) return value.map(storable) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => [storable(k), storable(v)])) as T;
  }
  return value;
}

/**
 * What JSON text shows of a string `storable` would change: U+0000 and lone surrogates are written as
 * escapes (paired surrogates are not). A text without any holds nothing to change (a false match, such as
 * an escaped backslash before `u0000`, only costs the slower way).
 */
const UNSTORABLE_ESCAPE = /\\u(0000|d[89a-f])/i;

/** Entries chained after `prevHash`, in order, with their text made storable first. */
export function chainEntries(prevHash: string, firstSeq: number, entries: NewAuditEntry[]): AuditEntry[] {
  let prev = prevHash;
  return entries.map((raw, i) => {
    let e = raw;
    let content = auditContent(raw);
    if (UNSTORABLE_ESCAPE.test(content)) {
      e = storable(raw);
      content = auditContent(e);
    }
    const hash = hashAfter(prev, content);
    const out = { ...e, seq: firstSeq + i, prevHash: prev, hash };
    prev = hash;
    return out;
  });
}

export type AuditProblemKind = 'modified' | 'removed' | 'reordered' | 'inserted';

export interface AuditProblem {
  seq: number;
  kind: AuditProblemKind;
  message: string;
}

export interface AuditHead {
  seq: number;
  hash: string;
}

/**
 * Walks the log in sequence order and names every break:
 * - **modified**: an entry's content no longer gives its hash, or its hash was recomputed after a change
 *   (the next entry then no longer follows it);
 * - **removed**: sequence numbers are missing, or the log ends before the recorded head;
 * - **reordered**: an entry follows another than the one before it, and that one is elsewhere in the log;
 * - **inserted**: an entry that follows nothing in the log.
 *
 * `entries` is read twice (pass a function that makes a fresh iterator), so that logs larger than memory can
 * be checked page by page; only the first 16 hex digits of each hash are held.
 */
export async function verifyAuditChain(
  entries: () => AsyncIterable<AuditEntry>,
  head: AuditHead | null,
): Promise<{ checked: number; problems: AuditProblem[]; last: AuditHead | null }> {
  const bySeqOfHash = new Map<string, number>();
  for await (const e of entries()) bySeqOfHash.set(e.hash.slice(0, 16), e.seq);

  const problems: AuditProblem[] = [];
  let expected = GENESIS_HASH;
  let prevSeq = 0;
  let checked = 0;
  for await (const e of entries()) {
    checked += 1;
    if (auditHash(e.prevHash, e) !== e.hash) {
      problems.push({ seq: e.seq, kind: 'modified', message: `entry ${e.seq} was changed: its content does not give its hash` });
    }
    if (e.prevHash !== expected) {
      const followed = e.prevHash === GENESIS_HASH ? 0 : bySeqOfHash.get(e.prevHash.slice(0, 16));
      if (e.seq !== prevSeq + 1 && (followed === prevSeq || followed === undefined)) {
        problems.push({
          seq: e.seq,
          kind: 'removed',
          message: e.seq - prevSeq === 2 ? `entry ${prevSeq + 1} was removed` : `entries ${prevSeq + 1} to ${e.seq - 1} were removed`,
        });
      } else if (followed !== undefined && followed !== prevSeq) {
        problems.push({
          seq: e.seq,
          kind: 'reordered',
          message: `entry ${e.seq} was moved: it was written after entry ${followed === 0 ? 'none (it was the first)' : followed}, not after entry ${prevSeq}`,
        });
      } else if (e.seq !== prevSeq + 1) {
        problems.push({ seq: e.seq, kind: 'removed', message: `entries ${prevSeq + 1} to ${e.seq - 1} were removed` });
      } else if (prevSeq > 0) {
        problems.push({ seq: prevSeq, kind: 'modified', message: `entry ${prevSeq} was changed and its hash recomputed: entry ${e.seq} no longer follows it` });
      } else {
        problems.push({ seq: e.seq, kind: 'inserted', message: `entry ${e.seq} follows no entry of this log` });
      }
    }
    expected = e.hash;
    prevSeq = e.seq;
  }
  if (head !== null && head.seq > 0) {
    if (head.seq > prevSeq) {
      problems.push({ seq: prevSeq + 1, kind: 'removed', message: `the log ends at entry ${prevSeq}, but entries up to ${head.seq} were written` });
    } else if (head.seq === prevSeq && head.hash !== expected) {
      problems.push({ seq: prevSeq, kind: 'modified', message: `entry ${prevSeq} is not the entry that was last written` });
    }
  }
  return { checked, problems, last: prevSeq === 0 ? null : { seq: prevSeq, hash: expected } };
}

/** Where audit entries are kept (the store's access part). */
export interface AuditSink {
  appendAudit(entries: NewAuditEntry[]): Promise<AuditEntry[]>;
}

/**
 * Appends entries in batches: callers wait for their own entries to be committed; everything that arrives
 * meanwhile shares the next commit, so auditing many small requests costs one transaction per batch.
 */
export class Auditor {
  readonly #batcher: Batcher<NewAuditEntry, AuditEntry>;

  constructor(sink: AuditSink) {
    this.#batcher = new Batcher((entries) => sink.appendAudit(entries), 500);
  }

  async append(entry: NewAuditEntry): Promise<AuditEntry> {
    const [written] = await this.#batcher.add([entry]);
    return written!;
  }

  async appendMany(entries: NewAuditEntry[]): Promise<AuditEntry[]> {
    return entries.length === 0 ? [] : this.#batcher.add(entries);
  }

  drain(): Promise<void> {
    return this.#batcher.drain();
  }
}
