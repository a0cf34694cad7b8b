/**
 * The one catalogue of coded errors. Every failure the dispatcher reports carries a stable `code` and says
 * whether a retry can help (`retryable`); the runner decides retry or dead letter from that flag, never
 * from message text. `docs/errors.md` lists the same codes; a test keeps the two in sync.
 *
 * The HTTP status each code maps to lives in one place too: `src/api/errors.ts`.
 */

export interface ErrorSpec {
  /** What the code means, as written in docs/errors.md. */
  readonly description: string;
  /** Whether trying the same thing again later may succeed. */
  readonly retryable: boolean;
}

export const ERROR_CODES = {
  // Intake: the request or message itself is wrong. Kept as a dead letter.
  invalid_json: { description: 'The body is not valid JSON.', retryable: false },
  invalid_utf8: { description: 'The body is not valid UTF-8.', retryable: false },
  unsupported_media_type: { description: 'The content type is not one the input accepts.', retryable: false },
  payload_too_large: { description: 'The body is larger than the configured limit.', retryable: false },
  batch_too_large: { description: 'The batch holds more events than the configured limit.', retryable: false },
  too_deep: { description: 'The JSON nests deeper than the configured limit.', retryable: false },
  forbidden_key: { description: 'The JSON holds a key that could poison prototypes (`__proto__`, `constructor.prototype`).', retryable: false },
  invalid_event: { description: 'The event is not a valid CloudEvents 1.0 envelope.', retryable: false },
  unknown_type: { description: 'The event type is not registered and intake is strict.', retryable: false },
  schema_violation: { description: "The event's data fails its type's JSON Schema.", retryable: false },
  invalid_envelope: { description: 'The message is not in the envelope its input expects (an SNS notification with a `Message`).', retryable: false },
  hop_limit_exceeded: { description: 'A published event went through more hops than allowed (a routing loop).', retryable: false },
  invalid_upload: { description: 'An uploaded result file is not what its content type says (empty, a line that fails its schema, no correlation id).', retryable: false },

  // API: the caller asked for something that cannot be done.
  bad_request: { description: 'The request is malformed (query, parameters or body).', retryable: false },
  not_found: { description: 'No such record.', retryable: false },
  invalid_state: { description: 'The record is in a state that does not allow this operation.', retryable: false },
  unauthorized: { description: 'No valid credentials were given.', retryable: false },
  forbidden: { description: 'The principal lacks the permission for this operation.', retryable: false },
  rate_limited: { description: 'Too many requests; try again after the time in Retry-After.', retryable: true },
  method_not_allowed: { description: 'The route does not accept this method.', retryable: false },
  headers_too_large: { description: 'The request headers are larger than the server reads (HTTP parser limit).', retryable: false },
  request_timeout: { description: 'The request did not arrive whole within `server.requestTimeout`.', retryable: true },

  // Actions: what happened when a run executed.
  action_failed: { description: 'The action reported a failure that a retry will not mend.', retryable: false },
  action_error: { description: 'The action failed in a way that a later attempt may not repeat.', retryable: true },
  http_status: { description: 'The receiver answered with an HTTP status that means failure (retryable for 408, 425, 429 and 5xx).', retryable: true },
  network_error: { description: 'The receiver could not be reached (connection refused, reset, DNS).', retryable: true },
  attempt_timeout: { description: "The attempt took longer than the route's timeout.", retryable: true },
  inbox_full: { description: 'A client’s inbox holds `inboxes.maxMessages` messages and refuses more (`inboxes.whenFull: refuse`) until the client receives some.', retryable: true },
  recipient_not_found: { description: 'The recipient a directive is for is not connected.', retryable: true },
  address_blocked: { description: 'The target resolves to a private, loopback or link-local address that is not allowlisted.', retryable: false },
  template_error: { description: 'A template could not be rendered from the event.', retryable: false },
  route_missing: { description: 'The route or action a run was planned for is no longer configured.', retryable: false },
  lease_expired: { description: 'The worker holding the run stopped renewing its lease (it died or stalled).', retryable: true },
  deadline_exceeded: { description: 'The run did not end before its deadline.', retryable: false },
  attempts_exhausted: { description: "A worker's lease expired on the run's last allowed attempt. (A run whose attempts all failed otherwise keeps the last attempt's code.)", retryable: false },
  canceled: { description: 'The run was canceled.', retryable: false },

  // The dispatcher itself.
  config_invalid: { description: 'The configuration does not match its schema.', retryable: false },
  plugin_invalid: { description: 'A plugin module does not export the action interface.', retryable: false },
  store_unavailable: { description: 'The store cannot be reached.', retryable: true },
  shutting_down: { description: 'The dispatcher is stopping and takes no new work.', retryable: true },
  internal: { description: 'An unexpected error; the log has the details.', retryable: true },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorProblem {
  /** JSON pointer into the offending document (RFC 6901), `''` for the whole document. */
  pointer: string;
  message: string;
}

export interface DispatcherErrorOptions {
  retryable?: boolean;
  /** For retryable failures: the earliest time to try again, from a Retry-After header. */
  retryAfterMs?: number;
  /** HTTP status of the receiver's answer, for action failures. */
  httpStatus?: number;
  /** A truncated summary of the receiver's answer. */
  response?: string;
  problems?: ErrorProblem[];
  cause?: unknown;
}

export class DispatcherError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly retryAfterMs?: number;
  readonly httpStatus?: number;
  readonly response?: string;
  readonly problems?: ErrorProblem[];
  /** Intake could not keep the dead letter for this error (the store was unreachable): a bus input must not acknowledge. */
  deadLetterLost?: boolean;

  constructor(code: ErrorCode, message: string, options: DispatcherErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DispatcherError';
    this.code = code;
    this.retryable = options.retryable ?? ERROR_CODES[code].retryable;
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
    if (options.httpStatus !== undefined) this.httpStatus = options.httpStatus;
    if (options.response !== undefined) this.response = options.response;
    if (options.problems !== undefined) this.problems = options.problems;
  }
}

export function isDispatcherError(err: unknown): err is DispatcherError {
  return err instanceof DispatcherError;
}

/** Any thrown value as a DispatcherError: unknown errors become `internal` (retryable). */
export function toDispatcherError(err: unknown): DispatcherError {
  if (err instanceof DispatcherError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new DispatcherError('internal', message, { cause: err });
}

/**
 * `work`, or `store_unavailable` once `ms` have passed without it (the work goes on, its outcome ignored):
 * for a store that stops answering without closing its connection.
 */
export function storeWithin<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  if (!(ms > 0)) return work;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      work.catch(() => undefined);
      reject(new DispatcherError('store_unavailable', `the store did not ${what} within ${ms} ms`));
    }, ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

/** A `config_invalid` listing every problem of `what` (the configuration, its routes, its types), one line each. */
export function configProblems(what: string, lines: readonly string[], problems: readonly ErrorProblem[]): DispatcherError {
  const message = lines.length === 1 ? `Invalid ${what}: ${lines[0]}` : `Invalid ${what} (${lines.length} problems):\n  ${lines.join('\n  ')}`;
  return new DispatcherError('config_invalid', message, { problems: problems.map((p) => ({ ...p })) });
}
