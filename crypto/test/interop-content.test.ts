/**
 * Interop with the real gocryptfs 2.3 over FUSE, in per-file-key mode: a directory of files
 * encrypted under one random 32-byte DEK is mounted with `gocryptfs -masterkey=stdin
 * -plaintextnames` (no gocryptfs.conf: gocryptfs then assumes the v2 defaults, HKDF and
 * 128-bit GCM nonces) and must read back byte-identical; files written through such a mount,
 * including sparse ones, must decrypt with our code; and our in-place writes into
 * gocryptfs-written files must read back through gocryptfs. The DEK reaches gocryptfs on
 * stdin only, never in argv or the environment.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GocryptfsMount } from '../src/bench/gocryptfs.js';
import { plainSizeToCipherSize } from '../src/contentenc.js';
import { decryptFile, encryptFile } from '../src/content-stream.js';
import { EncryptedFile } from '../src/file-access.js';
import { ContentWorkerPool } from '../src/worker-pool.js';

const MIB = 1024 * 1024;
const SIZES = [0, 1, 4095, 4096, 4097, MIB + 3, 64 * MIB];

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

const active = new Set<GocryptfsMount>();
let root: string;
let dek: Buffer;
const plainHashes = new Map<number, string>();

/** Mounts with the DEK; afterAll stops every mount again, even after a failed assertion. */
async function mount(cipherDir: string, mountpoint: string): Promise<GocryptfsMount> {
  const m = await GocryptfsMount.start(cipherDir, mountpoint, dek);
  active.add(m);
  return m;
}

beforeAll(async () => {
  if (!existsSync('/dev/fuse')) {
    throw new Error('/dev/fuse is missing: the gocryptfs interop tests need FUSE (fuse3) and root');
  }
  const v = spawnSync('gocryptfs', ['-version'], { encoding: 'utf8' });
  if (v.status !== 0) throw new Error(`gocryptfs is not runnable: ${v.error?.message ?? v.stderr}`);
  root = await mkdtemp(join(tmpdir(), 'tre-interop-content-'));
  dek = randomBytes(32);
  await mkdir(join(root, 'plain'));
  for (const size of SIZES) {
    const data = randomBytes(size);
    plainHashes.set(size, sha256(data));
    await writeFile(join(root, 'plain', `f${size}`), data);
  }
});

afterAll(async () => {
  for (const m of active) await m.stop();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

describe('gocryptfs 2.3 interop (per-file-key mode, FUSE)', () => {
  it('files we encrypt under a DEK read back byte-identical through gocryptfs -masterkey=stdin', async () => {
    const cipherDir = join(root, 'ours');
    const mnt = join(root, 'mnt-ours');
    await mkdir(cipherDir);
    await mkdir(mnt);
    for (const size of SIZES) {
      await encryptFile(dek, join(root, 'plain', `f${size}`), join(cipherDir, `f${size}`));
      expect((await stat(join(cipherDir, `f${size}`))).size).toBe(plainSizeToCipherSize(size));
    }
    // A sparse file made by random-access writes: blocks 1..99 are holes.
    const sparse = await EncryptedFile.open(dek, join(cipherDir, 'sparse'), { create: true });
    await sparse.write(5, Buffer.from('start'));
    await sparse.write(100 * 4096 + 17, Buffer.from('end'));
    await sparse.close();

    const m = await mount(cipherDir, mnt);
    try {
      for (const size of SIZES) {
        const data = await readFile(join(mnt, `f${size}`));
        expect(data.length).toBe(size);
        expect(sha256(data)).toBe(plainHashes.get(size));
      }
      const expected = Buffer.alloc(100 * 4096 + 20);
      expected.write('start', 5);
      expected.write('end', 100 * 4096 + 17);
      expect((await readFile(join(mnt, 'sparse'))).equals(expected)).toBe(true);
    } finally {
      await m.stop();
    }
  }, 180_000);

  it('files written through gocryptfs decrypt with our streams, worker pool and random access', async () => {
    const cipherDir = join(root, 'theirs');
    const mnt = join(root, 'mnt-theirs');
    await mkdir(cipherDir);
    await mkdir(mnt);
    const edited = randomBytes(3 * 4096 + 100);
    const m = await mount(cipherDir, mnt);
    try {
      for (const size of SIZES) {
        await writeFile(join(mnt, `f${size}`), await readFile(join(root, 'plain', `f${size}`)));
      }
      // gocryptfs leaves the skipped region as file holes.
      const fh = await open(join(mnt, 'sparse'), 'w');
      await fh.write(Buffer.from('tail'), 0, 4, 10 * MIB);
      await fh.close();
      // An in-place edit through gocryptfs: read-modify-write of blocks 1 and 2.
      await writeFile(join(mnt, 'edited'), edited);
      const eh = await open(join(mnt, 'edited'), 'r+');
      await eh.write(Buffer.from('EDITED-BY-GOCRYPTFS'), 0, 19, 4096 + 4090);
      await eh.close();
      edited.write('EDITED-BY-GOCRYPTFS', 4096 + 4090);
    } finally {
      await m.stop();
    }

    const out = join(root, 'out');
    await mkdir(out);
    for (const size of SIZES) {
      expect((await stat(join(cipherDir, `f${size}`))).size).toBe(plainSizeToCipherSize(size));
      await decryptFile(dek, join(cipherDir, `f${size}`), join(out, `f${size}`));
      expect(sha256(await readFile(join(out, `f${size}`)))).toBe(plainHashes.get(size));
    }
    const pool = new ContentWorkerPool({ threads: 2 });
    try {
      await pool.decryptFile(dek, join(cipherDir, `f${64 * MIB}`), join(out, 'pooled'));
      expect(sha256(await readFile(join(out, 'pooled')))).toBe(plainHashes.get(64 * MIB));
    } finally {
      await pool.destroy();
    }

    await decryptFile(dek, join(cipherDir, 'sparse'), join(out, 'sparse'));
    const sparse = await readFile(join(out, 'sparse'));
    const expected = Buffer.alloc(10 * MIB + 4);
    expected.write('tail', 10 * MIB);
    expect(sparse.equals(expected)).toBe(true);
    const raw = await readFile(join(cipherDir, 'sparse'));
    expect(raw.subarray(18 + 4128 * 5, 18 + 4128 * 6).every((b) => b === 0)).toBe(true);

    await decryptFile(dek, join(cipherDir, 'edited'), join(out, 'edited'));
    expect((await readFile(join(out, 'edited'))).equals(edited)).toBe(true);

    const f = await EncryptedFile.open(dek, join(cipherDir, `f${MIB + 3}`));
    try {
      const plain = await readFile(join(root, 'plain', `f${MIB + 3}`));
      for (const [pos, len] of [
        [0, 1],
        [4095, 2],
        [123_456, 70_000],
        [MIB, 100],
      ] as const) {
        expect((await f.read(pos, len)).equals(plain.subarray(pos, pos + len))).toBe(true);
      }
    } finally {
      await f.close();
    }
  }, 180_000);

  it('our in-place writes into gocryptfs-written files read back through gocryptfs', async () => {
    const cipherDir = join(root, 'theirs');
    const mnt = join(root, 'mnt-theirs');
    const plain = await readFile(join(root, 'plain', `f${MIB + 3}`));
    const f = await EncryptedFile.open(dek, join(cipherDir, `f${MIB + 3}`), { write: true });
    const patch = randomBytes(10_000);
    try {
      await f.write(4000, patch);
      await f.write(MIB + 3 + 5000, Buffer.from('grown'));
    } finally {
      await f.close();
    }
    const expected = Buffer.alloc(MIB + 3 + 5005);
    plain.copy(expected);
    patch.copy(expected, 4000);
    expected.write('grown', MIB + 3 + 5000);

    const m = await mount(cipherDir, mnt);
    try {
      expect((await readFile(join(mnt, `f${MIB + 3}`))).equals(expected)).toBe(true);
    } finally {
      await m.stop();
    }
  }, 120_000);
});
