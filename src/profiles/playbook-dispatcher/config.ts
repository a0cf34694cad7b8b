/** `profiles.playbook-dispatcher`: the profile's section of the configuration. */

import { duration, map, object, section, size, Type, type Options } from '../../core/options.js';
import { permissions } from '../../core/settings.js';

export const PLAYBOOK_DISPATCHER_SECTION = section(
  {
    blocklist: Type.Array(Type.String({ minLength: 1 }), {
      description: 'Organization ids whose dispatches are refused (`Block listed org`) and whose uploads are dropped (the original’s `BLOCKLIST_ORG_IDS`).',
      default: [],
    }),
    tenants: map(Type.String({ minLength: 1 }), {
      description: 'Account number → organization id, for the v1 dispatch (`POST /internal/dispatch`), which names accounts. An unknown account is `Tenant not found`.',
      default: {},
    }),
    webConsoleUrl: Type.String({ minLength: 1, description: 'The `web_console_url` of a run whose dispatch gives none.', default: 'https://console.redhat.com' }),
    version: Type.String({ minLength: 1, description: 'What `GET /internal/version` answers (the original answers its build commit).', default: 'dispatcher' }),
    deadline: duration('How long a run is kept waiting at most, whatever its `timeout` (above the largest, 7 days).', '8d'),
    rbac: section(
      {
        url: Type.Optional(
          Type.String({ minLength: 1, description: 'An RBAC service: the public API asks `GET {url}/api/rbac/v1/access/?application=playbook-dispatcher` with the caller’s identity.' }),
        ),
        timeout: duration('Longest time a question to the RBAC service may take.', '10s'),
        cache: duration('How long an identity’s permissions from the RBAC service are reused.', '30s'),
        permissions: permissions('Without `url`: what every identity may do on the public API (`playbook-dispatcher:run:read`, with `service` filters).', [
          'playbook-dispatcher:run:read',
        ]),
      },
      { description: 'Who may read runs on the public API: the permission `playbook-dispatcher:run:read`, its wildcards and its `service` filters.' },
    ),
    upload: section(
      {
        maxBytes: size('Largest result upload taken, as received (the original’s `artifact.max.size`).', '1MiB'),
        maxDecompressedBytes: size('Largest upload once decompressed.', '64MiB'),
        maxMessageBytes: size('From this decompressed size on, long outputs are cut (`artifact.max.kafka.message.size`).', '1MiB'),
        maxStdoutField: Type.Integer({ minimum: 16, description: 'Longest output of one event kept when cutting (`artifact.max.stdout.field.size`).', default: 1024 }),
        truncateAfterLines: Type.Integer({ minimum: 1, description: 'Runner events after this one lose their output when cutting.', default: 500 }),
      },
      { description: 'Result uploads (`POST /api/ingress/v1/upload`, and the announcements of an ingress service).' },
    ),
    ingress: Type.Optional(
      object(
        {
          input: Type.String({ minLength: 1, description: 'The configured input (Kafka) that receives the ingress service’s announcements (`platform.upload.announce`).' }),
          output: Type.String({ minLength: 1, description: 'The configured output the validation answers go to.' }),
          validationTopic: Type.String({ minLength: 1, description: 'Where validation answers go.', default: 'platform.upload.validation' }),
          downloadTimeout: duration('Longest time one download of an announced upload may take.', '10s'),
        },
        { description: 'For deployments that keep an ingress service: its announcements taken in, each upload downloaded and applied, and the validation answered.' },
      ),
    ),
  },
  { description: 'Playbook Dispatcher’s internal and public APIs, its result uploads and its run events.' },
);

export type PlaybookDispatcherConfig = Options<typeof PLAYBOOK_DISPATCHER_SECTION>;
