/**
 * `/docs` can send an event: Debian's Chromium opens the browsable API docs of a served dispatcher, authorizes
 * with a pre-shared key, tries `POST /v1/events` with its example, and the event is taken. Without Chromium
 * the file is skipped with a printed reason; with CI=true it fails.
 */

import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDispatcher, TEST_KEY, type TestDispatcher } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const required = process.env.CI === 'true';
const missing = existsSync(CHROMIUM) ? null : `${CHROMIUM} is not installed (apt-get install chromium)`;
if (missing !== null && !required) console.warn(`docs-ui.test.ts skipped: ${missing}`);

describe.skipIf(missing !== null && !required)('the browsable API docs', () => {
  let t: TestDispatcher;
  let address: string;

  beforeAll(async () => {
    if (missing !== null) throw new Error(`docs-ui.test.ts: ${missing}; with CI=true it must run`);
    t = await startDispatcher({ server: { port: 0 } });
    address = await t.d.listen();
  });

  afterAll(async () => {
    await t?.close();
  });

  it('send an event: Authorize with a key, Try it out on POST /v1/events, Execute its example, 202', async () => {
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const page = await browser.newPage();
      const failures: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') failures.push(m.text());
      });
      await page.goto(`${address}/docs/`);
      // Authorize: the psk scheme is the whole Authorization header.
      await page.getByRole('button', { name: /authorize/i }).first().click();
      const dialog = page.locator('.modal-ux');
      await dialog.locator('input[type=text]').first().fill(`PSK ${TEST_KEY}`);
      // The first scheme's Authorize (psk), then Close.
      await dialog.locator('button.authorize').first().click();
      await dialog.locator('button.btn-done').first().click();
      // The operation, its example body, and its answer.
      const operation = page.locator('#operations-events-sendEvents');
      await operation.locator('.opblock-summary').click();
      await operation.getByRole('button', { name: /try it out/i }).click();
      const body = operation.locator('textarea.body-param__text');
      const example = JSON.parse(await body.inputValue()) as { id: string };
      const id = `from-docs-${Date.now()}`;
      await body.fill(JSON.stringify({ ...example, id }));
      await operation.getByRole('button', { name: /execute/i }).click();
      const status = operation.locator('.live-responses-table tbody .response-col_status').first();
      await status.waitFor({ timeout: 15_000 });
      expect((await status.innerText()).trim(), failures.join('\n')).toBe('202');
      const stored = await t.d.store.listEvents({ limit: 10, offset: 0 });
      expect(stored.items.map((e) => e.event.id)).toContain(id);
    } finally {
      await browser.close();
    }
  }, 60_000);
});
