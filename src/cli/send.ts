/**
 * `dispatcher send [file]`: events from a file or standard input, posted in batches as they are read (the
 * file is streamed, never read whole). The input is one JSON event (pretty-printed or not), a JSON array of
 * events, or JSON Lines. A progress bar on a terminal, and a summary at the end.
 *
 * Send goes on past what is refused: a batch the dispatcher refuses in part (207) or whole (400, 413),
 * and a line of JSON Lines that does not parse, are reported with their line (or index) and counted, the
 * rest is sent, and the command exits 1. What stops it: an answer no other batch would get otherwise
 * (401, 403, 404, a server error after retries) or a JSON array or document that stops parsing.
 */

import { createReadStream, statSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { JSONParser } from '@streamparser/json';
import { answerError, answerOf, connect, request, type Connection, type ConnectionOptions } from './connection.js';
import { CliError, count, integerOption, progressBar } from './output.js';

/** An event read from the input, with the line it was read on (its last line, for one over several), for messages. */
interface Read {
  event: unknown;
  line: number;
  /** Its place in the input, from 0. */
  index: number;
}

/** A line that did not parse (JSON Lines goes on past it). */
class BadLine {
  constructor(
    readonly line: number,
    readonly message: string,
  ) {}
}

/**
 * The events of a stream, as they are read. JSON Lines when the first line is a JSON value of its own;
 * else a JSON array (streamed element by element) or JSON documents one after the other (a pretty-printed
 * event). `onBytes` is told how far the reading got.
 */
export async function* readEvents(input: NodeJS.ReadableStream, name: string, onBytes: (n: number) => void = () => undefined): AsyncGenerator<Read | BadLine> {
  const lines = createInterface({ input, crlfDelay: Infinity });
  let n = 0;
  let index = 0;
  let bytes = 0;
  let mode: 'lines' | 'stream' | undefined;
  let parser: JSONParser | undefined;
  const parsed: Read[] = [];
  let failure: Error | undefined;
  try {
    for await (const line of lines) {
      n += 1;
      bytes += Buffer.byteLength(line) + 1;
      onBytes(bytes);
      if (mode === undefined) {
        const text = line.trim();
        if (text === '') continue;
        if (!text.startsWith('[')) {
          try {
            JSON.parse(text);
            mode = 'lines';
          } catch {
            // a document over several lines: streamed
          }
        }
        if (mode === undefined) {
          mode = 'stream';
          // An array's elements, or each document of a sequence (a pretty-printed event, or several).
          parser = new JSONParser(text.startsWith('[') ? { paths: ['$.*'], keepStack: false } : { paths: ['$'], keepStack: false, separator: '' });
          parser.onValue = ({ value }) => parsed.push({ event: value, line: n, index: index++ });
          parser.onError = (err) => (failure ??= err);
        }
      }
      if (mode === 'lines') {
        if (line.trim() === '') continue;
        try {
          yield { event: JSON.parse(line), line: n, index: index++ };
        } catch (err) {
          yield new BadLine(n, (err as Error).message);
        }
        continue;
      }
      parser!.write(`${line}\n`);
      if (failure !== undefined) throw new CliError(`${name} line ${n}: not valid JSON: ${failure.message.replace(/ at (chunk )?position .*$/, '')}`);
      yield* parsed.splice(0);
    }
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`cannot read ${name}: ${(err as Error).message}`);
  }
  if (parser !== undefined) {
    // An array ends by itself at its `]`; a sequence of documents when the input does.
    if (!parser.isEnded) parser.end();
    yield* parsed.splice(0);
    if (failure !== undefined) throw new CliError(`${name}: the JSON ends before it is complete (line ${n})`);
  }
}

/** Every event of a file (or `-`: standard input), for commands that take a few; a line that does not parse is an error. */
export async function readAll(file: string): Promise<unknown[]> {
  const name = file === '-' ? 'stdin' : file;
  let input: NodeJS.ReadableStream = process.stdin;
  if (file !== '-') {
    try {
      statSync(file);
    } catch {
      throw new CliError(`cannot read ${file}: no such file`);
    }
    input = createReadStream(file);
  }
  const events: unknown[] = [];
  for await (const item of readEvents(input, name)) {
    if (item instanceof BadLine) throw new CliError(`${name} line ${item.line}: not valid JSON: ${item.message}`);
    events.push(item.event);
  }
  return events;
}

interface SendOptions extends ConnectionOptions {
  batch: string;
  progress: boolean;
}

interface Tally {
  sent: number;
  accepted: number;
  duplicates: number;
  refused: number;
  runs: number;
}

export async function sendCommand(file: string | undefined, options: SendOptions): Promise<void> {
  const size = integerOption('batch', options.batch, 1);
  const fromStdin = file === undefined || file === '-';
  const name = fromStdin ? 'stdin' : file;
  let total = 0;
  if (!fromStdin) {
    try {
      total = statSync(file).size;
    } catch (err) {
      throw new CliError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
    }
  }
  const connection = await connect(options);
  const input = fromStdin ? process.stdin : createReadStream(file);
  const bar = progressBar(total, 'events', options.progress && process.stderr.isTTY === true);
  const tally: Tally = { sent: 0, accepted: 0, duplicates: 0, refused: 0, runs: 0 };
  let badLines = 0;
  let read = 0;
  const started = Date.now();
  let batch: Read[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    const sending = batch;
    batch = [];
    try {
      await post(connection, sending, tally, bar.note);
    } catch (err) {
      bar.done();
      throw new CliError(`${(err as Error).message}\n  stopped after ${count(tally.sent, 'event')} sent (${tally.accepted} accepted, ${tally.duplicates} duplicates, ${tally.refused} refused); sending the same input again is safe: what was taken comes back as duplicates`);
    }
  };
  try {
    for await (const item of readEvents(input, name, (bytes) => bar.update(bytes, tally.sent))) {
      if (item instanceof BadLine) {
        badLines += 1;
        bar.note(`${name} line ${item.line}: not valid JSON, not sent: ${item.message}`);
        continue;
      }
      read += 1;
      batch.push(item);
      if (batch.length >= size) await flush();
    }
  } catch (err) {
    // The input stopped parsing: send what was read before, then say where.
    await flush();
    bar.done();
    throw new CliError(`${(err as Error).message}\n  ${count(tally.sent, 'event')} before it sent (${tally.accepted} accepted, ${tally.duplicates} duplicates, ${tally.refused} refused)`);
  }
  await flush();
  bar.done();
  if (read === 0 && badLines === 0) throw new CliError('no events to send');
  const seconds = (Date.now() - started) / 1000;
  process.stdout.write(
    `sent ${count(tally.sent, 'event')} in ${seconds.toFixed(2)} s: ${tally.accepted} accepted, ${count(tally.duplicates, 'duplicate')}, ` +
      `${tally.refused} refused, ${count(tally.runs, 'run')} planned${badLines > 0 ? `; ${count(badLines, 'line')} not valid JSON` : ''}\n`,
  );
  if (tally.refused > 0 || badLines > 0) {
    throw new CliError(
      `${tally.refused > 0 ? `${count(tally.refused, 'event')} refused (kept as dead letters: dispatcher dlq list)` : ''}${tally.refused > 0 && badLines > 0 ? ' and ' : ''}${badLines > 0 ? `${count(badLines, 'line')} not sent` : ''}`,
    );
  }
}

/** Statuses worth waiting for: the dispatcher is busy or its store is away for a moment. */
const RETRY = new Set([429, 503]);
const TRIES = 6;

/** Posts one batch, adds its outcome to the tally and reports each refused event; throws on what stops the send. */
async function post(connection: Connection, batch: Read[], tally: Tally, note: (line: string) => void): Promise<void> {
  const path = '/v1/events';
  const body = JSON.stringify(batch.map((r) => r.event));
  const where = (i: number) => (batch[i] === undefined ? '?' : `event ${batch[i].index + 1} (line ${batch[i].line})`);
  for (let attempt = 1; ; attempt++) {
    const response = await request(connection, path, { method: 'POST', headers: { 'content-type': 'application/cloudevents-batch+json' }, body });
    const answer = await answerOf(response);
    if (response.status === 202 || response.status === 207) {
      tally.sent += batch.length;
      tally.accepted += answer.accepted;
      tally.duplicates += answer.duplicates;
      tally.refused += answer.refused ?? 0;
      for (const e of answer.events as Array<{ index: number; status: string; runs?: string[]; code?: string; message?: string; dead_letter?: string }>) {
        tally.runs += e.runs?.length ?? 0;
        if (e.status === 'refused') note(`${where(e.index)}: refused, ${e.code}: ${stripIndex(e.message ?? '', e.index)} (dead letter ${e.dead_letter})`);
      }
      return;
    }
    if (RETRY.has(response.status) && attempt < TRIES) {
      const wait = Math.min(Number(response.headers.get('retry-after')) || 2 ** attempt / 2, 30);
      note(`the dispatcher answered ${response.status}; trying again in ${wait}s`);
      await new Promise((r) => setTimeout(r, wait * 1000));
      continue;
    }
    // The batch as a whole refused (every event bad, too large, not a batch): counted, reported, and the send goes on.
    if (response.status === 400 || response.status === 413 || response.status === 415) {
      tally.sent += batch.length;
      tally.refused += batch.length;
      const problems: Array<{ pointer: string; message: string }> = answer?.problems ?? [];
      note(`${where(0)} to ${where(batch.length - 1)}: ${count(batch.length, 'event')} refused, ${answer?.code ?? response.status}: ${answer?.message ?? String(answer).slice(0, 200)}`);
      for (const p of problems.slice(0, 20)) {
        const index = /^\/(\d+)/.exec(p.pointer);
        note(`  ${index === null ? '' : `${where(Number(index[1]))}: `}${index === null ? p.pointer || '/' : p.pointer.slice(index[0].length) || '/'}: ${p.message}`);
      }
      if (problems.length > 20) note(`  … and ${problems.length - 20} more`);
      return;
    }
    throw answerError(connection, 'POST', path, response.status, answer);
  }
}

/** A refused event's message points into the batch (`/3/data/x: …`); the line is said already. */
function stripIndex(message: string, index: number): string {
  const prefix = `/${index}`;
  return message.startsWith(prefix) ? message.slice(prefix.length) || '/' : message;
}
