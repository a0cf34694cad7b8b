/**
 * Ids of events, runs and the rest: UUID version 7 (time-ordered, and increasing within this process, as
 * the `uuid` package makes them), with the random bytes drawn from a pool of 16 KiB instead of 256 bytes.
 * Filling the pool is a system call of about the same cost whatever its size, and intake makes two ids per
 * event: with the small pool that call was a third of the cost of an id.
 */

import { randomFillSync } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';

const pool = new Uint8Array(16 * 1024);
let at = pool.length;
/** The last id's time and counter: a later id has a later time, or the same time and a higher counter. */
let msecs = -Infinity;
let seq = 0;

export function newId(): string {
  if (at > pool.length - 16) {
    randomFillSync(pool);
    at = 0;
  }
  const random = pool.subarray(at, (at += 16));
  const now = Date.now();
  if (now > msecs) {
    msecs = now;
    seq = (random[6]! << 23) | (random[7]! << 16) | (random[8]! << 8) | random[9]!;
  } else {
    seq = (seq + 1) | 0;
    if (seq === 0) msecs += 1;
  }
  return uuidv7({ random, msecs, seq });
}
