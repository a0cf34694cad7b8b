/** TLS options shared by every transport: the schema and the files read into what Node's `tls` takes. */

import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import type { SchemaNode } from '../core/options.js';

export interface TlsOptions {
  enabled?: boolean;
  ca?: string;
  cert?: string;
  key?: string;
  rejectUnauthorized?: boolean;
  servername?: string;
}

export const TLS_SCHEMA: SchemaNode = {
  type: 'object',
  description: 'TLS for the connection. The files are read when the dispatcher starts.',
  additionalProperties: false,
  properties: {
    enabled: { type: 'boolean', description: 'Use TLS (implied by any other TLS option, and by an `amqps://`, `mqtts://` or `tls://` URL).' },
    ca: { type: 'string', minLength: 1, description: 'A PEM file of certificate authorities to trust instead of the system ones.' },
    cert: { type: 'string', minLength: 1, description: 'A PEM file: the client certificate (mutual TLS).' },
    key: { type: 'string', minLength: 1, description: "A PEM file: the client certificate's private key." },
    rejectUnauthorized: { type: 'boolean', description: 'Refuse servers whose certificate does not verify (default true).' },
    servername: { type: 'string', minLength: 1, description: 'The server name to verify (SNI), when it differs from the host.' },
  },
};

/** Node TLS options from the configured ones, or undefined when TLS is not asked for. */
export function tlsOptions(options: TlsOptions | undefined): ConnectionOptions | undefined {
  if (options === undefined) return undefined;
  const { enabled, ca, cert, key, rejectUnauthorized, servername } = options;
  if (enabled === false) return undefined;
  const out: ConnectionOptions = {};
  if (ca !== undefined) out.ca = readFileSync(ca);
  if (cert !== undefined) out.cert = readFileSync(cert);
  if (key !== undefined) out.key = readFileSync(key);
  if (rejectUnauthorized !== undefined) out.rejectUnauthorized = rejectUnauthorized;
  if (servername !== undefined) out.servername = servername;
  return out;
}
