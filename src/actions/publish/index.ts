/**
 * `publish`: a new event, built from the matched one by templates, taken in again as if it arrived on the
 * `embedded` input: checked, routed and turned into runs. Its hop count is one more than the event that
 * caused it; past `intake.maxHops` intake refuses it (`hop_limit_exceeded`), which ends a routing loop.
 *
 * The new event's id defaults to the run id, so a retried publish is the same event: intake answers
 * `duplicate` and no run is made twice.
 */

import type { ActionType } from '../../core/action.js';
import { DispatcherError } from '../../core/errors.js';
import type { CloudEvent } from '../../core/types.js';

export const publishAction: ActionType = {
  type: 'publish',
  paramsSchema: {
    type: 'object',
    required: ['type'],
    properties: {
      type: { type: 'string', minLength: 1 },
      source: { type: 'string', minLength: 1 },
      id: { type: 'string', minLength: 1 },
      topic: { type: 'string' },
      subject: { type: 'string' },
      data: {},
      extensions: { type: 'object' },
    },
    additionalProperties: false,
  },
  create(params, settings) {
    const template = settings.compile(params);
    return {
      async execute(ctx) {
        const p = ctx.render(template) as Record<string, unknown>;
        const event: CloudEvent = {
          ...((p.extensions as Record<string, unknown> | undefined) ?? {}),
          specversion: '1.0',
          id: stringOr(p.id, ctx.runId),
          source: stringOr(p.source, 'dispatcher'),
          type: String(p.type),
          time: new Date().toISOString(),
          correlationid: typeof ctx.event.correlationid === 'string' ? ctx.event.correlationid : ctx.event.id,
        };
        if (p.topic !== undefined && p.topic !== '') event.topic = String(p.topic);
        if (p.subject !== undefined && p.subject !== '') event.subject = String(p.subject);
        if (p.data !== undefined) {
          event.data = p.data;
          event.datacontenttype = 'application/json';
        }
        if (event.type === '') throw new DispatcherError('template_error', 'the published event has an empty type');
        await ctx.services.publish(event, ctx.hops + 1);
        return { status: 'success', result: { published: { source: event.source, id: event.id, type: event.type } } };
      },
    };
  },
};

function stringOr(value: unknown, fallback: string): string {
  return value === undefined || value === null || value === '' ? fallback : String(value);
}
