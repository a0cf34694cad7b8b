import { describe, expect, it } from 'vitest';
import { TokenBucket } from '../src/core/token-bucket.js';

describe('TokenBucket', () => {
  it('lets a burst through at once, then paces the rest at its rate, in order (10 takes at 5/s with a burst of 5 take about a second)', async () => {
    const bucket = new TokenBucket(5, 5);
    const started = Date.now();
    const done: Array<[number, number]> = [];
    await Promise.all(Array.from({ length: 10 }, (_, i) => bucket.take().then(() => done.push([i, Date.now() - started]))));
    expect(done.map(([i]) => i)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // The burst: at once. The sixth waits for one token (200 ms), the tenth for five (1 s).
    expect(done[4]![1]).toBeLessThan(100);
    expect(done[5]![1]).toBeGreaterThanOrEqual(180);
    expect(done[9]![1]).toBeGreaterThanOrEqual(980);
    expect(done[9]![1]).toBeLessThan(2000);
  });

  it('refills over time, never above its burst', () => {
    let now = 0;
    const bucket = new TokenBucket(2, 3, () => now);
    const takeNow = () => {
      let taken = false;
      void bucket.take().then(() => (taken = true));
      return Promise.resolve().then(() => taken);
    };
    return (async () => {
      for (let i = 0; i < 3; i++) expect(await takeNow()).toBe(true);
      now = 10_000; // 20 tokens' worth of time: still only 3.
      for (let i = 0; i < 3; i++) expect(await takeNow()).toBe(true);
      expect(await takeNow()).toBe(false);
    })();
  });

  it('stops waiting when the caller aborts, and the next waiter gets the token', async () => {
    const bucket = new TokenBucket(10, 1);
    await bucket.take();
    const controller = new AbortController();
    const aborted = bucket.take(controller.signal);
    const next = bucket.take();
    controller.abort(new Error('gave up'));
    await expect(aborted).rejects.toThrow('gave up');
    const started = Date.now();
    await next;
    expect(Date.now() - started).toBeLessThan(200);
    expect(() => new TokenBucket(0, 1)).toThrow(/rate above 0/);
  });
});
