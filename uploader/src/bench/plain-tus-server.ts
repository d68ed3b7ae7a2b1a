/**
 * The benchmark's baseline: a plain @tus/server with the POSIX file store, no authentication,
 * no encryption and no verification. Not part of the product.
 */
import { createServer } from 'node:http';
import { FileStore } from '@tus/file-store';
import { Server } from '@tus/server';

const dir = process.argv[2];
if (!dir) throw new Error('usage: plain-tus-server <directory>');
const tus = new Server({
  path: '/files',
  datastore: new FileStore({ directory: dir }),
  relativeLocation: true,
});
const http = createServer((req, res) => void tus.handle(req, res));
http.listen(0, '127.0.0.1', () => {
  const addr = http.address();
  process.stdout.write(
    `listening on 127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}\n`,
  );
});
process.once('SIGTERM', () => http.close(() => process.exit(0)));
