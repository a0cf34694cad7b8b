/** Ids of events, runs and the rest (src/core/ids.ts). */

import { describe, expect, it } from 'vitest';
import { newId } from '../src/core/ids.js';

describe('ids', () => {
  it('are UUID version 7, carry the time, and increase within the process, also within one millisecond', () => {
    const before = Date.now();
    const ids = Array.from({ length: 5000 }, () => newId());
    const after = Date.now();
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
    const ms = (id: string) => parseInt(id.replace(/-/g, '').slice(0, 12), 16);
    expect(ms(ids[0]!)).toBeGreaterThanOrEqual(before);
    expect(ms(ids[ids.length - 1]!)).toBeLessThanOrEqual(after + 1);
    expect(new Set(ids).size).toBe(ids.length);
  });
});
