/**
 * The routing index: which routes an event matches. See docs/routing.md.
 *
 * A route's `match` holds, all optional (an empty match takes every event):
 *
 * - `type`: a string or a list (any of them); exact, or a glob where `*` matches within one dot-separated
 *   part and `**` across parts (`alert.*`, `alert.**`, `*.raised`);
 * - `topic`: a string or a list (any of them); an AMQP topic pattern (see ./topic.ts);
 * - `source`, `subject`, `id`, `time`, `datacontenttype`, `dataschema`: a content pattern leaf on that
 *   envelope attribute (see ./content-pattern.ts);
 * - `data`: a content pattern on the event's data;
 * - `extensions`: a content pattern object on the extension attributes (`tenant`, `correlationid`, `topic`, …);
 * - `$or`: a list of objects of the content keys above; at least one must match.
 *
 * The hot path (`match`) does not scan the routes: exact types are looked up in a map, glob types are tried
 * once per distinct type string, topics walk a trie once per distinct topic; the resulting candidate list
 * per (type, topic) is memoized in a bounded cache. Only the candidates run their compiled content
 * predicates.
 */

import { childPath, compileContentPattern, compileObjectPattern, type ContentMatcher } from './content-pattern.js';
import { DispatcherError } from './errors.js';
import { TopicTrie, parseTopicPattern } from './topic.js';
import type { CloudEvent } from './types.js';

export interface RouteMatchSpec {
  name: string;
  match: Record<string, unknown> | undefined;
}

export interface RouteExplanation {
  index: number;
  name: string;
  matched: boolean;
  /** For a matched route, why each condition holds; for another, each condition that fails. */
  reasons: string[];
}

export interface RouteIndex {
  /** Indexes (into the specs array given to buildRouteIndex) of the routes that match, in ascending order. */
  match(event: CloudEvent): number[];
  /**
   * For `dispatcher routes test`: for every route, whether it matched and why (which condition failed, e.g.
   * `type "alert.raised" does not match "deploy.*"`, `data.severity: "low" is not one of [critical]`,
   * `topic "a.b" does not match "soar.*.noc.#"`). Agrees with `match`.
   */
  explain(event: CloudEvent): RouteExplanation[];
}

export interface RouteIndexOptions {
  /**
   * How many distinct event types, and (type, topic) pairs, the candidate cache holds before it is dropped
   * and starts again. Default 10,000.
   */
  cacheLimit?: number;
}

/** Envelope attributes a route can match with a content pattern leaf, directly under `match`. */
export const ENVELOPE_ATTRIBUTES = ['source', 'subject', 'id', 'time', 'datacontenttype', 'dataschema'] as const;

const CONTENT_KEYS: readonly string[] = [...ENVELOPE_ATTRIBUTES, 'data', 'extensions', '$or'];
const MATCH_KEYS: readonly string[] = ['type', 'topic', ...CONTENT_KEYS];
/** Attributes that are not extensions (they have their own keys under `match`, or cannot be matched). */
const NOT_EXTENSIONS: ReadonlySet<string> = new Set(['specversion', 'type', ...ENVELOPE_ATTRIBUTES, 'data', 'data_base64']);
const EXTENSION_NAME = /^[a-z0-9]+$/;
const DEFAULT_CACHE_LIMIT = 10_000;

interface TypePattern {
  text: string;
  /** null for an exact type. */
  re: RegExp | null;
}

/** A content condition on the whole event. */
interface EventCondition {
  test: (event: CloudEvent) => boolean;
  explain: (event: CloudEvent) => { matched: boolean; reasons: string[] };
}

interface CompiledRoute {
  name: string;
  types: TypePattern[] | null;
  /** The topic patterns as written, and their ids in the trie (same order). */
  topics: string[] | null;
  topicWords: string[][];
  topicIds: number[];
  conditions: EventCondition[];
  /** AND of the content conditions; null when there are none. */
  predicate: ((event: CloudEvent) => boolean) | null;
}

/** Candidates for one event type, per set of routes whose topic condition holds. */
interface TypeEntry {
  /** Routes whose type condition matches this type (ascending). */
  typeRoutes: number[];
  /** The candidates when no topic condition holds (the event has no topic, or none matches). */
  noTopic: number[] | null;
  /** The candidates per (interned) list of routes whose topic condition holds. */
  byTopicRoutes: Map<number[], number[]> | null;
}

export function buildRouteIndex(specs: RouteMatchSpec[], path = 'routes', options: RouteIndexOptions = {}): RouteIndex {
  const cacheLimit = Math.max(1, options.cacheLimit ?? DEFAULT_CACHE_LIMIT);
  const n = specs.length;
  const routes: CompiledRoute[] = [];
  const trie = new TopicTrie();
  /** Topic pattern id → route index. */
  const topicRoute: number[] = [];
  const exactTypes = new Map<string, number[]>();
  const globTypes: Array<{ route: number; re: RegExp }> = [];
  const always: number[] = [];
  const hasType = new Uint8Array(n);
  const hasTopic = new Uint8Array(n);

  for (const [i, spec] of specs.entries()) {
    const at = `${path}[${i}].match`;
    const route = compileRoute(spec, at);
    routes.push(route);
    if (route.types !== null) {
      hasType[i] = 1;
      const globs: string[] = [];
      for (const t of route.types) {
        if (t.re === null) {
          const list = exactTypes.get(t.text);
          if (list === undefined) exactTypes.set(t.text, [i]);
          else if (list[list.length - 1] !== i) list.push(i);
        } else globs.push(t.re.source.slice(1, -1));
      }
      if (globs.length > 0) globTypes.push({ route: i, re: new RegExp(`^(?:${globs.join('|')})$`, 's') });
    }
    if (route.topics !== null) {
      hasTopic[i] = 1;
      for (const words of route.topicWords) {
        const id = topicRoute.length;
        topicRoute.push(i);
        route.topicIds.push(id);
        trie.add(words, id);
      }
    }
    if (route.types === null && route.topics === null) always.push(i);
  }
  const anyTopic = topicRoute.length > 0;

  // --- caches ---------------------------------------------------------------------------------------------
  //
  // type → TypeEntry (the routes whose type condition holds), at most `cacheLimit` distinct types;
  // topic → the routes whose topic condition holds, at most `cacheLimit` distinct topics. Those route lists
  // are interned (equal lists are one array), so that many distinct topics (`soar.eu.noc.host-123`) share
  // a handful of lists, and the candidates per (type, topic) are memoized per (TypeEntry, interned list).
  // Each cache holds at most `cacheLimit` items; a full one is dropped as a whole and fills again.
  let typeCache = new Map<string, TypeEntry>();
  let topicCache = new Map<string, number[]>();
  let interned = new Map<string, number[]>();
  /** (type, topic routes) candidate lists held, over all type entries. */
  let pairs = 0;
  const NO_TOPIC_ROUTES: number[] = [];
  const mark = new Uint8Array(n);

  function routesForType(type: string): number[] {
    const exact = exactTypes.get(type);
    if (globTypes.length === 0) return exact ?? [];
    const out = exact === undefined ? [] : exact.slice();
    for (const g of globTypes) if (g.re.test(type) && !out.includes(g.route)) out.push(g.route);
    return out.length > 1 ? out.sort((a, b) => a - b) : out;
  }

  function routesForTopic(topic: string): number[] {
    let hit = topicCache.get(topic);
    if (hit !== undefined) return hit;
    const out: number[] = [];
    let last = -1;
    // Pattern ids ascend with their route indexes, so the routes come out sorted too.
    for (const id of trie.match(topic)) {
      const r = topicRoute[id]!;
      if (r !== last) out.push((last = r));
    }
    if (out.length === 0) hit = NO_TOPIC_ROUTES;
    else {
      const key = out.join(',');
      hit = interned.get(key);
      if (hit === undefined) {
        if (interned.size >= cacheLimit) interned = new Map();
        interned.set(key, (hit = out));
      }
    }
    if (topicCache.size >= cacheLimit) topicCache = new Map();
    topicCache.set(topic, hit);
    return hit;
  }

  /** Routes whose type and topic conditions (those they have) both hold, ascending. */
  function candidates(typeRoutes: number[], topicRoutes: number[]): number[] {
    for (const r of topicRoutes) mark[r] = 1;
    const out = always.slice();
    for (const r of typeRoutes) if (hasTopic[r] === 0 || mark[r] === 1) out.push(r);
    for (const r of topicRoutes) {
      if (hasType[r] === 0) out.push(r);
      mark[r] = 0;
    }
    return out.sort((a, b) => a - b);
  }

  const noTypeEntry: TypeEntry = { typeRoutes: [], noTopic: null, byTopicRoutes: null };

  function entryFor(type: string): TypeEntry {
    let entry = typeCache.get(type);
    if (entry === undefined) {
      if (typeCache.size >= cacheLimit) {
        typeCache = new Map();
        noTypeEntry.byTopicRoutes = null;
        pairs = 0;
      }
      entry = { typeRoutes: routesForType(type), noTopic: null, byTopicRoutes: null };
      typeCache.set(type, entry);
    }
    return entry;
  }

  function candidatesFor(event: CloudEvent): number[] {
    const type = event.type;
    const entry = typeof type === 'string' ? entryFor(type) : noTypeEntry;
    const topic = event.topic;
    const topicRoutes = anyTopic && typeof topic === 'string' ? routesForTopic(topic) : NO_TOPIC_ROUTES;
    if (topicRoutes === NO_TOPIC_ROUTES) return (entry.noTopic ??= candidates(entry.typeRoutes, NO_TOPIC_ROUTES));
    let list = entry.byTopicRoutes?.get(topicRoutes);
    if (list === undefined) {
      list = candidates(entry.typeRoutes, topicRoutes);
      if (pairs >= cacheLimit) {
        // Full: drop the lists of every type (once per `cacheLimit` misses, so the loop costs nothing).
        for (const e of typeCache.values()) e.byTopicRoutes = null;
        noTypeEntry.byTopicRoutes = null;
        pairs = 0;
      }
      (entry.byTopicRoutes ??= new Map()).set(topicRoutes, list);
      pairs++;
    }
    return list;
  }

  const predicates = routes.map((r) => r.predicate);

  return {
    match(event: CloudEvent): number[] {
      const list = candidatesFor(event);
      const out: number[] = [];
      for (let i = 0; i < list.length; i++) {
        const r = list[i]!;
        const p = predicates[r]!;
        if (p === null || p(event)) out.push(r);
      }
      return out;
    },

    explain(event: CloudEvent): RouteExplanation[] {
      const type = typeof event.type === 'string' ? event.type : undefined;
      const typeRoutes = new Set(type === undefined ? [] : entryFor(type).typeRoutes);
      const topic = typeof event.topic === 'string' ? event.topic : undefined;
      const topicIds = new Set(topic === undefined || !anyTopic ? [] : trie.match(topic));
      return routes.map((route, index) => {
        const passed: string[] = [];
        const failed: string[] = [];
        if (route.types !== null) {
          const shown = route.types.length === 1 ? JSON.stringify(route.types[0]!.text) : `any of [${route.types.map((t) => JSON.stringify(t.text)).join(', ')}]`;
          if (type === undefined) failed.push(`the event has no type, expected ${shown}`);
          else if (typeRoutes.has(index)) {
            const hit = route.types.find((t) => (t.re === null ? t.text === type : t.re.test(type)));
            passed.push(`type ${JSON.stringify(type)} matches ${JSON.stringify(hit?.text)}`);
          } else failed.push(`type ${JSON.stringify(type)} does not match ${shown}`);
        }
        if (route.topics !== null) {
          const shown = route.topics.length === 1 ? JSON.stringify(route.topics[0]) : `any of [${route.topics.map((t) => JSON.stringify(t)).join(', ')}]`;
          const hit = route.topicIds.findIndex((id) => topicIds.has(id));
          if (topic === undefined) failed.push(`the event has no topic, expected ${shown}`);
          else if (hit >= 0) passed.push(`topic ${JSON.stringify(topic)} matches ${JSON.stringify(route.topics[hit])}`);
          else failed.push(`topic ${JSON.stringify(topic)} does not match ${shown}`);
        }
        for (const condition of route.conditions) {
          const verdict = condition.explain(event);
          (verdict.matched ? passed : failed).push(...verdict.reasons);
        }
        if (failed.length > 0) return { index, name: route.name, matched: false, reasons: failed };
        if (passed.length === 0) passed.push('no conditions: the route matches every event');
        return { index, name: route.name, matched: true, reasons: passed };
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Compiling one route's match

function invalid(path: string, message: string): DispatcherError {
  return new DispatcherError('config_invalid', `${path}: ${message}`);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Throws `config_invalid` naming the place (`at`, e.g. `routes[2].match`) when a route's match does not compile. */
export function checkRouteMatch(spec: RouteMatchSpec, at: string): void {
  compileRoute(spec, at);
}

function compileRoute(spec: RouteMatchSpec, at: string): CompiledRoute {
  const match = spec.match ?? {};
  if (!isPlainObject(match)) throw invalid(at, `must be an object, got ${Array.isArray(match) ? 'a list' : typeof match}`);
  let types: TypePattern[] | null = null;
  let topics: string[] | null = null;
  let topicWords: string[][] = [];
  for (const key of Object.keys(match)) {
    if (!MATCH_KEYS.includes(key)) {
      const hint = EXTENSION_NAME.test(key) ? ` (extension attributes go under extensions: { ${key}: […] })` : '';
      throw invalid(childPath(at, key), `unknown key "${key}"${hint}; known keys: ${MATCH_KEYS.join(', ')}`);
    }
  }
  if (match.type !== undefined) types = stringList(match.type, `${at}.type`, 'type').map(compileTypePattern);
  if (match.topic !== undefined) {
    const list = stringList(match.topic, `${at}.topic`, 'topic pattern');
    topicWords = list.map((t, j) => parseTopicPattern(t, Array.isArray(match.topic) ? `${at}.topic[${j}]` : `${at}.topic`));
    topics = list;
  }
  const conditions = compileConditions(match, at);
  return { name: spec.name, types, topics, topicWords, topicIds: [], conditions, predicate: andOf(conditions) };
}

function stringList(value: unknown, path: string, what: string): string[] {
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 0) throw invalid(path, `an empty list matches nothing; give at least one ${what}`);
  list.forEach((v, i) => {
    if (typeof v !== 'string' || v === '') {
      throw invalid(Array.isArray(value) ? `${path}[${i}]` : path, `expects a non-empty string or a list of them, got ${JSON.stringify(v) ?? String(v)}`);
    }
  });
  return list as string[];
}

/** `*` matches any characters but `.`, `**` (or more stars) any characters at all. */
function compileTypePattern(text: string): TypePattern {
  if (!text.includes('*')) return { text, re: null };
  let source = '';
  for (let i = 0; i < text.length; ) {
    if (text[i] === '*') {
      let j = i;
      while (text[j] === '*') j++;
      source += j - i === 1 ? '[^.]*' : '.*';
      i = j;
    } else {
      source += text[i]!.replace(/[.+?^${}()|[\]\\/]/g, '\\$&');
      i++;
    }
  }
  return { text, re: new RegExp(`^${source}$`, 's') };
}

/** The content conditions (everything but type and topic) of a match object or of a `$or` alternative. */
function compileConditions(obj: Record<string, unknown>, at: string): EventCondition[] {
  const out: EventCondition[] = [];
  for (const [key, value] of Object.entries(obj)) {
    if (key === 'type' || key === 'topic') continue;
    const path = childPath(at, key);
    if ((ENVELOPE_ATTRIBUTES as readonly string[]).includes(key)) {
      out.push(attributeCondition(key, compileContentLeaf(value, path)));
    } else if (key === 'data') {
      const m = compileContentPattern(value, path);
      out.push({ test: (e) => m.test(e.data), explain: (e) => m.explain(e.data, 'data') });
    } else if (key === 'extensions') {
      if (!isPlainObject(value)) throw invalid(path, `must be an object of extension attribute patterns, got ${Array.isArray(value) ? 'a list' : typeof value}`);
      checkExtensionNames(value, path);
      const m = compileObjectPattern(value, path);
      out.push({ test: (e) => m.test(e), explain: (e) => m.explain(e, 'extensions') });
    } else if (key === '$or') {
      if (!Array.isArray(value) || value.length === 0) throw invalid(path, 'expects a non-empty list of condition objects');
      const alternatives = value.map((alt, i) => {
        const altPath = `${path}[${i}]`;
        if (!isPlainObject(alt)) throw invalid(altPath, `must be an object of conditions, got ${Array.isArray(alt) ? 'a list' : typeof alt}`);
        for (const k of Object.keys(alt)) {
          if (k === 'type' || k === 'topic') throw invalid(childPath(altPath, k), `${k} cannot be used inside $or (the index needs it on the route): write one route per alternative`);
          if (!CONTENT_KEYS.includes(k)) throw invalid(childPath(altPath, k), `unknown key "${k}"; known keys: ${CONTENT_KEYS.join(', ')}`);
        }
        return compileConditions(alt, altPath);
      });
      out.push(orCondition(alternatives));
    }
  }
  return out;
}

/** The keys of an `extensions` pattern (and of its `$or` alternatives) must be extension attribute names. */
function checkExtensionNames(pattern: Record<string, unknown>, path: string): void {
  for (const [name, value] of Object.entries(pattern)) {
    const at = childPath(path, name);
    if (name === '$or') {
      if (Array.isArray(value)) value.forEach((alt, i) => isPlainObject(alt) && checkExtensionNames(alt, `${at}[${i}]`));
      continue;
    }
    if (NOT_EXTENSIONS.has(name)) {
      const hint = name === 'specversion' || name === 'data_base64' ? '' : `; match it with match.${name}`;
      throw invalid(at, `"${name}" is not an extension attribute${hint}`);
    }
    if (!EXTENSION_NAME.test(name)) throw invalid(at, `"${name}" is not a CloudEvents attribute name (lower-case letters and digits)`);
  }
}

function compileContentLeaf(value: unknown, path: string): ContentMatcher {
  if (isPlainObject(value)) {
    throw invalid(path, `expects a list of values or operators (for example [ { prefix: "x" } ]), got an object: operators go inside a list`);
  }
  return compileContentPattern(value, path);
}

function attributeCondition(key: string, m: ContentMatcher): EventCondition {
  return { test: (e) => m.test(e[key]), explain: (e) => m.explain(e[key], key) };
}

function andOf(conditions: EventCondition[]): ((event: CloudEvent) => boolean) | null {
  if (conditions.length === 0) return null;
  if (conditions.length === 1) return conditions[0]!.test;
  if (conditions.length === 2) {
    const [a, b] = [conditions[0]!.test, conditions[1]!.test];
    return (e) => a(e) && b(e);
  }
  const tests = conditions.map((c) => c.test);
  return (e) => {
    for (let i = 0; i < tests.length; i++) if (!tests[i]!(e)) return false;
    return true;
  };
}

function orCondition(alternatives: EventCondition[][]): EventCondition {
  const tests = alternatives.map((conditions) => andOf(conditions) ?? (() => true));
  return {
    test: (e) => {
      for (let i = 0; i < tests.length; i++) if (tests[i]!(e)) return true;
      return false;
    },
    explain: (e) => {
      const verdicts = alternatives.map((conditions) => {
        const passed: string[] = [];
        const failed: string[] = [];
        for (const c of conditions) {
          const v = c.explain(e);
          (v.matched ? passed : failed).push(...v.reasons);
        }
        return { matched: failed.length === 0, reasons: failed.length === 0 ? passed : failed };
      });
      const hit = verdicts.findIndex((v) => v.matched);
      if (hit >= 0) return { matched: true, reasons: [`$or[${hit}] matches`, ...verdicts[hit]!.reasons] };
      return {
        matched: false,
        reasons: ['$or: no alternative matches', ...verdicts.flatMap((v, i) => v.reasons.map((r) => `$or[${i}]: ${r}`))],
      };
    },
  };
}
