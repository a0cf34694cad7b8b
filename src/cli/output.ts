/** What the CLI prints, and how it fails: messages to stderr, exit code 1 for failure, 2 for usage. */

import { parseDuration } from '../core/units.js';

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 1,
  ) {
    super(message);
  }
}

export function fail(message: string, code: number): number {
  process.stderr.write(`dispatcher: ${message}\n`);
  return code;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A plain aligned table. */
export function printTable(rows: Array<Record<string, unknown>>, columns: string[]): void {
  const cells = rows.map((r) => columns.map((c) => format(r[c])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  process.stdout.write(`${line(columns.map((c) => c.toUpperCase()))}\n`);
  for (const row of cells) process.stdout.write(`${line(row)}\n`);
}

function format(v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export function integerOption(name: string, value: string, min = 0): number {
  if (!/^\d+$/.test(value) || Number(value) < min) throw new CliError(`--${name} must be a whole number of at least ${min}`, 2);
  return Number(value);
}

/** `1 route`, `2 routes`, `0 routes`. */
export function count(n: number, singular: string, plural = `${singular}s`): string {
  return `${n} ${n === 1 ? singular : plural}`;
}

/** A time option: RFC 3339 and epoch milliseconds as the API takes them, or a duration back from now (`1h`, `30m`, `7d`). */
export function timeOption(name: string, value: string | undefined, now = Date.now()): string | undefined {
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value)) return value;
  // Digits alone are epoch milliseconds (above), so a duration here always has its unit, as in the configuration.
  const ago = parseDuration(value);
  if (ago !== null) return new Date(now - ago).toISOString();
  if (!/^\d{4}-\d{2}-\d{2}/.test(value)) throw new CliError(`--${name} takes a time (RFC 3339, e.g. 2026-12-01T08:00:00Z, or epoch milliseconds) or a duration back from now (30m, 1h, 7d), got "${value}"`, 2);
  return value;
}

export interface ProgressBar {
  update(done: number): void;
  /** A line of its own above the bar (on standard error). */
  note(line: string): void;
  done(): void;
}

export interface ProgressBar {
  /** `done` of the total so far (items, or bytes read), and how many `unit`s that is (default: `done`). */
  update(done: number, items?: number): void;
  /** A line of its own above the bar (on standard error). */
  note(line: string): void;
  done(): void;
}

/**
 * A progress bar on standard error when it is a terminal: how far (of `total`; none when it is unknown),
 * how many `unit`s, their rate, and the time left. Redrawn at most ten times a second; `done()` ends the line.
 */
export function progressBar(total: number, unit: string, enabled = process.stderr.isTTY === true): ProgressBar {
  if (!enabled) return { update: () => undefined, note: (line) => void process.stderr.write(`${line}\n`), done: () => undefined };
  const width = 30;
  const started = Date.now();
  let drawn = 0;
  let at = 0;
  let shown = 0;
  const draw = () => {
    const seconds = (Date.now() - started) / 1000;
    const rate = seconds > 0 ? shown / seconds : 0;
    const fraction = total > 0 ? Math.min(1, at / total) : 0;
    const left = fraction > 0 && fraction < 1 ? (seconds / fraction) * (1 - fraction) : 0;
    const filled = Math.round(fraction * width);
    const bar = total > 0 ? `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.floor(fraction * 100)).padStart(3)}%  ` : '';
    process.stderr.write(`\r${bar}${shown} ${unit}  ${Math.round(rate)}/s${total > 0 ? `  ETA ${clock(left)}` : ''}\x1b[K`);
    drawn = Date.now();
  };
  return {
    update(done: number, items: number = done) {
      at = done;
      shown = items;
      if (Date.now() - drawn >= 100) draw();
    },
    note(line) {
      process.stderr.write(`\r\x1b[K${line}\n`);
      draw();
    },
    done() {
      draw();
      process.stderr.write('\n');
    },
  };
}

/** Seconds as `m:ss` or `h:mm:ss`. */
export function clock(seconds: number): string {
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}
