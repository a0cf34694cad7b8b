/**
 * Group commit. Callers add items and wait for their own results; the batcher hands everything that
 * arrived while the previous flush was running (or within the same tick) to one `flush` call, so that many
 * concurrent requests share one transaction. There is no artificial delay: at low load a flush holds one
 * item and starts at once; at high load batches grow by themselves, up to `maxBatch`.
 */

interface Pending<In, Out> {
  items: In[];
  chain: Chain | undefined;
  resolve: (out: Out[]) => void;
  reject: (err: unknown) => void;
}

/**
 * Callers whose lists must be committed in the order they were added, or not at all after one that failed:
 * a bus input's hand-overs, several of which may wait here at once. Once a flush holding a list of the
 * chain fails, every later list of the chain is rejected with the same error without being flushed, so
 * that no later commit succeeds while an earlier one waits to be tried again. The caller starts a new
 * chain when it tries again.
 */
export interface Chain {
  failed?: unknown;
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

  add(items: In[], chain?: Chain): Promise<Out[]> {
    return new Promise<Out[]>((resolve, reject) => {
      this.#queue.push({ items, chain, resolve, reject });
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
    // Take whole callers' lists, up to maxBatch items (one oversized caller still goes alone); the lists of
    // a failed chain are answered with its failure instead.
    const taken: Array<Pending<In, Out>> = [];
    let count = 0;
    while (this.#queue.length > 0 && (taken.length === 0 || count + this.#queue[0]!.items.length <= this.#maxBatch)) {
      const p = this.#queue.shift()!;
      this.#queued -= p.items.length;
      if (p.chain !== undefined && 'failed' in p.chain) {
        p.reject(p.chain.failed);
        continue;
      }
      taken.push(p);
      count += p.items.length;
    }
    try {
      // The queue held only lists of failed chains: nothing to flush.
      if (taken.length === 0) return;
      const out = await this.#flush(taken.length === 1 ? taken[0]!.items : taken.flatMap((p) => p.items));
      let at = 0;
      for (const p of taken) {
        p.resolve(out.slice(at, at + p.items.length));
        at += p.items.length;
      }
    } catch (err) {
      for (const p of taken) {
        if (p.chain !== undefined) p.chain.failed = err;
        p.reject(err);
      }
    } finally {
      this.#flushing = false;
      if (this.#queue.length > 0) this.#schedule();
      else for (const resolve of this.#idle.splice(0)) resolve();
    }
  }
}
