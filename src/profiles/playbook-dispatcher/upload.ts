/**
 * Reading a result upload: the file a host (Ansible Runner, `playbook`) or Satellite (`playbook-sat`) sends
 * when a run progresses. The file may be plain JSON lines, gzip or xz, whatever its content type says, so the
 * format is told by its first bytes. Every line is one job event checked against its schema; one bad line
 * refuses the whole upload, as the original does, so a run never sees half a file.
 */

import { gunzipSync } from 'node:zlib';
import { decompressSync } from '@napi-rs/lzma/xz';
import { DispatcherError } from '../../core/errors.js';
import { describeSchemaError, validateRunnerEvent, validateSatelliteEvent } from './schemas.js';

export type UploadKind = 'playbook' | 'playbook-sat';

/** An Ansible Runner job event: the fields the dispatcher reads; the rest is kept as sent. */
export interface RunnerEvent {
  event: string;
  uuid: string;
  counter: number;
  stdout?: string | null;
  start_line: number;
  end_line: number;
  event_data?: {
    playbook?: string;
    playbook_uuid?: string;
    host?: string;
    crc_dispatcher_correlation_id?: string;
    crc_dispatcher_error_code?: string;
    crc_dispatcher_error_details?: string;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

/** A Satellite job event (protocol version 3 and later). */
export interface SatelliteEvent {
  type: 'playbook_run_update' | 'playbook_run_finished' | 'playbook_run_completed';
  version: number;
  correlation_id: string;
  sequence?: number;
  host?: string;
  console?: string;
  status?: 'success' | 'failure' | 'canceled';
  connection_code?: number | null;
  execution_code?: number | null;
  satellite_connection_code?: number;
  satellite_connection_error?: string;
  satellite_infrastructure_code?: number | null;
  satellite_infrastructure_error?: string;
  [key: string]: unknown;
}

export type ParsedUpload =
  | { kind: 'playbook'; events: RunnerEvent[]; correlationId: string }
  | { kind: 'playbook-sat'; events: SatelliteEvent[]; correlationId: string };

export interface UploadLimits {
  /** Largest upload accepted, as received (the original's `artifact.max.size`). */
  maxBytes: number;
  /** Largest upload once decompressed: a small compressed file must not fill memory. */
  maxDecompressedBytes: number;
  /** From this decompressed size on, long outputs are cut (the original's `artifact.max.kafka.message.size`). */
  maxMessageBytes: number;
  /** Longest stdout/console kept when cutting (`artifact.max.stdout.field.size`). */
  maxStdoutField: number;
  /** Runner lines after this index lose their stdout when cutting (`artifact.truncate.stdout.field.after.lines`). */
  truncateAfterLines: number;
}

export const DEFAULT_UPLOAD_LIMITS: Readonly<UploadLimits> = Object.freeze({
  maxBytes: 1024 * 1024,
  maxDecompressedBytes: 64 * 1024 * 1024,
  maxMessageBytes: 1024 * 1024,
  maxStdoutField: 1024,
  truncateAfterLines: 500,
});

const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

function tooLarge(max: number): DispatcherError {
  return new DispatcherError('payload_too_large', `The upload is larger than ${max} bytes once decompressed`);
}

/**
 * The upload's content: gunzipped or un-xz'd when its first bytes say so, else as is. Refuses a corrupt
 * compressed file (invalid_upload) and one that grows beyond `maxDecompressed` bytes (payload_too_large).
 */
export function decompress(bytes: Buffer, maxDecompressed: number = DEFAULT_UPLOAD_LIMITS.maxDecompressedBytes): Buffer {
  if (bytes.length >= GZIP_MAGIC.length && bytes.subarray(0, GZIP_MAGIC.length).equals(GZIP_MAGIC)) {
    try {
      // zlib stops at maxOutputLength, so a gzip bomb never gets to allocate its full size.
      const out = gunzipSync(bytes, { maxOutputLength: maxDecompressed + 1 });
      if (out.length > maxDecompressed) throw tooLarge(maxDecompressed);
      return out;
    } catch (err) {
      if (err instanceof DispatcherError) throw err;
      if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw tooLarge(maxDecompressed);
      throw new DispatcherError('invalid_upload', `The upload is not a valid gzip file: ${(err as Error).message}`, { cause: err });
    }
  }
  if (bytes.length >= XZ_MAGIC.length && bytes.subarray(0, XZ_MAGIC.length).equals(XZ_MAGIC)) {
    const declared = xzDeclaredSize(bytes);
    // The xz index states the uncompressed size up front; a file claiming too much is refused unread.
    if (declared !== null && declared > maxDecompressed) throw tooLarge(maxDecompressed);
    let out: Buffer;
    try {
      out = decompressSync(bytes);
    } catch (err) {
      throw new DispatcherError('invalid_upload', `The upload is not a valid xz file: ${(err as Error).message}`, { cause: err });
    }
    if (out.length > maxDecompressed) throw tooLarge(maxDecompressed);
    return out;
  }
  return bytes;
}

/** A multibyte integer of the xz format at `pos`: its value and the position after it, or null. */
function xzVarint(buf: Buffer, pos: number): [number, number] | null {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 9; i++) {
    const b = buf[pos + i];
    if (b === undefined) return null;
    value += (b & 0x7f) * scale;
    scale *= 128;
    if ((b & 0x80) === 0) return [value, pos + i + 1];
  }
  return null;
}

/**
 * The total uncompressed size the indexes of every xz stream in the file declare (streams may be concatenated,
 * with zero padding between them), or null when they cannot be read (the decoder then reports what is wrong).
 * Read from the end: each stream's footer points back at its index, whose records give the blocks' sizes.
 */
export function xzDeclaredSize(buf: Buffer): number | null {
  let end = buf.length;
  let total = 0;
  while (end > 0) {
    // Stream padding: zero bytes in groups of four.
    while (end >= 4 && buf.readUInt32LE(end - 4) === 0) end -= 4;
    if (end === 0) break;
    const stream = xzStream(buf, end);
    if (stream === null) return null;
    total += stream.uncompressed;
    end = stream.start;
  }
  return total;
}

/** The xz stream that ends at `end`: where it starts and what its index declares, or null. */
function xzStream(buf: Buffer, end: number): { start: number; uncompressed: number } | null {
  if (end < 24) return null;
  const footer = end - 12;
  if (buf[footer + 10] !== 0x59 || buf[footer + 11] !== 0x5a) return null;
  const backwardSize = (buf.readUInt32LE(footer + 4) + 1) * 4;
  const index = footer - backwardSize;
  if (index < 12 || buf[index] !== 0x00) return null;
  const count = xzVarint(buf, index + 1);
  if (count === null) return null;
  let pos = count[1];
  let uncompressed = 0;
  let blocks = 0;
  for (let i = 0; i < count[0]; i++) {
    const unpadded = xzVarint(buf, pos);
    if (unpadded === null) return null;
    const size = xzVarint(buf, unpadded[1]);
    if (size === null) return null;
    uncompressed += size[0];
    blocks += Math.ceil(unpadded[0] / 4) * 4;
    pos = size[1];
  }
  const start = index - blocks - 12;
  if (start < 0) return null;
  return { start, uncompressed };
}

function invalid(message: string): DispatcherError {
  return new DispatcherError('invalid_upload', message);
}

function cut(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}...` : text;
}

/**
 * An upload as events of its kind, with its run's correlation id. Refuses (invalid_upload) an upload with a
 * line that is not JSON or fails its schema, one without events, and one without a correlation id; refuses
 * (payload_too_large) one over `limits.maxBytes`; an empty one is invalid_upload.
 */
export function parseUpload(kind: UploadKind, bytes: Buffer, limits: UploadLimits = DEFAULT_UPLOAD_LIMITS): ParsedUpload {
  // An empty upload is a bad file rather than a large one.
  if (bytes.length === 0) throw invalid('The upload is empty (size 0)');
  if (bytes.length > limits.maxBytes) throw new DispatcherError('payload_too_large', `The upload is larger than ${limits.maxBytes} bytes`);
  const data = decompress(bytes, limits.maxDecompressedBytes);
  const validate = kind === 'playbook' ? validateRunnerEvent : validateSatelliteEvent;
  const events: Record<string, unknown>[] = [];
  const lines = data.toString('utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    if (line.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      throw invalid(`Line ${i + 1} is not valid JSON: ${(err as Error).message}`);
    }
    if (!validate(value)) throw invalid(`Line ${i + 1} is not a valid ${kind} event: ${describeSchemaError(validate.errors)}`);
    events.push(value as Record<string, unknown>);
  }
  if (events.length === 0) throw invalid('No events found');

  // Long outputs are cut only for large uploads, so that the message carrying the events stays deliverable.
  const truncate = data.length >= limits.maxMessageBytes;
  if (kind === 'playbook') {
    const runner = events as RunnerEvent[];
    const start = runner.find((e) => e.event === 'executor_on_start');
    const correlationId = start?.event_data?.crc_dispatcher_correlation_id;
    if (typeof correlationId !== 'string' || correlationId === '') throw invalid('Correlation id not found');
    if (truncate) {
      let marked = false;
      runner.forEach((e, index) => {
        // The last two lines (the recap and what follows) stay whole: they tell how the run ended.
        if (index > limits.truncateAfterLines && index < runner.length - 2) {
          e.stdout = marked ? '' : 'Truncated...';
          marked = true;
        } else if (typeof e.stdout === 'string') {
          e.stdout = cut(e.stdout, limits.maxStdoutField);
        }
      });
    }
    return { kind, events: runner, correlationId };
  }
  const sat = events as SatelliteEvent[];
  const correlationId = sat[0]?.correlation_id;
  if (typeof correlationId !== 'string' || correlationId === '') throw invalid('Correlation id not found');
  if (truncate) {
    for (const e of sat) if (typeof e.console === 'string') e.console = cut(e.console, limits.maxStdoutField);
  }
  return { kind, events: sat, correlationId };
}
