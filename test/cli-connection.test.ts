/**
 * Where the API commands find the dispatcher and which credential they send: flags and environment first,
 * then the configuration as the server reads it (file, then DISPATCHER_* over it).
 */

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { answerError, baseUrl, connect } from '../src/cli/connection.js';
import { CliError } from '../src/cli/output.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dispatcher-connection-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return file;
}

const key = write('keys/admin.key', 'adminkey12345678\n');
const config = write('dispatcher.yaml', `server: { host: 0.0.0.0, port: 9123 }\nauth: { keyFile: ${JSON.stringify(key)} }\n`);

describe('connect', () => {
  it('takes the address and the admin key from the configuration, a wildcard host reached on the loopback', async () => {
    const c = await connect({ config }, {});
    expect(c.url).toBe('http://127.0.0.1:9123');
    expect(c.urlFrom).toBe(`server.host and server.port of ${config}`);
    expect(c.authorization).toBe('PSK adminkey12345678');
    expect(c.credentialFrom).toBe(`the admin key in ${key} (auth.keyFile of ${config})`);
  });

  it('reads DISPATCHER_CONFIG when no --config is given, and DISPATCHER_SERVER_* over the file, as the server does', async () => {
    const c = await connect({}, { DISPATCHER_CONFIG: config, DISPATCHER_SERVER_PORT: '9200', DISPATCHER_SERVER_HOST: '::' });
    expect(c.url).toBe('http://[::1]:9200');
    expect(c.authorization).toBe('PSK adminkey12345678');
  });

  it('-u wins over DISPATCHER_URL, which wins over the configuration', async () => {
    expect((await connect({ config }, { DISPATCHER_URL: 'http://env.example:1' })).url).toBe('http://env.example:1');
    const flag = await connect({ config, url: 'http://flag.example:2' }, { DISPATCHER_URL: 'http://env.example:1' });
    expect([flag.url, flag.urlFrom]).toEqual(['http://flag.example:2', '-u']);
  });

  it('credentials in order: DISPATCHER_TOKEN, DISPATCHER_PSK, DISPATCHER_KEY_FILE, then auth.keyFile', async () => {
    const other = write('keys/other.key', 'otherkey87654321\n');
    const all = { DISPATCHER_TOKEN: 'tok', DISPATCHER_PSK: 'pskpskpsk', DISPATCHER_KEY_FILE: other };
    expect((await connect({ config }, all)).authorization).toBe('Bearer tok');
    expect((await connect({ config }, { ...all, DISPATCHER_TOKEN: '' })).authorization).toBe('PSK pskpskpsk');
    const fromFile = await connect({ config }, { ...all, DISPATCHER_TOKEN: '', DISPATCHER_PSK: '' });
    expect(fromFile.authorization).toBe('PSK otherkey87654321');
    expect(fromFile.credentialFrom).toBe(`the pre-shared key in ${other} (DISPATCHER_KEY_FILE)`);
  });

  it('a DISPATCHER_KEY_FILE that does not exist is a usage error', async () => {
    const err = await connect({ config }, { DISPATCHER_KEY_FILE: path.join(dir, 'nope.key') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(2);
    expect((err as CliError).message).toContain('nope.key does not exist');
  });

  it('no key file: no credential, and says why', async () => {
    const missing = write('missing.yaml', `server: { port: 9124 }\nauth: { keyFile: ${JSON.stringify(path.join(dir, 'absent.key'))} }\n`);
    const c = await connect({ config: missing }, {});
    expect(c.authorization).toBeUndefined();
    expect(c.credentialFrom).toContain('DISPATCHER_TOKEN, DISPATCHER_PSK and DISPATCHER_KEY_FILE are not set');
    expect(c.credentialFrom).toContain('absent.key (auth.keyFile) does not exist here');
    const open = write('open.yaml', 'server: { port: 9125 }\nauth: { enabled: false }\n');
    expect((await connect({ config: open }, {})).credentialFrom).toBe(`no credential (auth.enabled is false in ${open})`);
  });

  it('a configuration with problems still gives its address, with a warning', async () => {
    const broken = write('broken.yaml', `server: { port: 9126 }\nrunner: { bogus: 1 }\nauth: { keyFile: ${JSON.stringify(key)} }\n`);
    const c = await connect({ config: broken }, {});
    expect(c.url).toBe('http://127.0.0.1:9126');
    expect(c.authorization).toBe('PSK adminkey12345678');
  });

  it('a URL that is not http(s) is a usage error', async () => {
    const err = (await connect({ url: 'localhost:8080' }, {}).catch((e: unknown) => e)) as CliError;
    expect(err.exitCode).toBe(2);
    expect(err.message).toContain('"localhost:8080" is not an http:// or https:// URL');
  });
});

describe('answerError', () => {
  it('a 401 or 403 says which credential was sent, from where, and how to give another', async () => {
    const c = await connect({ config }, {});
    const e = answerError(c, 'GET', '/v1/runs', 401, { code: 'unauthorized', message: 'unknown key' });
    expect(e.message).toContain('GET /v1/runs: HTTP 401 unauthorized: unknown key');
    expect(e.message).toContain(`sent the admin key in ${key} (auth.keyFile of ${config}) to http://127.0.0.1:9123`);
    expect(e.message).toContain('give another with DISPATCHER_TOKEN');
    expect(answerError(c, 'GET', '/v1/runs', 404, { code: 'not_found', message: 'x' }).message).not.toContain('give another');
  });
});

describe('baseUrl', () => {
  it('brackets an IPv6 host and reaches a wildcard on the loopback', () => {
    expect(baseUrl('0.0.0.0', 1)).toBe('http://127.0.0.1:1');
    expect(baseUrl('::', 2)).toBe('http://[::1]:2');
    expect(baseUrl('fe80::1', 3)).toBe('http://[fe80::1]:3');
    expect(baseUrl('dispatcher.internal', 4)).toBe('http://dispatcher.internal:4');
  });
});
