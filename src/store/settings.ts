/** The `store` section of the configuration: where events, runs, run events and dead letters are kept. */

import { duration, section, Type, type Options } from '../core/options.js';

export const STORE_SECTION = section(
  {
    url: Type.String({
      pattern: '^(sqlite:.+|postgres(ql)?://.+)$',
      description:
        '`sqlite:<file>` (embedded; a relative file is taken from the working directory; `sqlite::memory:` for a ' +
        'throw-away store) or `postgres://user:password@host:5432/db` (scale-out; `?schema=NAME` keeps the tables in ' +
        'that schema, created if missing).',
      default: 'sqlite:./data/dispatcher.db',
    }),
    poolSize: Type.Integer({ minimum: 1, description: 'Connections in the pool (PostgreSQL).', default: 10 }),
    queryTimeout: duration(
      'Longest wait for an answer to one statement (PostgreSQL): past it the statement fails as `store_unavailable` and its connection is ' +
        'closed, so that a server or network that stops answering (without closing the connection) cannot hold the dispatcher. Migrations are not bound by it.',
      '30s',
    ),
  },
  { description: 'Where events, runs, run events and dead letters are kept.' },
);
export type StoreConfig = Options<typeof STORE_SECTION>;
