/** What a flasher shows about a drive before writing it, and the question it asks. */
import { createInterface } from 'node:readline/promises';
import { readFile, realpath, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { EtchError } from '@etch/format';
import type { CliContext } from './context.js';
import { formatBytes } from './format-bytes.js';

const sysText = (path: string) =>
  readFile(path, 'utf8').then(
    (text) => text.trim(),
    () => '',
  );

/** `/dev/sdb (14.9 GiB, SanDisk Ultra)`, `/dev/loop3 (16.0 MiB, loop device for /tmp/disk.img)`. */
export async function describeDrive(path: string): Promise<string> {
  const device = await realpath(path).catch(() => path);
  const name = basename(device);
  const sys = `/sys/class/block/${name}`;
  const facts: string[] = [];
  const sectors = Number(await sysText(`${sys}/size`));
  if (sectors > 0) facts.push(formatBytes(sectors * 512));
  const backing = await sysText(`${sys}/loop/backing_file`);
  const model = [await sysText(`${sys}/device/vendor`), await sysText(`${sys}/device/model`)].filter(Boolean).join(' ');
  if (backing !== '') facts.push(`loop device for ${backing}`);
  else if (model !== '') facts.push(model);
  const shown = device === path ? path : `${path} → ${device}`;
  return facts.length > 0 ? `${shown} (${facts.join(', ')})` : shown;
}

/** Whether `path` is a block device (a drive, a partition, a loop device). */
export async function isBlockDevice(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isBlockDevice() ?? false;
}

/**
 * Asks on the terminal whether to go on; true only for "y" or "yes". Refuses (`ETCH_USAGE`) when there is
 * no terminal to ask on: a script must say `--yes`.
 */
export async function confirm(context: CliContext, question: string, refusal: string): Promise<boolean> {
  const { stdin } = context;
  if (stdin === undefined || !stdin.isTTY || !context.stderr.isTTY) throw new EtchError('ETCH_USAGE', refusal);
  // No line editing of our own: the terminal's, so Ctrl-C stays a signal that aborts the run.
  const prompt = createInterface({ input: stdin, output: context.stderr, terminal: false });
  try {
    context.stderr.write(question);
    // End of input (Ctrl-D) is a no.
    const answer = await new Promise<string>((resolve, reject) => {
      prompt.once('close', () => resolve(''));
      prompt.question('', { signal: context.signal }).then(resolve, reject);
    });
    return /^\s*y(es)?\s*$/i.test(answer);
  } catch (error) {
    if (context.signal.aborted) throw context.signal.reason;
    throw error;
  } finally {
    prompt.close();
  }
}
