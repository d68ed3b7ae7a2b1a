/**
 * End to end on loopback: `tre upload` (master-key mode) into a real ingress process, the
 * four-eyes review, and the result mounted with the stock gocryptfs (FUSE, as root) and read
 * back byte-identical. Also: symlinks and FIFOs refused before anything is sent, a random
 * marker never reaching the server's storage, database or logs, and rejection deleting files.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { IngressStore } from '../src/ingress/store.js';
import {
  api,
  killAll,
  makeTree,
  startIngress,
  TOKENS,
  tre,
  uploadArgs,
  writeUsers,
} from './helpers.js';
import type { Ingress } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'tre-up-e2e-'));
const root = join(dir, 'server');
const src = join(dir, 'src', 'study');
const mk = randomBytes(32).toString('hex');
const marker = randomBytes(32);
const mounts: string[] = [];
let ingress: Ingress;

const DEEP = Array.from({ length: 30 }, (_, i) => `d${i}`).join('/');
const LONG = 'ü'.repeat(100) + '.csv';

async function listFiles(base: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(relative(base, p));
    }
  };
  await walk(base);
  return out.sort();
}

function contains(hay: Buffer, needles: Buffer[]): boolean {
  return needles.some((n) => hay.includes(n));
}

beforeAll(async () => {
  await writeUsers(join(dir, 'users.json'), ['p1', 'p2', 'p3']);
  await makeTree(src, {
    'big.bin': 3 * 1024 * 1024 + 12345,
    'Ärztebrief – Übersicht.txt': Buffer.from('Grüße aus München\n'),
    '日本語/データ.csv': 5000,
    [`${DEEP}/leaf.txt`]: 100,
    [LONG]: 777,
    'empty.dat': Buffer.alloc(0),
    [`marker-${marker.toString('hex')}.txt`]: Buffer.concat([
      randomBytes(5000),
      marker,
      Buffer.from(marker.toString('hex')),
      randomBytes(3000),
    ]),
  });
  // Sparse: a hole of 5 MiB with a few bytes at the end.
  await writeFile(join(src, 'sparse.img'), Buffer.alloc(0));
  await truncate(join(src, 'sparse.img'), 5 * 1024 * 1024);
  await writeFile(join(src, 'sparse.img'), Buffer.from('end'), { flag: 'a' });
  ingress = await startIngress(root, join(dir, 'users.json'));
}, 30_000);

afterAll(async () => {
  for (const m of mounts) {
    try {
      execFileSync('fusermount3', ['-u', m], { stdio: 'ignore' });
    } catch {
      execFileSync('fusermount3', ['-u', '-z', m], { stdio: 'ignore' });
    }
  }
  await ingress?.stop();
  killAll();
  await rm(dir, { recursive: true, force: true });
});

describe('tre upload into the ingress', () => {
  it('refuses symlinks and FIFOs before sending anything (exit 4)', async () => {
    const bad = join(dir, 'bad');
    await makeTree(bad, { 'ok.txt': 10 });
    await symlink('/etc/passwd', join(bad, 'link'));
    execFileSync('mkfifo', [join(bad, 'fifo')]);
    const r = await tre(uploadArgs({ paths: [bad], project: 'p3', ingress: ingress.url, dir }), mk)
      .done;
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('symbolic link');
    expect(r.stderr).toContain('FIFO');
    const list = await api(ingress.url, TOKENS.alice, 'GET', '/v1/projects/p3/ingress-requests');
    expect(list.json).toEqual([]);
  }, 30_000);

  it('refuses a project where the uploader is not a data owner (exit 3)', async () => {
    const r = await tre(
      [
        ...uploadArgs({
          paths: [src],
          project: 'p1',
          ingress: ingress.url,
          dir,
          state: join(dir, 'carol-state'),
        }),
        '--token-file',
        join(dir, 'carol.token'),
      ],
      mk,
    ).done;
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/needs the role data_owner in project p1/);
  }, 30_000);

  it('uploads, passes four eyes, and the tree mounts with the stock gocryptfs identically', async () => {
    const r = await tre(uploadArgs({ paths: [src], project: 'p1', ingress: ingress.url, dir }), mk)
      .done;
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const id = /ingress request ([0-9a-f]+)/.exec(r.stdout)![1]!;
    expect(r.stdout).toContain('submitted for review');

    const view = (await api(ingress.url, TOKENS.bob, 'GET', `/v1/ingress-requests/${id}`)).json as {
      state: string;
      files: Array<{ state: string }>;
    };
    expect(view.state).toBe('submitted');
    expect(view.files).toHaveLength(8);
    expect(view.files.every((f) => f.state === 'staged')).toBe(true);
    // Nothing is visible before the review: the cipher tree holds only the root diriv.
    expect(await listFiles(join(root, 'projects', 'p1', 'cipher'))).toEqual(['gocryptfs.diriv']);

    const self = await api(ingress.url, TOKENS.alice, 'POST', `/v1/ingress-requests/${id}/review`, {
      decision: 'confirm',
    });
    expect(self.status).toBe(403);
    expect(JSON.stringify(self.json)).toContain('four_eyes');

    const ok = await api(ingress.url, TOKENS.bob, 'POST', `/v1/ingress-requests/${id}/review`, {
      decision: 'confirm',
    });
    expect(ok.status).toBe(200);
    expect((ok.json as { state: string }).state).toBe('confirmed');
    expect(await readdir(join(root, 'projects', 'p1', 'staging'))).toEqual([]);

    // Group-only permissions on everything published.
    const cipher = join(root, 'projects', 'p1', 'cipher');
    for (const f of await listFiles(cipher)) {
      const st = await stat(join(cipher, f));
      expect([0o640, 0o440]).toContain(st.mode & 0o7777);
    }
    expect((await stat(cipher)).mode & 0o7777).toBe(0o2750);

    const mnt = join(dir, 'mnt');
    await mkdir(mnt);
    await new Promise<void>((resolve, reject) => {
      const p = spawn('gocryptfs', ['-q', '-nosyslog', '-masterkey=stdin', cipher, mnt], {
        stdio: ['pipe', 'inherit', 'inherit'],
      });
      p.stdin.end(mk + '\n');
      p.once('exit', (code) =>
        code === 0 ? resolve() : reject(new Error(`gocryptfs exited ${code}`)),
      );
    });
    mounts.push(mnt);
    const want = await listFiles(join(dir, 'src'));
    expect(await listFiles(mnt)).toEqual(want);
    for (const f of want) {
      expect((await readFile(join(mnt, f))).equals(await readFile(join(dir, 'src', f)))).toBe(true);
    }
    execFileSync('fusermount3', ['-u', mnt]);
    mounts.pop();
  }, 120_000);

  it('never lets the plaintext marker reach storage, database or logs', async () => {
    const needles = [
      marker,
      Buffer.from(marker.toString('hex')),
      Buffer.from(marker.toString('base64')),
      Buffer.from(marker.toString('base64url')),
    ];
    for (const f of await listFiles(root)) {
      expect(contains(await readFile(join(root, f)), needles)).toBe(false);
    }
    expect(contains(Buffer.from(ingress.log.join('')), needles)).toBe(false);
    expect(ingress.log.join('')).toContain('upload.complete');
  });

  it('on rejection deletes the files and records it in a verifiable audit chain', async () => {
    const other = join(dir, 'src2');
    await makeTree(other, { 'a.txt': 1000, 'b/c.txt': 2000 });
    const r = await tre(
      uploadArgs({ paths: [other], project: 'p2', ingress: ingress.url, dir }),
      mk,
    ).done;
    expect(r.code).toBe(0);
    const id = /ingress request ([0-9a-f]+)/.exec(r.stdout)![1]!;
    expect(await readdir(join(root, 'projects', 'p2', 'staging'))).toHaveLength(2);
    const no = await api(ingress.url, TOKENS.bob, 'POST', `/v1/ingress-requests/${id}/review`, {
      decision: 'reject',
      reason: 'contains dates of birth',
    });
    expect(no.status).toBe(200);
    const v = no.json as { state: string; files: Array<{ state: string }> };
    expect(v.state).toBe('rejected');
    expect(v.files.map((f) => f.state)).toEqual(['deleted', 'deleted']);
    expect(await readdir(join(root, 'projects', 'p2', 'staging'))).toEqual([]);
    expect(await listFiles(join(root, 'projects', 'p2', 'cipher'))).toEqual(['gocryptfs.diriv']);
    const again = await api(ingress.url, TOKENS.bob, 'POST', `/v1/ingress-requests/${id}/review`, {
      decision: 'confirm',
    });
    expect(again.status).toBe(409);

    const store = new IngressStore(join(root, 'ingress.sqlite'));
    try {
      const actions = store.auditLog().map((a) => a.action);
      expect(actions).toEqual(
        expect.arrayContaining([
          'ingress.open',
          'upload.create',
          'upload.complete',
          'ingress.submit',
          'ingress.confirm',
          'ingress.reject',
        ]),
      );
      const confirms = store.auditLog().filter((a) => a.action === 'ingress.confirm');
      expect(confirms.map((a) => `${a.actor}:${a.result}`)).toEqual([
        'alice:denied:four_eyes',
        'bob:ok',
      ]);
      expect(store.verifyAudit()).toBeNull();
    } finally {
      store.close();
    }
  }, 60_000);

  it('sweeps debris of writes interrupted by a crash on restart and keeps staged uploads', async () => {
    // p1 holds the deep, long-named tree uploaded above; plant what a kill -9 leaves.
    const staging = join(root, 'projects', 'p1', 'staging');
    await mkdir(join(staging, '.tmp-00112233445566ff'), { recursive: true });
    await writeFile(join(staging, '.tmp-00112233445566ff', 'gocryptfs.diriv'), randomBytes(16));
    await writeFile(join(staging, '.tmp-aabbccddeeff0011'), randomBytes(16));
    await writeFile(join(staging, 'not-debris'), 'x');
    await ingress.kill9();
    ingress = await startIngress(root, join(dir, 'users.json'), [], ingress.port);
    expect((await readdir(staging)).sort()).toEqual(['not-debris']);
    await rm(join(staging, 'not-debris'));
    // Nothing of the ingress's own building is ever left among the ciphertexts.
    const cipherEntries = await listFiles(join(root, 'projects', 'p1', 'cipher'));
    expect(cipherEntries.filter((e) => /(^|\/)\.|\.tmp/.test(e))).toEqual([]);
  }, 60_000);

  it('answers --help and --version with exit 0 and unknown options with exit 2', async () => {
    for (const args of [
      ['--help'],
      ['--version'],
      ['upload', '--help'],
      ['keygen', '--help'],
      ['key', 'status', '--help'],
      ['ingress', 'serve', '--help'],
    ]) {
      expect((await tre(args).done).code).toBe(0);
    }
    expect((await tre(['upload', '--bogus']).done).code).toBe(2);
  }, 60_000);
});
