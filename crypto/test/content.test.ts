/**
 * gocryptfs v2 content format: the documented layout, size conversions, streaming round trips
 * for any size and any way of cutting the input, and tamper detection (every single flipped
 * bit, reordered and truncated blocks).
 */
import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import {
  BLOCK_OVERHEAD,
  CIPHER_BLOCK,
  ContentCipher,
  HEADER_LEN,
  PLAIN_BLOCK,
  cipherSizeToPlainSize,
  createHeader,
  parseHeader,
  plainSizeToCipherSize,
} from '../src/contentenc.js';
import { createDecryptStream, createEncryptStream } from '../src/content-stream.js';
import { AuthenticationError, FormatError, InvalidArgumentError } from '../src/errors.js';

const KEY = randomBytes(32);

/** Feeds `data` to `transform` in the given pieces and collects the output. */
async function run(
  transform: NodeJS.ReadWriteStream,
  data: Buffer,
  cuts: number[] = [],
): Promise<Buffer> {
  const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, data.length]) {
    if (p > prev) pieces.push(data.subarray(prev, p));
    prev = Math.max(prev, p);
  }
  return buffer(Readable.from(pieces).pipe(transform));
}

const encrypt = (data: Buffer, cuts?: number[]) => run(createEncryptStream(KEY), data, cuts);
const decrypt = (data: Buffer, cuts?: number[], key: Buffer = KEY) =>
  run(createDecryptStream(key), data, cuts);

describe('layout (gocryptfs documentation and source)', () => {
  it.each([
    [0, 0],
    [1, 51],
    [4095, HEADER_LEN + 4095 + 32],
    [4096, HEADER_LEN + 4128],
    [4097, HEADER_LEN + 4128 + 33],
    [5000, 5082],
    [8192, HEADER_LEN + 2 * 4128],
    [1024 * 1024 + 3, HEADER_LEN + 256 * 4128 + 35],
  ])(
    'plaintext %i bytes <-> ciphertext %i bytes',
    async (plain, cipher) => {
      expect(plainSizeToCipherSize(plain)).toBe(cipher);
      expect(cipherSizeToPlainSize(cipher)).toBe(plain);
      const ct = await encrypt(randomBytes(plain));
      expect(ct.length).toBe(cipher);
    },
    60_000,
  );

  it('has the constants gocryptfs uses', () => {
    expect([HEADER_LEN, PLAIN_BLOCK, CIPHER_BLOCK, BLOCK_OVERHEAD]).toEqual([18, 4096, 4128, 32]);
  }, 60_000);

  it('writes header version 2 and a random file ID, and block 0 carries its own nonce', async () => {
    const a = await encrypt(Buffer.from('x'));
    const b = await encrypt(Buffer.from('x'));
    expect(a.readUInt16BE(0)).toBe(2);
    expect(a.subarray(2, 18).equals(b.subarray(2, 18))).toBe(false);
    expect(a.subarray(18, 34).equals(b.subarray(18, 34))).toBe(false);
  }, 60_000);

  it('a header-only file (interrupted first write) reads as empty, as in gocryptfs', async () => {
    expect(cipherSizeToPlainSize(HEADER_LEN)).toBe(0);
    expect((await decrypt(createHeader())).length).toBe(0);
  }, 60_000);

  it('rejects ciphertext sizes no encryption can produce', () => {
    for (const bad of [1, 17, HEADER_LEN + 1, HEADER_LEN + 32, HEADER_LEN + CIPHER_BLOCK + 32]) {
      expect(() => cipherSizeToPlainSize(bad)).toThrow(FormatError);
    }
    expect(cipherSizeToPlainSize(HEADER_LEN + 33)).toBe(1);
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 60]) {
      expect(() => cipherSizeToPlainSize(bad)).toThrow(InvalidArgumentError);
      expect(() => plainSizeToCipherSize(bad)).toThrow(InvalidArgumentError);
    }
  }, 60_000);

  it('size conversions are inverse for any size', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 45 }), (n) => {
        expect(cipherSizeToPlainSize(plainSizeToCipherSize(n))).toBe(n);
      }),
    );
  }, 60_000);

  it('rejects malformed headers and keys', () => {
    expect(() => parseHeader(Buffer.alloc(17))).toThrow(FormatError);
    const zeroId = Buffer.alloc(HEADER_LEN);
    zeroId.writeUInt16BE(2, 0);
    expect(() => parseHeader(zeroId)).toThrow(AuthenticationError);
    const v1 = createHeader();
    v1.writeUInt16BE(1, 0);
    expect(() => parseHeader(v1)).toThrow(AuthenticationError);
    expect(() => createEncryptStream(Buffer.alloc(16))).toThrow(InvalidArgumentError);
  }, 60_000);
});

describe('block cipher', () => {
  const cipher = new ContentCipher(KEY);
  const fileId = randomBytes(16);

  it('binds each block to its number and file ID', () => {
    const ct = cipher.encryptBlock(Buffer.from('hello'), 7, fileId);
    expect(cipher.decryptBlock(ct, 7, fileId).toString()).toBe('hello');
    expect(() => cipher.decryptBlock(ct, 8, fileId)).toThrow(AuthenticationError);
    expect(() => cipher.decryptBlock(ct, 7, randomBytes(16))).toThrow(AuthenticationError);
    expect(() => new ContentCipher(randomBytes(32)).decryptBlock(ct, 7, fileId)).toThrow(
      AuthenticationError,
    );
  }, 60_000);

  it('block numbers beyond 2^32 are encoded as uint64', () => {
    const n = 2 ** 40 + 5;
    const ct = cipher.encryptBlock(Buffer.from('far'), n, fileId);
    expect(cipher.decryptBlock(ct, n, fileId).toString()).toBe('far');
    expect(() => cipher.decryptBlock(ct, 5, fileId)).toThrow(AuthenticationError);
  }, 60_000);

  it('reads a full all-zero block as a hole, anything else with a zero nonce is rejected', () => {
    expect(
      cipher.decryptBlock(Buffer.alloc(CIPHER_BLOCK), 3, fileId).equals(Buffer.alloc(PLAIN_BLOCK)),
    ).toBe(true);
    expect(() => cipher.decryptBlock(Buffer.alloc(CIPHER_BLOCK - 1), 3, fileId)).toThrow(
      AuthenticationError,
    );
    const ct = cipher.encryptBlock(randomBytes(PLAIN_BLOCK), 3, fileId);
    ct.fill(0, 0, 16);
    expect(() => cipher.decryptBlock(ct, 3, fileId)).toThrow(AuthenticationError);
  }, 60_000);

  it('rejects blocks too short to hold a tag', () => {
    expect(() => cipher.decryptBlock(randomBytes(BLOCK_OVERHEAD), 0, fileId)).toThrow(FormatError);
    expect(() => cipher.encryptBlock(Buffer.alloc(0), 0, fileId)).toThrow(InvalidArgumentError);
  }, 60_000);
});

describe('streams', () => {
  it('round-trip any size, whatever the input chunking', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 5 * PLAIN_BLOCK + 100 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        async (size, cutsIn, cutsOut) => {
          const plain = randomBytes(size);
          const ct = await encrypt(plain, cutsIn);
          expect(ct.length).toBe(plainSizeToCipherSize(size));
          expect((await decrypt(ct, cutsOut)).equals(plain)).toBe(true);
        },
      ),
      { numRuns: 60 },
    );
  }, 60_000);

  it('encrypts and decrypts large input in bounded slices', async () => {
    const plain = randomBytes(3 * 1024 * 1024 + 17);
    const ct = await encrypt(plain, [1, 5000, 2 * 1024 * 1024 + 3]);
    expect((await decrypt(ct, [7, 19, 1024 * 1024])).equals(plain)).toBe(true);
  }, 60_000);

  it('honours a pinned file ID', async () => {
    const fileId = randomBytes(16);
    const ct = await run(createEncryptStream(KEY, { fileId }), Buffer.from('abc'));
    expect(ct.subarray(2, 18).equals(fileId)).toBe(true);
    expect(() => createEncryptStream(KEY, { fileId: Buffer.alloc(3) })).toThrow(
      InvalidArgumentError,
    );
  }, 60_000);

  it('any single flipped bit in the header or any block fails authentication', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 * PLAIN_BLOCK + 50 }),
        fc.nat(),
        async (size, bitSeed) => {
          const ct = await encrypt(randomBytes(size));
          const bit = bitSeed % (ct.length * 8);
          ct[bit >> 3] = (ct[bit >> 3] as number) ^ (1 << (bit & 7));
          await expect(decrypt(ct)).rejects.toThrow(AuthenticationError);
        },
      ),
      { numRuns: 150 },
    );
  }, 60_000);

  it('flipping each bit of the header fails authentication', async () => {
    const ct = await encrypt(randomBytes(100));
    for (let bit = 0; bit < HEADER_LEN * 8; bit++) {
      const bad = Buffer.from(ct);
      bad[bit >> 3] = (bad[bit >> 3] as number) ^ (1 << (bit & 7));
      await expect(decrypt(bad)).rejects.toThrow(AuthenticationError);
    }
  }, 60_000);

  it('rejects swapped blocks, blocks from another file and the wrong key', async () => {
    const a = await encrypt(randomBytes(2 * PLAIN_BLOCK));
    const swapped = Buffer.concat([
      a.subarray(0, HEADER_LEN),
      a.subarray(HEADER_LEN + CIPHER_BLOCK),
      a.subarray(HEADER_LEN, HEADER_LEN + CIPHER_BLOCK),
    ]);
    await expect(decrypt(swapped)).rejects.toThrow(AuthenticationError);
    const b = await encrypt(randomBytes(2 * PLAIN_BLOCK));
    const spliced = Buffer.concat([
      a.subarray(0, HEADER_LEN + CIPHER_BLOCK),
      b.subarray(HEADER_LEN + CIPHER_BLOCK),
    ]);
    await expect(decrypt(spliced)).rejects.toThrow(AuthenticationError);
    await expect(decrypt(a, [], randomBytes(32))).rejects.toThrow(AuthenticationError);
  }, 60_000);

  it('a file cut anywhere but a block boundary is an error, never plaintext', async () => {
    const plain = randomBytes(2 * PLAIN_BLOCK + 300);
    const ct = await encrypt(plain);
    for (let cut = 1; cut < ct.length; cut += 37) {
      const boundary =
        cut === HEADER_LEN || (cut > HEADER_LEN && (cut - HEADER_LEN) % CIPHER_BLOCK === 0);
      if (boundary) continue;
      const err = await decrypt(ct.subarray(0, cut)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err instanceof FormatError || err instanceof AuthenticationError).toBe(true);
    }
  }, 60_000);

  it('a cut on a block boundary yields a prefix: the format has no end marker', async () => {
    const plain = randomBytes(2 * PLAIN_BLOCK + 300);
    const ct = await encrypt(plain);
    const prefix = await decrypt(ct.subarray(0, HEADER_LEN + CIPHER_BLOCK));
    expect(prefix.equals(plain.subarray(0, PLAIN_BLOCK))).toBe(true);
  }, 60_000);

  it('reads holes (all-zero full blocks) inside a stream as zeros', async () => {
    const plain = randomBytes(3 * PLAIN_BLOCK);
    const ct = await encrypt(plain);
    ct.fill(0, HEADER_LEN + CIPHER_BLOCK, HEADER_LEN + 2 * CIPHER_BLOCK);
    plain.fill(0, PLAIN_BLOCK, 2 * PLAIN_BLOCK);
    expect((await decrypt(ct)).equals(plain)).toBe(true);
  }, 60_000);
});
