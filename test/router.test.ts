/** The routing index: type globs, AMQP topics, EventBridge content patterns, explain, invalid patterns. */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { compileContentPattern } from '../src/core/content-pattern.js';
import { DispatcherError } from '../src/core/errors.js';
import { buildRouteIndex, type RouteMatchSpec } from '../src/core/router.js';
import { TopicTrie, parseTopicPattern } from '../src/core/topic.js';
import type { CloudEvent } from '../src/core/types.js';

function ev(fields: Partial<CloudEvent> = {}): CloudEvent {
  return { specversion: '1.0', id: 'e-1', source: 'urn:test', type: 'alert.raised', ...fields } as CloudEvent;
}

/** Whether a route with this match takes the event; also checks that explain says the same. */
function takes(match: Record<string, unknown> | undefined, event: CloudEvent): boolean {
  const index = buildRouteIndex([{ name: 'r', match }]);
  const matched = index.match(event).length === 1;
  expect(index.explain(event)[0]!.matched).toBe(matched);
  return matched;
}

/** Whether `data: pattern` takes an event with this data. */
function dataTakes(pattern: unknown, data: unknown): boolean {
  return takes({ data: pattern }, ev(data === undefined ? {} : { data }));
}

function configError(fn: () => unknown): DispatcherError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DispatcherError);
    expect((err as DispatcherError).code).toBe('config_invalid');
    return err as DispatcherError;
  }
  throw new Error('expected a config_invalid error');
}

describe('content patterns: literals', () => {
  it('matches strings by equality, any of the listed values', () => {
    expect(dataTakes({ severity: ['critical', 'major'] }, { severity: 'major' })).toBe(true);
    expect(dataTakes({ severity: ['critical', 'major'] }, { severity: 'minor' })).toBe(false);
    expect(dataTakes({ severity: ['critical'] }, { severity: 'Critical' })).toBe(false);
  });

  it('takes a scalar leaf as a list of one', () => {
    expect(dataTakes({ severity: 'critical' }, { severity: 'critical' })).toBe(true);
    expect(dataTakes({ severity: 'critical' }, { severity: 'low' })).toBe(false);
  });

  it('compares numbers numerically (5 equals 5.0) and never equal to strings', () => {
    const pattern = parseYaml('score: [5.0, 7]') as unknown;
    expect(dataTakes(pattern, JSON.parse('{"score": 5}'))).toBe(true);
    expect(dataTakes(pattern, JSON.parse('{"score": 5.00}'))).toBe(true);
    expect(dataTakes(pattern, { score: 7 })).toBe(true);
    expect(dataTakes(pattern, { score: '5' })).toBe(false);
    expect(dataTakes(pattern, { score: 6 })).toBe(false);
    expect(dataTakes({ code: ['5'] }, { code: 5 })).toBe(false);
  });

  it('matches booleans and null by equality; null is not missing', () => {
    expect(dataTakes({ ok: [true] }, { ok: true })).toBe(true);
    expect(dataTakes({ ok: [true] }, { ok: 'true' })).toBe(false);
    expect(dataTakes({ owner: [null] }, { owner: null })).toBe(true);
    expect(dataTakes({ owner: [null] }, {})).toBe(false);
    expect(dataTakes({ owner: [null] }, { owner: 'bob' })).toBe(false);
  });

  it('recurses into nested objects', () => {
    const pattern = { host: { name: ['db-1'], dc: { region: ['eu'] } } };
    expect(dataTakes(pattern, { host: { name: 'db-1', dc: { region: 'eu' } } })).toBe(true);
    expect(dataTakes(pattern, { host: { name: 'db-1', dc: { region: 'us' } } })).toBe(false);
    expect(dataTakes(pattern, { host: { name: 'db-1' } })).toBe(false);
    expect(dataTakes(pattern, { host: 'db-1' })).toBe(false);
  });

  it('requires every field of the pattern', () => {
    const pattern = { severity: ['critical'], team: ['noc'] };
    expect(dataTakes(pattern, { severity: 'critical', team: 'noc', extra: 1 })).toBe(true);
    expect(dataTakes(pattern, { severity: 'critical', team: 'sre' })).toBe(false);
  });
});

describe('content patterns: operators', () => {
  it('prefix and suffix, also ignoring case', () => {
    expect(dataTakes({ host: [{ prefix: 'db-' }] }, { host: 'db-7' })).toBe(true);
    expect(dataTakes({ host: [{ prefix: 'db-' }] }, { host: 'web-7' })).toBe(false);
    expect(dataTakes({ host: [{ prefix: 'db-' }] }, { host: 7 })).toBe(false);
    expect(dataTakes({ file: [{ suffix: '.png' }] }, { file: 'a/b.png' })).toBe(true);
    expect(dataTakes({ file: [{ suffix: '.png' }] }, { file: 'a/b.jpg' })).toBe(false);
    expect(dataTakes({ host: [{ prefix: { 'equals-ignore-case': 'DB-' } }] }, { host: 'db-7' })).toBe(true);
    expect(dataTakes({ file: [{ suffix: { 'equals-ignore-case': '.PNG' } }] }, { file: 'x.png' })).toBe(true);
    expect(dataTakes({ file: [{ suffix: { 'equals-ignore-case': '.PNG' } }] }, { file: 'x.gif' })).toBe(false);
  });

  it('equals-ignore-case', () => {
    expect(dataTakes({ state: [{ 'equals-ignore-case': 'ALARM' }] }, { state: 'alarm' })).toBe(true);
    expect(dataTakes({ state: [{ 'equals-ignore-case': 'ALARM' }] }, { state: 'alarms' })).toBe(false);
  });

  it('wildcard: * spans anything, \\* is a literal star', () => {
    const pattern = { path: [{ wildcard: 'dir/*/file-*.txt' }] };
    expect(dataTakes(pattern, { path: 'dir/a/b/file-1.txt' })).toBe(true);
    expect(dataTakes(pattern, { path: 'dir//file-.txt' })).toBe(true);
    expect(dataTakes(pattern, { path: 'dir/a/file-1.txtx' })).toBe(false);
    expect(dataTakes(pattern, { path: 'dir/a/file-1xtxt' })).toBe(false);
    expect(dataTakes({ s: [{ wildcard: 'a\\*b' }] }, { s: 'a*b' })).toBe(true);
    expect(dataTakes({ s: [{ wildcard: 'a\\*b' }] }, { s: 'axb' })).toBe(false);
  });

  it('anything-but: a value, a list, prefix, suffix, equals-ignore-case, wildcard', () => {
    expect(dataTakes({ state: [{ 'anything-but': 'ok' }] }, { state: 'alarm' })).toBe(true);
    expect(dataTakes({ state: [{ 'anything-but': 'ok' }] }, { state: 'ok' })).toBe(false);
    expect(dataTakes({ code: [{ 'anything-but': [200, 204] }] }, { code: 500 })).toBe(true);
    expect(dataTakes({ code: [{ 'anything-but': [200, 204] }] }, { code: 204 })).toBe(false);
    expect(dataTakes({ host: [{ 'anything-but': { prefix: 'test-' } }] }, { host: 'prod-1' })).toBe(true);
    expect(dataTakes({ host: [{ 'anything-but': { prefix: 'test-' } }] }, { host: 'test-1' })).toBe(false);
    expect(dataTakes({ file: [{ 'anything-but': { suffix: '.tmp' } }] }, { file: 'a.log' })).toBe(true);
    expect(dataTakes({ file: [{ 'anything-but': { suffix: '.tmp' } }] }, { file: 'a.tmp' })).toBe(false);
    expect(dataTakes({ env: [{ 'anything-but': { 'equals-ignore-case': ['DEV', 'Test'] } }] }, { env: 'dev' })).toBe(false);
    expect(dataTakes({ env: [{ 'anything-but': { 'equals-ignore-case': ['DEV', 'Test'] } }] }, { env: 'prod' })).toBe(true);
    expect(dataTakes({ env: [{ 'anything-but': { wildcard: 'stag*' } }] }, { env: 'staging' })).toBe(false);
    expect(dataTakes({ env: [{ 'anything-but': { wildcard: 'stag*' } }] }, { env: 'prod' })).toBe(true);
  });

  it('anything-but never matches a missing field, nor an object', () => {
    expect(dataTakes({ state: [{ 'anything-but': 'ok' }] }, { other: 1 })).toBe(false);
    expect(dataTakes({ state: [{ 'anything-but': 'ok' }] }, { state: { code: 'x' } })).toBe(false);
    expect(dataTakes({ state: [{ 'anything-but': 'ok' }] }, { state: null })).toBe(true);
    expect(dataTakes({ state: [{ 'anything-but': 'ok' }] }, undefined)).toBe(false);
  });

  it('numeric: every operator, ranges, numbers only', () => {
    const n = (cmp: unknown[], v: unknown): boolean => dataTakes({ v: [{ numeric: cmp }] }, { v });
    expect(n(['=', 3], 3)).toBe(true);
    expect(n(['=', 3], 3.5)).toBe(false);
    expect(n(['>', 3], 3)).toBe(false);
    expect(n(['>', 3], 3.01)).toBe(true);
    expect(n(['>=', 3], 3)).toBe(true);
    expect(n(['>=', 3], 2.99)).toBe(false);
    expect(n(['<', 3], 3)).toBe(false);
    expect(n(['<', 3], -10)).toBe(true);
    expect(n(['<=', 3], 3)).toBe(true);
    expect(n(['<=', 3], 4)).toBe(false);
    expect(n(['>', 0, '<=', 5], 5)).toBe(true);
    expect(n(['>', 0, '<=', 5], 0)).toBe(false);
    expect(n(['>', 0, '<=', 5], 5.5)).toBe(false);
    expect(n(['>=', 7], '9')).toBe(false);
    expect(n(['>=', 7], null)).toBe(false);
  });

  it('exists: true for any present value (null included), false for a missing one', () => {
    expect(dataTakes({ host: [{ exists: true }] }, { host: 'x' })).toBe(true);
    expect(dataTakes({ host: [{ exists: true }] }, { host: null })).toBe(true);
    expect(dataTakes({ host: [{ exists: true }] }, {})).toBe(false);
    expect(dataTakes({ host: [{ exists: false }] }, {})).toBe(true);
    expect(dataTakes({ host: [{ exists: false }] }, undefined)).toBe(true);
    expect(dataTakes({ host: [{ exists: false }] }, { host: 'x' })).toBe(false);
    expect(dataTakes({ host: { name: [{ exists: false }] } }, { host: {} })).toBe(true);
  });

  it('does not see inherited properties as fields', () => {
    expect(dataTakes({ constructor: [{ exists: true }] }, {})).toBe(false);
    expect(dataTakes({ toString: [{ exists: false }] }, {})).toBe(true);
    expect(takes({ extensions: { constructor: [{ exists: true }] } }, ev())).toBe(false);
  });

  it('cidr: IPv4, IPv6 and IPv4-mapped IPv6 addresses', () => {
    expect(dataTakes({ ip: [{ cidr: '10.0.0.0/24' }] }, { ip: '10.0.0.200' })).toBe(true);
    expect(dataTakes({ ip: [{ cidr: '10.0.0.0/24' }] }, { ip: '10.0.1.1' })).toBe(false);
    expect(dataTakes({ ip: [{ cidr: '10.0.0.0/24' }] }, { ip: '::ffff:10.0.0.7' })).toBe(true);
    expect(dataTakes({ ip: [{ cidr: '10.0.0.0/24' }] }, { ip: 'not an ip' })).toBe(false);
    expect(dataTakes({ ip: [{ cidr: '10.0.0.0/24' }] }, { ip: '10.0.0' })).toBe(false);
    expect(dataTakes({ ip: [{ cidr: '2001:db8::/32' }] }, { ip: '2001:db8:1::5' })).toBe(true);
    expect(dataTakes({ ip: [{ cidr: '2001:db8::/32' }] }, { ip: '2001:db9::5' })).toBe(false);
    expect(dataTakes({ ip: [{ cidr: '2001:db8::/32' }] }, { ip: '10.0.0.1' })).toBe(false);
  });

  it('regex (our extension): a JavaScript regular expression on strings', () => {
    expect(dataTakes({ disk: [{ regex: '^disk-[0-9]+$' }] }, { disk: 'disk-42' })).toBe(true);
    expect(dataTakes({ disk: [{ regex: '^disk-[0-9]+$' }] }, { disk: 'disk-4x' })).toBe(false);
    expect(dataTakes({ disk: [{ regex: '^4' }] }, { disk: 42 })).toBe(false);
  });

  it('mixes literals and operators as alternatives', () => {
    const pattern = { severity: ['critical', { prefix: 'sev1' }, { numeric: ['>=', 9] }] };
    expect(dataTakes(pattern, { severity: 'critical' })).toBe(true);
    expect(dataTakes(pattern, { severity: 'sev1-high' })).toBe(true);
    expect(dataTakes(pattern, { severity: 9 })).toBe(true);
    expect(dataTakes(pattern, { severity: 8 })).toBe(false);
    expect(dataTakes(pattern, { severity: 'low' })).toBe(false);
  });
});

describe('content patterns: arrays, $or, missing fields', () => {
  it('a list in the event matches when any element matches', () => {
    expect(dataTakes({ tags: ['prod'] }, { tags: ['db', 'prod'] })).toBe(true);
    expect(dataTakes({ tags: ['prod'] }, { tags: ['db', 'dev'] })).toBe(false);
    expect(dataTakes({ tags: ['prod'] }, { tags: [] })).toBe(false);
    expect(dataTakes({ scores: [{ numeric: ['>', 90] }] }, { scores: [10, 95] })).toBe(true);
    expect(dataTakes({ scores: [{ numeric: ['>', 90] }] }, { scores: [10, 20] })).toBe(false);
  });

  it('a pattern object against a list of objects matches when any element matches it', () => {
    const pattern = { hosts: { name: ['db-1'], up: [false] } };
    expect(dataTakes(pattern, { hosts: [{ name: 'db-2', up: false }, { name: 'db-1', up: false }] })).toBe(true);
    // The conditions must hold on one element, not spread over two.
    expect(dataTakes(pattern, { hosts: [{ name: 'db-1', up: true }, { name: 'db-2', up: false }] })).toBe(false);
  });

  it('$or at the data level and nested', () => {
    const pattern = { $or: [{ severity: ['critical'] }, { score: [{ numeric: ['>=', 7] }] }] };
    expect(dataTakes(pattern, { severity: 'critical', score: 1 })).toBe(true);
    expect(dataTakes(pattern, { severity: 'low', score: 8 })).toBe(true);
    expect(dataTakes(pattern, { severity: 'low', score: 6 })).toBe(false);
    const nested = { team: ['noc'], host: { $or: [{ name: [{ prefix: 'db' }] }, { role: ['database'] }] } };
    expect(dataTakes(nested, { team: 'noc', host: { name: 'web', role: 'database' } })).toBe(true);
    expect(dataTakes(nested, { team: 'sre', host: { name: 'db1' } })).toBe(false);
    expect(dataTakes(nested, { team: 'noc', host: { name: 'web', role: 'frontend' } })).toBe(false);
  });

  it('$or at the top of the match, across envelope, data and extensions', () => {
    const match = { type: 'alert.raised', $or: [{ subject: ['host-1'] }, { extensions: { tenant: ['acme'] } }, { data: { vip: [true] } }] };
    expect(takes(match, ev({ subject: 'host-1' }))).toBe(true);
    expect(takes(match, ev({ tenant: 'acme' }))).toBe(true);
    expect(takes(match, ev({ data: { vip: true } }))).toBe(true);
    expect(takes(match, ev({ subject: 'host-2', tenant: 'other', data: { vip: false } }))).toBe(false);
    expect(takes(match, ev({ type: 'deploy.done', subject: 'host-1' }))).toBe(false);
  });

  it('a missing field or missing data never matches a value pattern', () => {
    expect(dataTakes({ severity: ['critical'] }, undefined)).toBe(false);
    expect(dataTakes({ severity: [{ prefix: '' }] }, {})).toBe(false);
    expect(dataTakes({ host: { name: ['x'] } }, { host: null })).toBe(false);
    expect(dataTakes({ severity: ['critical'] }, 'critical')).toBe(false);
    expect(takes({ subject: [{ prefix: 'h' }] }, ev())).toBe(false);
  });

  it('matches envelope attributes and extensions', () => {
    expect(takes({ source: [{ prefix: 'urn:sensor:' }] }, ev({ source: 'urn:sensor:7' }))).toBe(true);
    expect(takes({ source: [{ prefix: 'urn:sensor:' }] }, ev({ source: 'urn:probe:7' }))).toBe(false);
    expect(takes({ subject: ['host-1', 'host-2'] }, ev({ subject: 'host-2' }))).toBe(true);
    expect(takes({ subject: ['host-1', 'host-2'] }, ev({ subject: 'host-3' }))).toBe(false);
    expect(takes({ extensions: { tenant: ['acme'] } }, ev({ tenant: 'acme' }))).toBe(true);
    expect(takes({ extensions: { tenant: ['acme'] } }, ev({ tenant: 'globex' }))).toBe(false);
    expect(takes({ extensions: { tenant: ['acme'] } }, ev())).toBe(false);
    expect(takes({ extensions: { region: [{ exists: false }] } }, ev())).toBe(true);
  });

  it('compileContentPattern works on its own, for any value', () => {
    const m = compileContentPattern({ a: { b: [1, 2] } }, 'p');
    expect(m.test({ a: { b: 2 } })).toBe(true);
    expect(m.test({ a: { b: 3 } })).toBe(false);
    expect(m.explain({ a: { b: 3 } }, 'x')).toEqual({ matched: false, reasons: ['x.a.b: 3 is not one of [1, 2]'] });
  });
});

describe('type patterns', () => {
  const cases: Array<[string, string, boolean]> = [
    ['alert.raised', 'alert.raised', true],
    ['alert.raised', 'alert.raisedx', false],
    ['alert.*', 'alert.raised', true],
    ['alert.*', 'alert.raised.twice', false],
    ['alert.*', 'alerts.raised', false],
    ['alert.**', 'alert.raised.twice', true],
    ['alert.**', 'alert.raised', true],
    ['alert.**', 'alert', false],
    ['*.raised', 'alert.raised', true],
    ['*.raised', 'x.alert.raised', false],
    ['**.raised', 'x.alert.raised', true],
    ['com.example.*.v1', 'com.example.order.v1', true],
    ['com.example.*.v1', 'com.example.order.v2', false],
    ['a+b.*', 'a+b.c', true],
    ['a+b.*', 'aab.c', false],
  ];
  for (const [pattern, type, expected] of cases) {
    it(`${JSON.stringify(pattern)} ${expected ? 'matches' : 'does not match'} ${JSON.stringify(type)}`, () => {
      expect(takes({ type: pattern }, ev({ type }))).toBe(expected);
    });
  }

  it('a list is any of its types', () => {
    const match = { type: ['deploy.done', 'alert.*'] };
    expect(takes(match, ev({ type: 'deploy.done' }))).toBe(true);
    expect(takes(match, ev({ type: 'alert.cleared' }))).toBe(true);
    expect(takes(match, ev({ type: 'deploy.started' }))).toBe(false);
  });
});

/** A straightforward AMQP topic matcher, to check the trie against. */
function referenceTopicMatch(pattern: string[], words: string[]): boolean {
  if (pattern.length === 0) return words.length === 0;
  const [head, ...rest] = pattern;
  if (head === '#') {
    for (let k = 0; k <= words.length; k++) if (referenceTopicMatch(rest, words.slice(k))) return true;
    return false;
  }
  if (words.length === 0) return false;
  return (head === '*' || head === words[0]) && referenceTopicMatch(rest, words.slice(1));
}

function topicWords(topic: string): string[] {
  return topic === '' ? [] : topic.split('.');
}

describe('topic patterns (AMQP)', () => {
  const cases: Array<[string, string, boolean]> = [
    ['soar.*.noc.#', 'soar.eu.noc.disk', true],
    ['soar.*.noc.#', 'soar.eu.noc', true],
    ['soar.*.noc.#', 'soar.eu.noc.disk.full', true],
    ['soar.*.noc.#', 'soar.noc.disk', false],
    ['soar.*.noc.#', 'soar.eu.west.noc', false],
    ['#.disk', 'disk', true],
    ['#.disk', 'soar.eu.disk', true],
    ['#.disk', 'soar.eu.disk.full', false],
    ['a.#.b', 'a.b', true],
    ['a.#.b', 'a.x.y.b', true],
    ['a.#.b', 'a.b.c', false],
    ['a.#.b', 'a.x.b.y.b', true],
    ['a.#', 'a', true],
    ['a.#', 'b.a', false],
    ['#', 'anything.at.all', true],
    ['#', 'x', true],
    ['*', 'x', true],
    ['*', 'x.y', false],
    ['*.*', 'x', false],
    ['*.*', 'x.y', true],
    ['a.*.#', 'a', false],
    ['a.*.#', 'a.b', true],
    ['#.#.c', 'c', true],
    ['a.b', 'a.b', true],
    ['a.b', 'a.bb', false],
  ];
  for (const [pattern, topic, expected] of cases) {
    it(`${JSON.stringify(pattern)} ${expected ? 'matches' : 'does not match'} ${JSON.stringify(topic)}`, () => {
      expect(takes({ topic: pattern }, ev({ topic }))).toBe(expected);
      // The reference matcher agrees with the table, so the table itself is checked too.
      expect(referenceTopicMatch(pattern.split('.'), topicWords(topic))).toBe(expected);
    });
  }

  it('an event without a topic matches only routes without a topic condition', () => {
    const index = buildRouteIndex([
      { name: 'all-topics', match: { topic: '#' } },
      { name: 'typed', match: { type: 'alert.raised' } },
      { name: 'typed-topic', match: { type: 'alert.raised', topic: '#' } },
    ]);
    expect(index.match(ev())).toEqual([1]);
    expect(index.match(ev({ topic: 'x' }))).toEqual([0, 1, 2]);
  });

  it('a list is any of its patterns', () => {
    const match = { topic: ['soar.eu.#', '*.us.noc'] };
    expect(takes(match, ev({ topic: 'soar.eu.noc.disk' }))).toBe(true);
    expect(takes(match, ev({ topic: 'soar.us.noc' }))).toBe(true);
    expect(takes(match, ev({ topic: 'soar.us.sec' }))).toBe(false);
  });

  it('the trie returns every matching pattern id once, ascending', () => {
    const trie = new TopicTrie();
    trie.add('a.#', 3);
    trie.add('#', 1);
    trie.add('a.*', 2);
    trie.add('#.#.b', 0);
    trie.add('a.b.c', 4);
    expect(trie.match('a.b')).toEqual([0, 1, 2, 3]);
    expect(trie.match('a.b.c')).toEqual([1, 3, 4]);
    expect(trie.match('')).toEqual([1]);
    expect(trie.size).toBe(5);
  });

  it('parseTopicPattern collapses repeated # and checks words', () => {
    expect(parseTopicPattern('a.#.#.b', 'p')).toEqual(['a', '#', 'b']);
    expect(configError(() => parseTopicPattern('a..b', 'p')).message).toMatch(/^p: .*empty word/);
    expect(configError(() => parseTopicPattern('a.b*', 'p')).message).toMatch(/^p: .*whole words/);
    expect(configError(() => parseTopicPattern('', 'p')).message).toMatch(/^p: /);
  });

  it('property: the trie agrees with a straightforward matcher for random topics and patterns', () => {
    const word = fc.constantFrom('a', 'b', 'c');
    const patternWord = fc.constantFrom('a', 'b', '*', '#');
    const pattern = fc.array(patternWord, { minLength: 1, maxLength: 6 });
    fc.assert(
      fc.property(fc.array(pattern, { minLength: 1, maxLength: 8 }), fc.array(fc.array(word, { maxLength: 7 }), { minLength: 1, maxLength: 10 }), (patterns, topics) => {
        const trie = new TopicTrie();
        patterns.forEach((p, id) => trie.add(p.join('.'), id));
        for (const words of topics) {
          const expected = patterns.flatMap((p, id) => (referenceTopicMatch(p, words) ? [id] : []));
          expect(trie.match(words.join('.'))).toEqual(expected);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('the route index', () => {
  const specs: RouteMatchSpec[] = [
    { name: 'page-critical', match: { type: 'alert.raised', topic: 'soar.*.noc.#', data: { severity: ['critical'] } } },
    { name: 'all-alerts', match: { type: 'alert.*' } },
    { name: 'audit', match: undefined },
    { name: 'eu-topics', match: { topic: 'soar.eu.#' } },
    { name: 'deploys', match: { type: ['deploy.*', 'release.done'] } },
    { name: 'acme', match: { extensions: { tenant: ['acme'] } } },
    { name: 'raised-exact', match: { type: 'alert.raised' } },
  ];
  const index = buildRouteIndex(specs);

  it('returns every matching route, in ascending order', () => {
    const event = ev({ topic: 'soar.eu.noc.disk', tenant: 'acme', data: { severity: 'critical' } });
    expect(index.match(event)).toEqual([0, 1, 2, 3, 5, 6]);
  });

  it('keeps type and topic both required on a route that has both', () => {
    expect(index.match(ev({ topic: 'soar.us.sec', data: { severity: 'critical' } }))).toEqual([1, 2, 6]);
    expect(index.match(ev({ type: 'deploy.done', topic: 'soar.eu.noc', data: { severity: 'critical' } }))).toEqual([2, 3, 4]);
  });

  it('routes with neither type nor topic are candidates for every event', () => {
    expect(index.match(ev({ type: 'nothing.else' }))).toEqual([2]);
    expect(index.match(ev({ type: 'nothing.else', tenant: 'acme' }))).toEqual([2, 5]);
  });

  it('an event that no route matches gives an empty list (unrouted)', () => {
    const strict = buildRouteIndex([
      { name: 'a', match: { type: 'alert.raised' } },
      { name: 'b', match: { topic: 'x.#' } },
    ]);
    expect(strict.match(ev({ type: 'other' }))).toEqual([]);
    expect(strict.match(ev({ type: 'other', topic: 'y.x' }))).toEqual([]);
    expect(buildRouteIndex([]).match(ev())).toEqual([]);
  });

  it('gives the same answer when asked again (memoized) and when the cache is dropped', () => {
    const event = ev({ topic: 'soar.eu.noc', data: { severity: 'critical' } });
    const first = index.match(event);
    expect(index.match(event)).toEqual(first);
    expect(index.match({ ...event, data: { severity: 'low' } })).toEqual(first.filter((i) => i !== 0));
    const tiny = buildRouteIndex(specs, 'routes', { cacheLimit: 2 });
    const events = [
      event,
      ev({ type: 'deploy.x', topic: 'soar.eu.a' }),
      ev({ type: 'alert.cleared', topic: 'soar.us.noc.z' }),
      ev({ type: 'release.done' }),
      ev({ type: 'alert.raised', topic: 'soar.us.noc.z', data: { severity: 'critical' } }),
    ];
    for (let round = 0; round < 3; round++) for (const e of events) expect(tiny.match(e)).toEqual(index.match(e));
  });

  it('a route listing the same type twice is returned once', () => {
    const twice = buildRouteIndex([{ name: 'a', match: { type: ['x.y', 'x.y', 'x.*'] } }]);
    expect(twice.match(ev({ type: 'x.y' }))).toEqual([0]);
  });

  it('property: the index agrees with a plain scan of every route', () => {
    const types = ['a.b', 'a.c', 'b.b', 'a.b.c'];
    const typePatterns = ['a.b', 'a.*', '*.b', 'a.**', 'b.b'];
    const topicPatterns = ['x.#', '#', '*.y', 'x.*.z', '#.z', 'x'];
    const topics = ['x', 'x.y', 'x.y.z', 'q.z', 'y', ''];
    const globMatch = (p: string, t: string): boolean => {
      // `**` any characters, `*` any characters but '.', by brute force over split points.
      if (p === '') return t === '';
      if (p.startsWith('**')) {
        for (let k = 0; k <= t.length; k++) if (globMatch(p.slice(2), t.slice(k))) return true;
        return false;
      }
      if (p.startsWith('*')) {
        for (let k = 0; k <= t.length && !t.slice(0, k).includes('.'); k++) if (globMatch(p.slice(1), t.slice(k))) return true;
        return false;
      }
      return t !== '' && p[0] === t[0] && globMatch(p.slice(1), t.slice(1));
    };
    const route = fc.record({
      type: fc.option(fc.subarray(typePatterns, { minLength: 1, maxLength: 2 }), { nil: undefined }),
      topic: fc.option(fc.subarray(topicPatterns, { minLength: 1, maxLength: 2 }), { nil: undefined }),
      level: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
    });
    const event = fc.record({
      type: fc.constantFrom(...types),
      topic: fc.option(fc.constantFrom(...topics), { nil: undefined }),
      level: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
    });
    fc.assert(
      fc.property(fc.array(route, { maxLength: 8 }), fc.array(event, { minLength: 1, maxLength: 12 }), fc.integer({ min: 1, max: 5 }), (routes, events, cacheLimit) => {
        const idx = buildRouteIndex(
          routes.map((r, i) => ({
            name: `r${i}`,
            match: {
              ...(r.type ? { type: r.type } : {}),
              ...(r.topic ? { topic: r.topic } : {}),
              ...(r.level !== undefined ? { data: { level: [{ numeric: ['>=', r.level] }] } } : {}),
            },
          })),
          'routes',
          { cacheLimit },
        );
        for (const e of events) {
          const event = ev({ type: e.type, ...(e.topic !== undefined ? { topic: e.topic } : {}), data: e.level === undefined ? {} : { level: e.level } });
          const expected = routes.flatMap((r, i) => {
            const typeOk = r.type === undefined || r.type.some((p) => globMatch(p, e.type));
            const topicOk = r.topic === undefined || (e.topic !== undefined && r.topic.some((p) => referenceTopicMatch(p.split('.'), topicWords(e.topic!))));
            const dataOk = r.level === undefined || (e.level !== undefined && e.level >= r.level);
            return typeOk && topicOk && dataOk ? [i] : [];
          });
          expect(idx.match(event)).toEqual(expected);
          expect(idx.explain(event).flatMap((x) => (x.matched ? [x.index] : []))).toEqual(expected);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('explain', () => {
  const index = buildRouteIndex([
    { name: 'page-critical', match: { type: 'alert.raised', topic: 'soar.*.noc.#', data: { severity: ['critical'] } } },
    { name: 'deploys', match: { type: 'deploy.*' } },
    { name: 'scored', match: { data: { score: [{ numeric: ['>=', 7] }] } } },
    { name: 'anything', match: {} },
    { name: 'either', match: { $or: [{ subject: ['h1'] }, { extensions: { tenant: ['acme'] } }] } },
  ]);

  it('gives every route, whether it matched, and the failing conditions', () => {
    const result = index.explain(ev({ topic: 'a.b', data: { severity: 'low' } }));
    expect(result.map((r) => [r.index, r.name, r.matched])).toEqual([
      [0, 'page-critical', false],
      [1, 'deploys', false],
      [2, 'scored', false],
      [3, 'anything', true],
      [4, 'either', false],
    ]);
    expect(result[0]!.reasons).toEqual(['topic "a.b" does not match "soar.*.noc.#"', 'data.severity: "low" is not one of [critical]']);
    expect(result[1]!.reasons).toEqual(['type "alert.raised" does not match "deploy.*"']);
    expect(result[2]!.reasons).toEqual(['data.score: missing, expected [{ numeric: [">=", 7] }]']);
    expect(result[3]!.reasons).toEqual(['no conditions: the route matches every event']);
    expect(result[4]!.reasons).toEqual([
      '$or: no alternative matches',
      '$or[0]: subject: missing, expected [h1]',
      '$or[1]: extensions.tenant: missing, expected [acme]',
    ]);
  });

  it('says why a matched route matched', () => {
    const result = index.explain(ev({ topic: 'soar.eu.noc', tenant: 'acme', data: { severity: 'critical', score: 3 } }));
    expect(result[0]).toEqual({
      index: 0,
      name: 'page-critical',
      matched: true,
      reasons: ['type "alert.raised" matches "alert.raised"', 'topic "soar.eu.noc" matches "soar.*.noc.#"', 'data.severity: "critical" matches [critical]'],
    });
    expect(result[2]!.reasons).toEqual(['data.score: 3 does not match [{ numeric: [">=", 7] }]']);
    expect(result[4]!.reasons).toEqual(['$or[1] matches', 'extensions.tenant: "acme" matches [acme]']);
  });

  it('names a missing topic and list elements', () => {
    const idx = buildRouteIndex([
      { name: 't', match: { topic: ['a.#', 'b.*'] } },
      { name: 'tags', match: { data: { tags: ['prod'] } } },
    ]);
    const [t, tags] = idx.explain(ev({ data: { tags: ['dev', 'test'] } }));
    expect(t!.reasons).toEqual(['the event has no topic, expected any of ["a.#", "b.*"]']);
    expect(tags!.reasons).toEqual(['data.tags: no element of ["dev","test"] matches [prod]']);
  });

  it('names the element of a list of objects that matched, or each one that failed', () => {
    const idx = buildRouteIndex([{ name: 'hosts', match: { data: { hosts: { name: ['db-1'] } } } }]);
    const hit = idx.explain(ev({ data: { hosts: [{ name: 'web' }, { name: 'db-1' }] } }))[0]!;
    expect(hit.reasons).toEqual(['data.hosts[1].name: "db-1" matches [db-1]']);
    const miss = idx.explain(ev({ data: { hosts: [{ name: 'web' }, {}] } }))[0]!;
    expect(miss.reasons).toEqual([
      'data.hosts: no element of the list matches',
      'data.hosts[0].name: "web" is not one of [db-1]',
      'data.hosts[1].name: missing, expected [db-1]',
    ]);
  });
});

describe('invalid patterns', () => {
  const bad = (match: Record<string, unknown>): string =>
    configError(() => buildRouteIndex([{ name: 'ok', match: { type: 'x' } }, { name: 'bad', match }], 'routes')).message;

  it('names the place of every mistake', () => {
    expect(bad({ data: { score: [{ numeric: ['>=', 'seven'] }] } })).toMatch(/^routes\[1\]\.match\.data\.score\[0\]: numeric expects /);
    expect(bad({ data: { score: [{ numeric: ['>=', 7, '<'] }] } })).toMatch(/^routes\[1\]\.match\.data\.score\[0\]: numeric expects /);
    expect(bad({ data: { score: [{ numeric: ['~', 7] }] } })).toMatch(/^routes\[1\]\.match\.data\.score\[0\]: numeric expects .*operator "~"/);
    expect(bad({ data: { score: [{ numeric: ['>', 7, '>', 9] }] } })).toMatch(/^routes\[1\]\.match\.data\.score\[0\]: .*lower bound/);
    expect(bad({ data: { score: [{ numeric: ['>', 9, '<', 7] }] } })).toMatch(/^routes\[1\]\.match\.data\.score\[0\]: numeric range .* is empty/);
    expect(bad({ data: { a: [1, { bogus: 1 }] } })).toMatch(/^routes\[1\]\.match\.data\.a\[1\]: unknown operator "bogus"/);
    expect(bad({ data: { a: [{ prefix: 'x', suffix: 'y' }] } })).toMatch(/^routes\[1\]\.match\.data\.a\[0\]: an operator object has exactly one key/);
    expect(bad({ data: { d: [{ regex: '(unclosed' }] } })).toMatch(/^routes\[1\]\.match\.data\.d\[0\]: regex is not a valid/);
    expect(bad({ data: { ip: [{ cidr: '10.0.0.300/24' }] } })).toMatch(/^routes\[1\]\.match\.data\.ip\[0\]: cidr expects/);
    expect(bad({ data: { ip: [{ cidr: '10.0.0.1' }] } })).toMatch(/^routes\[1\]\.match\.data\.ip\[0\]: cidr expects/);
    expect(bad({ data: { a: [[1, 2]] } })).toMatch(/^routes\[1\]\.match\.data\.a\[0\]: expects a value/);
    expect(bad({ data: { a: [] } })).toMatch(/^routes\[1\]\.match\.data\.a: an empty list matches nothing/);
    expect(bad({ data: { a: [{ exists: 'yes' }] } })).toMatch(/^routes\[1\]\.match\.data\.a\[0\]: exists expects true or false/);
    expect(bad({ data: { a: [{ prefix: 3 }] } })).toMatch(/^routes\[1\]\.match\.data\.a\[0\]: prefix expects a string/);
    expect(bad({ data: { a: [{ 'anything-but': { prefix: 3 } }] } })).toMatch(/^routes\[1\]\.match\.data\.a\[0\]: anything-but prefix expects/);
    expect(bad({ data: { a: [{ 'anything-but': [] }] } })).toMatch(/^routes\[1\]\.match\.data\.a\[0\]: anything-but expects/);
    expect(bad({ data: { $or: { a: [1] } } })).toMatch(/^routes\[1\]\.match\.data\.\$or: expects a non-empty list/);
    expect(bad({ data: { $or: [{ a: [{ wildcard: 5 }] }] } })).toMatch(/^routes\[1\]\.match\.data\.\$or\[0\]\.a\[0\]: wildcard expects a string/);
    expect(bad({ data: { a: Number.POSITIVE_INFINITY } })).toMatch(/^routes\[1\]\.match\.data\.a: expects a list of values/);
  });

  it('checks the keys of the match and of extensions', () => {
    expect(bad({ tenant: ['acme'] })).toMatch(/^routes\[1\]\.match\.tenant: unknown key "tenant" \(extension attributes go under extensions/);
    expect(bad({ extensions: { source: ['x'] } })).toMatch(/^routes\[1\]\.match\.extensions\.source: "source" is not an extension attribute; match it with match\.source/);
    expect(bad({ extensions: { tenantId: ['x'] } })).toMatch(/^routes\[1\]\.match\.extensions\.tenantId: .*lower-case/);
    expect(bad({ extensions: ['x'] })).toMatch(/^routes\[1\]\.match\.extensions: must be an object/);
    expect(bad({ extensions: { $or: [{ tenant: ['a'] }, { data: ['x'] }] } })).toMatch(/^routes\[1\]\.match\.extensions\.\$or\[1\]\.data: "data" is not an extension attribute/);
    expect(bad({ source: { prefix: 'urn:' } })).toMatch(/^routes\[1\]\.match\.source: .*operators go inside a list/);
    expect(bad({ $or: [{ type: 'x' }] })).toMatch(/^routes\[1\]\.match\.\$or\[0\]\.type: type cannot be used inside \$or/);
  });

  it('checks type and topic patterns', () => {
    expect(bad({ type: '' })).toMatch(/^routes\[1\]\.match\.type: expects a non-empty string/);
    expect(bad({ type: ['a', 3] })).toMatch(/^routes\[1\]\.match\.type\[1\]: expects a non-empty string/);
    expect(bad({ type: [] })).toMatch(/^routes\[1\]\.match\.type: an empty list matches nothing/);
    expect(bad({ topic: 'a..b' })).toMatch(/^routes\[1\]\.match\.topic: topic pattern "a\.\.b" has an empty word/);
    expect(bad({ topic: ['ok.#', 'soar.'] })).toMatch(/^routes\[1\]\.match\.topic\[1\]: .*empty word/);
    expect(bad({ topic: 'a.b#' })).toMatch(/^routes\[1\]\.match\.topic: .*whole words/);
  });

  it('uses the path prefix it is given', () => {
    expect(configError(() => buildRouteIndex([{ name: 'x', match: { data: { a: [{ nope: 1 }] } } }], 'profiles.backbone.routes')).message).toMatch(
      /^profiles\.backbone\.routes\[0\]\.match\.data\.a\[0\]: unknown operator/,
    );
  });
});
