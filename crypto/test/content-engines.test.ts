/**
 * The native content engine (native/content_gcm.c) against the pure-JS one on node:crypto:
 * byte-identical output for the same nonces, each opening the other's blocks, the same typed
 * errors for the same damage, and the same behaviour at the edges (holes, offsets, block
 * numbers beyond 2^32). The rest of the suite runs on the default engine, i.e. the native one
 * whenever it is built, so the gocryptfs interop tests prove it against the real gocryptfs.
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import {
  CIPHER_BLOCK,
  ContentCipher,
  NONCE_LEN,
  PLAIN_BLOCK,
  createHeader,
} from '../src/contentenc.js';
import { createDecryptStream, createEncryptStream } from '../src/content-stream.js';
import { AuthenticationError, InvalidArgumentError } from '../src/errors.js';
import { defaultContentEngine, nativeContentStatus } from '../src/native.js';
import { ContentWorkerPool } from '../src/worker-pool.js';

const KEY = randomBytes(32);
const native = new ContentCipher(KEY, { engine: 'native' });
const js = new ContentCipher(KEY, { engine: 'js' });

/** Runs `fn` with TRE_CRYPTO_NATIVE set to `value`, restoring it afterwards. */
async function withEnv<T>(value: string, fn: () => Promise<T>): Promise<T> {
  const old = process.env.TRE_CRYPTO_NATIVE;
  process.env.TRE_CRYPTO_NATIVE = value;
  try {
    return await fn();
  } finally {
    if (old === undefined) delete process.env.TRE_CRYPTO_NATIVE;
    else process.env.TRE_CRYPTO_NATIVE = old;
  }
}

const blockNo = fc.oneof(
  fc.integer({ min: 0, max: 1000 }),
  fc.integer({ min: 2 ** 32 - 3, max: 2 ** 32 + 3 }),
  fc.constant(Number.MAX_SAFE_INTEGER - 100),
);
const plainLen = fc.integer({ min: 0, max: 5 * PLAIN_BLOCK + 7 });

describe('engine selection', () => {
  it('the native engine is built and is the default (the build fails without it)', () => {
    expect(nativeContentStatus()).toEqual({ available: true });
    expect(defaultContentEngine()).toBe('native');
    expect(new ContentCipher(KEY).engine).toBe('native');
  });

  it('TRE_CRYPTO_NATIVE=0 selects the pure-JS engine', async () => {
    await withEnv('0', async () => {
      expect(defaultContentEngine()).toBe('js');
      expect(new ContentCipher(KEY).engine).toBe('js');
    });
  });

  it('rejects an unknown engine and use after destroy', () => {
    expect(() => new ContentCipher(KEY, { engine: 'fast' as 'js' })).toThrow(InvalidArgumentError);
    for (const engine of ['native', 'js'] as const) {
      const c = new ContentCipher(KEY, { engine });
      const fileId = randomBytes(16);
      const ct = c.encryptBlocks(Buffer.from('x'), 0, fileId);
      c.destroy();
      expect(() => c.encryptBlocks(Buffer.from('x'), 0, fileId)).toThrow(InvalidArgumentError);
      expect(() => c.decryptBlocks(ct, 0, fileId)).toThrow(InvalidArgumentError);
    }
  });
});

describe('native and JS engines agree', () => {
  it('byte-identical ciphertext for the same nonces, and each opens the other', () => {
    fc.assert(
      fc.property(plainLen, blockNo, fc.nat(), (len, first, seed) => {
        const plain = randomBytes(len);
        const fileId = randomBytes(16);
        const nonces = randomBytes(Math.ceil(len / PLAIN_BLOCK) * NONCE_LEN);
        nonces[0] = seed & 0xff;
        const a = native.encryptBlocks(plain, first, fileId, undefined, 0, nonces);
        const b = js.encryptBlocks(plain, first, fileId, undefined, 0, nonces);
        expect(a.equals(b)).toBe(true);
        expect(js.decryptBlocks(a, first, fileId).equals(plain)).toBe(true);
        expect(native.decryptBlocks(b, first, fileId).equals(plain)).toBe(true);
        const fresh = native.encryptBlocks(plain, first, fileId);
        expect(js.decryptBlocks(fresh, first, fileId).equals(plain)).toBe(true);
      }),
      { numRuns: 150 },
    );
  }, 120_000);

  it('fresh random nonces differ per block and per call', () => {
    const fileId = randomBytes(16);
    const plain = Buffer.alloc(300 * PLAIN_BLOCK);
    const seen = new Set<string>();
    for (let call = 0; call < 2; call++) {
      const ct = native.encryptBlocks(plain, 0, fileId);
      for (let i = 0; i < 300; i++) {
        seen.add(ct.subarray(i * CIPHER_BLOCK, i * CIPHER_BLOCK + NONCE_LEN).toString('hex'));
      }
    }
    expect(seen.size).toBe(600);
  });

  it('any flipped bit fails both engines with the same error naming the block', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 * PLAIN_BLOCK + 5 }),
        blockNo,
        fc.nat(),
        (len, first, bitSeed) => {
          const plain = randomBytes(len);
          const fileId = randomBytes(16);
          const ct = native.encryptBlocks(plain, first, fileId);
          const bit = bitSeed % (ct.length * 8);
          ct.writeUInt8(ct.readUInt8(bit >> 3) ^ (1 << (bit & 7)), bit >> 3);
          const errors = [native, js].map((c) => {
            const out = Buffer.alloc(len + 10, 0xaa);
            try {
              c.decryptBlocks(ct, first, fileId, out, 5);
            } catch (err) {
              // Nothing of the failed run is left in the caller's buffer.
              expect(out.subarray(5, 5 + len).every((x) => x === 0)).toBe(true);
              expect(out.subarray(0, 5).every((x) => x === 0xaa)).toBe(true);
              expect(out.subarray(5 + len).every((x) => x === 0xaa)).toBe(true);
              return err;
            }
            return undefined;
          });
          for (const err of errors) expect(err).toBeInstanceOf(AuthenticationError);
          const block = first + Math.floor((bit >> 3) / CIPHER_BLOCK);
          expect((errors[0] as Error).message).toBe((errors[1] as Error).message);
          expect((errors[0] as Error).message).toContain(`block ${block} `);
        },
      ),
      { numRuns: 200 },
    );
  }, 120_000);

  it('holes read as zeros; a zero nonce on anything else is the same error', () => {
    const fileId = randomBytes(16);
    const ct = native.encryptBlocks(randomBytes(3 * PLAIN_BLOCK), 10, fileId);
    ct.fill(0, CIPHER_BLOCK, 2 * CIPHER_BLOCK);
    for (const c of [native, js]) {
      const pt = c.decryptBlocks(ct, 10, fileId);
      expect(pt.subarray(PLAIN_BLOCK, 2 * PLAIN_BLOCK).every((x) => x === 0)).toBe(true);
    }
    ct.fill(0, 2 * CIPHER_BLOCK, 2 * CIPHER_BLOCK + NONCE_LEN);
    const messages = [native, js].map((c) => {
      try {
        c.decryptBlocks(ct, 10, fileId);
      } catch (err) {
        expect(err).toBeInstanceOf(AuthenticationError);
        return (err as Error).message;
      }
      return 'no error';
    });
    expect(messages[0]).toBe(messages[1]);
    expect(messages[0]).toContain('block 12 has an all-zero nonce');
  });

  it('writes at the given offset of a caller buffer and nowhere else', () => {
    const fileId = randomBytes(16);
    const plain = randomBytes(2 * PLAIN_BLOCK + 9);
    const nonces = randomBytes(3 * NONCE_LEN);
    const outs = [native, js].map((c) => {
      const out = Buffer.alloc(plain.length + 3 * 32 + 20, 0x55);
      const view = c.encryptBlocks(plain, 4, fileId, out, 7, nonces);
      expect(view.byteOffset - out.byteOffset).toBe(7);
      expect(view.length).toBe(plain.length + 3 * 32);
      expect(out.subarray(0, 7).every((x) => x === 0x55)).toBe(true);
      expect(out.subarray(7 + view.length).every((x) => x === 0x55)).toBe(true);
      const back = Buffer.alloc(plain.length + 3, 0x66);
      expect(c.decryptBlocks(view, 4, fileId, back, 3).equals(plain)).toBe(true);
      expect(back.subarray(0, 3).every((x) => x === 0x66)).toBe(true);
      return out;
    });
    expect((outs[0] as Buffer).equals(outs[1] as Buffer)).toBe(true);
  });

  it('rejects bad arguments the same way', () => {
    const fileId = randomBytes(16);
    for (const c of [native, js]) {
      expect(() => c.encryptBlocks(randomBytes(10), 0, fileId, Buffer.alloc(41))).toThrow(
        InvalidArgumentError,
      );
      expect(() =>
        c.encryptBlocks(randomBytes(10), 0, fileId, undefined, 0, randomBytes(15)),
      ).toThrow(InvalidArgumentError);
      expect(() => c.encryptBlocks(randomBytes(10), -1, fileId)).toThrow(InvalidArgumentError);
      expect(() => c.encryptBlocks(randomBytes(10), 0.5, fileId)).toThrow(InvalidArgumentError);
      expect(() => c.encryptBlocks(randomBytes(10), 0, randomBytes(15))).toThrow(
        InvalidArgumentError,
      );
      const ct = c.encryptBlocks(randomBytes(10), 0, fileId);
      expect(() => c.decryptBlocks(ct, 0, fileId, Buffer.alloc(9))).toThrow(InvalidArgumentError);
    }
  });
});

describe('streams and the worker pool on either engine', () => {
  const pool = new ContentWorkerPool({ threads: 2, chunkBlocks: 3 });
  afterAll(() => pool.destroy());

  it('a stream written on one engine reads back on the other', async () => {
    const plain = randomBytes(7 * PLAIN_BLOCK + 123);
    const fileId = createHeader().subarray(2);
    const viaJs = await withEnv('0', () =>
      buffer(Readable.from([plain]).pipe(createEncryptStream(KEY, { fileId }))),
    );
    const viaNative = await buffer(
      Readable.from([plain]).pipe(createEncryptStream(KEY, { fileId })),
    );
    expect(viaJs.length).toBe(viaNative.length);
    expect(
      (await buffer(Readable.from([viaJs]).pipe(createDecryptStream(KEY)))).equals(plain),
    ).toBe(true);
    const back = await withEnv('0', () =>
      buffer(Readable.from([viaNative]).pipe(createDecryptStream(KEY))),
    );
    expect(back.equals(plain)).toBe(true);
  });

  it('pool workers on the native engine interoperate with the JS engine', async () => {
    const plain = randomBytes(10 * PLAIN_BLOCK + 1);
    const ct = await buffer(Readable.from([plain]).pipe(pool.createEncryptStream(KEY)));
    const back = await withEnv('0', () =>
      buffer(Readable.from([ct]).pipe(createDecryptStream(KEY))),
    );
    expect(back.equals(plain)).toBe(true);
  });

  it('pool workers started with TRE_CRYPTO_NATIVE=0 interoperate with the native engine', async () => {
    const jsPool = await withEnv(
      '0',
      async () => new ContentWorkerPool({ threads: 1, chunkBlocks: 2 }),
    );
    try {
      const plain = randomBytes(5 * PLAIN_BLOCK + 77);
      const ct = await buffer(Readable.from([plain]).pipe(jsPool.createEncryptStream(KEY)));
      expect((await buffer(Readable.from([ct]).pipe(createDecryptStream(KEY)))).equals(plain)).toBe(
        true,
      );
    } finally {
      await jsPool.destroy();
    }
  });
});
