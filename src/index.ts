/**
 * Dispatcher's public library API. Nothing else is public: the parts behind it may change freely.
 *
 *   const config = await loadConfig({ file: 'dispatcher.yaml' });
 *   const dispatcher = await createDispatcher({ config });
 *   await dispatcher.listen();
 */

export { createDispatcher, Dispatcher, type DispatcherOptions } from './dispatcher.js';
export { loadConfig, validateConfigFile, type LoadConfigOptions } from './config/load.js';
export { initConfig } from './config/init.js';
export type { DispatcherConfig, RouteConfig } from './config/schema.js';
export type { Action, ActionContext, ActionOutcome, ActionSettings, ActionType } from './core/action.js';
export { DispatcherError, ERROR_CODES, type ErrorCode } from './core/errors.js';
export type { Attempt, CloudEvent, DeadLetter, EventRecord, Run, RunEvent, RunStatus } from './core/types.js';
export type { Store } from './store/types.js';
