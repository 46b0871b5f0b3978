import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    reporters: ['default', './test/summary-reporter.ts'],
    // Both cores for the unit files: the integration files (one at a time, on the shared lab) start
    // only once they are done, so the machine is otherwise idle meanwhile.
    maxWorkers: 2,
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/integration/global-setup.ts'],
          setupFiles: ['test/integration/setup.ts'],
          testTimeout: 180_000,
          hookTimeout: 900_000,
          // The lab is one shared set of hosts: files run one at a time.
          fileParallelism: false,
        },
      },
    ],
  },
});
