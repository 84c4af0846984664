// A real terminal for the CLI's tests: a tmux pane of a given size, on a tmux server of its own.
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { run } from '@etch/test-utils/system';

/** The marker the pane prints when the command ends, with its exit code. */
const EXIT_MARK = 'ETCH-TEST-EXIT=';

const quote = (arg: string) => `'${arg.replace(/'/g, `'\\''`)}'`;

/** A command running in a detached tmux pane of `width`×`height`, its screen readable at any time. */
export class Terminal {
  private constructor(
    private readonly socket: string,
    /** The server's socket file, which kill-server leaves behind. */
    private readonly socketPath: string,
    readonly width: number,
  ) {}

  /** Starts `command` (argv) in a fresh pane; the pane stays after it ends, so its last screen can be read. */
  static async start(
    command: string[],
    options: { width: number; height: number; cwd: string; env?: NodeJS.ProcessEnv },
  ): Promise<Terminal> {
    const socket = `etch-test-${process.pid}-${randomBytes(4).toString('hex')}`;
    // Ctrl-C goes to the whole foreground group: the shell must outlive it to report the exit code.
    const script = `trap true INT; ${command.map(quote).join(' ')}; echo ${EXIT_MARK}$?; exec sleep 3600`;
    await run(
      'tmux',
      [
        '-L',
        socket,
        '-f',
        '/dev/null',
        'new-session',
        '-d',
        '-x',
        String(options.width),
        '-y',
        String(options.height),
        '-c',
        options.cwd,
        'sh',
        '-c',
        script,
      ],
      { env: { ...process.env, ...options.env } },
    );
    const { stdout } = await run('tmux', ['-L', socket, 'display-message', '-p', '#{socket_path}']);
    return new Terminal(socket, stdout.trim(), options.width);
  }

  /** The screen as lines, a line the terminal wrapped joined again (so a wrapped line shows as too long). */
  async screen(): Promise<string[]> {
    const { stdout } = await run('tmux', ['-L', this.socket, 'capture-pane', '-p', '-J']);
    return stdout.replace(/\n+$/, '').split('\n');
  }

  /** Types keys into the pane (tmux key names: `C-c`, `Enter`, or text). */
  async send(...keys: string[]): Promise<void> {
    await run('tmux', ['-L', this.socket, 'send-keys', ...keys]);
  }

  /** Waits until the screen satisfies `test` (polling), failing with the last screen after `timeoutMs`. */
  async waitFor(test: (lines: string[]) => boolean, what: string, timeoutMs = 60_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const lines = await this.screen();
      if (test(lines)) return lines;
      if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}; the screen:\n${lines.join('\n')}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Waits for the command to end; resolves to its exit code and the screen without the exit marker. */
  async exit(timeoutMs = 120_000): Promise<{ code: number; lines: string[] }> {
    const lines = await this.waitFor(
      (l) => l.some((line) => line.startsWith(EXIT_MARK)),
      'the command to end',
      timeoutMs,
    );
    const at = lines.findIndex((line) => line.startsWith(EXIT_MARK));
    return { code: Number(lines[at]?.slice(EXIT_MARK.length)), lines: lines.slice(0, at) };
  }

  async close(): Promise<void> {
    await run('tmux', ['-L', this.socket, 'kill-server'], { allowFailure: true });
    await rm(this.socketPath, { force: true });
  }
}
