/**
 * What the AWS transports (`sqs`, `sns`) share: the connection options and the SDK client configuration made
 * from them. Credentials come from the SDK's default provider chain (environment, shared files, SSO, web
 * identity, the container or instance role) unless the options name a key.
 */

import type { SchemaNode } from '../core/options.js';

export interface AwsConnectionOptions {
  region?: string;
  endpoint?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  sessionToken?: string;
}

export const AWS_CONNECTION_SCHEMA: Record<string, SchemaNode> = {
  region: {
    type: 'string',
    minLength: 1,
    description: "The AWS region (default: taken from the queue URL or topic ARN, else the SDK's `AWS_REGION` / profile).",
  },
  endpoint: {
    type: 'string',
    minLength: 1,
    description: 'Another endpoint than the AWS one for the region (a VPC endpoint, a FIPS endpoint, a local server): `https://host:port`.',
  },
  accessKeyId: { type: 'string', minLength: 1, description: "An access key id (default: the SDK's provider chain: environment, profile, SSO, container or instance role)." },
  secretAccessKey: { type: 'string', minLength: 1, description: 'Its secret (`${VAR}` keeps it out of the file); required with `accessKeyId`.' },
  sessionToken: { type: 'string', minLength: 1, description: 'A session token, for temporary credentials.' },
};

/** The SDK client configuration; `regionHint` is a queue URL or a topic ARN to take the region from. */
export function awsClientConfig(o: AwsConnectionOptions, regionHint: string | undefined): Record<string, unknown> {
  const config: Record<string, unknown> = {};
  const region = o.region ?? regionOf(regionHint);
  if (region !== undefined) config.region = region;
  if (o.endpoint !== undefined) config.endpoint = o.endpoint;
  if (o.accessKeyId !== undefined) {
    if (o.secretAccessKey === undefined) throw new Error('accessKeyId needs secretAccessKey');
    config.credentials = { accessKeyId: o.accessKeyId, secretAccessKey: o.secretAccessKey, ...(o.sessionToken === undefined ? {} : { sessionToken: o.sessionToken }) };
  }
  return config;
}

/** `https://sqs.eu-west-1.amazonaws.com/…` or `arn:aws:sns:eu-west-1:…` → `eu-west-1`. */
function regionOf(hint: string | undefined): string | undefined {
  if (hint === undefined) return undefined;
  const arn = /^arn:[^:]+:[^:]+:([a-z0-9-]+):/.exec(hint);
  if (arn !== null) return arn[1];
  const host = /^https?:\/\/(?:sqs|queue)\.([a-z0-9-]+)\.amazonaws\.com/.exec(hint) ?? /^https?:\/\/([a-z]{2}(?:-[a-z]+)+-\d)\.queue\.amazonaws\.com/.exec(hint);
  return host?.[1];
}

/** Waits `ms`, or less when `signal` aborts. */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
  });
}
