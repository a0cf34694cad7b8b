/**
 * `publish`: a new event, built from the matched one by templates.
 *
 * Without `output`, it is taken in again as if it arrived on the `embedded` input: checked, routed and
 * turned into runs. Its hop count is one more than the event that caused it; past `intake.maxHops` intake
 * refuses it (`hop_limit_exceeded`), which ends a routing loop.
 *
 * With `output` (the name of a configured output, checked at start), it is published there as a
 * CloudEvent in the binary mode of the output's transport, to `topic` with `key`; the run succeeds once
 * the output confirmed it, and is retried (the same event id) when it did not.
 *
 * The new event's id defaults to the run id, so a retried publish is the same event: intake answers
 * `duplicate` and no run is made twice; a consumer of an output can drop the repeat by (`source`, `id`).
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
      output: { type: 'string', minLength: 1 },
      key: { type: 'string' },
      datacontenttype: { type: 'string', minLength: 1 },
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
    const output = params.output as string | undefined;
    const outputs = settings.outputs ?? [];
    if (output !== undefined && !outputs.includes(output)) {
      throw new DispatcherError('config_invalid', `publish.output: no output "${output}" is configured (${outputs.length > 0 ? `known: ${outputs.join(', ')}` : 'none is'})`);
    }
    const { output: _output, ...rest } = params;
    const template = settings.compile(rest);
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
          event.datacontenttype = p.datacontenttype === undefined || p.datacontenttype === '' ? 'application/json' : String(p.datacontenttype);
        }
        if (event.type === '') throw new DispatcherError('template_error', 'the published event has an empty type');
        if (output !== undefined) {
          const key = p.key === undefined || p.key === '' ? undefined : String(p.key);
          if (ctx.services.publishTo === undefined) throw new DispatcherError('config_invalid', 'outputs cannot be published to here');
          await ctx.services.publishTo(output, event, { topic: event.topic as string | undefined, key });
          return { status: 'success', result: { published: { output, source: event.source, id: event.id, type: event.type } } };
        }
        await ctx.services.publish(event, ctx.hops + 1);
        return { status: 'success', result: { published: { source: event.source, id: event.id, type: event.type } } };
      },
    };
  },
};

function stringOr(value: unknown, fallback: string): string {
  return value === undefined || value === null || value === '' ? fallback : String(value);
}
