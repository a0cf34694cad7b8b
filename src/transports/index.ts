/**
 * The transports, each loaded only when an input or output names it: a dispatcher without a Kafka input
 * never loads kafkajs.
 */

import { DispatcherError } from '../core/errors.js';
import type { TransportName } from './schema.js';
import type { Transport } from './types.js';

const LOADERS: Record<TransportName, () => Promise<{ transport: Transport }>> = {
  amqp: () => import('./amqp/index.js'),
  kafka: () => import('./kafka/index.js'),
  nats: () => missing('nats'),
  sqs: () => import('./sqs/index.js'),
  sns: () => import('./sns/index.js'),
  mqtt: () => missing('mqtt'),
};

function missing(name: string): Promise<never> {
  return Promise.reject(new DispatcherError('config_invalid', `the ${name} transport is not available`));
}

export async function loadTransport(name: TransportName): Promise<Transport> {
  return (await LOADERS[name]()).transport;
}
