/**
 * Intake: the way of an event from the bytes an input received to committed runs.
 *
 *   decode ─▶ check envelope ─▶ check type schema ─▶ plan runs ─▶ group commit ─▶ answer
 *      └──────── any problem ────────┴──▶ dead letter (raw bytes, reason, problems) ─▶ coded error
 *
 * A single event that is bad is refused with every problem named by a JSON pointer, and the raw bytes are
 * kept as a dead letter. A batch keeps its good events: each bad one is refused on its own (its index, code
 * and problems in the answer) and kept as a dead letter of its own, a structured CloudEvent that can be
 * replayed alone. Only when every event of a batch is bad, or the message as a whole is (not JSON, too many
 * events, too many hops), is the message refused whole and kept as one dead letter. Sending a corrected
 * event again is safe because (`source`, `id`) identifies an event: a duplicate is answered `duplicate` and
 * makes no new runs.
 *
 * The caller acknowledges its input only after `receive` resolves: by then the events, their runs and the
 * runs' `create` events are committed, or the dead letter is.
 */

import type { Logger } from 'pino';
import { duration, section, Type, type Options } from './options.js';
import { newId } from './ids.js';
import type { NewAuditEntry } from './audit.js';
import { Batcher, type Chain } from './batcher.js';
import { checkEnvelope, escapePointer } from './envelope.js';
import { DispatcherError, storeWithin, toDispatcherError, type ErrorProblem } from './errors.js';
import type { Metrics } from './metrics.js';
import type { RoutePlan } from './routes.js';
import type { TypeRegistry } from './type-registry.js';
import type { CloudEvent, Owner, RunError } from './types.js';
import { plannedRun } from './run-state.js';
import type { ClaimedRun, IntakeItem, IntakeResult, NewDeadLetter, NewRun, RunOutcome, Store } from '../store/types.js';

export const INTAKE_SECTION = section(
  {
    strict: Type.Boolean({ description: 'Reject events whose type is not registered under `types` (dead letter, `unknown_type`).', default: false }),
    maxBatch: Type.Integer({ minimum: 1, description: 'Most events in one batch (`batch_too_large` beyond).', default: 1000 }),
    maxDepth: Type.Integer({ minimum: 1, description: 'Deepest JSON nesting accepted (`too_deep` beyond).', default: 32 }),
    maxHops: Type.Integer({
      minimum: 0,
      description: 'Most `publish` hops an event may have gone through (`hop_limit_exceeded` beyond): stops routing loops.',
      default: 8,
    }),
    commitTimeout: duration(
      'Longest wait for the store to commit what a message brought: past it the sender gets `503 store_unavailable` with `Retry-After` ' +
        '(a bus message is not acknowledged and comes again). Sending again is safe: what was committed meanwhile is a duplicate.',
      '5s',
    ),
  },
  { description: 'How events are taken in and checked.' },
);
export type IntakeConfig = Options<typeof INTAKE_SECTION>;

export interface IntakeSettings extends IntakeConfig {
  /** Raw bytes kept per dead letter. */
  deadLetterMaxBytes: number;
}

/** What an input hands to intake: the bytes as received, and who sent them. */
export interface InboundMessage extends Owner {
  input: string;
  raw: Buffer;
  contentType: string | null;
  /** Headers or message properties worth keeping for a replay (content type, `ce-*`). */
  headers: Record<string, string>;
  hops?: number;
  /** The raw bytes are only the start of what was received (the rest was over a limit). */
  rawTruncated?: boolean;
  /** The audit entry of taking the message in, given its results and how many of a batch's events were refused: committed with its events. */
  audit?: (results: IntakeResult[], refused: number) => NewAuditEntry;
}

/** Candidate events from one message; `batch` says whether problems are pointed at as `/<index>/…`. */
export interface Decoded {
  events: unknown[];
  batch: boolean;
}

/** Turns a message into candidate events; throws a DispatcherError (`invalid_json`, …) when it cannot. */
export type Decoder = (message: InboundMessage) => Decoded;

/** A message whose events passed every check (those of a batch that did not were taken out: `refused`). */
interface Checked {
  message: InboundMessage;
  events: unknown[];
  refused: RefusedEvent[];
  /** A batch with refused events: all of them, as received. */
  original?: unknown[];
}

/** An event of a batch that was refused while the others were taken: its place, why, and its dead letter. */
export interface RefusedEvent {
  /** Its index in the batch. */
  index: number;
  /** The problems point into the batch (`/3/data/severity`). */
  error: DispatcherError;
  /** The dead letter that keeps it (a structured CloudEvent of its own). */
  deadLetter: string;
}

export interface IntakeAnswer {
  /** One per accepted or duplicate event, in the message's order (refused events left out). */
  results: IntakeResult[];
  /** The events of a batch that were refused, by index; empty when all were taken. */
  refused: RefusedEvent[];
  /** The message's audit entry was committed with its events. */
  audited: boolean;
}

/** What the check found: the message refused whole, or the indexes of a batch's bad events with why. */
type Verdict = { whole: DispatcherError } | { whole: null; refused: Map<number, DispatcherError> };

export interface DirectDispatch {
  reserve(wanted: number): number;
  /** After `reserve` gave less than wanted: more room, if the runs in flight free it soon (see Runner). */
  reserveWithin(wanted: number): Promise<number>;
  adopt(claimed: ClaimedRun[]): void;
  release(n: number): void;
  leaseFor(now: number): { owner: string; leaseUntil: number };
  /** Accept-first (see `Intake.receiveAccepted`): a first attempt before the commit, then its outcome kept or dropped. */
  attemptFirst(claimed: ClaimedRun): Promise<RunOutcome>;
  /** Record the outcome of a run that was stored; resolves once it is recorded. */
  keep(outcome: RunOutcome): Promise<void>;
  drop(runId: string): void;
}

/** A run whose first attempt was refused before anything was stored (accept-first). */
export interface RefusedRun {
  /** The index of its event among the message's accepted events. */
  event: number;
  runId: string;
  route: string;
  action: string;
  error: RunError;
  /** The receiver's HTTP status, when it gave one. */
  httpStatus: number | null;
}

export interface AcceptedAnswer extends IntakeAnswer {
  /** The runs whose first attempt was refused: not stored, nor their event when none of its runs was accepted. */
  refusedRuns: RefusedRun[];
}

export interface IntakeDeps {
  store: Store;
  types: TypeRegistry;
  plan: () => RoutePlan;
  settings: IntakeSettings;
  metrics: Metrics;
  log: Logger;
  /** Called after a commit that made runs: `queued` of them wait for a claim (the rest were dispatched). */
  onRuns: (count: number, queued: number) => void;
  /** Direct dispatch to this process's runner (see runner.ts); absent: every run is queued. */
  dispatch?: DirectDispatch;
  now?: () => number;
}

export class Intake {
  readonly #deps: IntakeDeps;
  readonly #batcher: Batcher<IntakeItem, IntakeResult>;
  readonly #deadLetters: Batcher<NewDeadLetter, string>;
  #closed = false;
  #lastNow = -Infinity;

  constructor(deps: IntakeDeps) {
    this.#deps = deps;
    this.#batcher = new Batcher((items) => deps.store.commitIntake(items), Math.max(deps.settings.maxBatch, 1000));
    this.#deadLetters = new Batcher((items) => deps.store.addDeadLetters(items), 500);
  }

  get settings(): IntakeSettings {
    return this.#deps.settings;
  }

  /** Stop taking events: `receive` answers `shutting_down` from now on. */
  close(): void {
    this.#closed = true;
  }

  async drain(): Promise<void> {
    await this.#batcher.drain();
    await this.#deadLetters.drain();
  }

  /**
   * Decode, check, plan and commit one message. Resolves with one result per event; rejects with a coded
   * DispatcherError after keeping the dead letter.
   */
  receive(message: InboundMessage, decode: Decoder): Promise<IntakeAnswer> {
    return this.receiveAll([message], decode)[0]!;
  }

  /**
   * `receive` for many messages at once (a bus input's deliveries of one tick): each message is decoded and
   * checked on its own, and a bad one is a dead letter alone, but the good ones are planned, committed and
   * counted together, in this order, so the cost of a message is not paid per event. One answer per
   * message, in the order given. Calls given the same `chain` are committed in the order they were made,
   * and none after one whose commit failed (see `Chain`).
   */
  receiveAll(messages: InboundMessage[], decode: Decoder, chain?: Chain): Array<Promise<IntakeAnswer>> {
    if (this.#closed) return messages.map(() => Promise.reject(new DispatcherError('shutting_down', 'the dispatcher is stopping; send again later')));
    const checked: Checked[] = [];
    // A rejected message's answer, or the checked message that waits for the commit.
    const early = messages.map((message): Promise<IntakeAnswer> | Checked => {
      const decoded = this.#decode(message, decode);
      const sorted = decoded instanceof DispatcherError ? decoded : this.#sort(message, decoded);
      if (sorted instanceof DispatcherError) {
        return this.reject(message, sorted).then((e) => {
          throw e;
        });
      }
      checked.push(sorted);
      return sorted;
    });
    const committed = checked.length > 0 ? this.#commit(checked, chain) : undefined;
    let next = 0;
    return early.map((answer) => {
      if (answer instanceof Promise) return answer;
      const at = next++;
      return this.#answer(answer, committed!.then((all) => all[at]!));
    });
  }

  /** The answer of a checked message: its commit, and the dead letters of its refused events. */
  async #answer(checked: Checked, committed: Promise<IntakeAnswer>): Promise<IntakeAnswer> {
    if (checked.refused.length === 0) return committed;
    const [answer] = await Promise.all([committed, this.#keepRefused(checked.message, checked.refused, checked.original!)]);
    return answer;
  }

  /** Check, plan and commit events already decoded. */
  async accept(message: InboundMessage, decoded: Decoded): Promise<IntakeAnswer> {
    const sorted = this.#sort(message, decoded);
    if (sorted instanceof DispatcherError) throw await this.reject(message, sorted);
    return this.#answer(sorted, this.#commit([sorted]).then((all) => all[0]!));
  }

  /**
   * Accept-first: a caller that must answer with what its runs' actions said (Playbook's dispatch answers
   * each item with the run's id, or with the recipient's refusal) has each planned run's first attempt made
   * before anything is stored. A run whose attempt was accepted (it succeeded, or it waits for an answer)
   * is committed with its event, as claimed by this worker, and its outcome then recorded as any other; a
   * run whose attempt was refused is not stored at all (nor its event, when none of its runs was
   * accepted), and the answer says why. Nothing is lost: the caller hears of every refusal at once.
   *
   * If the commit fails after actions were accepted, what they did stays done without a run: that is
   * logged with each run's id and answered `store_unavailable`.
   */
  async receiveAccepted(message: InboundMessage, decode: Decoder): Promise<AcceptedAnswer> {
    if (this.#closed) throw new DispatcherError('shutting_down', 'the dispatcher is stopping; send again later');
    const dispatch = this.#deps.dispatch;
    if (dispatch === undefined) throw new DispatcherError('internal', 'accept-first needs the runner of this process');
    const decoded = this.#decode(message, decode);
    const sorted = decoded instanceof DispatcherError ? decoded : this.#sort(message, decoded);
    if (sorted instanceof DispatcherError) throw await this.reject(message, sorted);
    const now = this.#now();
    const plan = this.#deps.plan();
    const lease = dispatch.leaseFor(now);
    const planned = sorted.events.map((candidate): IntakeItem => {
      const event = candidate as CloudEvent;
      const { runs } = plan.planRuns(event, now);
      for (const r of runs) r.claimedBy = lease;
      return { record: intakeRecord(message, event, now), envelope: JSON.stringify(event), runs };
    });
    const attempts = await Promise.all(
      planned.map((item) => Promise.all(item.runs.map((r) => dispatch.attemptFirst({ run: plannedRun(item.record, r), envelope: item.envelope!, hops: item.record.hops })))),
    );
    const refusedRuns: RefusedRun[] = [];
    const kept: RunOutcome[] = [];
    const items: IntakeItem[] = [];
    planned.forEach((item, i) => {
      const outcomes = attempts[i]!;
      const accepted = item.runs.filter((_, j) => acceptedOutcome(outcomes[j]!));
      outcomes.forEach((o, j) => {
        if (acceptedOutcome(o)) kept.push(o);
        else {
          const r = item.runs[j]!;
          refusedRuns.push({ event: i, runId: r.id, route: r.route, action: r.action, error: o.error ?? { code: 'internal', message: 'refused' }, httpStatus: o.attempt.httpStatus });
          dispatch.drop(r.id);
        }
      });
      // An event all of whose runs were refused is not kept; one no route matched is, as intake keeps it.
      if (item.runs.length > 0 && accepted.length === 0) return;
      items.push({ ...item, runs: accepted });
    });
    auditLast(items, 0, message, sorted.refused.length);
    let results: IntakeResult[];
    try {
      results = items.length === 0 ? [] : await storeWithin(this.#batcher.add(items), this.#deps.settings.commitTimeout, 'commit');
    } catch (err) {
      for (const o of kept) dispatch.drop(o.run.id);
      this.#deps.log.error({ err, runs: kept.map((o) => ({ runId: o.run.id, correlationId: o.correlationId ?? null })) }, 'accepted runs could not be committed: their actions acted without a run');
      throw new DispatcherError('store_unavailable', `the store did not take the events: ${(err as Error).message}`, { cause: err });
    }
    const stored = new Set<string>();
    results.forEach((r) => {
      if (r.status === 'accepted') for (const id of r.runIds) stored.add(id);
    });
    const recording: Array<Promise<void>> = [];
    for (const o of kept) {
      if (stored.has(o.run.id)) recording.push(dispatch.keep(o));
      else dispatch.drop(o.run.id);
    }
    await Promise.all(recording);
    const accepted = results.filter((r) => r.status === 'accepted').length;
    if (accepted > 0) this.#deps.metrics.eventsReceived.inc({ input: message.input, outcome: 'accepted' }, accepted);
    if (accepted < results.length) this.#deps.metrics.eventsReceived.inc({ input: message.input, outcome: 'duplicate' }, results.length - accepted);
    if (sorted.refused.length > 0) await this.#keepRefused(message, sorted.refused, sorted.original!);
    return { results, refused: sorted.refused, audited: items.length > 0 && message.audit !== undefined, refusedRuns };
  }

  #decode(message: InboundMessage, decode: Decoder): Decoded | DispatcherError {
    try {
      const decoded = decode(message);
      if (decoded.events.length > this.#deps.settings.maxBatch) {
        return new DispatcherError('batch_too_large', `the batch holds ${decoded.events.length} events; the limit is ${this.#deps.settings.maxBatch}`);
      }
      return decoded;
    } catch (err) {
      return toDispatcherError(err);
    }
  }

  /**
   * What is wrong with a message: the message as a whole (too many hops; a single event, or a batch whose
   * every event is bad, with every problem named), or the batch's bad events one by one.
   */
  #check(message: InboundMessage, decoded: Decoded): Verdict {
    const candidates = decoded.events;
    const { settings } = this.#deps;
    const hops = message.hops ?? 0;
    if (hops > settings.maxHops) {
      return { whole: new DispatcherError('hop_limit_exceeded', `the event went through ${hops} hops; the limit is ${settings.maxHops} (a route publishes into itself?)`) };
    }
    // Only bodies that could hold them are searched (a NUL byte, or a \u escape of NUL or a surrogate; a long
    // run of digits or a large exponent).
    const checkStrings = mayHoldUnstorableText(message.raw);
    const outOfRange = numbersOutOfRange(message.raw);
    const refused = new Map<number, DispatcherError>();
    for (let i = 0; i < candidates.length; i++) {
      const found = this.#checkEvent(candidates[i], decoded.batch ? `/${i}` : '', checkStrings, outOfRange);
      if (found !== null) refused.set(i, eventError(found.code, found.problems));
    }
    if (refused.size === 0 || (decoded.batch && refused.size < candidates.length)) return { whole: null, refused };
    // Nothing to take: one refusal with every problem, its code that of the first event's.
    const all = [...refused.values()];
    const problems = all.flatMap((e) => e.problems ?? []);
    return { whole: eventError(all[0]!.code as EventErrorCode, problems) };
  }

  /** The problems of one event (its code by the first), or null when it passes. */
  #checkEvent(
    candidate: unknown,
    pointer: string,
    checkStrings: boolean,
    outOfRange: { integers: Set<number> } | null,
  ): { code: EventErrorCode; problems: ErrorProblem[] } | null {
    const { types, settings } = this.#deps;
    const envelopeProblems = checkEnvelope(candidate, pointer);
    if (envelopeProblems.length > 0) return { code: 'invalid_event', problems: envelopeProblems };
    if (checkStrings) {
      const bad = unstorableString(candidate, pointer);
      if (bad !== null) return { code: 'invalid_event', problems: [{ pointer: bad, message: 'strings must not hold U+0000 or unpaired surrogates (no store can keep them as text)' }] };
    }
    if (outOfRange !== null) {
      const bad = numberOutOfRange(candidate, pointer, outOfRange.integers);
      if (bad !== null) return { code: 'invalid_event', problems: [bad] };
    }
    const e = candidate as CloudEvent;
    if (e.data !== undefined && depthExceeds(e.data, settings.maxDepth)) {
      return { code: 'too_deep', problems: [{ pointer: `${pointer}/data`, message: `nests deeper than ${settings.maxDepth} levels` }] };
    }
    if (!types.has(e.type)) {
      return settings.strict ? { code: 'unknown_type', problems: [{ pointer: `${pointer}/type`, message: `type "${e.type}" is not registered` }] } : null;
    }
    const schemaProblems = types.check(e.type, e.data, pointer);
    return schemaProblems.length > 0 ? { code: 'schema_violation', problems: schemaProblems } : null;
  }

  /** A checked message, or its whole refusal. */
  #sort(message: InboundMessage, decoded: Decoded): Checked | DispatcherError {
    const verdict = this.#check(message, decoded);
    if (verdict.whole !== null) return verdict.whole;
    if (verdict.refused.size === 0) return { message, events: decoded.events, refused: [] };
    return {
      message,
      events: decoded.events.filter((_, i) => !verdict.refused.has(i)),
      refused: [...verdict.refused].map(([index, error]) => ({ index, error, deadLetter: '' })),
      original: decoded.events,
    };
  }

  /**
   * Keep each refused event of a batch as a dead letter of its own: the event as a structured CloudEvent,
   * its problems pointing into it, and its index in the batch. Resolves once they are committed; a failure
   * is `store_unavailable` (the message is not to be acknowledged: sent again, its good events are duplicates).
   */
  async #keepRefused(message: InboundMessage, refused: RefusedEvent[], events: unknown[]): Promise<void> {
    const letters = refused.map(({ index, error }) => {
      // Replayed alone, as the structured event it is, whatever decoder the batch came through.
      const alone: InboundMessage = {
        ...message,
        raw: Buffer.from(JSON.stringify(events[index])),
        rawTruncated: false,
        contentType: STRUCTURED,
        headers: { 'content-type': STRUCTURED, [DECODER_HEADER]: 'http' },
      };
      return this.#letter(alone, withinEvent(error, index), { index });
    });
    let ids: string[];
    try {
      ids = await storeWithin(this.#deadLetters.add(letters), this.#deps.settings.commitTimeout, 'keep the dead letters');
    } catch (err) {
      this.#deps.log.error({ err, input: message.input, refused: refused.length }, 'could not keep the dead letters of a batch\'s refused events');
      const e = new DispatcherError('store_unavailable', `the store did not take the dead letters of ${refused.length} refused events: ${(err as Error).message}`, { cause: err });
      e.deadLetterLost = true;
      throw e;
    }
    refused.forEach((r, i) => (r.deadLetter = ids[i]!));
    this.#deps.log.warn(
      { input: message.input, refused: refused.map((r) => ({ index: r.index, code: r.error.code, dead_letter: r.deadLetter })) },
      `${refused.length} of the batch's ${events.length} events refused and kept as dead letters; the others were taken`,
    );
  }

  /** Plan and group-commit the events of checked messages, in order; one answer per message. */
  async #commit(checked: Checked[], chain?: Chain): Promise<IntakeAnswer[]> {
    const now = this.#now();
    const plan = this.#deps.plan();
    const items: IntakeItem[] = [];
    const ends: number[] = [];
    let eligible = 0;
    for (const { message, events, refused } of checked) {
      const start = items.length;
      for (const candidate of events) {
        const event = candidate as CloudEvent;
        const { runs } = plan.planRuns(event, now);
        for (const r of runs) if (dispatchable(r, plan)) eligible += 1;
        items.push({ record: intakeRecord(message, event, now), runs });
      }
      auditLast(items, start, message, refused.length);
      ends.push(items.length);
    }
    // Direct dispatch: as many runs as this worker has room for are committed already claimed by it.
    const dispatch = this.#deps.dispatch;
    let reserved = eligible > 0 && dispatch !== undefined ? dispatch.reserve(eligible) : 0;
    // Short of room, a call may wait a little for the runs in flight to free some. Not a bus input's
    // hand-over (a chain): its lists must reach the commit in the order they came. Nor an event a `publish`
    // action sends (hops > 0): that action holds a slot of its own while it waits.
    if (reserved < eligible && chain === undefined && dispatch !== undefined && checked.every((c) => (c.message.hops ?? 0) === 0)) {
      reserved += await dispatch.reserveWithin(eligible - reserved);
    }
    if (reserved > 0) {
      const lease = dispatch!.leaseFor(this.#now());
      let left = reserved;
      for (const item of items) {
        if (left === 0) break;
        item.envelope = JSON.stringify(item.record.event);
        for (const r of item.runs) {
          if (left === 0) break;
          if (!dispatchable(r, plan)) continue;
          r.claimedBy = lease;
          left -= 1;
        }
      }
    }
    let results: IntakeResult[];
    try {
      // A store that stops answering must not leave the sender waiting: past commitTimeout it is told to send
      // again (the commit may still land; then what it sends again is a duplicate).
      results = await storeWithin(this.#batcher.add(items, chain), this.#deps.settings.commitTimeout, 'commit');
    } catch (err) {
      if (reserved > 0) dispatch!.release(reserved);
      const e = toDispatcherError(err);
      this.#deps.log.error({ err }, 'intake commit failed');
      throw e.code === 'internal' ? new DispatcherError('store_unavailable', `the store did not take the events: ${e.message}`, { cause: err }) : e;
    }
    // Counted per call and input, not per event: label lookups cost more than the counting.
    let runCount = 0;
    const planned = new Map<string, number>();
    const counts = new Map<string, { accepted: number; duplicate: number; unrouted: number }>();
    const answers: IntakeAnswer[] = [];
    let from = 0;
    for (let k = 0; k < checked.length; k++) {
      const to = ends[k]!;
      const input = checked[k]!.message.input;
      let c = counts.get(input);
      if (c === undefined) counts.set(input, (c = { accepted: 0, duplicate: 0, unrouted: 0 }));
      for (let i = from; i < to; i++) {
        const r = results[i]!;
        if (r.status === 'duplicate') {
          c.duplicate += 1;
          continue;
        }
        c.accepted += 1;
        if (r.runIds.length === 0) c.unrouted += 1;
        runCount += r.runIds.length;
        for (const run of items[i]!.runs) planned.set(run.route, (planned.get(run.route) ?? 0) + 1);
      }
      answers.push({
        results: from === 0 && to === results.length ? results : results.slice(from, to),
        refused: checked[k]!.refused,
        audited: to > from && items[to - 1]!.audit !== undefined,
      });
      from = to;
    }
    const m = this.#deps.metrics;
    for (const [input, c] of counts) {
      if (c.accepted > 0) m.eventsReceived.inc({ input, outcome: 'accepted' }, c.accepted);
      if (c.duplicate > 0) m.eventsReceived.inc({ input, outcome: 'duplicate' }, c.duplicate);
      if (c.unrouted > 0) m.eventsUnrouted.inc({ input }, c.unrouted);
    }
    for (const [route, n] of planned) m.runsPlanned.inc({ route }, n);
    let adoptedCount = 0;
    if (reserved > 0) {
      const adopted: ClaimedRun[] = [];
      for (let i = 0; i < results.length; i++) {
        if (results[i]!.status !== 'accepted') continue;
        const item = items[i]!;
        for (const r of item.runs) if (r.claimedBy !== undefined) adopted.push({ run: plannedRun(item.record, r), envelope: item.envelope!, hops: item.record.hops });
      }
      dispatch!.adopt(adopted);
      adoptedCount = adopted.length;
      reserved -= adopted.length;
      if (reserved > 0) dispatch!.release(reserved);
    }
    if (runCount > 0) this.#deps.onRuns(runCount, runCount - adoptedCount);
    return answers;
  }

  /** Keep the message as a dead letter, count it, and return the error to throw. */
  async reject(message: InboundMessage, error: DispatcherError): Promise<DispatcherError> {
    try {
      const [id] = await storeWithin(this.#deadLetters.add([this.#letter(message, error)]), this.#deps.settings.commitTimeout, 'keep the dead letter');
      this.#deps.log.warn({ input: message.input, origin: 'intake', reason: error.code, deadLetter: id, err: error.message }, 'refused at intake; kept as a dead letter');
    } catch (err) {
      // The caller still gets the coded error; losing the dead letter is logged, never silent, and a bus
      // input leaves the message unacknowledged.
      this.#deps.log.error({ err, reason: error.code }, 'could not keep a dead letter');
      error.deadLetterLost = true;
    }
    return error;
  }

  /** The dead letter that keeps `message`, refused with `error` (counted as such), its bytes cut at `deadLetters.maxBytes`. */
  #letter(message: InboundMessage, error: DispatcherError, details: Record<string, unknown> = {}): NewDeadLetter {
    const max = this.#deps.settings.deadLetterMaxBytes;
    const truncated = message.rawTruncated === true || message.raw.length > max;
    this.#deps.metrics.eventsReceived.inc({ input: message.input, outcome: 'rejected' });
    this.#deps.metrics.deadLetters.inc({ origin: 'intake', reason: error.code });
    const all = { ...details, ...(error.problems ? { problems: error.problems } : {}) };
    return {
      origin: 'intake',
      source: message.input,
      reason: error.code,
      error: error.message,
      details: Object.keys(all).length === 0 ? undefined : all,
      raw: truncated ? message.raw.subarray(0, max) : message.raw,
      rawTruncated: truncated,
      contentType: message.contentType,
      headers: message.headers,
      service: message.service,
      orgId: message.orgId,
      at: this.#now(),
    };
  }

  /**
   * The clock, never earlier than its last reading: events' keys and their runs' ids carry this time
   * (`newId(now)`), and runs with the same ordering key go in id order, so a clock set back must not make
   * later runs sort before earlier ones. Until the clock catches up, times stay at the last reading.
   */
  #now(): number {
    const t = this.#deps.now?.() ?? Date.now();
    if (t > this.#lastNow) this.#lastNow = t;
    return this.#lastNow;
  }
}

/** The stored event of one of a message's events, received now. */
function intakeRecord(message: InboundMessage, event: CloudEvent, now: number): IntakeItem['record'] {
  return { key: newId(now), event, input: message.input, hops: message.hops ?? 0, receivedAt: now, service: message.service, orgId: message.orgId };
}

/** The message's audit entry, on the last of its items (those from `start` on): committed with them. */
function auditLast(items: IntakeItem[], start: number, message: InboundMessage, refused: number): void {
  const audit = message.audit;
  if (items.length > start && audit !== undefined) items[items.length - 1]!.audit = { items: items.length - start, entry: (results) => audit(results, refused) };
}

/** A first attempt that accepted its run (accept-first): it succeeded, or the run waits for an answer. */
function acceptedOutcome(o: RunOutcome): boolean {
  return o.status === 'running' || o.status === 'success';
}

type EventErrorCode = 'invalid_event' | 'unknown_type' | 'schema_violation' | 'too_deep';

/** The media type of a structured CloudEvent: what a refused event of a batch is kept as. */
const STRUCTURED = 'application/cloudevents+json';

/** The header naming the decoder a dead letter is replayed through (see Dispatcher.receive). */
export const DECODER_HEADER = ':decoder';

/** A refused event's error as the event alone sees it: pointers and message without the batch's `/<index>`. */
function withinEvent(error: DispatcherError, index: number): DispatcherError {
  const prefix = `/${index}`;
  const strip = (pointer: string) => (pointer.startsWith(prefix) ? pointer.slice(prefix.length) : pointer);
  return eventError(error.code as EventErrorCode, (error.problems ?? []).map((p) => ({ ...p, pointer: strip(p.pointer) })));
}

/** The error of refused events: the first problem in the message, and how many more. */
function eventError(code: EventErrorCode, problems: ErrorProblem[]): DispatcherError {
  const first = problems[0]!;
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more)` : '';
  return new DispatcherError(code, `${first.pointer || '/'}: ${first.message}${more}`, { problems });
}

/** Runs with an ordering key or a concurrency limit wait for a claim, which enforces both. */
function dispatchable(run: NewRun, plan: RoutePlan): boolean {
  return run.orderingKey === null && !plan.routeLimits.has(run.route);
}

const NUL_OR_SURROGATE_ESCAPE = /\\u(0000|[dD][89a-fA-F][0-9a-fA-F]{2})/;

/** Whether raw bytes may decode to strings that hold U+0000 or an unpaired surrogate. */
function mayHoldUnstorableText(raw: Buffer): boolean {
  if (raw.includes(0)) return true;
  return raw.includes('\\u') && NUL_OR_SURROGATE_ESCAPE.test(raw.toString('latin1'));
}

/**
 * The pointer to the first string (key or value) holding U+0000 or an unpaired surrogate, or null.
 * PostgreSQL refuses both in text and jsonb, and one such event would otherwise fail a whole group commit.
 */
export function unstorableString(value: unknown, pointer: string): string | null {
  const stack: Array<[unknown, string]> = [[value, pointer]];
  const bad = (s: string) => s.includes('\u0000') || !s.isWellFormed();
  while (stack.length > 0) {
    const [v, at] = stack.pop()!;
    if (typeof v === 'string') {
      if (bad(v)) return at;
    } else if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) stack.push([v[i], `${at}/${i}`]);
    } else if (v !== null && typeof v === 'object') {
      for (const key of Object.keys(v)) {
        if (bad(key)) return `${at}/${escapePointer(key)}`;
        stack.push([(v as Record<string, unknown>)[key], `${at}/${escapePointer(key)}`]);
      }
    }
  }
  return null;
}

/** Digits enough for an integer beyond 2^53 (16), or an exponent of three digits: what a number out of range needs. */
const LONG_NUMBER = /\d{16}|[eE][+-]?\d{3}/;

/**
 * The integer literals of a JSON text (outside strings) beyond 2^53, as they parse; null when the text holds
 * no number out of range at all (the cheap test first: most bodies have no long digit run or large exponent).
 */
function numbersOutOfRange(raw: Buffer): { integers: Set<number> } | null {
  const text = raw.toString('latin1');
  if (!LONG_NUMBER.test(text)) return null;
  const integers = new Set<number>();
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 34) {
      // A string: skip to its closing quote, past escapes.
      for (i++; i < text.length && text.charCodeAt(i) !== 34; i++) if (text.charCodeAt(i) === 92) i++;
    } else if (c === 45 || (c >= 48 && c <= 57)) {
      let end = i + 1;
      while (end < text.length && /[0-9.eE+-]/.test(text[end]!)) end++;
      const token = text.slice(i, end);
      if (/^-?\d{16,}$/.test(token) && !Number.isSafeInteger(Number(token))) integers.add(Number(token));
      i = end - 1;
    }
  }
  return { integers };
}

/**
 * The first number that JSON parsing could not keep as it was written: one too large for a double (`1e400`
 * parses to Infinity, which JSON writes back as `null`), or an integer literal beyond 2^53 (9007199254740993
 * parses to 9007199254740992). Either would be stored changed without a word; it is refused instead. A float
 * written with an exponent (`1.5e300`) is kept: a double is what it asks for.
 */
export function numberOutOfRange(value: unknown, pointer: string, integers: ReadonlySet<number>): ErrorProblem | null {
  const stack: Array<[unknown, string]> = [[value, pointer]];
  while (stack.length > 0) {
    const [v, at] = stack.pop()!;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return { pointer: at, message: 'is a number too large to be represented (it would be stored as null); send it as a string' };
      if (integers.has(v)) return { pointer: at, message: 'is an integer beyond 2^53 (9007199254740991), which cannot be kept exactly; send it as a string' };
    } else if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) stack.push([v[i], `${at}/${i}`]);
    } else if (v !== null && typeof v === 'object') {
      for (const key of Object.keys(v)) stack.push([(v as Record<string, unknown>)[key], `${at}/${escapePointer(key)}`]);
    }
  }
  return null;
}

/** True when `value` nests deeper than `max` levels of objects and arrays. Iterative: no stack to blow. */
export function depthExceeds(value: unknown, max: number): boolean {
  if (value === null || typeof value !== 'object') return false;
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (depth > max) return true;
    if (Array.isArray(v)) {
      for (const item of v) if (item !== null && typeof item === 'object') stack.push([item, depth + 1]);
    } else {
      for (const key in v as object) {
        const item = (v as Record<string, unknown>)[key];
        if (item !== null && typeof item === 'object') stack.push([item, depth + 1]);
      }
    }
  }
  return false;
}
