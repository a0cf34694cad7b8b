/** The delivery suite against the real RabbitMQ on this machine (DISPATCHER_TEST_AMQP_URL to use another). */

import amqp from 'amqplib';
import { describeDeliveries, type PeerMessage } from './transport.suite.js';

const URL = process.env.DISPATCHER_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

describeDeliveries({
  transport: 'amqp',
  async probe() {
    try {
      const c = await amqp.connect(URL, { timeout: 3000 });
      await c.close();
      return null;
    } catch (err) {
      return (err as Error).message || String(err);
    }
  },
  async place(name) {
    const connection = await amqp.connect(URL);
    const channel = await connection.createConfirmChannel();
    await channel.assertQueue(name, { durable: true });
    return {
      input: { url: URL, queue: name, prefetch: 200 },
      async send(messages: PeerMessage[]) {
        for (const m of messages) {
          channel.publish('', name, Buffer.from(m.body), {
            persistent: true,
            ...(m.contentType ? { contentType: m.contentType } : {}),
            ...(m.headers ? { headers: m.headers } : {}),
          });
        }
        await channel.waitForConfirms();
      },
      async close() {
        await channel.deleteQueue(name).catch(() => {});
        await connection.close().catch(() => {});
      },
    };
  },
  binary(attributes) {
    return Object.fromEntries(Object.entries(attributes).map(([k, v]) => [`cloudEvents:${k}`, v]));
  },
});
