import { createRequire } from 'node:module';
import { abortError, isEtchError } from '@etch/format';
import type { CliContext, Command } from './context.js';
import { commands } from './commands/index.js';
import { EXIT, exitCodeFor } from './exit-codes.js';
import { SCHEMA_VERSION } from './schema.js';
import { createCliLogger } from './logger.js';

const version = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

function topHelp(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  const list = commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n');
  return `Usage: etch COMMAND [options]

Build, check and flash .etch files: a base OS image plus files for its partitions, and container images
preloaded as balena-engine stores them, in one tar stream a flasher writes to a disk.

Commands:
${list}

Every command takes -q, -v and --help, and all but serve take --json (results as JSON on stdout).
Results go to stdout; progress, logs and errors to stderr (etch serve logs JSON lines on stdout).
Exit codes: 0 ok, 1 failed, 2 usage error, 3 the input is not a valid .etch, 130 interrupted.

Examples:
  etch create --base balena.img --image alpine:3.20 --platform linux/arm64 -o device.etch
  etch apply device.etch -o /dev/sdb --size 8G
  etch help create

Run 'etch help COMMAND' (or 'etch COMMAND --help') for a command's options.
`;
}

/** A usage error of `etch` itself (not of a command): one line and where to look. */
function topUsageError(context: Omit<CliContext, 'logger'>, message: string): number {
  context.stderr.write(`etch: ETCH_USAGE: ${message}\nRun 'etch --help' for the list of commands.\n`);
  return EXIT.usage;
}

async function load(name: string): Promise<Command | undefined> {
  return commands.find((c) => c.name === name)?.load();
}

/**
 * Runs the CLI with the given arguments and streams; returns the exit code. Never calls process.exit,
 * so tests and embedders can run it in-process.
 */
export async function main(argv: string[], context: Omit<CliContext, 'logger'>): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === '--help' || name === '-h') {
    context.stdout.write(topHelp());
    return EXIT.ok;
  }
  if (name === 'help') {
    const [topic, extra] = args;
    if (extra !== undefined) return topUsageError(context, `etch help takes one command, not ${args.length}`);
    if (topic === undefined) {
      context.stdout.write(topHelp());
      return EXIT.ok;
    }
    const command = await load(topic);
    if (command === undefined) return topUsageError(context, `unknown command ${JSON.stringify(topic)}`);
    context.stdout.write(command.help);
    return EXIT.ok;
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    context.stdout.write(`${version}\n`);
    return EXIT.ok;
  }
  if (name.startsWith('-')) return topUsageError(context, `${name} goes after a command (etch COMMAND ${name})`);
  const command = await load(name);
  if (command === undefined) return topUsageError(context, `unknown command ${JSON.stringify(name)}`);
  const verbose = args.includes('-v') || args.includes('--verbose');
  const quiet = args.includes('-q') || args.includes('--quiet');
  const logger = createCliLogger(context.stderr, verbose ? 'debug' : quiet ? 'quiet' : 'info');
  try {
    return await command.run(args, { ...context, logger });
  } catch (thrown) {
    // Once the user interrupted, whatever failed next (a stream cut mid-write, a raw AbortError) is the
    // interruption itself: exit 130 and say so, whichever layer noticed first.
    const err = context.signal.aborted && !isAbort(thrown) ? abortError(context.signal) : thrown;
    const code = isEtchError(err) ? err.code : 'ETCH_INTERNAL';
    const message = err instanceof Error ? err.message : String(err);
    const first = message.split('\n')[0] as string;
    const exitCode = exitCodeFor(err, command.readsEtch);
    context.stderr.write(`etch: ${code}: ${first}\n`);
    if (code === 'ETCH_USAGE') context.stderr.write(`Run 'etch ${name} --help' for usage.\n`);
    if (!isEtchError(err) && verbose && err instanceof Error) context.stderr.write(`${err.stack}\n`);
    if (args.includes('--json'))
      context.stdout.write(
        `${JSON.stringify({ schemaVersion: SCHEMA_VERSION, error: { code, message: first, exitCode } })}\n`,
      );
    return exitCode;
  }
}

const isAbort = (err: unknown): boolean => isEtchError(err) && err.code === 'ETCH_ABORTED';
