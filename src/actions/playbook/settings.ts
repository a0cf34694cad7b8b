/** `actions.playbook`: the settings every `playbook` action shares (how directives reach recipients, and how fast). */

import { duration, object, section, Type, type Options } from '../../core/options.js';

export const PLAYBOOK_ACTION_SECTION = section(
  {
    cloudConnector: Type.Optional(
      object(
        {
          url: Type.String({ minLength: 1, description: 'The Cloud Connector’s base URL (`http://cloud-connector:8080`).' }),
          clientId: Type.String({ minLength: 1, description: 'Sent as `x-rh-cloud-connector-client-id`.', default: 'playbook-dispatcher' }),
          psk: Type.String({ minLength: 1, description: 'Sent as `x-rh-cloud-connector-psk`.' }),
          timeout: duration('Longest time one request to the Cloud Connector may take.', '10s'),
        },
        {
          description:
            'Send directives through a Cloud Connector’s HTTP API instead of to the recipients connected to this dispatcher (the default, ' +
            '`GET /v1/recipients/{id}/connect`).',
        },
      ),
    ),
    rps: Type.Number({ exclusiveMinimum: 0, description: 'Directives sent per second at most, on average (a token bucket).', default: 100 }),
    bucket: Type.Integer({ minimum: 1, description: 'How many directives may go at once before `rps` paces them (the bucket’s size).', default: 60 }),
    returnUrl: Type.Optional(
      Type.String({ minLength: 1, description: 'Where recipients upload their results. Default: `/api/ingress/v1/upload` on `server.publicUrl`.' }),
    ),
    responseInterval: Type.Integer({ minimum: 1, description: 'Seconds between a recipient’s uploads while a playbook runs (sent to it).', default: 600 }),
    satelliteResponseFull: Type.Boolean({ description: 'Ask Satellite for the whole console with each update (`true`) or only what is new.', default: true }),
    defaultTimeout: Type.Integer({ minimum: 0, maximum: 604800, description: 'Seconds a run may take when its action gives no `timeout`.', default: 3600 }),
    demoMode: Type.Boolean({ description: 'Every run’s correlation id is the nil UUID (for the example upload files, which carry it).', default: false }),
  },
  { description: 'The `playbook` action: Ansible playbooks sent to recipients as directives, their runs waiting for uploads.' },
);

/** `actions.playbook`, normalized (`cloudConnector.timeout` in milliseconds). */
export type PlaybookActionSettings = Options<typeof PLAYBOOK_ACTION_SECTION>;
