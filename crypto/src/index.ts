export * from './errors.js';
export * from './cryptocore.js';
export * from './kdf.js';
export * from './contentenc.js';
export * from './content-stream.js';
export * from './file-access.js';
