/**
 * The run-event feed: tails the outbox (`run_events`, ordered by `seq`) and hands each new run event to
 * the subscribers (the `/v1/stream` server-sent events, and later the outputs). It reads only while
 * someone listens: after a commit that wrote run events (`poke`) and on a slow poll for changes made by
 * other processes.
 */

import type { Logger } from 'pino';
import type { RunEvent } from './types.js';
import type { Store } from '../store/types.js';

export type RunEventListener = (events: RunEvent[]) => void;

export class RunEventFeed {
  readonly #store: Store;
  readonly #log: Logger;
  readonly #pollMs: number;
  readonly #listeners = new Set<RunEventListener>();
  #cursor = -1;
  #reading = false;
  #again = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(store: Store, log: Logger, pollMs = 250) {
    this.#store = store;
    this.#log = log;
    this.#pollMs = pollMs;
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
        const events = await this.#store.readRunEvents(this.#cursor, 1000);
        if (events.length === 0) break;
        this.#cursor = events[events.length - 1]!.seq;
        for (const listener of this.#listeners) {
          try {
            listener(events);
          } catch (err) {
            this.#log.warn({ err }, 'a run-event listener failed');
          }
        }
        if (events.length === 1000) this.#again = true;
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
