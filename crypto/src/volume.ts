/**
 * Whole gocryptfs volumes: create one (gocryptfs.conf + root diriv), encrypt a plaintext tree
 * into it, decrypt it into a new folder. The result mounts with the stock `gocryptfs`, and
 * trees written through a gocryptfs mount decrypt here.
 *
 * Both directions plan first and write second: the whole source tree is walked, every name is
 * encrypted or decrypted and every refusal (symlink, special file, name clash, bad name) is
 * raised before the first byte is written.
 *
 * Visibility: on encryption every file and directory appears atomically (written under a
 * temporary name, then linked or renamed), so a gocryptfs mount never sees a partial file or a
 * directory without its diriv. On decryption the whole tree is built in a hidden sibling
 * folder and renamed into place at the end.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc, createWriteStream, type Stats } from 'node:fs';
import { chmod, link, lstat, mkdir, open, readdir, rename, rm, utimes } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import {
  createConfig,
  nameOptions,
  readConfigFile,
  unlockMasterKey,
  writeConfigFile,
  type GocryptfsConf,
} from './configfile.js';
import { createDecryptStream, createEncryptStream } from './content-stream.js';
import { cipherSizeToPlainSize } from './contentenc.js';
import { assertKey } from './cryptocore.js';
import {
  AuthenticationError,
  CryptoError,
  InvalidArgumentError,
  InvalidNameError,
  UnsupportedError,
} from './errors.js';
import { TEMP_NAME, tempSibling, writeNewFileAtomic } from './fsatomic.js';
import type { ScryptParams } from './kdf.js';
import {
  CONF_NAME,
  DIRIV_NAME,
  NameTransform,
  cipherNameKind,
  readDirIV,
  readLongNameFile,
  writeDirIV,
  writeLongNameFile,
} from './nametransform.js';

const DIRIV_MODE = 0o444;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A volume whose master key is in memory. Call `close()` to wipe it. */
export interface Volume {
  readonly cipherDir: string;
  readonly masterKey: Buffer;
  readonly names: NameTransform;
  /** The parsed gocryptfs.conf, absent only when opened by master key without a config. */
  readonly conf?: GocryptfsConf;
  close(): void;
}

export type Unlock = { passphrase: Uint8Array } | { masterKey: Uint8Array };

function makeVolume(cipherDir: string, masterKey: Buffer, conf?: GocryptfsConf): Volume {
  const names = new NameTransform(masterKey, conf ? nameOptions(conf) : {});
  return {
    cipherDir,
    masterKey,
    names,
    ...(conf ? { conf } : {}),
    close: () => masterKey.fill(0),
  };
}

async function isEmptyOrMissingDir(path: string): Promise<boolean> {
  try {
    return (await readdir(path)).length === 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') {
      throw new InvalidArgumentError(`${path} is not a directory`);
    }
    throw err;
  }
}

export interface InitOptions {
  scrypt?: ScryptParams;
  /** Wrap this master key instead of a random one. */
  masterKey?: Uint8Array;
}

/**
 * Creates a new volume in `cipherDir` (created if missing; refused unless empty): the root
 * diriv first, then gocryptfs.conf, so a config only ever sits in a complete volume.
 */
export async function initVolume(
  cipherDir: string,
  passphrase: Uint8Array,
  options: InitOptions = {},
): Promise<Volume> {
  const dir = resolve(cipherDir);
  if (!(await isEmptyOrMissingDir(dir))) {
    throw new InvalidArgumentError(
      `${cipherDir} is not empty; a new volume needs an empty directory`,
    );
  }
  const { conf, masterKey } = await createConfig(passphrase, {
    ...(options.scrypt ? { scrypt: options.scrypt } : {}),
    ...(options.masterKey ? { masterKey: options.masterKey } : {}),
  });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeDirIV(dir);
  await writeConfigFile(join(dir, CONF_NAME), conf);
  return makeVolume(dir, masterKey, conf);
}

/**
 * Opens a volume with its passphrase (gocryptfs.conf required) or its master key (the config
 * is read for its feature flags when present; without one gocryptfs 2.3 defaults apply).
 * A master key is checked against an existing encrypted name when the root has one.
 */
export async function openVolume(cipherDir: string, unlock: Unlock): Promise<Volume> {
  const dir = resolve(cipherDir);
  await readDirIV(dir);
  let conf: GocryptfsConf | undefined;
  if ('passphrase' in unlock) {
    conf = await readConfigFile(join(dir, CONF_NAME));
    return makeVolume(dir, await unlockMasterKey(conf, unlock.passphrase), conf);
  }
  assertKey(unlock.masterKey, 'master key');
  if ((await lstatOrNull(join(dir, CONF_NAME))) !== null) {
    conf = await readConfigFile(join(dir, CONF_NAME));
  }
  const volume = makeVolume(dir, Buffer.from(unlock.masterKey), conf);
  try {
    await checkMasterKey(volume);
  } catch (err) {
    volume.close();
    throw err;
  }
  return volume;
}

/** gocryptfs stores no key check value; a name in the root directory is the next best thing. */
async function checkMasterKey(volume: Volume): Promise<void> {
  const iv = await readDirIV(volume.cipherDir);
  for (const entry of await readdir(volume.cipherDir)) {
    if (entry === DIRIV_NAME || entry === CONF_NAME || TEMP_NAME.test(entry)) continue;
    const kind = cipherNameKind(entry);
    if (kind === 'longname-file') continue;
    const cName = kind === 'longname' ? await readLongNameFile(volume.cipherDir, entry) : entry;
    try {
      volume.names.decryptName(cName, iv);
    } catch {
      throw new AuthenticationError('the master key does not match this volume');
    }
    return;
  }
}

export interface TreeProgress {
  /** Stops the operation; what was in progress is cleaned up as on any other failure. */
  signal?: AbortSignal;
  /** Called once after planning with the totals, then after every chunk. */
  onProgress?: (
    doneBytes: number,
    totalBytes: number,
    doneFiles: number,
    totalFiles: number,
  ) => void;
}

export interface TreeResult {
  files: number;
  directories: number;
  /** Plaintext bytes written (decryption) or read (encryption). */
  bytes: number;
}

interface DirOp {
  kind: 'dir';
  src: string;
  dstParent: string;
  entry: string;
  longNameFile?: string;
  /** The new directory's IV (encryption only). */
  iv?: Buffer;
  stats: Stats;
  /** True when the destination already exists and is merged into. */
  existing: boolean;
}

interface FileOp {
  kind: 'file';
  src: string;
  dstParent: string;
  entry: string;
  longNameFile?: string;
  stats: Stats;
}

/** Restores mode and times on a directory once its content is complete. */
interface DirDone {
  kind: 'dirdone';
  path: string;
  stats: Stats;
}

type Op = DirOp | FileOp | DirDone;

function refuse(path: string, st: Stats): never {
  const what = st.isSymbolicLink()
    ? 'a symbolic link'
    : st.isFIFO()
      ? 'a FIFO'
      : st.isSocket()
        ? 'a socket'
        : st.isBlockDevice() || st.isCharacterDevice()
          ? 'a device file'
          : 'not a regular file or directory';
  throw new UnsupportedError(
    `${path} is ${what}; only regular files and directories are supported`,
  );
}

async function plainEntries(dir: string): Promise<string[]> {
  const raw = await readdir(dir, { encoding: 'buffer' });
  return raw.map((b) => {
    try {
      return utf8.decode(b);
    } catch {
      throw new InvalidNameError(`${dir} holds a file name that is not valid UTF-8`);
    }
  });
}

async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

async function planEncrypt(
  volume: Volume,
  plainDir: string,
  cipherDir: string,
  iv: Buffer,
  existing: boolean,
  ops: Op[],
): Promise<void> {
  for (const name of (await plainEntries(plainDir)).sort()) {
    const src = join(plainDir, name);
    const st = await lstat(src);
    if (!st.isFile() && !st.isDirectory()) refuse(src, st);
    const enc = volume.names.encryptEntryName(name, iv);
    const dst = join(cipherDir, enc.entry);
    const base = {
      src,
      dstParent: cipherDir,
      entry: enc.entry,
      stats: st,
      ...(enc.longNameFile ? { longNameFile: enc.longNameFile } : {}),
    };
    const there = existing ? await lstatOrNull(dst) : null;
    if (there && !(there.isDirectory() && st.isDirectory())) {
      throw new InvalidArgumentError(`${src} already exists in the volume; nothing was written`);
    }
    if (st.isDirectory()) {
      const childIV = there ? await readDirIV(dst) : randomBytes(16);
      ops.push({
        kind: 'dir',
        ...base,
        existing: there !== null,
        ...(there ? {} : { iv: childIV }),
      });
      await planEncrypt(volume, src, dst, childIV, there !== null, ops);
      if (!there) ops.push({ kind: 'dirdone', path: dst, stats: st });
    } else {
      ops.push({ kind: 'file', ...base });
    }
  }
}

async function planDecrypt(
  volume: Volume,
  cipherDir: string,
  plainDir: string,
  isRoot: boolean,
  ops: Op[],
  warn: (message: string) => void,
): Promise<void> {
  const iv = await readDirIV(cipherDir);
  const seen = new Set<string>();
  for (const entry of (await readdir(cipherDir)).sort()) {
    if (entry === DIRIV_NAME || (isRoot && entry === CONF_NAME)) continue;
    const src = join(cipherDir, entry);
    if (TEMP_NAME.test(entry)) {
      warn(`skipping ${src}: an unfinished temporary entry`);
      continue;
    }
    const kind = cipherNameKind(entry);
    if (kind === 'longname-file') continue; // read together with its long-name entry
    let cName = entry;
    if (kind === 'longname') {
      cName = await readLongNameFile(cipherDir, entry);
      volume.names.checkLongName(entry, cName);
    }
    let name: string;
    try {
      name = volume.names.decryptName(cName, iv);
    } catch (err) {
      if (err instanceof CryptoError) {
        throw new AuthenticationError(`${src}: ${err.message} (wrong key or corrupted volume)`);
      }
      throw err;
    }
    if (seen.has(name)) throw new AuthenticationError(`${src} decrypts to a duplicate name`);
    seen.add(name);
    const st = await lstat(src);
    if (!st.isFile() && !st.isDirectory()) refuse(src, st);
    const dst = join(plainDir, name);
    if (st.isDirectory()) {
      ops.push({ kind: 'dir', src, dstParent: plainDir, entry: name, stats: st, existing: false });
      await planDecrypt(volume, src, dst, false, ops, warn);
      ops.push({ kind: 'dirdone', path: dst, stats: st });
    } else {
      // An impossible ciphertext size (a cut inside a block header) is refused before writing.
      cipherSizeToPlainSize(st.size);
      ops.push({ kind: 'file', src, dstParent: plainDir, entry: name, stats: st });
    }
  }
}

async function applyMeta(path: string, st: Stats): Promise<void> {
  await chmod(path, st.mode & 0o7777);
  await utimes(path, st.atime, st.mtime);
}

/** Streams `src` through `transform` into a new file `dst` and makes it durable. */
async function streamFile(
  src: string,
  dst: string,
  transform: NodeJS.ReadWriteStream,
  onBytes: (n: number) => void,
  signal: AbortSignal | undefined,
): Promise<void> {
  // O_NOFOLLOW: the plan refused symlinks; one swapped in since must not be followed.
  const srcHandle = await open(src, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  const input = srcHandle.createReadStream();
  input.on('data', (chunk) => onBytes(chunk.length));
  const output = createWriteStream(dst, { flags: 'wx', mode: 0o600 });
  await pipeline(input, transform, output, { signal });
  const fh = await open(dst, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function progressCounter(ops: Op[], options: TreeProgress) {
  const files = ops.filter((o): o is FileOp => o.kind === 'file');
  const totalBytes = files.reduce((n, o) => n + o.stats.size, 0);
  let doneBytes = 0;
  let doneFiles = 0;
  const report = () => options.onProgress?.(doneBytes, totalBytes, doneFiles, files.length);
  report();
  return {
    totalBytes,
    bytes: (n: number) => {
      doneBytes += n;
      report();
    },
    file: () => {
      doneFiles += 1;
      report();
    },
  };
}

/**
 * Encrypts the plaintext tree `plainDir` into the volume's root, merging into directories that
 * already exist there. An entry whose encrypted name already exists (other than a directory
 * merged into a directory) is refused before anything is written. Modes and times are kept.
 * Symlinks, FIFOs, sockets and devices are refused.
 */
export async function encryptTree(
  volume: Volume,
  plainDir: string,
  options: TreeProgress = {},
): Promise<TreeResult> {
  const src = resolve(plainDir);
  const rootStat = await lstat(src);
  if (!rootStat.isDirectory()) throw new InvalidArgumentError(`${plainDir} is not a directory`);
  const rootIV = await readDirIV(volume.cipherDir);
  const ops: Op[] = [];
  await planEncrypt(volume, src, volume.cipherDir, rootIV, true, ops);
  const progress = progressCounter(ops, options);
  let directories = 0;
  for (const op of ops) {
    options.signal?.throwIfAborted();
    if (op.kind === 'dirdone') {
      await applyMeta(op.path, op.stats);
      continue;
    }
    const dst = join(op.dstParent, op.entry);
    if (op.kind === 'dir') {
      if (op.existing) continue;
      directories += 1;
      const tmp = tempSibling(dst);
      await mkdir(tmp, { mode: 0o700 });
      try {
        await writeNewFileAtomic(join(tmp, DIRIV_NAME), op.iv!, DIRIV_MODE);
        if (op.longNameFile) await writeLongNameFile(op.dstParent, op.entry, op.longNameFile);
        await rename(tmp, dst);
      } catch (err) {
        await rm(tmp, { recursive: true, force: true });
        throw err;
      }
      continue;
    }
    if (op.longNameFile) await writeLongNameFile(op.dstParent, op.entry, op.longNameFile);
    const tmp = tempSibling(dst);
    try {
      await streamFile(
        op.src,
        tmp,
        createEncryptStream(volume.masterKey),
        progress.bytes,
        options.signal,
      );
      await applyMeta(tmp, op.stats);
      await link(tmp, dst);
    } finally {
      await rm(tmp, { force: true });
    }
    progress.file();
  }
  const files = ops.filter((o) => o.kind === 'file').length;
  return { files, directories, bytes: progress.totalBytes };
}

export interface DecryptOptions extends TreeProgress {
  /** Receives one-line notices about skipped entries. */
  onWarning?: (message: string) => void;
}

/**
 * Decrypts the whole volume into `plainDir`, which must not exist yet (or be an empty
 * directory). The tree is built in a hidden sibling and renamed into place when complete; on
 * any failure nothing is left behind. Every name and block is authenticated; a wrong key or
 * any tampering fails the whole operation.
 */
export async function decryptTree(
  volume: Volume,
  plainDir: string,
  options: DecryptOptions = {},
): Promise<TreeResult> {
  const dst = resolve(plainDir);
  if (!(await isEmptyOrMissingDir(dst))) {
    throw new InvalidArgumentError(`${plainDir} already exists and is not empty`);
  }
  const stage = tempSibling(dst);
  const ops: Op[] = [];
  await planDecrypt(volume, volume.cipherDir, stage, true, ops, options.onWarning ?? (() => {}));
  const progress = progressCounter(ops, options);
  await mkdir(stage, { mode: 0o700 });
  let directories = 0;
  try {
    for (const op of ops) {
      options.signal?.throwIfAborted();
      if (op.kind === 'dirdone') {
        await applyMeta(op.path, op.stats);
      } else if (op.kind === 'dir') {
        directories += 1;
        await mkdir(join(op.dstParent, op.entry), { mode: 0o700 });
      } else {
        const out = join(op.dstParent, op.entry);
        await streamFile(
          op.src,
          out,
          createDecryptStream(volume.masterKey),
          progress.bytes,
          options.signal,
        );
        await applyMeta(out, op.stats);
        progress.file();
      }
    }
    await applyMeta(stage, await lstat(volume.cipherDir));
    // rename(2) atomically replaces an empty directory, so `plainDir` may already exist empty.
    await rename(stage, dst);
  } catch (err) {
    await chmodTreeWritable(stage);
    await rm(stage, { recursive: true, force: true });
    throw err;
  }
  const files = ops.filter((o) => o.kind === 'file').length;
  const plainBytes = ops.reduce(
    (n, o) => (o.kind === 'file' ? n + cipherSizeToPlainSize(o.stats.size) : n),
    0,
  );
  return { files, directories, bytes: plainBytes };
}

/** Read-only directories restored from the volume would block cleanup for non-root users. */
async function chmodTreeWritable(dir: string): Promise<void> {
  const st = await lstatOrNull(dir);
  if (!st?.isDirectory()) return;
  await chmod(dir, 0o700).catch(() => undefined);
  for (const e of await readdir(dir).catch(() => [] as string[])) {
    await chmodTreeWritable(join(dir, e));
  }
}
