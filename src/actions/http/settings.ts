/** `actions.http`: the settings every `http` action shares (and the guarded HTTP client the dispatcher lends to profiles). */

import { duration, section, size, Type, type Options } from '../../core/options.js';

export const HTTP_ACTION_SECTION = section(
  {
    allow: Type.Array(Type.String({ minLength: 1, description: 'A host name, an IP address or a CIDR range.' }), {
      description:
        'Private, loopback and link-local targets that webhooks (and the requests of profiles) may reach anyway (blocked otherwise, ' +
        '`address_blocked`). In the environment: comma-separated.',
      default: [],
    }),
    signingSecret: Type.Optional(
      Type.String({ minLength: 1, description: 'Secret (`whsec_…`) to sign requests with, Standard Webhooks style (`webhook-signature`). Unset: unsigned.' }),
    ),
    timeout: duration('Longest time one request may take, unless the route allows less.', '10s'),
    maxResponseBytes: size("How much of the receiver's answer is kept on the run.", '4KiB'),
    userAgent: Type.String({ description: 'The `User-Agent` header.', default: 'dispatcher' }),
  },
  { description: 'The `http` action (webhooks).' },
);
/** `actions.http`, normalized: `timeout` in milliseconds, `maxResponseBytes` in bytes. */
export type HttpActionSettings = Options<typeof HTTP_ACTION_SECTION>;
