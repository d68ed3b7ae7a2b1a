/**
 * The key agent: HTTP on a unix socket (mode 0600) beside the mount, bound into the session at
 * /run/tre/key-agent.sock. Its operations are in key-agent.openapi.json:
 *
 *   POST /                   {path}                        -> {key}  (the gocryptfs fork's -kms)
 *   POST /manifest           {paths}                       -> {files: [{path, fileId, size, sha256}]}
 *   POST /freeze             {paths, requestId}            -> {requestId, files: [... keys]}
 *   POST /freeze/lift        {requestId}                   -> {requestId, lifted}
 *   POST /grants             {project}                     -> {completed, skipped}
 *   POST /egress/review-key  {project, requestId, fileId} or {projectId, fileId, wrapped}
 *                                                          -> {fileId, [path, size, sha256,] key}
 *   GET  /openapi.json
 *
 * Errors are `{"error": message, "code": code}` with 400 (bad body), 403, 404, 409, 501 (needs
 * the KMS) or 502 (the KMS failed). Only the socket's owner can connect. This is the HTTP shell:
 * validation is agent-api.ts, the work agent-ops.ts and filesystem.ts.
 */
import { chmod, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { posix } from 'node:path';
import type { Logger } from 'pino';
import { AGENT_API, AgentValidator, type AgentRoute } from './agent-api.js';
import type { AgentOps } from './agent-ops.js';
import { AgentError, FsError, ERRNO } from './errors.js';
import type { TrefsFs } from './filesystem.js';

const MAX_BODY = 64 * 1024;

export class KeyAgent {
  private server: Server | undefined;
  private readonly validator = new AgentValidator();

  constructor(
    private readonly fs: TrefsFs,
    readonly socketPath: string,
    private readonly log: Logger,
    private readonly ops?: AgentOps,
  ) {}

  private async fileKey(path: string): Promise<{ key: string }> {
    const normal = posix.normalize(posix.join('/', path));
    try {
      const dek = await this.fs.dekOf(normal);
      this.log.info({ path: normal }, 'key agent released a file key');
      return { key: dek.toString('base64') };
    } catch (err) {
      const errno = err instanceof FsError ? err.errno : undefined;
      if (errno === ERRNO.EACCES) throw new AgentError(403, 'access_ended', 'access has ended');
      const code = (err as NodeJS.ErrnoException).code;
      if (errno !== undefined || code === 'ENOENT' || code === 'ENOTDIR') {
        throw new AgentError(404, 'no_such_file', 'no such file');
      }
      throw err;
    }
  }

  private dispatch(route: string, text: string): Promise<object> {
    const v = this.validator;
    if (route === '/') return this.fileKey(v.parse('/', text).path);
    const ops = this.ops;
    if (!ops || !v.routes().includes(route)) {
      throw new AgentError(404, 'no_such_operation', `no operation POST ${route}`);
    }
    switch (route as AgentRoute) {
      case '/manifest':
        return ops.manifest(v.parse('/manifest', text).paths);
      case '/freeze': {
        const b = v.parse('/freeze', text);
        return ops.freeze(b.paths, b.requestId);
      }
      case '/freeze/lift':
        return ops.lift(v.parse('/freeze/lift', text).requestId);
      case '/grants':
        return ops.grants(v.parse('/grants', text).project);
      default: {
        const b = v.parse('/egress/review-key', text);
        return 'wrapped' in b
          ? ops.reviewKey(b.projectId, b.fileId, { wrapped: b.wrapped })
          : ops.reviewKey(b.project, b.fileId, { requestId: b.requestId });
      }
    }
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const reply = (status: number, body: object) => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    const route = (req.url ?? '/').split('?')[0]!;
    if (req.method === 'GET' && route === '/openapi.json') return reply(200, AGENT_API);
    if (req.method !== 'POST') return reply(405, { error: 'use POST', code: 'method' });
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reply(413, { error: `the body is larger than ${MAX_BODY} bytes`, code: 'too_large' });
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => {
      let p: Promise<object>;
      try {
        p = this.dispatch(route, Buffer.concat(chunks).toString('utf8'));
      } catch (err) {
        p = Promise.reject(err);
      }
      p.then(
        (body) => reply(200, body),
        (err) => {
          if (err instanceof AgentError) {
            if (err.status >= 500) this.log.warn({ route, err: err.message }, 'key agent: KMS');
            return reply(err.status, { error: err.message, code: err.code });
          }
          this.log.warn({ route, err: (err as Error).message }, 'key agent request failed');
          return reply(500, { error: 'internal error', code: 'internal' });
        },
      );
    });
  }

  async start(): Promise<void> {
    await rm(this.socketPath, { force: true });
    const server = createServer((req, res) => this.handle(req, res));
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
