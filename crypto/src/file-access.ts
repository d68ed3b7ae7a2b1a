/**
 * Random access to a gocryptfs v2 ciphertext file: read a plaintext byte range, overwrite or
 * extend a range, truncate. Only the blocks a request touches are read and written; a write
 * that covers part of a block decrypts that block, merges and re-encrypts it, as gocryptfs
 * does. Writes past the end leave whole untouched blocks as holes (sparse zeros), which read
 * back as zeros.
 *
 * One EncryptedFile must be the only writer of its file: the file ID is cached and blocks are
 * rewritten without locking, exactly like a single gocryptfs mount.
 */
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import {
  CIPHER_BLOCK,
  ContentCipher,
  HEADER_LEN,
  PLAIN_BLOCK,
  blockCipherOffset,
  cipherSizeToPlainSize,
  createHeader,
  parseHeader,
  plainSizeToCipherSize,
} from './contentenc.js';
import { FormatError, InvalidArgumentError } from './errors.js';

/** Largest span re-encrypted in one go, so a huge write needs bounded memory. */
const WRITE_SLICE = 256 * PLAIN_BLOCK;

export interface OpenOptions {
  /** Open for writing (read-only otherwise). */
  write?: boolean;
  /** Create the file (mode 0600) if it does not exist; implies write. */
  create?: boolean;
}

function assertRange(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new InvalidArgumentError(`${what} must be a non-negative safe integer, got ${n}`);
  }
}

export class EncryptedFile {
  private fileId: Buffer | undefined;

  private constructor(
    private readonly cipher: ContentCipher,
    private readonly fh: FileHandle,
    private readonly writable: boolean,
    private readonly owned: boolean,
  ) {}

  /** Opens a ciphertext file by path; close() closes it. */
  static async open(key: Uint8Array, path: string, opts: OpenOptions = {}): Promise<EncryptedFile> {
    const cipher = new ContentCipher(key);
    const writable = opts.write === true || opts.create === true;
    const flags = writable
      ? fsConstants.O_RDWR | (opts.create === true ? fsConstants.O_CREAT : 0)
      : fsConstants.O_RDONLY;
    const fh = await open(path, flags, 0o600);
    return new EncryptedFile(cipher, fh, writable, true);
  }

  /** Wraps a FileHandle the caller keeps owning (close() leaves it open). */
  static fromHandle(
    key: Uint8Array,
    fh: FileHandle,
    opts: { write?: boolean } = {},
  ): EncryptedFile {
    return new EncryptedFile(new ContentCipher(key), fh, opts.write === true, false);
  }

  async cipherSize(): Promise<number> {
    return (await this.fh.stat()).size;
  }

  /** Plaintext size; FormatError if the ciphertext size is impossible. */
  async size(): Promise<number> {
    return cipherSizeToPlainSize(await this.cipherSize());
  }

  /** Reads up to `length` plaintext bytes at `position` (fewer at the end of the file). */
  async read(position: number, length: number): Promise<Buffer> {
    assertRange(position, 'position');
    assertRange(length, 'length');
    const cipherSize = await this.cipherSize();
    const size = cipherSizeToPlainSize(cipherSize);
    if (length === 0 || position >= size) return Buffer.alloc(0);
    const end = Math.min(size, position + length);
    const fileId = await this.loadFileId();
    const first = Math.floor(position / PLAIN_BLOCK);
    const last = Math.floor((end - 1) / PLAIN_BLOCK);
    const cStart = blockCipherOffset(first);
    const cEnd = Math.min(cipherSize, blockCipherOffset(last + 1));
    const cipherText = await this.readExact(cStart, cEnd - cStart);
    const plain = this.cipher.decryptBlocks(cipherText, first, fileId);
    return plain.subarray(position - first * PLAIN_BLOCK, end - first * PLAIN_BLOCK);
  }

  /** Writes `data` at plaintext `position`, extending the file if needed. */
  async write(position: number, data: Uint8Array): Promise<void> {
    this.assertWritable();
    assertRange(position, 'position');
    if (!Number.isSafeInteger(position + data.length))
      throw new InvalidArgumentError('write extends beyond the largest supported size');
    if (data.length === 0) return;
    let size = await this.size();
    if (size === 0) {
      const header = createHeader();
      await this.writeAll(header, 0);
      this.fileId = header.subarray(2);
    }
    if (position > size && size % PLAIN_BLOCK !== 0) {
      // The old last block is short; it must become a full block of which the tail is zeros
      // before anything can follow it. Blocks wholly inside the gap stay holes.
      const blockEnd = (Math.floor(size / PLAIN_BLOCK) + 1) * PLAIN_BLOCK;
      if (position >= blockEnd) {
        await this.writeRange(size, Buffer.alloc(blockEnd - size), size);
        size = blockEnd;
      }
    }
    const src = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    let pos = position;
    let off = 0;
    while (off < src.length) {
      const sliceEnd = Math.min(
        position + src.length,
        Math.floor(pos / PLAIN_BLOCK) * PLAIN_BLOCK + WRITE_SLICE,
      );
      await this.writeRange(pos, src.subarray(off, off + (sliceEnd - pos)), size);
      off += sliceEnd - pos;
      pos = sliceEnd;
      size = Math.max(size, pos);
    }
  }

  /** Sets the plaintext size: shrinking re-encrypts the new last block, growing adds zeros. */
  async truncate(newSize: number): Promise<void> {
    this.assertWritable();
    assertRange(newSize, 'size');
    const size = await this.size();
    if (newSize === size) return;
    if (newSize === 0) {
      await this.fh.truncate(0);
      this.fileId = undefined;
      return;
    }
    if (newSize > size) {
      await this.write(newSize - 1, Buffer.alloc(1));
      return;
    }
    const rest = newSize % PLAIN_BLOCK;
    if (rest !== 0) {
      const blockNo = Math.floor(newSize / PLAIN_BLOCK);
      const plain = await this.readBlock(blockNo, size);
      const fileId = await this.loadFileId();
      await this.writeAll(
        this.cipher.encryptBlocks(plain.subarray(0, rest), blockNo, fileId),
        blockCipherOffset(blockNo),
      );
    }
    await this.fh.truncate(plainSizeToCipherSize(newSize));
  }

  async sync(): Promise<void> {
    await this.fh.sync();
  }

  /** Closes the file (when owned) and wipes the content key; the object is unusable after. */
  async close(): Promise<void> {
    this.fileId = undefined;
    this.cipher.destroy();
    if (this.owned) await this.fh.close();
  }

  /**
   * Re-encrypts the blocks under [position, position + data.length), keeping the parts of the
   * first and last block the write does not cover. `size` is the current plaintext size, and
   * either position <= size or `size` ends on a block boundary.
   */
  private async writeRange(position: number, data: Buffer, size: number): Promise<void> {
    const fileId = await this.loadFileId();
    const end = position + data.length;
    const first = Math.floor(position / PLAIN_BLOCK);
    const last = Math.floor((end - 1) / PLAIN_BLOCK);
    const existing = Math.ceil(size / PLAIN_BLOCK);
    const base = first * PLAIN_BLOCK;
    const newEnd = Math.max(end, Math.min(size, (last + 1) * PLAIN_BLOCK));
    const plain = Buffer.alloc(newEnd - base);
    if (first < existing && (position > base || end < Math.min(size, base + PLAIN_BLOCK))) {
      (await this.readBlock(first, size)).copy(plain, 0);
    }
    if (last !== first && last < existing && end < Math.min(size, (last + 1) * PLAIN_BLOCK)) {
      (await this.readBlock(last, size)).copy(plain, (last - first) * PLAIN_BLOCK);
    }
    data.copy(plain, position - base);
    await this.writeAll(this.cipher.encryptBlocks(plain, first, fileId), blockCipherOffset(first));
  }

  /** Plaintext of one existing block. */
  private async readBlock(blockNo: number, size: number): Promise<Buffer> {
    const cipherSize = plainSizeToCipherSize(size);
    const start = blockCipherOffset(blockNo);
    const cipherText = await this.readExact(start, Math.min(CIPHER_BLOCK, cipherSize - start));
    return this.cipher.decryptBlocks(cipherText, blockNo, await this.loadFileId());
  }

  private async loadFileId(): Promise<Buffer> {
    if (this.fileId === undefined) this.fileId = parseHeader(await this.readExact(0, HEADER_LEN));
    return this.fileId;
  }

  private async readExact(position: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await this.fh.read(buf, got, length - got, position + got);
      if (bytesRead === 0)
        throw new FormatError('ciphertext file ended early: it changed while being read');
      got += bytesRead;
    }
    return buf;
  }

  private async writeAll(data: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, position + done);
      done += bytesWritten;
    }
  }

  private assertWritable(): void {
    if (!this.writable) throw new InvalidArgumentError('file was opened read-only');
  }
}
