/**
 * The preset: the one list of what a dispatcher is made of (graphile-worker's `src/preset.ts` is the
 * model). The built-in actions and the core API come first; each profile follows, switched on by its key
 * under `profiles` in the configuration. The server (`createDispatcher`), `validate-config`, `routes test`
 * and the CLI all read it from here, so what one accepts the others accept too.
 *
 * A profile is added by writing it in `src/profiles/<name>/` and listing it here; nothing else in the
 * core changes (docs/profiles/README.md).
 */

import type { Command } from 'commander';
import type { FastifyInstance } from 'fastify';
import { BUILTIN_ACTIONS } from './actions/index.js';
import { CORE_API } from './api/entry.js';
import type { Profile } from './core/profile.js';
import { CISO_ASSISTANT } from './profiles/ciso-assistant/index.js';
import { COMMUNICATIONS_BACKBONE } from './profiles/communications-backbone/index.js';
import { PLAYBOOK_DISPATCHER } from './profiles/playbook-dispatcher/index.js';

/** An entry of the preset: a profile whose HTTP scope is a Fastify instance and whose CLI is commander's. */
export type DispatcherProfile = Profile<FastifyInstance, Command>;

export type Preset = readonly DispatcherProfile[];

export const PRESET: Preset = [BUILTIN_ACTIONS, CORE_API, PLAYBOOK_DISPATCHER, COMMUNICATIONS_BACKBONE, CISO_ASSISTANT];
