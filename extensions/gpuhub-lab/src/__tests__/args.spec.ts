import { ArgsError, splitArgs } from '../args';

describe('splitArgs', () => {
  it.each([
    ['', []],
    ['   ', []],
    ['--epochs 3', ['--epochs', '3']],
    ['  --lr\t0.1  \n --x ', ['--lr', '0.1', '--x']],
    ['--name "my run"', ['--name', 'my run']],
    ["--name 'my run'", ['--name', 'my run']],
    ['--glob "*.csv" $HOME', ['--glob', '*.csv', '$HOME']],
    ['a"b c"d', ['ab cd']],
    ["'it'\\''s'", ["it's"]],
    ['"say \\"hi\\""', ['say "hi"']],
    ['"keep \\n as is"', ['keep \\n as is']],
    ['\'no \\escapes "here"\'', ['no \\escapes "here"']],
    ['a\\ b c', ['a b', 'c']],
    ['""', ['']],
    ["--empty ''", ['--empty', '']]
  ])('splits %j', (text, expected) => {
    expect(splitArgs(text)).toEqual(expected);
  });

  it.each([
    ['--name "my run', 'Unterminated double quote in the arguments.'],
    ["--name 'my run", 'Unterminated single quote in the arguments.'],
    ['--x \\', 'The arguments end with a lone backslash.']
  ])('refuses %j', (text, message) => {
    expect(() => splitArgs(text)).toThrow(ArgsError);
    expect(() => splitArgs(text)).toThrow(message);
  });
});
