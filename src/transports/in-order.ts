/**
 * Deliveries in the order a broker gave them, and which of them have ended. Brokers that acknowledge by
 * position (an AMQP `multiple` ack, MQTT PUBACKs in arrival order, a Kafka offset) may acknowledge only an
 * ended prefix: `add` returns the function that ends one delivery, and every ended delivery that joins the
 * prefix is handed to `onPrefix`, in order, once.
 *
 * A delivery that never ends (the dispatcher stopped before its commit) holds back every one after it, so
 * that none of them is acknowledged past it.
 */
export class InOrder<T> {
  /** Tracked deliveries from `#head` on; the one at `#head` has not ended (or there is none). */
  #queue: Array<{ item: T; acknowledge: boolean | undefined }> = [];
  #head = 0;
  readonly #onPrefix: (ended: Array<{ item: T; acknowledge: boolean }>) => void;

  constructor(onPrefix: (ended: Array<{ item: T; acknowledge: boolean }>) => void) {
    this.#onPrefix = onPrefix;
  }

  /** Track a delivery; the function returned ends it (`acknowledge: false`: leave it for the broker to send again). */
  add(item: T): (acknowledge: boolean) => void {
    const entry: { item: T; acknowledge: boolean | undefined } = { item, acknowledge: undefined };
    this.#queue.push(entry);
    return (acknowledge) => {
      if (entry.acknowledge !== undefined) return;
      entry.acknowledge = acknowledge;
      // Only the first delivery still waiting can make the ended prefix longer.
      const queue = this.#queue;
      if (queue[this.#head] !== entry) return;
      let end = this.#head + 1;
      while (end < queue.length && queue[end]!.acknowledge !== undefined) end += 1;
      const ended = queue.slice(this.#head, end) as Array<{ item: T; acknowledge: boolean }>;
      this.#head = end;
      // Let go of the handed-over entries once they are most of the array: each entry is moved at most once
      // on average, where taking them off the front one prefix at a time moved the whole window every time.
      if (end === queue.length) {
        this.#queue = [];
        this.#head = 0;
      } else if (end >= 1024 && end * 2 >= queue.length) {
        this.#queue = queue.slice(end);
        this.#head = 0;
      }
      this.#onPrefix(ended);
    };
  }
}
