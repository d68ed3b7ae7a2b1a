import { jestConfig } from '../jest.preset.js';

// Generous hook and test timeouts: CI machines are small and shared.
export default jestConfig({ testTimeout: 60_000 });
