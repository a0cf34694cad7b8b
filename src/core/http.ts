/** The port of the guarded HTTP client the dispatcher lends to actions and profiles (actions/http/client.ts implements it). */

/** A request to another service. */
export interface HttpRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Longest time for the whole exchange (default `actions.http.timeout`). */
  timeoutMs?: number;
  /** Most bytes of the answer kept (default 1 MiB); a longer answer is refused (`action_failed`). */
  maxBytes?: number;
  signal?: AbortSignal;
  /**
   * Do not verify the server's TLS certificate: for a self-signed internal API, when configured so. The
   * address policy still applies.
   */
  insecure?: boolean;
}

export interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/**
 * HTTP to other services (a Cloud Connector, a REST API, Slack), through the same address policy as the
 * `http` action (`actions.http.allow`): private, loopback and link-local targets are refused unless allowed.
 * Transport failures are coded: `network_error`, `attempt_timeout`, `address_blocked`.
 */
export interface HttpClient {
  request(url: string | URL, request?: HttpRequest): Promise<HttpAnswer>;
}
