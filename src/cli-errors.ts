// How a failed command ends: one line on stderr and an exit code (docs/cli.md#exit-codes).
//   0 ok; 1 the command ran and failed (runtime: a tool, the kernel, nothing loaded, doctor's fail);
//   2 usage or invalid input (unknown command or flag, bad flag value, a state file rejected): nothing was changed.
import { CommanderError } from 'commander';
import { FeatureMissingError, InputError, ToolError, errorMessage } from '../host/errors.js';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

export interface Failure {
  /** 0 for commander's own ends (--help, --version), else 1 or 2 */
  code: number;
  /** usage, invalid input, missing feature, tool failed, error */
  kind: string;
  /** the message, on one line, without the program's name */
  message: string;
}

/**
 * Commander's messages ("error: unknown command 'stauts'\n(Did you mean status?)") as one line in
 * kubectl's words: `unknown command "stauts" (did you mean "status"?)`.
 */
export function commanderMessage(m: string): string {
  return m
    .replace(/^error: /, '')
    .replace(/^(unknown (?:command|option)) '([^']*)'/, '$1 "$2"')
    .replace(
      /\s*\(Did you mean (?:one of )?([^)]*)\?\)/,
      (_, s: string) =>
        ` (did you mean ${s
          .split(', ')
          .map((x) => `"${x}"`)
          .join(', ')}?)`,
    )
    .replace(/\s*\n\s*/g, ' ')
    .trim();
}

export function failureOf(e: unknown): Failure {
  if (e instanceof CommanderError) {
    // --help, --version and a command group without its subcommand (help, as kubectl) end with 0
    if (e.exitCode === 0 || e.code === 'commander.help' || e.code === 'commander.helpDisplayed' || e.code === 'commander.version')
      return { code: EXIT_OK, kind: 'usage', message: '' };
    let message = commanderMessage(e.message);
    if (e.code === 'commander.unknownCommand' && !message.includes('did you mean')) message += '; --help lists the commands';
    return { code: EXIT_USAGE, kind: 'usage', message };
  }
  const message = errorMessage(e);
  if (e instanceof InputError) return { code: EXIT_USAGE, kind: 'invalid input', message };
  if (e instanceof FeatureMissingError) return { code: EXIT_FAILED, kind: 'missing feature', message };
  if (e instanceof ToolError) return { code: EXIT_FAILED, kind: 'tool failed', message };
  return { code: EXIT_FAILED, kind: 'error', message };
}
