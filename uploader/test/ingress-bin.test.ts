/** `tre-ingress` is a command of its own: help, version, usage errors and a running service. */
import { describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = JSON.parse(readFileSync(join(here, '..', 'package.json'), 'utf8')) as {
  version: string;
  bin: Record<string, string>;
};
const BIN = join(here, '..', pkg.bin['tre-ingress']!);
const run = (...args: string[]) =>
  spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });

describe('tre-ingress', () => {
  it('prints its options with --help and its version with --version', () => {
    const help = run('--help');
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/Usage: tre-ingress/);
    expect(help.stdout).toMatch(/--root <dir>/);
    expect(help.stdout).toMatch(/--users <file>/);
    const v = run('--version');
    expect({ status: v.status, out: v.stdout.trim() }).toEqual({ status: 0, out: pkg.version });
  });

  it('refuses a missing --root with exit code 2', () => {
    const r = run('--users', '/nonexistent');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--root/);
  });

  it('serves until SIGTERM', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tre-ingress-bin-'));
    const users = join(dir, 'users.json');
    const tok = createHash('sha256').update('bin-token').digest('hex');
    writeFileSync(
      users,
      JSON.stringify({ users: [{ tokenSha256: tok, username: 'u', roles: {} }] }),
    );
    const p = spawn(
      process.execPath,
      [BIN, '--root', join(dir, 'root'), '--port', '0', '--users', users],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    try {
      const port = await new Promise<number>((resolve, reject) => {
        let out = '';
        p.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /listening on [^:]+:(\d+)/.exec(out);
          if (m) resolve(Number(m[1]));
        });
        p.once('exit', (c) => reject(new Error(`exited ${c}`)));
      });
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
      const code = await new Promise<number | null>((resolve) => {
        p.once('exit', (c) => resolve(c));
        p.kill('SIGTERM');
      });
      expect(code).toBe(0);
    } finally {
      if (p.exitCode === null) p.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
