/** The `tre-crypt` binary as scripts call it: built output, real processes, real gocryptfs-xray. */
import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

jest.setTimeout(60_000);

const CLI = fileURLToPath(new URL('../dist/cli/tre-crypt.js', import.meta.url));
const PASSPHRASE = 'cli-secret-passphrase-4711';

let work: string;
let passfile: string;
let plain: string;
let cipher: string;
let masterKeyHex: string;

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

function treCrypt(args: string[], input?: string): Result {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    input: input ?? '',
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A failure is exactly one line on stderr, prefixed, without a stack trace. */
function expectOneLineFailure(r: Result, status: number, message: RegExp): void {
  expect(r.status).toBe(status);
  expect(r.stdout).toBe('');
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^tre-crypt: /);
  expect(lines[0]).toMatch(message);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

function expectNoSecrets(r: Result): void {
  for (const out of [r.stdout, r.stderr]) {
    expect(out).not.toContain(PASSPHRASE);
    expect(out.toLowerCase().replace(/[^0-9a-f]/g, '')).not.toContain(masterKeyHex.slice(0, 16));
  }
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tre-cli-'));
  passfile = join(work, 'passfile');
  // Like gocryptfs: only the first line counts.
  await writeFile(passfile, `${PASSPHRASE}\nignored second line\n`);
  plain = join(work, 'plain');
  await mkdir(join(plain, 'sub'), { recursive: true });
  await writeFile(join(plain, 'a.txt'), 'alpha');
  await writeFile(join(plain, 'sub', 'b.bin'), randomBytes(10000));
  cipher = join(work, 'vol');
  const r = treCrypt(['init', '--scryptn', '10', '--passfile', passfile, cipher]);
  expect(r.status).toBe(0);
  masterKeyHex = execFileSync(
    'gocryptfs-xray',
    ['-dumpmasterkey', join(cipher, 'gocryptfs.conf')],
    {
      input: PASSPHRASE + '\n',
    },
  )
    .toString()
    .trim();
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('help and version', () => {
  it.each(['init', 'encrypt', 'decrypt', 'xray'])('%s --help lists its arguments', (cmd) => {
    const r = treCrypt([cmd, '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Usage: tre-crypt ${cmd} `));
    if (cmd !== 'xray') expect(r.stdout).toContain('--passfile <file>');
    if (cmd === 'encrypt' || cmd === 'decrypt') expect(r.stdout).toContain('--masterkey-stdin');
  });

  it('--help lists all commands and the exit codes', () => {
    const r = treCrypt(['--help']);
    expect(r.status).toBe(0);
    for (const cmd of ['init', 'encrypt', 'decrypt', 'xray']) expect(r.stdout).toContain(cmd);
    expect(r.stdout).toContain('3 wrong passphrase');
  });

  it('--version prints the package version', async () => {
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    const r = treCrypt(['--version']);
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe(pkg.version);
  });
});

describe('usage errors exit 2 with one line', () => {
  it.each([
    ['no command', [], /missing command/],
    ['an unknown command', ['frobnicate'], /unknown command 'frobnicate'/],
    ['an unknown option', ['decrypt', '--bogus', 'a', 'b'], /unknown option '--bogus'/],
    [
      'a missing argument',
      ['decrypt', '--passfile', 'f', 'only-one'],
      /missing required argument 'plaindir'/,
    ],
    ['init without --passfile', ['init', 'x'], /required option '--passfile <file>'/],
    [
      'both key sources',
      ['encrypt', '--passfile', 'f', '--masterkey-stdin', 'a', 'b'],
      /cannot be used with/,
    ],
    ['no key source', ['decrypt', 'a', 'b'], /exactly one of --passfile and --masterkey-stdin/],
    ['a bad scrypt cost', ['init', '--passfile', 'f', '--scryptn', '4', 'x'], /--scryptn/],
    ['too many arguments', ['xray', 'a', 'b'], /too many arguments/],
  ])('%s', (_label, args, message) => {
    expectOneLineFailure(treCrypt(args as string[]), 2, message);
  });

  it('a malformed master key on stdin, without echoing it', () => {
    const r = treCrypt(
      ['decrypt', '--masterkey-stdin', cipher, join(work, 'never')],
      'deadbeef-cafe',
    );
    expectOneLineFailure(r, 2, /must be 64 hex digits/);
    expect(r.stderr).not.toContain('deadbeef');
  });
});

describe('init', () => {
  it('creates a volume that gocryptfs-xray unlocks', async () => {
    expect((await readdir(cipher)).sort()).toEqual(['gocryptfs.conf', 'gocryptfs.diriv']);
    expect(masterKeyHex).toMatch(/^[0-9a-f]{64}$/);
  });

  it('refuses a non-empty directory (exit 1)', () => {
    const r = treCrypt(['init', '--scryptn', '10', '--passfile', passfile, cipher]);
    expectOneLineFailure(r, 1, /is not empty/);
  });

  it('refuses a passphrase file with an empty first line', async () => {
    const empty = join(work, 'empty-pass');
    await writeFile(empty, '\nsecond\n');
    const r = treCrypt(['init', '--scryptn', '10', '--passfile', empty, join(work, 'nv')]);
    expectOneLineFailure(r, 1, /empty first line/);
  });

  it('wraps a master key given on stdin', () => {
    const key = randomBytes(32).toString('hex');
    const dir = join(work, 'given');
    const r = treCrypt(
      ['init', '--scryptn', '10', '--passfile', passfile, '--masterkey-stdin', dir],
      key,
    );
    expect(r.status).toBe(0);
    expect(r.stdout + r.stderr).not.toContain(key);
    const unwrapped = execFileSync(
      'gocryptfs-xray',
      ['-dumpmasterkey', join(dir, 'gocryptfs.conf')],
      {
        input: PASSPHRASE + '\n',
      },
    );
    expect(unwrapped.toString().trim()).toBe(key);
  });
});

describe('encrypt, decrypt, xray', () => {
  beforeAll(() => {
    const r = treCrypt(['encrypt', '--passfile', passfile, plain, cipher]);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`encrypted 2 files, 1 directories, 10005 bytes into ${cipher}\n`);
    expect(r.stderr).toBe(''); // no progress bar when stderr is not a terminal
    expectNoSecrets(r);
  });

  it('decrypts with the passphrase', async () => {
    const out = join(work, 'out-pass');
    const r = treCrypt(['decrypt', '--passfile', passfile, cipher, out]);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`decrypted 2 files, 1 directories, 10005 bytes into ${out}\n`);
    expectNoSecrets(r);
    expect(await readFile(join(out, 'a.txt'), 'utf8')).toBe('alpha');
    expect(
      (await readFile(join(out, 'sub', 'b.bin'))).equals(
        await readFile(join(plain, 'sub', 'b.bin')),
      ),
    ).toBe(true);
  });

  it('decrypts with the master key on stdin, plain or in dashed groups', async () => {
    for (const form of [masterKeyHex, masterKeyHex.match(/.{8}/g)!.join('-') + '\n']) {
      const out = join(work, `out-key-${form.length}`);
      const r = treCrypt(['decrypt', '--masterkey-stdin', cipher, out], form);
      expect(r.status).toBe(0);
      expectNoSecrets(r);
      expect(await readFile(join(out, 'a.txt'), 'utf8')).toBe('alpha');
    }
  });

  it('encrypts with the master key on stdin', async () => {
    const more = join(work, 'more');
    await mkdir(more);
    await writeFile(join(more, 'c.txt'), 'gamma');
    const r = treCrypt(['encrypt', '--masterkey-stdin', more, cipher], masterKeyHex);
    expect(r.status).toBe(0);
    const out = join(work, 'out-more');
    expect(treCrypt(['decrypt', '--passfile', passfile, cipher, out]).status).toBe(0);
    expect(await readFile(join(out, 'c.txt'), 'utf8')).toBe('gamma');
  });

  it('exits 3 on a wrong passphrase, with one line and no secret', async () => {
    const wrong = join(work, 'wrong-pass');
    await writeFile(wrong, 'not-the-passphrase\n');
    const r = treCrypt(['decrypt', '--passfile', wrong, cipher, join(work, 'never')]);
    expectOneLineFailure(r, 3, /wrong passphrase/);
    expect(r.stderr).not.toContain('not-the-passphrase');
    await expect(stat(join(work, 'never'))).rejects.toThrow(/ENOENT/);
  });

  it('exits 3 on a master key of another volume', () => {
    const other = randomBytes(32).toString('hex');
    const r = treCrypt(['decrypt', '--masterkey-stdin', cipher, join(work, 'never')], other);
    expectOneLineFailure(r, 3, /master key does not match/);
    expect(r.stderr).not.toContain(other.slice(0, 16));
  });

  it('exits 3 on tampered content and leaves no output folder', async () => {
    const copy = join(work, 'tampered');
    execFileSync('cp', ['-a', cipher, copy]);
    const sub = (await readdir(copy, { withFileTypes: true })).find((e) => e.isDirectory())!.name;
    const file = (await readdir(join(copy, sub))).find((e) => e !== 'gocryptfs.diriv')!;
    const path = join(copy, sub, file);
    const data = await readFile(path);
    data[100]! ^= 0x80;
    await chmod(path, 0o600);
    await writeFile(path, data);
    const out = join(work, 'out-tampered');
    const r = treCrypt(['decrypt', '--passfile', passfile, copy, out]);
    expectOneLineFailure(r, 3, /authentic|tamper|corrupt/i);
    await expect(stat(out)).rejects.toThrow(/ENOENT/);
  });

  it('exits 1 when the target folder is not empty', () => {
    const r = treCrypt(['decrypt', '--passfile', passfile, cipher, plain]);
    expectOneLineFailure(r, 1, /already exists and is not empty/);
  });

  it('exits 1 for a plaintext tree with a symlink', async () => {
    const linked = join(work, 'linked');
    await mkdir(linked);
    execFileSync('ln', ['-s', '/etc/hostname', join(linked, 'link')]);
    const r = treCrypt(['encrypt', '--passfile', passfile, linked, cipher]);
    expectOneLineFailure(r, 1, /is a symbolic link; only regular files and directories/);
  });

  it('xray prints exactly what gocryptfs-xray prints', async () => {
    const sub = (await readdir(cipher, { withFileTypes: true })).find((e) => e.isDirectory())!.name;
    const file = (await readdir(join(cipher, sub))).find((e) => e !== 'gocryptfs.diriv')!;
    const path = join(cipher, sub, file);
    const ours = treCrypt(['xray', path]);
    expect(ours.status).toBe(0);
    expect(ours.stdout).toBe(execFileSync('gocryptfs-xray', [path]).toString());
    expect(ours.stdout.split('\n')).toHaveLength(5); // header, 3 blocks, final newline
  });

  it('xray reports an empty file and refuses a truncated header', async () => {
    const empty = join(work, 'empty-file');
    await writeFile(empty, '');
    expect(treCrypt(['xray', empty]).stdout).toBe(
      execFileSync('gocryptfs-xray', [empty]).toString(),
    );
    const short = join(work, 'short-file');
    await writeFile(short, randomBytes(10));
    expectOneLineFailure(
      treCrypt(['xray', short]),
      1,
      /incomplete file header: read 10 bytes, want 18/,
    );
    expectOneLineFailure(treCrypt(['xray', join(work, 'missing')]), 1, /ENOENT/);
  });
});

describe('terminal behaviour', () => {
  it('draws a progress bar on stderr only when stderr is a terminal', async () => {
    const vol = join(work, 'tty-vol');
    expect(treCrypt(['init', '--scryptn', '10', '--passfile', passfile, vol]).status).toBe(0);
    expect(treCrypt(['encrypt', '--passfile', passfile, plain, vol]).status).toBe(0);
    const out = join(work, 'out-tty');
    // script(1) gives the command a pseudo-terminal.
    const r = spawnSync(
      'script',
      [
        '-q',
        '-e',
        '-c',
        `${process.execPath} ${CLI} decrypt --passfile ${passfile} ${vol} ${out}`,
        '/dev/null',
      ],
      {
        encoding: 'utf8',
      },
    );
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/decrypting \[[=-]+\] \d+%/);
    expect(r.stdout).not.toContain(PASSPHRASE);
    expect(await readFile(join(out, 'a.txt'), 'utf8')).toBe('alpha');
  });

  it('cleans up and exits 130 when interrupted', async () => {
    const bigPlain = join(work, 'big-plain');
    const bigVol = join(work, 'big-vol');
    await mkdir(bigPlain);
    await writeFile(join(bigPlain, 'big'), randomBytes(128 << 20));
    expect(treCrypt(['init', '--scryptn', '10', '--passfile', passfile, bigVol]).status).toBe(0);
    expect(treCrypt(['encrypt', '--passfile', passfile, bigPlain, bigVol]).status).toBe(0);
    await rm(bigPlain, { recursive: true });

    const parent = join(work, 'interrupt');
    await mkdir(parent);
    const child = spawn(
      process.execPath,
      [CLI, 'decrypt', '--passfile', passfile, bigVol, join(parent, 'out')],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    // Interrupt once the staging folder exists, i.e. in the middle of writing.
    const deadline = Date.now() + 30_000;
    while ((await readdir(parent)).length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    expect((await readdir(parent)).length).toBe(1);
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(stderr).toBe('tre-crypt: interrupted by SIGINT\n');
    expect(await readdir(parent)).toEqual([]);
  });
});
