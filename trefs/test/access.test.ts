/**
 * Starting and stopping access: a wrong KEK, a missing key service and an ended membership
 * mount nothing and say why; the KEK never shows in argv, environment or logs; revocation
 * stops new opens within 5 seconds; the key agent answers for known files only.
 */
import { afterEach, describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { generateKeyPair, decryptFile } from '@tre/crypto';
import {
  CLI,
  cleanup,
  isMounted,
  makeProject,
  readState,
  requireFuse,
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

/** Runs `trefs mount` to completion with the key on fd 3. */
function mountOnce(
  proj: Project,
  keyJson: string,
  kms = `file:${proj.state}`,
): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [CLI, 'mount', proj.cipher, proj.mnt, '--project', 'p1', '--kms', kms, '--key-fd', '3'],
      { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    (child.stdio[3] as NodeJS.WritableStream).end(keyJson);
    child.on('exit', (code) => resolve({ code, stderr }));
  });
}

describe('refusals before mounting', () => {
  test('a wrong KEK mounts nothing and says so (exit 4)', async () => {
    requireFuse();
    p = await makeProject();
    const other = await generateKeyPair('x25519');
    const res = await mountOnce(
      p,
      JSON.stringify({
        kem: 'x25519',
        privateKey: Buffer.from(other.privateKey).toString('base64url'),
      }),
    );
    expect(res.code).toBe(4);
    expect(res.stderr).toMatch(/wrong KEK/);
    expect(isMounted(p.mnt)).toBe(false);
  }, 60_000);

  test('an unreachable key service mounts nothing (exit 5)', async () => {
    p = await makeProject();
    const res = await mountOnce(p, p.keyJson, `file:${join(p.base, 'missing.json')}`);
    expect(res.code).toBe(5);
    expect(res.stderr).toMatch(/key service/);
    expect(isMounted(p.mnt)).toBe(false);
  }, 60_000);

  test('an ended membership mounts nothing (exit 6)', async () => {
    p = await makeProject();
    const state = JSON.parse(await readFile(p.state, 'utf8'));
    state.membership = { active: false, reason: 'removed by the PI' };
    await writeFile(p.state, JSON.stringify(state));
    const res = await mountOnce(p, p.keyJson);
    expect(res.code).toBe(6);
    expect(res.stderr).toMatch(/removed by the PI/);
    expect(isMounted(p.mnt)).toBe(false);
  }, 60_000);

  test('malformed key input is refused (exit 3)', async () => {
    p = await makeProject();
    const res = await mountOnce(p, '{"kem":"x25519"}');
    expect(res.code).toBe(3);
    expect(isMounted(p.mnt)).toBe(false);
  }, 60_000);
});

describe('a running mount', () => {
  test('the KEK is in neither argv, environment nor logs', async () => {
    requireFuse();
    p = await makeProject();
    d = await startDaemon(p, ['--log-level', 'debug']);
    await writeFile(join(p.mnt, 'f.txt'), 'data');
    expect(await readFile(join(p.mnt, 'f.txt'), 'utf8')).toBe('data');
    const pid = d.child.pid!;
    const secrets = [
      Buffer.from(p.kek.privateKey).toString('base64url'),
      Buffer.from(p.kek.privateKey).toString('base64'),
      Buffer.from(p.kek.privateKey).toString('hex'),
    ];
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'latin1');
    const environ = await readFile(`/proc/${pid}/environ`, 'latin1');
    for (const s of secrets) {
      expect(cmdline).not.toContain(s);
      expect(environ).not.toContain(s);
      expect(d.stderr()).not.toContain(s);
    }
    expect(d.stderr()).toContain('"msg":"mounted"');
  }, 60_000);

  test('revoked membership stops new opens within 5 seconds and wipes access', async () => {
    requireFuse();
    p = await makeProject();
    d = await startDaemon(p, ['--poll-ms', '1000']);
    const f = join(p.mnt, 'secret.csv');
    await writeFile(f, 'id,value\n1,42\n');
    const state = JSON.parse(await readFile(p.state, 'utf8'));
    state.membership = { active: false, reason: 'window closed' };
    await writeFile(p.state, JSON.stringify(state));
    const t0 = Date.now();
    let code: string | undefined;
    while (Date.now() - t0 < 5000) {
      try {
        await readFile(f);
      } catch (err) {
        code = (err as NodeJS.ErrnoException).code;
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(code).toBe('EACCES');
    expect(Date.now() - t0).toBeLessThan(5000);
    await expect(writeFile(join(p.mnt, 'new'), 'x')).rejects.toMatchObject({ code: 'EACCES' });
    expect(d.stderr()).toMatch(/membership ended/);
  }, 60_000);

  test('audit events carry pid and executable of the caller', async () => {
    requireFuse();
    p = await makeProject();
    d = await startDaemon(p);
    const { run } = await import('./helpers.js');
    await run('/bin/sh', [
      '-c',
      `echo x > '${join(p.mnt, 'a')}'; cat '${join(p.mnt, 'a')}' >/dev/null; mv '${join(p.mnt, 'a')}' '${join(p.mnt, 'b')}'; rm '${join(p.mnt, 'b')}'`,
    ]);
    let audit: Awaited<ReturnType<typeof readState>>['audit'] = [];
    for (let i = 0; i < 50 && audit.length < 4; i++) {
      await new Promise((r) => setTimeout(r, 200));
      audit = (await readState(p)).audit;
    }
    expect(audit.map((e) => e.action)).toEqual(['create', 'open', 'rename', 'unlink']);
    const open = audit[1]!;
    expect(open.exe).toMatch(/cat$/);
    expect(open.pid).toBeGreaterThan(1);
    const ids = new Set(audit.map((e) => e.fileId));
    expect(ids.size).toBe(1);
    expect(JSON.stringify(audit)).not.toContain('"a"');
  }, 60_000);

  test('the key agent releases DEKs for known paths only, over a 0600 socket', async () => {
    requireFuse();
    p = await makeProject();
    const sock = join(p.base, 'agent.sock');
    d = await startDaemon(p, ['--key-agent', sock]);
    await writeFile(join(p.mnt, 'data.bin'), Buffer.alloc(10000, 7));
    expect((await stat(sock)).mode & 0o777).toBe(0o600);
    const ask = (body: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = request({ socketPath: sock, method: 'POST', path: '/' }, (res) => {
          let b = '';
          res.on('data', (c) => (b += c));
          res.on('end', () => resolve({ status: res.statusCode!, body: b }));
        });
        req.on('error', reject);
        req.end(body);
      });
    const ok = await ask(JSON.stringify({ path: 'data.bin' }));
    expect(ok.status).toBe(200);
    const key = Buffer.from(JSON.parse(ok.body).key as string, 'base64');
    expect(key.length).toBe(32);
    // The released key really is the file's DEK: it decrypts the ciphertext.
    const { readdir } = await import('node:fs/promises');
    const entry = (await readdir(p.cipher)).find((e) => e !== 'gocryptfs.diriv')!;
    const out = join(p.base, 'plain.bin');
    await decryptFile(key, join(p.cipher, entry), out);
    expect((await readFile(out)).equals(Buffer.alloc(10000, 7))).toBe(true);
    expect((await ask(JSON.stringify({ path: 'nope.bin' }))).status).toBe(404);
    expect((await ask('not json')).status).toBe(400);
  }, 60_000);
});
