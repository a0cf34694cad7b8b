/**
 * `dispatcher`: a thin shell over the library. Commands that need a running dispatcher (`send`, `runs`,
 * `dlq`) speak its HTTP API (`--url`, or `DISPATCHER_URL`); the others load the configuration and work
 * locally. Exit codes: 0 done, 1 failed, 2 usage.
 */

import { Command, CommanderError, Option } from 'commander';
import type { CliApi } from '../core/profile.js';
import { PRESET, type Preset } from '../preset.js';
import { CliError, fail } from './output.js';

/**
 * A command's action, imported when the command runs: `dispatcher --help` or `dispatcher status` does not
 * load the store, the HTTP app or the transports.
 */
function lazy<M, K extends keyof M>(load: () => Promise<M>, name: K): (...args: unknown[]) => Promise<void> {
  return async (...args) => {
    await ((await load())[name] as (...a: unknown[]) => Promise<void>)(...args);
  };
}

/** The program: the core's commands, then those of the preset's profiles (switched on or not: a command needs no server). */
export function buildProgram(preset: Preset = PRESET): Command {
  const program = new Command('dispatcher')
    .description('Event dispatcher: events in from HTTP or any bus, checked, routed by rules to actions, every run tracked.')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();

  const configOption = () => new Option('-c, --config <file>', 'configuration file (YAML); also DISPATCHER_CONFIG; else ./dispatcher.yaml when it exists');
  const urlOption = () => new Option('-u, --url <url>', 'the dispatcher to talk to; also DISPATCHER_URL (default: server.host and server.port of the configuration)');
  /** The options of every command that speaks the HTTP API: where the dispatcher is, and the configuration that says it. */
  const api = (command: Command) => command.addOption(urlOption()).addOption(configOption());
  const since = (command: Command, what: string) =>
    command
      .option('--since <time>', `${what} at or after: RFC 3339, epoch ms, or a duration back from now (30m, 1h, 7d)`)
      .option('--until <time>', `${what} before: RFC 3339, epoch ms, or a duration back from now`);

  program
    .command('serve')
    .description('serve the HTTP API and run routed actions')
    .addOption(configOption())
    .option('-p, --port <port>', 'HTTP port')
    .option('-H, --host <host>', 'HTTP host to bind')
    .option('-s, --store <url>', 'store URL: sqlite:FILE or postgres://…')
    .option('-l, --log-level <level>', 'fatal, error, warn, info, debug, trace or silent')
    .action(lazy(() => import('./serve.js'), 'serveCommand'));

  program
    .command('migrate')
    .description('create or upgrade the store schema, then exit')
    .addOption(configOption())
    .option('-s, --store <url>', 'store URL: sqlite:FILE or postgres://…')
    .action(lazy(() => import('./serve.js'), 'migrateCommand'));

  program
    .command('send')
    .description('send events from a file or standard input (JSON: one event or an array; or JSON Lines)')
    .argument('[file]', 'file to read; - or nothing for standard input')
    .addOption(urlOption()).addOption(configOption())
    .option('-b, --batch <n>', 'events per request', '500')
    .option('--no-progress', 'no progress bar')
    .action(lazy(() => import('./send.js'), 'sendCommand'));

  program
    .command('status')
    .description('the store, the backlog, and the health of each input and output (exit 1 unless all is well)')
    .addOption(urlOption()).addOption(configOption())
    .option('--json', 'print JSON')
    .action(lazy(() => import('./client.js'), 'statusCommand'));

  const runs = program.command('runs').description('list and inspect runs');
  runs
    .command('list')
    .description('list runs')
    .addOption(urlOption()).addOption(configOption())
    .option('--status <statuses>', 'comma-separated statuses')
    .option('--route <routes>', 'comma-separated routes')
    .option('--type <types>', 'comma-separated event types')
    .option('--label <key=value...>', 'label filters')
    .option('--event <id>', "the runs of one event (the dispatcher's event id)")
    .option('--correlation-id <id>', 'runs waiting under this correlation id')
    .option('--since <time>', 'created at or after: RFC 3339, epoch ms, or a duration back from now (30m, 1h, 7d)')
    .option('--until <time>', 'created before: RFC 3339, epoch ms, or a duration back from now')
    .option('--limit <n>', 'how many', '20')
    .option('--offset <n>', 'skip this many', '0')
    .option('--sort <field>', 'sort, e.g. -created_at')
    .option('--json', 'print JSON')
    .action(lazy(() => import('./client.js'), 'runsListCommand'));
  runs
    .command('republish')
    .description('emit a read run event for every matching run, for the outputs to publish (consumers rebuild their state)')
    .addOption(urlOption()).addOption(configOption())
    .option('--status <statuses>', 'comma-separated statuses')
    .option('--route <routes>', 'comma-separated routes')
    .option('--type <types>', 'comma-separated event types')
    .option('--service <services>', 'comma-separated services')
    .option('--org <orgs>', 'comma-separated tenants (org_id)')
    .option('--since <time>', 'created at or after: RFC 3339, epoch ms, or a duration back from now (30m, 1h, 7d)')
    .option('--until <time>', 'created before: RFC 3339, epoch ms, or a duration back from now')
    .option('--json', 'print JSON')
    .action(lazy(() => import('./client.js'), 'runsRepublishCommand'));
  api(runs.command('get').description('one run with its attempts').argument('<id>')).option('--json', 'print JSON').action(lazy(() => import('./client.js'), 'runsGetCommand'));
  api(runs.command('cancel').description('cancel queued or running runs (exit 1 if any could not be)').argument('<ids...>'))
    .option('--json', 'print JSON')
    .action(lazy(() => import('./client.js'), 'runsCancelCommand'));
  api(runs.command('retry').description('queue failed, timed-out or canceled runs again (exit 1 if any could not be)').argument('<ids...>'))
    .option('--json', 'print JSON')
    .action(lazy(() => import('./client.js'), 'runsRetryCommand'));
  api(runs.command('tail').description('follow the run events as they happen (Ctrl-C to stop); resumes by itself when the connection drops'))
    .option('--run <ids>', 'comma-separated run ids')
    .option('--route <routes>', 'comma-separated routes')
    .option('--status <statuses>', 'comma-separated statuses')
    .option('--kind <kind>', 'run or host (both by default)')
    .option('--after <seq>', 'start after this run-event sequence number (what was missed first)')
    .option('--max <n>', 'stop after this many events')
    .option('--json', 'print one JSON object per line')
    .action(lazy(() => import('./client.js'), 'runsTailCommand'));

  const events = program.command('events').description('stored events');
  since(
    api(events.command('list').description('list stored events, newest first'))
      .option('--type <types>', 'comma-separated event types')
      .option('--source <source>', 'the CloudEvents source')
      .option('--id <id>', 'the CloudEvents id')
      .option('--routed <yes|no>', 'only events that matched a route, or only those that matched none'),
    'received',
  )
    .option('--limit <n>', 'how many', '20')
    .option('--offset <n>', 'skip this many', '0')
    .option('--sort <field>', 'received_at or -received_at')
    .option('--json', 'print JSON')
    .action(lazy(() => import('./client.js'), 'eventsListCommand'));
  api(events.command('get').description('one stored event, with its runs').argument('<id>', "the dispatcher's event id"))
    .option('--json', 'print JSON')
    .action(lazy(() => import('./client.js'), 'eventsGetCommand'));

  const dlq = program.command('dlq').description('dead letters');
  const dlqFilters = (command: Command) =>
    since(
      command
        .option('--origin <origin>', 'intake or run')
        .option('--reason <codes>', 'comma-separated reason codes')
        .option('--source <source>', 'the input or route it came from')
        .option('--replayed <yes|no>', 'only replayed, or only not replayed, dead letters'),
      'last seen',
    );
  dlqFilters(api(dlq.command('list').description('list dead letters, newest first')))
    .option('--limit <n>', 'how many', '20')
    .option('--offset <n>', 'skip this many', '0')
    .option('--json', 'print JSON')
    .action(lazy(() => import('./client.js'), 'dlqListCommand'));
  api(dlq.command('get').description('one dead letter, with the bytes that were refused').argument('<id>'))
    .option('--json', 'print JSON')
    .action(lazy(() => import('./client.js'), 'dlqGetCommand'));
  api(dlq.command('delete').description('delete dead letters').argument('<ids...>')).action(lazy(() => import('./client.js'), 'dlqDeleteCommand'));
  dlqFilters(
    api(
      dlq
        .command('replay')
        .description('replay dead letters: the ones named, or every one the filters match (not yet replayed, unless --replayed yes)')
        .argument('[ids...]'),
    ),
  )
    .option('--no-progress', 'no progress bar')
    .action(lazy(() => import('./client.js'), 'dlqReplayCommand'));

  program
    .command('routes')
    .description('routes')
    .command('test')
    .description('show which routes and actions an event matches, and why')
    .argument('<event>', 'event file (JSON), or - for standard input')
    .addOption(configOption())
    .option('--json', 'print JSON')
    .action(lazy(() => import('./routes-test.js'), 'routesTestCommand'));

  const storeOption = () => new Option('-s, --store <url>', 'store URL: sqlite:FILE or postgres://…');
  const clients = program.command('clients').description('clients: who exchanges an id and a secret for a bearer token (works on the store)');
  clients
    .command('create')
    .description('create a client; its secret is printed this once')
    .requiredOption('-n, --name <name>', 'its name')
    .option('--service <service>', 'the service its records are created under (default: the name)')
    .option('--org <org>', 'its tenant (default: auth.defaults.orgId)')
    .option('-P, --permission <permission...>', 'app:resource:verb, with @svc1,svc2 to limit it to those services, e.g. dispatcher:runs:read@billing')
    .option('--subscription <topic>', 'a topic pattern it subscribes to')
    .addOption(configOption())
    .addOption(storeOption())
    .option('--json', 'print JSON')
    .action(lazy(() => import('./access.js'), 'clientsCreateCommand'));
  clients.command('list').description('list clients (never their secrets)').option('--org <org>', 'only this tenant').addOption(configOption()).addOption(storeOption()).option('--json', 'print JSON').action(lazy(() => import('./access.js'), 'clientsListCommand'));
  clients
    .command('rotate-secret')
    .description('give a client a new secret (printed this once); its tokens stop working')
    .argument('<id>')
    .addOption(configOption())
    .addOption(storeOption())
    .option('--json', 'print JSON')
    .action(lazy(() => import('./access.js'), 'clientsRotateCommand'));
  clients.command('delete').description('delete a client; its tokens stop working').argument('<id>').addOption(configOption()).addOption(storeOption()).action(lazy(() => import('./access.js'), 'clientsDeleteCommand'));

  program
    .command('token')
    .description('exchange client credentials for a bearer token and print it (the secret from DISPATCHER_CLIENT_SECRET or standard input)')
    .option('--client-id <id>', 'the client id; also DISPATCHER_CLIENT_ID')
    .addOption(urlOption()).addOption(configOption())
    .option('--json', 'print the whole answer as JSON')
    .action(lazy(() => import('./access.js'), 'tokenCommand'));

  program
    .command('agent')
    .description('be a recipient: connect to the dispatcher, run the rhc-worker-playbook directives it sends with ansible-runner, upload their events (docs/agent.md)')
    .addOption(urlOption()).addOption(configOption())
    .requiredOption('--id <uuid>', "the agent's recipient id (a UUID)")
    .option('--max-runs <n>', 'playbooks run at once; directives beyond are refused', '4')
    .option('--max-backoff <duration>', 'the longest wait between reconnections (seconds, or 30s, 5m)', '60')
    .option('--grace <duration>', 'on SIGINT/SIGTERM, how long running playbooks may finish (seconds, or 30s, 5m)', '30')
    .option('--ansible-runner <path>', 'the ansible-runner command', 'ansible-runner')
    .option('--trust <origin...>', "other origins (https://host:port) sent the agent's credential with downloads and uploads")
    .option('-l, --log-level <level>', 'fatal, error, warn, info, debug, trace or silent', 'info')
    .action(lazy(() => import('./agent.js'), 'agentCommand'));

  const audit = program.command('audit').description('the audit log');
  audit
    .command('list')
    .description('list audit entries, newest first')
    .addOption(urlOption()).addOption(configOption())
    .option('--actor <actor>', 'psk:SERVICE, client:ID, route:NAME, cli:USER …')
    .option('--action <actions>', 'comma-separated: events.create, runs.cancel, action.http …')
    .option('--record <id>', 'entries about this run, event, dead letter or client')
    .option('--outcome <outcome>', 'ok, or an error code')
    .option('--since <time>', 'at or after: RFC 3339, epoch ms, or a duration back from now (30m, 1h, 7d)')
    .option('--until <time>', 'before: RFC 3339, epoch ms, or a duration back from now')
    .option('--limit <n>', 'how many', '20')
    .option('--offset <n>', 'skip this many', '0')
    .option('--json', 'print JSON')
    .action(lazy(() => import('./access.js'), 'auditListCommand'));
  audit
    .command('verify')
    .description('check the hash chain: exit 1 naming every modified, removed or reordered entry')
    .addOption(configOption())
    .addOption(storeOption())
    .option('--json', 'print JSON')
    .action(lazy(() => import('./access.js'), 'auditVerifyCommand'));

  program
    .command('init-config')
    .description('write a commented starter configuration')
    .argument('[file]', 'where to write it', 'dispatcher.yaml')
    .option('-i, --interactive', 'ask for the main settings')
    .option('-y, --yes', 'take the defaults without asking')
    .option('-f, --force', 'overwrite an existing file')
    .action(lazy(() => import('./config.js'), 'initConfigCommand'));

  program
    .command('validate-config')
    .description('check a configuration file (and the environment) without starting')
    .argument('[file]', 'the file; else --config, DISPATCHER_CONFIG or ./dispatcher.yaml')
    .addOption(configOption())
    .action(lazy(() => import('./config.js'), 'validateConfigCommand'));

  const cliApi: CliApi = {
    async connect(options) {
      const { call, connect } = await import('./connection.js');
      const connection = await connect(options);
      return { url: connection.url, call: (path, init) => call(connection, path, init) };
    },
    fail: (message, exitCode = 1) => new CliError(message, exitCode),
    async serve(options) {
      const { serveCommand } = await import('./serve.js');
      await serveCommand(options);
    },
    async section(profile, base, over) {
      const { loadConfig } = await import('../config/load.js');
      // Only the profile's section is wanted: no configuration file is read.
      const config = await loadConfig({
        env: process.env,
        preset,
        base: base as never,
        file: undefined,
        ...(over === undefined ? {} : { overrides: { profiles: { [profile]: over.value } } as never, overridesSource: over.source }),
      });
      return { ...config.profiles[profile] };
    },
  };
  for (const profile of preset) profile.cli?.(program, cliApi);
  return program;
}

export async function main(argv: string[], preset: Preset = PRESET): Promise<number> {
  const program = buildProgram(preset);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help asked for (`--help`, `help`) or the version: done. Help shown because a command group was
      // called without its subcommand (`dispatcher runs`) carries exit code 1 from commander: a usage error.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || (err.code === 'commander.help' && err.exitCode === 0)) return 0;
      return 2;
    }
    if (err instanceof CliError) return fail(err.message, err.exitCode);
    return fail((err as Error).message ?? String(err), 1);
  }
}

