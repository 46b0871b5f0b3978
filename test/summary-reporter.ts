/**
 * Ends every run with the integration files by the time each took, slowest first (the suite has a
 * time budget, and this is where it goes), then one plain line, `N passed, N failed, N skipped`,
 * for CI logs.
 */
import type { Reporter, TestModule } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const m of modules) {
      for (const t of m.children.allTests()) {
        const state = t.result().state;
        if (state === 'passed') passed++;
        else if (state === 'failed') failed++;
        else skipped++;
      }
    }
    const files = modules
      .filter((m) => m.project.name === 'integration')
      .map((m) => ({ file: m.relativeModuleId, s: m.diagnostic().duration / 1000 }))
      .sort((a, b) => b.s - a.s);
    if (files.length) {
      const total = files.reduce((sum, f) => sum + f.s, 0);
      process.stdout.write(`\nintegration files, ${total.toFixed(0)} s in all (tests and hooks; the shared lab's start is not in any):\n`);
      for (const f of files) process.stdout.write(`  ${f.s.toFixed(1).padStart(7)} s  ${f.file}\n`);
    }
    process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
