/**
 * gocryptfs file-name encryption: AES-256-EME under the directory's `gocryptfs.diriv` as tweak,
 * PKCS#7 padding to 16 bytes, base64url (unpadded with the Raw64 flag), and long names hashed to
 * `gocryptfs.longname.<sha256>` with the full encrypted name stored in a `.name` file beside it.
 *
 * EME names carry no MAC (the gocryptfs format has none); a tampered name is caught by the strict
 * base64 check, the PKCS#7 check, strict UTF-8 decoding and the plaintext-name rules. A random
 * decryption passes all of these with a probability far below one in a million, so callers get
 * a typed error instead of a wrong name.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { writeNewFileAtomic } from './fsatomic.js';
import { constants as fsc } from 'node:fs';
import { join } from 'node:path';
import { deriveSubkey } from './cryptocore.js';
import { EmeCipher } from './eme.js';
import {
  AuthenticationError,
  FormatError,
  InvalidArgumentError,
  InvalidNameError,
} from './errors.js';

/** Like ext4, a plaintext name is at most 255 bytes. */
export const NAME_MAX = 255;
export const DIRIV_NAME = 'gocryptfs.diriv';
export const DIRIV_LEN = 16;
export const CONF_NAME = 'gocryptfs.conf';
export const LONGNAME_PREFIX = 'gocryptfs.longname.';
export const LONGNAME_SUFFIX = '.name';
/** A `.name` file holds at most base64 of 256 bytes (255 padded to 16): 344 characters. */
const LONGNAME_FILE_MAX = 344;
/** gocryptfs writes diriv and .name files read-only for everyone: they never change. */
const DIRIV_MODE = 0o444;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Throws InvalidNameError unless `name` can be a single path component on Linux. */
export function validatePlainName(name: string | Uint8Array): void {
  const bytes = typeof name === 'string' ? Buffer.from(name, 'utf8') : Buffer.from(name);
  if (bytes.length === 0) throw new InvalidNameError('file name is empty');
  if (bytes.length > NAME_MAX) {
    throw new InvalidNameError(`file name is ${bytes.length} bytes, the limit is ${NAME_MAX}`);
  }
  if (bytes.includes(0)) throw new InvalidNameError('file name contains a NUL byte');
  if (bytes.includes(0x2f)) throw new InvalidNameError('file name contains "/"');
  const s = bytes.toString('latin1');
  if (s === '.' || s === '..') throw new InvalidNameError(`"${s}" is not a valid file name`);
}

/** PKCS#7 (RFC 5652 section 6.3) to a multiple of 16; a full block is added when aligned. */
export function pad16(data: Uint8Array): Buffer {
  if (data.length === 0) throw new InvalidArgumentError('cannot pad an empty name');
  const padLen = 16 - (data.length % 16);
  const out = Buffer.alloc(data.length + padLen, padLen);
  out.set(data, 0);
  return out;
}

/** Inverse of pad16; any malformed padding is a tampered or wrongly keyed name. */
export function unpad16(padded: Uint8Array): Buffer {
  const n = padded.length;
  if (n === 0 || n % 16 !== 0) throw new AuthenticationError('encrypted name has a bad length');
  const padLen = padded[n - 1]!;
  if (padLen === 0 || padLen > 16 || padLen >= n) {
    throw new AuthenticationError('encrypted name failed to decrypt (bad padding)');
  }
  for (let i = n - padLen; i < n; i++) {
    if (padded[i] !== padLen) {
      throw new AuthenticationError('encrypted name failed to decrypt (bad padding)');
    }
  }
  return Buffer.from(padded.subarray(0, n - padLen));
}

const B64URL_RAW = /^[A-Za-z0-9_-]*$/;
const B64URL_PADDED = /^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}==|[A-Za-z0-9_-]{3}=)?$/;

function b64Encode(data: Uint8Array, raw64: boolean): string {
  const s = Buffer.from(data).toString('base64url');
  return raw64 ? s : s + '='.repeat((4 - (s.length % 4)) % 4);
}

/**
 * Strict base64url as Go's `Encoding.Strict()`: only the alphabet, no CR/LF, and canonical
 * (non-zero trailing bits are rejected), so each encrypted name has exactly one spelling.
 */
function b64Decode(s: string, raw64: boolean): Buffer {
  if (!(raw64 ? B64URL_RAW : B64URL_PADDED).test(s) || (raw64 && s.length % 4 === 1)) {
    throw new InvalidNameError('encrypted name is not valid base64url');
  }
  const bin = Buffer.from(s, 'base64url');
  if (b64Encode(bin, raw64) !== s) {
    throw new InvalidNameError('encrypted name is not canonical base64url');
  }
  return bin;
}

export type CipherNameKind = 'plain' | 'longname' | 'longname-file';

/** What an entry of an encrypted directory is, judged by its name alone. */
export function cipherNameKind(cName: string): CipherNameKind {
  if (!cName.startsWith(LONGNAME_PREFIX)) return 'plain';
  return cName.endsWith(LONGNAME_SUFFIX) ? 'longname-file' : 'longname';
}

export interface NameTransformOptions {
  /** Unpadded base64 (gocryptfs's Raw64 flag, the default since 1.3). */
  raw64?: boolean;
  /** Hash names whose encrypted form is longer than this; `false` disables long names. */
  longNameMax?: number | false;
}

/** Where an encrypted name goes on disk. */
export interface EncryptedName {
  /** The directory entry: the encrypted name itself, or `gocryptfs.longname.<hash>`. */
  entry: string;
  /** For a long name: the content of `<entry>.name` (the full encrypted name). */
  longNameFile?: string;
}

export class NameTransform {
  readonly #eme: EmeCipher;
  readonly #raw64: boolean;
  readonly #longNameMax: number;

  /** `masterKey` is the 32-byte volume key; the EME key is derived from it with HKDF. */
  constructor(masterKey: Uint8Array, options: NameTransformOptions = {}) {
    const emeKey = deriveSubkey(masterKey, 'names');
    this.#eme = new EmeCipher(emeKey);
    emeKey.fill(0);
    this.#raw64 = options.raw64 ?? true;
    const max = options.longNameMax ?? NAME_MAX;
    this.#longNameMax = max === false ? Number.MAX_SAFE_INTEGER : max;
  }

  /** The base64 EME ciphertext of a plaintext name under a directory IV. */
  encryptName(plainName: string | Uint8Array, dirIV: Uint8Array): string {
    validatePlainName(plainName);
    assertDirIV(dirIV);
    const bytes = typeof plainName === 'string' ? Buffer.from(plainName, 'utf8') : plainName;
    return b64Encode(this.#eme.encrypt(dirIV, pad16(bytes)), this.#raw64);
  }

  /** Decrypts to raw bytes; use decryptName for a string. */
  decryptNameBytes(cipherName: string, dirIV: Uint8Array): Buffer {
    assertDirIV(dirIV);
    const bin = b64Decode(cipherName, this.#raw64);
    if (bin.length === 0 || bin.length % 16 !== 0 || bin.length > NAME_MAX + 1) {
      throw new InvalidNameError(
        `encrypted name decodes to ${bin.length} bytes, not 16..${NAME_MAX + 1} in steps of 16`,
      );
    }
    const plain = unpad16(this.#eme.decrypt(dirIV, bin));
    try {
      validatePlainName(plain);
    } catch {
      throw new AuthenticationError('encrypted name decrypts to an invalid file name');
    }
    return plain;
  }

  /** Decrypts an encrypted name; a name that is not UTF-8 is treated as tampered. */
  decryptName(cipherName: string, dirIV: Uint8Array): string {
    const bytes = this.decryptNameBytes(cipherName, dirIV);
    try {
      return utf8.decode(bytes);
    } catch {
      throw new AuthenticationError('encrypted name decrypts to bytes that are not UTF-8');
    }
  }

  /** Encrypts a name and hashes it to a long name when gocryptfs would. */
  encryptEntryName(plainName: string | Uint8Array, dirIV: Uint8Array): EncryptedName {
    const cName = this.encryptName(plainName, dirIV);
    if (cName.length > this.#longNameMax) {
      return { entry: this.hashLongName(cName), longNameFile: cName };
    }
    return { entry: cName };
  }

  /** `gocryptfs.longname.` + base64url(sha256(encrypted name)). */
  hashLongName(cName: string): string {
    return LONGNAME_PREFIX + b64Encode(createHash('sha256').update(cName).digest(), this.#raw64);
  }

  /**
   * Checks that a `.name` file's content belongs to the long-name entry it sits beside, so a
   * swapped `.name` file cannot rename a file silently.
   */
  checkLongName(entry: string, cName: string): void {
    if (this.hashLongName(cName) !== entry) {
      throw new AuthenticationError(`${entry}.name does not match its long-name hash`);
    }
  }
}

function assertDirIV(iv: Uint8Array): void {
  if (iv.length !== DIRIV_LEN) {
    throw new InvalidArgumentError(`directory IV must be ${DIRIV_LEN} bytes, got ${iv.length}`);
  }
}

/** Reads and checks `<dir>/gocryptfs.diriv`: exactly 16 bytes, not all zero. */
export async function readDirIV(dir: string): Promise<Buffer> {
  let iv: Buffer;
  try {
    iv = await readFile(join(dir, DIRIV_NAME), { flag: fsc.O_RDONLY | fsc.O_NOFOLLOW });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new FormatError(`${dir} has no ${DIRIV_NAME}: not a gocryptfs directory`);
    }
    throw err;
  }
  if (iv.length !== DIRIV_LEN) {
    throw new FormatError(`${join(dir, DIRIV_NAME)} has ${iv.length} bytes, want ${DIRIV_LEN}`);
  }
  if (iv.every((b) => b === 0)) throw new FormatError(`${join(dir, DIRIV_NAME)} is all zero`);
  return iv;
}

/** Creates `<dir>/gocryptfs.diriv` with a fresh random IV; never overwrites one. */
export async function writeDirIV(dir: string): Promise<Buffer> {
  const iv = randomBytes(DIRIV_LEN);
  await writeNewFileAtomic(join(dir, DIRIV_NAME), iv, DIRIV_MODE);
  return iv;
}

/** Writes `<dir>/<entry>.name` for a long name. */
export async function writeLongNameFile(dir: string, entry: string, cName: string): Promise<void> {
  await writeNewFileAtomic(
    join(dir, entry + LONGNAME_SUFFIX),
    Buffer.from(cName, 'ascii'),
    DIRIV_MODE,
  );
}

/** Reads `<dir>/<entry>.name` with the size limit gocryptfs applies. */
export async function readLongNameFile(dir: string, entry: string): Promise<string> {
  const path = join(dir, entry + LONGNAME_SUFFIX);
  let buf: Buffer;
  try {
    buf = await readFile(path, { flag: fsc.O_RDONLY | fsc.O_NOFOLLOW });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new FormatError(`long-name entry ${entry} has no ${LONGNAME_SUFFIX} file`);
    }
    throw err;
  }
  if (buf.length === 0 || buf.length > LONGNAME_FILE_MAX) {
    throw new FormatError(
      `${entry}${LONGNAME_SUFFIX} has ${buf.length} bytes, want 1..${LONGNAME_FILE_MAX}`,
    );
  }
  return buf.toString('latin1');
}
