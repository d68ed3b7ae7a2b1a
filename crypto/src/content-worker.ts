/**
 * Worker thread of ContentWorkerPool: encrypts or decrypts one chunk of consecutive blocks.
 * Errors travel back as plain data because thrown errors lose their class crossing threads.
 */
import { move } from 'piscina';
import { ContentCipher } from './contentenc.js';
import { CryptoError } from './errors.js';
import type { CryptoErrorCode } from './errors.js';

export interface ContentTask {
  op: 'encrypt' | 'decrypt';
  key: Uint8Array;
  fileId: Uint8Array;
  firstBlockNo: number;
  data: Uint8Array;
}

/** The output bytes (transferred, not copied), or the typed error that stopped the task. */
export type ContentTaskResult = Uint8Array | { code: CryptoErrorCode; message: string };

export default function run(task: ContentTask): ContentTaskResult {
  try {
    const cipher = new ContentCipher(task.key);
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
  }
}
