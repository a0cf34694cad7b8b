/**
 * Opens the store a URL names. Each implementation is imported only when configured, so an embedded
 * deployment never loads the PostgreSQL driver and the other way round.
 */

import { DispatcherError } from '../core/errors.js';
import type { Store } from './types.js';

export interface OpenStoreOptions {
  url: string;
  poolSize?: number;
  /** PostgreSQL: the longest wait for one statement's answer, in ms (`store.queryTimeout`; default 30 s). */
  queryTimeout?: number;
}

export async function openStore(options: OpenStoreOptions): Promise<Store> {
  const { url } = options;
  if (url.startsWith('sqlite:')) {
    const { SqliteStore, parseSqliteUrl } = await import('./sqlite/index.js');
    return new SqliteStore(parseSqliteUrl(url));
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    const { PostgresStore } = await import('./postgres/index.js');
    // `?schema=NAME` keeps the dispatcher's tables in that schema (created if missing); the rest of the URL
    // goes to the driver as it is.
    const parsed = new URL(url);
    const schema = parsed.searchParams.get('schema') ?? undefined;
    parsed.searchParams.delete('schema');
    return new PostgresStore({ connectionString: parsed.toString(), poolSize: options.poolSize ?? 10, queryTimeout: options.queryTimeout ?? 30_000, ...(schema ? { schema } : {}) });
  }
  throw new DispatcherError('config_invalid', `store.url: "${url.replace(/:[^:@/]*@/, ':***@')}" is neither sqlite:… nor postgres://…`);
}

export type { Store } from './types.js';
