/**
 * `--read-only`: the data owner's view and a frozen egress folder. The same cipher tree,
 * written through a normal mount, is mounted read-only: every read works, every change fails
 * with EROFS, and the cipher directory is byte-for-byte unchanged afterwards.
 */
import { afterEach, expect, test } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFile,
  chmod,
  mkdir,
  open,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  truncate,
  unlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import {
  cleanup,
  makeProject,
  readState,
  requireFuse,
  startDaemon,
  stopDaemon,
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

/** Hash of every cipher file's path, mode and bytes. */
async function snapshot(dir: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (d: string): Promise<void> => {
    for (const e of (await readdir(d, { withFileTypes: true })).sort((a, b) =>
      a.name.localeCompare(b.name),
    )) {
      const full = join(d, e.name);
      h.update(`${full}\0${(await stat(full)).mode}\0`);
      if (e.isDirectory()) await walk(full);
      else h.update(await readFile(full));
    }
  };
  await walk(dir);
  return h.digest('hex');
}

test('a read-only mount reads everything and changes nothing (EROFS)', async () => {
  requireFuse();
  p = await makeProject();
  const data = randomBytes(70_000);
  d = await startDaemon(p);
  await mkdir(join(p.mnt, 'egress'));
  await writeFile(join(p.mnt, 'egress', 'table.csv'), 'a,b\n1,2\n');
  await writeFile(join(p.mnt, 'big.bin'), data);
  await stopDaemon(d, p.mnt);
  const before = await snapshot(p.cipher);
  const deksBefore = (await readState(p)).deks.length;

  d = await startDaemon(p, ['--read-only']);
  const m = p.mnt;
  expect(await readFile(join(m, 'egress', 'table.csv'), 'utf8')).toBe('a,b\n1,2\n');
  expect((await readFile(join(m, 'big.bin'))).equals(data)).toBe(true);
  expect((await readdir(m)).sort()).toEqual(['big.bin', 'egress']);
  expect((await stat(join(m, 'big.bin'))).size).toBe(data.length);

  const changes: Array<[string, () => Promise<unknown>]> = [
    ['create', () => writeFile(join(m, 'new.txt'), 'x')],
    ['overwrite', () => writeFile(join(m, 'big.bin'), 'x')],
    ['append', () => appendFile(join(m, 'egress', 'table.csv'), '3,4\n')],
    ['open for writing', () => open(join(m, 'big.bin'), 'r+')],
    ['truncate', () => truncate(join(m, 'big.bin'), 10)],
    ['unlink', () => unlink(join(m, 'big.bin'))],
    ['rename', () => rename(join(m, 'big.bin'), join(m, 'moved.bin'))],
    ['mkdir', () => mkdir(join(m, 'dir'))],
    ['rmdir', () => rm(join(m, 'egress'), { recursive: true })],
    ['chmod', () => chmod(join(m, 'big.bin'), 0o600)],
    ['utimes', () => utimes(join(m, 'big.bin'), new Date(0), new Date(0))],
  ];
  const codes: Record<string, string> = {};
  for (const [what, change] of changes) {
    codes[what] = await change().then(
      () => 'succeeded',
      (err: NodeJS.ErrnoException) => err.code ?? String(err),
    );
  }
  expect(codes).toEqual(Object.fromEntries(changes.map(([what]) => [what, 'EROFS'])));
  await stopDaemon(d, p.mnt);
  d = undefined;
  expect(await snapshot(p.cipher)).toBe(before);
  // No fresh keys were registered by the read-only mount either.
  expect((await readState(p)).deks.length).toBe(deksBefore);
}, 120_000);
