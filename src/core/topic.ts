/**
 * Topic patterns with the semantics of an AMQP topic exchange (RabbitMQ): a topic is a dotted routing key
 * (`soar.eu.noc.disk`), its words are the parts between dots; in a pattern `*` matches exactly one word and
 * `#` zero or more words. `soar.*.noc.#` matches `soar.eu.noc` and `soar.eu.noc.disk.full`.
 *
 * All patterns go into one trie; matching a topic walks the trie once (no loop over the patterns) and
 * returns the ids of the patterns that match.
 */

import { DispatcherError } from './errors.js';

/**
 * The words of a topic. The empty topic has no words (only `#` matches it); an empty word inside a topic
 * (`a..b`) is a word like any other, matched by `*`.
 */
export function splitTopic(topic: string): string[] {
  return topic === '' ? [] : topic.split('.');
}

/**
 * Checks a topic pattern and returns its words, with runs of `#` collapsed into one (`a.#.#` is `a.#`).
 * Throws `config_invalid` naming `path` when the pattern is not a non-empty string of non-empty words, or
 * when `*` or `#` is part of a word rather than a whole word.
 */
export function parseTopicPattern(pattern: unknown, path: string): string[] {
  if (typeof pattern !== 'string' || pattern === '') {
    throw new DispatcherError('config_invalid', `${path}: a topic pattern must be a non-empty string, got ${JSON.stringify(pattern) ?? String(pattern)}`);
  }
  const words = pattern.split('.');
  const out: string[] = [];
  for (const [i, word] of words.entries()) {
    if (word === '') {
      throw new DispatcherError('config_invalid', `${path}: topic pattern "${pattern}" has an empty word (word ${i + 1}): words are separated by single dots`);
    }
    if (word !== '*' && word !== '#' && /[*#]/.test(word)) {
      throw new DispatcherError('config_invalid', `${path}: topic pattern "${pattern}": "*" and "#" must be whole words, got "${word}"`);
    }
    if (word === '#' && out[out.length - 1] === '#') continue;
    out.push(word);
  }
  return out;
}

interface TrieNode {
  /** Children by literal word. */
  words: Map<string, TrieNode> | null;
  star: TrieNode | null;
  hash: TrieNode | null;
  /** Ids of the patterns that end here. */
  ids: number[];
}

function newNode(): TrieNode {
  return { words: null, star: null, hash: null, ids: [] };
}

/** A trie of AMQP topic patterns, each added with an id (a small non-negative integer). */
export class TopicTrie {
  readonly #root: TrieNode = newNode();
  #size = 0;
  /** seen[id] === epoch: id already reported by the current match (no allocation per match). */
  #seen = new Uint32Array(16);
  #epoch = 0;

  /** Number of patterns added. */
  get size(): number {
    return this.#size;
  }

  /** Adds a pattern (as text, checked, or as words from `parseTopicPattern`) under `id`. */
  add(pattern: string | readonly string[], id: number, path = 'topic'): void {
    if (!Number.isInteger(id) || id < 0) throw new RangeError(`topic pattern id must be a non-negative integer, got ${id}`);
    const words = typeof pattern === 'string' ? parseTopicPattern(pattern, path) : pattern;
    let node = this.#root;
    for (const word of words) {
      if (word === '*') node = node.star ??= newNode();
      else if (word === '#') node = node.hash ??= newNode();
      else {
        node.words ??= new Map();
        let next = node.words.get(word);
        if (next === undefined) node.words.set(word, (next = newNode()));
        node = next;
      }
    }
    if (!node.ids.includes(id)) node.ids.push(id);
    this.#size++;
    if (id >= this.#seen.length) {
      const seen = new Uint32Array(Math.max(id + 1, this.#seen.length * 2));
      seen.set(this.#seen);
      this.#seen = seen;
    }
  }

  /** The ids of the patterns that match `topic`, each once, in ascending order. */
  match(topic: string): number[] {
    const words = splitTopic(topic);
    if (this.#epoch === 0xffffffff) {
      this.#seen.fill(0);
      this.#epoch = 0;
    }
    const out: number[] = [];
    walk(this.#root, words, 0, this.#seen, ++this.#epoch, out);
    return out.length > 1 ? out.sort((a, b) => a - b) : out;
  }
}

function walk(node: TrieNode, words: string[], i: number, seen: Uint32Array, epoch: number, out: number[]): void {
  if (i === words.length) {
    for (const id of node.ids) {
      if (seen[id] !== epoch) {
        seen[id] = epoch;
        out.push(id);
      }
    }
    // A trailing `#` matches zero words.
    if (node.hash !== null) walk(node.hash, words, i, seen, epoch, out);
    return;
  }
  if (node.words !== null) {
    const next = node.words.get(words[i]!);
    if (next !== undefined) walk(next, words, i + 1, seen, epoch, out);
  }
  if (node.star !== null) walk(node.star, words, i + 1, seen, epoch, out);
  if (node.hash !== null) {
    // `#` takes zero, one, … or all of the remaining words.
    for (let j = i; j <= words.length; j++) walk(node.hash, words, j, seen, epoch, out);
  }
}
