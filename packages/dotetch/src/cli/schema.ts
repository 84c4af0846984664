/**
 * The version of every `--json` document (see json.ts and the README's "JSON output"). Its own module, so
 * `etch` can print a JSON error without loading what the commands use.
 */
export const SCHEMA_VERSION = 1;
