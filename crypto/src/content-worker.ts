/**
 * Worker thread of ContentWorkerPool. A task either seals/opens a chunk of consecutive blocks
 * handed over in memory (streams), or reads a block range from one open file and writes the
 * result at its final offset in another (whole files: no copies through the main thread).
 * Errors travel back as plain data because thrown errors lose their class crossing threads.
 */
import { createHash } from 'node:crypto';
import { readSync, writeSync } from 'node:fs';
import { move } from 'piscina';
import { ContentCipher, PLAIN_BLOCK, blockCipherOffset } from './contentenc.js';
import { CryptoError, FormatError } from './errors.js';
import type { CryptoErrorCode } from './errors.js';

interface TaskBase {
  op: 'encrypt' | 'decrypt';
  key: Uint8Array;
  fileId: Uint8Array;
  firstBlockNo: number;
}

/** Blocks in memory; the result is the output bytes. */
export interface ContentTask extends TaskBase {
  data: Uint8Array;
}

/** `length` input bytes of block range at `firstBlockNo`, read from `srcFd`, written to `dstFd`. */
export interface ContentFileTask extends TaskBase {
  srcFd: number;
  dstFd: number;
  length: number;
}

/**
 * `length` plaintext bytes of the block range at `firstBlockNo`, read from `srcFd` and sealed.
 * The result is the ciphertext followed by the 32-byte SHA-256 of `hashPrefix` and the
 * ciphertext (one transferable buffer), so a caller that must hash what it sends spends no time
 * of its own on it.
 */
export interface ContentSealTask extends TaskBase {
  op: 'encrypt';
  srcFd: number;
  length: number;
  hashPrefix: Uint8Array;
}

/** Output bytes (transferred, not copied), bytes written for a file task, or a typed error. */
export type ContentTaskResult = Uint8Array | number | { code: CryptoErrorCode; message: string };

/**
 * Per-thread input and output buffers, reused across file tasks: a fresh 1 MiB buffer per task
 * means fresh pages, and page faults serialise the threads on the process's memory map lock.
 */
const SHA256_LEN = 32;

let inBuf: Buffer = Buffer.alloc(0);
let outBuf: Buffer = Buffer.alloc(0);

function scratch(buf: Buffer, length: number): Buffer {
  return buf.length >= length ? buf : Buffer.allocUnsafeSlow(length);
}

function readExact(fd: number, length: number, position: number): Buffer {
  inBuf = scratch(inBuf, length);
  const buf = inBuf.subarray(0, length);
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buf, got, length - got, position + got);
    if (n === 0) throw new FormatError('input file ended early: it changed while being processed');
    got += n;
  }
  return buf;
}

function writeAll(fd: number, data: Buffer, position: number): void {
  let done = 0;
  while (done < data.length) done += writeSync(fd, data, done, data.length - done, position + done);
}

function runFile(cipher: ContentCipher, task: ContentFileTask): number {
  const encrypt = task.op === 'encrypt';
  const inPos = encrypt ? task.firstBlockNo * PLAIN_BLOCK : blockCipherOffset(task.firstBlockNo);
  const outPos = encrypt ? blockCipherOffset(task.firstBlockNo) : task.firstBlockNo * PLAIN_BLOCK;
  const input = readExact(task.srcFd, task.length, inPos);
  const outLen = encrypt
    ? ContentCipher.blocksCipherLength(input.length)
    : ContentCipher.blocksPlainLength(input.length);
  outBuf = scratch(outBuf, outLen);
  const output = encrypt
    ? cipher.encryptBlocks(input, task.firstBlockNo, task.fileId, outBuf)
    : cipher.decryptBlocks(input, task.firstBlockNo, task.fileId, outBuf);
  writeAll(task.dstFd, output, outPos);
  return output.length;
}

function runSeal(cipher: ContentCipher, task: ContentSealTask): Uint8Array {
  const input = readExact(task.srcFd, task.length, task.firstBlockNo * PLAIN_BLOCK);
  const len = ContentCipher.blocksCipherLength(input.length);
  // A buffer of its own (never a slice of Node's shared pool), so it can be transferred.
  const out = Buffer.allocUnsafeSlow(len + SHA256_LEN);
  const sealed = cipher.encryptBlocks(input, task.firstBlockNo, task.fileId, out.subarray(0, len));
  createHash('sha256').update(task.hashPrefix).update(sealed).digest().copy(out, len);
  return move(out) as Uint8Array;
}

export default function run(
  task: ContentTask | ContentFileTask | ContentSealTask,
): ContentTaskResult {
  let cipher: ContentCipher | undefined;
  try {
    cipher = new ContentCipher(task.key);
    if ('hashPrefix' in task) return runSeal(cipher, task);
    if (!('data' in task)) return runFile(cipher, task);
    const len =
      task.op === 'encrypt'
        ? ContentCipher.blocksCipherLength(task.data.length)
        : ContentCipher.blocksPlainLength(task.data.length);
    // A buffer of its own (never a slice of Node's shared pool), so it can be transferred.
    const out = Buffer.allocUnsafeSlow(len);
    if (task.op === 'encrypt') cipher.encryptBlocks(task.data, task.firstBlockNo, task.fileId, out);
    else cipher.decryptBlocks(task.data, task.firstBlockNo, task.fileId, out);
    return move(out) as Uint8Array;
  } catch (err) {
    if (err instanceof CryptoError) return { code: err.code, message: err.message };
    throw err;
  } finally {
    cipher?.destroy();
  }
}
