/**
 * A unit-test stand-in for trefs's key agent (the README's contract), on a real unix socket:
 * plaintext files in `mountDir`, each encrypted once under its own DEK into `cipherDir` (and
 * again when the plaintext changes; agents on the same `cipherDir` share the files), frozen by
 * making them read-only. It holds the user's KEK
 * to open egress wraps as trefs does. The filing test against real trefs is lab.session.test.ts.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join, posix } from 'node:path';
import { encryptFile, HEADER_LEN, parseHeader, unwrapKey, type KeyPair } from '@tre/crypto';

interface Stored {
  dek: Buffer;
  cipher: string;
  fileId: string;
  size: number;
  sha256: string;
  stamp: string;
}

/** The stored files per cipher directory: two agents on one project tree see the same files. */
const trees = new Map<string, Map<string, Stored>>();

export interface KeyAgentDouble {
  socket: string;
  /** Requests seen, in order, as `METHOD path`. */
  calls: string[];
  frozen: Map<number, string[]>;
  /** Next answer of one operation replaced by this status (for refusal tests). */
  failNext(path: string, status: number): void;
  stop(): Promise<void>;
}

export async function startKeyAgentDouble(o: {
  socket: string;
  mountDir: string;
  cipherDir: string;
  projectId: string;
  username: string;
  kek: KeyPair;
  /** Operations answered 404, as an agent that does not offer them. */
  missing?: string[];
}): Promise<KeyAgentDouble> {
  const files = trees.get(o.cipherDir) ?? new Map<string, Stored>();
  trees.set(o.cipherDir, files);
  const frozen = new Map<number, string[]>();
  const calls: string[] = [];
  const failures = new Map<string, number>();

  const stored = async (path: string): Promise<Stored> => {
    const abs = join(o.mountDir, path);
    const st = statSync(abs);
    const stamp = `${st.size}:${st.mtimeMs}`;
    const had = files.get(path);
    if (had && had.stamp === stamp) return had;
    const dek = had?.dek ?? randomBytes(32);
    const cipher = join(o.cipherDir, createHash('sha256').update(path).digest('hex'));
    await encryptFile(dek, abs, cipher);
    const ct = readFileSync(cipher);
    const s = {
      dek,
      cipher,
      fileId: parseHeader(ct.subarray(0, HEADER_LEN)).toString('hex'),
      size: ct.length,
      sha256: createHash('sha256').update(ct).digest('hex'),
      stamp,
    };
    files.set(path, s);
    return s;
  };

  const handle = async (url: string, body: Record<string, unknown>): Promise<[number, object]> => {
    const paths = Array.isArray(body.paths) ? (body.paths as string[]) : [];
    const norm = (p: string) => posix.normalize(posix.join('/', p));
    switch (url) {
      case '/': {
        const s = await stored(norm(String(body.path)));
        return [200, { key: s.dek.toString('base64') }];
      }
      case '/freeze': {
        const id = Number(body.requestId);
        for (const [other, ps] of frozen) {
          if (other !== id && ps.some((p) => paths.includes(p))) {
            return [409, { error: `frozen by request ${other}` }];
          }
        }
        for (const p of paths) chmodSync(join(o.mountDir, norm(p)), 0o444);
        frozen.set(id, paths.map(norm));
        return [200, { frozen: paths }];
      }
      case '/freeze/lift': {
        const id = Number(body.requestId);
        for (const p of frozen.get(id) ?? []) chmodSync(join(o.mountDir, p), 0o644);
        const had = frozen.delete(id);
        return [200, { lifted: had }];
      }
      case '/manifest': {
        const out = [];
        for (const p of paths) {
          const s = await stored(norm(p));
          out.push({ path: p, fileId: s.fileId, size: s.size, sha256: s.sha256 });
        }
        return [200, { files: out }];
      }
      case '/grants':
        return [200, { completed: 0, project: body.project }];
      case '/egress/review-key': {
        const dek = await unwrapKey(body.wrapped as never, o.kek, {
          purpose: 'egress',
          projectId: String(body.projectId),
          fileId: String(body.fileId),
          recipient: o.username,
        });
        return [200, { key: Buffer.from(dek).toString('base64') }];
      }
      default:
        return [404, { error: 'no such operation' }];
    }
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = req.url ?? '/';
      calls.push(`${req.method ?? ''} ${url}`);
      const reply = (status: number, v: object) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(v));
      };
      const fail = failures.get(url);
      if (fail !== undefined) {
        failures.delete(url);
        return reply(fail, { error: 'refused by the test' });
      }
      if (o.missing?.includes(url)) return reply(404, { error: 'no such operation' });
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      } catch {
        return reply(400, { error: 'body must be JSON' });
      }
      handle(url, body).then(
        ([s, v]) => reply(s, v),
        (e: Error) => reply(404, { error: e.message }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(o.socket, resolve));
  return {
    socket: o.socket,
    calls,
    frozen,
    failNext: (path, status) => failures.set(path, status),
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(o.socket, { force: true });
    },
  };
}
