/**
 * `dispatcher send [file]`: events from a file or standard input, as one JSON event, a JSON array, or JSON
 * Lines, posted in batches. A progress bar on a terminal, and a summary at the end.
 */

import { createReadStream } from 'node:fs';
import { api } from './client.js';
import { CliError, integerOption } from './output.js';

export async function readEvents(file: string | undefined): Promise<unknown[]> {
  const stream = file === undefined || file === '-' ? process.stdin : createReadStream(file);
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of stream) chunks.push(chunk as Buffer);
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${(err as Error).message}`);
  }
  const whole = Buffer.concat(chunks).toString('utf8');
  const text = whole.trim();
  if (text === '') return [];
  if (text.startsWith('[')) {
    try {
      return JSON.parse(text) as unknown[];
    } catch (err) {
      throw new CliError(`${file ?? 'stdin'}: not valid JSON: ${(err as Error).message}`);
    }
  }
  const events: unknown[] = [];
  // A single pretty-printed object, or JSON Lines.
  try {
    return [JSON.parse(text)];
  } catch {
    // fall through to JSON Lines
  }
  let n = 0;
  // Numbered as in the file (blank lines included), so that an error names the line an editor shows.
  for (const line of whole.split(/\r?\n/)) {
    n += 1;
    if (line.trim() === '') continue;
    try {
      events.push(JSON.parse(line));
    } catch (err) {
      throw new CliError(`${file ?? 'stdin'} line ${n}: not valid JSON: ${(err as Error).message}`);
    }
  }
  return events;
}

export async function sendCommand(file: string | undefined, options: { url: string; batch: string; progress: boolean }): Promise<void> {
  const size = integerOption('batch', options.batch, 1);
  const events = await readEvents(file);
  if (events.length === 0) throw new CliError('no events to send');
  const bar = options.progress && process.stderr.isTTY ? progressBar(events.length) : undefined;
  let accepted = 0;
  let duplicates = 0;
  let runs = 0;
  const started = Date.now();
  for (let i = 0; i < events.length; i += size) {
    const batch = events.slice(i, i + size);
    let body: { accepted: number; duplicates: number; events: Array<{ runs: string[] }> };
    try {
      body = await api(options.url, '/v1/events', {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents-batch+json' },
        body: JSON.stringify(batch),
      });
    } catch (err) {
      bar?.done();
      throw new CliError(`events ${i + 1}–${i + batch.length} were refused (${accepted} accepted before): ${(err as Error).message}`);
    }
    accepted += body.accepted;
    duplicates += body.duplicates;
    for (const e of body.events) runs += e.runs.length;
    bar?.update(i + batch.length);
  }
  bar?.done();
  const seconds = (Date.now() - started) / 1000;
  process.stdout.write(
    `sent ${events.length} events in ${seconds.toFixed(2)} s: ${accepted} accepted, ${duplicates} duplicates, ${runs} runs planned\n`,
  );
}

function progressBar(total: number) {
  const width = 30;
  return {
    update(done: number) {
      const filled = Math.round((done / total) * width);
      process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}`);
    },
    done() {
      process.stderr.write('\n');
    },
  };
}
