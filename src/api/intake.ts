/** A request's body as intake takes it in: the bytes, the headers a replay needs, and who sent it. */

import type { FastifyRequest } from 'fastify';
import type { InboundMessage } from '../core/intake.js';
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
