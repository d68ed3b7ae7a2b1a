/**
 * A 10 GiB file end to end through `tre upload` and the ingress (a sparse source: the
 * ciphertext is full size). It needs about 11 GiB of free disk and minutes of CPU; where the
 * disk is too small, or this machine encrypts too slowly to finish within the suite's time
 * budget, the test is skipped and says why (the unit tests cover the offsets of such a file).
 */
import { afterAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, statfsSync } from 'node:fs';
import { mkdir, open, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ContentCipher, ContentWorkerPool, plainSizeToCipherSize } from '@tre/crypto';
import { UNIT_BLOCKS, unitCount, unitStart } from '../src/units.js';
import { killAll, startIngress, tre, uploadArgs, writeUsers } from './helpers.js';

const SIZE = 10 * 1024 ** 3;
const BUDGET_S = 240;
const dir = mkdtempSync(join(tmpdir(), 'tre-large-'));

async function encryptMiBps(): Promise<number> {
  const pool = new ContentWorkerPool();
  try {
    const key = randomBytes(32);
    const id = randomBytes(16);
    const t0 = Date.now();
    await Promise.all(
      Array.from({ length: 64 }, (_, i) =>
        pool.run('encrypt', key, id, i * 256, randomBytes(1 << 20)),
      ),
    );
    return 64 / ((Date.now() - t0) / 1000);
  } finally {
    await pool.destroy();
  }
}

async function whyNot(): Promise<string | null> {
  const fs = statfsSync(dir);
  const free = fs.bavail * fs.bsize;
  if (free < plainSizeToCipherSize(SIZE) + 2 * 1024 ** 3) {
    return `only ${(free / 1024 ** 3).toFixed(1)} GiB free in ${tmpdir()}, 12 GiB needed`;
  }
  const speed = await encryptMiBps();
  const estimate = (SIZE / 1024 ** 2 / speed) * 2.5;
  if (estimate > BUDGET_S) {
    return `this machine encrypts at ${speed.toFixed(0)} MiB/s; 10 GiB would take about ${Math.round(estimate)} s, over the ${BUDGET_S} s budget`;
  }
  return null;
}

// Removing a 10 GiB ciphertext and its upload copy takes longer than jest's default hook time.
afterAll(async () => {
  killAll();
  await rm(dir, { recursive: true, force: true });
}, 300_000);

describe('a 10 GiB file', () => {
  it('uploads, verifies and decrypts at its end', async () => {
    const reason = await whyNot();
    if (reason !== null) {
      process.stderr.write(`SKIPPED 10 GiB upload test: ${reason}\n`);
      return;
    }
    const src = join(dir, 'src');
    await mkdir(src);
    const path = join(src, 'ten.img');
    await writeFile(path, '');
    await truncate(path, SIZE);
    const tail = randomBytes(4096);
    const fh = await open(path, 'r+');
    await fh.write(tail, 0, tail.length, SIZE - tail.length);
    await fh.close();
    await writeUsers(join(dir, 'users.json'), ['big']);
    const ingress = await startIngress(join(dir, 'root'), join(dir, 'users.json'));
    const mk = randomBytes(32);
    try {
      const r = await tre(
        uploadArgs({ paths: [path], project: 'big', ingress: ingress.url, dir, submit: false }),
        mk.toString('hex'),
      ).done;
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
      const staging = join(dir, 'root', 'projects', 'big', 'staging');
      const [staged] = await readdir(staging);
      const total = plainSizeToCipherSize(SIZE);
      expect((await stat(join(staging, staged!))).size).toBe(total);
      const k = unitCount(total) - 1;
      const cf = await open(join(staging, staged!), 'r');
      const header = Buffer.alloc(18);
      await cf.read(header, 0, 18, 0);
      const last = Buffer.alloc(total - unitStart(k));
      await cf.read(last, 0, last.length, unitStart(k));
      await cf.close();
      const plain = new ContentCipher(mk).decryptBlocks(last, k * UNIT_BLOCKS, header.subarray(2));
      expect(plain.subarray(plain.length - tail.length).equals(tail)).toBe(true);
    } finally {
      await ingress.stop();
    }
  }, 600_000);
});
