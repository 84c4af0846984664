import { EtchError, ignoreRejection } from '@etch/format';
import { main } from './main.js';

/** A second Ctrl-C: the first one's cleanup is still running, so the temporary files go now, then the process. */
function exitAtOnce(): void {
  // Loaded already if any file was opened (the module keeps the list); not worth loading at start otherwise.
  const removing = import('@etch/disk').then((disk) => disk.removeOpenTemporaryFilesSync());
  void ignoreRejection(removing, 'exiting anyway: the user asked twice').then(() => process.exit(130));
}

/**
 * The process entry: wires stdin/stdout, turns the first Ctrl-C (or SIGTERM) into an abort so temporary
 * files are removed, and a second one into an immediate exit that still removes them.
 */
export async function run(argv: string[]): Promise<void> {
  const controller = new AbortController();
  let signals = 0;
  const onSignal = (name: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) return exitAtOnce();
    controller.abort(new EtchError('ETCH_ABORTED', `Interrupted (${name}); the partial output was removed.`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A closed stdout (etch … | head) is not an error worth a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  });
  process.exitCode = await main(argv, {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    signal: controller.signal,
  });
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
}
