/**
 * The RabbitMQ layout (`amqp`), kept in step with the dispatcher: its clients' queues declared when it
 * starts and whenever one is made, changed or deleted here; every delivery this process makes published to
 * the exchanges (so that `<id>-inbox` queues fill as the original's did); and what other systems write to
 * `<id>-outbox` and `<id>-broadcast` taken in as that client's `/send` and `/notify`.
 *
 * The mirror is a copy: the store's inboxes are what `/receive` reads. A delivery the broker does not
 * confirm is logged, not retried (its inboxes in the store have it). RabbitMQ's layout has no tenants: one
 * `amqp` serves the clients of every tenant, as the original's one bus did.
 */

import type { FastifyInstance } from 'fastify';
import { DispatcherError } from '../../core/errors.js';
import type { ProfileContext } from '../../core/profile.js';
import type { CommunicationsBackboneConfig } from './config.js';
import { AmqpLayout } from './amqp.js';
import { CLIENT_SERVICE, type Sender } from './sender.js';

export async function startLayout(scope: FastifyInstance, amqp: NonNullable<CommunicationsBackboneConfig['amqp']>, context: ProfileContext, sender: Sender): Promise<void> {
  const { services } = context;
  const log = services.log.child({ part: 'backbone-amqp' });
  const clientOf = async (id: string) => {
    const client = await services.records.access.getClient(id);
    // Not retryable: the message goes to `onInvalid` (a dead letter) instead of coming back for ever.
    if (client === null || client.service !== CLIENT_SERVICE) throw new DispatcherError('not_found', `no client ${id}: its queue has messages, but it is not registered`);
    return client;
  };
  const layout = new AmqpLayout({
    url: amqp.url,
    log,
    publishExchange: amqp.publishExchange,
    broadcastExchange: amqp.broadcastExchange,
    onSend: async (clientId, topic, body) => {
      const client = await clientOf(clientId);
      await sender.send(client, topic, body);
    },
    onNotify: async (clientId, body) => {
      const client = await clientOf(clientId);
      await sender.send(client, null, body);
    },
    onInvalid: async (clientId, queue, raw, error) => {
      const client = await services.records.access.getClient(clientId);
      await services.reject(
        { input: `amqp://${queue}`, raw, contentType: 'application/json', headers: {}, service: CLIENT_SERVICE, orgId: client?.orgId ?? 'unknown' },
        error,
      );
    },
  });
  const clients = (await services.records.access.listClients()).filter((c) => c.service === CLIENT_SERVICE);
  await layout.start(clients.map((c) => ({ id: c.id, subscription: c.subscription })));
  const stopChanges = services.auth.onClientChange(({ kind, client, previous }) => {
    if (client.service !== CLIENT_SERVICE) return;
    const done =
      kind === 'deleted'
        ? layout.clientDeleted(client.id)
        : layout.clientSaved({ id: client.id, subscription: client.subscription }, previous === undefined ? undefined : { id: previous.id, subscription: previous.subscription });
    done.catch((err: unknown) => log.error({ err, client: client.id }, 'could not bring the RabbitMQ layout in step with a client change'));
  });
  const stopMirror = services.inboxes.onDelivered((d, result) => {
    // What the layout can route: a topic to its subscribers, a broadcast to all (not a list of named clients).
    if (d.to !== 'subscribers' && d.to !== 'all') return;
    // Once per message: the exchange routes it to every queue bound, so a retry of the same run (some inboxes
    // had it already) is not published again, or those queues would have it twice.
    if (result.storedNow === 0 || result.alreadyThere > 0) return;
    layout
      .mirror({ id: d.runId ?? '', topic: d.topic, body: d.body, sender: d.sender, time: new Date(result.at).toISOString() })
      .catch((err: unknown) => log.error({ err, run: d.runId }, 'could not mirror a delivery to RabbitMQ (the inboxes in the store have it)'));
  });
  scope.addHook('onClose', async () => {
    stopChanges();
    stopMirror();
    await layout.close();
  });
}
