/**
 * tre-lab-helper as the server extension runs it: a process, the request on stdin, one JSON
 * answer on stdout, against a real KMS. Checks the export folder, files it (frozen snapshots,
 * DEKs wrapped to the requester and each reviewer), and refuses what it must.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { encodePublicKey, generateKeyPair, unwrapKey } from '@tre/crypto';
import type { KmsClient } from '@tre/kms-service/client';
import { startKms, type TestKms } from './kms.js';

const CLI = new URL('../helper/dist/cli.js', import.meta.url).pathname;
const P = 'helper-p';
let t: TestKms;
let dir: string;
const kps: Record<string, Awaited<ReturnType<typeof generateKeyPair>>> = {};
const clients: Record<string, KmsClient> = {};

function run(
  cmd: string[],
  input: unknown,
): Promise<{ code: number; out: Record<string, unknown>; err: string; argv: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...cmd], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) =>
      resolve({
        code: code ?? -1,
        out: out.trim() ? (JSON.parse(out) as Record<string, unknown>) : {},
        err,
        argv: [CLI, ...cmd].join(' '),
      }),
    );
    p.stdin.end(typeof input === 'string' ? input : JSON.stringify(input));
  });
}

const tokenOf = (name: string): string => t.token(name);

beforeAll(async () => {
  t = await startKms();
  dir = mkdtempSync(join(tmpdir(), 'tre-lab-helper-'));
  for (const name of ['pia', 'dora', 'rex', 'nokey']) {
    clients[name] = await t.onboard(name);
    if (name !== 'nokey') {
      kps[name] = await generateKeyPair();
      await clients[name]!.addKek(encodePublicKey(kps[name]!));
    }
  }
  await clients.pia!.proposeProject({ id: P, title: 'Helper' });
  await clients.pia!.addMember(P, { username: 'dora', role: 'data_owner' });
  await clients.pia!.addMember(P, { username: 'rex', role: 'researcher' });
  await clients.dora!.consent(P);
});

afterAll(async () => {
  await t?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('check', () => {
  test('every file of the folder with its record; non-tables are review', async () => {
    const ex = join(dir, 'check-export');
    mkdirSync(join(ex, 'sub'), { recursive: true });
    writeFileSync(join(ex, 'a.csv'), 'g,n\nx,12\n');
    writeFileSync(join(ex, 'sub', 'b.csv'), 'g,n\nx,3\n');
    writeFileSync(join(ex, 'plot.png'), 'not really a png');
    const r = await run(['check'], { exportDir: ex });
    expect(r.code).toBe(0);
    const files = r.out.files as Array<{ path: string; size: number; sdc: { verdict: string } }>;
    expect(files.map((f) => [f.path, f.sdc.verdict])).toEqual([
      ['a.csv', 'pass'],
      ['plot.png', 'review'],
      ['sub/b.csv', 'fail'],
    ]);
    expect(files[0]!.size).toBe(9);
  });

  test('a missing folder is empty; a symlink is refused; bad stdin is a usage error', async () => {
    expect((await run(['check'], { exportDir: join(dir, 'nope') })).out).toEqual({ files: [] });
    const ex = join(dir, 'link-export');
    mkdirSync(ex);
    symlinkSync('/etc/passwd', join(ex, 'passwd.csv'));
    const r = await run(['check'], { exportDir: ex });
    expect(r.code).toBe(1);
    expect(r.out).toEqual({
      error: {
        code: 'bad_export',
        message: 'passwd.csv is a symbolic link: copy the file itself into export/',
      },
    });
    const bad = await run(['check'], 'not json');
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('stdin must be one JSON object');
    expect((await run(['frobnicate'], {})).code).toBe(2);
    expect((await run(['check'], {})).err).toContain('"exportDir" must be a non-empty string');
  });
});

describe('file', () => {
  test('files the folder: snapshots in the outbox, one wrap per recipient, records attached', async () => {
    const ex = join(dir, 'file-export');
    mkdirSync(ex);
    writeFileSync(join(ex, 'ok.csv'), 'ward,n\nA,40\nB,31\n');
    writeFileSync(join(ex, 'small.csv'), 'ward,n\nA,40\nB,2\n');
    const outbox = join(dir, 'outbox');
    const token = tokenOf('rex');
    const r = await run(['file'], {
      kmsUrl: t.url,
      token,
      project: P,
      exportDir: ex,
      outbox,
      title: 'Wards',
    });
    expect(r.code).toBe(0);
    expect(r.argv).not.toContain(token);
    expect(JSON.stringify(r.out)).not.toContain(token);
    const view = r.out as {
      id: number;
      state: string;
      files: Array<{
        fileId: string;
        path: string;
        sdc: { verdict: string };
        keyHolders: string[];
      }>;
    };
    expect(view.state).toBe('draft');
    expect(view.files.map((f) => [f.path, f.sdc.verdict])).toEqual([
      ['ok.csv', 'pass'],
      ['small.csv', 'fail'],
    ]);
    for (const f of view.files) expect([...f.keyHolders].sort()).toEqual(['dora', 'pia', 'rex']);
    expect(readdirSync(join(outbox, P)).sort()).toEqual(view.files.map((f) => f.fileId).sort());
    // The filing is complete enough to submit, and a reviewer can unwrap their DEK.
    expect((await clients.rex!.submitEgress(P, view.id)).state).toBe('submitted');
    const k = await clients.dora!.egressReviewKey(P, view.id, view.files[0]!.fileId);
    const dek = await unwrapKey(k.wrapped, kps.dora!, {
      purpose: 'egress',
      projectId: P,
      fileId: view.files[0]!.fileId,
      recipient: 'dora',
    });
    expect(dek.length).toBe(32);
  });

  test('refusals: a reviewer without a key, an empty folder, a wrong token', async () => {
    const ex = join(dir, 'refuse-export');
    mkdirSync(ex);
    const base = { kmsUrl: t.url, project: P, exportDir: ex, outbox: join(dir, 'outbox2') };
    const empty = await run(['file'], { ...base, token: tokenOf('rex') });
    expect(empty.code).toBe(1);
    expect((empty.out.error as { code: string }).code).toBe('empty_export');
    writeFileSync(join(ex, 'a.csv'), 'g,n\nx,12\n');
    await clients.pia!.addMember(P, { username: 'nokey', role: 'data_owner' });
    const nokey = await run(['file'], { ...base, token: tokenOf('rex') });
    expect(nokey.out.error).toEqual({
      code: 'no_key',
      message: 'nokey has no key yet: they must set one up first',
    });
    await clients.pia!.removeMember(P, 'nokey');
    const wrong = await run(['file'], { ...base, token: 'tok-nobody' });
    expect(wrong.code).toBe(1);
    expect(wrong.out.error).toMatchObject({ status: 401, code: 'unauthorized' });
  });
});
