/**
 * Streaming encryption and decryption of gocryptfs v2 file content in constant memory: a
 * stream holds at most one partial block between writes and emits output in bounded slices.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  BLOCK_OVERHEAD,
  CIPHER_BLOCK,
  ContentCipher,
  FILE_ID_LEN,
  HEADER_LEN,
  PLAIN_BLOCK,
  createHeader,
  parseHeader,
} from './contentenc.js';
import { FormatError, InvalidArgumentError } from './errors.js';

/** Blocks encrypted per output slice: 1 MiB of plaintext, large enough to amortise a push. */
const SLICE_BLOCKS = 256;

export interface EncryptStreamOptions {
  /** File ID for the header; random by default. Tests and the per-file-key mode may pin it. */
  fileId?: Uint8Array;
}

class EncryptTransform extends Transform {
  private readonly cipher: ContentCipher;
  private readonly header: Buffer;
  private readonly fileId: Buffer;
  private readonly partial = Buffer.allocUnsafe(PLAIN_BLOCK);
  private partialLen = 0;
  private blockNo = 0;
  private headerSent = false;

  constructor(key: Uint8Array, opts: EncryptStreamOptions) {
    super();
    this.cipher = new ContentCipher(key);
    this.header = createHeader(opts.fileId);
    this.fileId = this.header.subarray(2);
  }

  /** Encrypts whole or final blocks; the header goes in front of the first output. */
  private process(plain: Buffer): void {
    const head = this.headerSent ? 0 : HEADER_LEN;
    const out = Buffer.allocUnsafe(head + ContentCipher.blocksCipherLength(plain.length));
    if (!this.headerSent) {
      this.header.copy(out, 0);
      this.headerSent = true;
    }
    this.cipher.encryptBlocks(plain, this.blockNo, this.fileId, out, head);
    this.blockNo += Math.ceil(plain.length / PLAIN_BLOCK);
    this.push(out);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    try {
      let off = 0;
      if (this.partialLen > 0) {
        const take = Math.min(PLAIN_BLOCK - this.partialLen, chunk.length);
        chunk.copy(this.partial, this.partialLen, 0, take);
        this.partialLen += take;
        off = take;
        if (this.partialLen === PLAIN_BLOCK) {
          this.process(this.partial);
          this.partialLen = 0;
        }
      }
      const wholeEnd = off + Math.floor((chunk.length - off) / PLAIN_BLOCK) * PLAIN_BLOCK;
      for (let s = off; s < wholeEnd; s += SLICE_BLOCKS * PLAIN_BLOCK) {
        this.process(chunk.subarray(s, Math.min(wholeEnd, s + SLICE_BLOCKS * PLAIN_BLOCK)));
      }
      if (wholeEnd < chunk.length) {
        chunk.copy(this.partial, this.partialLen, wholeEnd);
        this.partialLen += chunk.length - wholeEnd;
      }
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (this.partialLen > 0) this.process(this.partial.subarray(0, this.partialLen));
      this.partial.fill(0);
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }
}

class DecryptTransform extends Transform {
  private readonly cipher: ContentCipher;
  private readonly header = Buffer.alloc(HEADER_LEN);
  private headerLen = 0;
  private fileId: Buffer | undefined;
  private readonly partial = Buffer.allocUnsafe(CIPHER_BLOCK);
  private partialLen = 0;
  private blockNo = 0;

  constructor(key: Uint8Array) {
    super();
    this.cipher = new ContentCipher(key);
  }

  private process(cipherText: Buffer, fileId: Buffer): void {
    const plain = this.cipher.decryptBlocks(cipherText, this.blockNo, fileId);
    this.blockNo += Math.ceil(cipherText.length / CIPHER_BLOCK);
    this.push(plain);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    try {
      let off = 0;
      if (this.fileId === undefined) {
        const take = Math.min(HEADER_LEN - this.headerLen, chunk.length);
        chunk.copy(this.header, this.headerLen, 0, take);
        this.headerLen += take;
        off = take;
        if (this.headerLen < HEADER_LEN) return callback();
        this.fileId = parseHeader(this.header);
      }
      const fileId = this.fileId;
      if (this.partialLen > 0) {
        const take = Math.min(CIPHER_BLOCK - this.partialLen, chunk.length - off);
        chunk.copy(this.partial, this.partialLen, off, off + take);
        this.partialLen += take;
        off += take;
        if (this.partialLen === CIPHER_BLOCK) {
          this.process(this.partial, fileId);
          this.partialLen = 0;
        }
      }
      const wholeEnd = off + Math.floor((chunk.length - off) / CIPHER_BLOCK) * CIPHER_BLOCK;
      for (let s = off; s < wholeEnd; s += SLICE_BLOCKS * CIPHER_BLOCK) {
        this.process(
          chunk.subarray(s, Math.min(wholeEnd, s + SLICE_BLOCKS * CIPHER_BLOCK)),
          fileId,
        );
      }
      if (wholeEnd < chunk.length) {
        chunk.copy(this.partial, this.partialLen, wholeEnd);
        this.partialLen += chunk.length - wholeEnd;
      }
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (this.headerLen > 0 && this.headerLen < HEADER_LEN) {
        throw new FormatError(
          `truncated ciphertext: ${this.headerLen} bytes, shorter than the ${HEADER_LEN}-byte header`,
        );
      }
      if (this.partialLen > 0) {
        if (this.partialLen <= BLOCK_OVERHEAD || this.fileId === undefined) {
          throw new FormatError(
            `truncated ciphertext: last block has ${this.partialLen} bytes, at least ${BLOCK_OVERHEAD + 1} needed`,
          );
        }
        this.process(this.partial.subarray(0, this.partialLen), this.fileId);
      }
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }
}

/** A Transform turning plaintext into a gocryptfs v2 ciphertext file (empty in, empty out). */
export function createEncryptStream(key: Uint8Array, opts: EncryptStreamOptions = {}): Transform {
  if (opts.fileId !== undefined && opts.fileId.length !== FILE_ID_LEN) {
    throw new InvalidArgumentError(
      `file ID must be ${FILE_ID_LEN} bytes, got ${opts.fileId.length}`,
    );
  }
  return new EncryptTransform(key, opts);
}

/**
 * A Transform turning a gocryptfs v2 ciphertext file into plaintext. Fails with
 * AuthenticationError on any tampered block or header and FormatError on a truncated block.
 * Like gocryptfs, it cannot notice a file cut exactly at a block boundary: the format has no
 * end marker.
 */
export function createDecryptStream(key: Uint8Array): Transform {
  return new DecryptTransform(key);
}

/**
 * Runs `produce(tmpPath)`, makes the result durable and renames it to `dstPath`, so `dstPath`
 * is either absent, its old version, or the complete new file; never partly written.
 */
export async function writeFileAtomic(
  dstPath: string,
  produce: (tmpPath: string) => Promise<void>,
): Promise<void> {
  const dir = dirname(dstPath);
  const tmp = join(dir, `.${basename(dstPath)}.${randomBytes(8).toString('hex')}.tmp`);
  try {
    await produce(tmp);
    const fh = await open(tmp, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, dstPath);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  // The rename itself becomes durable with the directory; some filesystems refuse fsync on a
  // directory, which only costs durability, never atomicity.
  try {
    const dfh = await open(dir, 'r');
    try {
      await dfh.sync();
    } finally {
      await dfh.close();
    }
  } catch {
    /* durability of the rename is best effort */
  }
}

async function transformFile(src: string, dst: string, transform: Transform): Promise<void> {
  await writeFileAtomic(dst, (tmp) =>
    pipeline(
      createReadStream(src),
      transform,
      createWriteStream(tmp, { flags: 'wx', mode: 0o600 }),
    ),
  );
}

/** Encrypts file `srcPath` to `dstPath` (written atomically, mode 0600). */
export async function encryptFile(
  key: Uint8Array,
  srcPath: string,
  dstPath: string,
  opts: EncryptStreamOptions = {},
): Promise<void> {
  await transformFile(srcPath, dstPath, createEncryptStream(key, opts));
}

/** Decrypts file `srcPath` to `dstPath` (written atomically, mode 0600). */
export async function decryptFile(
  key: Uint8Array,
  srcPath: string,
  dstPath: string,
): Promise<void> {
  await transformFile(srcPath, dstPath, createDecryptStream(key));
}
