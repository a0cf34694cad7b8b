/**
 * The one place where an error code becomes an HTTP status. Every error answer has the same body:
 * `{ "code": "...", "message": "...", "problems": [{ "pointer": "/0/type", "message": "..." }] }`.
 */

import type { FastifyError } from 'fastify';
import { DispatcherError, type ErrorCode } from '../core/errors.js';

export const HTTP_STATUS: Record<ErrorCode, number> = {
  invalid_json: 400,
  invalid_utf8: 400,
  unsupported_media_type: 415,
  payload_too_large: 413,
  batch_too_large: 413,
  too_deep: 400,
  forbidden_key: 400,
  invalid_event: 400,
  invalid_envelope: 400,
  unknown_type: 400,
  schema_violation: 400,
  hop_limit_exceeded: 400,
  bad_request: 400,
  not_found: 404,
  invalid_state: 409,
  unauthorized: 401,
  forbidden: 403,
  rate_limited: 429,
  method_not_allowed: 405,
  action_failed: 502,
  action_error: 502,
  http_status: 502,
  network_error: 502,
  attempt_timeout: 504,
  address_blocked: 502,
  template_error: 500,
  route_missing: 500,
  lease_expired: 500,
  deadline_exceeded: 504,
  attempts_exhausted: 502,
  canceled: 409,
  config_invalid: 500,
  plugin_invalid: 500,
  store_unavailable: 503,
  shutting_down: 503,
  internal: 500,
};

export interface ErrorBody {
  code: string;
  message: string;
  problems?: Array<{ pointer: string; message: string }>;
}

/** Fastify's own errors (body parsing, routing) in our codes. */
export function fromFastifyError(err: FastifyError): DispatcherError {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new DispatcherError('payload_too_large', err.message);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new DispatcherError('unsupported_media_type', err.message);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new DispatcherError('invalid_json', err.message);
    case 'FST_ERR_VALIDATION':
      return new DispatcherError('bad_request', err.message);
    default:
      if (err.statusCode === 404) return new DispatcherError('not_found', err.message);
      if (err.statusCode === 405) return new DispatcherError('method_not_allowed', err.message);
      if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) return new DispatcherError('bad_request', err.message);
      return new DispatcherError('internal', 'an unexpected error happened; the log has the details', { cause: err });
  }
}

export function errorBody(err: DispatcherError): ErrorBody {
  const body: ErrorBody = { code: err.code, message: err.message };
  if (err.problems !== undefined && err.problems.length > 0) body.problems = err.problems;
  return body;
}
