/**
 * CloudEvents 1.0 envelope checks (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md).
 *
 * > REQUIRED attributes: id (non-empty String), source (non-empty URI-reference), specversion ("1.0"),
 * > type (non-empty String). OPTIONAL: datacontenttype (RFC 2046), dataschema (URI), subject (non-empty
 * > String), time (RFC 3339 Timestamp).
 * > CloudEvents attribute names MUST consist of lower-case letters ('a' to 'z') or digits ('0' to '9') from
 * > the ASCII character set.
 * > (JSON format) `data` and `data_base64` MUST NOT both be present.
 *
 * Our extensions: `topic` (dotted routing key), `correlationid`, `tenant`, all strings.
 */

import type { ErrorProblem } from './errors.js';

const NAME = /^[a-z0-9]+$/;
// RFC 3339 date-time, as the spec requires for `time`.
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const TOPIC = /^[^.\s]+(\.[^.\s]+)*$/;
const STRING_ATTRIBUTES = ['id', 'source', 'type', 'subject', 'datacontenttype', 'dataschema', 'topic', 'correlationid', 'tenant'] as const;
const NON_EMPTY = new Set(['id', 'source', 'type', 'subject', 'topic']);

/**
 * Checks one candidate; returns the problems found (empty when valid). `pointer` is where the candidate sits
 * in the request (`''` for a single event, `/3` for the fourth of a batch).
 */
export function checkEnvelope(candidate: unknown, pointer: string): ErrorProblem[] {
  const problems: ErrorProblem[] = [];
  if (candidate === null || typeof candidate !== 'object' || Array.isArray(candidate)) {
    problems.push({ pointer, message: 'an event must be a JSON object' });
    return problems;
  }
  const e = candidate as Record<string, unknown>;
  if (e.specversion !== '1.0') {
    problems.push({ pointer: `${pointer}/specversion`, message: e.specversion === undefined ? 'required attribute is missing' : 'must be "1.0"' });
  }
  for (const name of ['id', 'source', 'type'] as const) {
    if (e[name] === undefined) problems.push({ pointer: `${pointer}/${name}`, message: 'required attribute is missing' });
  }
  for (const name of STRING_ATTRIBUTES) {
    const v = e[name];
    if (v === undefined) continue;
    if (typeof v !== 'string') problems.push({ pointer: `${pointer}/${name}`, message: 'must be a string' });
    else if (NON_EMPTY.has(name) && v.length === 0) problems.push({ pointer: `${pointer}/${name}`, message: 'must not be empty' });
  }
  if (e.time !== undefined && (typeof e.time !== 'string' || !RFC3339.test(e.time) || Number.isNaN(Date.parse(e.time)))) {
    problems.push({ pointer: `${pointer}/time`, message: 'must be an RFC 3339 timestamp' });
  }
  if (typeof e.topic === 'string' && e.topic.length > 0 && !TOPIC.test(e.topic)) {
    problems.push({ pointer: `${pointer}/topic`, message: 'must be words separated by single dots' });
  }
  if (e.data !== undefined && e.data_base64 !== undefined) {
    problems.push({ pointer: `${pointer}/data_base64`, message: 'data and data_base64 must not both be present' });
  }
  if (e.data_base64 !== undefined && (typeof e.data_base64 !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(e.data_base64))) {
    problems.push({ pointer: `${pointer}/data_base64`, message: 'must be a base64 string' });
  }
  for (const key of Object.keys(e)) {
    if (key === 'data' || key === 'data_base64') continue;
    if (!NAME.test(key)) {
      problems.push({ pointer: `${pointer}/${escapePointer(key)}`, message: 'attribute names must be lower-case letters and digits' });
      continue;
    }
    const v = e[key];
    if (v !== null && typeof v === 'object') {
      problems.push({ pointer: `${pointer}/${key}`, message: 'extension attributes must be strings, numbers or booleans' });
    }
  }
  return problems;
}

/** RFC 6901: `~` → `~0`, `/` → `~1`. */
export function escapePointer(token: string): string {
  return token.replace(/~/g, '~0').replace(/\//g, '~1');
}
