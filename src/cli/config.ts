/** `dispatcher init-config` and `dispatcher validate-config`. */

import { initConfig } from '../config/init.js';
import { loadConfig } from '../config/load.js';
import { CliError } from './output.js';

export async function initConfigCommand(file: string, options: { interactive?: boolean; yes?: boolean; force?: boolean }): Promise<void> {
  try {
    const written = await initConfig({ file, interactive: options.interactive === true && options.yes !== true, yes: options.yes, force: options.force });
    process.stdout.write(`wrote ${written.file}\n`);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
}

export async function validateConfigCommand(file: string | undefined, options: { config?: string }): Promise<void> {
  const path = file ?? options.config ?? process.env.DISPATCHER_CONFIG;
  if (path === undefined) throw new CliError('name a file: dispatcher validate-config FILE (or --config, or DISPATCHER_CONFIG)', 2);
  try {
    const config = await loadConfig({ file: path, env: process.env });
    // The routes are checked too: the same compile step `serve` runs, without opening the store.
    const { compileForCheck } = await import('./routes-test.js');
    const plan = await compileForCheck(config);
    await plan.close();
    const profiles = Object.keys(config.profiles);
    process.stdout.write(`${path}: valid (${config.routes.length} routes, ${Object.keys(config.types).length} types${profiles.length === 0 ? '' : `, profiles: ${profiles.join(', ')}`})\n`);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
}
