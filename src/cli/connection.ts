/**
 * How the commands that speak the HTTP API find the dispatcher and prove who they are: from the flags and
 * the environment first, then from the configuration the server itself reads, in the same order.
 *
 * The address: `-u URL`, else `DISPATCHER_URL`, else `server.host` and `server.port` of the configuration
 * (`--config`, `DISPATCHER_CONFIG`, `./dispatcher.yaml`, with `DISPATCHER_SERVER_*` over it).
 *
 * The credential: `DISPATCHER_TOKEN` (a bearer token, from `dispatcher token`), else `DISPATCHER_PSK` (a
 * pre-shared key), else the key in the file `DISPATCHER_KEY_FILE` names, else the key in `auth.keyFile`
 * (the admin key a fresh `serve` writes, `./data/admin.key` by default), else none. Environment rather than
 * flags: flags show in process lists.
 */

import { existsSync, readFileSync } from 'node:fs';
import { findConfigFile, inspectConfig } from '../config/load.js';
import type { DispatcherConfig } from '../config/schema.js';
import { CliError, count } from './output.js';

export interface ConnectionOptions {
  /** `-u`/`--url`. */
  url?: string;
  /** `-c`/`--config`. */
  config?: string;
}

export interface Connection {
  /** The dispatcher's base URL. */
  readonly url: string;
  /** Where the URL came from, for messages: `-u`, `DISPATCHER_URL`, `server.port of dispatcher.yaml` … */
  readonly urlFrom: string;
  /** The `Authorization` header sent, if any. */
  readonly authorization: string | undefined;
  /** What the credential is and where it came from, for messages. */
  readonly credentialFrom: string;
}

/** How to give another credential: said after every 401 and 403. */
const OTHER_CREDENTIAL =
  'give another with DISPATCHER_TOKEN (a bearer token from `dispatcher token`), DISPATCHER_PSK (a pre-shared key) or DISPATCHER_KEY_FILE (a file holding one)';

/** The address and credential of the dispatcher the command talks to. Reads the configuration only when the flags and environment leave something open. */
export async function connect(options: ConnectionOptions, env: NodeJS.ProcessEnv = process.env): Promise<Connection> {
  let url = options.url;
  let urlFrom = '-u';
  if (url === undefined && env.DISPATCHER_URL) {
    url = env.DISPATCHER_URL;
    urlFrom = 'DISPATCHER_URL';
  }
  if (url !== undefined && !/^https?:\/\/[^/]/i.test(url)) throw new CliError(`${urlFrom}: "${url}" is not an http:// or https:// URL`, 2);

  let authorization: string | undefined;
  let credentialFrom = '';
  if (env.DISPATCHER_TOKEN) [authorization, credentialFrom] = [`Bearer ${env.DISPATCHER_TOKEN}`, 'the bearer token in DISPATCHER_TOKEN'];
  else if (env.DISPATCHER_PSK) [authorization, credentialFrom] = [`PSK ${env.DISPATCHER_PSK}`, 'the pre-shared key in DISPATCHER_PSK'];
  else if (env.DISPATCHER_KEY_FILE) {
    const file = env.DISPATCHER_KEY_FILE;
    if (!existsSync(file)) throw new CliError(`DISPATCHER_KEY_FILE: ${file} does not exist`, 2);
    [authorization, credentialFrom] = [`PSK ${readKey(file)}`, `the pre-shared key in ${file} (DISPATCHER_KEY_FILE)`];
  }

  if (url === undefined || authorization === undefined) {
    const { config, file } = await serverConfig(options.config, env);
    if (url === undefined) {
      url = baseUrl(config.server.host, config.server.port);
      urlFrom = file === undefined ? 'the default server.host and server.port' : `server.host and server.port of ${file}`;
    }
    if (authorization === undefined) {
      const keyFile = config.auth.keyFile;
      if (!config.auth.enabled) credentialFrom = `no credential (auth.enabled is false in ${file ?? 'the defaults'})`;
      else if (keyFile !== null && existsSync(keyFile)) {
        [authorization, credentialFrom] = [`PSK ${readKey(keyFile)}`, `the admin key in ${keyFile} (auth.keyFile${file === undefined ? '' : ` of ${file}`})`];
      } else {
        credentialFrom = `no credential: DISPATCHER_TOKEN, DISPATCHER_PSK and DISPATCHER_KEY_FILE are not set${keyFile === null ? '' : `, and ${keyFile} (auth.keyFile) does not exist here`}`;
      }
    }
  }
  return { url, urlFrom, authorization, credentialFrom };
}

/** The URL a client reaches a server bound to `host` at: a wildcard address is reached on the loopback. */
export function baseUrl(host: string, port: number): string {
  const reach = host === '0.0.0.0' ? '127.0.0.1' : host === '::' || host === '[::]' ? '::1' : host;
  return `http://${reach.includes(':') && !reach.startsWith('[') ? `[${reach}]` : reach}:${port}`;
}

function readKey(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new CliError(`cannot read the key in ${file}: ${(err as Error).message}`);
  }
}

/**
 * The configuration as the server would read it, for its address and key file. With problems, the command
 * still goes on with what could be read (a section with a problem has its defaults), and says so.
 */
async function serverConfig(given: string | undefined, env: NodeJS.ProcessEnv): Promise<{ config: DispatcherConfig; file: string | undefined }> {
  const file = findConfigFile(given, env);
  const inspection = await inspectConfig({ file, env });
  if (inspection.problems.length > 0) {
    process.stderr.write(
      `warning: ${file ?? 'the configuration'} has ${count(inspection.problems.length, 'problem')} ` +
        `(\`dispatcher validate-config${file === undefined ? '' : ` ${file}`}\` lists them); the server address and key file are taken from what could be read\n`,
    );
  }
  if (inspection.config !== null) return { config: inspection.config, file };
  const defaults = await inspectConfig({ env: {} });
  return { config: defaults.config!, file: undefined };
}

/** An error answer's message: the method, the path, the status and the API's code and message; for 401 and 403 the credential that was sent. */
export function answerError(connection: Connection, method: string, path: string, status: number, body: unknown): CliError {
  const detail = body === null ? '' : typeof body === 'object' ? `${(body as { code?: string }).code}: ${(body as { message?: string }).message}` : String(body).slice(0, 200);
  let message = `${method} ${path}: HTTP ${status} ${detail}`;
  if (status === 401 || status === 403) {
    message += `\n  sent ${connection.credentialFrom}${connection.authorization === undefined ? '' : ` to ${connection.url} (${connection.urlFrom})`}; ${OTHER_CREDENTIAL}`;
  }
  return new CliError(message);
}

/** Sends a request and returns its parsed JSON answer (or text); an error answer is a CliError saying what went wrong. */
export async function call(connection: Connection, path: string, init: RequestInit = {}): Promise<any> {
  const response = await request(connection, path, init);
  const body = await answerOf(response);
  if (!response.ok) throw answerError(connection, init.method ?? 'GET', path, response.status, body);
  return body;
}

/** A response's body: parsed JSON, null when empty, else its text. */
export async function answerOf(response: Response): Promise<any> {
  const text = await response.text();
  if (text === '') return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Sends a request with the connection's credential (unless the request carries its own) and returns the response as it is. */
export async function request(connection: Connection, path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (connection.authorization !== undefined && !headers.has('authorization')) headers.set('authorization', connection.authorization);
  try {
    return await fetch(new URL(path, connection.url), { ...init, headers });
  } catch (err) {
    const cause = (err as Error & { cause?: Error }).cause?.message ?? (err as Error).message;
    throw new CliError(`cannot reach ${connection.url} (${connection.urlFrom}): ${cause}; is the dispatcher running? Give its address with -u URL or DISPATCHER_URL`);
  }
}
