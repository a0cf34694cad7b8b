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
 * Templates are compiled once, when the configuration loads; rendering an expression costs well under a
 * microsecond, which matters because it happens for every run.
 */

import { Context, Liquid, Value, toValueSync, type Template as LiquidTemplate } from 'liquidjs';
import { DispatcherError } from './errors.js';

export interface Template {
  /** True when the value holds no template at all: `render` returns it unchanged. */
  readonly isStatic: boolean;
  render(scope: object): unknown;
}

const EXPRESSION_ONLY = /^\{\{-?\s*([\s\S]*?)\s*-?\}\}$/;
const HAS_TEMPLATE = /\{\{|\{%/;
const TAG = /\{%/;
const SPLIT = /\{\{-?\s*([\s\S]*?)\s*-?\}\}/g;

type Renderer = (ctx: Context) => unknown;

export class TemplateEngine {
  readonly #liquid = new Liquid({
    ownPropertyOnly: true,
    strictFilters: true,
    strictVariables: false,
    outputEscape: undefined,
    cache: false,
  });

  compile(value: unknown, path = ''): Template {
    const renderer = this.#compileValue(value, path);
    if (renderer === null) return { isStatic: true, render: () => value };
    const liquid = this.#liquid;
    return {
      isStatic: false,
      render(scope: object): unknown {
        return renderer(new Context(scope, liquid.options));
      },
    };
  }

  /** Returns null when the value holds no template (its static value is used as is). */
  #compileValue(value: unknown, path: string): Renderer | null {
    if (typeof value === 'string') return this.#compileString(value, path);
    if (Array.isArray(value)) {
      const parts = value.map((v, i) => this.#compileValue(v, `${path}/${i}`));
      if (parts.every((p) => p === null)) return null;
      return (ctx) => parts.map((p, i) => (p === null ? value[i] : p(ctx)));
    }
    if (value !== null && typeof value === 'object') {
      const entries = Object.entries(value).map(([k, v]) => [k, v, this.#compileValue(v, `${path}/${k}`)] as const);
      if (entries.every(([, , p]) => p === null)) return null;
      return (ctx) => {
        const out: Record<string, unknown> = {};
        for (const [k, v, p] of entries) out[k] = p === null ? v : p(ctx);
        return out;
      };
    }
    return null;
  }

  #compileString(text: string, path: string): Renderer | null {
    if (!HAS_TEMPLATE.test(text)) return null;
    try {
      if (TAG.test(text)) {
        const tpl: LiquidTemplate[] = this.#liquid.parse(text);
        const liquid = this.#liquid;
        return (ctx) => String(toValueSync(liquid.renderer.renderTemplates(tpl, ctx)));
      }
      const only = EXPRESSION_ONLY.exec(text);
      if (only && !only[1]!.includes('}}')) {
        const v = new Value(only[1]!, this.#liquid);
        return (ctx) => toValueSync(v.value(ctx, false)) ?? null;
      }
      // Literal text with expressions in it: evaluate each expression, concatenate.
      const pieces: Array<string | Value> = [];
      let last = 0;
      for (const m of text.matchAll(SPLIT)) {
        if (m.index! > last) pieces.push(text.slice(last, m.index));
        pieces.push(new Value(m[1]!, this.#liquid));
        last = m.index! + m[0].length;
      }
      if (last < text.length) pieces.push(text.slice(last));
      return (ctx) => {
        let out = '';
        for (const p of pieces) out += typeof p === 'string' ? p : stringify(toValueSync(p.value(ctx, false)));
        return out;
      };
    } catch (err) {
      throw new DispatcherError('template_error', `template at ${path || '/'} does not parse: ${(err as Error).message}`, { cause: err });
    }
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
