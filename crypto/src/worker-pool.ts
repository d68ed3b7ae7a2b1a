/**
 * Parallel encryption and decryption of large files on a pool of worker threads (piscina).
 * The input is cut into chunks of whole blocks; each chunk is sealed independently (its
 * blocks' numbers are fixed by its position). Streams emit results strictly in input order;
 * whole files are processed by the workers with positional reads and writes, each chunk
 * landing at its final offset. At most `2 x threads` chunks are in flight, so memory stays
 * constant whatever the file size.
 */
import { availableParallelism } from 'node:os';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { assertKey } from './cryptocore.js';
import {
  CIPHER_BLOCK,
  FILE_ID_LEN,
  HEADER_LEN,
  PLAIN_BLOCK,
  cipherSizeToPlainSize,
  createHeader,
  parseHeader,
} from './contentenc.js';
import { writeFileAtomic } from './content-stream.js';
import type { EncryptStreamOptions } from './content-stream.js';
import type {
  ContentFileTask,
  ContentSealTask,
  ContentTask,
  ContentTaskResult,
} from './content-worker.js';
import { AuthenticationError, CryptoError, FormatError, InvalidArgumentError } from './errors.js';
import type { CryptoErrorCode } from './errors.js';

export interface ContentWorkerPoolOptions {
  /** Worker threads; all available cores by default. */
  threads?: number;
  /** Blocks per task (default 256 = 1 MiB of plaintext): large enough to dwarf task overhead. */
  chunkBlocks?: number;
}

/**
 * Worker threads execute JavaScript through Node's own loader, never through a test runner's
 * TypeScript transform. When this module itself runs from its TypeScript source (jest with
 * ts-jest), the worker is therefore taken from the compiled package output in dist/, which
 * the package's test script builds (tsc -b) before jest starts.
 */
function workerFile(): string {
  const here = fileURLToPath(import.meta.url);
  return here.endsWith('.ts')
    ? join(dirname(here), '..', 'dist', 'content-worker.js')
    : join(dirname(here), 'content-worker.js');
}

function rebuildError(code: CryptoErrorCode, message: string): CryptoError {
  switch (code) {
    case 'AUTHENTICATION_FAILED':
      return new AuthenticationError(message);
    case 'INVALID_FORMAT':
      return new FormatError(message);
    case 'INVALID_ARGUMENT':
      return new InvalidArgumentError(message);
    default:
      return new CryptoError(code, message);
  }
}

export class ContentWorkerPool {
  readonly threads: number;
  readonly chunkBlocks: number;
  private readonly running = new Set<Promise<ContentTaskResult>>();
  private readonly pool: Piscina<
    ContentTask | ContentFileTask | ContentSealTask,
    ContentTaskResult
  >;

  constructor(opts: ContentWorkerPoolOptions = {}) {
    this.threads = opts.threads ?? availableParallelism();
    this.chunkBlocks = opts.chunkBlocks ?? 256;
    if (!Number.isInteger(this.threads) || this.threads < 1) {
      throw new InvalidArgumentError(`threads must be a positive integer, got ${this.threads}`);
    }
    if (!Number.isInteger(this.chunkBlocks) || this.chunkBlocks < 1) {
      throw new InvalidArgumentError(
        `chunkBlocks must be a positive integer, got ${this.chunkBlocks}`,
      );
    }
    this.pool = new Piscina({
      filename: workerFile(),
      minThreads: this.threads,
      maxThreads: this.threads,
    });
  }

  /**
   * Runs one chunk of consecutive blocks on a worker. `data` is copied to the worker, or with
   * `transfer` its whole ArrayBuffer is moved there (and unusable here afterwards).
   */
  async run(
    op: 'encrypt' | 'decrypt',
    key: Uint8Array,
    fileId: Uint8Array,
    firstBlockNo: number,
    data: Uint8Array,
    transfer = false,
  ): Promise<Buffer> {
    const task: ContentTask = { op, key, fileId, firstBlockNo, data };
    const result = await this.submit(
      task,
      transfer ? { transferList: [data.buffer as ArrayBuffer] } : {},
    );
    if (result instanceof Uint8Array)
      return Buffer.from(result.buffer, result.byteOffset, result.byteLength);
    if (typeof result === 'number')
      throw new Error('worker answered a block task with a byte count');
    throw rebuildError(result.code, result.message);
  }

  /**
   * Reads `length` bytes of plaintext (whole blocks, the last one may be short) of the block
   * range at `firstBlockNo` from the open file `srcFd` on a worker, seals them there and hashes
   * them there: the SHA-256 covers `hashPrefix` (e.g. the file header before the first range)
   * followed by the ciphertext. The file descriptor must stay open until the promise settles.
   */
  async sealRange(
    key: Uint8Array,
    fileId: Uint8Array,
    firstBlockNo: number,
    srcFd: number,
    length: number,
    hashPrefix: Uint8Array = new Uint8Array(0),
  ): Promise<{ data: Buffer; sha256: Buffer }> {
    assertKey(key);
    if (fileId.length !== FILE_ID_LEN) {
      throw new InvalidArgumentError(`file ID must be ${FILE_ID_LEN} bytes, got ${fileId.length}`);
    }
    const task: ContentSealTask = {
      op: 'encrypt',
      key,
      fileId,
      firstBlockNo,
      srcFd,
      length,
      hashPrefix,
    };
    const result = await this.submit(task);
    if (typeof result === 'number')
      throw new Error('worker answered a seal task with a byte count');
    if (!(result instanceof Uint8Array)) throw rebuildError(result.code, result.message);
    const all = Buffer.from(result.buffer, result.byteOffset, result.byteLength);
    return { data: all.subarray(0, all.length - 32), sha256: all.subarray(all.length - 32) };
  }

  /** Like createEncryptStream, with the blocks sealed on the pool. */
  createEncryptStream(key: Uint8Array, opts: EncryptStreamOptions = {}): Transform {
    assertKey(key);
    if (opts.fileId !== undefined && opts.fileId.length !== FILE_ID_LEN) {
      throw new InvalidArgumentError(
        `file ID must be ${FILE_ID_LEN} bytes, got ${opts.fileId.length}`,
      );
    }
    return new ParallelTransform(this, 'encrypt', Buffer.from(key), createHeader(opts.fileId));
  }

  /** Like createDecryptStream, with the blocks opened on the pool. */
  createDecryptStream(key: Uint8Array): Transform {
    assertKey(key);
    return new ParallelTransform(this, 'decrypt', Buffer.from(key), undefined);
  }

  /**
   * Encrypts file `srcPath` to `dstPath` (written atomically, mode 0600). Workers read their
   * block ranges from the source and write them at their final offsets themselves, so the
   * main thread only hands out ranges.
   */
  async encryptFile(
    key: Uint8Array,
    srcPath: string,
    dstPath: string,
    opts: EncryptStreamOptions = {},
  ): Promise<void> {
    assertKey(key);
    const header = createHeader(opts.fileId);
    await this.transformFile(srcPath, dstPath, async (src, dst) => {
      const size = (await src.stat()).size;
      if (size === 0) return;
      await dst.write(header, 0, HEADER_LEN, 0);
      await this.runRanges('encrypt', key, header.subarray(2), src.fd, dst.fd, size, PLAIN_BLOCK);
    });
  }

  /** Decrypts file `srcPath` to `dstPath` (written atomically, mode 0600), like encryptFile. */
  async decryptFile(key: Uint8Array, srcPath: string, dstPath: string): Promise<void> {
    assertKey(key);
    await this.transformFile(srcPath, dstPath, async (src, dst) => {
      const cipherSize = (await src.stat()).size;
      cipherSizeToPlainSize(cipherSize);
      if (cipherSize === 0) return;
      const header = Buffer.alloc(HEADER_LEN);
      const { bytesRead } = await src.read(header, 0, HEADER_LEN, 0);
      if (bytesRead !== HEADER_LEN) throw new FormatError('ciphertext file ended early');
      const fileId = parseHeader(header);
      await this.runRanges(
        'decrypt',
        key,
        fileId,
        src.fd,
        dst.fd,
        cipherSize - HEADER_LEN,
        CIPHER_BLOCK,
      );
    });
  }

  /** Stops the worker threads; pending tasks fail. */
  async destroy(): Promise<void> {
    // Piscina reports the answer of a task still running at destroy() as an unhandled 'error'
    // event; tasks given up by their caller (a prefetch after an abort) are let finish first.
    await Promise.allSettled(this.running);
    await this.pool.destroy();
  }

  private submit(
    task: ContentTask | ContentFileTask | ContentSealTask,
    opts: { transferList?: ArrayBuffer[] } = {},
  ): Promise<ContentTaskResult> {
    const p = this.pool.run(task, opts);
    this.running.add(p);
    const forget = (): void => {
      this.running.delete(p);
    };
    p.then(forget, forget);
    return p;
  }

  private async transformFile(
    srcPath: string,
    dstPath: string,
    work: (src: FileHandle, dst: FileHandle) => Promise<void>,
  ): Promise<void> {
    await writeFileAtomic(dstPath, async (tmp) => {
      const src = await open(srcPath, 'r');
      try {
        const dst = await open(tmp, 'wx', 0o600);
        try {
          await work(src, dst);
        } finally {
          await dst.close();
        }
      } finally {
        await src.close();
      }
    });
  }

  /**
   * Splits `inputLen` bytes of blocks into chunks and runs them as file tasks, at most
   * 2 x threads at a time. After a failure no new chunk starts; the first error is thrown once
   * the running ones have finished (they use the file descriptors until then).
   */
  private async runRanges(
    op: 'encrypt' | 'decrypt',
    key: Uint8Array,
    fileId: Uint8Array,
    srcFd: number,
    dstFd: number,
    inputLen: number,
    block: number,
  ): Promise<void> {
    const chunkBytes = this.chunkBlocks * block;
    const chunks = Math.ceil(inputLen / chunkBytes);
    let next = 0;
    let failure: unknown;
    const runner = async (): Promise<void> => {
      while (failure === undefined && next < chunks) {
        const i = next++;
        const task: ContentFileTask = {
          op,
          key,
          fileId,
          firstBlockNo: i * this.chunkBlocks,
          srcFd,
          dstFd,
          length: Math.min(chunkBytes, inputLen - i * chunkBytes),
        };
        try {
          const result = await this.submit(task);
          if (typeof result === 'object' && !(result instanceof Uint8Array)) {
            throw rebuildError(result.code, result.message);
          }
        } catch (err) {
          failure ??= err;
        }
      }
    };
    await Promise.all(Array.from({ length: 2 * this.threads }, runner));
    if (failure !== undefined) throw failure;
  }
}

class ParallelTransform extends Transform {
  private readonly chunkBytes: number;
  private readonly maxInFlight: number;
  private readonly inFlight: Promise<Buffer>[] = [];
  private current: Buffer;
  private currentLen = 0;
  private chunkNo = 0;
  private fileId: Buffer | undefined;
  private readonly header: Buffer;
  private headerLen = 0;

  constructor(
    private readonly pool: ContentWorkerPool,
    private readonly op: 'encrypt' | 'decrypt',
    private readonly key: Buffer,
    header: Buffer | undefined,
  ) {
    super();
    this.chunkBytes = pool.chunkBlocks * (op === 'encrypt' ? PLAIN_BLOCK : CIPHER_BLOCK);
    this.maxInFlight = 2 * pool.threads;
    this.current = Buffer.allocUnsafeSlow(this.chunkBytes);
    if (header === undefined) {
      this.header = Buffer.alloc(HEADER_LEN);
    } else {
      this.header = header;
      this.headerLen = HEADER_LEN;
      this.fileId = header.subarray(2);
    }
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.consume(chunk).then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    this.finish().then(() => callback(), callback);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.key.fill(0);
    callback(err);
  }

  private async consume(chunk: Buffer): Promise<void> {
    let off = 0;
    if (this.headerLen < HEADER_LEN) {
      const take = Math.min(HEADER_LEN - this.headerLen, chunk.length);
      chunk.copy(this.header, this.headerLen, 0, take);
      this.headerLen += take;
      off = take;
      if (this.headerLen < HEADER_LEN) return;
      this.fileId = parseHeader(this.header);
    }
    while (off < chunk.length) {
      const take = Math.min(this.chunkBytes - this.currentLen, chunk.length - off);
      chunk.copy(this.current, this.currentLen, off, off + take);
      this.currentLen += take;
      off += take;
      if (this.currentLen === this.chunkBytes) await this.dispatch();
    }
  }

  private async dispatch(): Promise<void> {
    const fileId = this.fileId as Buffer;
    const data = this.current.subarray(0, this.currentLen);
    const firstBlockNo = this.chunkNo * this.pool.chunkBlocks;
    if (this.op === 'encrypt' && this.chunkNo === 0) this.push(this.header);
    this.current = Buffer.allocUnsafeSlow(this.chunkBytes);
    this.currentLen = 0;
    this.chunkNo++;
    const result = this.pool.run(this.op, this.key, fileId, firstBlockNo, data, true);
    // Awaited in order below; this only keeps a later chunk's failure from being reported as
    // unhandled while an earlier one is still awaited.
    result.catch(() => undefined);
    this.inFlight.push(result);
    while (this.inFlight.length >= this.maxInFlight) this.push(await this.inFlight.shift());
  }

  private async finish(): Promise<void> {
    if (this.headerLen > 0 && this.headerLen < HEADER_LEN) {
      throw new FormatError(
        `truncated ciphertext: ${this.headerLen} bytes, shorter than the ${HEADER_LEN}-byte header`,
      );
    }
    if (this.currentLen > 0) await this.dispatch();
    while (this.inFlight.length > 0) this.push(await this.inFlight.shift());
  }
}
