/**
 * Exponential backoff with full jitter: the n-th retry (0 for the first) waits a random time between 0
 * and min(max, base × 2^n), so that many agents cut off together do not come back together.
 */

export interface BackoffSettings {
  /** The ceiling of the first wait (ms). */
  baseMs: number;
  /** The largest ceiling (ms). */
  maxMs: number;
}

/** The ceiling of the n-th wait (n from 0): base × 2^n, at most max. */
export function backoffCeiling(attempt: number, settings: BackoffSettings): number {
  const n = Math.max(0, Math.floor(attempt));
  // 2^n overflows to Infinity long after it passed any sensible max; Math.min takes care of it.
  return Math.max(0, Math.min(settings.maxMs, settings.baseMs * 2 ** n));
}

/** The n-th wait (n from 0): uniformly drawn in [0, ceiling); `random` returns a number in [0, 1). */
export function backoffDelay(attempt: number, settings: BackoffSettings, random: () => number = Math.random): number {
  return Math.floor(random() * backoffCeiling(attempt, settings));
}
