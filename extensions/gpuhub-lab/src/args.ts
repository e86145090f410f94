/**
 * Split one line of optional script arguments the way a POSIX shell would (quotes and
 * backslashes; no expansion of variables, globs or substitutions).
 */

export class ArgsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ArgsError';
  }
}

/** Characters a backslash escapes inside double quotes (POSIX). */
const DOUBLE_QUOTE_ESCAPES = new Set(['"', '\\', '$', '`']);

/**
 * `--lr 0.1 --name "my run" 'a b'` → `['--lr', '0.1', '--name', 'my run', 'a b']`.
 *
 * @throws ArgsError on an unterminated quote or a trailing backslash.
 */
export function splitArgs(text: string): string[] {
  const args: string[] = [];
  let current = '';
  let inWord = false;
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      if (inWord) {
        args.push(current);
        current = '';
        inWord = false;
      }
      i += 1;
    } else if (c === "'") {
      const end = text.indexOf("'", i + 1);
      if (end < 0) {
        throw new ArgsError('Unterminated single quote in the arguments.');
      }
      current += text.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      i += 1;
      let closed = false;
      while (i < text.length) {
        const d = text[i];
        if (d === '"') {
          closed = true;
          i += 1;
          break;
        }
        if (
          d === '\\' &&
          i + 1 < text.length &&
          DOUBLE_QUOTE_ESCAPES.has(text[i + 1])
        ) {
          current += text[i + 1];
          i += 2;
        } else {
          current += d;
          i += 1;
        }
      }
      if (!closed) {
        throw new ArgsError('Unterminated double quote in the arguments.');
      }
      inWord = true;
    } else if (c === '\\') {
      if (i + 1 >= text.length) {
        throw new ArgsError('The arguments end with a lone backslash.');
      }
      current += text[i + 1];
      inWord = true;
      i += 2;
    } else {
      current += c;
      inWord = true;
      i += 1;
    }
  }
  if (inWord) {
    args.push(current);
  }
  return args;
}
