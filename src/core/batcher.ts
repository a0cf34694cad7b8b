/**
 * Group commit. Callers add items and wait for their own results; the batcher hands everything that
 * arrived while the previous flush was running (or within the same tick) to one `flush` call, so that many
 * concurrent requests share one transaction. There is no artificial delay: at low load a flush holds one
 * item and starts at once; at high load batches grow by themselves, up to `maxBatch`.
 */

interface Pending<In, Out> {
  items: In[];
  resolve: (out: Out[]) => void;
  reject: (err: unknown) => void;
}

export class Batcher<In, Out> {
  readonly #flush: (items: In[]) => Promise<Out[]>;
  readonly #maxBatch: number;
  #queue: Array<Pending<In, Out>> = [];
  #queued = 0;
  #flushing = false;
  #scheduled = false;
  #idle: Array<() => void> = [];

  constructor(flush: (items: In[]) => Promise<Out[]>, maxBatch: number) {
    this.#flush = flush;
    this.#maxBatch = maxBatch;
  }

  add(items: In[]): Promise<Out[]> {
    return new Promise<Out[]>((resolve, reject) => {
      this.#queue.push({ items, resolve, reject });
      this.#queued += items.length;
      this.#schedule();
    });
  }

  /** Resolves once everything added so far is flushed. */
  drain(): Promise<void> {
    if (!this.#flushing && this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  get pending(): number {
    return this.#queued;
  }

  #schedule(): void {
    if (this.#flushing || this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      void this.#run();
    });
  }

  async #run(): Promise<void> {
    if (this.#flushing || this.#queue.length === 0) return;
    this.#flushing = true;
    // Take whole callers' lists, up to maxBatch items (one oversized caller still goes alone).
    const taken: Array<Pending<In, Out>> = [];
    let count = 0;
    while (this.#queue.length > 0 && (taken.length === 0 || count + this.#queue[0]!.items.length <= this.#maxBatch)) {
      const p = this.#queue.shift()!;
      taken.push(p);
      count += p.items.length;
    }
    this.#queued -= count;
    const all = taken.length === 1 ? taken[0]!.items : taken.flatMap((p) => p.items);
    try {
      const out = await this.#flush(all);
      let at = 0;
      for (const p of taken) {
        p.resolve(out.slice(at, at + p.items.length));
        at += p.items.length;
      }
    } catch (err) {
      for (const p of taken) p.reject(err);
    } finally {
      this.#flushing = false;
      if (this.#queue.length > 0) this.#schedule();
      else for (const resolve of this.#idle.splice(0)) resolve();
    }
  }
}
