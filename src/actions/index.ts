/**
 * The built-in action types, and the loading of plugins: a plugin is a module whose default export (or
 * export named `action`) is an ActionType: `{ type, paramsSchema?, create(params, settings) }`.
 */

import { pathToFileURL } from 'node:url';
import { isAbsolute } from 'node:path';
import type { ActionType } from '../core/action.js';
import { DispatcherError } from '../core/errors.js';
import type { Profile } from '../core/profile.js';
import { deliverAction } from './deliver/index.js';
import { httpAction } from './http/index.js';
import { noopAction } from './noop/index.js';
import { playbookAction } from './playbook/index.js';
import { publishAction } from './publish/index.js';
import { restAction } from './rest/index.js';

export const builtinActionTypes: readonly ActionType[] = [httpAction, publishAction, deliverAction, restAction, noopAction, playbookAction];

/** The built-in actions, as the first entry of the preset. */
export const BUILTIN_ACTIONS: Profile = {
  name: 'actions',
  description: 'The built-in actions: `http` (webhooks), `publish` (an event to intake or an output), `deliver` (a message to client inboxes), `rest` (find objects of a REST API by a selector, then change them), `noop` and `playbook` (a playbook sent to a recipient).',
  builtIn: true,
  actionTypes: builtinActionTypes,
};

export async function loadPlugins(plugins: Readonly<Record<string, string>>): Promise<ActionType[]> {
  const out: ActionType[] = [];
  for (const [type, module] of Object.entries(plugins)) {
    let loaded: Record<string, unknown>;
    try {
      loaded = (await import(isAbsolute(module) ? pathToFileURL(module).href : module)) as Record<string, unknown>;
    } catch (err) {
      throw new DispatcherError('plugin_invalid', `plugins.${type}: cannot load ${module}: ${(err as Error).message}`, { cause: err });
    }
    const candidate = (loaded.default ?? loaded.action) as Partial<ActionType> | undefined;
    if (candidate === undefined || typeof candidate.create !== 'function') {
      throw new DispatcherError('plugin_invalid', `plugins.${type}: ${module} must export (default or \`action\`) an object with a create(params, settings) function`);
    }
    out.push({ ...candidate, type } as ActionType);
  }
  return out;
}
