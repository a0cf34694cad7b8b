/**
 * The Playbook Dispatcher profile: the original's internal and public APIs at their paths, its result
 * uploads and its run events, over the core's runs and hosts (one store, one model: see model.ts).
 *
 * A dispatch item becomes an event (`playbook-dispatcher.dispatch`, its data the item with the original's
 * defaults) taken in accept-first through the profile's route, whose one `playbook` action sends the
 * directive: the run exists only once the recipient's connector took it. Uploads resolve the waiting runs
 * and fill their hosts; the sweeper times out what no upload ended.
 */

import { randomUUID } from 'node:crypto';
import { DispatcherError } from '../../core/errors.js';
import { parseJsonBytes } from '../../core/json.js';
import type { Command } from 'commander';
import type { FastifyInstance } from 'fastify';
import type { Profile } from '../../core/profile.js';
import { PLAYBOOK_DISPATCHER_SECTION, type PlaybookDispatcherConfig } from './config.js';
import { PRESENTERS } from './events.js';
import { DISPATCH_TYPE, INTERNAL_PERMISSION, PROFILE, READ_PERMISSION, registerRoutes, UPLOAD_PERMISSION } from './http.js';
import { ANNOUNCE_DECODER, ANNOUNCED_TYPE, INGRESS_ACTION, ingressActionType } from './ingress.js';

export const PLAYBOOK_DISPATCHER: Profile<FastifyInstance, Command> = {
  name: PROFILE,
  description: 'Playbook Dispatcher: Ansible playbooks dispatched to recipients at `/internal/v2/dispatch`, results uploaded, runs read at `/api/playbook-dispatcher/v1`.',
  config: PLAYBOOK_DISPATCHER_SECTION,
  permissions: {
    [READ_PERMISSION]: 'list playbook runs and their hosts (`/api/playbook-dispatcher/v1/runs`, `/run_hosts`); `service` filters narrow it',
    [INTERNAL_PERMISSION]: 'the internal API (dispatch, cancel, recipients’ status, run hosts): every pre-shared key holds it',
    [UPLOAD_PERMISSION]: 'upload results (`POST /api/ingress/v1/upload`): every identity and pre-shared key holds it, and recipients’ clients',
  },
  routes: ({ name, config }) => {
    const c = config as PlaybookDispatcherConfig;
    return [
      {
        name,
        description: 'Dispatch items (`POST /internal/v2/dispatch`) become playbook runs.',
        match: { type: DISPATCH_TYPE },
        labels: '{{ data.labels }}',
        deadline: c.deadline,
        retry: { attempts: 1 },
        actions: [
          {
            playbook: {
              recipient: '{{ data.recipient }}',
              url: '{{ data.url }}',
              name: '{{ data.name }}',
              webConsoleUrl: '{{ data.web_console_url }}',
              principal: '{{ data.principal }}',
              timeout: '{{ data.timeout }}',
              hosts: '{{ data.hosts }}',
              satellite: '{{ data.recipient_config }}',
            },
          },
        ],
      },
      // With an ingress service: its announcements (`playbook-dispatcher.announce`) downloaded, applied, answered.
      ...(c.ingress === undefined
        ? []
        : [
            {
              name: `${name}.ingress`,
              description: 'Uploads an ingress service announces (`platform.upload.announce`) are downloaded, applied to their runs and answered (`platform.upload.validation`).',
              match: { type: ANNOUNCED_TYPE },
              // The original tries a download 3 times; an attempt is the download, the apply and the answer.
              retry: { attempts: 3 },
              timeout: c.ingress.downloadTimeout + 30_000,
              actions: [{ [INGRESS_ACTION]: {} }],
            },
          ]),
    ];
  },
  actionTypes: (setup) => [ingressActionType(setup.config as PlaybookDispatcherConfig)],
  decoders: {
    announce: ANNOUNCE_DECODER,
    dispatch: {
      description: 'A dispatch item (the JSON of one `RunInputV2`, its defaults applied) → a `playbook-dispatcher.dispatch` event.',
      create: (_options, context) => (message) => {
        const item = parseJsonBytes(message.raw) as Record<string, unknown> | null;
        if (item === null || typeof item !== 'object' || Array.isArray(item) || typeof item.recipient !== 'string' || typeof item.url !== 'string') {
          throw new DispatcherError('invalid_event', 'a dispatch item is an object with a recipient and a url', { problems: [{ pointer: '', message: 'not a dispatch item' }] });
        }
        return { events: [{ specversion: '1.0', id: randomUUID(), source: context.source, type: DISPATCH_TYPE, datacontenttype: 'application/json', data: item }], batch: false };
      },
    },
  },
  presenters: PRESENTERS,
  advise: (setup, whole) => {
    const auth = whole.auth as { identityHeader?: { enabled?: boolean } } | undefined;
    const advice =
      auth?.identityHeader?.enabled === true
        ? []
        : [
            'its public API and uploads trust the x-rh-identity header as the original trusts its gateway: set auth.identityHeader.enabled: true to say ' +
              'that a gateway sets it (and keep the dispatcher reachable only through one)',
          ];
    const ingress = (setup.config as PlaybookDispatcherConfig).ingress;
    if (ingress !== undefined) {
      // The configuration as loaded lists its inputs (each with its name); as written, it maps them by name.
      type Input = { name?: string; decoder?: { format?: string } };
      const inputs = (whole.inputs ?? {}) as Input[] | Record<string, Input | undefined>;
      const input = Array.isArray(inputs) ? inputs.find((i) => i.name === ingress.input) : Object.hasOwn(inputs, ingress.input) ? inputs[ingress.input] : undefined;
      if (input === undefined) advice.push(`ingress.input: no input "${ingress.input}" is configured: no announcement of the ingress service is taken in`);
      else if (input.decoder?.format !== `${PROFILE}.announce`) {
        advice.push(`ingress.input: the input "${ingress.input}" does not decode with ${PROFILE}.announce (decoder: { format: ${PROFILE}.announce }): its announcements reach no upload`);
      }
    }
    return advice;
  },
  http(scope, context) {
    registerRoutes(scope, context);
  },
};
