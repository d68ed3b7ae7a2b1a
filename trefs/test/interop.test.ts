/**
 * On-disk compatibility: files written through trefs decrypt with the stock gocryptfs 2.3 (fed
 * the file's DEK as master key) and with crypto/; the names decrypt with gocryptfs under the
 * volume key; a file gocryptfs wrote under a registered DEK reads back through trefs.
 */
import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFile, copyFile, mkdir, open, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  HEADER_LEN,
  NameTransform,
  decryptFile,
  parseHeader,
  unwrapKey,
  wrapKey,
} from '@tre/crypto';
import { dekContext } from '@tre/crypto';
import {
  cleanup,
  isMounted,
  makeProject,
  readState,
  requireFuse,
  run,
  startDaemon,
  stopDaemon,
  type Daemon,
  type Project,
} from './helpers.js';

let p: Project | undefined;
let d: Daemon | undefined;
const mounts: string[] = [];

beforeAll(() => requireFuse());

afterAll(async () => {
  for (const m of mounts)
    if (isMounted(m)) await run('fusermount', ['-uz', m]).catch(() => undefined);
  await cleanup(p, d);
}, 60_000);

/** Mounts with the stock gocryptfs, the master key on stdin as hex. */
function gocryptfs(args: string[], key: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('gocryptfs', ['-q', '-masterkey=stdin', ...args], {
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.stdin.end(key.toString('hex') + '\n');
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`gocryptfs: ${err}`))));
  });
}

async function fileIdOf(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const h = Buffer.alloc(HEADER_LEN);
    await fh.read(h, 0, HEADER_LEN, 0);
    return parseHeader(h).toString('hex');
  } finally {
    await fh.close();
  }
}

async function dekOf(proj: Project, fileId: string): Promise<Buffer> {
  const rec = (await readState(proj)).deks.find((x) => x.fileId === fileId) as
    { wrappedDek: Parameters<typeof unwrapKey>[0] } | undefined;
  if (!rec) throw new Error(`no DEK registered for ${fileId}`);
  return Buffer.from(await unwrapKey(rec.wrappedDek, proj.projectKey, dekContext('p1', fileId)));
}

test('files and names written through trefs open with gocryptfs and crypto/', async () => {
  p = await makeProject();
  d = await startDaemon(p);
  const small = Buffer.from('hello gocryptfs\n');
  const big = randomBytes(300_000);
  const longName = 'n'.repeat(240) + '.csv';
  await writeFile(join(p.mnt, 'small.txt'), small);
  await writeFile(join(p.mnt, 'big.bin'), big);
  // A sparse file: a hole of whole blocks between two written ranges.
  const fh = await open(join(p.mnt, 'sparse.bin'), 'w');
  await fh.write(Buffer.from('start'), 0, 5, 0);
  await fh.write(Buffer.from('end'), 0, 3, 100_000);
  await fh.close();
  await mkdir(join(p.mnt, 'sub'));
  await writeFile(join(p.mnt, 'sub', longName), small);
  const expected: Record<string, Buffer> = {
    'small.txt': small,
    'big.bin': big,
    'sparse.bin': Buffer.concat([
      Buffer.from('start'),
      Buffer.alloc(100_000 - 5),
      Buffer.from('end'),
    ]),
  };
  expect(await readFile(join(p.mnt, 'sparse.bin'))).toEqual(expected['sparse.bin']);
  await stopDaemon(d, p.mnt);
  d = undefined;

  // Names: the whole tree under the volume key.
  const gm = join(p.base, 'gocryptfs-names');
  await mkdir(gm);
  await gocryptfs([p.cipher, gm], p.volumeKey);
  mounts.push(gm);
  expect((await readdir(gm)).sort()).toEqual(['big.bin', 'small.txt', 'sparse.bin', 'sub']);
  expect(await readdir(join(gm, 'sub'))).toEqual([longName]);
  await run('fusermount', ['-u', gm]);

  // Contents: each file with its own DEK.
  const names = new NameTransform(p.volumeKey);
  const rootIv = await readFile(join(p.cipher, 'gocryptfs.diriv'));
  for (const [name, content] of Object.entries(expected)) {
    const cipherPath = join(p.cipher, names.encryptName(name, rootIv));
    const dek = await dekOf(p, await fileIdOf(cipherPath));
    const out = join(p.base, `crypto-${name}`);
    await decryptFile(dek, cipherPath, out);
    expect((await readFile(out)).equals(content)).toBe(true);

    const gc = join(p.base, `gc-${name}`);
    const gmnt = join(p.base, `gm-${name}`);
    await mkdir(gc);
    await mkdir(gmnt);
    await copyFile(cipherPath, join(gc, 'f'));
    await gocryptfs(['-plaintextnames', gc, gmnt], dek);
    mounts.push(gmnt);
    expect((await readFile(join(gmnt, 'f'))).equals(content)).toBe(true);
    await run('fusermount', ['-u', gmnt]);
  }
}, 120_000);

test('a file gocryptfs wrote under a registered DEK reads back through trefs', async () => {
  const proj = p!;
  const dek = randomBytes(32);
  const gc = join(proj.base, 'foreign-c');
  const gmnt = join(proj.base, 'foreign-m');
  await mkdir(gc);
  await mkdir(gmnt);
  await gocryptfs(['-plaintextnames', gc, gmnt], dek);
  mounts.push(gmnt);
  const content = randomBytes(50_000);
  await writeFile(join(gmnt, 'f'), content);
  await run('fusermount', ['-u', gmnt]);
  // Place it in the project tree under its encrypted name and register its DEK, as an
  // upload does.
  const names = new NameTransform(proj.volumeKey);
  const rootIv = await readFile(join(proj.cipher, 'gocryptfs.diriv'));
  const target = join(proj.cipher, names.encryptName('uploaded.bin', rootIv));
  await copyFile(join(gc, 'f'), target);
  const fileId = await fileIdOf(target);
  const rec = {
    fileId,
    epoch: 1,
    wrappedDek: await wrapKey(dek, proj.projectKey, dekContext('p1', fileId)),
  };
  await appendFile(proj.state + '.deks.jsonl', JSON.stringify(rec) + '\n');
  d = await startDaemon(proj);
  expect((await readFile(join(proj.mnt, 'uploaded.bin'))).equals(content)).toBe(true);
}, 120_000);
