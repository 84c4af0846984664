import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { EtchError } from '@etch/format';
import { TarFile } from '@etch/tar';
import { usageError } from './args.js';
import type { CliContext } from './context.js';

/** A `.etch` being read: stdin, or a file read in place (its base image copied, or skipped, without streaming). */
export type EtchInput = Readable | TarFile;

/**
 * Opens the `.etch` a command reads: a file, or stdin for `-` (not a terminal). Errors name the path as
 * the user typed it.
 */
export async function openEtchInput(file: string, context: CliContext, command: string): Promise<EtchInput> {
  if (file === '-') {
    if (context.stdin === undefined) throw usageError('"-" reads the .etch from stdin, but there is none here.');
    if (context.stdin.isTTY)
      throw usageError(
        `"-" reads the .etch from stdin, which is a terminal; pipe the file in (… | etch ${command} -).`,
      );
    return context.stdin;
  }
  const path = resolve(context.cwd, file);
  const info = await stat(path).catch((cause: NodeJS.ErrnoException) => {
    throw new EtchError(
      'ETCH_IO',
      cause.code === 'ENOENT' ? `Cannot read ${file}: it does not exist.` : `Cannot read ${file}: ${cause.message}.`,
      { cause, details: { path } },
    );
  });
  if (info.isDirectory())
    throw new EtchError('ETCH_IO', `Cannot read ${file}: it is a folder, not a .etch file.`, { details: { path } });
  try {
    return await TarFile.open(path);
  } catch (error) {
    const cause = (error as Error).cause ?? error;
    throw new EtchError('ETCH_IO', `Cannot read ${file}: ${(cause as Error).message}.`, { cause, details: { path } });
  }
}
