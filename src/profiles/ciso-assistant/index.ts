/**
 * The CISO Assistant profile (../../../shared/seeds/notes/ciso-assistant-dispatcher.md): observations
 * consumed from Kafka (`observation`), each turned into CISO Assistant REST calls — targets found by a
 * selector, then updated, or evidence uploaded and linked — with every failure on the errors topic as the
 * original's `{"message", "error"}`. Switched on by `profiles: { ciso-assistant: {…} }`, or by
 * `dispatcher ciso consume`, which reads the original's `.dispatcher_config.yaml` and environment.
 *
 * It only translates: its input and errors output are the core's Kafka transports, made from its section
 * (the original's settings name the cluster); its routes run the core's `rest` action (`ciso-update` is
 * `rest` with the API's address and credentials filled in) and its own `ciso-upload`; its dead letters go
 * to the errors topic through a presenter.
 */

import type { Command } from 'commander';
import type { FastifyInstance } from 'fastify';
import { createAddressGuard } from '../../actions/http/guard.js';
import { DispatcherError } from '../../core/errors.js';
import type { Profile } from '../../core/profile.js';
import { cisoActionTypes, UPDATE_ACTION, UPLOAD_ACTION } from './actions.js';
import { registerCisoCli } from './cli.js';
import { canLogIn, CISO_ASSISTANT_SECTION, ENVIRONMENT, type CisoAssistantConfig } from './config.js';
import { ERROR_PRESENTER, EVENT_PREFIX, OBSERVATION_DECODER, PROFILE } from './observation.js';

/** The built-in message types that update: their resource. */
const UPDATES: Readonly<Record<string, string>> = {
  update_applied_control: 'applied-controls',
  update_requirement_assessment: 'requirement-assessments',
};

/** The Kafka connection the original's settings describe (notes §2: `build_kafka_config`). */
function kafkaConnection(k: CisoAssistantConfig['kafka']): Record<string, unknown> {
  const out: Record<string, unknown> = { brokers: k.bootstrapServers, clientId: 'ciso-assistant-dispatcher' };
  if (k.securityProtocol === 'SSL' || k.securityProtocol === 'SASL_SSL') out.tls = { enabled: true };
  if (k.useAuth) {
    // The original refused to start so (notes §2); here it is a configuration problem, named by the variables.
    if (k.username === '' || k.password === '') {
      throw new DispatcherError('config_invalid', 'KAFKA_USERNAME and KAFKA_PASSWORD (kafka.username, kafka.password) must be provided when authentication is enabled (KAFKA_USE_AUTH, kafka.useAuth)');
    }
    // As librdkafka did for the original: SASL only where the protocol has it (PLAINTEXT or SSL ignore it).
    if (k.securityProtocol.startsWith('SASL_')) out.sasl = { mechanism: k.saslMechanism.toLowerCase(), username: k.username, password: k.password };
  }
  return out;
}

/**
 * Whether the HTTP client's address policy refuses `host` as written: an IP literal outside `allow` (its
 * CIDRs included) that is not public, or `localhost`. Other names are judged when they resolve.
 */
function isBlocked(host: string, allow: readonly string[]): boolean {
  let guard: ReturnType<typeof createAddressGuard>;
  try {
    guard = createAddressGuard(allow);
  } catch {
    return false; // a bad allow list is the http action's problem to report
  }
  return guard.blockedLiteral(host) !== null || (host.toLowerCase() === 'localhost' && !guard.isAllowedHost(host));
}

export const CISO_ASSISTANT: Profile<FastifyInstance, Command> = {
  name: PROFILE,
  description: 'CISO Assistant Dispatcher: observations from the Kafka topic `observation` become CISO Assistant REST updates and evidence uploads, found by selectors.',
  config: CISO_ASSISTANT_SECTION,
  environment: ENVIRONMENT,
  inputs: ({ name, config }) => {
    const c = config as CisoAssistantConfig;
    return {
      [`${name}.observation`]: {
        kafka: { ...kafkaConnection(c.kafka), topics: [c.kafka.topic], groupId: c.kafka.groupId, fromBeginning: true, maxWait: c.kafka.maxWait },
        decoder: {
          format: `${name}.observation`,
          options: {
            types: Object.keys(c.messageTypes),
            creates: Object.entries(c.messageTypes).filter(([, t]) => t.method === 'POST').map(([type]) => type),
            maxFileBytes: c.maxFileBytes,
          },
        },
        service: name,
        // An attachment in base64 is a third larger than the file.
        maxBytes: Math.ceil((c.maxFileBytes * 4) / 3) + 64 * 1024,
      },
    };
  },
  outputs: ({ name, config }) => {
    const c = config as CisoAssistantConfig;
    return {
      [`${name}.errors`]: {
        kafka: { ...kafkaConnection(c.kafka), idempotent: false },
        deadLetters: { topic: c.errorsTopic, presenter: `${name}.error`, filter: { profile: [name] }, name: `${name}_errors` },
      },
    };
  },
  routes: ({ name, config }) => {
    const c = config as CisoAssistantConfig;
    const retry = { attempts: c.retry.attempts, backoff: c.retry.backoff, maxBackoff: c.retry.maxBackoff };
    // The same selector (as written) of the same type: one run at a time, in the topic's order.
    const ordered = c.inOrder ? { orderingKey: '{{ data.selector | json }}' } : {};
    const routes: Array<Record<string, unknown>> = [];
    for (const [type, resource] of Object.entries(UPDATES)) {
      routes.push({
        name: `${name}.${type}`,
        description: `\`${type}\`: the targets its selector finds in \`${resource}\` are PATCHed with its values.`,
        match: { type: `${EVENT_PREFIX}${type}` },
        retry,
        ...ordered,
        actions: [{ [UPDATE_ACTION]: { resource, method: 'PATCH' } }],
      });
    }
    routes.push({
      name: `${name}.upload_attachment`,
      description: '`upload_attachment`: the file (base64 or S3) uploaded to the evidence its selector finds (or a new one), then linked to the applied controls.',
      match: { type: `${EVENT_PREFIX}upload_attachment` },
      retry,
      ...ordered,
      timeout: '5m',
      actions: [{ [UPLOAD_ACTION]: {} }],
    });
    for (const [type, t] of Object.entries(c.messageTypes)) {
      routes.push({
        name: `${name}.${type}`,
        description: `\`${type}\` (configured): its selector's targets in \`${t.resource}\`, ${t.method} with its values.`,
        match: { type: `${EVENT_PREFIX}${type}` },
        retry,
        ...ordered,
        actions: [{ [UPDATE_ACTION]: { resource: t.resource, method: t.method } }],
      });
    }
    return routes;
  },
  actionTypes: (setup) => cisoActionTypes(setup.config as CisoAssistantConfig),
  decoders: { observation: OBSERVATION_DECODER },
  presenters: { error: ERROR_PRESENTER },
  advise: (setup, whole) => {
    const c = setup.config as CisoAssistantConfig;
    const advice: string[] = [];
    if (c.api.token === undefined && !canLogIn(c.api)) {
      advice.push('api.token (USER_TOKEN) is not set: every API call will be refused until a Personal Access Token is given (or api.email and api.password to log in)');
    }
    const allow = ((whole.actions as { http?: { allow?: string[] } } | undefined)?.http?.allow ?? []) as string[];
    let host = '';
    try {
      host = new URL(c.api.url).hostname;
    } catch {
      advice.push(`api.url (API_URL) is not a URL: ${c.api.url}`);
    }
    if (host !== '' && isBlocked(host, allow)) {
      advice.push(`api.url points at a private address (${host}): add it to actions.http.allow, or every API call is refused (address_blocked)`);
    }
    return advice;
  },
  cli: registerCisoCli,
};
