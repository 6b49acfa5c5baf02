/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  // Each test synthesizes a whole stack (with CDK's template validation).
  testTimeout: 60000,
  transform: {
    // tsconfig's isolatedModules makes ts-jest transpile only; type checking is
    // done once by `tsc --noEmit` (npm run build), not per test file.
    '^.+\\.tsx?$': 'ts-jest',
  },
};
