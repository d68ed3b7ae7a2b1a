/**
 * Local resume state of an upload session, one small JSON file per source file, each
 * replaced atomically (write to a temporary name, rename). It holds no plaintext key: file
 * DEKs are sealed under a session key that is itself HPKE-wrapped to the uploader's own KEK,
 * so the state is useless without the key file and its passphrase.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { WrappedKey } from '@tre/crypto';
import type { CipherComponent } from './cipher-names.js';

export type FilePhase = 'uploading' | 'verified' | 'registered';

export interface FileState {
  v: 1;
  relPath: string;
  size: number;
  mtimeMs: number;
  ino: number;
  uploadId: string;
  fileId: string;
  /** The DEK sealed under the session key (AES-256-GCM, base64url); absent in master-key mode. */
  sealedDek?: string;
  dir: CipherComponent[];
  entry: CipherComponent;
  cipherSize: number;
  /** SHA-256 of every unit handed to tus so far, in order (write-ahead of the send). */
  units: string[];
  phase: FilePhase;
  digest?: string;
}

export interface SessionState {
  v: 1;
  id: string;
  project: string;
  ingress: string;
  requestId?: string;
  /** The session key wrapped to the uploader's KEK; absent in master-key mode. */
  sessionKey?: WrappedKey;
  createdAt: string;
  /** Set once every file is registered (and the request submitted, if asked). */
  done?: { files: number; submitted: boolean };
}

export function defaultStateRoot(): string {
  const base = process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(base, 'tre', 'uploads');
}

/** The same command (project, ingress, destination, sources) always maps to the same session. */
export function sessionId(parts: unknown): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 32);
}

async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, JSON.stringify(value), { mode: 0o600 });
  await rename(tmp, path);
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    // A state file is only ever replaced whole; an unreadable one is treated as absent.
    if (e instanceof SyntaxError) return undefined;
    throw e;
  }
}

export class SessionStore {
  readonly dir: string;

  constructor(
    root: string,
    readonly id: string,
  ) {
    this.dir = join(root, id);
  }

  async init(): Promise<void> {
    await mkdir(join(this.dir, 'files'), { recursive: true, mode: 0o700 });
  }

  loadSession(): Promise<SessionState | undefined> {
    return readJson<SessionState>(join(this.dir, 'session.json'));
  }

  saveSession(s: SessionState): Promise<void> {
    return writeJsonAtomic(join(this.dir, 'session.json'), s);
  }

  private filePath(relPath: string): string {
    return join(
      this.dir,
      'files',
      createHash('sha256').update(relPath).digest('hex').slice(0, 40) + '.json',
    );
  }

  loadFile(relPath: string): Promise<FileState | undefined> {
    return readJson<FileState>(this.filePath(relPath));
  }

  saveFile(f: FileState): Promise<void> {
    return writeJsonAtomic(this.filePath(f.relPath), f);
  }

  /**
   * Marks the session finished, then drops the per-file state (which holds the sealed DEKs).
   * The marker is written first so that a run killed during the cleanup, run again, reports
   * the finished session instead of uploading everything a second time.
   */
  async finish(s: SessionState, done: NonNullable<SessionState['done']>): Promise<void> {
    const rest: SessionState = { ...s, done };
    delete rest.sessionKey;
    await this.saveSession(rest);
    await rm(join(this.dir, 'files'), { recursive: true, force: true });
  }
}

/** Seals DEKs for the state file under the session key. */
export class DekSealer {
  constructor(private readonly key: Buffer) {}

  seal(dek: Uint8Array, fileId: string): string {
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.key, nonce);
    c.setAAD(Buffer.from(`tre-resume-dek/v1\0${fileId}`));
    return Buffer.concat([nonce, c.update(dek), c.final(), c.getAuthTag()]).toString('base64url');
  }

  open(sealed: string, fileId: string): Buffer {
    const b = Buffer.from(sealed, 'base64url');
    const d = createDecipheriv('aes-256-gcm', this.key, b.subarray(0, 12));
    d.setAAD(Buffer.from(`tre-resume-dek/v1\0${fileId}`));
    d.setAuthTag(b.subarray(b.length - 16));
    return Buffer.concat([d.update(b.subarray(12, b.length - 16)), d.final()]);
  }
}
