import type { Readable, Writable } from 'node:stream';
import type { Logger } from '@etch/format';

/** What a command gets from the process: streams, environment, the Ctrl-C signal, a logger. */
export interface CliContext {
  /** Input for commands that read `-` (`etch apply - …`); absent when the embedder provides none. */
  stdin?: Readable & { isTTY?: boolean };
  /** Machine output only (`--json`, or the `.etch` itself with `-o -`). */
  stdout: Writable;
  /** Everything a human reads: progress, messages, errors. */
  stderr: Writable & { isTTY?: boolean; columns?: number };
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Fires on Ctrl-C / SIGTERM. */
  signal: AbortSignal;
  logger: Logger;
}

/** One `etch <name>` subcommand. */
export interface Command {
  name: string;
  /** Full usage text for `etch <name> --help`. */
  usage: string;
  /** Runs the command; resolves to the exit code. Throws EtchError for failures. */
  run(args: string[], context: CliContext): Promise<number>;
}
