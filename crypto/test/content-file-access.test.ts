/**
 * Random access on real files, checked against a plaintext model: any sequence of writes
 * (inside, across and past the end, leaving holes) and truncations, followed by reads of
 * random ranges, must match the model, and the file must stay a valid stream-decryptable
 * gocryptfs file whose size matches the model.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { CIPHER_BLOCK, HEADER_LEN, PLAIN_BLOCK, plainSizeToCipherSize } from '../src/contentenc.js';
import { createDecryptStream, decryptFile, encryptFile } from '../src/content-stream.js';
import { AuthenticationError, FormatError, InvalidArgumentError } from '../src/errors.js';
import { EncryptedFile } from '../src/file-access.js';

const KEY = randomBytes(32);
let dir: string;
let fileNo = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tre-content-fa-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function nextPath(): string {
  fileNo++;
  return join(dir, `f${fileNo}`);
}

async function decryptWhole(path: string): Promise<Buffer> {
  return buffer(Readable.from([await readFile(path)]).pipe(createDecryptStream(KEY)));
}

type Op = { kind: 'write'; pos: number; len: number } | { kind: 'truncate'; size: number };

const MAX = 6 * PLAIN_BLOCK;
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('write' as const),
    pos: fc.oneof(
      fc.integer({ min: 0, max: MAX }),
      fc.constantFrom(0, PLAIN_BLOCK - 1, PLAIN_BLOCK, 2 * PLAIN_BLOCK + 1),
    ),
    len: fc.oneof(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 1, max: 3 * PLAIN_BLOCK })),
  }),
  fc.record({ kind: fc.constant('truncate' as const), size: fc.integer({ min: 0, max: MAX }) }),
);

function applyModel(model: Buffer, op: Op, data: Buffer): Buffer {
  if (op.kind === 'truncate') {
    const out = Buffer.alloc(op.size);
    model.copy(out, 0, 0, Math.min(model.length, op.size));
    return out;
  }
  const out = Buffer.alloc(Math.max(model.length, op.pos + op.len));
  model.copy(out);
  data.copy(out, op.pos);
  return out;
}

describe('EncryptedFile', () => {
  it('writes, truncations and reads match a plaintext model', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 3 * PLAIN_BLOCK }),
        fc.array(opArb, { minLength: 1, maxLength: 6 }),
        fc.array(fc.tuple(fc.nat({ max: MAX + 10 }), fc.nat({ max: 3 * PLAIN_BLOCK })), {
          minLength: 1,
          maxLength: 5,
        }),
        async (initialSize, ops, reads) => {
          const path = nextPath();
          let model: Buffer = randomBytes(initialSize);
          await writeFile(join(dir, 'src'), model);
          await encryptFile(KEY, join(dir, 'src'), path);
          const f = await EncryptedFile.open(KEY, path, { write: true });
          try {
            for (const op of ops) {
              if (op.kind === 'write') {
                const data = randomBytes(op.len);
                await f.write(op.pos, data);
                model = applyModel(model, op, data);
              } else {
                await f.truncate(op.size);
                model = applyModel(model, op, Buffer.alloc(0));
              }
              expect(await f.size()).toBe(model.length);
            }
            for (const [pos, len] of reads) {
              const got = await f.read(pos, len);
              expect(
                got.equals(
                  model.subarray(Math.min(pos, model.length), Math.min(pos + len, model.length)),
                ),
              ).toBe(true);
            }
          } finally {
            await f.close();
          }
          expect((await stat(path)).size).toBe(plainSizeToCipherSize(model.length));
          expect((await decryptWhole(path)).equals(model)).toBe(true);
          await rm(path);
        },
      ),
      { numRuns: 60 },
    );
  }, 60_000);

  it('creates a file, and leaves skipped whole blocks as holes that read as zeros', async () => {
    const path = nextPath();
    const f = await EncryptedFile.open(KEY, path, { create: true });
    await f.write(10, Buffer.from('head'));
    await f.write(20 * PLAIN_BLOCK + 5, Buffer.from('tail'));
    await f.close();
    const raw = await readFile(path);
    // Blocks 1..19 were never written: the kernel keeps them as zeros, which is a hole.
    expect(
      raw
        .subarray(HEADER_LEN + 5 * CIPHER_BLOCK, HEADER_LEN + 6 * CIPHER_BLOCK)
        .equals(Buffer.alloc(CIPHER_BLOCK)),
    ).toBe(true);
    const plain = await decryptWhole(path);
    const expected = Buffer.alloc(20 * PLAIN_BLOCK + 9);
    expected.write('head', 10);
    expected.write('tail', 20 * PLAIN_BLOCK + 5);
    expect(plain.equals(expected)).toBe(true);
  }, 60_000);

  it('rewrites only the blocks a write touches', async () => {
    const path = nextPath();
    await writeFile(join(dir, 'src'), randomBytes(10 * PLAIN_BLOCK));
    await encryptFile(KEY, join(dir, 'src'), path);
    const before = await readFile(path);
    const f = await EncryptedFile.open(KEY, path, { write: true });
    await f.write(3 * PLAIN_BLOCK + 100, randomBytes(PLAIN_BLOCK));
    await f.close();
    const after = await readFile(path);
    const block = (b: Buffer, n: number) =>
      b.subarray(HEADER_LEN + n * CIPHER_BLOCK, HEADER_LEN + (n + 1) * CIPHER_BLOCK);
    for (let n = 0; n < 10; n++)
      expect(block(before, n).equals(block(after, n))).toBe(n !== 3 && n !== 4);
    expect(before.subarray(0, HEADER_LEN).equals(after.subarray(0, HEADER_LEN))).toBe(true);
  }, 60_000);

  it('detects tampering on random access and refuses impossible sizes', async () => {
    const path = nextPath();
    await writeFile(join(dir, 'src'), randomBytes(3 * PLAIN_BLOCK));
    await encryptFile(KEY, join(dir, 'src'), path);
    const fh = await open(path, 'r+');
    await fh.write(Buffer.from([0xff]), 0, 1, HEADER_LEN + CIPHER_BLOCK + 40);
    await fh.close();
    const f = await EncryptedFile.open(KEY, path);
    await expect(f.read(0, 10)).resolves.toHaveLength(10);
    await expect(f.read(PLAIN_BLOCK + 5, 10)).rejects.toThrow(AuthenticationError);
    await expect(f.write(0, Buffer.from('x'))).rejects.toThrow(InvalidArgumentError);
    await f.close();
    const fh2 = await open(path, 'r+');
    await fh2.truncate(HEADER_LEN + 2 * CIPHER_BLOCK + 10);
    await fh2.close();
    const g = await EncryptedFile.open(KEY, path);
    await expect(g.size()).rejects.toThrow(FormatError);
    await g.close();
  }, 60_000);

  it('works on a FileHandle the caller owns', async () => {
    const path = nextPath();
    const fh = await open(path, 'w+');
    const f = EncryptedFile.fromHandle(KEY, fh, { write: true });
    await f.write(0, Buffer.from('hello world'));
    await f.close();
    expect((await fh.stat()).size).toBe(plainSizeToCipherSize(11));
    await fh.close();
    await decryptFile(KEY, path, join(dir, 'out'));
    expect((await readFile(join(dir, 'out'))).toString()).toBe('hello world');
  }, 60_000);
});
