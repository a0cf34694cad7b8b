/**
 * The configuration docs, generated from the schema so that they cannot drift from it:
 * docs/config.schema.json (the JSON Schema, for editors and other tools) and docs/configuration.md (the
 * reference). test/config.test.ts fails when the committed files differ from what this produces.
 *
 *   node dist/config/docs.js           write both files
 *   node dist/config/docs.js --check   exit 1 when they are out of date
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino } from 'pino';
import type { ActionType } from '../core/action.js';
import { PRESET, type Preset } from '../preset.js';
import { DEFAULTS } from './defaults.js';
import { CONFIG_SCHEMA, ENV_OPTIONS, FIXED_SECTIONS, profileEnvOptions, unitOf, type SchemaNode } from './schema.js';

/**
 * The published JSON Schema: the configuration's, plus what the loader checks later and an editor should
 * flag as it is typed: each action type's parameters (an `http` action without `url`), and, when no plugin
 * or profile is configured, that an action names a type the dispatcher has (`htp` is an error).
 */
export function renderSchemaJson(preset: Preset = PRESET): string {
  const schema = structuredClone(CONFIG_SCHEMA) as SchemaNode & { allOf?: unknown[] };
  const item = (schema.properties!.routes!.items as SchemaNode).properties!.actions!.items as SchemaNode;
  const known = staticActionTypes(preset);
  const properties = item.properties as Record<string, SchemaNode>;
  for (const type of known) {
    const params = type.paramsSchema as { required?: string[] } | undefined;
    // `- noop:` with nothing after it is an action without parameters: null, where none is required.
    properties[type.type] = (params === undefined ? { type: ['object', 'null'] } : params.required?.length ? params : { anyOf: [{ type: 'null' }, params] }) as SchemaNode;
  }
  schema.allOf = [
    {
      // Plugins and profiles bring action types of their own: with one, any type name is let through to the loader.
      if: { anyOf: [{ required: ['plugins'], properties: { plugins: { type: 'object', minProperties: 1 } } }, { required: ['profiles'], properties: { profiles: { type: 'object', minProperties: 1 } } }] },
      else: { properties: { routes: { items: { properties: { actions: { items: { propertyNames: { enum: ['name', ...known.map((t) => t.type)] } } } } } } } },
    },
  ];
  return `${JSON.stringify(schema, null, 2)}\n`;
}

interface OptionRow {
  path: string;
  type: string;
  default: string;
  env: string;
  description: string;
}

/** What stands for a key chosen by the user, in option paths: `types.<name>.schema`. */
const PLACEHOLDERS: Record<string, string> = {
  actions: '<type>',
  plugins: '<type>',
  types: '<name>',
  'routes[].labels': '<name>',
  'routes[].actions[]': '<type>',
};

function typeOf(node: SchemaNode): string {
  const unit = unitOf(node);
  if (unit !== null) return unit;
  if (node.enum !== undefined) return `one of ${node.enum.map((v) => `\`${String(v)}\``).join(', ')}`;
  const types = Array.isArray(node.type) ? (node.type as string[]) : node.type === undefined ? [] : [node.type as string];
  let text = types.join(' or ');
  if (node.type === 'array' && node.items !== undefined) text = `${typeOf(node.items)}[]`;
  if (node.type === 'object' && node.properties === undefined && typeof node.additionalProperties === 'object') {
    text = `map of ${typeOf(node.additionalProperties)}`;
  }
  if (node.minimum !== undefined && node.maximum !== undefined) text += ` (${node.minimum}–${node.maximum})`;
  else if (node.minimum !== undefined) text += ` ≥ ${node.minimum}`;
  return text;
}

function defaultOf(node: SchemaNode, required: boolean): string {
  if (required) return 'required';
  if (node.default === undefined) return '—';
  // A section's default is the sum of its options' defaults, shown on each of them.
  if (node.properties !== undefined && node.type === 'object') return '—';
  return `\`${typeof node.default === 'string' ? node.default : JSON.stringify(node.default)}\``;
}

function collectRows(): OptionRow[] {
  const env = new Map([...ENV_OPTIONS, ...profileEnvOptions()].map((o) => [o.path.join('.'), o.variable]));
  const rows: OptionRow[] = [];
  const visit = (node: SchemaNode, path: string, keyPath: string | null, required: boolean): void => {
    rows.push({
      path,
      type: typeOf(node),
      default: defaultOf(node, required),
      env: keyPath !== null && env.has(keyPath) ? `\`${env.get(keyPath)}\`` : '—',
      description: node.description ?? '',
    });
    for (const [key, child] of Object.entries(node.properties ?? {})) {
      visit(child, `${path}.${key}`, keyPath === null ? null : `${keyPath}.${key}`, node.required?.includes(key) ?? false);
    }
    if (typeof node.additionalProperties === 'object') {
      visit(node.additionalProperties, `${path}.${PLACEHOLDERS[path] ?? '<key>'}`, null, false);
    }
    if (node.type === 'array' && node.items?.type === 'object') visit(node.items, `${path}[]`, null, false);
  };
  for (const [key, child] of Object.entries(CONFIG_SCHEMA.properties ?? {})) visit(child, key, key, false);
  return rows;
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function table(rows: OptionRow[]): string {
  const lines = ['| option | type | default | environment | description |', '|---|---|---|---|---|'];
  for (const r of rows) {
    lines.push(`| \`${cell(r.path)}\` | ${cell(r.type)} | ${cell(r.default)} | ${cell(r.env)} | ${cell(r.description)} |`);
  }
  return lines.join('\n');
}

export function renderConfigurationReference(): string {
  const rows = collectRows();
  const sections = Object.keys(CONFIG_SCHEMA.properties ?? {});
  const reference = sections
    .map((section) => {
      const node = CONFIG_SCHEMA.properties![section]!;
      const own = rows.filter((r) => r.path === section || r.path.startsWith(`${section}.`) || r.path.startsWith(`${section}[`));
      return `### \`${section}\`\n\n${node.description ?? ''}\n\n${table(own)}`;
    })
    .join('\n\n');

  return `# Configuration

<!-- Generated by src/config/docs.ts from the schema the parts declare (src/config/schema.ts composes it): do not edit by hand.
     Regenerate with \`node dist/config/docs.js\` after \`npm run build\`; a test fails while this file is stale. -->

The dispatcher reads one configuration, described by one JSON Schema
([\`config.schema.json\`](config.schema.json)), checked once when it starts, then frozen. With no
configuration at all it works: an embedded SQLite store, the HTTP server on \`${DEFAULTS.server.host}:${DEFAULTS.server.port}\`,
and one built-in route, \`example\`, which runs the \`noop\` action for every \`example.*\` event, so that a
POSTed \`example.hello\` event becomes a run that succeeds.

\`dispatcher init-config\` writes a commented starter file (\`-i\` asks for the port, the store, a first route
with an \`http\` action, and where the admin API key is kept, and makes that key at once);
\`dispatcher validate-config\` checks a file and prints every problem. The starter's first line,
\`# yaml-language-server: $schema=…\`, points editors (VS Code with the YAML extension, and others that speak
the YAML language server) at [config.schema.json](config.schema.json), which flags unknown keys, wrong types,
an unknown action type and an \`http\` action without \`url\` as you type. Every command reads the file named
by \`--config\`, else \`DISPATCHER_CONFIG\`, else \`./dispatcher.yaml\` when there is one.

## Checking a configuration

\`dispatcher validate-config dispatcher.yaml\` checks everything \`serve\` checks when it starts, without opening
the store: the schema, the routes (names, matches, action types and their parameters, every template) and
the type schemas. It prints every problem at once, in the file's order, each as \`file:line: path: problem\`,
and exits 1:

\`\`\`text
dispatcher: Invalid configuration (3 problems):
  dispatcher.yaml:2: server.prot: unknown key "prot" (did you mean "port"?); known keys: host, port, …
  dispatcher.yaml:10: types["alert.raised"].schema.properties.severity.type: must be one of array, boolean, integer, null, number, object or string (or a list of them), got "strin"
  dispatcher.yaml:20: routes[2].actions[0].http.url: the template does not parse: output "{{ data.id " not closed, line:1, col:21
\`\`\`

A problem with a value from the environment names the variable instead of the file. What is accepted but
not checked (a \`format\` in a type schema that no validator knows) is a \`warning:\` line; \`serve\` logs it.
Valid, it prints \`dispatcher.yaml: valid (2 routes, 1 type)\` and exits 0.

## Layers and precedence

Four layers, each overriding the one before:

1. **defaults**, listed below;
2. **the file**: YAML (or JSON), the one given with \`--config\` (\`loadConfig({ file })\`), else the one
   named by the \`DISPATCHER_CONFIG\` environment variable; with neither, there is no file;
3. **the environment**: \`DISPATCHER_*\` variables;
4. **flags** on the command line (or \`overrides\` given to \`loadConfig\`).

Objects merge key by key, all the way down; a list replaces the list before it (a file that sets \`routes\`
replaces the built-in \`example\` route; \`DISPATCHER_ACTIONS_HTTP_ALLOW\` replaces \`actions.http.allow\`).

## Environment variables

Every scalar option of the fixed sections (${FIXED_SECTIONS.map((s) => `\`${s}\``).join(', ')}) has a
variable: \`DISPATCHER_\` followed by its path in upper snake case (\`server.port\` → \`DISPATCHER_SERVER_PORT\`,
\`deadLetters.maxCount\` → \`DISPATCHER_DEAD_LETTERS_MAX_COUNT\`). The text is read as the option's type:
integers as integers; booleans as \`true\`/\`false\` (also \`yes\`/\`no\`, \`on\`/\`off\`, \`1\`/\`0\`); durations and
sizes as below; lists comma-separated. An empty variable counts as unset. A value that does not read is an
error naming the variable.

## Substitution: \`\${VAR}\`

In the file's string values (not keys, not comments), before anything is checked:

| written | becomes |
|---|---|
| \`\${VAR}\` | the value of the environment variable \`VAR\`; an error naming the file and the option when it is unset |
| \`\${VAR:-default}\` | the value of \`VAR\`, or \`default\` when \`VAR\` is unset or empty |
| \`$\${\` | a literal \`\${\` |

A substituted value where the schema wants a number, a boolean, a duration or a size is read like an
environment variable, so \`port: \${PORT:-8080}\` is the port 8080.

## Units

- **duration**: \`500ms\`, \`30s\`, \`5m\`, \`1h\`, \`7d\` (decimals allowed: \`1.5s\`), or an integer number of
  milliseconds. The loaded configuration holds milliseconds.
- **size**: \`512B\`, \`64KB\` (1000), \`64KiB\` (1024), \`1MB\`, \`1MiB\`, \`1GB\`, \`1GiB\`, or an integer number of bytes.
  The loaded configuration holds bytes.

Action parameters (\`routes[].actions[].<type>\`) and the settings of action types other than \`http\` are
handed to the action as written: it reads its own units.

## Profiles

A profile makes the dispatcher speak one seed system's interface (its routes, actions, decoders, presenters
and tables; see [profiles/](profiles/README.md)). Its key under \`profiles\` switches it on, with its options
(\`profiles: { <name>: {} }\`, or the key with nothing after it, for the defaults); what it registers exists only
then. An input may name a profile's decoder (\`decoder: { format: <profile>.<name>, options: {…} }\`) and an
output's stream a profile's presenter (\`presenter: <profile>.<name>\`) only while the profile is on.

## Paths

\`plugins.<type>\` paths starting with \`./\` or \`../\`, and every \`types.<name>.schemaFile\`, are relative to
the folder of the configuration file (to the working directory when they come from flags). A \`schemaFile\`
(JSON, or YAML) is read into \`schema\`; giving both is an error.

## Errors

Unknown keys are errors in every section whose keys are fixed (all but \`actions.<type>\`, \`plugins\`,
\`types\` keys, \`routes[].match\`, action parameters and \`labels\`), so a typo never goes unnoticed. Route
names must be unique. Every problem is reported at once, each naming where the value came from (the
file, the environment variable, \`flags\`), the option and what is wrong:

\`\`\`
Invalid configuration (3 problems):
  dispatcher.yaml: server.prot: unknown key "prot" (did you mean "port"?); known keys: host, port, bodyLimit, requestTimeout
  dispatcher.yaml: routes[1].name: route name "page" is used twice: by routes[0] and routes[1]
  DISPATCHER_RUNNER_LEASE: runner.lease: must be a duration (500ms, 30s, 5m, 1h, 7d) or a number of milliseconds, got "30 sec"
\`\`\`

YAML syntax errors give the line and column. The error's code is \`config_invalid\`; its \`problems\` list
each place as a JSON pointer (\`/routes/1/name\`) with the message.

## Options

${reference}
`;
}

const DOCS = new URL('../../docs/', import.meta.url);
export const SCHEMA_JSON_FILE = fileURLToPath(new URL('config.schema.json', DOCS));
export const REFERENCE_FILE = fileURLToPath(new URL('configuration.md', DOCS));

function main(argv: readonly string[]): number {
  const outputs: Array<[string, string]> = [
    [SCHEMA_JSON_FILE, renderSchemaJson()],
    [REFERENCE_FILE, renderConfigurationReference()],
  ];
  if (argv.includes('--check')) {
    const stale = outputs.filter(([file, text]) => {
      try {
        return readFileSync(file, 'utf8') !== text;
      } catch {
        return true;
      }
    });
    for (const [file] of stale) process.stderr.write(`${file} is out of date: run node dist/config/docs.js\n`);
    return stale.length === 0 ? 0 : 1;
  }
  for (const [file, text] of outputs) {
    writeFileSync(file, text);
    process.stdout.write(`wrote ${file}\n`);
  }
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = main(process.argv.slice(2));
}

/** The action types every configuration has (the built-in entries'), known without reading one. */
function staticActionTypes(preset: Preset): ActionType[] {
  const log = pino({ level: 'silent' });
  return preset
    .filter((p) => p.builtIn === true)
    .flatMap((p) => (typeof p.actionTypes === 'function' ? p.actionTypes({ name: p.name, config: {}, log }) : (p.actionTypes ?? [])));
}
