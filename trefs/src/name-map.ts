/**
 * Plaintext paths to cipher paths in a gocryptfs-layout tree: each directory holds a
 * `gocryptfs.diriv`; an entry's name is EME-encrypted under the volume key with that IV, and
 * names too long for one directory entry go to `gocryptfs.longname.<hash>` plus a `.name`
 * file. Directory IVs are cached per plaintext directory; renames and removals invalidate.
 */
import { readFile, readdir, lstat } from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import { join, posix } from 'node:path';
import {
  CONF_NAME,
  DIRIV_LEN,
  DIRIV_NAME,
  InvalidNameError,
  NameTransform,
  cipherNameKind,
  readLongNameFile,
  type EncryptedName,
  TEMP_NAME,
} from '@tre/crypto';
import { FREEZE_DIR } from './freeze.js';
import { fsError } from './errors.js';

export interface DirInfo {
  cipherPath: string;
  iv: Buffer;
}

export interface Resolved {
  /** Cipher path of the entry (the root's for "/"). */
  cipherPath: string;
  /** The parent directory; undefined for the root. */
  parent?: DirInfo;
  /** The entry's name inside the parent; undefined for the root. */
  name?: EncryptedName;
}

export class NameMap {
  private readonly dirs = new Map<string, Promise<DirInfo>>();

  constructor(
    readonly cipherRoot: string,
    private readonly names: NameTransform,
  ) {}

  /** The directory at plaintext path `dir` ("/" for the root). */
  dirInfo(dir: string): Promise<DirInfo> {
    let info = this.dirs.get(dir);
    if (info === undefined) {
      info = this.loadDir(dir);
      this.dirs.set(dir, info);
      info.catch(() => this.dirs.delete(dir));
    }
    return info;
  }

  async resolve(path: string): Promise<Resolved> {
    if (path === '/') return { cipherPath: this.cipherRoot };
    const parent = await this.dirInfo(posix.dirname(path));
    const name = this.encrypt(posix.basename(path), parent.iv);
    return { cipherPath: join(parent.cipherPath, name.entry), parent, name };
  }

  /** Forgets cached IVs of `path` and everything below it (after rename or rmdir). */
  invalidate(path: string): void {
    const prefix = path.endsWith('/') ? path : path + '/';
    for (const key of this.dirs.keys()) {
      if (key === path || key.startsWith(prefix)) this.dirs.delete(key);
    }
  }

  /** Plaintext names in directory `dir`; entries that do not decrypt are skipped. */
  async list(dir: string, onSkip: (entry: string, why: string) => void): Promise<string[]> {
    const info = await this.dirInfo(dir);
    const out: string[] = [];
    for (const entry of await readdir(info.cipherPath)) {
      if (
        entry === DIRIV_NAME ||
        (dir === '/' && (entry === CONF_NAME || entry === FREEZE_DIR)) ||
        TEMP_NAME.test(entry)
      ) {
        continue;
      }
      const kind = cipherNameKind(entry);
      if (kind === 'longname-file') continue;
      try {
        let cName = entry;
        if (kind === 'longname') {
          cName = await readLongNameFile(info.cipherPath, entry);
          this.names.checkLongName(entry, cName);
        }
        out.push(this.names.decryptName(cName, info.iv));
      } catch (err) {
        onSkip(entry, (err as Error).message);
      }
    }
    return out;
  }

  private encrypt(name: string, iv: Buffer): EncryptedName {
    try {
      return this.names.encryptEntryName(name, iv);
    } catch (err) {
      if (err instanceof InvalidNameError) {
        throw fsError(
          /bytes, the limit/.test(err.message) ? 'ENAMETOOLONG' : 'EINVAL',
          err.message,
        );
      }
      throw err;
    }
  }

  private async loadDir(dir: string): Promise<DirInfo> {
    const cipherPath = (await this.resolve(dir)).cipherPath;
    let iv: Buffer;
    try {
      iv = await readFile(join(cipherPath, DIRIV_NAME), { flag: fsc.O_RDONLY | fsc.O_NOFOLLOW });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      const st = await lstat(cipherPath); // ENOENT here: the directory itself is missing
      if (!st.isDirectory()) throw fsError('ENOTDIR', `${dir} is not a directory`);
      throw fsError('EIO', `${dir}: ${DIRIV_NAME} is missing in the cipher directory`);
    }
    if (iv.length !== DIRIV_LEN) throw fsError('EIO', `${dir}: ${DIRIV_NAME} is damaged`);
    return { cipherPath, iv };
  }
}
