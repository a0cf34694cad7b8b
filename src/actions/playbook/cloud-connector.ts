/**
 * The Cloud Connector's HTTP API as a connector: directives go to
 * `POST {url}/api/cloud-connector/v2/connections/{recipient}/message` and connection states come from
 * `GET {url}/api/cloud-connector/v2/connections/{recipient}/status`, authenticated by the client id and
 * pre-shared key headers and scoped to the recipient's tenant.
 *
 *   201 {"id": …}   the message was handed over
 *   404             the recipient is not connected
 *   any other       a failure, retryable as the `http` action's are (408, 425, 429, 5xx; Retry-After honoured)
 */

import { randomUUID } from 'node:crypto';
import { DispatcherError } from '../../core/errors.js';
import type { HttpAnswer, HttpClient } from '../../core/http.js';
import { isRetryableStatus, parseRetryAfter } from '../http/index.js';
import type { Connector, ConnectorContext, RecipientMessage } from '../../core/connector.js';

export interface CloudConnectorSettings {
  /** Its base URL (`http://cloud-connector:8080`). */
  url: string;
  clientId: string;
  psk: string;
  timeoutMs: number;
}

export function cloudConnector(settings: CloudConnectorSettings, http: HttpClient): Connector {
  const base = settings.url.replace(/\/+$/, '');
  const headers = (context: ConnectorContext): Record<string, string> => ({
    'x-rh-insights-request-id': context.requestId ?? randomUUID(),
    'x-rh-cloud-connector-client-id': settings.clientId,
    'x-rh-cloud-connector-psk': settings.psk,
    'x-rh-cloud-connector-org-id': context.orgId,
  });
  const connection = (recipient: string) => `${base}/api/cloud-connector/v2/connections/${encodeURIComponent(recipient)}`;

  return {
    async send(recipient: string, message: RecipientMessage, context: ConnectorContext) {
      const answer = await http.request(`${connection(recipient)}/message`, {
        method: 'POST',
        headers: { ...headers(context), 'content-type': 'application/json' },
        body: JSON.stringify({ directive: message.directive, metadata: message.metadata, payload: message.payload }),
        timeoutMs: settings.timeoutMs,
        maxBytes: 64 * 1024,
        ...(context.signal === undefined ? {} : { signal: context.signal }),
      });
      if (answer.status === 404) throw new DispatcherError('recipient_not_found', `recipient ${recipient} is not connected to the Cloud Connector`, { httpStatus: 404 });
      const body = answerJson(answer);
      const id = (body as { id?: unknown } | null)?.id;
      if (answer.status !== 201 || typeof id !== 'string' || id === '') throw unexpected('sending a message', answer);
      return { id };
    },

    async status(recipient: string, context: ConnectorContext) {
      const answer = await http.request(`${connection(recipient)}/status`, {
        method: 'GET',
        headers: headers(context),
        timeoutMs: settings.timeoutMs,
        maxBytes: 64 * 1024,
        ...(context.signal === undefined ? {} : { signal: context.signal }),
      });
      const status = (answerJson(answer) as { status?: unknown } | null)?.status;
      if (answer.status !== 200 || typeof status !== 'string') throw unexpected('asking for a connection status', answer);
      return { connected: status === 'connected' };
    },
  };
}

function answerJson(answer: HttpAnswer): unknown {
  try {
    return JSON.parse(answer.body.toString('utf8')) as unknown;
  } catch {
    return null;
  }
}

function unexpected(what: string, answer: HttpAnswer): DispatcherError {
  const text = answer.body.toString('utf8').slice(0, 500);
  const retryAfterMs = parseRetryAfter(answer.headers['retry-after']);
  return new DispatcherError('http_status', `the Cloud Connector answered ${answer.status} to ${what}`, {
    httpStatus: answer.status,
    response: text,
    retryable: isRetryableStatus(answer.status),
    ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
  });
}
