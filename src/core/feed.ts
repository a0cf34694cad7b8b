/**
 * The run-event feed: tails the outbox (`run_events`, ordered by `seq`: run events and host events) and
 * hands each new one to the subscribers (the `/v1/stream` server-sent events, and later the outputs). It reads only while
 * someone listens: after a commit that wrote run events (`poke`) and on a slow poll for changes made by
 * other processes.
 *
 * Gaps: a run event's `seq` is taken when it is inserted, not when its transaction commits, so with
 * PostgreSQL (several writers) seq 11 can become visible before seq 10. Reading past 10 would lose it for
 * good. The feed therefore hands out only the gap-free prefix of what it reads, and waits for a gap to fill;
 * a gap still open after `gapWaitMs` is a rolled-back insert (sequences skip those) and is passed over.
 */

import type { Logger } from 'pino';
import type { OutboxEvent } from './types.js';
import type { Store } from '../store/types.js';

export type RunEventListener = (events: OutboxEvent[]) => void;

export class RunEventFeed {
  readonly #store: Store;
  readonly #log: Logger;
  readonly #pollMs: number;
  readonly #listeners = new Set<RunEventListener>();
  #cursor = -1;
  #reading = false;
  #again = false;
  #timer: NodeJS.Timeout | undefined;
  #gapSince: number | undefined;
  readonly #gapWaitMs: number;

  constructor(store: Store, log: Logger, pollMs = 250, gapWaitMs = 2000) {
    this.#store = store;
    this.#log = log;
    this.#pollMs = pollMs;
    this.#gapWaitMs = gapWaitMs;
  }

  /** Listen from now on; returns the function that stops listening. */
  async subscribe(listener: RunEventListener): Promise<() => void> {
    if (this.#cursor < 0) this.#cursor = await this.#store.lastRunEventSeq();
    this.#listeners.add(listener);
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.poke(), this.#pollMs);
      this.#timer.unref();
    }
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0) {
        clearInterval(this.#timer);
        this.#timer = undefined;
        this.#cursor = -1;
      }
    };
  }

  get cursor(): number {
    return this.#cursor;
  }

  /** Run events may have been written. */
  poke(): void {
    if (this.#listeners.size === 0) return;
    if (this.#reading) {
      this.#again = true;
      return;
    }
    void this.#read();
  }

  async #read(): Promise<void> {
    this.#reading = true;
    try {
      do {
        this.#again = false;
        const read = await this.#store.readRunEvents(this.#cursor, 1000);
        if (read.length === 0) break;
        let take = 0;
        while (take < read.length && read[take]!.seq === this.#cursor + take + 1) take += 1;
        if (take < read.length) {
          const now = Date.now();
          this.#gapSince ??= now;
          if (now - this.#gapSince >= this.#gapWaitMs) {
            take = read.length;
            this.#gapSince = undefined;
          } else if (take === 0) {
            setTimeout(() => this.poke(), 50).unref();
            break;
          }
        } else this.#gapSince = undefined;
        const events = take === read.length ? read : read.slice(0, take);
        this.#cursor = events[events.length - 1]!.seq;
        for (const listener of this.#listeners) {
          try {
            listener(events);
          } catch (err) {
            this.#log.warn({ err }, 'a run-event listener failed');
          }
        }
        if (events.length === 1000) this.#again = true;
        if (take < read.length) setTimeout(() => this.poke(), 50).unref();
      } while (this.#again && this.#listeners.size > 0);
    } catch (err) {
      this.#log.warn({ err }, 'reading run events failed');
    } finally {
      this.#reading = false;
    }
  }

  close(): void {
    clearInterval(this.#timer);
    this.#listeners.clear();
  }
}
