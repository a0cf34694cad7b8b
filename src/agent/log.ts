/** What the agent logs through: a pino logger fits, and so does anything with these four methods. */

export interface AgentLog {
  debug(fields: object, message: string): void;
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

const nothing = () => undefined;

/** Logs nothing. */
export const SILENT: AgentLog = { debug: nothing, info: nothing, warn: nothing, error: nothing };
