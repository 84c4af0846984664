/** Structured context for a log line. Values must not contain credentials. */
export type LogFields = Record<string, unknown>;

/**
 * The one logging interface the packages accept. Libraries never print; they call the logger they were given
 * (silent by default), and the CLI decides where lines go.
 */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
}

/** A logger that drops everything: the default for library calls. */
export const silentLogger: Logger = Object.freeze({
  debug() {},
  info() {},
  warn() {},
});
