/**
 * A profile: the compatibility layer for one seed system (../shared/DESIGN.md §1). It adds no core
 * concept; it translates. Everything a profile brings is one of these members, and the preset
 * (`src/preset.ts`) is the one list of them that the server, `validate-config`, `routes test` and the CLI
 * read. The built-in actions and the core API are the preset's first entries, built the same way.
 *
 * A profile is switched on by its key under `profiles` in the configuration (`profiles: { <name>: {…} }`);
 * what it registers (routes, actions, decoders, presenters, tables) exists only then. Built-in entries
 * (`builtIn`) are part of every dispatcher.
 *
 * Types only: the HTTP scope and the CLI program are type parameters, so that the core imports neither
 * the HTTP framework nor the command-line library (the preset fixes them: `DispatcherProfile`).
 */

import type { Logger } from 'pino';
import type { ActionType } from './action.js';
import type { Decoder } from './intake.js';
import type { CloudEventsBinding, Presented } from './outbox.js';
import type { SchemaNode, TObject } from './options.js';
import type { Services } from './services.js';
import type { DeadLetter, HostEvent, RunEvent } from './types.js';
import type { StoreMigrations } from '../store/types.js';

export interface Profile<Http = unknown, Cli = unknown> {
  /**
   * Its key under `profiles` (`playbook-dispatcher`), and the prefix of the names it gives its decoders
   * and presenters (`playbook-dispatcher.run`). Lower-case letters, digits and dashes.
   */
  readonly name: string;
  /** One sentence: what it makes the dispatcher do. Shown in the configuration reference. */
  readonly description: string;
  /** Part of every dispatcher, not switched by `profiles` (the built-in actions, the core API): its names have no prefix. */
  readonly builtIn?: boolean;
  /**
   * Its section of the configuration, `profiles.<name>`: a section of the option vocabulary (options.ts),
   * so that its options, defaults, types and documentation are written once.
   */
  readonly config?: TObject;
  /**
   * Environment variables of the seed system, read into its section while it is switched on: the original's
   * names (`SOAR_TOKEN_LIFETIME`), so that a deployment's settings carry over unchanged. They override the
   * configuration file and are overridden by `DISPATCHER_*` variables and flags. Each names the option it sets
   * (a path inside the section), and may say how its text reads (`kind`, default the option's) and turn
   * what it read into the option's value (`map`: hours into a duration).
   */
  readonly environment?: Readonly<Record<string, ProfileVariable>>;
  /**
   * Routes it brings, written as the configuration's `routes` are (and checked the same way), given its
   * section: what its own routes take in becomes runs without a route in the user's file. Their names are
   * the profile's (`playbook-dispatcher`, `playbook-dispatcher.<name>`); a configured route may not take one.
   */
  readonly routes?: (setup: Pick<ProfileSetup, 'name' | 'config'>) => ReadonlyArray<Readonly<Record<string, unknown>>>;
  /**
   * Inputs and outputs it brings, written as the configuration's `inputs` and `outputs` are (and checked the
   * same way), given its section: keyed `<profile>` or `<profile>.<name>`, names no configured one may take.
   * For a seed system whose own settings name its bus (a Kafka topic it consumes, a topic its errors go to).
   */
  readonly inputs?: (setup: Pick<ProfileSetup, 'name' | 'config'>) => Readonly<Record<string, Readonly<Record<string, unknown>>>>;
  readonly outputs?: (setup: Pick<ProfileSetup, 'name' | 'config'>) => Readonly<Record<string, Readonly<Record<string, unknown>>>>;
  /** Action types it adds; a function when they depend on its configuration. */
  readonly actionTypes?: readonly ActionType[] | ((setup: ProfileSetup) => readonly ActionType[]);
  /** Decoders an input may name (`decoder: { format: '<profile>.<name>', options: {…} }`) or the profile's routes receive with. */
  readonly decoders?: Readonly<Record<string, DecoderType>>;
  /** Its tables: applied by `migrate()` after the store's own, in name order, recorded as `<profile>/<name>`. */
  readonly migrations?: StoreMigrations;
  /** Presenters an output's stream may name (`presenter: '<profile>.<name>'`): the shape of what is published. */
  readonly presenters?: Readonly<Record<string, Presenter>>;
  /** The permissions its routes declare (`app:resource:verb` → what it allows), for the docs and the route checks. */
  readonly permissions?: Readonly<Record<string, string>>;
  /**
   * Its HTTP routes, registered in a scope of their own (an encapsulated Fastify context): its own
   * authentication hook and error answers. Every route declares its permission or `public`, as the core's do.
   */
  http?(scope: Http, context: ProfileContext): void | Promise<void>;
  /**
   * What it advises about the rest of the configuration while it is on (`validate-config` prints each as a
   * warning; `serve` logs them): a setting it relies on that is not set the way it expects.
   */
  advise?(setup: Pick<ProfileSetup, 'name' | 'config'>, whole: Readonly<Record<string, unknown>>): string[];
  /**
   * Commands it adds to the command line (`dispatcher <command>`), whether or not a configuration switches it
   * on; those that speak the HTTP API reach it through `api`, as the core's commands do.
   */
  cli?(program: Cli, api: CliApi): void;
}

/** An environment variable a profile reads (see `Profile.environment`). */
export interface ProfileVariable {
  /** The option it sets, inside the profile's section: `['token', 'lifetime']`. */
  readonly path: readonly string[];
  /** How its text reads, when not as the option's own kind (`number` for hours that `map` makes a duration). */
  readonly kind?: 'string' | 'integer' | 'number' | 'boolean' | 'duration' | 'size' | 'string[]';
  /** What the option gets from the value read. */
  readonly map?: (value: unknown) => unknown;
  /** For the reference, when the option's own description does not say it all. */
  readonly description?: string;
}

/** What the command line lends a profile's commands (its own files stay out of the profile's imports). */
export interface CliApi {
  /**
   * The dispatcher a command talks to, found as the core's commands find it (`-u`/`DISPATCHER_URL`, else the
   * configuration of `-c`), with the credential they use (`DISPATCHER_TOKEN`, `DISPATCHER_PSK`, the admin key):
   * `call` answers the parsed body, or fails with what went wrong and what to do.
   */
  connect(options: { url?: string; config?: string }): Promise<{ readonly url: string; call(path: string, init?: RequestInit): Promise<any> }>;
  /** An error that ends the command with its message: exit code 1, or 2 for a usage error. */
  fail(message: string, exitCode?: 1 | 2): Error;
  /**
   * Serve as `dispatcher serve` does (until a signal stops it), with the configuration of `config` (or the
   * usual places), `base` under it (a seed system's own settings) and `overrides` over everything.
   */
  serve(options: {
    config?: string;
    base?: { source: string; value: Record<string, unknown> };
    overrides?: Record<string, unknown>;
    /** Hosts the HTTP client may reach beside `actions.http.allow` (a seed system's API its user named). */
    allow?: readonly string[];
  }): Promise<void>;
  /**
   * A profile's section as the dispatcher would read it: `base` (a seed system's own settings) under the
   * environment (the profile's variables), and `over` (what the user just gave: prompts' answers) over both,
   * normalized. Fails with the configuration's problems, each blamed on its source.
   */
  section(profile: string, base: { source: string; value: Record<string, unknown> }, over?: { source: string; value: Record<string, unknown> }): Promise<Record<string, unknown>>;
}

/** What a profile's action types are made from (no services yet: the routes are compiled before the dispatcher exists). */
export interface ProfileSetup {
  readonly name: string;
  /** Its section, normalized; `{}` for a profile without one. */
  readonly config: Readonly<Record<string, unknown>>;
  readonly log: Logger;
}

/** What a profile's routes get: its setup, and what the dispatcher lends (never the dispatcher itself). */
export interface ProfileContext extends ProfileSetup {
  readonly services: Services;
}

/** A decoder a profile offers: made once per input (or once for the profile's own routes), with its options. */
export interface DecoderType {
  readonly description?: string;
  /** JSON Schema of `decoder.options`, checked when the configuration loads. */
  readonly options?: SchemaNode;
  create(options: Readonly<Record<string, unknown>>, context: DecoderContext): Decoder;
}

export interface DecoderContext {
  /** The default event source: `<transport>://<input>`, or the profile's name for its own routes. */
  readonly source: string;
  /** How CloudEvents attributes travel in the input's headers. */
  readonly binding: CloudEventsBinding;
}

export type { Presented } from './outbox.js';

/**
 * How a stream publishes what it relays: `present` shapes one item; `accepts`, when given, leaves out the
 * items the presenter has nothing to show for (a run the seed system never knew of), besides the stream's filter.
 */
export type Presenter =
  | { readonly stream: 'runEvents'; readonly description?: string; present(event: RunEvent): Presented; accepts?(event: RunEvent): boolean }
  | { readonly stream: 'hostEvents'; readonly description?: string; present(event: HostEvent): Presented; accepts?(event: HostEvent): boolean }
  | { readonly stream: 'deadLetters'; readonly description?: string; present(deadLetter: DeadLetter): Presented; accepts?(deadLetter: DeadLetter): boolean };

/** The kinds of stream an output can carry. */
export const STREAM_KINDS = ['runEvents', 'hostEvents', 'deadLetters'] as const;
export type StreamKind = (typeof STREAM_KINDS)[number];

/** A name a profile gives: bare for built-in entries, `<profile>.<name>` otherwise. */
export function qualified(profile: Pick<Profile, 'name' | 'builtIn'>, name: string): string {
  return profile.builtIn === true ? name : `${profile.name}.${name}`;
}
