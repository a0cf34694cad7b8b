/**
 * The one place where an error code becomes an HTTP status. Every error answer has the same body:
 * `{ "code": "...", "message": "...", "problems": [{ "pointer": "/0/type", "message": "..." }] }`.
 */

import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { DispatcherError, isDispatcherError, type ErrorCode } from '../core/errors.js';
import type { InboundMessage } from '../core/intake.js';

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
  invalid_upload: 400,
  bad_request: 400,
  not_found: 404,
  invalid_state: 409,
  unauthorized: 401,
  forbidden: 403,
  rate_limited: 429,
  method_not_allowed: 405,
  headers_too_large: 431,
  request_timeout: 408,
  action_failed: 502,
  action_error: 502,
  http_status: 502,
  network_error: 502,
  attempt_timeout: 504,
  inbox_full: 507,
  recipient_not_found: 404,
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
    case 'FST_ERR_BAD_URL':
      return new DispatcherError('bad_request', `the path is not valid: ${err.message}`);
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

/**
 * What the HTTP parser refuses before any route sees the request (Node's `clientError`): the same coded
 * body as every other error, with the security headers, written straight to the socket (there is no
 * request to reply to), and the connection closed. A reset connection gets nothing.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: import('node:stream').Duplex, headers: Record<string, string>): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const error =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? new DispatcherError('headers_too_large', 'the request headers are larger than the server reads (16 KiB)')
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? new DispatcherError('request_timeout', 'the request did not arrive whole in time; send it again')
        : new DispatcherError('bad_request', `the request is not valid HTTP (${(err as { reason?: string }).reason ?? err.code ?? err.message})`);
  const status = HTTP_STATUS[error.code];
  const body = JSON.stringify(errorBody(error));
  const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status]}`, 'content-type: application/json', `content-length: ${Buffer.byteLength(body)}`, 'connection: close'];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  if (socket.writable) socket.write(`${lines.join('\r\n')}\r\n\r\n${body}`);
  socket.destroy();
}

/** Raw bytes read before a body was refused (too large): kept as a bounded dead letter. */
export const PARTIAL_BODY = Symbol('partialBody');

/** An error answer in a scope's own words: its status (default: the code's), its body and content type. */
export interface ErrorAnswer {
  status?: number;
  body: string | Buffer | Record<string, unknown> | unknown[];
  /** Default `application/json`. */
  type?: string;
}

export interface ErrorAnswers {
  /** The body of an error answer; default `{code, message, problems?}`. */
  format?: (error: DispatcherError, status: number, request: FastifyRequest) => ErrorAnswer;
  /**
   * A body refused before its route saw it (too large, unreadable): the message to keep as a dead letter
   * (the bytes read so far are filled in), or undefined to keep none.
   */
  refused?: (request: FastifyRequest) => InboundMessage | undefined;
  /** Keeps a refused message as a dead letter (the services' `reject`). */
  reject?: (message: InboundMessage, error: DispatcherError) => Promise<unknown>;
}

/**
 * The error handler of a scope: every error becomes a coded DispatcherError (`fromFastifyError`) with the
 * status its code maps to, logged when it is the server's fault, `Retry-After` when a retry helps, and the
 * code kept for the audit entry; the body is the scope's own (`format`). The root scope answers
 * `{code, message, problems}`; a profile answers as its seed system did.
 */
export function answerErrors(scope: FastifyInstance, answers: ErrorAnswers = {}): void {
  scope.setErrorHandler(async (error: FastifyError | DispatcherError, request: FastifyRequest, reply: FastifyReply) => {
    const err = isDispatcherError(error) ? error : fromFastifyError(error as FastifyError);
    const partial = (error as unknown as Record<symbol, Buffer | undefined>)[PARTIAL_BODY];
    if (answers.refused !== undefined && answers.reject !== undefined && (partial !== undefined || !isDispatcherError(error))) {
      const message = answers.refused(request);
      // Refused before intake saw it (too large, unreadable): intake still keeps it as a dead letter.
      if (message !== undefined) await answers.reject({ ...message, raw: partial ?? message.raw, rawTruncated: partial !== undefined }, err);
    }
    const status = HTTP_STATUS[err.code] ?? 500;
    request.errorCode = err.code;
    if (status >= 500) request.log.error({ err: error }, 'request failed');
    if (err.code === 'rate_limited' && err.retryAfterMs !== undefined) reply.header('retry-after', Math.ceil(err.retryAfterMs / 1000));
    if (status === 503) reply.header('retry-after', 1);
    if (answers.format === undefined) {
      if (status === 401) reply.header('www-authenticate', 'Bearer realm="dispatcher", PSK realm="dispatcher"');
      return reply.code(status).type('application/json').send(errorBody(err));
    }
    const answer = answers.format(err, status, request);
    return reply
      .code(answer.status ?? status)
      .type(answer.type ?? 'application/json')
      .send(answer.body);
  });
}
