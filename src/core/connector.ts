/**
 * Connectors: how a directive reaches a recipient (an agent on a host, a Satellite), and how to ask whether
 * a recipient is connected. One small interface; each implementation owns its connection: the Cloud
 * Connector's HTTP API (`cloud-connector.ts`), or recipients connected to the dispatcher itself.
 */

/** What a recipient is sent: the directive names the worker that handles it, the payload is what it acts on. */
export interface RecipientMessage {
  directive: string;
  /** Every value a string, as workers read them. */
  metadata: Record<string, string>;
  /** For a playbook: its URL; empty for a cancel. */
  payload: string;
}

export interface ConnectorContext {
  /** The recipient's tenant. */
  orgId: string;
  /** Passed on so that the two sides' logs can be joined. */
  requestId?: string;
  signal?: AbortSignal;
}

export interface Connector {
  /**
   * Hand the message to the recipient; resolves with the connector's id for it once the connector took it.
   * Throws `recipient_not_found` when the recipient is not connected, another coded error otherwise.
   */
  send(recipient: string, message: RecipientMessage, context: ConnectorContext): Promise<{ id: string }>;
  /** Whether the recipient is connected now. */
  status(recipient: string, context: ConnectorContext): Promise<{ connected: boolean }>;
}
