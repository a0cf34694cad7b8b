/** `profiles.ciso-assistant`: the profile's section of the configuration, and the original's environment variables. */

import { duration, map, object, oneOf, section, size, Type, type Options } from '../../core/options.js';
import type { ProfileVariable } from '../../core/profile.js';

export const CISO_ASSISTANT_SECTION = section(
  {
    api: section(
      {
        url: Type.String({ minLength: 1, description: 'The CISO Assistant API root (`API_URL`), e.g. `https://ciso.example.com/api`.', default: 'https://localhost:8443' }),
        token: Type.Optional(Type.String({ minLength: 1, description: 'A Personal Access Token (`USER_TOKEN`): `Authorization: Token <PAT>`.' })),
        verifyCertificate: Type.Boolean({ description: 'Verify the API’s TLS certificate (`VERIFY_CERTIFICATE`).', default: true }),
        timeout: duration('Longest time one API request may take.', '30s'),
        email: Type.Optional(Type.String({ minLength: 1, description: 'The account that logs in when there is no token, or when it expired and `autoRenew` is on (`USER_EMAIL`).' })),
        password: Type.Optional(Type.String({ description: 'Its password (`USER_PASSWORD`).' })),
        autoRenew: Type.Boolean({ description: 'Log in again with `email`/`password` when the API answers 401, and retry (`AUTO_RENEW_SESSION`).', default: false }),
      },
      { description: 'The CISO Assistant REST API the observations update.' },
    ),
    kafka: section(
      {
        bootstrapServers: Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'Bootstrap brokers (`BOOTSTRAP_SERVERS`, comma-separated).', default: ['localhost:9092'] }),
        useAuth: Type.Boolean({ description: 'Authenticate to Kafka with SASL (`KAFKA_USE_AUTH`).', default: false }),
        saslMechanism: oneOf(['PLAIN', 'SCRAM-SHA-256', 'SCRAM-SHA-512'] as const, { description: 'The SASL mechanism (`KAFKA_SASL_MECHANISM`).', default: 'PLAIN' }),
        securityProtocol: oneOf(['PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL'] as const, {
          description: 'How to reach the brokers (`KAFKA_SECURITY_PROTOCOL`): TLS for `SSL` and `SASL_SSL`.',
          default: 'SASL_PLAINTEXT',
        }),
        username: Type.String({ description: 'The SASL user (`KAFKA_USERNAME`).', default: '' }),
        password: Type.String({ description: 'The SASL password (`KAFKA_PASSWORD`).', default: '' }),
        topic: Type.String({ minLength: 1, description: 'The topic observations are consumed from (the original’s fixed `observation`).', default: 'observation' }),
        groupId: Type.String({ minLength: 1, description: 'The consumer group (the original’s `my-group`).', default: 'my-group' }),
        maxWait: duration('How long a broker may hold a fetch while it has nothing new (the Kafka input’s `maxWait`).', '5s'),
      },
      { description: 'The Kafka cluster the observations come from and the errors go to.' },
    ),
    errorsTopic: Type.String({ minLength: 1, description: 'Where `{"message", "error"}` goes for every observation that could not be processed (`ERRORS_TOPIC`).', default: 'errors' }),
    s3: section(
      {
        url: Type.String({ minLength: 1, description: 'The S3-compatible store `upload_attachment` reads `file_s3_bucket` files from (`S3_URL`).', default: 'http://localhost:9000' }),
        accessKey: Type.String({ description: 'Its access key (`S3_ACCESS_KEY`).', default: '' }),
        secretKey: Type.String({ description: 'Its secret key (`S3_SECRET_KEY`).', default: '' }),
        region: Type.String({ minLength: 1, description: 'The region the client signs for.', default: 'us-east-1' }),
      },
      { description: 'Files of `upload_attachment` kept in S3.' },
    ),
    retry: section(
      {
        attempts: Type.Integer({ minimum: 1, description: 'Attempts in all for an observation the API could not take for now (a connection error, a timeout, 408, 425, 429, 5xx), the first included.', default: 5 }),
        backoff: duration('Wait before the first retry; doubles with each further one (full jitter), and a `Retry-After` is honoured.', '1s'),
        maxBackoff: duration('The longest wait between two attempts.', '5m'),
      },
      { description: 'How an observation is retried before it goes to the errors topic (the original retried a connection error at once, for ever).' },
    ),
    inOrder: Type.Boolean({
      description: 'Observations of one message type with the same selector are applied one at a time, in the order of the topic (a route `orderingKey`), as the original applied every one in turn. `false`: all at once.',
      default: true,
    }),
    maxFileBytes: size('Largest attachment taken (base64 decoded, or read from S3).', '25MiB'),
    messageTypes: map(
      object(
        {
          resource: Type.String({ minLength: 1, pattern: '^[a-z0-9][a-z0-9-]*$', description: 'The API resource (`risk-scenarios`): `GET {api}/{resource}/` finds the targets.' }),
          method: oneOf(['PATCH', 'PUT', 'POST', 'DELETE'] as const, { description: 'What is done to each target (`POST` without a selector creates one).', default: 'PATCH' }),
        },
        { description: 'A message type: its `selector` finds targets in `resource`, its `values` are sent with `method`.' },
      ),
      {
        description: 'Message types added by configuration, without code: `message_type` → resource and method. Their messages carry `selector` and `values` as the built-in update types do.',
        default: {},
        propertyNames: { type: 'string', pattern: '^[a-z][a-z0-9_]*$' },
      },
    ),
    debug: Type.Boolean({ description: 'Log each observation and each API call of its run (`DEBUG`): the runs\' loggers at `debug`, whatever `log.level` says.', default: false }),
  },
  { description: 'Its API, its Kafka cluster, its errors topic and S3 store, each readable from the original’s environment variables.' },
);

export type CisoAssistantConfig = Options<typeof CISO_ASSISTANT_SECTION>;

/** The original's environment variables (notes §2), read while the profile is on. Booleans read as a user means them (`true`, `yes`, `1`, any case). */
export const ENVIRONMENT: Readonly<Record<string, ProfileVariable>> = {
  API_URL: { path: ['api', 'url'], map: (url) => String(url).replace(/\/+$/, '') },
  USER_TOKEN: { path: ['api', 'token'] },
  VERIFY_CERTIFICATE: { path: ['api', 'verifyCertificate'] },
  USER_EMAIL: { path: ['api', 'email'] },
  USER_PASSWORD: { path: ['api', 'password'] },
  AUTO_RENEW_SESSION: { path: ['api', 'autoRenew'] },
  BOOTSTRAP_SERVERS: { path: ['kafka', 'bootstrapServers'] },
  KAFKA_USE_AUTH: { path: ['kafka', 'useAuth'] },
  KAFKA_SASL_MECHANISM: { path: ['kafka', 'saslMechanism'], map: (m) => String(m).toUpperCase() },
  KAFKA_SECURITY_PROTOCOL: { path: ['kafka', 'securityProtocol'], map: (p) => String(p).toUpperCase() },
  KAFKA_USERNAME: { path: ['kafka', 'username'] },
  KAFKA_PASSWORD: { path: ['kafka', 'password'] },
  ERRORS_TOPIC: { path: ['errorsTopic'] },
  S3_URL: { path: ['s3', 'url'] },
  S3_ACCESS_KEY: { path: ['s3', 'accessKey'] },
  S3_SECRET_KEY: { path: ['s3', 'secretKey'] },
  DEBUG: { path: ['debug'] },
};

/** Whether the API can be logged in to with an email and a password (a password that is not empty). */
export function canLogIn(api: CisoAssistantConfig['api']): boolean {
  return api.email !== undefined && api.password !== undefined && api.password !== '';
}
