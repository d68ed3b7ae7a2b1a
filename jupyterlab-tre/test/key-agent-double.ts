/**
 * A unit-test stand-in for trefs's key agent (trefs/key-agent.openapi.json), on a real unix
 * socket:
 * plaintext files in `mountDir`, each encrypted once under its own DEK into `cipherDir` (and
 * again when the plaintext changes; agents on the same `cipherDir` share the files), frozen by
 * making them read-only; it wraps DEKs to the recipients it is given and opens the user's
 * egress wraps from the KMS with their KEK, as trefs does. The filing test against the real
 * trefs is lab.session.e2e.test.ts.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join, posix } from 'node:path';
import {
  encryptFile,
  HEADER_LEN,
  parseHeader,
  unwrapKey,
  wrapKey,
  type KeyPair,
  type PublicKey,
} from '@tre/crypto';
import type { KmsClient } from '@tre/kms-service/client';

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
  /** The next freeze answers with malformed wraps (the KMS must refuse the filing). */
  breakWrapsNext(): void;
  stop(): Promise<void>;
}

export async function startKeyAgentDouble(o: {
  socket: string;
  mountDir: string;
  cipherDir: string;
  projectId: string;
  username: string;
  kek: KeyPair;
  /** The user's KMS client (review keys are asked for as the user). */
  kms: KmsClient;
  /** The requester first, then the reviewers: whom filed DEKs are wrapped to. */
  recipients: Array<[string, PublicKey]>;
  /** Operations answered 404, as an agent that does not offer them. */
  missing?: string[];
}): Promise<KeyAgentDouble> {
  const files = trees.get(o.cipherDir) ?? new Map<string, Stored>();
  trees.set(o.cipherDir, files);
  const frozen = new Map<number, string[]>();
  const calls: string[] = [];
  const failures = new Map<string, number>();
  let breakWraps = false;

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
    const norm = (p: string) => posix.normalize(p).replace(/^\/+/, '');
    const facts = (p: string, st: Stored) => ({
      path: p,
      fileId: st.fileId,
      size: st.size,
      sha256: st.sha256,
    });
    switch (url) {
      case '/': {
        const st = await stored(norm(String(body.path)));
        return [200, { key: st.dek.toString('base64') }];
      }
      case '/freeze': {
        const id = Number(body.requestId);
        for (const [other, ps] of frozen) {
          if (other !== id && ps.some((p) => paths.includes(p))) {
            return [409, { error: `frozen by request ${other}`, code: 'frozen' }];
          }
        }
        for (const p of frozen.get(id) ?? []) chmodSync(join(o.mountDir, p), 0o644);
        for (const p of paths) chmodSync(join(o.mountDir, norm(p)), 0o444);
        frozen.set(id, paths.map(norm));
        const broken = breakWraps;
        breakWraps = false;
        const files = [];
        for (const p of paths) {
          const st = await stored(norm(p));
          const keys = [];
          for (const [username, pk] of o.recipients) {
            keys.push({
              username,
              wrapped: broken
                ? { v: 1 }
                : await wrapKey(st.dek, pk, {
                    purpose: 'egress',
                    projectId: o.projectId,
                    fileId: st.fileId,
                    recipient: username,
                  }),
            });
          }
          files.push({ ...facts(p, st), keys });
        }
        return [200, { requestId: id, files }];
      }
      case '/freeze/lift': {
        const id = Number(body.requestId);
        for (const p of frozen.get(id) ?? []) chmodSync(join(o.mountDir, p), 0o644);
        return [200, { requestId: id, lifted: frozen.delete(id) }];
      }
      case '/manifest': {
        const out = [];
        for (const p of paths) out.push(facts(p, await stored(norm(p))));
        return [200, { files: out }];
      }
      case '/grants':
        return [200, { completed: [], skipped: [] }];
      case '/egress/review-key': {
        const k = await o.kms.egressReviewKey(
          String(body.project),
          Number(body.requestId),
          String(body.fileId),
        );
        const dek = await unwrapKey(k.wrapped, o.kek, {
          purpose: 'egress',
          projectId: String(body.project),
          fileId: k.fileId,
          recipient: o.username,
        });
        return [
          200,
          {
            fileId: k.fileId,
            path: k.path,
            size: k.size,
            sha256: k.sha256,
            key: Buffer.from(dek).toString('base64'),
          },
        ];
      }
      default:
        return [404, { error: 'no such operation', code: 'no_such_operation' }];
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
        return reply(fail, { error: 'refused by the test', code: 'not_yours' });
      }
      if (o.missing?.includes(url)) {
        return reply(404, { error: 'no such operation', code: 'no_such_operation' });
      }
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      } catch {
        return reply(400, { error: 'body must be JSON' });
      }
      handle(url, body).then(
        ([s, v]) => reply(s, v),
        (e: Error) => reply(404, { error: e.message, code: 'no_such_file' }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(o.socket, resolve));
  return {
    socket: o.socket,
    calls,
    frozen,
    failNext: (path, status) => failures.set(path, status),
    breakWrapsNext: () => {
      breakWraps = true;
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(o.socket, { force: true });
    },
  };
}
