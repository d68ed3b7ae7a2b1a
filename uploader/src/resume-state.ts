/**
 * Local resume state of an upload session: the session's JSON file, replaced atomically, and a
 * journal of the per-file states (see SessionStore). It holds no plaintext key: file
 * DEKs are sealed under a session key that is itself HPKE-wrapped to the uploader's own KEK,
 * so the state is useless without the key file and its passphrase.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { writeSync } from 'node:fs';
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

type JournalRecord =
  | { f: FileState }
  /** Units [first, first + hashes.length) of file `u` (write-ahead of their send). */
  | { u: string; first: number; hashes: string[] };

/**
 * The session's per-file state is an append-only journal (`files.jsonl`): one JSON line per
 * change, replayed in order at start. Appending a line is a single write(2), so a run killed at
 * any moment leaves at most one torn last line, which is cut off on the next start: that change
 * counts as never made, exactly as an interrupted write-and-rename would.
 */
export class SessionStore {
  readonly dir: string;
  private readonly files = new Map<string, FileState>();
  private journal: FileHandle | undefined;

  constructor(
    root: string,
    readonly id: string,
  ) {
    this.dir = join(root, id);
  }

  private get journalPath(): string {
    return join(this.dir, 'files.jsonl');
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    // A session interrupted under the earlier layout (one JSON file per source file) resumes too.
    const legacy = await readdir(join(this.dir, 'files')).catch(() => [] as string[]);
    for (const name of legacy.filter((n) => n.endsWith('.json'))) {
      const st = await readJson<FileState>(join(this.dir, 'files', name));
      if (st) this.files.set(st.relPath, st);
    }
    let text = '';
    try {
      text = await readFile(this.journalPath, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    const whole = text.lastIndexOf('\n') + 1;
    for (const line of text.slice(0, whole).split('\n')) {
      if (line === '') continue;
      let r: JournalRecord;
      try {
        r = JSON.parse(line) as JournalRecord;
      } catch {
        continue;
      }
      if ('f' in r) this.files.set(r.f.relPath, r.f);
      else {
        const st = this.files.get(r.u);
        if (st) {
          st.units.length = Math.min(st.units.length, r.first);
          st.units.push(...r.hashes);
        }
      }
    }
    this.journal = await open(this.journalPath, 'a', 0o600);
    if (Buffer.byteLength(text) !== Buffer.byteLength(text.slice(0, whole))) {
      await this.journal.truncate(Buffer.byteLength(text.slice(0, whole)));
    }
  }

  /** Closes the journal (the state stays on disk for a later run). */
  async close(): Promise<void> {
    const j = this.journal;
    this.journal = undefined;
    await j?.close();
  }

  loadSession(): Promise<SessionState | undefined> {
    return readJson<SessionState>(join(this.dir, 'session.json'));
  }

  saveSession(s: SessionState): Promise<void> {
    return writeJsonAtomic(join(this.dir, 'session.json'), s);
  }

  loadFile(relPath: string): FileState | undefined {
    const st = this.files.get(relPath);
    return st ? (JSON.parse(JSON.stringify(st)) as FileState) : undefined;
  }

  // A synchronous append: one short write(2) to the page cache costs less than the thread-pool
  // round trip of an asynchronous one, and it is on disk (as far as a crash of this process
  // goes) before the caller sends what it describes.
  private async append(records: JournalRecord[]): Promise<void> {
    if (!this.journal) throw new Error('the resume state is not open');
    if (records.length === 0) return;
    writeSync(this.journal.fd, records.map((r) => JSON.stringify(r) + '\n').join(''));
  }

  saveFile(f: FileState): Promise<void> {
    return this.saveFiles([f]);
  }

  /** Records several files' states with one write. */
  async saveFiles(fs: FileState[]): Promise<void> {
    await this.append(fs.map((f) => ({ f })));
    for (const f of fs) this.files.set(f.relPath, { ...f, units: [...f.units] });
  }

  /** Records the hashes of units about to be sent (the file's state otherwise unchanged). */
  async saveUnits(relPath: string, first: number, hashes: string[]): Promise<void> {
    await this.append([{ u: relPath, first, hashes }]);
    const st = this.files.get(relPath);
    if (st) {
      st.units.length = Math.min(st.units.length, first);
      st.units.push(...hashes);
    }
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
    await this.close();
    await rm(this.journalPath, { force: true });
    await rm(join(this.dir, 'files'), { recursive: true, force: true });
    this.files.clear();
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
