export * from './errors.js';
export * from './cryptocore.js';
export * from './kdf.js';
