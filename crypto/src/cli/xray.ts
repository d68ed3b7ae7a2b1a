/**
 * The header and block layout of one encrypted file, printed line for line as
 * `gocryptfs-xray FILE` prints it (AES-GCM volumes), so the two can be diffed.
 */
import { open } from 'node:fs/promises';
import {
  BLOCK_OVERHEAD,
  CIPHER_BLOCK,
  HEADER_LEN,
  NONCE_LEN,
  TAG_LEN,
  parseHeader,
} from '../contentenc.js';
import { FormatError } from '../errors.js';

export async function xray(path: string, print: (line: string) => void): Promise<void> {
  const fh = await open(path, 'r');
  try {
    const header = Buffer.alloc(HEADER_LEN);
    const { bytesRead } = await fh.read(header, 0, HEADER_LEN, 0);
    if (bytesRead === 0) {
      print('empty file');
      return;
    }
    if (bytesRead < HEADER_LEN) {
      throw new FormatError(`incomplete file header: read ${bytesRead} bytes, want ${HEADER_LEN}`);
    }
    if (header.every((b) => b === 0)) throw new FormatError('file header is all zero');
    const fileId = parseHeader(header);
    print(`Header: Version: 2, Id: ${fileId.toString('hex')}, assuming AES-GCM-256 mode`);
    const block = Buffer.alloc(CIPHER_BLOCK);
    for (let i = 0; ; i++) {
      const off = HEADER_LEN + i * CIPHER_BLOCK;
      const { bytesRead: n } = await fh.read(block, 0, CIPHER_BLOCK, off);
      if (n === 0) break;
      // A block holds at least the nonce, the tag and one data byte.
      if (n < BLOCK_OVERHEAD + 1) throw new FormatError(`corrupt block: truncated data, len=${n}`);
      const iv = block.subarray(0, NONCE_LEN).toString('hex');
      const tag = block.subarray(n - TAG_LEN, n).toString('hex');
      print(
        `Block ${String(i).padStart(2)}: IV: ${iv}, Tag: ${tag}, Offset: ${String(off).padStart(5)} Len: ${n}`,
      );
    }
  } finally {
    await fh.close();
  }
}
