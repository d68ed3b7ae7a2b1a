/**
 * The client of trefs's key agent: HTTP with JSON bodies on the unix socket that the job agent
 * binds into the session (`c.TreLab.key_agent_socket`). The KEK stays in trefs outside the
 * container; what the agent hands in is one file's DEK at a time, a manifest of the ciphertext,
 * or the outcome of an operation done with the KEK (freeze, grants, review-key unwrap).
 *
 *   POST /                    {path}                         -> {key}
 *   POST /freeze              {paths, requestId}             -> {frozen}
 *   POST /freeze/lift         {requestId}                    -> {lifted}
 *   POST /manifest            {paths}                        -> {files: [{path, fileId, size, sha256}]}
 *   POST /grants              {project}                      -> {completed}
 *   POST /egress/review-key   {projectId, fileId, wrapped}   -> {key}
 *
 * Paths are plaintext paths inside the mount (`/export/a.csv`). Errors: `{error}` with 400
 * (bad request), 403 (access ended, not yours), 404 (no such file or operation), 409 (frozen
 * by another request).
 */
import { request } from 'node:http';
import type { WrappedKey } from '@tre/crypto';

export class KeyAgentError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'KeyAgentError';
  }
}

export interface ManifestEntry {
  path: string;
  fileId: string;
  size: number;
  sha256: string;
}

/** Largest answer read from the agent: a manifest of the most files a request may hold. */
const MAX_ANSWER = 1024 * 1024;
const HEX32 = /^[0-9a-f]{32}$/;
const HEX64 = /^[0-9a-f]{64}$/;

export class KeyAgentClient {
  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = 60_000,
  ) {}

  /** One call; the answer as a buffer so a key in it never has to become a string here. */
  private call(path: string, body: object): Promise<{ status: number; raw: Buffer }> {
    const payload = Buffer.from(JSON.stringify(body), 'utf8');
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          path,
          method: 'POST',
          headers: { 'content-type': 'application/json', 'content-length': payload.length },
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_ANSWER) {
              req.destroy(
                new KeyAgentError(502, 'agent_answer', 'the key agent answer is too long'),
              );
            } else chunks.push(c);
          });
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 502, raw: Buffer.concat(chunks) }),
          );
          res.on('error', reject);
        },
      );
      req.on('timeout', () =>
        req.destroy(new KeyAgentError(504, 'agent_timeout', 'the key agent did not answer')),
      );
      req.on('error', (e) =>
        reject(
          e instanceof KeyAgentError
            ? e
            : new KeyAgentError(
                502,
                'agent_unreachable',
                `the key agent of this session cannot be reached (${(e as NodeJS.ErrnoException).code ?? e.message})`,
              ),
        ),
      );
      req.end(payload);
    });
  }

  /** The JSON answer of a successful call; an agent error becomes a KeyAgentError. */
  private async json(path: string, body: object): Promise<Record<string, unknown>> {
    const { status, raw } = await this.call(path, body);
    let v: unknown;
    try {
      v = JSON.parse(raw.toString('utf8') || '{}');
    } catch {
      throw new KeyAgentError(502, 'agent_answer', `the key agent's answer to ${path} is not JSON`);
    } finally {
      raw.fill(0);
    }
    const o = (typeof v === 'object' && v !== null ? v : {}) as Record<string, unknown>;
    if (status < 200 || status > 299) {
      if (status === 404 && path !== '/') {
        throw new KeyAgentError(
          501,
          'not_offered',
          `this session's key agent does not offer ${path} yet`,
        );
      }
      const msg = typeof o.error === 'string' ? o.error : `HTTP ${status}`;
      throw new KeyAgentError(status, 'agent_refused', `the key agent refused ${path}: ${msg}`);
    }
    return o;
  }

  private static key(o: Record<string, unknown>, what: string): Buffer {
    const k = typeof o.key === 'string' ? Buffer.from(o.key, 'base64') : Buffer.alloc(0);
    o.key = undefined;
    if (k.length !== 32) {
      k.fill(0);
      throw new KeyAgentError(502, 'agent_answer', `the key agent gave no 32-byte key for ${what}`);
    }
    return k;
  }

  /** The DEK of one file of the mount (the caller zeroes it). */
  async dek(path: string): Promise<Buffer> {
    return KeyAgentClient.key(await this.json('/', { path }), path);
  }

  /** Makes the files read-only in trefs until the freeze of `requestId` is lifted. */
  async freeze(paths: string[], requestId: number): Promise<void> {
    await this.json('/freeze', { paths, requestId });
  }

  async lift(requestId: number): Promise<void> {
    await this.json('/freeze/lift', { requestId });
  }

  /** Size, SHA-256 and file ID of each file's ciphertext as trefs stores it. */
  async manifest(paths: string[]): Promise<ManifestEntry[]> {
    const o = await this.json('/manifest', { paths });
    const files = Array.isArray(o.files) ? (o.files as unknown[]) : [];
    const out: ManifestEntry[] = [];
    for (const path of paths) {
      const f = files.find(
        (x): x is Record<string, unknown> =>
          typeof x === 'object' && x !== null && (x as { path?: unknown }).path === path,
      );
      const fileId = typeof f?.fileId === 'string' ? f.fileId.toLowerCase() : '';
      const sha256 = typeof f?.sha256 === 'string' ? f.sha256.toLowerCase() : '';
      const size = f?.size;
      if (!HEX32.test(fileId) || !HEX64.test(sha256) || !Number.isSafeInteger(size)) {
        throw new KeyAgentError(502, 'agent_answer', `the key agent's manifest lacks ${path}`);
      }
      out.push({ path, fileId, size: size as number, sha256 });
    }
    return out;
  }

  /** Completes the project's pending grants with the project key trefs holds. */
  async grants(project: string): Promise<Record<string, unknown>> {
    return this.json('/grants', { project });
  }

  /** Opens the egress DEK wrapped to this session's user (the caller zeroes it). */
  async reviewKey(projectId: string, fileId: string, wrapped: WrappedKey): Promise<Buffer> {
    return KeyAgentClient.key(
      await this.json('/egress/review-key', { projectId, fileId, wrapped }),
      fileId,
    );
  }
}
