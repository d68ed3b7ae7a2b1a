/**
 * The worker pool must produce exactly what the single-threaded code produces (up to the
 * random nonces, so equality is checked by decrypting with the other implementation), in
 * input order even when chunks finish out of order, with typed errors from the workers.
 * The workers run the compiled dist/content-worker.js (see workerFile in worker-pool.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import {
  CIPHER_BLOCK,
  ContentCipher,
  HEADER_LEN,
  PLAIN_BLOCK,
  createHeader,
  plainSizeToCipherSize,
} from '../src/contentenc.js';
import {
  createDecryptStream,
  createEncryptStream,
  decryptFile,
  encryptFile,
} from '../src/content-stream.js';
import { AuthenticationError, FormatError, InvalidArgumentError } from '../src/errors.js';
import { ContentWorkerPool } from '../src/worker-pool.js';

const KEY = randomBytes(32);
let pool: ContentWorkerPool;
let dir: string;

beforeAll(async () => {
  // One block per chunk: a 40-block file becomes 40 tasks racing on 2 threads.
  pool = new ContentWorkerPool({ threads: 2, chunkBlocks: 1 });
  dir = await mkdtemp(join(tmpdir(), 'tre-pool-'));
});

afterAll(async () => {
  await pool.destroy();
  await rm(dir, { recursive: true, force: true });
});

function pieces(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) out.push(data.subarray(i, i + size));
  return out;
}

function flip(buf: Buffer, index: number, mask: number): void {
  buf.writeUInt8(buf.readUInt8(index) ^ mask, index);
}

describe('ContentWorkerPool', () => {
  it('parallel encryption decrypts with the single-threaded code, and vice versa', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 40 * PLAIN_BLOCK }),
        fc.integer({ min: 1, max: 9000 }),
        async (size, piece) => {
          const plain = randomBytes(size);
          const ct = await buffer(
            Readable.from(pieces(plain, piece)).pipe(pool.createEncryptStream(KEY)),
          );
          expect(ct.length).toBe(plainSizeToCipherSize(size));
          expect(
            (await buffer(Readable.from(pieces(ct, piece)).pipe(createDecryptStream(KEY)))).equals(
              plain,
            ),
          ).toBe(true);
          const ct2 = await buffer(
            Readable.from(pieces(plain, piece)).pipe(createEncryptStream(KEY)),
          );
          expect(
            (
              await buffer(Readable.from(pieces(ct2, piece)).pipe(pool.createDecryptStream(KEY)))
            ).equals(plain),
          ).toBe(true);
        },
      ),
      { numRuns: 25 },
    );
  }, 60_000);

  it('keeps block order: every block decrypts to its own position', async () => {
    // Block i holds the byte i in every position, so any reordering shows in the output.
    const plain = Buffer.concat(Array.from({ length: 64 }, (_, i) => Buffer.alloc(PLAIN_BLOCK, i)));
    const ct = await buffer(Readable.from([plain]).pipe(pool.createEncryptStream(KEY)));
    const back = await buffer(Readable.from([ct]).pipe(createDecryptStream(KEY)));
    for (let i = 0; i < 64; i++) expect(back[i * PLAIN_BLOCK]).toBe(i);
    expect(back.equals(plain)).toBe(true);
  }, 60_000);

  it('reports tampering and truncation with typed errors', async () => {
    const ct = await buffer(
      Readable.from([randomBytes(10 * PLAIN_BLOCK)]).pipe(createEncryptStream(KEY)),
    );
    const bad = Buffer.from(ct);
    flip(bad, HEADER_LEN + 7 * CIPHER_BLOCK + 100, 1);
    await expect(buffer(Readable.from([bad]).pipe(pool.createDecryptStream(KEY)))).rejects.toThrow(
      AuthenticationError,
    );
    const cut = ct.subarray(0, HEADER_LEN + 3 * CIPHER_BLOCK + 20);
    await expect(buffer(Readable.from([cut]).pipe(pool.createDecryptStream(KEY)))).rejects.toThrow(
      FormatError,
    );
    await expect(
      buffer(Readable.from([ct.subarray(0, 10)]).pipe(pool.createDecryptStream(KEY))),
    ).rejects.toThrow(FormatError);
    expect(() => pool.createEncryptStream(Buffer.alloc(31))).toThrow(InvalidArgumentError);
    expect(() => new ContentWorkerPool({ threads: 0 })).toThrow(InvalidArgumentError);
  }, 60_000);

  it('file encryption with positional worker I/O matches the single-threaded file code', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 12 * PLAIN_BLOCK }), async (size) => {
        const plain = randomBytes(size);
        await writeFile(join(dir, 'p'), plain);
        await pool.encryptFile(KEY, join(dir, 'p'), join(dir, 'c'));
        expect((await readFile(join(dir, 'c'))).length).toBe(plainSizeToCipherSize(size));
        await decryptFile(KEY, join(dir, 'c'), join(dir, 'b'));
        expect((await readFile(join(dir, 'b'))).equals(plain)).toBe(true);
        await encryptFile(KEY, join(dir, 'p'), join(dir, 'c'));
        await pool.decryptFile(KEY, join(dir, 'c'), join(dir, 'b'));
        expect((await readFile(join(dir, 'b'))).equals(plain)).toBe(true);
      }),
      { numRuns: 20 },
    );
    await writeFile(join(dir, 'c'), createHeader());
    await pool.decryptFile(KEY, join(dir, 'c'), join(dir, 'b'));
    expect((await readFile(join(dir, 'b'))).length).toBe(0);
    await encryptFile(KEY, join(dir, 'p'), join(dir, 'c'));
    await writeFile(join(dir, 'c'), (await readFile(join(dir, 'c'))).subarray(0, HEADER_LEN + 20));
    await expect(pool.decryptFile(KEY, join(dir, 'c'), join(dir, 'b'))).rejects.toThrow(
      FormatError,
    );
    await rm(join(dir, 'p'));
    await rm(join(dir, 'c'));
    await rm(join(dir, 'b'));
  }, 60_000);

  it('sealRange reads, seals and hashes a block range on a worker', async () => {
    const plain = randomBytes(5 * PLAIN_BLOCK + 77);
    await writeFile(join(dir, 'r'), plain);
    const fh = await open(join(dir, 'r'), 'r');
    try {
      const header = createHeader();
      const fileId = header.subarray(2);
      const c = new ContentCipher(KEY);
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 0, max: 5 }),
          fc.integer({ min: 1, max: 6 }),
          fc.boolean(),
          async (first, blocks, withPrefix) => {
            const length = Math.min(blocks * PLAIN_BLOCK, plain.length - first * PLAIN_BLOCK);
            const prefix = withPrefix ? header : new Uint8Array(0);
            const got = await pool.sealRange(KEY, fileId, first, fh.fd, length, prefix);
            expect(got.data.length).toBe(ContentCipher.blocksCipherLength(length));
            const want = createHash('sha256').update(prefix).update(got.data).digest();
            expect(got.sha256.equals(want)).toBe(true);
            const opened = c.decryptBlocks(got.data, first, fileId);
            const at = first * PLAIN_BLOCK;
            expect(opened.equals(plain.subarray(at, at + length))).toBe(true);
          },
        ),
        { numRuns: 30 },
      );
      c.destroy();
      await expect(
        pool.sealRange(KEY, fileId, 6, fh.fd, PLAIN_BLOCK, new Uint8Array(0)),
      ).rejects.toThrow(FormatError);
      await expect(pool.sealRange(KEY, fileId.subarray(1), 0, fh.fd, 10)).rejects.toThrow(
        InvalidArgumentError,
      );
    } finally {
      await fh.close();
      await rm(join(dir, 'r'));
    }
  });

  it('encrypts and decrypts files atomically, leaving nothing behind on failure', async () => {
    const plain = randomBytes(5 * 1024 * 1024 + 11);
    await writeFile(join(dir, 'plain'), plain);
    const big = new ContentWorkerPool({ threads: 2 });
    try {
      await big.encryptFile(KEY, join(dir, 'plain'), join(dir, 'cipher'));
      await big.decryptFile(KEY, join(dir, 'cipher'), join(dir, 'back'));
      expect((await readFile(join(dir, 'back'))).equals(plain)).toBe(true);
      const ct = await readFile(join(dir, 'cipher'));
      flip(ct, ct.length - 1, 0x80);
      await writeFile(join(dir, 'cipher'), ct);
      await expect(big.decryptFile(KEY, join(dir, 'cipher'), join(dir, 'back2'))).rejects.toThrow(
        AuthenticationError,
      );
    } finally {
      await big.destroy();
    }
    expect((await readdir(dir)).sort()).toEqual(['back', 'cipher', 'plain']);
  }, 60_000);
});
