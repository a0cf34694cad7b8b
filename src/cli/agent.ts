/**
 * `dispatcher agent --url URL --id UUID`: our own recipient agent (src/agent/): connects to the dispatcher
 * as recipient UUID, runs the `rhc-worker-playbook` directives it is sent with ansible-runner, and uploads
 * their job events. The dispatcher and the credential are found as by every command that speaks the HTTP
 * API (./connection.ts): `--url` (else DISPATCHER_URL, else the configuration), DISPATCHER_TOKEN,
 * DISPATCHER_PSK, DISPATCHER_KEY_FILE or the configuration's key file. Logs are JSON lines on standard
 * output. SIGINT or SIGTERM: no more directives, running playbooks get `--grace` to finish, exit 0.
 */

import { pino } from 'pino';
import { AgentError, startAgent } from '../agent/index.js';
import { parseDuration } from '../core/units.js';
import { connect, type ConnectionOptions } from './connection.js';
import { CliError, integerOption } from './output.js';

export interface AgentCommandOptions extends ConnectionOptions {
  id: string;
  maxRuns: string;
  maxBackoff: string;
  grace: string;
  ansibleRunner: string;
  trust?: string[];
  logLevel: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** A duration option: a number of seconds, or a duration with its unit (`500ms`, `30s`, `5m`). */
export function secondsOption(name: string, value: string): number {
  const ms = /^\d+(\.\d+)?$/.test(value.trim()) ? Math.round(Number(value) * 1000) : parseDuration(value);
  if (ms === null) throw new CliError(`--${name} takes seconds or a duration (500ms, 30s, 5m), got "${value}"`, 2);
  return ms;
}

export async function agentCommand(options: AgentCommandOptions): Promise<void> {
  if (!UUID.test(options.id)) throw new CliError(`--id must be a UUID (the agent's recipient id), got "${options.id}"`, 2);
  if (!LEVELS.includes(options.logLevel)) throw new CliError(`--log-level must be one of ${LEVELS.join(', ')}`, 2);
  const maxRuns = integerOption('max-runs', options.maxRuns, 1);
  const maxBackoffMs = secondsOption('max-backoff', options.maxBackoff);
  if (maxBackoffMs < 1000) throw new CliError('--max-backoff must be at least 1s', 2);
  const graceMs = secondsOption('grace', options.grace);
  for (const origin of options.trust ?? []) {
    if (!/^https?:\/\/[^/]+\/?$/i.test(origin)) throw new CliError(`--trust takes origins (https://host:port), got "${origin}"`, 2);
  }

  const connection = await connect(options);
  const log = pino({ level: options.logLevel, base: { pid: process.pid, agent: options.id }, redact: { paths: ['authorization', '*.authorization'], censor: '[redacted]' } });
  let agent;
  try {
    agent = startAgent({
      url: connection.url,
      id: options.id.toLowerCase(),
      authorization: connection.authorization,
      credentialFrom: connection.credentialFrom,
      trustedOrigins: options.trust,
      maxRuns,
      maxBackoffMs,
      graceMs,
      ansibleRunner: options.ansibleRunner,
      log,
    });
  } catch (err) {
    throw err instanceof AgentError ? new CliError(err.message, 2) : err;
  }
  log.info({ url: connection.url, urlFrom: connection.urlFrom, credential: connection.credentialFrom, maxRuns, graceMs }, 'agent starting');

  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      log.warn({ signal }, 'stopping already; waiting for the running playbooks');
      return;
    }
    signalled = true;
    log.info({ signal }, 'signal received; stopping');
    void agent.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await agent.done;
  } catch (err) {
    if (err instanceof AgentError) throw new CliError(err.message, 1);
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    log.flush();
  }
}
