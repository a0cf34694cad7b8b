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
  readonly #queue: Array<{ item: T; acknowledge: boolean | undefined }> = [];
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
      let n = 0;
      while (n < this.#queue.length && this.#queue[n]!.acknowledge !== undefined) n += 1;
      if (n > 0) this.#onPrefix(this.#queue.splice(0, n) as Array<{ item: T; acknowledge: boolean }>);
    };
  }
}
