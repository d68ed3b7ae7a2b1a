/**
 * Frozen files: the files of a filed egress request become read-only in every trefs mount of
 * the project until the freeze is lifted (the request returned, withdrawn, rejected or revoked).
 *
 * The freeze is recorded in the cipher tree, beside the files it freezes, so that it holds for
 * every member's mount of the shared tree and after a remount, without the KMS knowing about it:
 * `<cipherdir>/.tre-freeze/<requestId>.json`, one record per request, written atomically
 * (temporary name, fsync, rename). A record names files by cipher path and file ID only (the
 * cipher tree never holds a plaintext name) and carries an HMAC-SHA256 under a key derived from
 * the project's volume key, so only a member's trefs can write one that is honoured. Mounts
 * re-read the records when the directory changes (looked at, with one stat, at most every
 * REFRESH_MS by changing operations).
 *
 * A record that fails verification is ignored and logged. The freeze keeps files stable while
 * they are reviewed; the integrity of what is released rests on the ciphertext SHA-256 in the
 * KMS's manifest, which `tre download` checks.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdir, open, rename, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { tempSibling } from '@tre/crypto';

export const FREEZE_DIR = '.tre-freeze';

/** Mounts look for new or lifted freezes at most this often (ms). */
export const REFRESH_MS = 100;

export interface FrozenFile {
  /** Path of the ciphertext file relative to the cipher directory. */
  cipherPath: string;
  /** The file ID of its header (lowercase hex). */
  fileId: string;
}

export interface FreezeRecord {
  v: 1;
  projectId: string;
  requestId: number;
  frozenAt: string;
  files: FrozenFile[];
}

const RECORD_NAME = /^([1-9][0-9]{0,15})\.json$/;

/** The record's bytes as they are authenticated: fixed key order, no whitespace. */
function canonical(r: FreezeRecord): string {
  return JSON.stringify({
    v: r.v,
    projectId: r.projectId,
    requestId: r.requestId,
    frozenAt: r.frozenAt,
    files: r.files.map((f) => ({ cipherPath: f.cipherPath, fileId: f.fileId })),
  });
}

function parseRecord(text: string): { record: FreezeRecord; mac: string } {
  const o = JSON.parse(text) as Record<string, unknown>;
  const files = o.files;
  if (
    o.v !== 1 ||
    typeof o.projectId !== 'string' ||
    typeof o.requestId !== 'number' ||
    !Number.isSafeInteger(o.requestId) ||
    typeof o.frozenAt !== 'string' ||
    typeof o.mac !== 'string' ||
    !Array.isArray(files) ||
    !files.every(
      (f: unknown) =>
        typeof f === 'object' &&
        f !== null &&
        typeof (f as FrozenFile).cipherPath === 'string' &&
        /^[0-9a-f]{32}$/.test(String((f as FrozenFile).fileId)),
    )
  ) {
    throw new Error('malformed freeze record');
  }
  return {
    record: {
      v: 1,
      projectId: o.projectId,
      requestId: o.requestId,
      frozenAt: o.frozenAt,
      files: (files as FrozenFile[]).map((f) => ({ cipherPath: f.cipherPath, fileId: f.fileId })),
    },
    mac: o.mac,
  };
}

/** The freeze records' MAC key: HKDF-SHA256 of the volume key, bound to the project. */
export function freezeMacKey(volumeKey: Buffer, projectId: string): Buffer {
  return Buffer.from(
    hkdfSync('sha256', volumeKey, Buffer.alloc(0), `tre-freeze/v1\0${projectId}`, 32),
  );
}

export class FreezeStore {
  private records = new Map<number, FreezeRecord>();
  private paths = new Set<string>();
  private dirs = new Set<string>();
  private ids = new Set<string>();
  private stamp = '';
  private lookedAt = -Infinity;
  /** Frozen here but not yet on disk (a freeze in progress): enforced at once. */
  private pending = new Map<number, FreezeRecord>();

  constructor(
    readonly cipherRoot: string,
    readonly projectId: string,
    private readonly macKey: Buffer,
    private readonly warn: (message: string) => void = () => undefined,
  ) {}

  get dir(): string {
    return join(this.cipherRoot, FREEZE_DIR);
  }

  private mac(r: FreezeRecord): string {
    return createHmac('sha256', this.macKey).update(canonical(r)).digest('hex');
  }

  /**
   * Re-reads the records when the freeze directory changed since the last look. Changing
   * operations call this; a look is skipped when the last one is under REFRESH_MS old, so a
   * stream of writes costs one stat per interval (a stat per 128 KiB write was 10-20 us).
   */
  refresh(force = false): void {
    const now = performance.now();
    if (!force && now - this.lookedAt < REFRESH_MS) return;
    this.lookedAt = now;
    // No exception when there is no freeze directory.
    const st = statSync(this.dir, { throwIfNoEntry: false });
    const stamp = st ? `${st.ino}:${st.mtimeMs}:${st.ctimeMs}` : 'none';
    if (stamp === this.stamp) return;
    const records = new Map<number, FreezeRecord>();
    if (stamp !== 'none') {
      for (const name of readdirSync(this.dir)) {
        const m = RECORD_NAME.exec(name);
        if (!m) continue;
        try {
          const { record, mac } = parseRecord(readFileSync(join(this.dir, name), 'utf8'));
          const want = Buffer.from(this.mac(record), 'hex');
          const got = Buffer.from(mac, 'hex');
          if (
            got.length !== want.length ||
            !timingSafeEqual(got, want) ||
            record.requestId !== Number(m[1]) ||
            record.projectId !== this.projectId
          ) {
            throw new Error('its MAC does not verify');
          }
          records.set(record.requestId, record);
        } catch (err) {
          this.warn(`ignoring freeze record ${name}: ${(err as Error).message}`);
        }
      }
    }
    this.records = records;
    this.stamp = stamp;
    this.index();
  }

  private index(): void {
    const paths = new Set<string>();
    const dirs = new Set<string>();
    const ids = new Set<string>();
    for (const r of [...this.records.values(), ...this.pending.values()]) {
      for (const f of r.files) {
        paths.add(f.cipherPath);
        ids.add(f.fileId);
        const parts = f.cipherPath.split('/');
        for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
      }
    }
    this.paths = paths;
    this.dirs = dirs;
    this.ids = ids;
  }

  /** A frozen file at this cipher path (relative). */
  isFrozenPath(cipherPath: string): boolean {
    return this.paths.has(cipherPath);
  }

  /** The path is a frozen file or a directory holding one (renaming it would move the file). */
  covers(cipherPath: string): boolean {
    return this.paths.has(cipherPath) || this.dirs.has(cipherPath);
  }

  isFrozenFile(fileId: string): boolean {
    return this.ids.has(fileId);
  }

  get hasAny(): boolean {
    return this.paths.size > 0;
  }

  record(requestId: number): FreezeRecord | undefined {
    return this.pending.get(requestId) ?? this.records.get(requestId);
  }

  /**
   * Starts a freeze: enforced in this mount at once, before anything is written, so no write
   * through this mount slips in between the check and the manifest. `commit` records it on disk.
   */
  begin(requestId: number, files: FrozenFile[], now: Date): FreezeRecord {
    const record: FreezeRecord = {
      v: 1,
      projectId: this.projectId,
      requestId,
      frozenAt: now.toISOString(),
      files,
    };
    this.pending.set(requestId, record);
    this.index();
    return record;
  }

  /** Abandons a freeze begun but not committed: the previous record (if any) holds again. */
  abort(requestId: number): void {
    this.pending.delete(requestId);
    this.index();
  }

  async commit(requestId: number): Promise<void> {
    const record = this.pending.get(requestId);
    if (!record) throw new Error(`no freeze of request ${requestId} in progress`);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const path = join(this.dir, `${requestId}.json`);
    const tmp = tempSibling(path);
    const body = JSON.stringify({ ...JSON.parse(canonical(record)), mac: this.mac(record) });
    try {
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(body);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    syncDir(this.dir);
    this.pending.delete(requestId);
    this.stamp = '';
    this.refresh(true);
  }

  /** Lifts a request's freeze; false when there was none. */
  async lift(requestId: number): Promise<boolean> {
    this.refresh(true);
    if (!this.records.has(requestId)) return false;
    try {
      await unlink(join(this.dir, `${requestId}.json`));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    syncDir(this.dir);
    this.stamp = '';
    this.refresh(true);
    return true;
  }

  wipe(): void {
    this.macKey.fill(0);
  }
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // A directory fsync is not supported everywhere; the rename is still atomic.
  }
}
