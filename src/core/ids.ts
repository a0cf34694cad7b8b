/**
 * Ids of events, runs and the rest: UUID version 7, with the random bytes drawn from a pool of 16 KiB
 * instead of 256 bytes. Filling the pool is a system call of about the same cost whatever its size, and
 * intake makes two ids per event: with the small pool that call was a third of the cost of an id.
 *
 * An id carries the time it is made for, exactly: intake makes an event's key and its runs' ids for the
 * moment it received the event, so that a run's id holds its `created_at`. The stores rely on that: runs
 * are listed in creation order by their primary key, and a `created_at` range is a range of ids
 * (`v7Floor` in store/shared.ts), with no index of its own to keep up on every insert and update.
 *
 * Ids made for the same time, one after another, increase (a counter that starts at a random value for
 * each new time), and so do ids made for later times; so within this process, the order of ids is the
 * order of the times they carry and, within one millisecond, the order they were made in.
 */

import { randomFillSync } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';

const pool = new Uint8Array(16 * 1024);
let at = pool.length;
/** The last id's time and counter: the next id for the same time has a higher counter. */
let lastTime = -Infinity;
let seq = 0;

export function newId(time: number = Date.now()): string {
  if (at > pool.length - 16) {
    randomFillSync(pool);
    at = 0;
  }
  const random = pool.subarray(at, (at += 16));
  if (time === lastTime) {
    // 2^31 or more ids in one millisecond would wrap the counter: not reachable, and the time stays exact.
    seq = (seq + 1) | 0;
  } else {
    lastTime = time;
    seq = (random[6]! << 23) | (random[7]! << 16) | (random[8]! << 8) | random[9]!;
  }
  return uuidv7({ random, msecs: time, seq });
}
