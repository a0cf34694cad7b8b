/**
 * What the transports part offers the rest of the dispatcher: the transports, each loaded only when an input
 * or output names it (a dispatcher without a Kafka input never loads kafkajs), the decoders and encoders
 * shared by all of them, and the input host.
 */

import type { TransportName } from './schema.js';
import type { Transport } from './types.js';

export { busDecoder, type DecoderConfig } from './decode.js';
export { InputHost } from './input.js';
export type { CloudEventsBinding, OutboundMessage, OutputDriver, TransportHealth } from './types.js';

const LOADERS: Record<TransportName, () => Promise<{ transport: Transport }>> = {
  amqp: () => import('./amqp/index.js'),
  kafka: () => import('./kafka/index.js'),
  nats: () => import('./nats/index.js'),
  sqs: () => import('./sqs/index.js'),
  sns: () => import('./sns/index.js'),
  mqtt: () => import('./mqtt/index.js'),
};

export async function loadTransport(name: TransportName): Promise<Transport> {
  return (await LOADERS[name]()).transport;
}
