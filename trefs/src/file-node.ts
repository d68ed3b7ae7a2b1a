/**
 * Block-level access to one open ciphertext file, shared by every handle open on it.
 *
 * Layout and crash behaviour (see README "Crash safety"):
 * - trefs writes a file's header when it creates the file, after its DEK is registered, so
 *   every file trefs creates carries a file ID the key service knows. Truncating to zero keeps
 *   the 18-byte header (read as empty by gocryptfs too), so the file keeps its ID and DEK.
 * - Content is only ever written as whole encrypted blocks at block offsets, one pwrite per
 *   request; a block is decrypted, merged and re-encrypted when a write covers part of it.
 * - Shrinking to the middle of a block first cuts the file at that block's start and then
 *   writes the shortened block, so an interruption leaves a shorter file of valid blocks,
 *   never a block whose tail belongs to an older version.
 *
 * Reads share the file's lock; writes and truncates hold it alone, so a reader never sees a
 * half-merged block and two writers never lose each other's bytes within a block.
 */
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
} from '@tre/crypto';
import { fsError } from './errors.js';
import type { FileKey } from './keyring.js';
import { RwLock } from './rwlock.js';

/** Largest span re-encrypted at once, so a huge write needs bounded memory. */
const WRITE_SLICE = 256 * PLAIN_BLOCK;

/**
 * Scratch buffers for the ciphertext of one request, reused: a fresh 130 KiB buffer per FUSE
 * read or write kept the garbage collector busy for a tenth of the daemon's time.
 */
const SCRATCH = CIPHER_BLOCK * 33;
const scratchFree: Buffer[] = [];

function takeScratch(len: number): Buffer {
  if (len > SCRATCH) return Buffer.allocUnsafe(len);
  return (scratchFree.pop() ?? Buffer.allocUnsafe(SCRATCH)).subarray(0, len);
}

function giveScratch(buf: Buffer): void {
  if (buf.buffer.byteLength === SCRATCH && scratchFree.length < 16) {
    scratchFree.push(Buffer.from(buf.buffer, buf.byteOffset, SCRATCH));
  }
}

export interface KeySource {
  fileKey(fileId: Buffer): Promise<FileKey>;
  newFileKey(): Promise<FileKey>;
}

export class FileNode {
  readonly lock = new RwLock();
  /** Open handles on this node. */
  refs = 0;

  private constructor(
    readonly id: string,
    private readonly fh: FileHandle,
    readonly writable: boolean,
    private key: FileKey | undefined,
    private size: number,
    private readonly keys: KeySource,
  ) {}

  /** Wraps an open cipher file: reads its header and finds its key. */
  static async load(
    id: string,
    fh: FileHandle,
    writable: boolean,
    keys: KeySource,
  ): Promise<FileNode> {
    const cipherSize = (await fh.stat()).size;
    let size: number;
    try {
      size = cipherSizeToPlainSize(cipherSize);
    } catch (err) {
      throw fsError('EIO', (err as Error).message);
    }
    let key: FileKey | undefined;
    if (cipherSize >= HEADER_LEN) {
      const header = Buffer.alloc(HEADER_LEN);
      await readExact(fh, header, 0);
      let fileId: Buffer;
      try {
        fileId = parseHeader(header);
      } catch (err) {
        throw fsError('EIO', (err as Error).message);
      }
      key = await keys.fileKey(fileId);
    }
    return new FileNode(id, fh, writable, key, size, keys);
  }

  /** Gives a header-less (empty) file a registered fresh key and writes its header. */
  static async initialise(
    id: string,
    fh: FileHandle,
    keys: KeySource,
    key?: FileKey,
  ): Promise<FileNode> {
    const k = key ?? (await keys.newFileKey());
    await writeAll(fh, createHeader(k.fileId), 0);
    return new FileNode(id, fh, true, k, 0, keys);
  }

  get fileId(): Buffer | undefined {
    return this.key?.fileId;
  }

  /** The file ID in hex, computed once (checked on every write of a frozen tree). */
  get fileIdHex(): string | undefined {
    if (this.idHex === undefined && this.key !== undefined) {
      this.idHex = this.key.fileId.toString('hex');
    }
    return this.idHex;
  }

  private idHex: string | undefined;

  get plainSize(): number {
    return this.size;
  }

  get dek(): Buffer | undefined {
    return this.key?.dek;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  /** Reads up to `len` bytes at `pos` into `out`; returns the count. */
  read(out: Buffer, len: number, pos: number): Promise<number> {
    return this.lock.read(async () => {
      const end = Math.min(this.size, pos + len);
      if (end <= pos || this.key === undefined) return 0;
      const first = Math.floor(pos / PLAIN_BLOCK);
      const last = Math.floor((end - 1) / PLAIN_BLOCK);
      const cStart = blockCipherOffset(first);
      const cEnd = Math.min(plainSizeToCipherSize(this.size), blockCipherOffset(last + 1));
      const cipherText = takeScratch(cEnd - cStart);
      try {
        await readExact(this.fh, cipherText, cStart);
        const skip = pos - first * PLAIN_BLOCK;
        if (skip === 0 && end - pos === cipherText.length - (last - first + 1) * 32) {
          this.key.cipher.decryptBlocks(cipherText, first, this.key.fileId, out, 0);
        } else {
          const plain = this.key.cipher.decryptBlocks(cipherText, first, this.key.fileId);
          plain.copy(out, 0, skip, skip + (end - pos));
        }
      } finally {
        giveScratch(cipherText);
      }
      return end - pos;
    });
  }

  write(data: Buffer, pos: number): Promise<number> {
    this.assertWritable();
    return this.lock.write(async () => {
      await this.writeLocked(data, pos);
      return data.length;
    });
  }

  truncate(newSize: number): Promise<void> {
    this.assertWritable();
    return this.lock.write(async () => {
      if (newSize === this.size) return;
      if (newSize > this.size) {
        await this.writeLocked(Buffer.alloc(1), newSize - 1);
        return;
      }
      const key = await this.ensureKey();
      const rest = newSize % PLAIN_BLOCK;
      if (rest === 0) {
        await this.fh.truncate(newSize === 0 ? HEADER_LEN : plainSizeToCipherSize(newSize));
      } else {
        const blockNo = Math.floor(newSize / PLAIN_BLOCK);
        const plain = await this.readBlock(blockNo);
        const block = key.cipher.encryptBlocks(plain.subarray(0, rest), blockNo, key.fileId);
        await this.fh.truncate(blockCipherOffset(blockNo));
        await writeAll(this.fh, block, blockCipherOffset(blockNo));
      }
      this.size = newSize;
    });
  }

  async sync(dataOnly: boolean): Promise<void> {
    if (dataOnly) await this.fh.datasync();
    else await this.fh.sync();
  }

  private assertWritable(): void {
    if (!this.writable) throw fsError('EBADF', 'file is open read-only');
  }

  private async ensureKey(): Promise<FileKey> {
    if (this.key === undefined) {
      const k = await this.keys.newFileKey();
      await writeAll(this.fh, createHeader(k.fileId), 0);
      this.key = k;
    }
    return this.key;
  }

  private async writeLocked(data: Buffer, position: number): Promise<void> {
    if (data.length === 0) return;
    const key = await this.ensureKey();
    if (position > this.size && this.size % PLAIN_BLOCK !== 0) {
      // The short last block must become a full block (zero tail) before anything follows
      // it; blocks wholly inside the gap stay holes and read as zeros.
      const blockEnd = Math.ceil(this.size / PLAIN_BLOCK) * PLAIN_BLOCK;
      if (position >= blockEnd) {
        await this.writeRange(key, this.size, Buffer.alloc(blockEnd - this.size));
        this.size = blockEnd;
      }
    }
    let pos = position;
    let off = 0;
    while (off < data.length) {
      const sliceEnd = Math.min(
        position + data.length,
        Math.floor(pos / PLAIN_BLOCK) * PLAIN_BLOCK + WRITE_SLICE,
      );
      await this.writeRange(key, pos, data.subarray(off, off + (sliceEnd - pos)));
      off += sliceEnd - pos;
      pos = sliceEnd;
      this.size = Math.max(this.size, pos);
    }
  }

  /**
   * Re-encrypts the blocks under [position, position + data.length), keeping what the write
   * does not cover of its first and last block. Either position <= size, or size is
   * block-aligned.
   */
  private async writeRange(key: FileKey, position: number, data: Buffer): Promise<void> {
    const size = this.size;
    const end = position + data.length;
    const first = Math.floor(position / PLAIN_BLOCK);
    const last = Math.floor((end - 1) / PLAIN_BLOCK);
    const existing = Math.ceil(size / PLAIN_BLOCK);
    const base = first * PLAIN_BLOCK;
    const newEnd = Math.max(end, Math.min(size, (last + 1) * PLAIN_BLOCK));
    let plain: Buffer;
    const keepFirst =
      first < existing && (position > base || end < Math.min(size, base + PLAIN_BLOCK));
    const keepLast =
      last !== first && last < existing && end < Math.min(size, (last + 1) * PLAIN_BLOCK);
    if (!keepFirst && !keepLast && position === base && newEnd === end) {
      plain = data;
    } else {
      plain = Buffer.alloc(newEnd - base);
      if (keepFirst) (await this.readBlock(first)).copy(plain, 0);
      if (keepLast) (await this.readBlock(last)).copy(plain, (last - first) * PLAIN_BLOCK);
      data.copy(plain, position - base);
    }
    const cipherText = takeScratch(ContentCipher.blocksCipherLength(plain.length));
    try {
      key.cipher.encryptBlocks(plain, first, key.fileId, cipherText, 0);
      await writeAll(this.fh, cipherText, blockCipherOffset(first));
    } finally {
      giveScratch(cipherText);
    }
  }

  private async readBlock(blockNo: number): Promise<Buffer> {
    const key = this.key!;
    const start = blockCipherOffset(blockNo);
    const len = Math.min(CIPHER_BLOCK, plainSizeToCipherSize(this.size) - start);
    const buf = Buffer.allocUnsafe(len);
    await readExact(this.fh, buf, start);
    return key.cipher.decryptBlocks(buf, blockNo, key.fileId);
  }
}

async function readExact(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, position + got);
    if (bytesRead === 0) throw fsError('EIO', 'ciphertext file is shorter than expected');
    got += bytesRead;
  }
}

async function writeAll(fh: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}
