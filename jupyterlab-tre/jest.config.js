import { jestConfig } from '../jest.preset.js';

export default jestConfig({
  testTimeout: 120_000,
  setupFiles: ['<rootDir>/test/setup-dom.js'],
  // The built labextension carries a copy of package.json.
  modulePathIgnorePatterns: ['<rootDir>/jupyterlab_tre/', '<rootDir>/test-artifacts/'],
});
