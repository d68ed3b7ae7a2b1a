/**
 * The FUSE binding: fuse-native's callback-style operations mapped onto TrefsFs. Every failure
 * becomes a negative errno; unexpected ones (not a plain ENOENT/EEXIST/...) are logged.
 *
 * fuse-native 2.2.6 (libfuse 2) is used as is, with extra mount options for large requests:
 * without big_writes the kernel splits writes into 4 KiB requests.
 */
import { createRequire } from 'node:module';
import type { Logger } from 'pino';
import { FsError, toErrno } from './errors.js';
import type { TrefsFs } from './filesystem.js';

const require = createRequire(import.meta.url);

type Cb = (...args: unknown[]) => void;

export interface FuseInstance {
  _fuseOptions(): string;
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}

interface FuseClass {
  new (mnt: string, ops: Record<string, unknown>, opts: Record<string, unknown>): FuseInstance;
  unmount(mnt: string, cb: (err: Error | null) => void): void;
}

export const Fuse = require('fuse-native') as FuseClass;

/** Mount options fuse-native has no switch for. */
const EXTRA_OPTIONS = ['big_writes', 'max_write=131072', 'max_read=131072'];

class TrefsFuse extends Fuse {
  extraOptions: string[] = EXTRA_OPTIONS;

  override _fuseOptions(): string {
    const base = super._fuseOptions();
    const extra = this.extraOptions.join(',');
    return base ? `${base},${extra}` : `-o${extra}`;
  }
}

/** Operations slower than this are logged: on a healthy mount none should be. */
const SLOW_MS = 1000;

const QUIET = new Set([-2, -17, -39, -20, -21, -13, -30, -9]);

export function buildOps(fs: TrefsFs, log: Logger): Record<string, unknown> {
  const fail = (op: string, path: string, err: unknown): number => {
    const errno = toErrno(err);
    if (!QUIET.has(errno) || !(err instanceof FsError || (err as { code?: string }).code)) {
      log.warn({ op, path, errno, err: (err as Error).message }, 'operation failed');
    }
    return errno;
  };
  const timed = <T>(op: string, path: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    return fn().finally(() => {
      const ms = performance.now() - t0;
      if (ms > SLOW_MS) log.warn({ op, path, ms: Math.round(ms) }, 'slow operation');
    });
  };
  /** For ops whose callback takes (err, ...results). */
  const run = <T>(
    op: string,
    path: string,
    cb: Cb,
    fn: () => Promise<T>,
    wrap?: (v: T) => unknown[],
  ) => {
    timed(op, path, fn).then(
      (v) => cb(0, ...(wrap ? wrap(v) : [])),
      (err) => cb(fail(op, path, err)),
    );
  };
  /** For read/write, whose callback takes the byte count or a negative errno. */
  const count = (op: string, path: string, cb: Cb, fn: () => Promise<number>) => {
    timed(op, path, fn).then(
      (n) => cb(n),
      (err) => cb(fail(op, path, err)),
    );
  };
  return {
    getattr: (path: string, cb: Cb) =>
      run(
        'getattr',
        path,
        cb,
        () => fs.getattr(path),
        (s) => [s],
      ),
    readdir: (path: string, cb: Cb) =>
      run(
        'readdir',
        path,
        cb,
        () => fs.readdir(path),
        (n) => [n],
      ),
    open: (path: string, flags: number, cb: Cb) =>
      run(
        'open',
        path,
        cb,
        () => fs.open(path, flags),
        (h) => [h],
      ),
    create: (path: string, mode: number, cb: Cb) =>
      run(
        'create',
        path,
        cb,
        () => fs.create(path, mode),
        (h) => [h],
      ),
    read: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) =>
      count('read', path, cb, () => fs.read(fd, buf, len, pos)),
    write: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) =>
      count('write', path, cb, () => fs.write(fd, buf.subarray(0, len), pos)),
    truncate: (path: string, size: number, cb: Cb) =>
      run('truncate', path, cb, () => fs.truncate(path, size)),
    ftruncate: (path: string, fd: number, size: number, cb: Cb) =>
      run('ftruncate', path, cb, () => fs.ftruncate(fd, size)),
    release: (path: string, fd: number, cb: Cb) => run('release', path, cb, () => fs.release(fd)),
    fsync: (path: string, datasync: number, fd: number, cb: Cb) =>
      run('fsync', path, cb, () => fs.fsync(fd, datasync !== 0)),
    flush: (_path: string, _fd: number, cb: Cb) => cb(0),
    unlink: (path: string, cb: Cb) => run('unlink', path, cb, () => fs.unlink(path)),
    rename: (from: string, to: string, cb: Cb) =>
      run('rename', from, cb, () => fs.rename(from, to)),
    mkdir: (path: string, mode: number, cb: Cb) =>
      run('mkdir', path, cb, () => fs.mkdir(path, mode)),
    rmdir: (path: string, cb: Cb) => run('rmdir', path, cb, () => fs.rmdir(path)),
    chmod: (path: string, mode: number, cb: Cb) =>
      run('chmod', path, cb, () => fs.chmod(path, mode)),
    chown: (path: string, uid: number, gid: number, cb: Cb) =>
      run('chown', path, cb, () => fs.chown(path, uid, gid)),
    utimens: (path: string, atime: number, mtime: number, cb: Cb) =>
      run('utimens', path, cb, () => fs.utimens(path, atime, mtime)),
    statfs: (path: string, cb: Cb) =>
      run(
        'statfs',
        path,
        cb,
        () => fs.statfs(),
        (s) => [s],
      ),
  };
}

export function createFuse(
  mountpoint: string,
  ops: Record<string, unknown>,
  options: { readOnly: boolean },
): FuseInstance {
  const fuse = new TrefsFuse(mountpoint, ops, {
    force: true,
    mkdir: true,
    debug: false,
    fsname: 'trefs',
    subtype: 'trefs',
    timeout: false,
  });
  if (options.readOnly) fuse.extraOptions = [...EXTRA_OPTIONS, 'ro'];
  return fuse;
}

export function mountFuse(fuse: FuseInstance): Promise<void> {
  return new Promise((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
}

export function unmountFuse(fuse: FuseInstance): Promise<void> {
  return new Promise((resolve, reject) => fuse.unmount((err) => (err ? reject(err) : resolve())));
}
