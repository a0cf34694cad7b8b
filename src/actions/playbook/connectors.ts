/**
 * The connector the `playbook` action and the Playbook Dispatcher profile send through, as `actions.playbook`
 * says: a Cloud Connector when `cloudConnector` is set, else the recipients connected to this dispatcher;
 * either way paced by one token bucket (`rps`, `bucket`), shared by every directive the dispatcher sends
 * (dispatches and cancels alike, as the original's one rate limiter).
 */

import type { Connector } from '../../core/connector.js';
import type { HttpClient } from '../../core/http.js';
import { TokenBucket } from '../../core/token-bucket.js';
import { cloudConnector } from './cloud-connector.js';
import type { PlaybookActionSettings } from './settings.js';

export function playbookConnector(settings: PlaybookActionSettings, parts: { http: HttpClient; recipients: Connector }): Connector {
  const cc = settings.cloudConnector;
  const base = cc === undefined ? parts.recipients : cloudConnector({ url: cc.url, clientId: cc.clientId, psk: cc.psk, timeoutMs: cc.timeout }, parts.http);
  return paced(base, new TokenBucket(settings.rps, settings.bucket));
}

/** Sends wait for a token of the bucket (abortable by the send's signal); status questions do not. */
export function paced(connector: Connector, bucket: TokenBucket): Connector {
  return {
    async send(recipient, message, context) {
      await bucket.take(context.signal);
      return connector.send(recipient, message, context);
    },
    status: (recipient, context) => connector.status(recipient, context),
  };
}
