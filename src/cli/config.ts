/** `dispatcher init-config` and `dispatcher validate-config`. */

import { initConfig } from '../config/init.js';
import { configInvalid, findConfigFile, inFileOrder, inspectConfig } from '../config/load.js';
import { DispatcherError } from '../core/errors.js';
import { TypeRegistry } from '../core/type-registry.js';
import { CliError, count } from './output.js';
import { profileAdvice } from './advice.js';

export async function initConfigCommand(file: string, options: { interactive?: boolean; yes?: boolean; force?: boolean }): Promise<void> {
  try {
    const written = await initConfig({ file, interactive: options.interactive === true && options.yes !== true, yes: options.yes, force: options.force });
    process.stdout.write(`wrote ${written.file}\n`);
    if (written.keyFile !== null) process.stdout.write(`wrote the admin API key to ${written.keyFile} (mode 0600): the CLI reads it; curl -H "authorization: PSK $(cat ${written.keyFile})"\n`);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
}

/**
 * Every problem of a configuration at once, each with its file, line and path: the schema, the routes, the
 * actions and their templates, the type schemas. What is accepted but not checked is a warning.
 */
export async function validateConfigCommand(file: string | undefined, options: { config?: string }): Promise<void> {
  const path = findConfigFile(file ?? options.config);
  if (path === undefined) throw new CliError('name a file: dispatcher validate-config FILE (or --config, or DISPATCHER_CONFIG; else ./dispatcher.yaml is read)', 2);
  const inspection = await inspectConfig({ file: path, env: process.env });
  const problems = [...inspection.problems];
  const warnings: string[] = [];
  const { config } = inspection;
  if (config !== null) {
    const later = (err: unknown) => {
      const e = err as DispatcherError;
      const found = e instanceof DispatcherError && e.problems !== undefined && e.problems.length > 0 ? e.problems : [{ pointer: '', message: e.message }];
      problems.push(...found.map((p) => inspection.place(p)));
    };
    try {
      const types = new TypeRegistry(config.types);
      warnings.push(...types.warnings.map((w) => inspection.place(w).message));
    } catch (err) {
      later(err);
    }
    // The same compile step `serve` runs (action types, plugins, templates), without opening the store.
    try {
      const { compileForCheck } = await import('./routes-test.js');
      await (await compileForCheck(config)).close();
    } catch (err) {
      later(err);
    }
    warnings.push(...profileAdvice(config));
  }
  for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
  if (problems.length > 0) throw new CliError(configInvalid(inFileOrder(problems)).message);
  const profiles = Object.keys(config!.profiles);
  process.stdout.write(`${path}: valid (${count(config!.routes.length, 'route')}, ${count(Object.keys(config!.types).length, 'type')}${profiles.length === 0 ? '' : `, profiles: ${profiles.join(', ')}`})\n`);
}

