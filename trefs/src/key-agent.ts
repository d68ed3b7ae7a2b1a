/**
 * The key agent: an HTTP endpoint on a unix socket (mode 0600) answering the key requests of
 * the per-file-key gocryptfs fork's `-kms` option, so a site can run that filesystem on the
 * same keys:
 *
 *   POST /  {"path": "<plaintext path inside the mount>"}
 *   200     {"key": "<standard base64 of the file's 32-byte DEK>"}
 *   404     unknown path, or a file without a header yet; 403 after revocation; 400 bad request
 *
 * Only the socket's owner can connect; the DEK is released only for files of this project.
 */
import { chmod, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { posix } from 'node:path';
import type { Logger } from 'pino';
import { FsError, ERRNO } from './errors.js';
import type { TrefsFs } from './filesystem.js';

const MAX_BODY = 16 * 1024;

export class KeyAgent {
  private server: Server | undefined;

  constructor(
    private readonly fs: TrefsFs,
    readonly socketPath: string,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    await rm(this.socketPath, { force: true });
    const server = createServer((req, res) => {
      const reply = (status: number, body: object) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.method !== 'POST') return reply(405, { error: 'use POST' });
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY) req.destroy();
        else chunks.push(c);
      });
      req.on('end', () => {
        let path: unknown;
        try {
          path = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { path?: unknown }).path;
        } catch {
          return reply(400, { error: 'body must be JSON {"path": "..."}' });
        }
        if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) {
          return reply(400, { error: '"path" must be a non-empty string' });
        }
        const normal = posix.normalize(posix.join('/', path));
        this.fs.dekOf(normal).then(
          (dek) => {
            this.log.info({ path: normal }, 'key agent released a file key');
            reply(200, { key: dek.toString('base64') });
          },
          (err) => {
            const errno = err instanceof FsError ? err.errno : undefined;
            if (errno === ERRNO.EACCES) return reply(403, { error: 'access has ended' });
            const code = (err as NodeJS.ErrnoException).code;
            if (errno !== undefined || code === 'ENOENT' || code === 'ENOTDIR') {
              return reply(404, { error: 'no such file' });
            }
            this.log.warn({ err: (err as Error).message }, 'key agent request failed');
            return reply(500, { error: 'internal error' });
          },
        );
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // The socket is created with the process umask; tighten it before announcing it.
      const old = process.umask(0o177);
      server.listen(this.socketPath, () => {
        process.umask(old);
        resolve();
      });
    });
    await chmod(this.socketPath, 0o600);
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    await rm(this.socketPath, { force: true });
  }
}
