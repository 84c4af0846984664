import { EtchError } from '@etch/format';

/** Turns a `util.parseArgs` error (an unknown or malformed flag) into a one-line usage error (exit 2). */
export function parseFlags<R>(parse: () => R): R {
  try {
    return parse();
  } catch (cause) {
    const message = (cause as Error).message;
    // Node adds a paragraph about `--` to unknown options; the flag is what matters.
    const unknown = /^Unknown option '([^']+)'/.exec(message);
    throw new EtchError('ETCH_USAGE', unknown ? `unknown option ${unknown[1]}` : message.replace(/\.$/, ''), {
      cause,
    });
  }
}

/** A usage error: one line; `etch` adds the hint to the command's help. */
export function usageError(message: string): EtchError {
  return new EtchError('ETCH_USAGE', message);
}

/** The flags every command takes. */
export const commonFlags = {
  help: { type: 'boolean', short: 'h' },
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  verbose: { type: 'boolean', short: 'v' },
} as const;

/** How the common flags read in every help page, after the command's own `what -q does` line. */
export function commonHelp(quiet: string, json = 'print the result as JSON (schema version 1) on stdout'): string {
  return `  --json                      ${json}
  -q, --quiet                 ${quiet}
  -v, --verbose               debug logging on stderr
  -h, --help                  this help`;
}

/** Builds a help page: usage lines, a description, option sections, examples. */
export function helpPage(parts: {
  usage: string[];
  description: string;
  sections: [title: string, body: string][];
  examples: [comment: string, command: string][];
}): string {
  const usage = parts.usage.map((line, i) => `${i === 0 ? 'Usage: ' : '       '}${line}`).join('\n');
  const sections = parts.sections.map(([title, body]) => `${title}:\n${body}\n\n`).join('');
  const examples = parts.examples.map(([comment, command]) => `  # ${comment}\n  ${command}`).join('\n\n');
  return `${usage}\n\n${parts.description}\n\n${sections}Examples:\n${examples}\n`;
}
