/**
 * The filesystem operations of trefs on plaintext paths, independent of the FUSE binding:
 * each method maps its path to the cipher tree, does the work and throws FsError (or a Node
 * system error) on failure; fuse-ops.ts turns that into errno replies.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import {
  chmod,
  lchown,
  lstat,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  statfs,
  unlink,
  utimes,
  writeFile,
  type FileHandle,
} from 'node:fs/promises';
import { join, relative } from 'node:path';
import {
  DIRIV_LEN,
  DIRIV_NAME,
  HEADER_LEN,
  LONGNAME_SUFFIX,
  cipherSizeToPlainSize,
  parseHeader,
  writeLongNameFile,
  TEMP_NAME,
  tempSibling,
} from '@tre/crypto';
import { fsError } from './errors.js';
import { FileNode } from './file-node.js';
import type { FreezeStore } from './freeze.js';
import { fileIdHex, type AuditAction } from './key-source.js';
import type { KeyRing } from './keyring.js';
import { type NameMap, type Resolved } from './name-map.js';

export interface Stat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  atime: Date;
  mtime: Date;
  ctime: Date;
  blocks: number;
  blksize: number;
}

/** What an egress manifest records of one file: its ciphertext as stored. */
export interface FileFacts {
  /** Path relative to the mount's root, without a leading slash. */
  path: string;
  cipherPath: string;
  fileId: string;
  size: number;
  sha256: string;
}

export interface StatFs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  namemax: number;
}

export interface AuditRecord {
  action: AuditAction;
  cipherPath: string;
  cipherTarget?: string;
  fileId?: string;
  mode?: string;
  plainPath: string;
  plainTarget?: string;
}

export interface FsOptions {
  readOnly: boolean;
  /** Files frozen for egress review: read-only for everyone until the freeze is lifted. */
  freeze?: FreezeStore;
  audit?: (record: AuditRecord) => Promise<void> | void;
  warn?: (message: string) => void;
}

interface Handle {
  node: FileNode;
  writable: boolean;
}

const DIRIV_MODE = 0o444;

function accessMode(flags: number): { read: boolean; write: boolean; label: string } {
  const acc = flags & 3; // O_ACCMODE
  if (acc === fsc.O_WRONLY) return { read: false, write: true, label: 'w' };
  if (acc === fsc.O_RDWR) return { read: true, write: true, label: 'rw' };
  return { read: true, write: false, label: 'r' };
}

export class TrefsFs {
  private readonly handles = new Map<number, Handle>();
  private readonly nodes = new Map<string, Promise<FileNode>>();
  private nextHandle = 1;

  constructor(
    private readonly names: NameMap,
    private readonly keys: KeyRing,
    private readonly options: FsOptions,
  ) {}

  get openHandles(): number {
    return this.handles.size;
  }

  /** Every key-dependent operation starts here: after revocation, nothing is served. */
  private live(): void {
    if (this.keys.isWiped) throw fsError('EACCES', 'access to this project has ended');
  }

  private writable(): void {
    this.live();
    if (this.options.readOnly) throw fsError('EROFS', 'mounted read-only');
  }

  /** Refuses a change of a frozen file's content (EROFS) or of its name or metadata (EPERM). */
  private notFrozen(cipherPath: string, what: 'content' | 'name' | 'meta'): void {
    const f = this.options.freeze;
    if (f === undefined) return;
    f.refresh();
    if (!f.hasAny) return;
    const rel = this.rel(cipherPath);
    if (what === 'name' ? f.covers(rel) : f.isFrozenPath(rel)) {
      throw what === 'content'
        ? fsError('EROFS', `${rel} is frozen for an egress review`)
        : fsError('EPERM', `${rel} is frozen for an egress review`);
    }
  }

  private nodeNotFrozen(node: FileNode): void {
    const f = this.options.freeze;
    if (f === undefined) return;
    f.refresh();
    if (f.hasAny && node.fileIdHex !== undefined && f.isFrozenFile(node.fileIdHex)) {
      throw fsError('EROFS', `file ${node.fileIdHex} is frozen for an egress review`);
    }
  }

  private rel(cipherPath: string): string {
    return relative(this.names.cipherRoot, cipherPath) || '.';
  }

  async getattr(path: string): Promise<Stat> {
    this.live();
    const { cipherPath } = await this.names.resolve(path);
    const st = await lstat(cipherPath);
    let size = st.size;
    if (st.isFile()) {
      try {
        size = cipherSizeToPlainSize(st.size);
      } catch (err) {
        throw fsError('EIO', `${path}: ${(err as Error).message}`);
      }
    }
    return {
      mode: st.mode,
      uid: st.uid,
      gid: st.gid,
      size,
      nlink: st.nlink,
      atime: st.atime,
      mtime: st.mtime,
      ctime: st.ctime,
      blocks: Math.ceil(size / 512),
      blksize: 4096,
    };
  }

  async readdir(path: string): Promise<string[]> {
    this.live();
    return this.names.list(path, (entry, why) =>
      this.options.warn?.(`skipping undecryptable entry ${entry} in ${path}: ${why}`),
    );
  }

  async open(path: string, flags: number): Promise<number> {
    const mode = accessMode(flags);
    if (mode.write) this.writable();
    else this.live();
    const { cipherPath } = await this.names.resolve(path);
    const st = await lstat(cipherPath);
    if (st.isDirectory()) throw fsError('EISDIR', `${path} is a directory`);
    if (mode.write) this.notFrozen(cipherPath, 'content');
    const node = await this.acquireNode(`${st.dev}:${st.ino}`, cipherPath);
    if (mode.write && !node.writable) {
      await this.releaseNode(node);
      throw fsError('EACCES', `${path} cannot be opened for writing`);
    }
    if (mode.write) {
      try {
        this.nodeNotFrozen(node);
      } catch (err) {
        await this.releaseNode(node);
        throw err;
      }
    }
    await this.options.audit?.({
      action: 'open',
      cipherPath: this.rel(cipherPath),
      plainPath: path,
      mode: mode.label,
      ...(node.fileId ? { fileId: fileIdHex(node.fileId) } : {}),
    });
    return this.addHandle(node, mode.write);
  }

  async create(path: string, mode: number): Promise<number> {
    this.writable();
    const r = await this.names.resolve(path);
    await this.writeLongName(r);
    const key = await this.keys.newFileKey();
    const fh = await open(r.cipherPath, fsc.O_CREAT | fsc.O_EXCL | fsc.O_RDWR, mode & 0o7777);
    let node: FileNode;
    try {
      const st = await fh.stat();
      node = await FileNode.initialise(`${st.dev}:${st.ino}`, fh, this.keys, key);
    } catch (err) {
      await fh.close();
      throw err;
    }
    node.refs = 1;
    this.nodes.set(node.id, Promise.resolve(node));
    await this.options.audit?.({
      action: 'create',
      cipherPath: this.rel(r.cipherPath),
      plainPath: path,
      fileId: fileIdHex(key.fileId),
      mode: 'rw',
    });
    return this.addHandle(node, true);
  }

  async read(handle: number, out: Buffer, len: number, pos: number): Promise<number> {
    this.live();
    return this.handle(handle).node.read(out, len, pos);
  }

  async write(handle: number, data: Buffer, pos: number): Promise<number> {
    this.writable();
    const h = this.handle(handle);
    if (!h.writable) throw fsError('EBADF', 'file handle is not open for writing');
    this.nodeNotFrozen(h.node);
    return h.node.write(data, pos);
  }

  async ftruncate(handle: number, size: number): Promise<void> {
    this.writable();
    const node = this.handle(handle).node;
    this.nodeNotFrozen(node);
    await node.truncate(size);
  }

  async truncate(path: string, size: number): Promise<void> {
    this.writable();
    const { cipherPath } = await this.names.resolve(path);
    const st = await lstat(cipherPath);
    if (st.isDirectory()) throw fsError('EISDIR', `${path} is a directory`);
    this.notFrozen(cipherPath, 'content');
    const node = await this.acquireNode(`${st.dev}:${st.ino}`, cipherPath);
    try {
      if (!node.writable) throw fsError('EACCES', `${path} is not writable`);
      this.nodeNotFrozen(node);
      await node.truncate(size);
    } finally {
      await this.releaseNode(node);
    }
  }

  async fsync(handle: number, dataOnly: boolean): Promise<void> {
    await this.handle(handle).node.sync(dataOnly);
  }

  async release(handle: number): Promise<void> {
    const h = this.handles.get(handle);
    if (h === undefined) return;
    this.handles.delete(handle);
    await this.releaseNode(h.node);
  }

  async unlink(path: string): Promise<void> {
    this.writable();
    const r = await this.names.resolve(path);
    this.notFrozen(r.cipherPath, 'name');
    const fileId = await this.peekFileId(r.cipherPath);
    await unlink(r.cipherPath);
    if (r.name?.longNameFile) await rm(r.cipherPath + LONGNAME_SUFFIX, { force: true });
    await this.options.audit?.({
      action: 'unlink',
      cipherPath: this.rel(r.cipherPath),
      plainPath: path,
      ...(fileId ? { fileId } : {}),
    });
  }

  async rename(from: string, to: string): Promise<void> {
    this.writable();
    const src = await this.names.resolve(from);
    const dst = await this.names.resolve(to);
    if (src.name === undefined || dst.name === undefined) throw fsError('EBUSY', 'cannot move /');
    this.notFrozen(src.cipherPath, 'name');
    this.notFrozen(dst.cipherPath, 'name');
    const srcStat = await lstat(src.cipherPath);
    const fileId = srcStat.isFile() ? await this.peekFileId(src.cipherPath) : undefined;
    if (srcStat.isDirectory()) await this.removeIfEmptyDir(dst.cipherPath, to);
    await this.writeLongName(dst);
    await rename(src.cipherPath, dst.cipherPath);
    if (src.name.longNameFile && src.cipherPath !== dst.cipherPath) {
      await rm(src.cipherPath + LONGNAME_SUFFIX, { force: true });
    }
    this.names.invalidate(from);
    this.names.invalidate(to);
    await this.options.audit?.({
      action: 'rename',
      cipherPath: this.rel(src.cipherPath),
      cipherTarget: this.rel(dst.cipherPath),
      plainPath: from,
      plainTarget: to,
      ...(fileId ? { fileId } : {}),
    });
  }

  async mkdir(path: string, mode: number): Promise<void> {
    this.writable();
    const r = await this.names.resolve(path);
    const parent = r.parent;
    if (parent === undefined) throw fsError('EEXIST', '/ exists');
    if (await exists(r.cipherPath)) throw fsError('EEXIST', `${path} exists`);
    // Built under a temporary name and renamed into place: a directory is never visible
    // without its diriv, even after a crash.
    const tmp = tempSibling(r.cipherPath);
    await mkdir(tmp, { mode: 0o700 });
    try {
      await writeFile(join(tmp, DIRIV_NAME), randomBytes(DIRIV_LEN), {
        mode: DIRIV_MODE,
        flag: 'wx',
      });
      await chmod(tmp, mode & 0o7777);
      await this.writeLongName(r);
      await rename(tmp, r.cipherPath);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  async rmdir(path: string): Promise<void> {
    this.writable();
    const r = await this.names.resolve(path);
    if (r.parent === undefined) throw fsError('EBUSY', 'cannot remove /');
    this.notFrozen(r.cipherPath, 'name');
    const st = await lstat(r.cipherPath);
    if (!st.isDirectory()) throw fsError('ENOTDIR', `${path} is not a directory`);
    const entries = await readdir(r.cipherPath);
    if (entries.some((e) => e !== DIRIV_NAME && !TEMP_NAME.test(e))) {
      throw fsError('ENOTEMPTY', `${path} is not empty`);
    }
    // Moved aside first, so a crash never leaves a visible directory without its diriv.
    const tmp = tempSibling(r.cipherPath);
    await rename(r.cipherPath, tmp);
    await rm(tmp, { recursive: true, force: true });
    if (r.name?.longNameFile) await rm(r.cipherPath + LONGNAME_SUFFIX, { force: true });
    this.names.invalidate(path);
  }

  async chmod(path: string, mode: number): Promise<void> {
    this.writable();
    const { cipherPath } = await this.names.resolve(path);
    this.notFrozen(cipherPath, 'meta');
    await chmod(cipherPath, mode & 0o7777);
  }

  async chown(path: string, uid: number, gid: number): Promise<void> {
    this.writable();
    const { cipherPath } = await this.names.resolve(path);
    this.notFrozen(cipherPath, 'meta');
    await lchown(cipherPath, uid, gid);
  }

  async utimens(path: string, atimeMs: number, mtimeMs: number): Promise<void> {
    this.writable();
    const { cipherPath } = await this.names.resolve(path);
    this.notFrozen(cipherPath, 'meta');
    await utimes(cipherPath, new Date(atimeMs), new Date(mtimeMs));
  }

  async statfs(): Promise<StatFs> {
    const s = await statfs(this.names.cipherRoot);
    // The binding passes 32-bit counts; scale the block size up on very large filesystems.
    let bsize = s.bsize;
    let blocks = s.blocks;
    let bfree = s.bfree;
    let bavail = s.bavail;
    while (blocks > 0xffffffff) {
      bsize *= 2;
      blocks = Math.floor(blocks / 2);
      bfree = Math.floor(bfree / 2);
      bavail = Math.floor(bavail / 2);
    }
    const clamp = (n: number) => Math.min(n, 0xffffffff);
    return {
      bsize,
      frsize: bsize,
      blocks,
      bfree,
      bavail,
      files: clamp(s.files),
      ffree: clamp(s.ffree),
      favail: clamp(s.ffree),
      namemax: 255,
    };
  }

  /** DEK of the file at a plaintext path (for the key agent). */
  async dekOf(path: string): Promise<Buffer> {
    const { fileId } = await this.headeredFile(path);
    return (await this.keys.fileKey(Buffer.from(fileId, 'hex'))).dek;
  }

  /** The cipher path (relative) and file ID of a regular file with a header, for a freeze. */
  async frozenFileOf(path: string): Promise<{ cipherPath: string; fileId: string }> {
    const { cipherPath, fileId } = await this.headeredFile(path);
    return { cipherPath: this.rel(cipherPath), fileId };
  }

  private async headeredFile(path: string): Promise<{ cipherPath: string; fileId: string }> {
    this.live();
    const { cipherPath } = await this.names.resolve(path);
    const st = await lstat(cipherPath);
    if (!st.isFile()) throw fsError('EISDIR', `${path} is not a regular file`);
    const fileId = await this.peekFileId(cipherPath);
    if (fileId === undefined) throw fsError('ENODATA', `${path} has no header yet`);
    return { cipherPath, fileId };
  }

  /**
   * Waits until every change already under way on these files has finished: each open node's
   * write lock is taken once. Called after a freeze is enforced, so no later change starts.
   */
  async settle(fileIds: Set<string>): Promise<void> {
    const nodes = await Promise.all([...this.nodes.values()].map((p) => p.catch(() => undefined)));
    await Promise.all(
      nodes
        .filter((n) => n?.fileIdHex !== undefined && fileIds.has(n.fileIdHex))
        .map((n) => n!.lock.write(async () => undefined)),
    );
  }

  /** Size and SHA-256 of a file's ciphertext as stored, and its file ID from the header. */
  async facts(path: string): Promise<FileFacts> {
    this.live();
    const { cipherPath } = await this.names.resolve(path);
    const fh = await open(cipherPath, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw fsError('EISDIR', `${path} is not a regular file`);
      const hash = createHash('sha256');
      const buf = Buffer.allocUnsafe(1 << 20);
      const header = Buffer.alloc(HEADER_LEN);
      let size = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, size);
        if (bytesRead === 0) break;
        if (size < HEADER_LEN) {
          buf.copy(header, size, 0, Math.min(bytesRead, HEADER_LEN - size));
        }
        hash.update(buf.subarray(0, bytesRead));
        size += bytesRead;
      }
      if (size < HEADER_LEN) throw fsError('ENODATA', `${path} has no header yet`);
      return {
        path: path.replace(/^\/+/, ''),
        cipherPath: this.rel(cipherPath),
        fileId: fileIdHex(parseHeader(header)),
        size,
        sha256: hash.digest('hex'),
      };
    } finally {
      await fh.close();
    }
  }

  /** Closes every open file (unmount). */
  async closeAll(): Promise<void> {
    for (const h of [...this.handles.keys()]) await this.release(h);
  }

  private handle(handle: number): Handle {
    const h = this.handles.get(handle);
    if (h === undefined) throw fsError('EBADF', `unknown file handle ${handle}`);
    return h;
  }

  private addHandle(node: FileNode, writable: boolean): number {
    while (this.handles.has(this.nextHandle) || this.nextHandle === 0) {
      this.nextHandle = (this.nextHandle + 1) >>> 0;
    }
    const h = this.nextHandle;
    this.nextHandle = (this.nextHandle + 1) >>> 0;
    this.handles.set(h, { node, writable });
    return h;
  }

  private async acquireNode(id: string, cipherPath: string): Promise<FileNode> {
    let p = this.nodes.get(id);
    if (p === undefined) {
      p = this.loadNode(id, cipherPath);
      this.nodes.set(id, p);
      p.catch(() => this.nodes.delete(id));
    }
    const node = await p;
    node.refs += 1;
    return node;
  }

  private async loadNode(id: string, cipherPath: string): Promise<FileNode> {
    let fh: FileHandle;
    let writable = !this.options.readOnly;
    try {
      fh = await open(cipherPath, writable ? fsc.O_RDWR : fsc.O_RDONLY);
    } catch (err) {
      if (!writable || (err as NodeJS.ErrnoException).code !== 'EACCES') throw err;
      writable = false;
      fh = await open(cipherPath, fsc.O_RDONLY);
    }
    try {
      return await FileNode.load(id, fh, writable, this.keys);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  private async releaseNode(node: FileNode): Promise<void> {
    node.refs -= 1;
    if (node.refs > 0) return;
    this.nodes.delete(node.id);
    await node.close();
  }

  private async peekFileId(cipherPath: string): Promise<string | undefined> {
    let fh: FileHandle;
    try {
      fh = await open(cipherPath, fsc.O_RDONLY | fsc.O_NOFOLLOW);
    } catch {
      return undefined;
    }
    try {
      const header = Buffer.alloc(HEADER_LEN);
      const { bytesRead } = await fh.read(header, 0, HEADER_LEN, 0);
      if (bytesRead < HEADER_LEN) return undefined;
      return fileIdHex(parseHeader(header));
    } catch {
      return undefined;
    } finally {
      await fh.close();
    }
  }

  private async writeLongName(r: Resolved): Promise<void> {
    if (r.parent === undefined || r.name?.longNameFile === undefined) return;
    if (await exists(r.cipherPath + LONGNAME_SUFFIX)) return;
    await writeLongNameFile(r.parent.cipherPath, r.name.entry, r.name.longNameFile);
  }

  /** rename(2) replaces an empty directory; a cipher directory still holds its diriv. */
  private async removeIfEmptyDir(cipherPath: string, path: string): Promise<void> {
    let entries: string[];
    try {
      if (!(await lstat(cipherPath)).isDirectory()) return;
      entries = await readdir(cipherPath);
    } catch {
      return;
    }
    if (entries.some((e) => e !== DIRIV_NAME)) throw fsError('ENOTEMPTY', `${path} is not empty`);
    await rm(cipherPath, { recursive: true, force: true });
    this.names.invalidate(path);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
