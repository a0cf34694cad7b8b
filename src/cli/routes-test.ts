/** `dispatcher routes test EVENT.json`: which routes and actions an event matches, and why. */

import { pino } from 'pino';
import { checkEnvelope } from '../core/envelope.js';
import { compileRoutes, type RoutePlan } from '../core/routes.js';
import { TypeRegistry } from '../core/type-registry.js';
import type { CloudEvent } from '../core/types.js';
import type { DispatcherConfig } from '../config/schema.js';
import { configFromFlags } from './serve.js';
import { readAll } from './send.js';
import { CliError, count, printJson } from './output.js';

/** The routes compiled as `serve` compiles them (the preset's action types, the plugins), without opening the store. */
export async function compileForCheck(config: DispatcherConfig): Promise<RoutePlan> {
  const { configuredActionTypes } = await import('../dispatcher.js');
  return compileRoutes({
    routes: config.routes,
    actionTypes: await configuredActionTypes(config),
    actionSettings: config.actions as Record<string, Record<string, unknown>>,
    log: pino({ level: 'silent' }),
    outputs: config.outputs.map((o) => o.name),
  });
}

export async function routesTestCommand(file: string, options: { config?: string; json?: boolean }): Promise<void> {
  const config = await configFromFlags({ config: options.config });
  const events = await readAll(file);
  if (events.length !== 1) throw new CliError(`expected one event in ${file}, found ${events.length}`);
  const problems = checkEnvelope(events[0], '');
  const types = new TypeRegistry(config.types);
  const event = events[0] as CloudEvent;
  if (problems.length === 0 && types.has(event.type)) problems.push(...types.check(event.type, event.data, ''));
  const plan = await compileForCheck(config);
  try {
    const explained = plan.index.explain(event);
    const result = {
      valid: problems.length === 0,
      problems,
      routes: explained.map((r) => ({
        route: r.name,
        matched: r.matched,
        reasons: r.reasons,
        actions: r.matched ? plan.routes[r.index]!.actions.map((a) => `${a.name} (${a.type})`) : [],
      })),
    };
    if (problems.length > 0) process.exitCode = 1;
    if (options.json) return printJson(result);
    if (problems.length > 0) {
      process.stdout.write('the event would be refused:\n');
      for (const p of problems) process.stdout.write(`  ${p.pointer || '/'}: ${p.message}\n`);
    }
    const matched = result.routes.filter((r) => r.matched);
    for (const r of result.routes) {
      process.stdout.write(`${r.matched ? '✓' : '✗'} ${r.route}\n`);
      for (const reason of r.reasons) process.stdout.write(`    ${reason}\n`);
      for (const a of r.actions) process.stdout.write(`    → ${a}\n`);
    }
    process.stdout.write(matched.length === 0 ? 'no route matches: the event would be recorded as unrouted\n' : `${count(matched.length, 'route')} ${matched.length === 1 ? 'matches' : 'match'}\n`);
  } finally {
    await plan.close();
  }
}
