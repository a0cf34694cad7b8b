import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { compressSync } from '@napi-rs/lzma/xz';
import { describe, it, expect } from 'vitest';
import { DispatcherError } from '../src/core/errors.js';
import { DEFAULT_UPLOAD_LIMITS, decompress, parseUpload, xzDeclaredSize, type RunnerEvent, type UploadKind } from '../src/profiles/playbook-dispatcher/upload.js';

const seed = (path: string): Buffer => readFileSync(new URL(`./fixtures/playbook-dispatcher/${path}`, import.meta.url));

const CID = '00000000-0000-0000-0000-000000000000';
const START = `{"event": "executor_on_start", "uuid": "4533e4d7-5034-4baf-b578-821305c96da4", "counter": -1, "stdout": "", "start_line": 0, "end_line": 0, "event_data": {"crc_dispatcher_correlation_id": "${CID}"}}`;
const OK = '{"event": "runner_on_ok", "uuid": "7ea01103-2b54-4128-a838-52d0113e455d", "counter": 1, "stdout": "ok", "start_line": 0, "end_line": 1}';
const SAT = '{"type": "playbook_run_update", "version": 3, "correlation_id": "0465783c-2e36-4e57-8514-c2cb962d323a", "sequence": 0, "host": "2798f2ab-35b2-4d4e-af0c-0478dcb4a324", "console": ""}';

function refusal(kind: UploadKind, text: string | Buffer): DispatcherError {
  try {
    parseUpload(kind, typeof text === 'string' ? Buffer.from(text) : text, DEFAULT_UPLOAD_LIMITS);
  } catch (err) {
    expect(err).toBeInstanceOf(DispatcherError);
    return err as DispatcherError;
  }
  throw new Error('the upload was accepted');
}

describe('upload size', () => {
  it('refuses an upload of size 0', () => {
    expect(refusal('playbook', Buffer.alloc(0)).code).toBe('invalid_upload');
  });

  it('refuses an upload of 128 MiB', () => {
    expect(refusal('playbook', Buffer.alloc(128 * 1024 * 1024, 0x20)).code).toBe('payload_too_large');
  });

  it('refuses a gzip upload that grows beyond the decompressed limit', () => {
    const bomb = gzipSync(Buffer.alloc(4096, 0x20));
    expect(() => decompress(bomb, 1000)).toThrow(expect.objectContaining({ code: 'payload_too_large' }));
    expect(decompress(bomb, 4096)).toHaveLength(4096);
  });

  it('reads the size every stream of an xz file declares, so that a bomb hidden before a small stream is refused unread', () => {
    const big = compressSync(Buffer.alloc(300_000, 0x00));
    const small = compressSync(Buffer.from('x'));
    expect(xzDeclaredSize(small)).toBe(1);
    expect(xzDeclaredSize(Buffer.concat([big, small]))).toBe(300_001);
    // Stream padding (zeros, four at a time) between and after the streams.
    expect(xzDeclaredSize(Buffer.concat([big, Buffer.alloc(8), small, Buffer.alloc(4)]))).toBe(300_001);
    expect(xzDeclaredSize(Buffer.concat([Buffer.from('junk'), small]))).toBeNull();
  });

  it('refuses an xz upload that grows beyond the decompressed limit', () => {
    const bomb = compressSync(Buffer.alloc(4096, 0x20));
    expect(() => decompress(bomb, 1000)).toThrow(expect.objectContaining({ code: 'payload_too_large' }));
    expect(decompress(bomb, 4096)).toHaveLength(4096);
  });
});

describe('invalid uploads', () => {
  const cases: Array<[string, UploadKind, string, RegExp]> = [
    ['whitespace', 'playbook', '   \t  ', /No events found/],
    ['newlines only', 'playbook', '\n\n\n', /No events found/],
    ['a trailing brace', 'playbook', `${START}}`, /Line 1 .*JSON/],
    ['a missing uuid', 'playbook', `${START}\n{"event": "runner_on_ok", "counter": 1, "start_line": 0, "end_line": 1}`, /Line 2 .*uuid/],
    ['a bad uuid', 'playbook', START.replace('4533e4d7-', 'nope-'), /Line 1 .*uuid/],
    ['a Satellite event of an unknown type', 'playbook-sat', SAT.replace('playbook_run_update', 'playbook_run_started'), /Line 1 .*type|allowed values/],
    ['a Satellite host that is not a UUID', 'playbook-sat', SAT.replace('"2798f2ab-35b2-4d4e-af0c-0478dcb4a324"', '"localhost"'), /Line 1 .*host/],
    ['a Runner upload without executor_on_start', 'playbook', OK, /Correlation id not found/],
    ['a Satellite version below 3', 'playbook-sat', SAT.replace('"version": 3', '"version": 2'), /Line 1 .*version/],
    ['a Satellite sequence no database integer holds', 'playbook-sat', SAT.replace('"sequence": 0', '"sequence": 1e300'), /Line 1 .*sequence/],
  ];
  for (const [name, kind, text, message] of cases) {
    it(`refuses ${name}`, () => {
      const err = refusal(kind, text);
      expect(err.code).toBe('invalid_upload');
      expect(err.message).toMatch(message);
    });
  }

  it('names the line number after skipped blank lines', () => {
    expect(refusal('playbook', `${START}\n\n${OK}\nnot json\n`).message).toMatch(/^Line 4 /);
  });

  it('refuses a corrupt gzip file as invalid_upload', () => {
    const gz = seed('examples/events-success.jsonl.gz');
    const broken = Buffer.concat([gz.subarray(0, 20), Buffer.alloc(40, 0xff)]);
    expect(refusal('playbook', broken).code).toBe('invalid_upload');
  });

  it('refuses a corrupt xz file as invalid_upload', () => {
    const xz = seed('examples/events-success.jsonl.xz');
    const broken = Buffer.concat([xz.subarray(0, 30), Buffer.alloc(40, 0x00)]);
    expect(refusal('playbook', broken).code).toBe('invalid_upload');
  });
});

describe('valid uploads', () => {
  it('accepts several events with extra attributes', () => {
    const extra = OK.replace('"counter": 1', '"counter": 1, "runner_ident": "x", "event_data": {"host": "h1", "res": {"a": 1}}');
    const parsed = parseUpload('playbook', Buffer.from(`${START}\n${extra}\n`), DEFAULT_UPLOAD_LIMITS);
    expect(parsed.kind).toBe('playbook');
    expect(parsed.events).toHaveLength(2);
    expect(parsed.correlationId).toBe(CID);
    expect((parsed.events[1] as RunnerEvent).runner_ident).toBe('x');
  });

  it('reads events-success.jsonl plain, gzip and xz as the same 7 events', () => {
    const plain = parseUpload('playbook', seed('examples/events-success.jsonl'), DEFAULT_UPLOAD_LIMITS);
    const gz = parseUpload('playbook', seed('examples/events-success.jsonl.gz'), DEFAULT_UPLOAD_LIMITS);
    const xz = parseUpload('playbook', seed('examples/events-success.jsonl.xz'), DEFAULT_UPLOAD_LIMITS);
    expect(plain.events).toHaveLength(7);
    expect(plain.events.map((e) => (e as RunnerEvent).counter)).toEqual([-1, 1, 2, 3, 4, 5, 6]);
    expect(gz.events).toEqual(plain.events);
    expect(xz.events).toEqual(plain.events);
    expect(gz.correlationId).toBe(CID);
  });

  it('takes the correlation id of the first executor_on_start event', () => {
    const other = START.replace(CID, '11111111-2222-3333-4444-555555555555');
    expect(parseUpload('playbook', Buffer.from(`${OK}\n${START}\n${other}`), DEFAULT_UPLOAD_LIMITS).correlationId).toBe(CID);
  });

  it('takes the Satellite correlation id of the first event', () => {
    const parsed = parseUpload('playbook-sat', seed('test-fixtures/satellite/sat-test-events2.jsonl'), DEFAULT_UPLOAD_LIMITS);
    expect(parsed.events).toHaveLength(3);
    expect(parsed.correlationId).toBe('0465783c-2e36-4e57-8514-c2cb962d323a');
  });

  it('refuses a Runner upload whose executor_on_start has no correlation id', () => {
    expect(refusal('playbook', START.replace(`"crc_dispatcher_correlation_id": "${CID}"`, '"x": 1')).message).toBe('Correlation id not found');
  });
});

describe('truncation of large uploads', () => {
  const long = 'x'.repeat(2000);
  const line = (i: number): string =>
    JSON.stringify({ event: i === 0 ? 'executor_on_start' : 'runner_on_ok', uuid: '7ea01103-2b54-4128-a838-52d0113e455d', counter: i, stdout: long, start_line: i, end_line: i + 1, event_data: i === 0 ? { crc_dispatcher_correlation_id: CID } : {} });
  const text = Array.from({ length: 510 }, (_, i) => line(i)).join('\n');

  it('cuts stdout and blanks Runner lines after 500, except the last two', () => {
    const parsed = parseUpload('playbook', Buffer.from(text), { ...DEFAULT_UPLOAD_LIMITS, maxBytes: 10_000_000, maxMessageBytes: 1000 });
    const out = parsed.events.map((e) => (e as RunnerEvent).stdout);
    const cutText = `${'x'.repeat(1024)}...`;
    expect(out.slice(0, 501).every((s) => s === cutText)).toBe(true);
    expect(out[501]).toBe('Truncated...');
    expect(out.slice(502, 508)).toEqual(['', '', '', '', '', '']);
    expect(out[508]).toBe(cutText);
    expect(out[509]).toBe(cutText);
  });

  it('keeps everything when the upload is below the message size', () => {
    const parsed = parseUpload('playbook', Buffer.from(text), { ...DEFAULT_UPLOAD_LIMITS, maxBytes: 10_000_000, maxMessageBytes: 10_000_000 });
    expect(parsed.events.every((e) => (e as RunnerEvent).stdout === long)).toBe(true);
  });

  it('cuts Satellite console output', () => {
    const sat = SAT.replace('"console": ""', `"console": "${long}"`);
    const parsed = parseUpload('playbook-sat', Buffer.from(`${sat}\n${SAT}`), { ...DEFAULT_UPLOAD_LIMITS, maxMessageBytes: 100 });
    expect(parsed.events.map((e) => e.console)).toEqual([`${'x'.repeat(1024)}...`, '']);
  });
});
