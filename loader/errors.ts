// Error types every caller and test can recognise.

/** An external tool failed: carries its argv, exit code and stderr. */
export class ToolError extends Error {
  constructor(
    what: string,
    readonly argv: string[],
    readonly exitCode: number | undefined,
    readonly stderr: string,
  ) {
    super(`${what}: \`${argv.join(' ')}\` exited ${exitCode ?? 'by signal'}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
    this.name = 'ToolError';
  }
}

/** The kernel or a tool lacks a feature podwarp needs (or would prefer). */
export class FeatureMissingError extends Error {
  constructor(
    readonly feature: string,
    detail: string,
  ) {
    super(`missing feature ${feature}: ${detail}`);
    this.name = 'FeatureMissingError';
  }
}

/** Input (config, state file, CLI argument) rejected before anything was touched. */
export class InputError extends Error {
  constructor(
    message: string,
    readonly problems: { path: string; message: string }[] = [],
  ) {
    super(problems.length ? `${message}:\n${problems.map((p) => `  ${p.path || '/'}: ${p.message}`).join('\n')}` : message);
    this.name = 'InputError';
  }
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
