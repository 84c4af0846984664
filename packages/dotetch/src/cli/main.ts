import { createRequire } from 'node:module';
import { isEtchError } from '@etch/format';
import type { CliContext } from './context.js';
import { commands } from './commands/index.js';
import { EXIT, exitCodeFor } from './exit-codes.js';
import { createCliLogger } from './logger.js';

const version = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

function help(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  const list = commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n');
  return `etch ${version}: build and read .etch files (a base OS image plus files for its partitions)

Usage: etch <command> [options]

Commands:
${list}

Run "etch <command> --help" for a command's options.
Exit codes: 0 ok, 1 failed, 2 usage error, 3 input is not a valid .etch, 130 interrupted.
`;
}

function wantsJson(args: string[]): boolean {
  return args.includes('--json');
}

/**
 * Runs the CLI with the given arguments and streams; returns the exit code. Never calls process.exit,
 * so tests and embedders can run it in-process.
 */
export async function main(argv: string[], context: Omit<CliContext, 'logger'>): Promise<number> {
  const [name, ...args] = argv;
  const verbose = args.includes('-v') || args.includes('--verbose');
  const quiet = args.includes('-q') || args.includes('--quiet');
  const full: CliContext = {
    ...context,
    logger: createCliLogger(context.stderr, verbose ? 'debug' : quiet ? 'quiet' : 'info'),
  };
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    context.stderr.write(help());
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  if (name === '--version' || name === '-V') {
    context.stdout.write(`${version}\n`);
    return EXIT.ok;
  }
  const entry = commands.find((c) => c.name === name);
  if (entry === undefined) {
    context.stderr.write(`etch: ETCH_USAGE: unknown command ${JSON.stringify(name)}. Run "etch help" for the list.\n`);
    return EXIT.usage;
  }
  try {
    const command = await entry.load();
    return await command.run(args, full);
  } catch (err) {
    const code = isEtchError(err) ? err.code : 'ETCH_INTERNAL';
    const message = err instanceof Error ? err.message : String(err);
    const [first, ...rest] = message.split('\n');
    context.stderr.write(`etch: ${code}: ${first}\n`);
    if (rest.length > 0 && code === 'ETCH_USAGE') context.stderr.write(`${rest.join('\n')}\n`);
    if (!isEtchError(err) && verbose && err instanceof Error) context.stderr.write(`${err.stack}\n`);
    if (wantsJson(args)) context.stdout.write(`${JSON.stringify({ error: { code, message: first } })}\n`);
    return exitCodeFor(err);
  }
}
