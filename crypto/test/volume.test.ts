/** Whole-tree operations on real directories (the FUSE interop lives in interop-volume.test.ts). */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AuthenticationError,
  InvalidArgumentError,
  UnsupportedError,
  WrongPassphraseError,
} from '../src/errors.js';
import { DIRIV_NAME, LONGNAME_PREFIX } from '../src/nametransform.js';
import { decryptTree, encryptTree, initVolume, openVolume, type Volume } from '../src/volume.js';

const PASS = Buffer.from('volume test passphrase');
const FAST = { N: 1 << 10, r: 8, p: 1 };

let work: string;
let n = 0;
const fresh = (label: string) => join(work, `${label}-${++n}`);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tre-volume-'));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Every path below `dir` with its type, size and content hash, relative to `dir`. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string) => {
    for (const e of await readdir(join(dir, rel))) {
      const p = join(rel, e);
      const st = await lstat(join(dir, p));
      if (st.isDirectory()) {
        out[p] = `dir ${(st.mode & 0o777).toString(8)}`;
        await walk(p);
      } else {
        const data = await readFile(join(dir, p));
        out[p] =
          `file ${(st.mode & 0o777).toString(8)} ${data.length} ${data.toString('base64').slice(0, 40)}`;
      }
    }
  };
  await walk('');
  return out;
}

async function makeTree(root: string): Promise<void> {
  await mkdir(join(root, 'nested', 'deeper', 'deepest'), { recursive: true });
  await mkdir(join(root, 'empty dir'));
  await writeFile(join(root, 'empty'), '');
  await writeFile(join(root, 'one'), 'x');
  await writeFile(join(root, 'with space.txt'), randomBytes(4095));
  await writeFile(join(root, 'nested', 'Grüße 🌍.bin'), randomBytes(4097));
  await writeFile(join(root, 'nested', 'n'.repeat(175)), randomBytes(4096));
  await writeFile(join(root, 'nested', 'deeper', 'l'.repeat(176)), randomBytes(100));
  await writeFile(
    join(root, 'nested', 'deeper', 'deepest', 'ü'.repeat(127) + 'e'),
    randomBytes(70000),
  );
  await chmod(join(root, 'one'), 0o640);
  await chmod(join(root, 'nested', 'deeper'), 0o750);
  await utimes(
    join(root, 'one'),
    new Date('2001-02-03T04:05:06Z'),
    new Date('2001-02-03T04:05:06Z'),
  );
}

async function tempLeftovers(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.name.startsWith('.tre-')) found.push(join(d, e.name));
      if (e.isDirectory()) await walk(join(d, e.name));
    }
  };
  await walk(dir);
  return found;
}

describe('initVolume', () => {
  it('creates gocryptfs.conf (0400) and the root diriv (0444) in a new directory', async () => {
    const dir = fresh('init');
    const v = await initVolume(dir, PASS, { scrypt: FAST });
    v.close();
    expect((await readdir(dir)).sort()).toEqual(['gocryptfs.conf', 'gocryptfs.diriv']);
    expect((await stat(join(dir, 'gocryptfs.conf'))).mode & 0o777).toBe(0o400);
    expect((await stat(join(dir, DIRIV_NAME))).mode & 0o777).toBe(0o444);
    expect((await readFile(join(dir, DIRIV_NAME))).length).toBe(16);
    expect(v.masterKey.every((b) => b === 0)).toBe(true); // close() wiped it
  });

  it('refuses a non-empty directory and a file', async () => {
    const dir = fresh('init-busy');
    await mkdir(dir);
    await writeFile(join(dir, 'something'), 'x');
    await expect(initVolume(dir, PASS, { scrypt: FAST })).rejects.toThrow(/not empty/);
    await expect(initVolume(join(dir, 'something'), PASS, { scrypt: FAST })).rejects.toThrow(
      InvalidArgumentError,
    );
  });

  it('opens with the passphrase and refuses a wrong one', async () => {
    const dir = fresh('open');
    const created = await initVolume(dir, PASS, { scrypt: FAST });
    const opened = await openVolume(dir, { passphrase: PASS });
    expect(opened.masterKey.equals(created.masterKey)).toBe(true);
    await expect(openVolume(dir, { passphrase: Buffer.from('nope') })).rejects.toThrow(
      WrongPassphraseError,
    );
  });
});

describe('encryptTree and decryptTree', () => {
  let plain: string;
  let cipher: string;
  let volume: Volume;

  beforeAll(async () => {
    plain = fresh('plain');
    await makeTree(plain);
    cipher = fresh('cipher');
    volume = await initVolume(cipher, PASS, { scrypt: FAST });
    await encryptTree(volume, plain);
  });

  afterAll(() => volume.close());

  it('round-trips names, contents, modes and mtimes', async () => {
    const out = fresh('out');
    const result = await decryptTree(volume, out);
    expect(result.files).toBe(7);
    expect(result.directories).toBe(4);
    expect(await snapshot(out)).toEqual(await snapshot(plain));
    expect((await stat(join(out, 'one'))).mtime.toISOString()).toBe('2001-02-03T04:05:06.000Z');
  });

  it('writes a diriv in every directory, long names with .name files, no plaintext names', async () => {
    const entries: string[] = [];
    const walk = async (d: string) => {
      const names = await readdir(d, { withFileTypes: true });
      expect(names.map((e) => e.name)).toContain(DIRIV_NAME);
      for (const e of names) {
        entries.push(e.name);
        if (e.isDirectory()) await walk(join(d, e.name));
      }
    };
    await walk(cipher);
    const longs = entries.filter((e) => e.startsWith(LONGNAME_PREFIX));
    // 176 and 255 bytes are long names, 175 bytes is not.
    expect(longs.filter((e) => e.endsWith('.name')).length).toBe(2);
    expect(longs.length).toBe(4);
    expect(entries.some((e) => /one|space|Grüße|nested|empty/.test(e))).toBe(false);
    expect(await tempLeftovers(cipher)).toEqual([]);
  });

  it('merges a second tree into existing directories', async () => {
    const more = fresh('more');
    await mkdir(join(more, 'nested', 'fresh'), { recursive: true });
    await writeFile(join(more, 'nested', 'added.txt'), 'added');
    await writeFile(join(more, 'nested', 'fresh', 'x'), 'x');
    const r = await encryptTree(volume, more);
    expect(r).toEqual({ files: 2, directories: 1, bytes: 6 });
    const out = fresh('out-merged');
    await decryptTree(volume, out);
    expect(await readFile(join(out, 'nested', 'added.txt'), 'utf8')).toBe('added');
    expect(await readFile(join(out, 'nested', 'fresh', 'x'), 'utf8')).toBe('x');
    expect(await readFile(join(out, 'one'), 'utf8')).toBe('x');
  });

  it('refuses an entry that already exists and writes nothing at all', async () => {
    const clash = fresh('clash');
    await mkdir(join(clash, 'nested'), { recursive: true });
    await writeFile(join(clash, 'aaa-new-file'), 'new');
    await writeFile(join(clash, 'nested', 'Grüße 🌍.bin'), 'clash');
    const before = await snapshot(cipher);
    await expect(encryptTree(volume, clash)).rejects.toThrow(/already exists in the volume/);
    expect(await snapshot(cipher)).toEqual(before);
  });

  it('refuses symlinks and FIFOs before writing anything', async () => {
    const withLink = fresh('link');
    await mkdir(withLink);
    await writeFile(join(withLink, 'a'), 'a');
    await symlink('/etc/passwd', join(withLink, 'z-link'));
    const before = await snapshot(cipher);
    await expect(encryptTree(volume, withLink)).rejects.toThrow(UnsupportedError);
    await expect(encryptTree(volume, withLink)).rejects.toThrow(/is a symbolic link/);
    const withFifo = fresh('fifo');
    await mkdir(withFifo);
    execFileSync('mkfifo', [join(withFifo, 'pipe')]);
    await expect(encryptTree(volume, withFifo)).rejects.toThrow(/is a FIFO/);
    expect(await snapshot(cipher)).toEqual(before);
  });

  it('decrypts into an existing empty folder but refuses a non-empty one', async () => {
    const empty = fresh('empty-target');
    await mkdir(empty);
    await decryptTree(volume, empty);
    expect(await readFile(join(empty, 'one'), 'utf8')).toBe('x');
    await expect(decryptTree(volume, empty)).rejects.toThrow(/not empty/);
  });

  it('reports progress up to the total', async () => {
    const seen: number[] = [];
    let total = -1;
    await decryptTree(volume, fresh('progress'), {
      onProgress: (done, t) => {
        seen.push(done);
        total = t;
      },
    });
    expect(seen[0]).toBe(0);
    expect(seen[seen.length - 1]).toBe(total);
    expect(total).toBeGreaterThan(80000);
  });
});

describe('tampering and wrong keys', () => {
  async function freshVolume(): Promise<{ cipher: string; volume: Volume }> {
    const plain = fresh('tplain');
    await mkdir(join(plain, 'dir'), { recursive: true });
    await writeFile(join(plain, 'dir', 'file.txt'), randomBytes(10000));
    await writeFile(join(plain, 'l'.repeat(200)), 'long');
    const cipher = fresh('tcipher');
    const volume = await initVolume(cipher, PASS, { scrypt: FAST });
    await encryptTree(volume, plain);
    return { cipher, volume };
  }

  async function cipherDirs(cipher: string): Promise<string> {
    const e = (await readdir(cipher, { withFileTypes: true })).find((d) => d.isDirectory());
    return join(cipher, e!.name);
  }

  async function expectNothingWritten(target: string): Promise<void> {
    await expect(stat(target)).rejects.toThrow(/ENOENT/);
    expect(await tempLeftovers(work).then((l) => l.filter((p) => p.includes('tout')))).toEqual([]);
  }

  it('fails with AuthenticationError on a flipped content byte and leaves no output', async () => {
    const { cipher, volume } = await freshVolume();
    const dir = await cipherDirs(cipher);
    const file = (await readdir(dir)).find((e) => e !== DIRIV_NAME)!;
    const data = await readFile(join(dir, file));
    data[5000]! ^= 0x01;
    await chmod(join(dir, file), 0o600);
    await writeFile(join(dir, file), data);
    const target = fresh('tout');
    await expect(decryptTree(volume, target)).rejects.toThrow(AuthenticationError);
    await expectNothingWritten(target);
  });

  it('fails with AuthenticationError on a renamed (tampered) encrypted name', async () => {
    const { cipher, volume } = await freshVolume();
    const dir = await cipherDirs(cipher);
    const file = (await readdir(dir)).find((e) => e !== DIRIV_NAME)!;
    const swapped = file[3] === 'A' ? 'B' : 'A';
    await rename(join(dir, file), join(dir, file.slice(0, 3) + swapped + file.slice(4)));
    const target = fresh('tout');
    await expect(decryptTree(volume, target)).rejects.toThrow(AuthenticationError);
    await expectNothingWritten(target);
  });

  it('fails with AuthenticationError on a .name file that belongs to another entry', async () => {
    const { cipher, volume } = await freshVolume();
    const nameFile = (await readdir(cipher)).find((e) => e.endsWith('.name'))!;
    const other = nameFile.replace(/^gocryptfs\.longname\./, 'gocryptfs.longname.X');
    const entry = nameFile.slice(0, -'.name'.length);
    await rename(join(cipher, nameFile), join(cipher, other));
    await rename(join(cipher, entry), join(cipher, other.slice(0, -'.name'.length)));
    await expect(decryptTree(volume, fresh('tout'))).rejects.toThrow(
      /does not match its long-name hash/,
    );
  });

  it('refuses a master key that does not belong to the volume', async () => {
    const { cipher } = await freshVolume();
    await expect(openVolume(cipher, { masterKey: randomBytes(32) })).rejects.toThrow(
      'the master key does not match this volume',
    );
  });

  it('opens by master key and decrypts the same tree', async () => {
    const { cipher, volume } = await freshVolume();
    const byKey = await openVolume(cipher, { masterKey: volume.masterKey });
    const out = fresh('bykey');
    await decryptTree(byKey, out);
    expect(await readFile(join(out, 'l'.repeat(200)), 'utf8')).toBe('long');
  });

  it('opens by master key when gocryptfs.conf is gone, with the default flags', async () => {
    const { cipher, volume } = await freshVolume();
    await rm(join(cipher, 'gocryptfs.conf'), { force: true });
    const byKey = await openVolume(cipher, { masterKey: volume.masterKey });
    expect(byKey.conf).toBeUndefined();
    const out = fresh('noconf');
    await decryptTree(byKey, out);
    expect(await readFile(join(out, 'l'.repeat(200)), 'utf8')).toBe('long');
    await expect(openVolume(cipher, { passphrase: PASS })).rejects.toThrow(
      /not a gocryptfs volume/,
    );
  });

  it('skips unfinished temporary entries with a warning', async () => {
    const { cipher, volume } = await freshVolume();
    await writeFile(join(cipher, '.tre-0123456789ab.tmp'), 'partial');
    const warnings: string[] = [];
    await decryptTree(volume, fresh('warn'), { onWarning: (m) => warnings.push(m) });
    expect(warnings).toEqual([expect.stringMatching(/unfinished temporary entry/)]);
  });
});
