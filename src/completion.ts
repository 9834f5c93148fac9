// `podwarp completion bash|zsh|fish`: a completion script generated from the command tree
// (commander has none). Each shell's script walks the words typed so far to find the command
// (options and their values skipped), then offers its subcommands, its arguments' words, its
// options (the global ones included), or an option's values (files when it has no fixed set).
import type { Command } from 'commander';

export const SHELLS = ['bash', 'zsh', 'fish'] as const;
export type Shell = (typeof SHELLS)[number];

export interface OptionNode {
  /** -o and --output, as typed */
  flags: string[];
  takesValue: boolean;
  description: string;
}

export interface CommandNode {
  /** the words from the program to this command, e.g. "dump endpoints" ("" for the program) */
  path: string;
  name: string;
  description: string;
  options: OptionNode[];
  /** words its first argument takes (e.g. the map names of `dump map`) */
  argWords: string[];
  children: CommandNode[];
}

/** Completion words: no quoting needed in any shell's script. */
const SAFE = /^[A-Za-z0-9_.,:+@%/=-]+$/;

/**
 * The tree of `program` for completion. `argWords`: words of a command's first argument by its
 * path ("dump map" → the map names); commander's help command and --help are included.
 */
export function commandTree(program: Command, argWords: Record<string, string[]> = {}): CommandNode {
  const walk = (cmd: Command, path: string): CommandNode => {
    const options: OptionNode[] = cmd.options.map((o) => ({
      flags: [o.short, o.long].filter((f): f is string => !!f && SAFE.test(f)),
      takesValue: o.required || o.optional,
      description: o.description,
    }));
    options.push({ flags: ['-h', '--help'], takesValue: false, description: 'display help for command' });
    const children = cmd.commands.filter((c) => SAFE.test(c.name())).map((c) => walk(c, path ? `${path} ${c.name()}` : c.name()));
    const words = argWords[path] ?? [];
    return { path, name: cmd.name(), description: cmd.description(), options, argWords: words.filter((w) => SAFE.test(w)), children };
  };
  const root = walk(program, '');
  if (root.children.length && !root.children.some((c) => c.name === 'help'))
    root.children.push({
      path: 'help',
      name: 'help',
      description: 'display help for command',
      options: [],
      argWords: root.children.map((c) => c.name),
      children: [],
    });
  return root;
}

const all = (n: CommandNode): CommandNode[] => [n, ...n.children.flatMap(all)];
const fn = (name: string) => '_' + name.replace(/[^A-Za-z0-9]/g, '_');
const sq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** Each command's own options and the program's (global) ones, as commander parses them anywhere. */
function optionsAt(root: CommandNode, n: CommandNode): OptionNode[] {
  return n === root
    ? root.options
    : [...n.options, ...root.options.filter((o) => !o.flags.includes('--help') && !o.flags.includes('--version'))];
}

/** The shell functions both bash and zsh use: subcommands, argument words, options and value-taking options of a path. */
function tables(root: CommandNode, values: Record<string, readonly string[]>, f: string): string {
  const cases = (body: (n: CommandNode) => string[]) =>
    all(root)
      .map((n) => [n.path, body(n)] as const)
      .filter(([, ws]) => ws.length)
      .map(([p, ws]) => `    ${sq(p)}) echo ${sq(ws.join(' '))} ;;`)
      .join('\n');
  const valueCases = Object.entries(values)
    .filter(([flag]) => SAFE.test(flag))
    .map(([flag, ws]) => `    ${flag}) echo ${sq(ws.filter((w) => SAFE.test(w)).join(' '))} ;;`)
    .join('\n');
  return `${f}_subs() {
  case "$1" in
${cases((n) => n.children.map((c) => c.name))}
  esac
}
${f}_args() {
  case "$1" in
${cases((n) => n.argWords)}
  esac
}
${f}_opts() {
  case "$1" in
${cases((n) => optionsAt(root, n).flatMap((o) => o.flags))}
  esac
}
${f}_valued() {
  case "$1" in
${cases((n) =>
  optionsAt(root, n)
    .filter((o) => o.takesValue)
    .flatMap((o) => o.flags),
)}
  esac
}
${f}_values() {
  case "$1" in
${valueCases}
  esac
}
# the command the words before the cursor name ("dump endpoints"); ${f}_skip: the last word wants a value
${f}_walk() {
  local w
  ${f}_cmd=""
  ${f}_skip=0
  for w in "$@"; do
    if [ "$${f}_skip" = 1 ]; then
      ${f}_skip=0
      continue
    fi
    case $w in
    --*=*) continue ;;
    -*)
      case " $(${f}_valued "$${f}_cmd") " in *" $w "*) ${f}_skip=1 ;; esac
      continue
      ;;
    esac
    case " $(${f}_subs "$${f}_cmd") " in *" $w "*) ${f}_cmd=\${${f}_cmd:+$${f}_cmd }$w ;; esac
  done
}`;
}

export function bashScript(root: CommandNode, values: Record<string, readonly string[]>): string {
  const f = fn(root.name);
  return `# bash completion for ${root.name}: source <(${root.name} completion bash)
${tables(root, values, f)}
${f}() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} words
  ${f}_walk "\${COMP_WORDS[@]:1:COMP_CWORD-1}"
  if [ "$${f}_skip" = 1 ]; then
    words=$(${f}_values "$prev")
    if [ -n "$words" ]; then
      mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
    else
      mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
    return 0
  fi
  case $cur in
  -*) words=$(${f}_opts "$${f}_cmd") ;;
  *) words="$(${f}_subs "$${f}_cmd") $(${f}_args "$${f}_cmd")" ;;
  esac
  mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
  return 0
}
complete -F ${f} ${root.name}
`;
}

export function zshScript(root: CommandNode, values: Record<string, readonly string[]>): string {
  const f = fn(root.name);
  return `#compdef ${root.name}
# zsh completion for ${root.name}: source <(${root.name} completion zsh), or save it as _${root.name} on $fpath
${tables(root, values, f)}
${f}() {
  local cur=\${words[CURRENT]} prev=\${words[CURRENT-1]}
  local -a ws
  ${f}_walk "\${(@)words[2,CURRENT-1]}"
  if [[ $${f}_skip == 1 ]]; then
    ws=(\${=$(${f}_values "$prev")})
    if (( \${#ws} )); then compadd -a ws; else _files; fi
    return
  fi
  if [[ $cur == -* ]]; then
    ws=(\${=$(${f}_opts "$${f}_cmd")})
  else
    ws=(\${=$(${f}_subs "$${f}_cmd")} \${=$(${f}_args "$${f}_cmd")})
  fi
  compadd -a ws
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  ${f} "$@"
else
  compdef ${f} ${root.name}
fi
`;
}

export function fishScript(root: CommandNode, values: Record<string, readonly string[]>): string {
  const f = fn(root.name);
  const lines: string[] = [
    `# fish completion for ${root.name}: ${root.name} completion fish | source`,
    `# ${f}_at PATH: the words before the cursor name the command PATH ("dump endpoints"), and no option wants a value`,
    `function ${f}_at`,
    `    set -l words (commandline -opc)`,
    `    set -e words[1]`,
    `    set -l cmd ""`,
    `    set -l skip 0`,
    `    for w in $words`,
    `        if test $skip = 1`,
    `            set skip 0`,
    `            continue`,
    `        end`,
    `        switch $w`,
    `            case '--*=*'`,
    `                continue`,
    `            case '-*'`,
    `                if contains -- $w (${f}_valued "$cmd")`,
    `                    set skip 1`,
    `                end`,
    `                continue`,
    `        end`,
    `        if contains -- $w (${f}_subs "$cmd")`,
    `            set cmd (string trim -- "$cmd $w")`,
    `        end`,
    `    end`,
    `    test "$cmd" = "$argv[1]"`,
    `end`,
  ];
  const sw = (name: string, body: (n: CommandNode) => string[]) => {
    lines.push(`function ${f}_${name}`, `    switch "$argv[1]"`);
    for (const n of all(root)) {
      const ws = body(n);
      if (ws.length) lines.push(`        case ${sq(n.path)}`, `            printf '%s\\n' ${ws.join(' ')}`);
    }
    lines.push(`    end`, `end`);
  };
  sw('subs', (n) => n.children.map((c) => c.name));
  sw('valued', (n) =>
    optionsAt(root, n)
      .filter((o) => o.takesValue)
      .flatMap((o) => o.flags),
  );
  lines.push(`complete -c ${root.name} -f`);
  const desc = (s: string) => sq(s.length > 80 ? s.slice(0, 79) + '…' : s);
  for (const n of all(root)) {
    const at = `-n ${sq(`${f}_at ${sq(n.path)}`)}`;
    for (const c of n.children) lines.push(`complete -c ${root.name} ${at} -a ${c.name} -d ${desc(c.description)}`);
    if (n.argWords.length) lines.push(`complete -c ${root.name} ${at} -a ${sq(n.argWords.join(' '))}`);
    for (const o of n === root ? [] : n.options) lines.push(fishOption(root.name, at, o, values));
  }
  // the program's options, after any command
  for (const o of root.options) lines.push(fishOption(root.name, '', o, values));
  return lines.join('\n') + '\n';
}

function fishOption(name: string, at: string, o: OptionNode, values: Record<string, readonly string[]>): string {
  const parts = [`complete -c ${name}`];
  if (at) parts.push(at);
  for (const fl of o.flags) parts.push(fl.startsWith('--') ? `-l ${fl.slice(2)}` : `-s ${fl.slice(1)}`);
  const vs = o.flags.map((fl) => values[fl]).find(Boolean);
  if (o.takesValue) parts.push(vs ? `-x -a ${sq(vs.join(' '))}` : '-r -F');
  parts.push(`-d ${sq(o.description.length > 80 ? o.description.slice(0, 79) + '…' : o.description)}`);
  return parts.join(' ');
}

export function completionScript(shell: Shell, root: CommandNode, values: Record<string, readonly string[]>): string {
  return shell === 'bash' ? bashScript(root, values) : shell === 'zsh' ? zshScript(root, values) : fishScript(root, values);
}
