/**
 * gocryptfs v2 file content format.
 *
 *   file   = "" | header block*        (an empty file has no header)
 *   header = uint16 BE version (2) | 16-byte random file ID
 *   block  = 16-byte random nonce | AES-256-GCM(plaintext <= 4096 bytes) | 16-byte tag
 *   AAD    = uint64 BE block number | file ID
 *
 * The AAD binds every block to its position and its file, so blocks cannot be reordered,
 * moved between files or spliced from another version of the header. A full-size block of
 * zero bytes is a file hole (sparse region) and reads as 4096 zero bytes, as in gocryptfs.
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomFillSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { deriveSubkey } from './cryptocore.js';
import {
  AuthenticationError,
  FormatError,
  InvalidArgumentError,
  UnsupportedError,
} from './errors.js';
import { defaultContentEngine, nativeContentGcm, nativeContentStatus } from './native.js';
import type { ContentEngine, NativeContentGcm, NativeKey } from './native.js';

export const HEADER_VERSION = 2;
export const FILE_ID_LEN = 16;
export const HEADER_LEN = 2 + FILE_ID_LEN;
export const NONCE_LEN = 16;
export const TAG_LEN = 16;
export const PLAIN_BLOCK = 4096;
export const BLOCK_OVERHEAD = NONCE_LEN + TAG_LEN;
export const CIPHER_BLOCK = PLAIN_BLOCK + BLOCK_OVERHEAD;

const ZERO_NONCE = Buffer.alloc(NONCE_LEN);
const ZERO_CIPHER_BLOCK = Buffer.alloc(CIPHER_BLOCK);
const TWO_POW_32 = 0x1_0000_0000;

function assertSize(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new InvalidArgumentError(`${what} must be a non-negative safe integer, got ${n}`);
  }
}

/** Ciphertext size of a file with `plainSize` bytes of content. */
export function plainSizeToCipherSize(plainSize: number): number {
  assertSize(plainSize, 'plaintext size');
  if (plainSize === 0) return 0;
  return HEADER_LEN + plainSize + Math.ceil(plainSize / PLAIN_BLOCK) * BLOCK_OVERHEAD;
}

/**
 * Plaintext size of a ciphertext file of `cipherSize` bytes. A header-only file (18 bytes) is
 * what an interrupted first write leaves behind; gocryptfs reads it as empty, so do we. Sizes
 * no encryption can produce (a partial header, a last block without room for one byte of
 * content) are rejected with FormatError.
 */
export function cipherSizeToPlainSize(cipherSize: number): number {
  assertSize(cipherSize, 'ciphertext size');
  if (cipherSize === 0) return 0;
  if (cipherSize < HEADER_LEN) {
    throw new FormatError(
      `ciphertext size ${cipherSize} is shorter than the ${HEADER_LEN}-byte header`,
    );
  }
  const body = cipherSize - HEADER_LEN;
  const fullBlocks = Math.floor(body / CIPHER_BLOCK);
  const rest = body % CIPHER_BLOCK;
  if (rest !== 0 && rest <= BLOCK_OVERHEAD) {
    throw new FormatError(
      `ciphertext size ${cipherSize} is impossible: its last block has ${rest} bytes, at least ${BLOCK_OVERHEAD + 1} needed`,
    );
  }
  return fullBlocks * PLAIN_BLOCK + (rest === 0 ? 0 : rest - BLOCK_OVERHEAD);
}

/** Byte offset of block `blockNo` in a ciphertext file. */
export function blockCipherOffset(blockNo: number): number {
  return HEADER_LEN + blockNo * CIPHER_BLOCK;
}

/** A new header with a random file ID (or the given one). */
export function createHeader(fileId?: Uint8Array): Buffer {
  const header = Buffer.alloc(HEADER_LEN);
  header.writeUInt16BE(HEADER_VERSION, 0);
  if (fileId === undefined) {
    randomFillSync(header, 2, FILE_ID_LEN);
  } else {
    if (fileId.length !== FILE_ID_LEN) {
      throw new InvalidArgumentError(`file ID must be ${FILE_ID_LEN} bytes, got ${fileId.length}`);
    }
    header.set(fileId, 2);
  }
  return header;
}

/**
 * Validates a header and returns (a copy of) its file ID. The header carries no tag of its
 * own: a changed file ID is caught by every block's AAD, a changed version or an all-zero ID
 * (what gocryptfs also rejects) here.
 */
export function parseHeader(header: Uint8Array): Buffer {
  if (header.length !== HEADER_LEN) {
    throw new FormatError(`file header must be ${HEADER_LEN} bytes, got ${header.length}`);
  }
  const buf = Buffer.from(header.buffer, header.byteOffset, header.byteLength);
  const version = buf.readUInt16BE(0);
  if (version !== HEADER_VERSION) {
    throw new AuthenticationError(
      `file header has version ${version}, expected ${HEADER_VERSION}: corrupted or not a gocryptfs v2 file`,
    );
  }
  const fileId = Buffer.from(buf.subarray(2));
  if (fileId.equals(ZERO_NONCE)) {
    throw new AuthenticationError('file header has an all-zero file ID: corrupted file');
  }
  return fileId;
}

/** True for a full-size all-zero ciphertext block, i.e. a file hole. */
export function isHole(cipherBlock: Uint8Array): boolean {
  return (
    cipherBlock.length === CIPHER_BLOCK &&
    Buffer.from(cipherBlock.buffer, cipherBlock.byteOffset, cipherBlock.byteLength).equals(
      ZERO_CIPHER_BLOCK,
    )
  );
}

function zeroNonceError(blockNo: number): AuthenticationError {
  return new AuthenticationError(`block ${blockNo} has an all-zero nonce: corrupted file`);
}

function tagError(blockNo: number): AuthenticationError {
  return new AuthenticationError(
    `block ${blockNo} failed authentication: corrupted or tampered file, or wrong key`,
  );
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

export interface ContentCipherOptions {
  /** Which engine seals and opens blocks; defaultContentEngine() when not given. */
  engine?: ContentEngine;
}

/**
 * Block encryption under one file key (a gocryptfs master key, or a per-file DEK in its
 * place). The AES-GCM subkey is derived with HKDF exactly as gocryptfs derives it.
 *
 * The native engine seals a whole run of blocks in one call with one OpenSSL context per key.
 * The pure-JS engine must pay one createCipheriv per block (Node's cipher objects cannot take a
 * new IV) and amortises everything else: one random fill for all nonces, one AAD buffer, one
 * output allocation. Both write the same bytes for the same nonces.
 */
export class ContentCipher {
  readonly engine: ContentEngine;
  private key: KeyObject | undefined;
  private native: { addon: NativeContentGcm; key: NativeKey } | undefined;
  private destroyed = false;
  private readonly aad = Buffer.alloc(8 + FILE_ID_LEN);
  private nonceViews: Uint8Array[] = [];

  constructor(key: Uint8Array, opts: ContentCipherOptions = {}) {
    this.engine = opts.engine ?? defaultContentEngine();
    if (this.engine !== 'native' && this.engine !== 'js') {
      throw new InvalidArgumentError(`unknown content engine ${String(this.engine)}`);
    }
    if (this.engine === 'native' && nativeContentGcm === undefined) {
      throw new UnsupportedError(
        `native content engine unavailable: ${nativeContentStatus().reason}`,
      );
    }
    const subkey = deriveSubkey(key, 'content');
    try {
      if (this.engine === 'native') {
        const addon = nativeContentGcm as NativeContentGcm;
        this.native = { addon, key: addon.createKey(subkey) };
      } else {
        this.key = createSecretKey(subkey);
      }
    } finally {
      subkey.fill(0);
    }
  }

  /**
   * Frees the key now: the native engine wipes its OpenSSL contexts, the JS engine drops its
   * KeyObject (whose memory Node wipes when it is collected). Later calls throw.
   */
  destroy(): void {
    if (this.native !== undefined) this.native.addon.destroyKey(this.native.key);
    this.native = undefined;
    this.key = undefined;
    this.destroyed = true;
  }

  /** `count` fresh random nonces from one RNG call, as views reused across calls. */
  private takeNonces(count: number): Uint8Array[] {
    if (count === 0) return [];
    if (this.nonceViews.length < count) {
      const pool = new Uint8Array(count * NONCE_LEN);
      this.nonceViews = Array.from({ length: count }, (_, i) =>
        pool.subarray(i * NONCE_LEN, (i + 1) * NONCE_LEN),
      );
    }
    const first = this.nonceViews[0] as Uint8Array;
    randomFillSync(new Uint8Array(first.buffer, first.byteOffset, count * NONCE_LEN));
    return this.nonceViews;
  }

  /** Writes the uint64 BE block number in front of the file ID already in the AAD buffer. */
  private setAad(blockNo: number): void {
    this.aad.writeUInt32BE(Math.floor(blockNo / TWO_POW_32), 0);
    this.aad.writeUInt32BE(blockNo >>> 0, 4);
  }

  private checkArgs(firstBlockNo: number, fileId: Uint8Array): void {
    if (this.destroyed) throw new InvalidArgumentError('this content cipher was destroyed');
    assertSize(firstBlockNo, 'block number');
    if (fileId.length !== FILE_ID_LEN) {
      throw new InvalidArgumentError(`file ID must be ${FILE_ID_LEN} bytes, got ${fileId.length}`);
    }
  }

  /** Ciphertext length of `plainLen` bytes of blocks (no header). */
  static blocksCipherLength(plainLen: number): number {
    return plainLen + Math.ceil(plainLen / PLAIN_BLOCK) * BLOCK_OVERHEAD;
  }

  /** Plaintext length of `cipherLen` bytes of blocks (no header); rejects impossible lengths. */
  static blocksPlainLength(cipherLen: number): number {
    const rest = cipherLen % CIPHER_BLOCK;
    if (rest !== 0 && rest <= BLOCK_OVERHEAD) {
      throw new FormatError(
        `truncated ciphertext: last block has ${rest} bytes, at least ${BLOCK_OVERHEAD + 1} needed`,
      );
    }
    return cipherLen - Math.ceil(cipherLen / CIPHER_BLOCK) * BLOCK_OVERHEAD;
  }

  /**
   * Encrypts consecutive blocks starting at block `firstBlockNo`; only the last may be short.
   * Writes into `out` at `outOffset` when given (it must have room and must not overlap
   * `plain`), else allocates. `nonces` (16 bytes per block) replaces the random ones, for
   * known-answer tests only: a nonce must never be used twice under one key.
   */
  encryptBlocks(
    plain: Uint8Array,
    firstBlockNo: number,
    fileId: Uint8Array,
    out?: Buffer,
    outOffset = 0,
    nonces?: Uint8Array,
  ): Buffer {
    this.checkArgs(firstBlockNo, fileId);
    assertSize(outOffset, 'output offset');
    const count = Math.ceil(plain.length / PLAIN_BLOCK);
    const outLen = plain.length + count * BLOCK_OVERHEAD;
    if (nonces !== undefined && nonces.length !== count * NONCE_LEN) {
      throw new InvalidArgumentError(
        `nonces must be ${count * NONCE_LEN} bytes, got ${nonces.length}`,
      );
    }
    const dst = out ?? Buffer.allocUnsafe(outLen);
    if (dst.length - outOffset < outLen) {
      throw new InvalidArgumentError(`output buffer too small: need ${outLen} bytes`);
    }
    if (this.native !== undefined) {
      const { addon, key } = this.native;
      addon.seal(key, fileId, firstBlockNo, plain, dst, outOffset, nonces ?? null);
      return out === undefined ? dst : dst.subarray(outOffset, outOffset + outLen);
    }
    const src = asBuffer(plain);
    const nonceViews =
      nonces === undefined
        ? this.takeNonces(count)
        : Array.from({ length: count }, (_, i) =>
            nonces.subarray(i * NONCE_LEN, (i + 1) * NONCE_LEN),
          );
    this.aad.set(fileId, 8);
    // Plain Uint8Array views: Buffer#subarray costs a subclass construction per call, which is
    // measurable at two per 4 KiB block.
    const base = src.byteOffset;
    let o = outOffset;
    for (let i = 0; i < count; i++) {
      this.setAad(firstBlockNo + i);
      const nonce = nonceViews[i] as Uint8Array;
      const len = Math.min(PLAIN_BLOCK, src.length - i * PLAIN_BLOCK);
      const cipher = createCipheriv('aes-256-gcm', this.key as KeyObject, nonce);
      cipher.setAAD(this.aad);
      const ct = cipher.update(new Uint8Array(src.buffer, base + i * PLAIN_BLOCK, len));
      cipher.final();
      dst.set(nonce, o);
      dst.set(ct, o + NONCE_LEN);
      dst.set(cipher.getAuthTag(), o + NONCE_LEN + len);
      o += len + BLOCK_OVERHEAD;
    }
    return out === undefined ? dst : dst.subarray(outOffset, o);
  }

  /**
   * Decrypts consecutive ciphertext blocks starting at block `firstBlockNo`; only the last
   * may be short. A full all-zero block is a hole and yields zeros. Throws AuthenticationError
   * on any failed tag; the whole output range in `out` is zeroed first, so no plaintext of a
   * failed run is left behind.
   */
  decryptBlocks(
    cipherText: Uint8Array,
    firstBlockNo: number,
    fileId: Uint8Array,
    out?: Buffer,
    outOffset = 0,
  ): Buffer {
    this.checkArgs(firstBlockNo, fileId);
    assertSize(outOffset, 'output offset');
    const src = asBuffer(cipherText);
    const outLen = ContentCipher.blocksPlainLength(src.length);
    const dst = out ?? Buffer.allocUnsafe(outLen);
    if (dst.length - outOffset < outLen) {
      throw new InvalidArgumentError(`output buffer too small: need ${outLen} bytes`);
    }
    if (this.native !== undefined) {
      const { addon, key } = this.native;
      const status = addon.open(key, fileId, firstBlockNo, src, dst, outOffset);
      if (status < 0) {
        const fail = -status - 1;
        const blockNo = firstBlockNo + Math.floor(fail / 2);
        throw fail % 2 === 1 ? zeroNonceError(blockNo) : tagError(blockNo);
      }
      return out === undefined ? dst : dst.subarray(outOffset, outOffset + outLen);
    }
    this.aad.set(fileId, 8);
    let o = outOffset;
    const buf = src.buffer;
    const base = src.byteOffset;
    for (let s = 0, blockNo = firstBlockNo; s < src.length; s += CIPHER_BLOCK, blockNo++) {
      const blockLen = Math.min(CIPHER_BLOCK, src.length - s);
      const plainLen = blockLen - BLOCK_OVERHEAD;
      const nonce = new Uint8Array(buf, base + s, NONCE_LEN);
      if (ZERO_NONCE.equals(nonce)) {
        if (!isHole(new Uint8Array(buf, base + s, blockLen))) {
          dst.fill(0, outOffset, outOffset + outLen);
          throw zeroNonceError(blockNo);
        }
        dst.fill(0, o, o + PLAIN_BLOCK);
        o += PLAIN_BLOCK;
        continue;
      }
      this.setAad(blockNo);
      const decipher = createDecipheriv('aes-256-gcm', this.key as KeyObject, nonce);
      decipher.setAAD(this.aad);
      decipher.setAuthTag(new Uint8Array(buf, base + s + NONCE_LEN + plainLen, TAG_LEN));
      const pt = decipher.update(new Uint8Array(buf, base + s + NONCE_LEN, plainLen));
      try {
        decipher.final();
      } catch {
        pt.fill(0);
        dst.fill(0, outOffset, outOffset + outLen);
        throw tagError(blockNo);
      }
      dst.set(pt, o);
      o += plainLen;
    }
    return out === undefined ? dst : dst.subarray(outOffset, o);
  }

  /** Encrypts one block (<= 4096 bytes) at position `blockNo`. */
  encryptBlock(plain: Uint8Array, blockNo: number, fileId: Uint8Array): Buffer {
    if (plain.length === 0 || plain.length > PLAIN_BLOCK) {
      throw new InvalidArgumentError(`a block holds 1..${PLAIN_BLOCK} bytes, got ${plain.length}`);
    }
    return this.encryptBlocks(plain, blockNo, fileId);
  }

  /** Decrypts one ciphertext block at position `blockNo`. */
  decryptBlock(cipherBlock: Uint8Array, blockNo: number, fileId: Uint8Array): Buffer {
    if (cipherBlock.length > CIPHER_BLOCK) {
      throw new InvalidArgumentError(
        `a ciphertext block holds at most ${CIPHER_BLOCK} bytes, got ${cipherBlock.length}`,
      );
    }
    if (cipherBlock.length === 0) throw new FormatError('empty ciphertext block');
    return this.decryptBlocks(cipherBlock, blockNo, fileId);
  }
}
