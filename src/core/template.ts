/**
 * Templates: action parameters, labels and ordering keys rendered from an event with Liquid
 * (https://liquidjs.com), a sandboxed template language: no `eval`, no access to prototypes or
 * functions, only the event's own properties and Liquid's filters.
 *
 * A template is any JSON value; every string inside it may hold `{{ expression }}` or `{% tag %}`.
 * A string that is exactly one `{{ expression }}` keeps the type of its value (a number stays a number, an
 * object stays an object), so `body: { count: "{{ data.count }}" }` sends a number. Every other string
 * renders to a string.
 *
 * Templates are compiled once, when the configuration loads: Liquid's own parser reads every one then, so
 * an unclosed `{{`, an unknown filter or an unclosed tag is a configuration error naming the parameter, never
 * text sent as it is. Rendering an expression costs well under a microsecond, which matters because it
 * happens for every run.
 *
 * A template for a URL (`escape: 'url'`) percent-encodes what each expression renders (`encodeURIComponent`),
 * so that event data placed in a path or a query stays a value: `orders/{{ data.id }}` with the id
 * `../admin?all=1#` reaches `orders/..%2Fadmin%3Fall%3D1%23`. The `raw` filter keeps a value as it is, for a
 * trusted whole URL (`{{ data.callback_url | raw }}`); a value that is `.` or `..` (a path's dot segment) is
 * refused.
 */

import { Context, Liquid, Value, toValueSync, type Template as LiquidTemplate } from 'liquidjs';
import { DispatcherError, type ErrorProblem } from './errors.js';
import { fromPointer, toDisplayPath, toPointer, type Path } from './paths.js';

export interface Template {
  /** True when the value holds no template at all: `render` returns it unchanged. */
  readonly isStatic: boolean;
  render(scope: object): unknown;
}

export interface CompileOptions {
  /** `url`: what expressions render is percent-encoded, unless their last filter is `raw`. */
  escape?: 'url';
}

/** A value rendered into a URL: percent-encoded, and never a dot segment (`.`, `..`), which a URL resolves away. */
export function escapeUrlValue(value: unknown): string {
  const text = encodeURIComponent(value === undefined || value === null ? '' : typeof value === 'object' ? JSON.stringify(value) : String(value));
  if (text === '.' || text === '..') throw new DispatcherError('template_error', `a value rendered into a URL is "${text}", a dot segment: it would change the path`);
  return text;
}



const EXPRESSION_ONLY = /^\{\{-?\s*([\s\S]*?)\s*-?\}\}$/;
const HAS_TEMPLATE = /\{\{|\{%/;
const TAG = /\{%/;
const SPLIT = /\{\{-?\s*([\s\S]*?)\s*-?\}\}/g;

type Renderer = (ctx: Context) => unknown;
type Escape = ((v: unknown) => string) | undefined;

export class TemplateEngine {
  readonly #liquid = new Liquid({
    ownPropertyOnly: true,
    strictFilters: true,
    strictVariables: false,
    outputEscape: undefined,
    cache: false,
  });
  /** The same, percent-encoding what `{{ … }}` outputs inside tags too (`raw` opts out). */
  readonly #urlLiquid = new Liquid({ ...this.#liquid.options, outputEscape: escapeUrlValue });

  /**
   * Compile a template found at `path` in the configuration; throws `config_invalid` naming the parameter
   * (`routes[0].actions[0].http.body.text`, with its JSON pointer) when a string in it does not parse.
   */
  compile(value: unknown, path: Path = [], options: CompileOptions = {}): Template {
    const liquid = options.escape === 'url' ? this.#urlLiquid : this.#liquid;
    const problems: ErrorProblem[] = [];
    const renderer = this.#compileValue(value, path, liquid, options.escape === 'url' ? escapeUrlValue : undefined, problems);
    if (problems.length > 0) {
      const lines = problems.map((p) => `${toDisplayPath(fromPointer(p.pointer)) || '(template)'}: ${p.message}`);
      throw new DispatcherError('config_invalid', lines.join('\n'), { problems });
    }
    if (renderer === null) return { isStatic: true, render: () => value };
    return {
      isStatic: false,
      render(scope: object): unknown {
        return renderer(new Context(scope, liquid.options));
      },
    };
  }

  /** Returns null when the value holds no template (its static value is used as is). */
  #compileValue(value: unknown, path: Path, liquid: Liquid, escape: Escape, problems: ErrorProblem[]): Renderer | null {
    if (typeof value === 'string') return this.#compileString(value, path, liquid, escape, problems);
    if (Array.isArray(value)) {
      const parts = value.map((v, i) => this.#compileValue(v, [...path, i], liquid, escape, problems));
      if (parts.every((p) => p === null)) return null;
      return (ctx) => parts.map((p, i) => (p === null ? value[i] : p(ctx)));
    }
    if (value !== null && typeof value === 'object') {
      const entries = Object.entries(value).map(([k, v]) => [k, v, this.#compileValue(v, [...path, k], liquid, escape, problems)] as const);
      if (entries.every(([, , p]) => p === null)) return null;
      return (ctx) => {
        const out: Record<string, unknown> = {};
        for (const [k, v, p] of entries) out[k] = p === null ? v : p(ctx);
        return out;
      };
    }
    return null;
  }

  /** Every string that does not parse is a problem (all of them, not the first). */
  #compileString(text: string, path: Path, liquid: Liquid, escape: Escape, problems: ErrorProblem[]): Renderer | null {
    if (!HAS_TEMPLATE.test(text)) return null;
    let tpl: LiquidTemplate[];
    try {
      // Liquid's own parser: an unclosed output or tag, an unknown filter or tag is found now.
      tpl = liquid.parse(text);
    } catch (err) {
      const why = (err as Error).message.split('\n', 1)[0]!;
      problems.push({ pointer: toPointer(path), message: `the template does not parse: ${why}` });
      return null;
    }
    if (TAG.test(text)) return (ctx) => String(toValueSync(liquid.renderer.renderTemplates(tpl, ctx)));
    /** An expression's value, percent-encoded for a URL unless its last filter is `raw`. */
    const evaluate = (v: Value): ((ctx: Context) => unknown) => {
      const raw = v.filters[v.filters.length - 1]?.raw === true;
      if (escape === undefined || raw) return (ctx) => toValueSync(v.value(ctx, false));
      return (ctx) => escape(toValueSync(v.value(ctx, false)));
    };
    const only = EXPRESSION_ONLY.exec(text);
    if (only && !only[1]!.includes('}}')) {
      const value = evaluate(new Value(only[1]!, liquid));
      return (ctx) => value(ctx) ?? null;
    }
    // Literal text with expressions in it: evaluate each expression, concatenate.
    const pieces: Array<string | ((ctx: Context) => unknown)> = [];
    let last = 0;
    for (const m of text.matchAll(SPLIT)) {
      if (m.index! > last) pieces.push(text.slice(last, m.index));
      pieces.push(evaluate(new Value(m[1]!, liquid)));
      last = m.index! + m[0].length;
    }
    if (last < text.length) pieces.push(text.slice(last));
    return (ctx) => {
      let out = '';
      for (const p of pieces) out += typeof p === 'string' ? p : stringify(p(ctx));
      return out;
    };
  }
}

function stringify(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** The scope a template sees: the event's attributes at the top (`{{ data.title }}`), and the run. */
export function templateScope(event: object, run?: { id: string; attempt: number }): object {
  return run === undefined ? { ...event, event } : { ...event, event, run };
}
