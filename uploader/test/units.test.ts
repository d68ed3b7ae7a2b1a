/**
 * Resume-unit geometry, the file digest, name validation and the encrypting tus source,
 * including offsets of a 10 GiB (sparse) file far beyond 32 bits.
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { open, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import {
  ContentCipher,
  ContentWorkerPool,
  HEADER_LEN,
  NameTransform,
  plainSizeToCipherSize,
} from '@tre/crypto';
import { checkCipherEntry } from '../src/cipher-names.js';
import { EncryptingSource } from '../src/encrypting-source.js';
import {
  UNIT_BLOCKS,
  UNIT_CIPHER,
  UNIT_PLAIN,
  alignDown,
  digestOfStream,
  fileDigest,
  isBoundary,
  unitAt,
  unitCount,
  unitEnd,
  unitHash,
  unitStart,
} from '../src/units.js';

const dir = mkdtempSync(join(tmpdir(), 'tre-units-'));
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('resume units', () => {
  it('cut a ciphertext at the header plus whole multiples of 256 blocks', () => {
    const total = plainSizeToCipherSize(2 * UNIT_PLAIN + 1);
    expect(unitCount(total)).toBe(3);
    expect([unitStart(0), unitStart(1), unitStart(2)]).toEqual([
      0,
      HEADER_LEN + UNIT_CIPHER,
      HEADER_LEN + 2 * UNIT_CIPHER,
    ]);
    expect(unitEnd(2, total)).toBe(total);
    expect(isBoundary(unitStart(1), total)).toBe(true);
    expect(isBoundary(unitStart(1) - 1, total)).toBe(false);
    expect(isBoundary(HEADER_LEN, total)).toBe(false);
    expect(alignDown(unitStart(2) - 1, total)).toBe(unitStart(1));
    expect(alignDown(5, total)).toBe(0);
    expect(alignDown(total + 5, total)).toBe(total);
    expect(unitAt(unitStart(2), total)).toBe(2);
    expect(unitCount(0)).toBe(0);
    expect(unitCount(plainSizeToCipherSize(1))).toBe(1);
  });

  it('stay exact for a 10 GiB file', () => {
    const total = plainSizeToCipherSize(10 * 1024 ** 3);
    expect(unitCount(total)).toBe(10 * 1024);
    const last = unitStart(10 * 1024 - 1);
    expect(last).toBeGreaterThan(2 ** 33);
    expect(isBoundary(last, total)).toBe(true);
    expect(alignDown(last + 12345, total)).toBe(last);
    expect(unitEnd(10 * 1024 - 1, total)).toBe(total);
  });

  it('digest the same from unit hashes and from the stored stream, in any chunking', async () => {
    const data = randomBytes(HEADER_LEN + 2 * UNIT_CIPHER + 777);
    const total = data.length;
    const hashes = [0, 1, 2].map((k) => unitHash(data.subarray(unitStart(k), unitEnd(k, total))));
    const want = fileDigest(total, hashes);
    for (const size of [1, 4096, 1_000_003]) {
      const chunks: Buffer[] = [];
      for (let o = 0; o < total; o += size) chunks.push(data.subarray(o, o + size));
      expect(await digestOfStream(total, Readable.from(chunks))).toBe(want);
    }
    expect(fileDigest(total, [hashes[0]!, hashes[2]!, hashes[1]!])).not.toBe(want);
    expect(fileDigest(total + 1, hashes)).not.toBe(want);
    await expect(digestOfStream(total, Readable.from([data.subarray(0, 10)]))).rejects.toThrow(
      /declared/,
    );
  });
});

describe('cipher names', () => {
  it('accept what gocryptfs writes and nothing that could leave a directory', () => {
    const names = new NameTransform(randomBytes(32));
    const iv = randomBytes(16);
    for (const plain of ['a', 'Ärztebrief.txt', 'x'.repeat(200), '日本語'.repeat(20)]) {
      const e = names.encryptEntryName(plain, iv);
      expect(() => checkCipherEntry(e.entry, e.longNameFile)).not.toThrow();
    }
    const long = names.encryptEntryName('y'.repeat(250), iv);
    expect(long.longNameFile).toBeDefined();
    expect(() => checkCipherEntry(long.entry)).toThrow(/full name is missing/);
    const other = names.encryptEntryName('z'.repeat(250), iv);
    expect(() => checkCipherEntry(long.entry, other.longNameFile)).toThrow(/does not hash/);
    for (const bad of [
      '..',
      '.',
      '../x',
      'a/b',
      'gocryptfs.diriv',
      'gocryptfs.conf',
      'AAAA',
      'A'.repeat(23),
      'a\0b',
      '',
    ]) {
      expect(() => checkCipherEntry(bad)).toThrow();
    }
  });
});

describe('the encrypting tus source', () => {
  it('serves whole units from any boundary, decryptable at their block numbers, also past 8 GiB', async () => {
    const path = join(dir, 'sparse-10g');
    const size = 10 * 1024 ** 3;
    await writeFile(path, '');
    await truncate(path, size);
    const tail = randomBytes(5000);
    const fh = await open(path, 'r+');
    await fh.write(tail, 0, tail.length, size - tail.length);
    await fh.close();

    const pool = new ContentWorkerPool({ threads: 2 });
    const dek = randomBytes(32);
    const fileId = randomBytes(16);
    const total = plainSizeToCipherSize(size);
    const seen: Array<[number, number]> = [];
    const src = new EncryptingSource({
      path,
      plainSize: size,
      cipherSize: total,
      dek,
      fileId,
      pool,
      chunkUnits: 2,
      onUnits: async (first, hashes) => {
        seen.push([first, hashes.length]);
      },
    });
    try {
      const lastTwo = unitStart(unitCount(total) - 2);
      const { value, done } = await src.slice(lastTwo, lastTwo + 3 * UNIT_CIPHER);
      expect(done).toBe(true);
      // The units come as they left the workers, one piece each, and `size` counts their bytes.
      expect(value!.length).toBe(2);
      const bytes = Buffer.concat(value!);
      expect([value!.size, bytes.length]).toEqual([total - lastTwo, total - lastTwo]);
      expect(seen).toEqual([[unitCount(total) - 2, 2]]);
      const c = new ContentCipher(dek);
      const plain = c.decryptBlocks(bytes, (unitCount(total) - 2) * UNIT_BLOCKS, fileId);
      expect(plain.length).toBe(2 * UNIT_PLAIN);
      expect(plain.subarray(plain.length - tail.length).equals(tail)).toBe(true);
      expect(plain.subarray(0, 1000).equals(Buffer.alloc(1000))).toBe(true);

      const first = await src.slice(0, 1);
      const head = Buffer.concat(first.value!);
      expect(head.subarray(0, 2).readUInt16BE(0)).toBe(2);
      expect(head.subarray(2, HEADER_LEN).equals(fileId)).toBe(true);
      expect([first.value!.size, head.length]).toEqual([
        HEADER_LEN + 2 * UNIT_CIPHER,
        HEADER_LEN + 2 * UNIT_CIPHER,
      ]);
      await expect(src.slice(HEADER_LEN + 5, HEADER_LEN + 100)).rejects.toThrow(
        /not a unit boundary/,
      );
    } finally {
      src.close();
      await pool.destroy();
    }
  }, 60_000);
});
