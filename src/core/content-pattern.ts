/**
 * Content patterns: the AWS EventBridge event-pattern language
 * (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns.html), used by routes to
 * match event attributes and `data`. See docs/routing.md.
 *
 * - A pattern is an object; each key names a field of the value it is matched against; a nested object
 *   recurses; a leaf is a list of alternatives (any of them may match). A scalar leaf `x` means `[x]`.
 * - Alternatives: a literal (string, number, boolean, null: equality, without type conversion), or an
 *   operator object with exactly one key: `prefix`, `suffix`, `equals-ignore-case`, `wildcard`,
 *   `anything-but`, `numeric`, `exists`, `cidr`, and our extension `regex`.
 * - A field whose value is a list matches when any element matches; a pattern object matched against a
 *   list matches when any element matches it.
 * - A missing field matches nothing but `{ exists: false }`.
 * - `$or: [pattern, …]` at any object level: at least one of the patterns must match the same value.
 *
 * Patterns are compiled once into closures; matching never looks at the pattern object again. A bad
 * pattern throws `DispatcherError('config_invalid')` naming its place (`routes[3].match.data.score[0]`).
 */

import ipaddr from 'ipaddr.js';
import { DispatcherError } from './errors.js';

/** The outcome of matching, with one reason per condition (the passing ones, or else the failing ones). */
export interface Verdict {
  matched: boolean;
  reasons: string[];
}

/** A compiled pattern. */
export interface ContentMatcher {
  /** Whether the value matches; `undefined` stands for a missing field. The hot path. */
  readonly test: (value: unknown) => boolean;
  /**
   * The same verdict as `test`, with reasons. `label` names the value in the reasons (`data.severity`).
   * Slow (it builds strings): for `dispatcher routes test`, not for routing.
   */
  explain(value: unknown, label: string): Verdict;
}

type Scalar = string | number | boolean | null;
type ScalarTest = (value: unknown) => boolean;

/** The operators an alternative may use, in the order docs/routing.md lists them. */
export const CONTENT_OPERATORS = [
  'prefix',
  'suffix',
  'equals-ignore-case',
  'wildcard',
  'anything-but',
  'numeric',
  'exists',
  'cidr',
  'regex',
] as const;

const NUMERIC_OPERATORS: ReadonlySet<string> = new Set(['=', '>', '>=', '<', '<=']);
const MAX_SHOWN = 80;

function invalid(path: string, message: string): DispatcherError {
  return new DispatcherError('config_invalid', `${path}: ${message}`);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isScalar(value: unknown): value is Scalar {
  return (
    value === null ||
    typeof value === 'string' ||
    typeof value === 'boolean' ||
    (typeof value === 'number' && Number.isFinite(value))
  );
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'number') return Number.isFinite(value) ? 'a number' : String(value);
  return `a ${typeof value}`;
}

/** `a.b` for plain keys, `a["x y"]` for others. */
export function childPath(path: string, key: string): string {
  if (/^[A-Za-z_$][\w$-]*$/.test(key)) return path === '' ? key : `${path}.${key}`;
  return `${path}[${JSON.stringify(key)}]`;
}

/** A value in a reason: JSON, shortened. */
export function show(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN - 1)}…` : text;
}

const PLAIN_STRING = /^[A-Za-z_][\w.:/@+-]*$/;
const YAML_WORDS = new Set(['true', 'false', 'null', 'yes', 'no', 'on', 'off', '~']);

/** An alternative as written in YAML flow style: `critical`, `"two words"`, `{ numeric: [">=", 7] }`. */
function showAlternative(alt: unknown): string {
  if (typeof alt === 'string') return PLAIN_STRING.test(alt) && !YAML_WORDS.has(alt.toLowerCase()) ? alt : JSON.stringify(alt);
  if (isPlainObject(alt)) {
    const [key, value] = Object.entries(alt)[0] ?? ['', undefined];
    return `{ ${key}: ${showFlow(value)} }`;
  }
  return show(alt);
}

function showFlow(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(showFlow).join(', ')}]`;
  if (isPlainObject(value)) return `{ ${Object.entries(value).map(([k, v]) => `${k}: ${showFlow(v)}`).join(', ')} }`;
  return JSON.stringify(value) ?? String(value);
}

function showAlternatives(alts: readonly unknown[]): string {
  return `[${alts.map(showAlternative).join(', ')}]`;
}

// ---------------------------------------------------------------------------------------------------------
// Compilation

/**
 * Compiles a pattern: an object (field patterns, `$or`) or a leaf (a list of alternatives, or one scalar
 * alternative). `path` names the pattern in error messages (`routes[0].match.data`).
 */
export function compileContentPattern(pattern: unknown, path: string): ContentMatcher {
  if (isPlainObject(pattern)) return compileObject(pattern, path);
  return compileLeaf(pattern, path);
}

/** Compiles an object pattern; anything else is an error. */
export function compileObjectPattern(pattern: unknown, path: string): ContentMatcher {
  if (!isPlainObject(pattern)) throw invalid(path, `must be an object of field patterns, got ${kindOf(pattern)}`);
  return compileObject(pattern, path);
}

interface Field {
  key: string;
  matcher: ContentMatcher;
}

function compileObject(pattern: Record<string, unknown>, path: string): ContentMatcher {
  const fields: Field[] = [];
  const ors: ContentMatcher[][] = [];
  for (const [key, value] of Object.entries(pattern)) {
    if (key === '$or') {
      const at = childPath(path, '$or');
      if (!Array.isArray(value) || value.length === 0) throw invalid(at, `expects a non-empty list of patterns, got ${kindOf(value)}`);
      ors.push(value.map((alt, i) => compileObjectPattern(alt, `${at}[${i}]`)));
      continue;
    }
    fields.push({ key, matcher: compileContentPattern(value, childPath(path, key)) });
  }

  const testOne = objectTest(fields, ors);
  const test = (value: unknown): boolean => {
    if (!Array.isArray(value)) return testOne(value);
    for (let i = 0; i < value.length; i++) if (test(value[i])) return true;
    return false;
  };

  const explainOne = (value: unknown, label: string): Verdict => {
    const obj = isPlainObject(value) ? value : undefined;
    const passed: string[] = [];
    const failed: string[] = [];
    for (const { key, matcher } of fields) {
      const v = matcher.explain(obj !== undefined && Object.hasOwn(obj, key) ? obj[key] : undefined, childPath(label, key));
      (v.matched ? passed : failed).push(...v.reasons);
    }
    for (const alternatives of ors) {
      const orLabel = childPath(label, '$or');
      const verdicts = alternatives.map((m) => m.explain(value, label));
      const hit = verdicts.findIndex((v) => v.matched);
      if (hit >= 0) {
        passed.push(`${orLabel}[${hit}] matches`, ...verdicts[hit]!.reasons);
      } else {
        failed.push(`${orLabel}: no alternative matches`);
        verdicts.forEach((v, i) => failed.push(...v.reasons.map((r) => `${orLabel}[${i}]: ${r}`)));
      }
    }
    return failed.length === 0 ? { matched: true, reasons: passed } : { matched: false, reasons: failed };
  };

  const explain = (value: unknown, label: string): Verdict => {
    if (!Array.isArray(value)) return explainOne(value, label);
    const failed: string[] = [];
    for (let i = 0; i < value.length; i++) {
      const v = explain(value[i], `${label}[${i}]`);
      if (v.matched) return v;
      if (i < 3) failed.push(...v.reasons);
    }
    const more = value.length > 3 ? ` (${value.length - 3} more not shown)` : '';
    return { matched: false, reasons: [`${label || 'value'}: no element of the list matches${more}`, ...failed] };
  };

  return { test, explain };
}

/** The AND of the field patterns and `$or` groups, on one (non-list) value. */
function objectTest(fields: Field[], ors: ContentMatcher[][]): (value: unknown) => boolean {
  const field = (value: unknown, key: string): unknown =>
    typeof value === 'object' && value !== null && !Array.isArray(value) && Object.hasOwn(value, key)
      ? (value as Record<string, unknown>)[key]
      : undefined;
  if (ors.length === 0 && fields.length === 1) {
    const { key, matcher } = fields[0]!;
    const t = matcher.test;
    return (value) => t(field(value, key));
  }
  const keys = fields.map((f) => f.key);
  const tests = fields.map((f) => f.matcher.test);
  const orTests = ors.map((group) => group.map((m) => m.test));
  return (value) => {
    for (let i = 0; i < tests.length; i++) if (!tests[i]!(field(value, keys[i]!))) return false;
    for (let g = 0; g < orTests.length; g++) {
      const group = orTests[g]!;
      let any = false;
      for (let i = 0; i < group.length; i++) {
        if (group[i]!(value)) {
          any = true;
          break;
        }
      }
      if (!any) return false;
    }
    return true;
  };
}

function compileLeaf(leaf: unknown, path: string): ContentMatcher {
  let alternatives: unknown[];
  let altPath: (i: number) => string;
  if (Array.isArray(leaf)) {
    if (leaf.length === 0) throw invalid(path, 'an empty list matches nothing; list at least one value or operator');
    alternatives = leaf;
    altPath = (i) => `${path}[${i}]`;
  } else if (isScalar(leaf)) {
    alternatives = [leaf];
    altPath = () => path;
  } else {
    throw invalid(path, `expects a list of values or operators, a value, or an object of field patterns, got ${kindOf(leaf)}`);
  }

  const literals: Scalar[] = [];
  const tests: ScalarTest[] = [];
  let existsTrue = false;
  let existsFalse = false;
  alternatives.forEach((alt, i) => {
    const at = altPath(i);
    if (isScalar(alt)) {
      literals.push(alt);
      return;
    }
    if (!isPlainObject(alt)) throw invalid(at, `expects a value (string, number, boolean, null) or an operator object, got ${kindOf(alt)}`);
    const keys = Object.keys(alt);
    if (keys.length !== 1) {
      throw invalid(at, `an operator object has exactly one key (one of ${CONTENT_OPERATORS.join(', ')}), got ${keys.length === 0 ? 'none' : keys.join(', ')}`);
    }
    const op = keys[0]!;
    const arg = alt[op];
    if (op === 'exists') {
      if (typeof arg !== 'boolean') throw invalid(at, `exists expects true or false, got ${kindOf(arg)}`);
      if (arg) existsTrue = true;
      else existsFalse = true;
      return;
    }
    tests.push(compileOperator(op, arg, at));
  });

  const scalarTest = combine(literals, tests);
  const hasValueTests = literals.length > 0 || tests.length > 0;
  const valueTest = (value: unknown): boolean => {
    if (!Array.isArray(value)) return scalarTest(value);
    for (let i = 0; i < value.length; i++) if (valueTest(value[i])) return true;
    return false;
  };

  let test: (value: unknown) => boolean;
  if (existsTrue) test = existsFalse ? () => true : (value) => value !== undefined;
  else if (!hasValueTests) test = (value) => value === undefined; // only { exists: false }
  else if (existsFalse) test = (value) => value === undefined || valueTest(value);
  else if (tests.length === 0 && literals.length === 1) {
    const only = literals[0];
    test = (value) => value === only || (Array.isArray(value) && valueTest(value));
  } else test = (value) => value !== undefined && valueTest(value);

  const shown = showAlternatives(alternatives);
  const onlyLiterals = tests.length === 0 && !existsTrue && !existsFalse;
  const explain = (value: unknown, label: string): Verdict => {
    const matched = test(value);
    const name = label || 'value';
    if (value === undefined) {
      return { matched, reasons: [matched ? `${name}: absent, matches ${shown}` : `${name}: missing, expected ${shown}`] };
    }
    if (matched) return { matched, reasons: [`${name}: ${show(value)} matches ${shown}`] };
    if (Array.isArray(value)) return { matched, reasons: [`${name}: no element of ${show(value)} matches ${shown}`] };
    return { matched, reasons: [`${name}: ${show(value)} ${onlyLiterals ? 'is not one of' : 'does not match'} ${shown}`] };
  };

  return { test, explain };
}

/** One test for a scalar value: equal to one of the literals, or passing one of the operator tests. */
function combine(literals: Scalar[], tests: ScalarTest[]): ScalarTest {
  let literalTest: ScalarTest | null = null;
  if (literals.length === 1) {
    const only = literals[0];
    literalTest = (value) => value === only;
  } else if (literals.length > 1) {
    // Set membership is SameValueZero: 5 and 5.0 are one number, "5" and 5 are not equal.
    const set = new Set<unknown>(literals);
    literalTest = (value) => set.has(value);
  }
  if (tests.length === 0) return literalTest ?? (() => false);
  const all = literalTest === null ? tests : [literalTest, ...tests];
  if (all.length === 1) return all[0]!;
  return (value) => {
    for (let i = 0; i < all.length; i++) if (all[i]!(value)) return true;
    return false;
  };
}

// ---------------------------------------------------------------------------------------------------------
// Operators

function compileOperator(op: string, arg: unknown, path: string): ScalarTest {
  switch (op) {
    case 'prefix':
      return compilePrefixSuffix('prefix', arg, path);
    case 'suffix':
      return compilePrefixSuffix('suffix', arg, path);
    case 'equals-ignore-case': {
      const lower = expectString(op, arg, path).toLowerCase();
      return (value) => typeof value === 'string' && value.toLowerCase() === lower;
    }
    case 'wildcard': {
      const re = wildcardRegExp(expectString(op, arg, path));
      return (value) => typeof value === 'string' && re.test(value);
    }
    case 'anything-but':
      return compileAnythingBut(arg, path);
    case 'numeric':
      return compileNumeric(arg, path);
    case 'cidr':
      return compileCidr(arg, path);
    case 'regex': {
      const source = expectString(op, arg, path);
      let re: RegExp;
      try {
        re = new RegExp(source);
      } catch (err) {
        throw invalid(path, `regex is not a valid JavaScript regular expression: ${(err as Error).message}`);
      }
      return (value) => typeof value === 'string' && re.test(value);
    }
    default:
      throw invalid(path, `unknown operator "${op}"; known operators: ${CONTENT_OPERATORS.join(', ')}`);
  }
}

function expectString(op: string, arg: unknown, path: string): string {
  if (typeof arg !== 'string') throw invalid(path, `${op} expects a string, got ${kindOf(arg)}`);
  return arg;
}

/** `prefix: "x"`, or `prefix: { equals-ignore-case: "x" }` (EventBridge); likewise `suffix`. */
function compilePrefixSuffix(op: 'prefix' | 'suffix', arg: unknown, path: string): ScalarTest {
  if (isPlainObject(arg)) {
    const keys = Object.keys(arg);
    if (keys.length !== 1 || keys[0] !== 'equals-ignore-case' || typeof arg['equals-ignore-case'] !== 'string') {
      throw invalid(path, `${op} expects a string or { equals-ignore-case: string }`);
    }
    const lower = (arg['equals-ignore-case'] as string).toLowerCase();
    return op === 'prefix'
      ? (value) => typeof value === 'string' && value.toLowerCase().startsWith(lower)
      : (value) => typeof value === 'string' && value.toLowerCase().endsWith(lower);
  }
  if (typeof arg !== 'string') throw invalid(path, `${op} expects a string or { equals-ignore-case: string }, got ${kindOf(arg)}`);
  return op === 'prefix'
    ? (value) => typeof value === 'string' && value.startsWith(arg)
    : (value) => typeof value === 'string' && value.endsWith(arg);
}

/** EventBridge wildcard: `*` matches any run of characters (also none); `\*` is a literal star, `\\` a backslash. */
export function wildcardRegExp(pattern: string): RegExp {
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '\\' && (pattern[i + 1] === '*' || pattern[i + 1] === '\\')) {
      source += `\\${pattern[++i]}`;
    } else if (c === '*') {
      source += '.*';
    } else {
      source += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    }
  }
  return new RegExp(`^${source}$`, 's');
}

const ANYTHING_BUT_STRING_OPS = ['prefix', 'suffix', 'equals-ignore-case', 'wildcard'] as const;

function compileAnythingBut(arg: unknown, path: string): ScalarTest {
  const expects = `anything-but expects a value, a list of values, or one of { prefix | suffix | equals-ignore-case | wildcard: string or list of strings }`;
  if (isScalar(arg) || Array.isArray(arg)) {
    const values = Array.isArray(arg) ? arg : [arg];
    if (values.length === 0) throw invalid(path, `${expects}; got an empty list`);
    values.forEach((v, i) => {
      if (!isScalar(v)) throw invalid(`${path}`, `${expects}; element ${i} is ${kindOf(v)}`);
    });
    const excluded = new Set<unknown>(values);
    return (value) => isScalar(value) && !excluded.has(value);
  }
  if (!isPlainObject(arg)) throw invalid(path, `${expects}, got ${kindOf(arg)}`);
  const keys = Object.keys(arg);
  const op = keys[0];
  if (keys.length !== 1 || !(ANYTHING_BUT_STRING_OPS as readonly string[]).includes(op!)) {
    throw invalid(path, `${expects}, got { ${keys.join(', ')} }`);
  }
  const raw = arg[op!];
  const list = Array.isArray(raw) ? raw : [raw];
  if (list.length === 0 || !list.every((s): s is string => typeof s === 'string')) {
    throw invalid(path, `anything-but ${op} expects a string or a non-empty list of strings`);
  }
  let hit: (value: string) => boolean;
  switch (op) {
    case 'prefix':
      hit = (value) => list.some((p) => value.startsWith(p));
      break;
    case 'suffix':
      hit = (value) => list.some((s) => value.endsWith(s));
      break;
    case 'equals-ignore-case': {
      const lowered = new Set(list.map((s) => s.toLowerCase()));
      hit = (value) => lowered.has(value.toLowerCase());
      break;
    }
    default: {
      const res = list.map(wildcardRegExp);
      hit = (value) => res.some((re) => re.test(value));
    }
  }
  // Like EventBridge, the string forms of anything-but only ever match strings.
  return (value) => typeof value === 'string' && !hit(value);
}

function compileNumeric(arg: unknown, path: string): ScalarTest {
  const expects = 'numeric expects one or two comparisons: [op, number] or [">" or ">=", number, "<" or "<=", number], op one of =, >, >=, <, <=';
  if (!Array.isArray(arg) || (arg.length !== 2 && arg.length !== 4)) throw invalid(path, `${expects}; got ${show(arg)}`);
  const comparisons: Array<[string, number]> = [];
  for (let i = 0; i < arg.length; i += 2) {
    const op = arg[i];
    const n = arg[i + 1];
    if (typeof op !== 'string' || !NUMERIC_OPERATORS.has(op)) throw invalid(path, `${expects}; got operator ${show(op)}`);
    if (typeof n !== 'number' || !Number.isFinite(n)) throw invalid(path, `${expects}; got ${show(n)} after "${op}"`);
    comparisons.push([op, n]);
  }
  if (comparisons.length === 1) {
    const [op, n] = comparisons[0]!;
    switch (op) {
      case '=':
        return (value) => value === n;
      case '>':
        return (value) => typeof value === 'number' && value > n;
      case '>=':
        return (value) => typeof value === 'number' && value >= n;
      case '<':
        return (value) => typeof value === 'number' && value < n;
      default:
        return (value) => typeof value === 'number' && value <= n;
    }
  }
  const lower = comparisons.find(([op]) => op === '>' || op === '>=');
  const upper = comparisons.find(([op]) => op === '<' || op === '<=');
  if (lower === undefined || upper === undefined) throw invalid(path, `${expects}; two comparisons need a lower bound (> or >=) and an upper bound (< or <=)`);
  const [lowOp, low] = lower;
  const [highOp, high] = upper;
  if (low > high || (low === high && (lowOp === '>' || highOp === '<'))) {
    throw invalid(path, `numeric range ${show(arg)} is empty: no number matches it`);
  }
  const lowInclusive = lowOp === '>=';
  const highInclusive = highOp === '<=';
  return (value) =>
    typeof value === 'number' &&
    (lowInclusive ? value >= low : value > low) &&
    (highInclusive ? value <= high : value < high);
}

function compileCidr(arg: unknown, path: string): ScalarTest {
  if (typeof arg !== 'string') throw invalid(path, `cidr expects a string such as "10.0.0.0/24" or "2001:db8::/32", got ${kindOf(arg)}`);
  let range: [ipaddr.IPv4 | ipaddr.IPv6, number];
  if (ipaddr.IPv4.isValidCIDRFourPartDecimal(arg)) range = ipaddr.IPv4.parseCIDR(arg);
  else if (ipaddr.IPv6.isValidCIDR(arg)) range = ipaddr.IPv6.parseCIDR(arg);
  else throw invalid(path, `cidr expects an IPv4 or IPv6 range such as "10.0.0.0/24" or "2001:db8::/32", got ${show(arg)}`);
  const [network, bits] = range;
  if (network.kind() === 'ipv4') {
    const v4 = network as ipaddr.IPv4;
    return (value) => {
      if (typeof value !== 'string') return false;
      if (ipaddr.IPv4.isValidFourPartDecimal(value)) return ipaddr.IPv4.parse(value).match(v4, bits);
      if (!ipaddr.IPv6.isValid(value)) return false;
      // An IPv4-mapped IPv6 address (::ffff:10.0.0.1) is that IPv4 address.
      const v6 = ipaddr.IPv6.parse(value);
      return v6.isIPv4MappedAddress() && v6.toIPv4Address().match(v4, bits);
    };
  }
  const v6 = network as ipaddr.IPv6;
  return (value) => typeof value === 'string' && ipaddr.IPv6.isValid(value) && ipaddr.IPv6.parse(value).match(v6, bits);
}
