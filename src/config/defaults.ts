/**
 * The defaults: the first layer of the configuration (defaults ← file ← environment ← flags), each taken
 * from the `default` of its option where the option is declared (core/options.ts).
 *
 * Written the way a person writes the file (`30s`, `1MiB`), so that the reference in docs/configuration.md
 * reads like a configuration file. The loader normalizes them together with everything else.
 */

import { defaultConfig, type RawConfig } from './schema.js';

export const DEFAULTS: RawConfig = defaultConfig();
