// A vitest reporter for the kernel matrix (devtools/vm/run-tests.sh): as each
// test file ends, writes $PWVM_RESULTS/<file>.json (the shape of vitest's JSON
// reporter that devtools/vm/matrix-table.mjs reads: testResults[] with
// assertionResults[]) and <file>.time (seconds: environment, prepare,
// collect, setup, tests and hooks of that file). Several files share one
// vitest run (its start-up and transforms are paid once, a minute per file
// under emulation), and a file's row is on disk as soon as it ends, so a VM
// killed later keeps the rows of the files that finished.
import fs from 'node:fs';
import path from 'node:path';

const out = process.env.PWVM_RESULTS;
if (!out) throw new Error('file-results reporter: set PWVM_RESULTS to the results directory');

export default class FileResults {
  onTestModuleEnd(mod) {
    const name = path.basename(mod.moduleId, '.ts');
    const tests = [...mod.children.allTests()].map((t) => {
      const r = t.result();
      const d = t.diagnostic();
      return {
        title: t.name,
        fullName: t.fullName,
        status: r.state,
        duration: d?.duration ?? 0,
        failureMessages: (r.errors ?? []).map((e) => e.message ?? String(e)),
        // a skip's reason (test/skip.ts), for scripts/test-summary.mjs
        meta: t.meta(),
      };
    });
    const errs = mod.errors();
    const state = mod.state();
    const d = mod.diagnostic();
    const seconds = (d.environmentSetupDuration + d.prepareDuration + d.collectDuration + d.setupDuration + d.duration) / 1000;
    const result = {
      testResults: [
        {
          name: mod.moduleId,
          status: state === 'failed' || errs.length ? 'failed' : 'passed',
          message: errs.map((e) => e.message).join('\n'),
          assertionResults: tests,
        },
      ],
    };
    fs.writeFileSync(path.join(out, `${name}.json`), JSON.stringify(result, null, 1));
    fs.writeFileSync(path.join(out, `${name}.time`), `${seconds.toFixed(1)}\n`);
    console.log(`pwvm-tests: ${name} ${state} after ${seconds.toFixed(1)} s`);
  }
}
