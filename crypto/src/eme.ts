/**
 * AES-256-EME (ECB-Mix-ECB), the wide-block tweakable cipher of Halevi and Rogaway ("A
 * Parallelizable Enciphering Mode", 2003) as gocryptfs uses it for file names. Byte-compatible
 * with github.com/rfjakob/eme: the same GF(2^128) doubling, the same L table, and the same
 * "decrypt = run the algorithm with AES decryption" symmetry.
 *
 * Both ECB passes are batched into one OpenSSL call each, so a 256-byte name costs three
 * native calls rather than 33.
 */
import { createCipheriv, createDecipheriv, type Cipher, type Decipher } from 'node:crypto';
import { InvalidArgumentError } from './errors.js';

const BLOCK = 16;
/** The EME limit: at most 16 * 8 = 128 cipher blocks (2048 bytes) per transform. */
export const EME_MAX_BLOCKS = 128;

/** Multiplication by x in GF(2^128) with the byte order rfjakob/eme uses (little-endian). */
function multByTwo(out: Uint8Array, input: Uint8Array): void {
  const carryIn = input[15]! >= 128;
  for (let j = 15; j >= 1; j--) {
    out[j] = ((input[j]! << 1) | (input[j - 1]! >> 7)) & 0xff;
  }
  out[0] = ((input[0]! << 1) & 0xff) ^ (carryIn ? 135 : 0);
}

function xorInto(dst: Uint8Array, dstOff: number, a: Uint8Array, aOff: number): void {
  for (let i = 0; i < BLOCK; i++) dst[dstOff + i]! ^= a[aOff + i]!;
}

type Direction = 'encrypt' | 'decrypt';

/** One AES-256 key used in both directions; reusable for any number of transforms. */
export class EmeCipher {
  readonly #enc: Cipher;
  readonly #dec: Decipher;
  /** L_j = 2^(j+1) * AES(K, 0^128) for j = 0..127. */
  readonly #lTable: Buffer;

  constructor(key: Uint8Array) {
    if (key.length !== 32) {
      throw new InvalidArgumentError(`EME key must be 32 bytes, got ${key.length}`);
    }
    // ECB without padding is a stateless block transform: update() can be called forever.
    this.#enc = createCipheriv('aes-256-ecb', key, null).setAutoPadding(false);
    this.#dec = createDecipheriv('aes-256-ecb', key, null).setAutoPadding(false);
    const li = this.#enc.update(Buffer.alloc(BLOCK));
    this.#lTable = Buffer.alloc(EME_MAX_BLOCKS * BLOCK);
    for (let j = 0; j < EME_MAX_BLOCKS; j++) {
      multByTwo(li, li);
      li.copy(this.#lTable, j * BLOCK);
    }
  }

  encrypt(tweak: Uint8Array, data: Uint8Array): Buffer {
    return this.#transform(tweak, data, 'encrypt');
  }

  decrypt(tweak: Uint8Array, data: Uint8Array): Buffer {
    return this.#transform(tweak, data, 'decrypt');
  }

  #aes(data: Buffer, direction: Direction): Buffer {
    const out = direction === 'encrypt' ? this.#enc.update(data) : this.#dec.update(data);
    if (out.length !== data.length) {
      throw new Error('AES-ECB returned a short block');
    }
    return out;
  }

  #transform(tweak: Uint8Array, data: Uint8Array, direction: Direction): Buffer {
    if (tweak.length !== BLOCK) {
      throw new InvalidArgumentError(`EME tweak must be ${BLOCK} bytes, got ${tweak.length}`);
    }
    const m = data.length / BLOCK;
    if (!Number.isInteger(m) || m < 1 || m > EME_MAX_BLOCKS) {
      throw new InvalidArgumentError(
        `EME input must be 1 to ${EME_MAX_BLOCKS} blocks of ${BLOCK} bytes, got ${data.length} bytes`,
      );
    }
    const lTable = this.#lTable;

    // PPj = Pj xor L_j; PPPj = AES(K, PPj)
    const pp = Buffer.from(data);
    for (let j = 0; j < m; j++) xorInto(pp, j * BLOCK, lTable, j * BLOCK);
    const c = this.#aes(pp, direction);

    // MP = (xor of all PPPj) xor T; MC = AES(K, MP); M = MP xor MC
    const mp = Buffer.from(tweak);
    for (let j = 0; j < m; j++) xorInto(mp, 0, c, j * BLOCK);
    const mc = this.#aes(mp, direction);
    const mask = Buffer.from(mp);
    xorInto(mask, 0, mc, 0);

    // CCCj = PPPj xor 2^(j-1) * M for j >= 1
    for (let j = 1; j < m; j++) {
      multByTwo(mask, mask);
      xorInto(c, j * BLOCK, mask, 0);
    }

    // CCC1 = (xor of CCCj, j >= 1) xor T xor MC
    const ccc1 = Buffer.from(mc);
    xorInto(ccc1, 0, tweak, 0);
    for (let j = 1; j < m; j++) xorInto(ccc1, 0, c, j * BLOCK);
    ccc1.copy(c, 0);

    // Cj = AES(K, CCCj) xor L_j
    const out = this.#aes(c, direction);
    for (let j = 0; j < m; j++) xorInto(out, j * BLOCK, lTable, j * BLOCK);
    return out;
  }
}
