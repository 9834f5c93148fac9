// Error types every caller and test can recognise.

/** An external tool failed: carries its argv, exit code and stderr. */
export class ToolError extends Error {
  constructor(
    what: string,
    readonly argv: string[],
    readonly exitCode: number | undefined,
    readonly stderr: string,
  ) {
    super(`${what}: \`${argv.join(' ')}\` exited ${exitCode ?? 'by signal'}: ${essence(stderr)}`);
    this.name = 'ToolError';
  }
}

/** The last lines of a tool's stderr that say something (bpftool's boilerplate dropped). */
function essence(stderr: string): string {
  const noise =
    /libbpf strict mode|If it used to work|END PROG LOAD LOG|^processed \d+ insns|^libbpf: (prog '.*': failed to load|failed to load object)/;
  const lines = stderr
    .trim()
    .split('\n')
    .filter((l) => l.trim() && !noise.test(l));
  return lines.slice(-3).join(' | ');
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

/** A read command found nothing to read (no datapath pinned): a runtime condition (exit 1), not bad input. */
export class NotLoadedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotLoadedError';
  }
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
