/**
 * Routes, compiled once from the configuration: their match conditions go into the routing index, their
 * actions are created (parameters checked, templates compiled), and the planner turns a matched event into
 * runs.
 */

import { Ajv2020 } from 'ajv/dist/2020.js';
import type { ValidateFunction } from 'ajv';
import type { Logger } from 'pino';
import { newId } from './ids.js';
import type { Action, ActionType } from './action.js';
import { DispatcherError } from './errors.js';
import { buildRouteIndex, type RouteIndex } from './router.js';
import { TemplateEngine, templateScope, type Template } from './template.js';
import type { CloudEvent } from './types.js';
import type { NewRun } from '../store/types.js';

/** A route as the (normalized) configuration gives it: durations in milliseconds. */
export interface RouteConfig {
  name: string;
  description?: string;
  enabled?: boolean;
  match?: Record<string, unknown>;
  actions: Array<Record<string, unknown>>;
  retry: { attempts: number; backoff: number; maxBackoff: number; maxAge: number };
  timeout: number;
  deadline: number;
  concurrency?: number;
  orderingKey?: string;
  labels?: Record<string, string>;
}

export interface CompiledAction {
  /** Unique inside its route: the configured `name`, else the type, with `#<index>` when a type repeats. */
  name: string;
  type: string;
  action: Action;
}

export interface CompiledRoute {
  name: string;
  config: RouteConfig;
  actions: CompiledAction[];
  orderingKey: Template | null;
  labels: Template | null;
}

export interface RoutePlan {
  readonly routes: CompiledRoute[];
  readonly index: RouteIndex;
  /** Routes with a concurrency limit → the limit. */
  readonly routeLimits: ReadonlyMap<string, number>;
  route(name: string): CompiledRoute | undefined;
  action(route: string, action: string): CompiledAction | undefined;
  /** The runs for one event, queued now; their ids carry `now` (the event's `receivedAt`, the runs' `created_at`). */
  planRuns(event: CloudEvent, now: number): { routes: CompiledRoute[]; runs: NewRun[] };
  close(): Promise<void>;
}

export interface CompileRoutesOptions {
  routes: RouteConfig[];
  actionTypes: ReadonlyMap<string, ActionType>;
  /** `actions.<type>` settings from the configuration. */
  actionSettings: Record<string, Record<string, unknown>>;
  log: Logger;
  /** The names of the configured outputs (default none). */
  outputs?: readonly string[];
}

export async function compileRoutes(options: CompileRoutesOptions): Promise<RoutePlan> {
  const engine = new TemplateEngine();
  const ajv = new Ajv2020({ allErrors: true, strict: false, allowUnionTypes: true });
  // One compiled parameter schema per action type, however many routes use it.
  const validators = new Map<string, ValidateFunction>();
  const enabled = options.routes.filter((r) => r.enabled !== false);
  const routes: CompiledRoute[] = [];
  const created: Action[] = [];
  try {
    for (const config of enabled) {
      const path = `routes[${options.routes.indexOf(config)}]`;
      const actions: CompiledAction[] = [];
      const seen = new Map<string, number>();
      for (const [j, spec] of config.actions.entries()) {
        const { name, ...rest } = spec as { name?: unknown } & Record<string, unknown>;
        const keys = Object.keys(rest);
        if (keys.length !== 1) {
          throw new DispatcherError('config_invalid', `${path}.actions[${j}]: an action names exactly one action type (found ${keys.length ? keys.join(', ') : 'none'})`);
        }
        const type = keys[0]!;
        const actionType = options.actionTypes.get(type);
        if (actionType === undefined) {
          throw new DispatcherError('config_invalid', `${path}.actions[${j}]: unknown action type "${type}" (known: ${[...options.actionTypes.keys()].join(', ')})`);
        }
        const params = (rest[type] ?? {}) as Record<string, unknown>;
        if (params === null || typeof params !== 'object' || Array.isArray(params)) {
          throw new DispatcherError('config_invalid', `${path}.actions[${j}].${type}: parameters must be an object`);
        }
        if (actionType.paramsSchema !== undefined) {
          let validate = validators.get(type);
          if (validate === undefined) validators.set(type, (validate = ajv.compile(actionType.paramsSchema)));
          if (!validate(params)) {
            const first = validate.errors?.[0];
            throw new DispatcherError('config_invalid', `${path}.actions[${j}].${type}${first?.instancePath.replace(/\//g, '.') ?? ''}: ${first?.message ?? 'is invalid'}`);
          }
        }
        let action: Action;
        try {
          action = await actionType.create(params, {
            settings: options.actionSettings[type] ?? {},
            compile: (value) => engine.compile(value, `${path}.actions[${j}].${type}`),
            log: options.log.child({ route: config.name, action: type }),
            outputs: options.outputs ?? [],
          });
        } catch (err) {
          if (err instanceof DispatcherError) throw err;
          throw new DispatcherError('config_invalid', `${path}.actions[${j}].${type}: ${(err as Error).message}`, { cause: err });
        }
        created.push(action);
        const count = (seen.get(type) ?? 0) + 1;
        seen.set(type, count);
        const actionName = typeof name === 'string' && name !== '' ? name : count === 1 ? type : `${type}#${count}`;
        if (actions.some((a) => a.name === actionName)) {
          throw new DispatcherError('config_invalid', `${path}.actions[${j}]: action name "${actionName}" is used twice in route ${config.name}`);
        }
        actions.push({ name: actionName, type, action });
      }
      routes.push({
        name: config.name,
        config,
        actions,
        orderingKey: config.orderingKey ? engine.compile(config.orderingKey, `${path}.orderingKey`) : null,
        labels: config.labels && Object.keys(config.labels).length > 0 ? engine.compile(config.labels, `${path}.labels`) : null,
      });
    }
  } catch (err) {
    await Promise.allSettled(created.map((a) => a.close?.()));
    throw err;
  }

  const index = buildRouteIndex(
    routes.map((r) => ({ name: r.name, match: r.config.match })),
    'routes',
  );
  const byName = new Map(routes.map((r) => [r.name, r]));
  const routeLimits = new Map<string, number>();
  for (const r of routes) if (r.config.concurrency !== undefined) routeLimits.set(r.name, r.config.concurrency);

  return {
    routes,
    index,
    routeLimits,
    route: (name) => byName.get(name),
    action: (route, action) => byName.get(route)?.actions.find((a) => a.name === action),
    planRuns(event, now) {
      const matched = index.match(event);
      if (matched.length === 0) return { routes: [], runs: [] };
      const matchedRoutes: CompiledRoute[] = [];
      const runs: NewRun[] = [];
      let scope: object | undefined;
      for (const i of matched) {
        const route = routes[i]!;
        matchedRoutes.push(route);
        const c = route.config;
        let orderingKey: string | null = null;
        let labels: Record<string, string> = {};
        if (route.orderingKey !== null || route.labels !== null) {
          scope ??= templateScope(event);
          if (route.orderingKey !== null) {
            const key = route.orderingKey.render(scope);
            // Keys are per route: two routes keyed by the same subject do not hold each other up.
            if (key !== null && key !== undefined && key !== '') orderingKey = `${route.name}\u0000${String(key)}`;
          }
          if (route.labels !== null) labels = stringValues(route.labels.render(scope));
        }
        for (const a of route.actions) {
          runs.push({
            id: newId(now),
            route: route.name,
            action: a.name,
            actionType: a.type,
            maxAttempts: c.retry.attempts,
            availableAt: now,
            deadlineAt: now + c.deadline,
            expiresAt: now + Math.min(c.retry.maxAge, c.deadline),
            orderingKey,
            labels,
          });
        }
      }
      return { routes: matchedRoutes, runs };
    },
    async close() {
      await Promise.allSettled(created.map((a) => a.close?.()));
    },
  };
}

function stringValues(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (value === null || typeof value !== 'object') return out;
  for (const [k, v] of Object.entries(value)) {
    if (v === null || v === undefined || v === '') continue;
    out[k] = typeof v === 'string' ? v : JSON.stringify(v);
  }
  return out;
}
