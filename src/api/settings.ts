/** The `server` section of the configuration: the HTTP server that serves the HTTP input, the API and the profiles' routes. */

import { duration, object, section, size, Type, type Options } from '../core/options.js';

export const SERVER_SECTION = section(
  {
    host: Type.String({ minLength: 1, description: 'Address to listen on (`0.0.0.0` for every interface).', default: '127.0.0.1' }),
    port: Type.Integer({ minimum: 0, maximum: 65535, description: 'Port to listen on (0: any free port).', default: 8080 }),
    publicUrl: Type.Optional(
      Type.String({
        pattern: '^https?://',
        description: 'The URL clients reach this dispatcher at, for the URLs it hands out (where recipients upload results). Default: where it listens.',
      }),
    ),
    bodyLimit: size('Largest request body accepted; larger ones get `payload_too_large`.', '1MiB'),
    requestTimeout: duration('Longest time the server waits for a whole request.', '30s'),
    cors: Type.Array(
      object({
        path: Type.String({ pattern: '^/', description: 'Path prefix, e.g. `/v1/`.' }),
        origins: Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'Allowed origins (`https://host[:port]`), or `*` for any.' }),
        methods: Type.Array(Type.String(), { description: 'Allowed methods.', default: ['GET', 'POST', 'DELETE'] }),
        headers: Type.Array(Type.String(), { description: 'Allowed request headers (empty: those the browser asks for).', default: [] }),
        credentials: Type.Boolean({ description: 'Allow credentials (cookies, Authorization); not with `*`.', default: false }),
        maxAge: duration('How long a browser may cache the preflight answer.', '10m'),
      }),
      {
        description:
          'Cross-origin requests from browsers, per path prefix: the first entry whose `path` starts the request path ' +
          'applies; a path no entry covers answers no CORS headers. Example: `[{ path: "/v1/", origins: ["https://console.example.com"] }]`.',
        default: [],
      },
    ),
    rateLimit: section(
      {
        max: Type.Integer({ minimum: 0, description: 'Requests allowed per window; 0 turns the limit off.', default: 20_000 }),
        window: duration('The window.', '1s'),
      },
      {
        description:
          'Requests per principal (the caller; until authentication, the client address) per window; over it, `rate_limited` (429) with Retry-After. Health, readiness and metrics are not limited.',
      },
    ),
  },
  { description: 'The HTTP server: the HTTP input, the API and the routes of the profiles switched on.' },
);
/** `server`, normalized: sizes in bytes, durations in milliseconds. */
export type ServerConfig = Options<typeof SERVER_SECTION>;
