// Prints the kernel matrix table from the result directories that
// scripts/kernel-matrix.sh wrote: OUT/<kernel>/{kernel,accel,boot_s,run_s,
// wall_s,vm_rc,cmdline,lockdown,results/<file>.json|.time|.log}. A kernel
// booted with lockdown= (6.12-lockdown) gets a note with the mode the guest
// saw in /sys/kernel/security/lockdown; a mode other than the one asked for
// fails the run (that row would not test what it says).
//
//   node devtools/vm/matrix-table.mjs OUT 5.10 6.1 6.12-lockdown host -- test/unit/btf.test.ts ...
import fs from 'node:fs';
import path from 'node:path';
import { consoleFault } from './console-fault.mjs';

const args = process.argv.slice(2);
const out = args[0];
const sep = args.indexOf('--');
const kernels = args.slice(1, sep);
const files = args.slice(sep + 1).map((f) => path.basename(f, '.ts'));
const read = (p) => (fs.existsSync(p) ? fs.readFileSync(p, 'utf8').trim() : undefined);
const short = (s, n) => (s.length > n ? s.slice(0, n - 1) + '…' : s);

// any failure, missing result or file without a passing test: exit 1 (CI)
let bad = false;

function cell(kdir, file, vmrc) {
  const res = path.join(kdir, 'results');
  const time = read(path.join(res, `${file}.time`));
  const json = read(path.join(res, `${file}.json`));
  if (!json) {
    bad = true;
    const log = read(path.join(res, `${file}.log`));
    // the run ended without this file's result (a crash, a failed start): the run's last words
    if (log !== undefined)
      return { text: `no result${time ? ` (${time}s)` : ''}`, why: short(log.split('\n').filter(Boolean).slice(-1)[0] ?? '', 120) };
    // queued, and the VM went before the run ended
    return {
      text: !fs.existsSync(path.join(res, `${file}.queued`)) ? 'not run' : vmrc === '125' ? 'killed (VM died)' : 'killed (VM timeout)',
      why: '',
    };
  }
  let r;
  try {
    r = JSON.parse(json);
  } catch {
    bad = true;
    return { text: 'bad JSON', why: '' };
  }
  const tests = r.testResults.flatMap((t) => t.assertionResults.map((a) => ({ ...a, fileMessage: t.message })));
  const n = (s) => tests.filter((t) => t.status === s).length;
  const skipped = n('pending') + n('skipped') + n('todo');
  const failedTests = tests.filter((t) => t.status === 'failed');
  let why = '';
  if (failedTests.length) {
    const f = failedTests[0];
    const lines = (f.failureMessages?.[0] ?? '').split('\n').filter((l) => l.trim());
    // an assertion whose message is a JSON report (doctor's): its first line is "{", its last the expectation
    let msg = ((/^\s*[[{]\s*$/.test(lines[0] ?? '') ? lines.at(-1) : lines[0]) ?? '').replace(/^:\s*/, '');
    // a timeout comes as "STACK_TRACE_ERROR" in the JSON: the console says it ("→ …" under the test)
    const log = read(path.join(res, `${file}.log`)) ?? '';
    const arrow = log
      .split('\n')
      .map((l) => /^\s+→ (.*)/.exec(l)?.[1])
      .find(Boolean);
    if ((!msg || msg.includes('STACK_TRACE_ERROR')) && arrow) msg = arrow;
    why = `${short(f.fullName ?? f.title, 60)}: ${short(msg, 110)}`;
  } else if (r.testResults.some((t) => t.status === 'failed' && t.message)) {
    why = short(r.testResults.find((t) => t.message).message.split('\n')[0], 150);
  } else if (skipped) {
    why =
      'skipped: ' +
      short(
        tests
          .filter((t) => ['pending', 'skipped', 'todo'].includes(t.status))
          .map((t) => t.title)
          .join('; '),
        120,
      );
  }
  const fileFailed = r.testResults.some((t) => t.status === 'failed') && !failedTests.length;
  // a file without a passing test fails the run (all skipped, or none collected)
  if (failedTests.length || fileFailed || n('passed') === 0) bad = true;
  return { text: `${n('passed')}/${failedTests.length + (fileFailed ? 1 : 0)}/${skipped} ${time ?? '?'}s`, why };
}

const rows = [];
const notes = [];
for (const k of kernels) {
  const kdir = path.join(out, k);
  const kernel = read(path.join(kdir, 'kernel')) ?? k;
  const accel = read(path.join(kdir, 'accel')) ?? '?';
  const boot = read(path.join(kdir, 'boot_s')) ?? '-';
  const run = read(path.join(kdir, 'run_s')) ?? '-';
  const wall = read(path.join(kdir, 'wall_s')) ?? run;
  const vmrc = read(path.join(kdir, 'vm_rc'));
  const cells = files.map((f) => cell(kdir, f, vmrc));
  rows.push([
    `${k} ${kernel === k ? '' : kernel}`.trim(),
    accel.toUpperCase(),
    `${boot}s`,
    `${run}s`,
    `${wall}s${vmrc === '124' ? ' TIMEOUT' : vmrc === '125' ? ' VM DIED' : ''}`,
    ...cells.map((c) => c.text),
  ]);
  cells.forEach((c, i) => c.why && notes.push(`${k} ${files[i]}: ${c.why}`));
  // why the VM died, from its console; and an earlier attempt that an emulator fault ended
  if (vmrc === '125') {
    const f = consoleFault(read(path.join(kdir, 'console.log')) ?? '');
    notes.push(`${k} VM: ${f.kind === 'none' ? 'no kernel panic on the console (see console.log)' : `${f.kind}: ${f.line}`}`);
  }
  // the lockdown mode asked for on the kernel command line, and the one in force
  const asked = /(?:^| )lockdown=(\S+)/.exec(read(path.join(kdir, 'cmdline')) ?? '')?.[1];
  const lockdown = read(path.join(kdir, 'lockdown'));
  if (asked) {
    const inForce = /\[(\w+)\]/.exec(lockdown ?? '')?.[1];
    if (lockdown !== undefined && inForce !== asked) bad = true;
    notes.push(
      `${k} booted with lockdown=${asked}: /sys/kernel/security/lockdown ${lockdown === undefined ? 'not read (the VM wrote no lockdown file)' : `"${lockdown}"`}${lockdown !== undefined && inForce !== asked ? ` (NOT ${asked})` : ''}`,
    );
  }
  const retried = read(path.join(kdir, 'retried'));
  if (retried) notes.push(`${k} run once more: ${retried}`);
}
const head = ['kernel', 'accel', 'boot', 'run', 'wall', ...files.map((f) => f.replace(/\.test$/, ''))];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (r) => '| ' + r.map((c, i) => c.padEnd(widths[i])).join(' | ') + ' |';
console.log("cells: passed/failed/skipped and the file's time (collect, hooks, tests; one vitest run per kernel, its start-up in 'run')");
console.log(line(head));
console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
for (const r of rows) console.log(line(r));
const probes = kernels.map((k) => [k, read(path.join(out, k, 'results', 'probe-cgroup.txt'))]).filter(([, t]) => t);
if (probes.length) {
  console.log('\ncgroup listing probe (devtools/vm/probe-cgroup-query.sh):');
  for (const [k, t] of probes)
    for (const l of t.split('\n').filter((x) => x.startsWith('bpftool'))) console.log(`  ${k}: ${short(l, 160)}`);
}
if (notes.length) {
  console.log('\nfirst failure or skips per cell; per VM: death, re-run, lockdown mode:');
  for (const n of notes) console.log('  ' + n);
}
if (bad) process.exitCode = 1;
