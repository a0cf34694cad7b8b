/** The error catalogue, its HTTP mapping and docs/errors.md stay in sync. */

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../src/core/errors.js';
import { HTTP_STATUS } from '../src/api/errors.js';

function documentedRows(): Map<string, { status: number; retryable: boolean; description: string }> {
  const rows = new Map<string, { status: number; retryable: boolean; description: string }>();
  for (const line of readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8').split('\n')) {
    const m = /^\| `([a-z0-9_]+)` \| (\d{3}) \| (yes|no) \| (.+) \|$/.exec(line);
    if (m) rows.set(m[1]!, { status: Number(m[2]), retryable: m[3] === 'yes', description: m[4]! });
  }
  return rows;
}

describe('error catalogue', () => {
  it('documents every code with its status, retryability and description, and nothing else', () => {
    const rows = documentedRows();
    expect([...rows.keys()].sort()).toEqual(Object.keys(ERROR_CODES).sort());
    for (const [code, spec] of Object.entries(ERROR_CODES)) {
      const row = rows.get(code)!;
      expect(row.status, code).toBe(HTTP_STATUS[code as keyof typeof HTTP_STATUS]);
      expect(row.retryable, code).toBe(spec.retryable);
      expect(row.description, code).toBe(spec.description);
    }
  });

  it('maps every code to an HTTP status', () => {
    for (const code of Object.keys(ERROR_CODES)) {
      const status = HTTP_STATUS[code as keyof typeof HTTP_STATUS];
      expect(status, code).toBeGreaterThanOrEqual(400);
      expect(status, code).toBeLessThan(600);
    }
  });
});
