/** Paging and time ranges, shared by every list the store answers (runs, hosts, events, dead letters, the audit log). */

export type SortDirection = 'asc' | 'desc';

export interface Page {
  limit: number;
  offset: number;
}

export interface TimeRange {
  from?: number;
  to?: number;
}

export interface Listing<T> {
  items: T[];
  total: number;
}
