/** What the profiles switched on advise about the rest of the configuration (`Profile.advise`). */

import type { DispatcherConfig } from '../config/schema.js';
import { PRESET, type Preset } from '../preset.js';

/** Each advice prefixed with its profile's section. */
export function profileAdvice(config: DispatcherConfig, preset: Preset = PRESET): string[] {
  const out: string[] = [];
  for (const profile of preset) {
    const section = config.profiles[profile.name];
    if (section === undefined || profile.advise === undefined) continue;
    for (const advice of profile.advise({ name: profile.name, config: section }, config as unknown as Record<string, unknown>)) out.push(`profiles.${profile.name}: ${advice}`);
  }
  return out;
}
