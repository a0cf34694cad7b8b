/**
 * The profile checks observations against the original's JSON Schemas (src/profiles/ciso-assistant/schemas.ts):
 * they are the original's files (test/fixtures/ciso-assistant/schemas/, copied from its
 * data/schemas/commands/), word for word.
 */

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SCHEMAS } from '../src/profiles/ciso-assistant/schemas.js';

const original = (type: string) => JSON.parse(readFileSync(new URL(`./fixtures/ciso-assistant/schemas/${type}_v1.json`, import.meta.url), 'utf8')) as unknown;

describe('ciso-assistant: the message schemas', () => {
  it.each(['update_applied_control', 'update_requirement_assessment', 'upload_attachment'])('%s is the original’s schema', (type) => {
    expect(SCHEMAS[type]).toEqual(original(type));
  });

  it('has no schema the original does not', () => {
    expect(Object.keys(SCHEMAS).sort()).toEqual(['update_applied_control', 'update_requirement_assessment', 'upload_attachment']);
  });
});
