/**
 * The dispatcher: one object that composes the parts (store, types, routes, intake, runner, feed, HTTP
 * app, the profiles switched on) from a checked configuration and the preset. The CLI and the library API
 * both build it with `createDispatcher`. The HTTP API and the profiles get `services` (what it lends),
 * never the dispatcher itself.
 */

import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { pino, type DestinationStream, type Logger } from 'pino';
import type { FastifyInstance } from 'fastify';
import { BUILTIN_ACTIONS, loadPlugins } from './actions/index.js';
import { createHttpClient } from './actions/http/client.js';
import type { ActionType } from './core/action.js';
import { Auditor, type NewAuditEntry } from './core/audit.js';
import { Authenticator } from './core/authenticator.js';
import { DispatcherError } from './core/errors.js';
import { DEFAULT_OWNER, type Scope } from './core/principal.js';
import { RecipientHub, type RecipientHubSettings } from './core/recipients.js';
import { Inboxes } from './core/inboxes.js';
import type { Connector } from './core/connector.js';
import { playbookConnector } from './actions/playbook/connectors.js';
import { RunEventFeed } from './core/feed.js';
import { cloudEventMessage, type CloudEventsBinding, type OutputDriver } from './core/outbox.js';
import { qualified, type DecoderType, type Presenter, type ProfileContext, type ProfileSetup } from './core/profile.js';
import { deadLetterSource, hostEventSource, Relay, runEventSource, type RelaySource } from './core/relay.js';
import { DECODER_HEADER, Intake, type AcceptedAnswer, type Decoder, type InboundMessage, type IntakeAnswer } from './core/intake.js';
import { createMetrics, type Metrics, type TransportStatus } from './core/metrics.js';
import { compileRoutes, placed, type RoutePlan } from './core/routes.js';
import { Runner } from './core/runner.js';
import type { Health, InputHealth, OutputHealth, RawMessage, Replayed, Services } from './core/services.js';
import { TypeRegistry } from './core/type-registry.js';
import type { CloudEvent, DeadLetter, HostEvent, Owner, Run, RunEvent } from './core/types.js';
import type { DispatcherConfig, StreamConfig } from './config/schema.js';
import { PRESET, type DispatcherProfile, type Preset } from './preset.js';
import { openStore } from './store/index.js';
import type { HostResult, HostUpsert, OwnedMigrations, RepublishQuery, ResolveResult, RunOutcome, RunResolution, Store } from './store/types.js';
import { decodeHttp } from './transports/http/decode.js';
import { busDecoder, InputHost, loadTransport } from './transports/index.js';

export interface DispatcherOptions {
  config: DispatcherConfig;
  /** A logger to use instead of one made from `config.log`. */
  logger?: Logger;
  /** Where the logger made from `config.log` writes (default: standard output). */
  logDestination?: DestinationStream;
  /** Extra action types (besides the built-in ones and `plugins` from the configuration). */
  actionTypes?: ActionType[];
  /** What the dispatcher is made of (default: src/preset.ts); the configuration switches its profiles on. */
  preset?: Preset;
  /** The built-in connector's timings and bounds (default: `RECIPIENT_HUB_DEFAULTS`); tests shorten them. */
  recipients?: Partial<RecipientHubSettings>;
}

export { DEFAULT_OWNER } from './core/principal.js';
export type { InputHealth, OutputHealth } from './core/services.js';

/** A preset entry switched on, with what it was set up with. */
interface Entry {
  readonly profile: DispatcherProfile;
  readonly setup: ProfileSetup;
}

/** One configured output and its driver. */
export interface Output {
  readonly name: string;
  readonly transport: string;
  readonly driver: OutputDriver;
  /** How CloudEvents attributes travel in its headers (binary mode). */
  readonly binding: CloudEventsBinding;
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
  /** The recipients connected over `GET /v1/recipients/{id}/connect`: the built-in connector. */
  readonly recipients: RecipientHub;
  /** How directives reach recipients (`actions.playbook`): the recipients above or a Cloud Connector, paced. */
  readonly connector: Connector;
  /** Client inboxes: what `deliver` fills and clients receive. */
  readonly inboxes: Inboxes;
  #listening: string | undefined;
  readonly owner: string;
  /** Action types whose attempts change nothing outside (no audit entry). */
  readonly #quietActionTypes: ReadonlySet<string>;
  /** Bus inputs, started by `start`. */
  readonly inputs: InputHost[] = [];
  /** Bus outputs by name, started by `start`. */
  readonly outputs = new Map<string, Output>();
  /** The relays of run events and dead letters to outputs, started by `start`. */
  readonly relays: Relay[] = [];
  /** What the dispatcher lends to the HTTP API and the profiles. */
  readonly services: Services;
  /** Each input's decoder, by input name: dead letters are replayed through the decoder they first met. */
  readonly #decoders = new Map<string, Decoder>([
    ['http', decodeHttp],
    ['embedded', decodeHttp],
  ]);
  /** The decoders the preset's entries switched on offer, by name (`<profile>.<name>`), made with no options: for their routes. */
  readonly #named = new Map<string, Decoder>([['http', decodeHttp]]);
  /** The preset's entries switched on, in order. */
  readonly #entries: readonly Entry[];
  /** Action type → the profile that brought it: a stream's `profile` filter. */
  readonly #actionTypeProfiles: ReadonlyMap<string, string>;
  readonly #http: ReturnType<typeof createHttpClient>;
  #plan: RoutePlan;
  #app: FastifyInstance | undefined;
  #started: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  private constructor(
    config: DispatcherConfig,
    log: Logger,
    store: Store,
    types: TypeRegistry,
    plan: RoutePlan,
    actionTypes: ReadonlyMap<string, { type: ActionType; profile: string }>,
    entries: readonly Entry[],
    recipients: Partial<RecipientHubSettings> = {},
  ) {
    this.config = config;
    this.#entries = entries;
    this.#quietActionTypes = new Set([...actionTypes.values()].filter((t) => t.type.sideEffects === false).map((t) => t.type.type));
    this.#actionTypeProfiles = new Map([...actionTypes].map(([name, t]) => [name, t.profile]));
    this.#http = createHttpClient(config.actions.http);
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
    this.recipients = new RecipientHub({ ...recipients, log: log.child({ part: 'recipients' }), registry: this.metrics.registry });
    this.connector = playbookConnector(config.actions.playbook, { http: this.#http, recipients: this.recipients });
    this.inboxes = new Inboxes({ store, settings: config.inboxes, log: log.child({ part: 'inboxes' }), registry: this.metrics.registry });
    this.auth.onClientChange(({ kind, client }) => {
      this.inboxes.clientsChanged(client.orgId);
      if (kind === 'deleted') this.inboxes.clear(client.id).catch((err: unknown) => log.warn({ err, client: client.id }, 'could not empty the inbox of a deleted client'));
    });
    this.runner = new Runner({
      store,
      plan: () => this.#plan,
      owner: this.owner,
      metrics: this.metrics,
      log: log.child({ part: 'runner' }),
      services: {
        publish: (event, hops) => this.publish(event, hops),
        publishTo: this.publishTo.bind(this),
        upsertHosts: (hosts) => this.upsertHosts(hosts),
        resolveRuns: (resolutions) => this.resolveRuns(resolutions),
        records: this.store,
        http: this.#http,
        connector: this.connector,
        inboxes: this.inboxes,
        publicUrl: () => this.publicUrl,
      },
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
    for (const { profile } of entries) {
      for (const [name, type] of Object.entries(profile.decoders ?? {})) {
        this.#named.set(qualified(profile, name), type.create({}, { source: profile.name, binding: HTTP_BINDING }));
      }
    }
    this.services = this.#lend();
  }

  /** The services, bound to this dispatcher. */
  #lend(): Services {
    return {
      log: this.log,
      records: this.store,
      auth: this.auth,
      audit: this.audit,
      feed: this.feed,
      metrics: this.metrics,
      http: this.#http,
      recipients: this.recipients,
      connector: this.connector,
      inboxes: this.inboxes,
      receive: (message, decoder = 'http') => this.receive(message, decoder),
      receiveAccepted: (message, decoder) => this.receiveAccepted(message, decoder),
      reject: (message, error) => this.intake.reject(message, error),
      resolveRuns: (resolutions) => this.resolveRuns(resolutions),
      upsertHosts: (hosts) => this.upsertHosts(hosts),
      cancelRun: (id, scope) => this.cancelRun(id, scope),
      retryRun: (id, scope) => this.retryRun(id, scope),
      republishRuns: (query) => this.republishRuns(query),
      replayDeadLetter: (id, scope) => this.replayDeadLetter(id, scope),
      deleteDeadLetter: (id, scope) => this.store.deleteDeadLetter(id, scope),
      publishTo: this.publishTo.bind(this),
      health: () => this.health(),
      query: (sql, params) => this.store.query(sql, params),
    };
  }

  static async create(options: DispatcherOptions): Promise<Dispatcher> {
    const { config } = options;
    const log = options.logger ?? createLogger(config, options.logDestination);
    const types = new TypeRegistry(config.types);
    for (const w of types.warnings) log.warn({ pointer: w.pointer }, `${placed(w)}`);
    const entries = enabledEntries(options.preset ?? PRESET, config, log);
    const actionTypes = await actionTypesOf(entries, config, options.actionTypes);
    const plan = await compileRoutes({
      routes: config.routes,
      actionTypes: new Map([...actionTypes].map(([name, t]) => [name, t.type])),
      actionSettings: config.actions as Record<string, Record<string, unknown>>,
      log,
      outputs: config.outputs.map((o) => o.name),
    });
    let store: Store | undefined;
    try {
      store = await openStore({ url: config.store.url, poolSize: config.store.poolSize, queryTimeout: config.store.queryTimeout });
      await store.migrate(profileMigrations(entries));
      const d = new Dispatcher(config, log, store, types, plan, actionTypes, entries, options.recipients);
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

  /** The HTTP app (built once, not listening): the core API and the routes of the profiles switched on. */
  async app(): Promise<FastifyInstance> {
    if (this.#app === undefined) {
      const { buildApp } = await import('./api/app.js');
      this.#app = await buildApp({
        services: this.services,
        server: this.config.server,
        deadLetterMaxBytes: this.config.deadLetters.maxBytes,
        logRequests: this.config.log.requests,
        health: { metrics: this.config.metrics.enabled, publicMetrics: this.config.auth.publicMetrics },
        entries: this.#entries.map(({ profile, setup }): { profile: DispatcherProfile; context: ProfileContext } => ({
          profile,
          context: { ...setup, services: this.services },
        })),
      });
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
    const presenters = this.#presenters();
    for (const o of this.config.outputs) {
      const transport = await loadTransport(o.transport);
      if (transport.createOutput === undefined) throw new DispatcherError('config_invalid', `outputs.${o.name}: ${o.transport} cannot be an output`);
      const log = this.log.child({ output: o.name });
      const driver = transport.createOutput(o.options, { name: o.name, log });
      this.outputs.set(o.name, { name: o.name, transport: o.transport, driver, binding: transport.binding });
      for (const stream of o.streams) {
        const source = this.#streamSource(stream, presenters.get(stream.presenter)!);
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
      const decode = busDecoder(i.decoder, transport.binding, `${i.transport}://${i.name}`, (format) => this.#decoderType(format));
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

  /** The presenters of the entries switched on, by the names streams give them. */
  #presenters(): Map<string, Presenter> {
    const out = new Map<string, Presenter>();
    for (const { profile } of this.#entries) for (const [name, presenter] of Object.entries(profile.presenters ?? {})) out.set(qualified(profile, name), presenter);
    return out;
  }

  #decoderType(format: string): DecoderType | undefined {
    for (const { profile } of this.#entries) {
      for (const [name, type] of Object.entries(profile.decoders ?? {})) if (qualified(profile, name) === format) return type;
    }
    return undefined;
  }

  /**
   * A stream's relay source: its kind read from the store, shown by its presenter, filtered by route,
   * service and profile. A run or host belongs to the profile whose action type its run runs; a dead letter
   * to the profile of the input it came through (an input with the profile's decoder, or one of the
   * profile's routes, whose input names start with the profile's name) or of the route whose run it ended.
   */
  #streamSource(stream: StreamConfig, presenter: Presenter): RelaySource {
    const { route, service, profile } = stream.filter;
    const profiles = profile === undefined ? undefined : new Set(profile);
    // A profile's routes are named after it (`<profile>`, `<profile>.<name>`), and no configured route may be.
    const ofProfile = (actionType: string | null, routeName: string | null): boolean =>
      profiles === undefined ||
      (actionType !== null && profiles.has(this.#actionTypeProfiles.get(actionType) ?? '')) ||
      (routeName !== null && profiles.has(this.#profileNamed(routeName)));
    const base = { name: stream.name, topic: stream.topic };
    if (presenter.stream === 'runEvents') {
      const own = presenter.accepts;
      const accepts = (e: RunEvent) =>
        (route === undefined || route.includes(e.payload.route)) &&
        (service === undefined || service.includes(e.service)) &&
        ofProfile(e.payload.actionType, e.payload.route) &&
        (own === undefined || own(e));
      return runEventSource(this.store, { ...base, present: presenter.present, accepts });
    }
    if (presenter.stream === 'hostEvents') {
      const own = presenter.accepts;
      const accepts = (e: HostEvent) =>
        (route === undefined || (e.route !== null && route.includes(e.route))) &&
        (service === undefined || service.includes(e.service)) &&
        ofProfile(e.actionType, e.route) &&
        (own === undefined || own(e));
      return hostEventSource(this.store, { ...base, present: presenter.present, accepts });
    }
    const own = presenter.accepts;
    const accepts = (d: DeadLetter) =>
      (route === undefined || route.includes(d.source)) &&
      (service === undefined || service.includes(d.service)) &&
      (profiles === undefined || profiles.has(this.#deadLetterProfile(d))) &&
      (own === undefined || own(d));
    return deadLetterSource(this.store, { ...base, present: presenter.present, accepts });
  }

  /** The profile a dead letter came from (see `#streamSource`), or ''. */
  #deadLetterProfile(d: DeadLetter): string {
    if (d.origin === 'run') {
      const route = this.#plan.route(d.source);
      const byAction = route?.actions.map((a) => this.#actionTypeProfiles.get(a.type)).find((p) => p !== undefined && p !== BUILTIN_ACTIONS.name);
      return byAction ?? this.#profileNamed(d.source);
    }
    const input = this.config.inputs.find((i) => i.name === d.source);
    if (input !== undefined) return this.#decoderType(input.decoder.format) === undefined ? '' : input.decoder.format.split('.', 1)[0]!;
    return this.#profileNamed(d.source);
  }

  /** The profile switched on whose name a route or input name carries (`<profile>`, `<profile>.<name>`), or ''. */
  #profileNamed(name: string): string {
    return this.#entries.find(({ profile }) => profile.builtIn !== true && (name === profile.name || name.startsWith(`${profile.name}.`)))?.profile.name ?? '';
  }

  /**
   * Start the runner (and the sweeper) at once, then connect the outputs and the inputs; resolves once every
   * input consumes. An input whose broker cannot be reached at all rejects it.
   */
  start(): Promise<void> {
    this.runner.start();
    this.inboxes.start();
    this.#started ??= (async () => {
      for (const o of this.outputs.values()) await o.driver.start();
      for (const relay of this.relays) relay.start();
      for (const input of this.inputs) await input.start();
    })();
    return this.#started;
  }

  /** The health of the inputs, the outputs and this process's runner. */
  async health(): Promise<Health> {
    const [inputs, outputs] = await Promise.all([this.inputHealth(), this.outputHealth()]);
    return { inputs, outputs, inFlight: this.runner.inFlight };
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
    const address = await app.listen({ host: this.config.server.host, port: this.config.server.port });
    const port = new URL(address).port;
    const host = this.config.server.host === '0.0.0.0' || this.config.server.host === '::' ? '127.0.0.1' : this.config.server.host;
    this.#listening = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
    return address;
  }

  /** The URL this dispatcher is reached at: `server.publicUrl`, else where it listens (its configured port before it does). */
  get publicUrl(): string {
    const configured = this.config.server.publicUrl;
    if (configured !== undefined) return configured.replace(/\/+$/, '');
    return this.#listening ?? `http://${this.config.server.host}:${this.config.server.port}`;
  }

  /** Take events in through the `embedded` input (the library's own way in). */
  async send(events: CloudEvent[], owner: Owner = DEFAULT_OWNER): Promise<IntakeAnswer> {
    return this.intake.accept(this.#message('embedded', Buffer.from(JSON.stringify(events)), owner), { events, batch: events.length > 1 });
  }

  /**
   * Take a message in through a named decoder (`http`, or a profile's `<profile>.<name>`): what a profile's
   * route does with what it receives. The decoder's name travels with the message (`:decoder`), so that a
   * dead letter of it is replayed through the same decoder.
   */
  async receive(message: InboundMessage, decoder = 'http'): Promise<IntakeAnswer> {
    const [decode, named] = this.#decoderFor(message, decoder);
    return this.intake.receive(named, decode);
  }

  /** `receive`, accept-first (see `Intake.receiveAccepted`). */
  async receiveAccepted(message: InboundMessage, decoder: string): Promise<AcceptedAnswer> {
    const [decode, named] = this.#decoderFor(message, decoder);
    return this.intake.receiveAccepted(named, decode);
  }

  /** The named decoder, and the message carrying its name for a replay. */
  #decoderFor(message: InboundMessage, decoder: string): [Decoder, InboundMessage] {
    const decode = this.#named.get(decoder);
    if (decode === undefined) throw new DispatcherError('internal', `no decoder "${decoder}" (known: ${[...this.#named.keys()].join(', ')})`);
    const headers = decoder === 'http' ? message.headers : { ...message.headers, [DECODER_HEADER]: decoder };
    return [decode, { ...message, headers }];
  }

  /** Answers for waiting runs (see `RunResolution`); their run events are in the outbox when this resolves. */
  async resolveRuns(resolutions: RunResolution[]): Promise<ResolveResult[]> {
    const results = await this.store.resolveRuns(resolutions);
    const ended = results.filter((r) => r.outcome === 'resolved' && r.run !== null && r.run.finishedAt !== null);
    for (const r of ended) this.metrics.runsFinished.inc({ route: r.run!.route, status: r.run!.status });
    if (results.some((r) => r.outcome === 'resolved')) this.#changed();
    return results;
  }

  /** Create or change hosts of runs (see `HostUpsert`); their host events are in the outbox when this resolves. */
  async upsertHosts(hosts: HostUpsert[]): Promise<HostResult[]> {
    const results = await this.store.upsertHosts(hosts);
    if (results.some((r) => r.outcome === 'created' || r.outcome === 'updated')) this.#changed();
    return results;
  }

  /** Run events or dead letters may have been written: tell the feed and the relays. */
  #changed(): void {
    this.feed.poke();
    for (const relay of this.relays) relay.poke();
  }

  /**
   * Publish to a configured output: a CloudEvent in the binary mode of its transport's CloudEvents binding
   * (the `publish` action's way out), or a raw message (body, key, headers) for outputs that do not speak
   * CloudEvents; resolves once the output confirmed it.
   */
  publishTo(output: string, event: CloudEvent, destination: { topic?: string; key?: string }): Promise<void>;
  publishTo(output: string, message: RawMessage): Promise<void>;
  async publishTo(output: string, message: CloudEvent | RawMessage, destination: { topic?: string; key?: string } = {}): Promise<void> {
    const o = this.outputs.get(output);
    if (o === undefined) throw new DispatcherError('config_invalid', `no output "${output}"`);
    if ('specversion' in message) {
      await o.driver.publish([cloudEventMessage(message, o.binding, destination)]);
      this.metrics.outputPublished.inc({ output, what: 'event' });
      return;
    }
    const { body, headers, ...rest } = message;
    await o.driver.publish([{ ...rest, headers: headers ?? {}, body: typeof body === 'string' ? Buffer.from(body) : body }]);
    this.metrics.outputPublished.inc({ output, what: 'message' });
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
  async replayDeadLetter(id: string, scope?: Scope): Promise<Replayed> {
    const dl = await this.store.getDeadLetter(id, scope);
    if (dl === null) throw new DispatcherError('not_found', `no dead letter ${id}`);
    if (dl.origin === 'run') {
      if (dl.runId === null) throw new DispatcherError('invalid_state', `dead letter ${id} names no run`);
      const run = await this.retryRun(dl.runId, scope);
      await this.store.markReplayed(id, Date.now());
      return { deadLetter: dl, run };
    }
    if (dl.rawTruncated) throw new DispatcherError('invalid_state', `dead letter ${id} kept only the first ${dl.raw.length} bytes; it cannot be replayed`);
    const named = dl.headers[DECODER_HEADER];
    const decode = (named === undefined ? undefined : this.#named.get(named)) ?? this.#decoders.get(dl.source) ?? decodeHttp;
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
    // Connected recipients are told (1001) before the server stops; directives awaiting their answer fail.
    this.recipients.close();
    this.inboxes.stop();
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
    await this.#http.close().catch(() => {});
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


/** How CloudEvents attributes travel in HTTP headers (binary mode): what a profile's decoder for its routes gets. */
const HTTP_BINDING: CloudEventsBinding = { prefixes: ['ce-'] };

/**
 * Every action type the configuration's routes may name, as the server would have them: the preset's
 * entries switched on, the plugins, and `extra`. For `validate-config` and `routes test`.
 */
export async function configuredActionTypes(config: DispatcherConfig, preset: Preset = PRESET, log: Logger = pino({ level: 'silent' })): Promise<Map<string, ActionType>> {
  const types = await actionTypesOf(enabledEntries(preset, config, log), config);
  return new Map([...types].map(([name, t]) => [name, t.type]));
}

/** The preset's entries switched on: the built-in ones, and the profiles the configuration names. */
function enabledEntries(preset: Preset, config: DispatcherConfig, log: Logger): Entry[] {
  return preset
    .filter((p) => p.builtIn === true || Object.hasOwn(config.profiles, p.name))
    .map((profile) => ({ profile, setup: { name: profile.name, config: config.profiles[profile.name] ?? {}, log: log.child({ profile: profile.name }) } }));
}

/** Every action type a route may name, with the entry that brought it (a plugin's: `plugins`). */
async function actionTypesOf(entries: readonly Entry[], config: DispatcherConfig, extra: readonly ActionType[] = []): Promise<Map<string, { type: ActionType; profile: string }>> {
  const out = new Map<string, { type: ActionType; profile: string }>();
  for (const { profile, setup } of entries) {
    const types = typeof profile.actionTypes === 'function' ? profile.actionTypes(setup) : (profile.actionTypes ?? []);
    for (const type of types) out.set(type.type, { type, profile: profile.name });
  }
  for (const type of await loadPlugins(config.plugins)) out.set(type.type, { type, profile: 'plugins' });
  for (const type of extra) out.set(type.type, { type, profile: 'embedded' });
  return out;
}

/** The migrations of the entries switched on, in preset order. */
function profileMigrations(entries: readonly Entry[]): OwnedMigrations[] {
  return entries.flatMap(({ profile }) => (profile.migrations === undefined ? [] : [{ owner: profile.name, ...profile.migrations }]));
}

/** The migrations the profiles the configuration switches on bring (`dispatcher migrate` applies them with the store's). */
export function configuredMigrations(config: DispatcherConfig, preset: Preset = PRESET): OwnedMigrations[] {
  return profileMigrations(enabledEntries(preset, config, pino({ level: 'silent' })));
}
