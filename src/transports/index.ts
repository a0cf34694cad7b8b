/**
 * The transports, each loaded only when an input or output names it: a dispatcher without a Kafka input
 * never loads kafkajs.
 */

import { DispatcherError } from '../core/errors.js';
import type { TransportName } from './schema.js';
import type { Transport } from './types.js';

const LOADERS: Record<TransportName, () => Promise<{ transport: Transport }>> = {
  amqp: () => import('./amqp/index.js'),
  kafka: () => missing('kafka'),
  nats: () => import('./nats/index.js'),
  sqs: () => missing('sqs'),
  sns: () => missing('sns'),
  mqtt: () => import('./mqtt/index.js'),
};

function missing(name: string): Promise<never> {
  return Promise.reject(new DispatcherError('config_invalid', `the ${name} transport is not available`));
}

export async function loadTransport(name: TransportName): Promise<Transport> {
  return (await LOADERS[name]()).transport;
}
