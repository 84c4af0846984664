import type { Readable, Writable } from 'node:stream';
import type { Logger } from '@etch/format';

/** What a command gets from the process: streams, environment, the Ctrl-C signal, a logger. */
export interface CliContext {
  /** Input for commands that read `-` (`etch apply - …`) and for confirmations; absent when the embedder provides none. */
  stdin?: Readable & { isTTY?: boolean };
  /** Results: help, reports, `--json`, or the `.etch` itself with `-o -`. */
  stdout: Writable & { isTTY?: boolean };
  /** Everything else: progress, logs, warnings, errors, questions. */
  stderr: Writable & { isTTY?: boolean; columns?: number; rows?: number };
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Fires on Ctrl-C / SIGTERM. */
  signal: AbortSignal;
  logger: Logger;
}

/** One `etch <name>` subcommand. */
export interface Command {
  name: string;
  /** The page `etch <name> --help` and `etch help <name>` print: usage, options, examples. */
  help: string;
  /**
   * True for commands whose input is a `.etch` (inspect, apply): only there does an invalid archive mean
   * exit code 3. Elsewhere the same error codes are about other inputs (a layer, a folder) and exit 1.
   */
  readsEtch?: boolean;
  /** Runs the command; resolves to the exit code. Throws EtchError for failures. */
  run(args: string[], context: CliContext): Promise<number>;
}
