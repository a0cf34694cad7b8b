/** The group commit's order guarantee for chained callers (a bus input's hand-overs waiting at once). */

import { expect, it } from 'vitest';
import { Batcher, type Chain } from '../src/core/batcher.js';

/** A batcher whose flushes wait until `release()` and fail when they hold the item 'bad'. */
function gated() {
  const flushed: string[][] = [];
  let open: (() => void) | undefined;
  const batcher = new Batcher<string, string>(async (items) => {
    flushed.push(items);
    await new Promise<void>((resolve) => (open = resolve));
    if (items.includes('bad')) throw new Error('the store is unreachable');
    return items.map((i) => `${i}:ok`);
  }, 2);
  const release = async (): Promise<void> => {
    while (open === undefined) await new Promise((resolve) => setImmediate(resolve));
    const o = open;
    open = undefined;
    o();
    await new Promise((resolve) => setImmediate(resolve));
  };
  return { batcher, flushed, release };
}

it('after a failed flush, the later lists of its chain fail without being flushed; other callers are flushed', async () => {
  const { batcher, flushed, release } = gated();
  const chain: Chain = {};
  const first = batcher.add(['bad', 'a1'], chain);
  const second = batcher.add(['a2'], chain);
  const other = batcher.add(['b1'], undefined);
  const third = batcher.add(['a3'], chain);
  const outcomes = Promise.allSettled([first, second, other, third]);

  await release(); // the first flush (maxBatch 2: the first list alone) fails
  await release(); // the next flush holds only the other caller's list
  const [f, s, o, t] = await outcomes;
  expect(f).toMatchObject({ status: 'rejected', reason: { message: 'the store is unreachable' } });
  expect(s).toMatchObject({ status: 'rejected', reason: { message: 'the store is unreachable' } });
  expect(o).toEqual({ status: 'fulfilled', value: ['b1:ok'] });
  expect(t).toMatchObject({ status: 'rejected', reason: { message: 'the store is unreachable' } });
  expect(flushed).toEqual([['bad', 'a1'], ['b1']]);
  expect(chain).toHaveProperty('failed');
  await batcher.drain();
});

it('a new chain after the failure is flushed again, in order', async () => {
  const { batcher, flushed, release } = gated();
  const failed: Chain = {};
  const lost = expect(batcher.add(['bad'], failed)).rejects.toThrow('the store is unreachable');
  await release();
  await lost;

  const chain: Chain = {};
  const one = batcher.add(['c1'], chain);
  const two = batcher.add(['c2', 'c3'], chain);
  await release();
  await release();
  expect(await one).toEqual(['c1:ok']);
  expect(await two).toEqual(['c2:ok', 'c3:ok']);
  expect(flushed).toEqual([['bad'], ['c1'], ['c2', 'c3']]);
  expect(chain).not.toHaveProperty('failed');
});
