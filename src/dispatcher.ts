/**
 * The dispatcher: one object that composes the parts (store, types, routes, intake, runner, feed, HTTP
 * app) from a checked configuration. The CLI and the library API both build it with `createDispatcher`.
 */

import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { pino, type DestinationStream, type Logger } from 'pino';
import type { FastifyInstance } from 'fastify';
import type { ActionType } from './core/action.js';
import { Auditor, type NewAuditEntry } from './core/audit.js';
import { Authenticator } from './core/authenticator.js';
import { DispatcherError } from './core/errors.js';
import { DEFAULT_OWNER, type Scope } from './core/principal.js';
import { RunEventFeed } from './core/feed.js';
import { deadLetterSource, Relay, runEventSource, type RelayState } from './core/relay.js';
import { Intake, type Decoder, type InboundMessage, type IntakeAnswer } from './core/intake.js';
import { createMetrics, type Metrics } from './core/metrics.js';
import { compileRoutes, type RouteConfig, type RoutePlan } from './core/routes.js';
import { Runner } from './core/runner.js';
import { TypeRegistry } from './core/type-registry.js';
import type { CloudEvent, DeadLetter, Owner, Run } from './core/types.js';
import type { DispatcherConfig } from './config/schema.js';
import { openStore } from './store/index.js';
import type { RepublishQuery, RunOutcome, Store } from './store/types.js';
import { decodeHttp } from './transports/http/decode.js';
import { busDecoder, cloudEventMessage, InputHost, loadTransport, type CloudEventsBinding, type InputHealth, type OutputDriver, type TransportHealth } from './transports/index.js';
import type { TransportStatus } from './core/metrics.js';
import { builtinActionTypes, loadPlugins } from './actions/index.js';
import { runResource } from './api/resources.js';

export interface DispatcherOptions {
  config: DispatcherConfig;
  /** A logger to use instead of one made from `config.log`. */
  logger?: Logger;
  /** Where the logger made from `config.log` writes (default: standard output). */
  logDestination?: DestinationStream;
  /** Extra action types (besides the built-in ones and `plugins` from the configuration). */
  actionTypes?: ActionType[];
}

export { DEFAULT_OWNER } from './core/principal.js';

/** One configured output and its driver. */
export interface Output {
  readonly name: string;
  readonly transport: string;
  readonly driver: OutputDriver;
  /** How CloudEvents attributes travel in its headers (binary mode). */
  readonly binding: CloudEventsBinding;
}

export interface OutputHealth extends TransportHealth {
  output: string;
  transport: string;
  /** Its relays (run events, dead letters) as this process sees them. */
  relays: RelayState[];
}

export class Dispatcher {
  readonly config: DispatcherConfig;
  readonly log: Logger;
  readonly store: Store;
  readonly types: TypeRegistry;
  readonly metrics: Metrics;
  readonly intake: Intake;
  readonly runner: Runner;
  readonly feed: RunEventFeed;
  /** Credentials → principals; clients and tokens. */
  readonly auth: Authenticator;
  /** The audit log's writer. */
  readonly audit: Auditor;
  readonly owner: string;
  /** Action types whose attempts change nothing outside (no audit entry). */
  readonly #quietActionTypes: ReadonlySet<string>;
  /** Bus inputs, started by `start`. */
  readonly inputs: InputHost[] = [];
  /** Bus outputs by name, started by `start`. */
  readonly outputs = new Map<string, Output>();
  /** The relays of run events and dead letters to outputs, started by `start`. */
  readonly relays: Relay[] = [];
  /** Each input's decoder, by input name: dead letters are replayed through the decoder they first met. */
  readonly #decoders = new Map<string, Decoder>([
    ['http', decodeHttp],
    ['embedded', decodeHttp],
  ]);
  #plan: RoutePlan;
  #app: FastifyInstance | undefined;
  #started: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  private constructor(config: DispatcherConfig, log: Logger, store: Store, types: TypeRegistry, plan: RoutePlan, quietActionTypes: ReadonlySet<string>) {
    this.config = config;
    this.#quietActionTypes = quietActionTypes;
    this.auth = new Authenticator(config.auth, store.access, log.child({ part: 'auth' }));
    this.audit = new Auditor(store.access);
    this.log = log;
    this.store = store;
    this.types = types;
    this.#plan = plan;
    this.owner = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
    this.metrics = createMetrics(
      () => store.stats(Date.now()),
      () => this.#transportStatus(),
      () => Promise.all(this.relays.map((r) => r.state())),
      () => this.runner.unrecorded,
    );
    this.feed = new RunEventFeed(store, log);
    this.runner = new Runner({
      store,
      plan: () => this.#plan,
      owner: this.owner,
      metrics: this.metrics,
      log: log.child({ part: 'runner' }),
      services: { publish: (event, hops) => this.publish(event, hops), publishTo: (output, event, destination) => this.publishTo(output, event, destination) },
      onRecorded: (outcomes) => {
        this.#changed();
        this.#auditOutcomes(outcomes);
      },
      settings: {
        ...config.runner,
        maxResponseBytes: config.actions.http.maxResponseBytes,
        deadLetterMaxCount: config.deadLetters.maxCount,
        retention: config.retention,
      },
    });
    this.intake = new Intake({
      store,
      types,
      plan: () => this.#plan,
      metrics: this.metrics,
      log: log.child({ part: 'intake' }),
      settings: { ...config.intake, deadLetterMaxBytes: config.deadLetters.maxBytes },
      onRuns: (_count, queued) => {
        if (queued > 0) this.runner.notify();
        this.#changed();
      },
      dispatch: this.runner,
    });
  }

  static async create(options: DispatcherOptions): Promise<Dispatcher> {
    const { config } = options;
    const log = options.logger ?? createLogger(config, options.logDestination);
    const types = new TypeRegistry(config.types);
    const actionTypes = new Map<string, ActionType>();
    for (const t of [...builtinActionTypes, ...(await loadPlugins(config.plugins)), ...(options.actionTypes ?? [])]) actionTypes.set(t.type, t);
    const plan = await compileRoutes({
      routes: config.routes as RouteConfig[],
      actionTypes,
      actionSettings: config.actions as Record<string, Record<string, unknown>>,
      log,
      outputs: config.outputs.map((o) => o.name),
    });
    const quiet = new Set([...actionTypes.values()].filter((t) => t.sideEffects === false).map((t) => t.type));
    let store: Store | undefined;
    try {
      store = await openStore({ url: config.store.url, poolSize: config.store.poolSize });
      await store.migrate();
      const d = new Dispatcher(config, log, store, types, plan, quiet);
      await d.auth.init();
      await d.#createTransports();
      return d;
    } catch (err) {
      await plan.close();
      await store?.close().catch(() => {});
      throw err;
    }
  }

  get plan(): RoutePlan {
    return this.#plan;
  }

  /** The HTTP app (built once, not listening). */
  async app(): Promise<FastifyInstance> {
    if (this.#app === undefined) {
      const { buildApp } = await import('./api/app.js');
      this.#app = await buildApp(this);
    }
    return this.#app;
  }

  /** Every attempt of an action with side effects, in the audit log (who: the route, on behalf of the event's service). */
  #auditOutcomes(outcomes: RunOutcome[]): void {
    const entries: NewAuditEntry[] = [];
    for (const o of outcomes) {
      const run = o.run;
      if (this.#quietActionTypes.has(run.actionType)) continue;
      entries.push({
        at: o.at,
        actor: `route:${run.route}`,
        actorKind: 'action',
        service: run.service,
        orgId: run.orgId,
        action: `action.${run.actionType}`,
        records: [run.id, run.eventKey],
        outcome: o.status === 'success' ? 'ok' : o.status === 'running' ? 'waiting' : (o.attempt.errorCode ?? o.status),
        details: { action: run.action, attempt: o.attempt.n, status: o.status, http_status: o.attempt.httpStatus },
      });
    }
    if (entries.length === 0) return;
    this.audit.appendMany(entries).catch((err: unknown) => this.log.error({ err }, 'could not append to the audit log'));
  }

  /** Load the configured transports and make their drivers (nothing connects yet). */
  async #createTransports(): Promise<void> {
    for (const o of this.config.outputs) {
      const transport = await loadTransport(o.transport);
      if (transport.createOutput === undefined) throw new DispatcherError('config_invalid', `outputs.${o.name}: ${o.transport} cannot be an output`);
      const log = this.log.child({ output: o.name });
      const driver = transport.createOutput(o.options, { name: o.name, log });
      this.outputs.set(o.name, { name: o.name, transport: o.transport, driver, binding: transport.binding });
      const sources = [
        ...(o.runEvents === undefined ? [] : [runEventSource(this.store, o.runEvents.topic, runResource)]),
        ...(o.deadLetters === undefined ? [] : [deadLetterSource(this.store, o.deadLetters.topic)]),
      ];
      for (const source of sources) {
        this.relays.push(
          new Relay({
            store: this.store,
            output: o.name,
            driver,
            source,
            owner: this.owner,
            log: log.child({ part: 'relay' }),
            onPublished: (count) => this.metrics.outputPublished.inc({ output: o.name, what: source.what }, count),
          }),
        );
      }
    }
    for (const i of this.config.inputs) {
      const transport = await loadTransport(i.transport);
      if (transport.createInput === undefined) throw new DispatcherError('config_invalid', `inputs.${i.name}: ${i.transport} cannot be an input`);
      const log = this.log.child({ input: i.name });
      const decode = busDecoder(i.decoder, transport.binding, `${i.transport}://${i.name}`);
      this.#decoders.set(i.name, decode);
      this.inputs.push(
        new InputHost({
          name: i.name,
          transport: i.transport,
          driver: transport.createInput(i.options, { name: i.name, log }),
          decode,
          owner: { service: i.service, orgId: i.orgId },
          intake: this.intake,
          maxBytes: i.maxBytes,
          ping: () => this.store.ping(),
          log,
        }),
      );
    }
  }

  /**
   * Start the runner (and the sweeper) at once, then connect the outputs and the inputs; resolves once every
   * input consumes. An input whose broker cannot be reached at all rejects it.
   */
  start(): Promise<void> {
    this.runner.start();
    this.#started ??= (async () => {
      for (const o of this.outputs.values()) await o.driver.start();
      for (const relay of this.relays) relay.start();
      for (const input of this.inputs) await input.start();
    })();
    return this.#started;
  }

  async inputHealth(): Promise<InputHealth[]> {
    return Promise.all(this.inputs.map((i) => i.health()));
  }

  async outputHealth(): Promise<OutputHealth[]> {
    return Promise.all(
      [...this.outputs.values()].map(async (o) => {
        const relays = await Promise.all(this.relays.filter((r) => r.output === o.name).map((r) => r.state()));
        try {
          return { output: o.name, transport: o.transport, ...(await o.driver.health()), relays };
        } catch (err) {
          return { output: o.name, transport: o.transport, connected: false, lag: null, lastError: (err as Error).message, lastErrorAt: Date.now(), relays };
        }
      }),
    );
  }

  async #transportStatus(): Promise<TransportStatus[]> {
    const [inputs, outputs] = await Promise.all([this.inputHealth(), this.outputHealth()]);
    return [
      ...inputs.map((h) => ({ kind: 'input' as const, name: h.input, transport: h.transport, connected: h.connected, lag: h.lag, paused: h.paused })),
      ...outputs.map((h) => ({ kind: 'output' as const, name: h.output, transport: h.transport, connected: h.connected, lag: null })),
    ];
  }

  /** Start the runner and the transports, and serve HTTP; resolves with the address. */
  async listen(): Promise<string> {
    await this.start();
    const app = await this.app();
    return app.listen({ host: this.config.server.host, port: this.config.server.port });
  }

  /** Take events in through the `embedded` input (the library's own way in). */
  async send(events: CloudEvent[], owner: Owner = DEFAULT_OWNER): Promise<IntakeAnswer> {
    return this.intake.accept(this.#message('embedded', Buffer.from(JSON.stringify(events)), owner), { events, batch: events.length > 1 });
  }

  /** Run events or dead letters may have been written: tell the feed and the relays. */
  #changed(): void {
    this.feed.poke();
    for (const relay of this.relays) relay.poke();
  }

  /**
   * The `publish` action's way out: a CloudEvent to a configured output, in the binary mode of its
   * transport's CloudEvents binding; resolves once the output confirmed it.
   */
  async publishTo(output: string, event: CloudEvent, destination: { topic?: string; key?: string }): Promise<void> {
    const o = this.outputs.get(output);
    if (o === undefined) throw new DispatcherError('config_invalid', `no output "${output}"`);
    await o.driver.publish([cloudEventMessage(event, o.binding, destination)]);
    this.metrics.outputPublished.inc({ output, what: 'event' });
  }

  /**
   * `dispatcher runs republish`: a `read` run event for every run matching the filters, written to the
   * outbox, so that the relays publish them after everything written before (consumers rebuild their state).
   */
  async republishRuns(query: RepublishQuery): Promise<number> {
    const count = await this.store.republishRuns(query, Date.now());
    this.#changed();
    return count;
  }

  /** The `publish` action's way in: one hop further. */
  async publish(event: CloudEvent, hops: number): Promise<void> {
    const message = this.#message('embedded', Buffer.from(JSON.stringify(event)), DEFAULT_OWNER);
    message.hops = hops;
    await this.intake.accept(message, { events: [event], batch: false });
  }

  #message(input: string, raw: Buffer, owner: Owner): InboundMessage {
    return { input, raw, contentType: 'application/cloudevents+json', headers: {}, service: owner.service, orgId: owner.orgId };
  }

  async cancelRun(id: string, scope?: Scope): Promise<Run> {
    const run = await this.store.cancelRun(id, Date.now(), scope);
    this.runner.abort(id);
    this.metrics.runsFinished.inc({ route: run.route, status: 'canceled' });
    this.#changed();
    return run;
  }

  async retryRun(id: string, scope?: Scope): Promise<Run> {
    const existing = await this.store.getRun(id, scope);
    if (existing === null) throw new DispatcherError('not_found', `no run ${id}`);
    const route = this.#plan.route(existing.route);
    const attempts = route?.config.retry.attempts ?? 1;
    const deadline = Date.now() + (route?.config.deadline ?? 3_600_000);
    const run = await this.store.retryRun(id, Date.now(), attempts, deadline, scope);
    this.runner.notify();
    this.#changed();
    return run;
  }

  /**
   * Replay a dead letter: an intake dead letter goes through intake again, as it came (it may pass now that
   * the configuration changed); a run dead letter retries its run.
   */
  async replayDeadLetter(id: string, scope?: Scope): Promise<{ deadLetter: DeadLetter; answer?: IntakeAnswer; run?: Run }> {
    const dl = await this.store.getDeadLetter(id, scope);
    if (dl === null) throw new DispatcherError('not_found', `no dead letter ${id}`);
    if (dl.origin === 'run') {
      if (dl.runId === null) throw new DispatcherError('invalid_state', `dead letter ${id} names no run`);
      const run = await this.retryRun(dl.runId, scope);
      await this.store.markReplayed(id, Date.now());
      return { deadLetter: dl, run };
    }
    if (dl.rawTruncated) throw new DispatcherError('invalid_state', `dead letter ${id} kept only the first ${dl.raw.length} bytes; it cannot be replayed`);
    const decode = this.#decoders.get(dl.source) ?? decodeHttp;
    const answer = await this.intake.receive(
      { input: dl.source, raw: dl.raw, contentType: dl.contentType, headers: dl.headers, service: dl.service, orgId: dl.orgId },
      decode,
    );
    await this.store.markReplayed(id, Date.now());
    return { deadLetter: dl, answer };
  }

  /**
   * Stop: refuse new events, stop serving, let in-flight runs end (or release them), close the store.
   * Bounded by `runner.shutdownTimeout` plus the time to close connections.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    // Inputs first: what they have in flight is committed and acknowledged, or left for redelivery.
    await this.#started?.catch(() => {});
    await Promise.allSettled(this.inputs.map((i) => i.stop()));
    this.intake.close();
    if (this.#app !== undefined) {
      // Requests in flight get a moment to finish; connections still open after it (keep-alive sockets a
      // client holds, streams a client stopped reading) are closed, so that stopping stays bounded.
      const app = this.#app;
      const grace = setTimeout(() => app.server.closeAllConnections(), Math.min(1000, this.config.runner.shutdownTimeout));
      await app.close();
      clearTimeout(grace);
    }
    await this.intake.drain();
    await this.runner.stop();
    await this.audit.drain();
    await Promise.allSettled(this.relays.map((r) => r.stop()));
    await Promise.allSettled([...this.outputs.values()].map((o) => o.driver.stop()));
    this.feed.close();
    await this.#plan.close();
    await this.store.close();
  }
}

/**
 * The dispatcher's logger: JSON lines, and credentials redacted wherever a log call might carry them
 * (request headers, settings objects), as a second line of defence: no code logs them on purpose.
 */
export function createLogger(config: DispatcherConfig, destination?: DestinationStream): Logger {
  const options = {
    level: config.log.level,
    redact: {
      paths: [
        'req.headers.authorization',
        'req.headers.cookie',
        'headers.authorization',
        '*.headers.authorization',
        '*.signingSecret',
        '*.secret',
        '*.password',
        '*.token',
        '*.secretAccessKey',
        '*.sessionToken',
      ],
      censor: '[redacted]',
    },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}

export async function createDispatcher(options: DispatcherOptions): Promise<Dispatcher> {
  return Dispatcher.create(options);
}
