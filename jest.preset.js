// Shared jest settings: ts-jest in ESM mode; sources import each other with the `.js`
// extension that Node's ESM resolution needs, which jest maps back to the `.ts` files.
export function jestConfig(overrides = {}) {
  return {
    testEnvironment: 'node',
    extensionsToTreatAsEsm: ['.ts'],
    moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
    transform: { '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.test.json' }] },
    testMatch: ['<rootDir>/test/**/*.test.ts'],
    ...overrides,
  };
}
