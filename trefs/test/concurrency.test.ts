/**
 * Concurrency and crashes, with the writers and readers as separate processes:
 * - two writers interleave 1000-byte records in one file (records straddle blocks, so both
 *   read-modify-write the same blocks) while eight readers read another file: nothing is lost,
 *   nothing is torn;
 * - kill -9 of the daemon during block writes, then a remount: every file decrypts and every
 *   block holds either its old or its new content.
 */
import { afterEach, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  cleanup,
  makeProject,
  requireFuse,
  run,
  startDaemon,
  type Daemon,
  type Project,
} from './helpers.js';

let p: Project | undefined;
let d: Daemon | undefined;

afterEach(async () => {
  await cleanup(p, d);
  p = undefined;
  d = undefined;
}, 60_000);

function node(script: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('exit', (code) => resolve({ code, out }));
  });
}

const RECORD = 1000;
const RECORDS = 600;

const WRITER = `
import { open } from 'node:fs/promises';
const [file, parity] = process.argv.slice(1);
const fh = await open(file, 'r+');
for (let i = Number(parity); i < ${RECORDS}; i += 2) {
  await fh.write(Buffer.alloc(${RECORD}, 1 + (i % 250)), 0, ${RECORD}, i * ${RECORD});
}
await fh.close();
`;

const READER = `
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
const [file, want, rounds] = process.argv.slice(1);
for (let i = 0; i < Number(rounds); i++) {
  const got = createHash('sha256').update(await readFile(file)).digest('hex');
  if (got !== want) { console.log('mismatch in round', i); process.exit(1); }
}
`;

test('two writers on one file and eight readers', async () => {
  requireFuse();
  p = await makeProject();
  d = await startDaemon(p);
  const shared = join(p.mnt, 'shared.bin');
  const stable = join(p.mnt, 'stable.bin');
  const stableData = randomBytes(1_500_000);
  await writeFile(shared, Buffer.alloc(0));
  await writeFile(stable, stableData);
  const want = createHash('sha256').update(stableData).digest('hex');
  const results = await Promise.all([
    node(WRITER, [shared, '0']),
    node(WRITER, [shared, '1']),
    ...Array.from({ length: 8 }, () => node(READER, [stable, want, '5'])),
  ]);
  for (const r of results) expect(r).toEqual({ code: 0, out: '' });
  const got = await readFile(shared);
  const expected = Buffer.alloc(RECORD * RECORDS);
  for (let i = 0; i < RECORDS; i++) expected.fill(1 + (i % 250), i * RECORD, (i + 1) * RECORD);
  expect(got.length).toBe(expected.length);
  expect(got.equals(expected)).toBe(true);
}, 180_000);

const BLOCKS = 32;

/** Rewrites whole 4 KiB blocks of files f0..f3 with a rising version until killed. */
const CRASH_WRITER = `
import { open } from 'node:fs/promises';
const dir = process.argv[1];
const fhs = await Promise.all([0, 1, 2, 3].map((i) => open(dir + '/f' + i, 'r+')));
for (let v = 1; ; v++) {
  for (let b = 0; b < ${BLOCKS}; b++) {
    for (const fh of fhs) {
      try {
        await fh.write(Buffer.alloc(4096, v % 256), 0, 4096, b * 4096);
      } catch {
        process.exit(0);
      }
    }
  }
}
`;

test('kill -9 during writes leaves every block old or new, never undecryptable', async () => {
  requireFuse();
  p = await makeProject();
  d = await startDaemon(p);
  for (let i = 0; i < 4; i++) await writeFile(join(p.mnt, `f${i}`), Buffer.alloc(BLOCKS * 4096, 0));
  const writer = node(CRASH_WRITER, [p.mnt]);
  await new Promise((r) => setTimeout(r, 1500));
  d.child.kill('SIGKILL');
  await new Promise((r) => d!.child.once('exit', r));
  await writer;
  await run('fusermount', ['-uz', p.mnt]);
  d = await startDaemon(p);
  let versions = new Set<number>();
  for (let i = 0; i < 4; i++) {
    const data = await readFile(join(p.mnt, `f${i}`));
    expect(data.length).toBe(BLOCKS * 4096);
    for (let b = 0; b < BLOCKS; b++) {
      const block = data.subarray(b * 4096, (b + 1) * 4096);
      // One version per block: the whole block is old or new content.
      expect(block.every((x) => x === block[0])).toBe(true);
      versions.add(block[0]!);
    }
  }
  // The writer got far enough for the crash to hit real rewrites.
  versions = new Set([...versions].filter((v) => v !== 0));
  expect(versions.size).toBeGreaterThan(0);
}, 180_000);
