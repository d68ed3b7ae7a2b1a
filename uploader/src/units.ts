/**
 * Resume units: the granularity at which an upload is stored, resumed and hashed.
 *
 * gocryptfs ciphertext carries a random nonce per block, so a block encrypted twice never has
 * the same bytes. A resumed upload therefore must continue exactly where the server's copy
 * ends, at a block boundary, with the same file ID and DEK. The server keeps only whole units
 * of UNIT_BLOCKS blocks (a torn unit from a cut connection is dropped), the client hashes
 * each unit before sending it, and the file's digest is a hash over the unit hashes, which
 * either side can compute without ever holding the whole ciphertext of an interrupted upload.
 */
import { createHash } from 'node:crypto';
import { CIPHER_BLOCK, HEADER_LEN, PLAIN_BLOCK, plainSizeToCipherSize } from '@tre/crypto';

/** 256 blocks: 1 MiB of plaintext, 1,056,768 bytes of ciphertext per unit. */
export const UNIT_BLOCKS = 256;
export const UNIT_PLAIN = UNIT_BLOCKS * PLAIN_BLOCK;
export const UNIT_CIPHER = UNIT_BLOCKS * CIPHER_BLOCK;

export function cipherSize(plainSize: number): number {
  return plainSizeToCipherSize(plainSize);
}

/** Number of units of a ciphertext of `total` bytes (the header belongs to unit 0). */
export function unitCount(total: number): number {
  return total === 0 ? 0 : Math.ceil((total - HEADER_LEN) / UNIT_CIPHER);
}

/** Ciphertext offset where unit `k` starts (unit 0 starts with the header). */
export function unitStart(k: number): number {
  return k === 0 ? 0 : HEADER_LEN + k * UNIT_CIPHER;
}

/** Ciphertext offset where unit `k` ends, capped at the file end. */
export function unitEnd(k: number, total: number): number {
  return Math.min(total, HEADER_LEN + (k + 1) * UNIT_CIPHER);
}

/** True if `offset` is where a unit starts, or the end of the file. */
export function isBoundary(offset: number, total: number): boolean {
  if (offset === 0 || offset === total) return true;
  return offset > HEADER_LEN && offset < total && (offset - HEADER_LEN) % UNIT_CIPHER === 0;
}

/** The last unit boundary at or before `offset`. */
export function alignDown(offset: number, total: number): number {
  if (offset >= total) return total;
  if (offset < HEADER_LEN + UNIT_CIPHER) return 0;
  return HEADER_LEN + Math.floor((offset - HEADER_LEN) / UNIT_CIPHER) * UNIT_CIPHER;
}

/** Index of the unit that starts at boundary `offset` (or unitCount at the file end). */
export function unitAt(offset: number, total: number): number {
  if (offset >= total) return unitCount(total);
  return offset === 0 ? 0 : (offset - HEADER_LEN) / UNIT_CIPHER;
}

/** SHA-256 of one unit, given whole or as consecutive pieces. */
export function unitHash(unit: Uint8Array | readonly Uint8Array[]): string {
  const h = createHash('sha256');
  if (unit instanceof Uint8Array) h.update(unit);
  else for (const piece of unit) h.update(piece);
  return h.digest('hex');
}

/**
 * The file digest: SHA-256 over a domain label, the ciphertext size and every unit's SHA-256.
 * This is what the KMS records as the file's sha256.
 */
export function fileDigest(total: number, unitHashes: readonly string[]): string {
  const h = createHash('sha256').update('tre-upload-digest/v1\0');
  const size = Buffer.alloc(8);
  size.writeBigUInt64BE(BigInt(total));
  h.update(size);
  for (const u of unitHashes) h.update(Buffer.from(u, 'hex'));
  return h.digest('hex');
}

/** Streams a stored ciphertext file and computes its digest. */
export async function digestOfStream(
  total: number,
  chunks: AsyncIterable<Buffer>,
): Promise<string> {
  const hashes: string[] = [];
  let k = 0;
  let h = createHash('sha256');
  let pos = 0;
  let end = unitEnd(0, total);
  for await (const chunk of chunks) {
    let off = 0;
    while (off < chunk.length) {
      const take = Math.min(chunk.length - off, end - pos);
      if (take <= 0) throw new Error(`stored file is longer than its declared ${total} bytes`);
      h.update(chunk.subarray(off, off + take));
      off += take;
      pos += take;
      if (pos === end) {
        hashes.push(h.digest('hex'));
        h = createHash('sha256');
        k++;
        end = unitEnd(k, total);
      }
    }
  }
  if (pos !== total) throw new Error(`stored file has ${pos} bytes, declared ${total}`);
  return fileDigest(total, hashes);
}
