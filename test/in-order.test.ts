/** The in-order acknowledgement mechanism the AMQP, MQTT and Kafka inputs share. */

import { expect, it } from 'vitest';
import { InOrder } from '../src/transports/in-order.js';

it('hands over each ended delivery once, in order, only when everything before it has ended', () => {
  const seen: string[][] = [];
  const order = new InOrder<string>((ended) => seen.push(ended.map((e) => `${e.item}:${e.acknowledge ? 'ack' : 'leave'}`)));
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((x) => order.add(x));
  c!(true);
  b!(false);
  expect(seen).toEqual([]);
  a!(true);
  expect(seen).toEqual([['a:ack', 'b:leave', 'c:ack']]);
  a!(true);
  d!(true);
  expect(seen).toEqual([['a:ack', 'b:leave', 'c:ack'], ['d:ack']]);
});

it('a delivery that never ends holds back the ones after it', () => {
  const seen: string[] = [];
  const order = new InOrder<string>((ended) => seen.push(...ended.map((e) => e.item)));
  order.add('stuck');
  order.add('later')(true);
  expect(seen).toEqual([]);
});
