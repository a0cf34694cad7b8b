/**
 * `upload_attachment`'s second file source (notes §5.3): the object `s3://{file_s3_bucket}/{file_name}` of an
 * S3-compatible store (`S3_URL`, MinIO and the like: path-style addressing), read with the configured access
 * and secret key, at most `maxBytes` of it. The key pair is passed as given, as the original does; an empty pair
 * signs with an empty key and the store answers for it (an access error, not the SDK's provider chain).
 *
 * Failures are coded: a missing bucket or object and a refused access are `action_failed` (a retry will not
 * mend them), an object over the limit `payload_too_large`, an unreachable or failing store (5xx, refused,
 * reset, no answer in time) `network_error`; all say "Failed to open file from S3: s3://bucket/key: <reason>",
 * the original's words.
 */

import { GetObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { DispatcherError } from '../../core/errors.js';

export interface S3Settings {
  /** The store's endpoint, e.g. `http://localhost:9000`. */
  url: string;
  accessKey: string;
  secretKey: string;
  /** The region requests are signed for (default `us-east-1`). */
  region?: string;
  /** Longest wait for a connection, and for each answer or piece of the body (default 30 s). */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** S3 error names that mean the bucket or object is not there. */
const MISSING = new Set(['NoSuchKey', 'NoSuchBucket', 'NotFound']);
/** S3 error names that mean the credentials are refused; a retry with the same ones will not help. */
const REFUSED = new Set(['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken', 'ExpiredToken', 'AllAccessDisabled', 'AccountProblem']);

export class S3Files {
  readonly #client: S3Client;

  constructor(settings: S3Settings) {
    const timeoutMs = settings.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#client = new S3Client({
      endpoint: settings.url,
      forcePathStyle: true,
      region: settings.region ?? 'us-east-1',
      credentials: { accessKeyId: settings.accessKey, secretAccessKey: settings.secretKey },
      // One retry at most: a store that is down should fail the attempt soon, and the runner retries the run.
      maxAttempts: 2,
      requestHandler: { connectionTimeout: timeoutMs, requestTimeout: timeoutMs },
      // Checksums only where the operation requires them: S3-compatible stores differ in what they support.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  /** The object's bytes; more than `maxBytes` is refused (`payload_too_large`) without reading it all. */
  async get(bucket: string, key: string, options: { maxBytes: number; signal?: AbortSignal }): Promise<Buffer> {
    const where = `s3://${bucket}/${key}`;
    const fail = (reason: string) => `Failed to open file from S3: ${where}: ${reason}`;
    if (bucket === '') throw new DispatcherError('invalid_event', fail('the bucket name is empty'));
    if (key === '') throw new DispatcherError('invalid_event', fail('the key is empty'));
    const { maxBytes, signal } = options;
    if (!(Number.isSafeInteger(maxBytes) && maxBytes >= 0)) throw new RangeError(`maxBytes must be a non-negative integer, not ${maxBytes}`);
    const tooLarge = (size: string) => new DispatcherError('payload_too_large', fail(`the object is ${size}, more than the limit of ${maxBytes} bytes`));
    const aborted = (err?: unknown) => new DispatcherError('attempt_timeout', fail('aborted before it was read'), err === undefined ? {} : { cause: err });
    if (isAborted(signal)) throw aborted();

    let body: AsyncIterable<Uint8Array> & { destroy?: (err?: Error) => void };
    let length: number | undefined;
    try {
      const out = await this.#client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), signal === undefined ? {} : { abortSignal: signal });
      if (out.Body === undefined) return Buffer.alloc(0);
      body = out.Body as typeof body;
      length = out.ContentLength;
    } catch (err) {
      if (isAborted(signal)) throw aborted(err);
      throw failure(err, fail);
    }

    if (length !== undefined && length > maxBytes) {
      body.destroy?.();
      throw tooLarge(`${length} bytes`);
    }
    const chunks: Buffer[] = [];
    let read = 0;
    try {
      for await (const chunk of body) {
        read += chunk.byteLength;
        if (read > maxBytes) {
          body.destroy?.();
          throw tooLarge(`over ${read} bytes (read so far)`);
        }
        chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      }
    } catch (err) {
      if (err instanceof DispatcherError) throw err;
      if (isAborted(signal)) throw aborted(err);
      throw new DispatcherError('network_error', fail(`the body broke off after ${read} bytes: ${reasonOf(err)}`), { cause: err });
    }
    return Buffer.concat(chunks, read);
  }

  close(): void {
    this.#client.destroy();
  }
}

/** A function, not an inline test: TypeScript would keep `aborted` narrowed to false after the first check. */
function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

function reasonOf(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  const text = err.message !== '' ? err.message : err.name;
  return typeof code === 'string' && !text.includes(code) ? `${code} ${text}` : text;
}

/** A failed GetObject, coded. */
function failure(err: unknown, fail: (reason: string) => string): DispatcherError {
  if (err instanceof S3ServiceException) {
    const status = err.$metadata.httpStatusCode;
    const reason = `${err.name}${status === undefined ? '' : ` (HTTP ${status})`}${err.message !== '' && err.message !== err.name && err.message !== 'UnknownError' ? `: ${err.message}` : ''}`;
    const http = status === undefined ? {} : { httpStatus: status };
    if (MISSING.has(err.name) || status === 404) return new DispatcherError('action_failed', fail(reason), { retryable: false, cause: err, ...http });
    if (REFUSED.has(err.name) || status === 401 || status === 403) return new DispatcherError('action_failed', fail(reason), { retryable: false, cause: err, ...http });
    if (status !== undefined && (status >= 500 || status === 408 || status === 429)) return new DispatcherError('network_error', fail(reason), { cause: err, ...http });
    if (status !== undefined) return new DispatcherError('action_failed', fail(reason), { retryable: false, cause: err, ...http });
  }
  // No answer: refused, reset, timed out, a name that does not resolve.
  return new DispatcherError('network_error', fail(reasonOf(err)), { cause: err });
}
