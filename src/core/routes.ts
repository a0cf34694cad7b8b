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
import { configProblems, DispatcherError, type ErrorProblem } from './errors.js';
import { fromPointer, toDisplayPath, toPointer, type Path } from './paths.js';
import { duration, object, section, Type, type Options } from './options.js';
import { buildRouteIndex, checkRouteMatch, type RouteIndex } from './router.js';
import { TemplateEngine, templateScope, type Template } from './template.js';
import type { CloudEvent } from './types.js';
import type { NewRun } from '../store/types.js';

/** A problem as one line: where, then what (a message that names its own place already stays as it is). */
export function placed(p: ErrorProblem): string {
  const where = toDisplayPath(fromPointer(p.pointer));
  return where === '' || p.message.startsWith(where) ? p.message : `${where}: ${p.message}`;
}

/** The names of routes and of actions inside them. */
const NAME_PATTERN = '^[A-Za-z0-9_.:-]+$';

const RETRY_SCHEMA = section(
  {
    attempts: Type.Integer({ minimum: 1, description: 'Attempts in all, the first included (1: never retry).', default: 5 }),
    backoff: duration('Wait before the first retry; doubles with each further retry.', '1s'),
    maxBackoff: duration('The longest wait between two attempts.', '5m'),
    maxAge: duration('Give up (failure and a dead letter) once a retry would start later than this after the run was created.', '24h'),
  },
  { description: 'How failed attempts are retried: exponential backoff with full jitter, honouring Retry-After.' },
);

/** One item of a route's `actions`: one action-type key → its parameters, plus an optional `name`. */
export type RouteAction = { readonly name?: string } & Readonly<Record<string, unknown>>;

const ROUTE_ACTION_SCHEMA = Type.Unsafe<RouteAction>({
  type: 'object',
  description:
    'One action: exactly one key, the action type (`http`, `publish`, `noop`, a plugin or profile type …), whose value is ' +
    'its parameters; plus an optional `name`. Strings in parameters may hold templates (`{{ data.title }}`).',
  minProperties: 1,
  properties: {
    name: { type: 'string', pattern: NAME_PATTERN, description: "The action's name inside its route (runs show it); unique within the route. Default: its type." },
  },
  additionalProperties: { type: ['object', 'null'], description: 'The parameters of the action, as the action type defines them; not normalized (`null`: none).' },
});

export const ROUTE_SCHEMA = object(
  {
    name: Type.String({ pattern: NAME_PATTERN, description: 'Unique name of the route (letters, digits, `_`, `.`, `:`, `-`); runs refer to it.' }),
    description: Type.Optional(Type.String({ description: 'What the route is for.' })),
    enabled: Type.Boolean({ description: 'A disabled route matches nothing.', default: true }),
    match: Type.Unsafe<Record<string, unknown>>({
      type: 'object',
      description:
        'Which events the route takes: `type` (exact or with `*` wildcards), `topic` (AMQP pattern: `*` one word, ' +
        '`#` any number), `data` (path → accepted values) and extension attributes. The router checks its content.',
    }),
    actions: Type.Array(ROUTE_ACTION_SCHEMA, { minItems: 1, description: 'What to run for a matched event: one run per action.' }),
    retry: RETRY_SCHEMA,
    timeout: duration('Longest time one attempt may take (then `attempt_timeout`, retryable).', '30s'),
    deadline: duration('Longest time the whole run may take, retries and waiting included (then `timeout`).', '1h'),
    concurrency: Type.Optional(Type.Integer({ minimum: 1, description: 'At most this many runs of this route at once. Default: no limit.' })),
    orderingKey: Type.Optional(
      Type.String({ minLength: 1, description: 'Template (`{{ subject }}`): runs with the same key run one at a time, in the order of their events.' }),
    ),
    labels: Type.Unsafe<Record<string, string> | string>({
      anyOf: [
        { type: 'object', additionalProperties: { type: 'string', description: 'A string template (`{{ data.team }}`).' } },
        { type: 'string', minLength: 1, description: 'One template whose value is an object (`{{ data.labels }}`): its keys and values are the labels (an empty value kept).' },
      ],
      description: 'Labels put on every run of the route: a map whose values are string templates, or one template that gives the whole map.',
      default: {},
    }),
  },
  { description: 'A route: events that `match` become runs of its `actions`.' },
);

/** A route as the normalized configuration gives it: durations in milliseconds, `null` parameters as `{}`. */
export type RouteConfig = Options<typeof ROUTE_SCHEMA>;

/**
 * With no configuration at all, the one built-in route turns every `example.*` event into a run of the
 * `noop` action, which succeeds: `dispatcher serve` plus one POST shows the whole way of an event.
 * A file that sets `routes` replaces this list.
 */
export const EXAMPLE_ROUTE = { name: 'example', match: { type: 'example.*' }, actions: [{ noop: {} }] };

/** A route's actions as written, with `null` parameters (`- noop:` in YAML) as `{}`. */
export function routeActions(actions: readonly RouteAction[]): RouteAction[] {
  return actions.map((action) => Object.fromEntries(Object.entries(action).map(([key, value]) => [key, key !== 'name' && value === null ? {} : value])));
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
  routes: readonly RouteConfig[];
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
  const routes: CompiledRoute[] = [];
  const created: Action[] = [];
  // Every problem of every route, so that one look at the configuration shows them all.
  const problems: ErrorProblem[] = [];
  const problem = (path: Path, message: string) => problems.push({ pointer: toPointer(path), message });
  /** What a part threw: its problems (pointers below `base` unless already from the root), or its message. */
  const thrown = (base: Path, err: unknown) => {
    const e = err as Partial<DispatcherError>;
    if (e instanceof DispatcherError && e.problems !== undefined && e.problems.length > 0) {
      for (const p of e.problems) problems.push({ pointer: p.pointer.startsWith('/routes/') ? p.pointer : toPointer(base) + p.pointer, message: p.message });
    } else problem(base, (err as Error).message);
  };
  for (const [i, config] of options.routes.entries()) {
    if (config.enabled === false) continue;
    const at: Path = ['routes', i];
    const before = problems.length;
    try {
      checkRouteMatch({ name: config.name, match: config.match }, `${toDisplayPath(at)}.match`);
    } catch (err) {
      problem([...at, 'match'], (err as Error).message);
    }
    const actions: CompiledAction[] = [];
    const seen = new Map<string, number>();
    for (const [j, spec] of config.actions.entries()) {
      const { name, ...rest } = spec as { name?: unknown } & Record<string, unknown>;
      const keys = Object.keys(rest);
      if (keys.length !== 1) {
        problem([...at, 'actions', j], `an action names exactly one action type (found ${keys.length ? keys.join(', ') : 'none'})`);
        continue;
      }
      const type = keys[0]!;
      const base: Path = [...at, 'actions', j, type];
      const actionType = options.actionTypes.get(type);
      if (actionType === undefined) {
        problem([...at, 'actions', j], `unknown action type "${type}" (known: ${[...options.actionTypes.keys()].join(', ')})`);
        continue;
      }
      const params = (rest[type] ?? {}) as Record<string, unknown>;
      if (params === null || typeof params !== 'object' || Array.isArray(params)) {
        problem(base, 'parameters must be an object');
        continue;
      }
      if (actionType.paramsSchema !== undefined) {
        let validate = validators.get(type);
        if (validate === undefined) validators.set(type, (validate = ajv.compile(actionType.paramsSchema)));
        if (!validate(params)) {
          for (const e of validate.errors ?? []) problem([...base, ...fromPointer(e.instancePath)], e.message ?? 'is invalid');
          continue;
        }
      }
      const count = (seen.get(type) ?? 0) + 1;
      seen.set(type, count);
      const actionName = typeof name === 'string' && name !== '' ? name : count === 1 ? type : `${type}#${count}`;
      if (actions.some((a) => a.name === actionName)) {
        problem([...at, 'actions', j], `action name "${actionName}" is used twice in route ${config.name}`);
        continue;
      }
      // A template that does not parse is noted and compiling goes on, so one look shows every broken parameter.
      const templateProblems: unknown[] = [];
      const compile = (value: unknown, compileOptions: Parameters<typeof engine.compile>[2] & { at?: Path } = {}): Template => {
        try {
          return engine.compile(value, [...base, ...(compileOptions.at ?? [])], compileOptions);
        } catch (err) {
          templateProblems.push(err);
          return { isStatic: true, render: () => value };
        }
      };
      try {
        const action = await actionType.create(params, {
          settings: options.actionSettings[type] ?? {},
          compile,
          log: options.log.child({ route: config.name, action: type }),
          outputs: options.outputs ?? [],
        });
        created.push(action);
        for (const err of templateProblems) thrown(base, err);
        if (templateProblems.length === 0) actions.push({ name: actionName, type, action });
      } catch (err) {
        for (const e of templateProblems) thrown(base, e);
        if (!templateProblems.includes(err)) thrown(base, err);
      }
    }
    let orderingKey: Template | null = null;
    let labels: Template | null = null;
    try {
      if (config.orderingKey) orderingKey = engine.compile(config.orderingKey, [...at, 'orderingKey']);
    } catch (err) {
      thrown([...at, 'orderingKey'], err);
    }
    try {
      if (typeof config.labels === 'string' || Object.keys(config.labels).length > 0) labels = engine.compile(config.labels, [...at, 'labels']);
    } catch (err) {
      thrown([...at, 'labels'], err);
    }
    if (problems.length === before) routes.push({ name: config.name, config, actions, orderingKey, labels });
  }
  if (problems.length > 0) {
    await Promise.allSettled(created.map((a) => a.close?.()));
    throw configProblems('routes', problems.map((p) => placed(p)), problems);
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
            // Keys are per route: two routes keyed by the same subject do not hold each other up. The separator
            // is U+001F: PostgreSQL's text refuses U+0000.
            if (key !== null && key !== undefined && key !== '') orderingKey = `${route.name}\u001f${String(key)}`;
          }
          // A map of templates drops a value that rendered empty (a field the event lacks); one template that
          // gives the whole map keeps an empty value, which the event holds as such.
          if (route.labels !== null) labels = stringValues(route.labels.render(scope), typeof route.config.labels === 'string');
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

function stringValues(value: unknown, keepEmpty = false): Record<string, string> {
  const out: Record<string, string> = {};
  if (value === null || typeof value !== 'object') return out;
  for (const [k, v] of Object.entries(value)) {
    if (v === null || v === undefined || (v === '' && !keepEmpty)) continue;
    out[k] = typeof v === 'string' ? v : JSON.stringify(v);
  }
  return out;
}
