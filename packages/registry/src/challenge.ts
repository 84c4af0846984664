/** One `WWW-Authenticate` challenge: the scheme (lower-cased) and its parameters (keys lower-cased). */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

const TOKEN_CHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/**
 * Parses `WWW-Authenticate` values as RFC 7235 defines them: several challenges per header, parameters as
 * tokens or quoted strings with `\` escapes, so a `scope="repository:a/b:pull,push"` keeps its commas and
 * colons. Malformed trailing input ends the parse instead of throwing: a registry's odd header should not
 * hide the challenges it did send correctly.
 */
export function parseChallenges(values: string | readonly string[] | undefined): Challenge[] {
  const list = values === undefined ? [] : typeof values === 'string' ? [values] : values;
  return list.flatMap((value) => new ChallengeParser(value).parse());
}

class ChallengeParser {
  private at = 0;
  constructor(private readonly text: string) {}

  parse(): Challenge[] {
    const challenges: Challenge[] = [];
    let current: Challenge | undefined;
    while ((this.skipSeparators(), this.at < this.text.length)) {
      const start = this.at;
      const word = this.token();
      if (word === '') break;
      this.skipSpaces();
      if (this.peek() === '=' && current !== undefined && !this.isToken68End()) {
        this.at += 1;
        this.skipSpaces();
        const value = this.peek() === '"' ? this.quoted() : this.bareValue();
        current.params[word.toLowerCase()] = value;
        continue;
      }
      if (this.peek() === '=' && current !== undefined) {
        // token68 (`Basic abc==`) belongs to the current challenge; not used by registries, kept verbatim.
        this.at = start;
        current.params['token68'] = this.rest68();
        continue;
      }
      current = { scheme: word.toLowerCase(), params: {} };
      challenges.push(current);
    }
    return challenges;
  }

  private peek(): string {
    return this.text[this.at] ?? '';
  }

  private skipSpaces(): void {
    while (this.peek() === ' ' || this.peek() === '\t') this.at += 1;
  }

  private skipSeparators(): void {
    while (this.peek() === ' ' || this.peek() === '\t' || this.peek() === ',') this.at += 1;
  }

  private token(): string {
    const start = this.at;
    while (this.at < this.text.length && TOKEN_CHAR.test(this.peek())) this.at += 1;
    return this.text.slice(start, this.at);
  }

  /** An unquoted value. RFC 7235 allows only token characters; servers that send bare URLs are read up to `,`. */
  private bareValue(): string {
    const start = this.at;
    while (this.at < this.text.length && this.peek() !== ',' && this.peek() !== ' ' && this.peek() !== '\t')
      this.at += 1;
    return this.text.slice(start, this.at);
  }

  /** After `name`, an `=` followed by `=`, `,` or the end is token68 padding, not a parameter. */
  private isToken68End(): boolean {
    const next = this.text[this.at + 1];
    return next === '=' || next === undefined || next === ',';
  }

  private rest68(): string {
    const start = this.at;
    while (this.at < this.text.length && this.peek() !== ',') this.at += 1;
    return this.text.slice(start, this.at).trim();
  }

  private quoted(): string {
    this.at += 1;
    let value = '';
    while (this.at < this.text.length) {
      const c = this.peek();
      this.at += 1;
      if (c === '\\') {
        value += this.peek();
        this.at += 1;
      } else if (c === '"') {
        return value;
      } else {
        value += c;
      }
    }
    return value;
  }
}
