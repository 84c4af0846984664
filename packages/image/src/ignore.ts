import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** One `.dockerignore`-style rule: a glob, negated with a leading `!`. */
interface Rule {
  pattern: RegExp;
  negated: boolean;
}

/** A glob (`*`, `?`, `**`, `[…]`) relative to the root, as a regular expression over `/`-separated paths. */
function globToRegExp(glob: string): RegExp {
  let source = '';
  for (let i = 0; i < glob.length; i += 1) {
    const c = glob[i] as string;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        // `**/` matches any number of directories, a trailing `**` anything below.
        const slash = glob[i + 2] === '/';
        source += slash ? '(?:.*/)?' : '.*';
        i += slash ? 2 : 1;
      } else source += '[^/]*';
    } else if (c === '?') source += '[^/]';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 1);
      if (end === -1) source += '\\[';
      else {
        source += `[${glob
          .slice(i + 1, end)
          .replace(/^!/, '^')
          .replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else source += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  // A pattern also matches everything under what it names, as in docker.
  return new RegExp(`^${source}(?:/.*)?$`);
}

/**
 * A path filter from `.dockerignore`-style patterns: paths are relative to the root with `/` separators; later
 * rules win, `!` re-includes, leading `/` and `./` are ignored, blank lines and `#` comments skipped.
 */
export class IgnoreRules {
  private readonly rules: Rule[] = [];

  constructor(patterns: readonly string[] = []) {
    this.add(patterns);
  }

  add(patterns: readonly string[]): void {
    for (const raw of patterns) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      const negated = line.startsWith('!');
      const glob = (negated ? line.slice(1) : line)
        .trim()
        .replace(/^(\.\/|\/)+/, '')
        .replace(/\/+$/, '');
      if (glob !== '') this.rules.push({ pattern: globToRegExp(glob), negated });
    }
  }

  /** Reads each ignore file found at the root (missing ones are skipped). */
  async addFiles(root: string, names: readonly string[]): Promise<void> {
    for (const name of names) {
      const text = await readFile(join(root, name), 'utf8').catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return '';
        throw error;
      });
      this.add(text.split(/\r?\n/));
    }
  }

  /** True when `path` (relative, `/`-separated) is left out. */
  ignores(path: string): boolean {
    let ignored = false;
    for (const rule of this.rules) if (rule.pattern.test(path)) ignored = !rule.negated;
    return ignored;
  }
}
