/**
 * Prometheus metrics, one registry per dispatcher (so that several dispatchers in one process, as in the
 * tests, do not share counters), with the process and Node.js metrics every Prometheus user expects
 * (`process_*`, `nodejs_*`). Gauges that need the store (backlog, dead letters, oldest queued age) are read
 * once per scrape, by whichever of them is collected first, so every one of them is current.
 */

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface Metrics {
  registry: Registry;
  eventsReceived: Counter<'input' | 'outcome'>;
  eventsUnrouted: Counter<'input'>;
  runsPlanned: Counter<'route'>;
  runsFinished: Counter<'route' | 'status'>;
  attempts: Counter<'route' | 'outcome'>;
  deadLetters: Counter<'origin' | 'reason'>;
  swept: Counter<'outcome'>;
  pruned: Counter<'kind'>;
  acceptToDone: Histogram<'route'>;
  /** HTTP requests by method, route (its pattern, `/v1/runs/:id`) and status. */
  httpDuration: Histogram<'method' | 'route' | 'status'>;
  backlog: Gauge<'state'>;
  deadLettersKept: Gauge;
  oldestQueuedAge: Gauge;
  /** Inputs and outputs: connected, lag, paused; read when scraped. */
  transportUp: Gauge<'kind' | 'name' | 'transport'>;
  outputPublished: Counter<'output' | 'what'>;
  /** Batches of outcomes the store did not take: `retried` (it could not be reached) or `dropped`. */
  outcomeRecordFailures: Counter<'then'>;
}

/** What the metrics read of one input or output when scraped. */
export interface TransportStatus {
  kind: 'input' | 'output';
  name: string;
  transport: string;
  connected: boolean;
  lag: number | null;
  paused?: boolean;
}

/** What the metrics read of one relay (an output's run events or dead letters) when scraped. */
export interface RelayStatus {
  output: string;
  stream: string;
  holder: boolean;
  lag: number | null;
}

export function createMetrics(
  readStats: () => Promise<{ queued: number; running: number; waiting: number; oldestQueuedAt: number | null; deadLetters: number }>,
  readTransports: () => Promise<TransportStatus[]> = async () => [],
  readRelays: () => Promise<RelayStatus[]> = async () => [],
  readUnrecorded: () => number = () => 0,
): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  new Gauge({
    name: 'dispatcher_outcomes_unrecorded',
    help: 'Outcomes of ended attempts that this process holds, not yet recorded in the store (their runs keep their slots)',
    registers: [registry],
    collect() {
      this.set(readUnrecorded());
    },
  });
  new Gauge({
    name: 'dispatcher_output_relay_lag_messages',
    help: 'Items (run events, dead letters) written but not yet confirmed by the output: the last seq minus the cursor, from the process that relays them',
    labelNames: ['output', 'stream'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const r of await readRelays()) if (r.holder && r.lag !== null) this.set({ output: r.output, stream: r.stream }, r.lag);
    },
  });
  // One read of the inputs and outputs per scrape, shared by the three gauges below.
  let reading: Promise<TransportStatus[]> | undefined;
  const transports = (): Promise<TransportStatus[]> => {
    reading ??= readTransports().finally(() => (reading = undefined));
    return reading;
  };
  const transportUp = new Gauge({
    name: 'dispatcher_transport_connected',
    help: '1 when an input or output is connected to its broker',
    labelNames: ['kind', 'name', 'transport'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const t of await transports()) this.set({ kind: t.kind, name: t.name, transport: t.transport }, t.connected ? 1 : 0);
    },
  });
  new Gauge({
    name: 'dispatcher_input_lag_messages',
    help: 'Messages waiting at the broker for an input (Kafka lag, queue depth, pending), where the broker reports it',
    labelNames: ['name', 'transport'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const t of await transports()) if (t.kind === 'input' && t.lag !== null) this.set({ name: t.name, transport: t.transport }, t.lag);
    },
  });
  new Gauge({
    name: 'dispatcher_input_paused',
    help: '1 while an input holds its messages because the store cannot take them',
    labelNames: ['name', 'transport'],
    registers: [registry],
    async collect() {
      this.reset();
      for (const t of await transports()) if (t.kind === 'input') this.set({ name: t.name, transport: t.transport }, t.paused === true ? 1 : 0);
    },
  });
  // One read of the store per scrape, shared by the three gauges below, whichever is collected first.
  let stats: ReturnType<typeof readStats> | undefined;
  const storeStats = (): ReturnType<typeof readStats> => {
    // The registry collects every metric of a scrape at once: the gauges started together share this read,
    // and the next scrape reads again.
    stats ??= readStats().finally(() => (stats = undefined));
    return stats;
  };
  const backlog = new Gauge({
    name: 'dispatcher_runs',
    help: 'Runs not yet ended, by state (queued, running, waiting)',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      const s = await storeStats();
      this.set({ state: 'queued' }, s.queued);
      this.set({ state: 'running' }, s.running);
      this.set({ state: 'waiting' }, s.waiting);
    },
  });
  const deadLettersKept = new Gauge({
    name: 'dispatcher_dead_letters',
    help: 'Dead letters kept in the store',
    registers: [registry],
    async collect() {
      this.set((await storeStats()).deadLetters);
    },
  });
  const oldestQueuedAge = new Gauge({
    name: 'dispatcher_oldest_queued_age_seconds',
    help: 'Age of the oldest run that is claimable but not yet claimed',
    registers: [registry],
    async collect() {
      const s = await storeStats();
      this.set(s.oldestQueuedAt === null ? 0 : Math.max(0, (Date.now() - s.oldestQueuedAt) / 1000));
    },
  });
  return {
    registry,
    eventsReceived: new Counter({ name: 'dispatcher_events_received_total', help: 'Events received, by input and outcome (accepted, duplicate, rejected)', labelNames: ['input', 'outcome'], registers: [registry] }),
    eventsUnrouted: new Counter({ name: 'dispatcher_events_unrouted_total', help: 'Accepted events that no route matched', labelNames: ['input'], registers: [registry] }),
    runsPlanned: new Counter({ name: 'dispatcher_runs_planned_total', help: 'Runs planned, by route', labelNames: ['route'], registers: [registry] }),
    runsFinished: new Counter({ name: 'dispatcher_runs_finished_total', help: 'Runs ended, by route and status', labelNames: ['route', 'status'], registers: [registry] }),
    attempts: new Counter({ name: 'dispatcher_attempts_total', help: 'Attempts ended, by route and outcome', labelNames: ['route', 'outcome'], registers: [registry] }),
    deadLetters: new Counter({ name: 'dispatcher_dead_letters_total', help: 'Dead letters written, by origin and reason', labelNames: ['origin', 'reason'], registers: [registry] }),
    swept: new Counter({
      name: 'dispatcher_runs_swept_total',
      help: 'Runs the sweeper acted on: requeued (lease expired), timed_out (deadline passed), failed (out of attempts)',
      labelNames: ['outcome'],
      registers: [registry],
    }),
    pruned: new Counter({
      name: 'dispatcher_pruned_total',
      help: 'Records deleted by retention, by kind (runs, attempts, events, runEvents, deadLetters)',
      labelNames: ['kind'],
      registers: [registry],
    }),
    acceptToDone: new Histogram({
      name: 'dispatcher_run_accept_to_done_seconds',
      help: 'From the event being accepted to its run ending',
      labelNames: ['route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'dispatcher_http_request_duration_seconds',
      help: 'HTTP requests, by method, route pattern and status',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    backlog,
    deadLettersKept,
    oldestQueuedAge,
    transportUp,
    outputPublished: new Counter({
      name: 'dispatcher_output_published_total',
      help: 'Messages an output published, by what they were (run_event, dead_letter, event)',
      labelNames: ['output', 'what'],
      registers: [registry],
    }),
    outcomeRecordFailures: new Counter({
      name: 'dispatcher_outcome_record_failures_total',
      help: 'Batches of outcomes the store did not take: retried (it could not be reached) or dropped (their runs wait for their leases to expire)',
      labelNames: ['then'],
      registers: [registry],
    }),
  };
}
