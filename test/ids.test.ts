/** Ids of events, runs and the rest (src/core/ids.ts). */

import { describe, expect, it } from 'vitest';
import { newId } from '../src/core/ids.js';
import { idTime as ms } from './helpers.js';

describe('ids', () => {
  it('are UUID version 7, carry the time, and increase within the process, also within one millisecond', () => {
    const before = Date.now();
    const ids = Array.from({ length: 5000 }, () => newId());
    const after = Date.now();
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
    expect(ms(ids[0]!)).toBeGreaterThanOrEqual(before);
    expect(ms(ids[ids.length - 1]!)).toBeLessThanOrEqual(after + 1);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe('ids made for a given time', () => {
  it('carry exactly that time, increase within it, and sort by it', () => {
    const t = 1_700_000_000_123;
    const ids = Array.from({ length: 2000 }, () => newId(t));
    for (const id of ids) expect(ms(id)).toBe(t);
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
    // A later time sorts after them, an earlier one (a clock set back) before: id order is time order.
    const later = newId(t + 1);
    const earlier = newId(t - 1);
    expect(ms(later)).toBe(t + 1);
    expect(ms(earlier)).toBe(t - 1);
    expect(later > ids.at(-1)!).toBe(true);
    expect(earlier < ids[0]!).toBe(true);
    expect(new Set([...ids, later, earlier]).size).toBe(ids.length + 2);
  });
});
