import { defineConfig } from 'vitest/config';

// Two cores: run test files in parallel but bounded; the databases, brokers and child processes
// the integration tests start are the expensive part, not the CPU.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
