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

it('hands every delivery over once and in order, however many and in whatever order they end', () => {
  const seen: number[] = [];
  const order = new InOrder<number>((ended) => seen.push(...ended.map((e) => e.item)));
  const total = 5000;
  const ends = Array.from({ length: total }, (_, i) => order.add(i));
  // A fixed shuffle (a linear congruential generator), with delivery 2500 held back until the end.
  const sequence = Array.from({ length: total }, (_, i) => i).filter((i) => i !== 2500);
  let x = 12345;
  for (let i = sequence.length - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const j = x % (i + 1);
    [sequence[i], sequence[j]] = [sequence[j]!, sequence[i]!];
  }
  for (const i of sequence) ends[i]!(i % 7 !== 0);
  expect(seen).toEqual(Array.from({ length: 2500 }, (_, i) => i));
  ends[2500]!(true);
  expect(seen).toEqual(Array.from({ length: total }, (_, i) => i));
  // Deliveries tracked after the queue emptied are handed over too.
  const later = order.add(total);
  later(true);
  expect(seen.at(-1)).toBe(total);
});
