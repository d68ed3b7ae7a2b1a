/**
 * The client of trefs's key agent (trefs/key-agent.openapi.json): HTTP with JSON bodies on the
 * unix socket that the job agent binds into the session (`c.TreLab.key_agent_socket`). The KEK
 * and the project keys stay in trefs outside the container; what the agent hands in is a
 * manifest, DEKs already wrapped to the request's recipients, or one file's DEK.
 *
 *   POST /                    {path}                         -> {key}
 *   POST /freeze              {paths, requestId}             -> {requestId, files: [{path, fileId, size, sha256, keys}]}
 *   POST /freeze/lift         {requestId}                    -> {requestId, lifted}
 *   POST /manifest            {paths}                        -> {files: [{path, fileId, size, sha256}]}
 *   POST /grants              {project}                      -> {completed, skipped}
 *   POST /egress/review-key   {project, requestId, fileId}   -> {fileId, path, size, sha256, key}
 *
 * Paths are plaintext paths relative to the mount's root (`export/a.csv`). Errors are
 * `{error, code}`; an agent without an operation (404 `no_such_operation`, or an older agent
 * that answers without a code) becomes 501 `not_offered` here.
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

export interface FrozenEntry extends ManifestEntry {
  keys: Array<{ username: string; wrapped: WrappedKey }>;
}

export interface ReviewKey extends ManifestEntry {
  key: Buffer;
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
      const code = typeof o.code === 'string' ? o.code : undefined;
      if (path !== '/' && (code === 'no_such_operation' || code === undefined)) {
        throw new KeyAgentError(
          501,
          'not_offered',
          `this session's key agent does not offer ${path} yet`,
        );
      }
      const msg = typeof o.error === 'string' ? o.error : `HTTP ${status}`;
      throw new KeyAgentError(status, code ?? 'agent_refused', `the key agent: ${msg}`);
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

  /**
   * Freezes the files for request `requestId` (replacing its earlier freeze) and returns their
   * manifest with each DEK wrapped to the requester and every reviewer.
   */
  async freeze(paths: string[], requestId: number): Promise<FrozenEntry[]> {
    const o = await this.json('/freeze', { paths, requestId });
    const facts = KeyAgentClient.entries(o, paths, 'freeze');
    const files = o.files as Array<Record<string, unknown>>;
    return facts.map((f) => {
      const keys = files.find((x) => x.path === f.path)?.keys;
      if (!Array.isArray(keys) || keys.length === 0) {
        throw new KeyAgentError(502, 'agent_answer', `the key agent wrapped no key for ${f.path}`);
      }
      return { ...f, keys: keys as FrozenEntry['keys'] };
    });
  }

  async lift(requestId: number): Promise<boolean> {
    return (await this.json('/freeze/lift', { requestId })).lifted === true;
  }

  /** Size, SHA-256 and file ID of each file's ciphertext as trefs stores it. */
  async manifest(paths: string[]): Promise<ManifestEntry[]> {
    return KeyAgentClient.entries(await this.json('/manifest', { paths }), paths, 'manifest');
  }

  private static entries(
    o: Record<string, unknown>,
    paths: string[],
    what: string,
  ): ManifestEntry[] {
    const files = Array.isArray(o.files) ? (o.files as unknown[]) : [];
    return paths.map((path) => {
      const f = files.find(
        (x): x is Record<string, unknown> =>
          typeof x === 'object' && x !== null && (x as { path?: unknown }).path === path,
      );
      const fileId = typeof f?.fileId === 'string' ? f.fileId.toLowerCase() : '';
      const sha256 = typeof f?.sha256 === 'string' ? f.sha256.toLowerCase() : '';
      const size = f?.size;
      if (!HEX32.test(fileId) || !HEX64.test(sha256) || !Number.isSafeInteger(size)) {
        throw new KeyAgentError(502, 'agent_answer', `the key agent's ${what} lacks ${path}`);
      }
      return { path, fileId, size: size as number, sha256 };
    });
  }

  /** Completes the project's pending grants with the project key trefs holds. */
  async grants(project: string): Promise<Record<string, unknown>> {
    return this.json('/grants', { project });
  }

  /**
   * The caller's own egress DEK of a filed file: the agent asks the KMS for the wrap (only a
   * reviewer of a request under review gets it) and opens it with the KEK (the caller zeroes it).
   */
  async reviewKey(project: string, requestId: number, fileId: string): Promise<ReviewKey> {
    const o = await this.json('/egress/review-key', { project, requestId, fileId });
    const key = KeyAgentClient.key(o, fileId);
    try {
      const path = typeof o.path === 'string' ? o.path : '';
      const [facts] = KeyAgentClient.entries({ files: [o] }, [path], 'review key');
      return { ...(facts as ManifestEntry), key };
    } catch (e) {
      key.fill(0);
      throw e;
    }
  }
}
