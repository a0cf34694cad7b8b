/** A request's body as intake takes it in: the bytes, the headers a replay needs, and who sent it. */

import type { FastifyRequest } from 'fastify';
import type { InboundMessage, IntakeAnswer } from '../core/intake.js';
import { DEFAULT_OWNER } from '../core/principal.js';
import { replayHeaders } from '../transports/http/decode.js';

export function intakeMessage(request: FastifyRequest, raw: Buffer, input = 'http'): InboundMessage {
  return {
    input,
    raw,
    contentType: request.headers['content-type'] ?? null,
    headers: replayHeaders(request.headers),
    service: request.principal?.service ?? DEFAULT_OWNER.service,
    orgId: request.principal?.orgId ?? DEFAULT_OWNER.orgId,
  };
}

/**
 * The answer's events in request order: `{index, id, status, runs}` for an accepted or duplicate one,
 * `{index, status: "refused", code, message, problems, dead_letter}` for one a batch refused.
 */
export function eventAnswers(answer: IntakeAnswer): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  const refused = new Map(answer.refused.map((r) => [r.index, r]));
  let next = 0;
  for (let index = 0; next < answer.results.length || refused.size > 0; index++) {
    const r = refused.get(index);
    if (r !== undefined) {
      refused.delete(index);
      out.push({ index, status: 'refused', code: r.error.code, message: r.error.message, problems: r.error.problems ?? [], dead_letter: r.deadLetter });
    } else {
      const result = answer.results[next++]!;
      out.push({ index, id: result.key, status: result.status, runs: result.runIds });
    }
  }
  return out;
}
