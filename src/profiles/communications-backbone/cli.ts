/**
 * `dispatcher backbone client-config CLIENT_ID`: the `soar-config.json` the backbone adapters read
 * (`api`, `client_id`, `client_name`, `subscription`, and `secret` when there is one to give), through the
 * profile's `/client` API with the administrator's credential (`DISPATCHER_PSK`, the admin key, …).
 *
 * - `--create --name N --subscription S`: registers the client first; the file holds its secret.
 * - `--rotate`: gives the client a new secret (its old tokens stop working); the file holds it.
 * - neither: the client as registered, without a secret (the API never shows one again); the file says so.
 */

import { writeFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import type { CliApi } from '../../core/profile.js';

interface ClientConfigOptions {
  url?: string;
  config?: string;
  create?: boolean;
  rotate?: boolean;
  name?: string;
  subscription?: string;
  api?: string;
  output: string;
}

export async function clientConfigCommand(api: CliApi, clientId: string, options: ClientConfigOptions): Promise<void> {
  if (options.create === true && options.rotate === true) throw api.fail('give --create or --rotate, not both', 2);
  if (options.create === true && (options.name === undefined || options.subscription === undefined)) {
    throw api.fail('--create needs --name and --subscription (a topic pattern: `*` one word, `#` zero or more)', 2);
  }
  const connection = await api.connect(options);
  const path = `/client/${encodeURIComponent(clientId)}`;
  let client: Record<string, unknown>;
  if (options.create === true) {
    client = await connection.call('/client', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: clientId, client_name: options.name, subscription: options.subscription }),
    });
  } else if (options.rotate === true) {
    client = await connection.call(`${path}/rotate-secret`, { method: 'POST' });
  } else {
    client = await connection.call(path);
  }
  const config: Record<string, unknown> = {
    api: (options.api ?? connection.url).replace(/\/+$/, ''),
    client_id: client.client_id,
    client_name: client.client_name,
    subscription: client.subscription,
  };
  if (typeof client.secret === 'string') config.secret = client.secret;
  const text = `${JSON.stringify(config, null, 2)}\n`;
  if (options.output === '-') process.stdout.write(text);
  else {
    // It may hold a secret: readable by its owner only.
    writeFileSync(options.output, text, { mode: 0o600 });
    process.stderr.write(`wrote ${options.output} for client ${String(client.client_id)}\n`);
  }
  if (config.secret === undefined) {
    process.stderr.write('it holds no secret: the API shows a secret only when the client is made or its secret rotated (--rotate gives a new one)\n');
  }
}

export function registerBackboneCli(program: Command, api: CliApi): void {
  const backbone = program.command('backbone').description('Communications Backbone: its clients’ configuration files (speaks the HTTP API of a dispatcher with the profile on)');
  backbone
    .command('client-config')
    .description('write the soar-config.json the backbone adapters read (api, client_id, client_name, subscription, secret)')
    .argument('<client-id>')
    .option('--create', 'register the client first (with --name and --subscription): the file holds its secret')
    .option('--rotate', 'give the client a new secret (its tokens stop working): the file holds it')
    .option('--name <name>', 'client_name, with --create')
    .option('--subscription <pattern>', 'its topic pattern, with --create (e.g. soar.*.noc.#)')
    .option('--api <url>', 'the `api` the adapters call (default: the dispatcher’s address)')
    .option('-o, --output <file>', 'where to write it; - for standard output', 'soar-config.json')
    .addOption(new Option('-u, --url <url>', 'the dispatcher to talk to; also DISPATCHER_URL (default: server.host and server.port of the configuration)'))
    .addOption(new Option('-c, --config <file>', 'configuration file (YAML); also DISPATCHER_CONFIG; else ./dispatcher.yaml when it exists'))
    .action((id: string, options: ClientConfigOptions) => clientConfigCommand(api, id, options));
}
