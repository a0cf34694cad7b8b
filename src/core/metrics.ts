/**
 * Prometheus metrics, one registry per dispatcher (so that several dispatchers in one process, as in the
 * tests, do not share counters). Gauges that need the store (backlog, oldest queued age) are read when
 * scraped.
 */

import { Counter, Gauge, Histogram, Registry } from 'prom-client';

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
  backlog: Gauge<'state'>;
  oldestQueuedAge: Gauge;
}

export function createMetrics(readStats: () => Promise<{ queued: number; running: number; waiting: number; oldestQueuedAt: number | null; deadLetters: number }>): Metrics {
  const registry = new Registry();
  const backlog = new Gauge({
    name: 'dispatcher_runs',
    help: 'Runs not yet ended, by state (queued, running, waiting), and dead letters kept',
    labelNames: ['state'],
    registers: [registry],
  });
  const oldestQueuedAge = new Gauge({
    name: 'dispatcher_oldest_queued_age_seconds',
    help: 'Age of the oldest run that is claimable but not yet claimed',
    registers: [registry],
    async collect() {
      const s = await readStats();
      backlog.set({ state: 'queued' }, s.queued);
      backlog.set({ state: 'running' }, s.running);
      backlog.set({ state: 'waiting' }, s.waiting);
      backlog.set({ state: 'dead_letters' }, s.deadLetters);
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
    backlog,
    oldestQueuedAge,
  };
}
