/**
 * Interop with the real gocryptfs 2.3 through FUSE, both directions:
 *  (a) a tree written by `tre-crypt init` + `tre-crypt encrypt` mounts with `gocryptfs -passfile`
 *      and reads back byte-identical, names and contents;
 *  (b) a tree written through a gocryptfs mount (volume made by `gocryptfs -init` and by
 *      `tre-crypt init`) decrypts with the library and with `tre-crypt decrypt`.
 * Needs root (or fuse permissions) and /dev/fuse; every mount is undone in afterAll.
 */
import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { decryptTree, openVolume } from '../src/volume.js';

jest.setTimeout(240_000);

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../dist/cli/tre-crypt.js', import.meta.url));
const MiB = 1 << 20;

let work: string;
let passfile: string;
const PASSPHRASE = 'interop passphrase with spaces';
const mounts: string[] = [];

/** The plaintext tree both directions use: size and name edge cases, nested folders. */
const SIZES = [0, 1, 4095, 4096, 4097, MiB + 3];
const NAMES = [
  'with spaces in it.txt',
  'Grüße aus Köln 🌍.csv',
  'n'.repeat(175), // the longest name that is not hashed
  'l'.repeat(176), // the shortest long name
  'ü'.repeat(127) + 'x', // 255 bytes: the longest name possible
];

async function buildTree(root: string, withBig: boolean): Promise<void> {
  await mkdir(join(root, 'level 1', 'level 2', 'ébène'), { recursive: true });
  await mkdir(join(root, 'empty folder'));
  for (const size of SIZES) {
    await writeFile(join(root, `size-${size}`), randomBytes(size));
  }
  for (const [i, name] of NAMES.entries()) {
    await writeFile(join(root, name), `root ${i}`);
    await writeFile(join(root, 'level 1', name), randomBytes(4097 * i));
    await mkdir(join(root, 'level 1', 'level 2', 'ébène', name));
    await writeFile(join(root, 'level 1', 'level 2', 'ébène', name, 'inside'), name);
  }
  if (withBig) await writeFile(join(root, 'level 1', 'big-64MiB'), randomBytes(64 * MiB));
}

/** Relative path -> "dir" or "<size> <sha256>", for an exact comparison of two trees. */
async function manifest(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string) => {
    for (const name of await readdir(join(root, rel))) {
      const p = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(root, p));
      if (st.isDirectory()) {
        out.set(p, 'dir');
        await walk(p);
      } else {
        const data = await readFile(join(root, p));
        out.set(p, `${data.length} ${createHash('sha256').update(data).digest('hex')}`);
      }
    }
  };
  await walk('');
  return out;
}

/**
 * gocryptfs forks a daemon that inherits the parent's stdio, so waiting for pipes to close
 * (what execFile does) would hang: wait for the parent's exit and collect stderr in a file.
 */
async function mountGocryptfs(cipher: string, mnt: string): Promise<void> {
  await mkdir(mnt, { recursive: true });
  const log = join(work, `mount-${mounts.length}-${randomBytes(3).toString('hex')}.log`);
  const logFd = openSync(log, 'w');
  try {
    const child = spawn('gocryptfs', ['-q', '-nosyslog', '-passfile', passfile, cipher, mnt], {
      stdio: ['ignore', 'ignore', logFd],
    });
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', resolve);
    });
    if (code !== 0)
      throw new Error(`gocryptfs mount failed (${code}): ${await readFile(log, 'utf8')}`);
  } finally {
    closeSync(logFd);
  }
  mounts.push(mnt);
}

async function unmount(mnt: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await run('fusermount', ['-u', mnt]);
      mounts.splice(mounts.indexOf(mnt), 1);
      return;
    } catch (err) {
      if (attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

async function treCrypt(...args: string[]): Promise<{ stdout: string; stderr: string }> {
  return run(process.execPath, [CLI, ...args]);
}

beforeAll(async () => {
  if (!existsSync('/dev/fuse')) {
    throw new Error(
      '/dev/fuse is missing: the gocryptfs interop tests need FUSE (run as root with fuse3)',
    );
  }
  execFileSync('gocryptfs', ['-version'], { stdio: 'pipe' });
  work = await mkdtemp(join(tmpdir(), 'tre-interop-'));
  passfile = join(work, 'passfile');
  await writeFile(passfile, PASSPHRASE + '\n');
});

afterAll(async () => {
  // Unmount whatever a failed test left mounted before removing the directories under it.
  for (const mnt of [...mounts]) {
    await unmount(mnt).catch(() =>
      execFileSync('fusermount', ['-u', '-z', mnt], { stdio: 'ignore' }),
    );
  }
  if (work) await rm(work, { recursive: true, force: true });
});

describe('(a) written by tre-crypt, read by gocryptfs', () => {
  it('mounts with gocryptfs -passfile (default scrypt N=2^16) and reads back byte-identical', async () => {
    const plain = join(work, 'a-plain');
    const cipher = join(work, 'a-cipher');
    const mnt = join(work, 'a-mnt');
    await buildTree(plain, true);
    await treCrypt('init', '--passfile', passfile, cipher);
    const conf = JSON.parse(await readFile(join(cipher, 'gocryptfs.conf'), 'utf8')) as {
      ScryptObject: { N: number };
    };
    expect(conf.ScryptObject.N).toBe(65536);
    const { stdout } = await treCrypt('encrypt', '--passfile', passfile, plain, cipher);
    expect(stdout).toMatch(/^encrypted 22 files, 9 directories, /);

    await mountGocryptfs(cipher, mnt);
    try {
      const expected = await manifest(plain);
      const actual = await manifest(mnt);
      expect([...actual.keys()].sort()).toEqual([...expected.keys()].sort());
      expect(actual).toEqual(expected);
      // gocryptfs reports the plaintext sizes of our files through stat as well.
      expect((await lstat(join(mnt, `size-${MiB + 3}`))).size).toBe(MiB + 3);
    } finally {
      await unmount(mnt);
    }
  });
});

describe('(b) written through a gocryptfs mount, read by crypto/ and tre-crypt', () => {
  it.each([
    [
      'gocryptfs -init',
      async (cipher: string) => {
        await mkdir(cipher);
        await run('gocryptfs', ['-init', '-q', '-scryptn', '10', '-passfile', passfile, cipher]);
      },
    ],
    [
      'tre-crypt init',
      async (cipher: string) => {
        await treCrypt('init', '--scryptn', '10', '--passfile', passfile, cipher);
      },
    ],
  ])('volume made by %s', async (label, init) => {
    const tag = label.split(' ')[0]!;
    const plain = join(work, `b-${tag}-plain`);
    const cipher = join(work, `b-${tag}-cipher`);
    const mnt = join(work, `b-${tag}-mnt`);
    await buildTree(plain, false);
    await init(cipher);

    await mountGocryptfs(cipher, mnt);
    try {
      await run('cp', ['-a', `${plain}/.`, mnt]);
    } finally {
      await unmount(mnt);
    }
    const expected = await manifest(plain);
    // Long names really were hashed by gocryptfs.
    expect((await readdir(cipher)).filter((e) => e.endsWith('.name')).length).toBe(2);

    const volume = await openVolume(cipher, { passphrase: Buffer.from(PASSPHRASE) });
    const byLibrary = join(work, `b-${tag}-lib`);
    try {
      await decryptTree(volume, byLibrary);
    } finally {
      volume.close();
    }
    expect(await manifest(byLibrary)).toEqual(expected);

    const byCli = join(work, `b-${tag}-cli`);
    const { stdout } = await treCrypt('decrypt', '--passfile', passfile, cipher, byCli);
    expect(stdout).toMatch(/^decrypted 21 files, 9 directories, /);
    expect(await manifest(byCli)).toEqual(expected);

    // And by master key, in the dashed form gocryptfs prints.
    const key = execFileSync('gocryptfs-xray', ['-dumpmasterkey', join(cipher, 'gocryptfs.conf')], {
      input: PASSPHRASE + '\n',
    })
      .toString()
      .trim();
    const dashed = key.match(/.{8}/g)!.join('-');
    const byKey = join(work, `b-${tag}-key`);
    execFileSync(process.execPath, [CLI, 'decrypt', '--masterkey-stdin', cipher, byKey], {
      input: dashed + '\n',
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    expect(await manifest(byKey)).toEqual(expected);
  });

  it('reads a file appended to through gocryptfs in a volume written by tre-crypt', async () => {
    const plain = join(work, 'c-plain');
    const cipher = join(work, 'c-cipher');
    const mnt = join(work, 'c-mnt');
    await mkdir(plain);
    const first = randomBytes(5000);
    await writeFile(join(plain, 'grow.bin'), first);
    await treCrypt('init', '--scryptn', '10', '--passfile', passfile, cipher);
    await treCrypt('encrypt', '--passfile', passfile, plain, cipher);
    const more = randomBytes(9000);
    await mountGocryptfs(cipher, mnt);
    try {
      await writeFile(join(mnt, 'grow.bin'), more, { flag: 'a' });
      await writeFile(join(mnt, 'new via gocryptfs'), 'hello');
    } finally {
      await unmount(mnt);
    }
    const out = join(work, 'c-out');
    await treCrypt('decrypt', '--passfile', passfile, cipher, out);
    expect((await readFile(join(out, 'grow.bin'))).equals(Buffer.concat([first, more]))).toBe(true);
    expect(await readFile(join(out, 'new via gocryptfs'), 'utf8')).toBe('hello');
  });
});
