/**
 * Dispatcher's public library API. Nothing else is public: the parts behind it may change freely.
 *
 *   const config = await loadConfig({ file: 'dispatcher.yaml' });
 *   const dispatcher = await createDispatcher({ config });
 *   await dispatcher.listen();
 *
 * A dispatcher made of more than the shipped preset (a profile of your own) passes the same list to both:
 *
 *   const preset = [...PRESET, myProfile];
 *   const dispatcher = await createDispatcher({ config: await loadConfig({ file, preset }), preset });
 */

export { createDispatcher, Dispatcher, type DispatcherOptions } from './dispatcher.js';
export { loadConfig, validateConfigFile, type LoadConfigOptions } from './config/load.js';
export { initConfig } from './config/init.js';
export type { DispatcherConfig, RouteConfig } from './config/schema.js';
export type { Action, ActionContext, ActionOutcome, ActionSettings, ActionType } from './core/action.js';
export { DispatcherError, ERROR_CODES, type ErrorCode } from './core/errors.js';
export type { Attempt, CloudEvent, DeadLetter, EventRecord, Host, HostEvent, Run, RunEvent, RunStatus } from './core/types.js';
export type { HostResult, HostUpsert, ResolveResult, RunResolution, Store } from './store/types.js';
export { PRESET, type DispatcherProfile, type Preset } from './preset.js';
export type { DecoderType, Presenter, Profile, ProfileContext, ProfileSetup } from './core/profile.js';
export type { Services } from './core/services.js';
