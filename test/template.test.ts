/**
 * Templates are read by Liquid's own parser when the configuration is checked: an unclosed output, an
 * unknown filter or an unclosed tag is an error naming the route, the action and the parameter, never text
 * sent as it is; and every route's problems are reported at once.
 */

import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { builtinActionTypes } from '../src/actions/index.js';
import { compileRoutes, type RouteConfig } from '../src/core/routes.js';
import { escapeUrlValue, TemplateEngine } from '../src/core/template.js';

const engine = new TemplateEngine();

function compileError(value: unknown, path: Array<string | number> = ['routes', 0, 'actions', 0, 'http', 'body']): { message: string; problems: unknown } {
  try {
    engine.compile(value, path);
  } catch (err) {
    expect((err as { code?: string }).code).toBe('config_invalid');
    return { message: (err as Error).message, problems: (err as { problems?: unknown }).problems };
  }
  throw new Error(`${JSON.stringify(value)} compiled`);
}

describe('templates, when the configuration is checked', () => {
  it('refuses an unclosed output, an unknown filter, an unclosed or unknown tag, naming the parameter and its pointer', () => {
    expect(compileError({ text: 'Alert: {{ data.title ' })).toEqual({
      message: 'routes[0].actions[0].http.body.text: the template does not parse: output "{{ data.title " not closed, line:1, col:8',
      problems: [{ pointer: '/routes/0/actions/0/http/body/text', message: 'the template does not parse: output "{{ data.title " not closed, line:1, col:8' }],
    });
    expect(compileError({ list: ['ok', '{{ data.x | shout }}'] }).message).toBe(
      'routes[0].actions[0].http.body.list[1]: the template does not parse: undefined filter: shout, line:1, col:1',
    );
    expect(compileError('{% if data.x %}open').message).toMatch(/body: the template does not parse: tag \{% if data.x %\} not closed/);
    expect(compileError('{% teleport %}').message).toMatch(/tag "teleport" not found/);
    expect(compileError({ 'x-key': '{{ }}' }).message).toMatch(/^routes\[0\]\.actions\[0\]\.http\.body\.x-key: the template does not parse/);
    expect(compileError({ 'a.b': '{{ }}' }).message).toMatch(/^routes\[0\]\.actions\[0\]\.http\.body\["a\.b"\]: the template does not parse/);
  });

  it('keeps what parses: a lone expression keeps its type, text with expressions renders to text', () => {
    const scope = { data: { n: 3, tags: ['a'], title: 'T' } };
    expect(engine.compile('{{ data.n }}').render(scope)).toBe(3);
    expect(engine.compile('{{ data.tags }}').render(scope)).toEqual(['a']);
    expect(engine.compile('n={{ data.n }}, {{ data.title | downcase }}').render(scope)).toBe('n=3, t');
    expect(engine.compile('a }} b').render(scope)).toBe('a }} b');
  });

  it('percent-encodes what a URL template renders (tags too), unless raw; refuses dot segments', () => {
    const scope = { data: { id: 'a/b?c#d', url: 'https://x/y?z=1', dots: '..' } };
    expect(engine.compile('https://h/{{ data.id }}', [], { escape: 'url' }).render(scope)).toBe('https://h/a%2Fb%3Fc%23d');
    expect(engine.compile('{{ data.url | raw }}', [], { escape: 'url' }).render(scope)).toBe('https://x/y?z=1');
    expect(engine.compile('https://h/{% if data.id %}{{ data.id }}{% endif %}', [], { escape: 'url' }).render(scope)).toBe('https://h/a%2Fb%3Fc%23d');
    expect(() => engine.compile('https://h/{{ data.dots }}', [], { escape: 'url' }).render(scope)).toThrow(/dot segment/);
    expect(escapeUrlValue(null)).toBe('');
  });

  it('reports every broken route, action and template at once', async () => {
    const route = (name: string, actions: unknown[], extra: Partial<RouteConfig> = {}): RouteConfig =>
      ({ name, enabled: true, match: { type: 'x' }, actions, retry: { attempts: 1, backoff: 1, maxBackoff: 1, maxAge: 1 }, timeout: 1, deadline: 1, labels: {}, ...extra }) as RouteConfig;
    const promise = compileRoutes({
      routes: [
        route('fine', [{ noop: {} }]),
        route('bad-template', [{ http: { url: 'https://example.com/{{ data.id ' } }]),
        route('bad-type', [{ teleport: {} }, { http: { url: 'https://example.com', body: { t: '{{ x | nope }}' } } }]),
        route('bad-match', [{ noop: {} }], { match: { data: { severity: [] } } }),
        route('bad-key', [{ noop: {} }], { orderingKey: '{% nope %}' }),
      ],
      actionTypes: new Map(builtinActionTypes.map((t) => [t.type, t])),
      actionSettings: {},
      log: pino({ level: 'silent' }),
    });
    const err = (await promise.catch((e: unknown) => e)) as Error & { code: string; problems: Array<{ pointer: string; message: string }> };
    expect(err.code).toBe('config_invalid');
    expect(err.problems.map((p) => p.pointer)).toEqual([
      '/routes/1/actions/0/http/url',
      '/routes/2/actions/0',
      '/routes/2/actions/1/http/body/t',
      '/routes/3/match',
      '/routes/4/orderingKey',
    ]);
    expect(err.message).toMatch(/^Invalid routes \(5 problems\):/);
    expect(err.message).toContain('routes[2].actions[0]: unknown action type "teleport"');
    expect(err.message).toContain('routes[2].actions[1].http.body.t: the template does not parse: undefined filter: nope');
    expect(err.message).toContain('routes[3].match.data.severity');
  });
});
