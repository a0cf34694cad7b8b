/**
 * `deliver`: the event's message put in client inboxes (core/inboxes.ts), for the clients to receive
 * (`GET /v1/inbox`, or a profile's own receive).
 *
 * - `to`: `subscribers` (the default: every client of the run's tenant whose subscription matches `topic`),
 *   `all` (every client of the tenant: a broadcast, without a topic), or a list of client ids.
 * - `topic` (template, default `{{ subject }}`): the topic the message is delivered with; required for
 *   `subscribers`.
 * - `body` (template, default the event's `data`): what the clients receive.
 * - `sender` (template, default `{{ source }}`): who the clients are told sent it.
 * - `service`: only the clients of this service (a profile's own clients); default every client.
 *
 * A message is stored once per run and client, so that an attempt made again (a crash before its outcome
 * was recorded, a retry) doubles nothing. With `inboxes.whenFull: refuse`, a client whose inbox is full
 * fails the attempt (`inbox_full`, retryable): the retry delivers only to the clients still missing it,
 * and a run that never fits ends as a dead letter that can be replayed once the client has read its inbox.
 */

import type { ActionType } from '../../core/action.js';
import { DispatcherError } from '../../core/errors.js';
import { checkTopic } from '../../core/inboxes.js';

/** Client ids listed in the result; beyond it only the count. */
const LISTED = 100;

export const deliverAction: ActionType = {
  type: 'deliver',
  paramsSchema: {
    type: 'object',
    additionalProperties: false,
    properties: {
      to: {
        description: '`subscribers` (of the topic; the default), `all` (a broadcast), or a list of client ids.',
        anyOf: [{ enum: ['subscribers', 'all'] }, { type: 'array', minItems: 1, maxItems: 10_000, items: { type: 'string', minLength: 1 } }],
      },
      topic: { description: 'The topic (template; default `{{ subject }}`).', type: 'string', minLength: 1 },
      body: { description: 'The message (template; default the event’s data).' },
      sender: { description: 'Who sent it (template; default `{{ source }}`).', type: 'string', minLength: 1 },
      service: { description: 'Only the clients of this service (a profile’s own clients); default: every client of the tenant.', type: 'string', minLength: 1 },
    },
  },
  create(params, settings) {
    const to = (params.to ?? 'subscribers') as 'subscribers' | 'all' | string[];
    const topic = settings.compile(params.topic ?? (to === 'all' ? null : '{{ subject }}'), { at: ['topic'] });
    const body = params.body === undefined ? null : settings.compile(params.body, { at: ['body'] });
    const sender = settings.compile(params.sender ?? '{{ source }}', { at: ['sender'] });
    const service = params.service as string | undefined;
    return {
      async execute(ctx) {
        const inboxes = ctx.services.inboxes;
        if (inboxes === undefined) throw new DispatcherError('internal', 'the deliver action needs the dispatcher’s inboxes');
        const renderedTopic = ctx.render(topic);
        const t = renderedTopic === null || renderedTopic === undefined || renderedTopic === '' ? null : checkTopicOf(renderedTopic);
        if (t === null && to === 'subscribers') {
          throw new DispatcherError('invalid_event', 'deliver: the message has no topic (to: subscribers needs one; set topic, or send to all)', { retryable: false });
        }
        const value = body === null ? ctx.event.data : ctx.render(body);
        const text = JSON.stringify(value === undefined ? null : value);
        const from = String(ctx.render(sender) ?? '');
        const d = await inboxes.deliver({ runId: ctx.runId, orgId: ctx.run.orgId, topic: t, body: text, sender: from, to, ...(service === undefined ? {} : { service }) });
        const result = {
          topic: t,
          delivered: d.delivered.length,
          clients: d.delivered.slice(0, LISTED),
          ...(d.refused.length > 0 ? { refused: d.refused.slice(0, LISTED) } : {}),
          ...(Object.keys(d.dropped).length > 0 ? { dropped: d.dropped } : {}),
          ...(d.unknown.length > 0 ? { unknown: d.unknown.slice(0, LISTED) } : {}),
        };
        if (d.refused.length > 0) {
          throw new DispatcherError(
            'inbox_full',
            `the inbox of ${d.refused.length === 1 ? `client ${d.refused[0]}` : `${d.refused.length} clients (${d.refused.slice(0, 5).join(', ')}${d.refused.length > 5 ? ', …' : ''})`} is full ` +
              `(inboxes.maxMessages ${inboxes.settings.maxMessages}): delivered to ${d.delivered.length}, the rest is retried`,
            { retryable: true, response: JSON.stringify(result) },
          );
        }
        const summary = `delivered to ${d.delivered.length} inbox${d.delivered.length === 1 ? '' : 'es'}`;
        return { status: 'success', response: summary, result };
      },
    };
  },
};

function checkTopicOf(value: unknown): string {
  try {
    return checkTopic(String(value));
  } catch (err) {
    throw new DispatcherError('invalid_event', `deliver: ${(err as Error).message}`, { retryable: false });
  }
}
