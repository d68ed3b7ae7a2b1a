/**
 * gocryptfs.conf against the real gocryptfs 2.3: configs made by `gocryptfs -init` unlock here,
 * and configs written here unlock with `gocryptfs-xray -dumpmasterkey` (no FUSE needed).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CREATOR,
  DEFAULT_FEATURE_FLAGS,
  createConfig,
  nameOptions,
  parseConfig,
  readConfigFile,
  serializeConfig,
  unlockMasterKey,
  writeConfigFile,
  type GocryptfsConf,
} from '../src/configfile.js';
import {
  FormatError,
  InvalidArgumentError,
  UnsupportedError,
  WrongPassphraseError,
} from '../src/errors.js';

const PASS = Buffer.from('correct horse battery staple');
const FAST = { N: 1 << 10, r: 8, p: 1 };

let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tre-conf-'));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** The master key as gocryptfs itself unwraps it, passphrase on stdin. */
function xrayMasterKey(confPath: string, passphrase: Uint8Array): Buffer {
  const out = execFileSync('gocryptfs-xray', ['-dumpmasterkey', confPath], {
    input: Buffer.concat([passphrase, Buffer.from('\n')]),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  return Buffer.from(out.toString().trim(), 'hex');
}

async function gocryptfsInit(dir: string, passphrase: Uint8Array, scryptn: number): Promise<void> {
  await mkdir(dir);
  const passfile = join(work, `pass-${randomBytes(4).toString('hex')}`);
  await writeFile(passfile, Buffer.concat([passphrase, Buffer.from('\n')]));
  execFileSync(
    'gocryptfs',
    ['-init', '-q', '-passfile', passfile, '-scryptn', String(scryptn), dir],
    {
      stdio: 'pipe',
    },
  );
}

describe('gocryptfs.conf written by gocryptfs 2.3', () => {
  it('parses, has the default flags and unlocks to the key gocryptfs unwraps', async () => {
    const dir = join(work, 'by-gocryptfs');
    await gocryptfsInit(dir, PASS, 10);
    const text = await readFile(join(dir, 'gocryptfs.conf'), 'utf8');
    const conf = parseConfig(text);
    expect(conf.Creator).toMatch(/^gocryptfs 2\.3/);
    expect(conf.FeatureFlags).toEqual([...DEFAULT_FEATURE_FLAGS]);
    expect(conf.ScryptObject).toMatchObject({ N: 1024, R: 8, P: 1, KeyLen: 32 });
    // Our serialisation reproduces gocryptfs's bytes exactly.
    expect(serializeConfig(conf)).toBe(text);
    const key = await unlockMasterKey(conf, PASS);
    expect(key.length).toBe(32);
    expect(key.equals(xrayMasterKey(join(dir, 'gocryptfs.conf'), PASS))).toBe(true);
    expect(nameOptions(conf)).toEqual({ raw64: true, longNameMax: 255 });
  });

  it('refuses a wrong passphrase with WrongPassphraseError', async () => {
    const conf = await readConfigFile(join(work, 'by-gocryptfs', 'gocryptfs.conf'));
    await expect(unlockMasterKey(conf, Buffer.from('wrong'))).rejects.toThrow(WrongPassphraseError);
    await expect(unlockMasterKey(conf, Buffer.from('wrong'))).rejects.toThrow(
      'wrong passphrase for gocryptfs.conf',
    );
  });
});

describe('gocryptfs.conf written here', () => {
  it('unlocks with gocryptfs-xray to the same master key (fast scrypt)', async () => {
    const dir = join(work, 'by-us');
    await mkdir(dir);
    const { conf, masterKey } = await createConfig(PASS, { scrypt: FAST });
    await writeConfigFile(join(dir, 'gocryptfs.conf'), conf);
    expect((await stat(join(dir, 'gocryptfs.conf'))).mode & 0o777).toBe(0o400);
    expect(conf.Creator).toBe(CREATOR);
    expect(conf.FeatureFlags).toEqual([
      'HKDF',
      'GCMIV128',
      'DirIV',
      'EMENames',
      'LongNames',
      'Raw64',
    ]);
    expect(xrayMasterKey(join(dir, 'gocryptfs.conf'), PASS).equals(masterKey)).toBe(true);
    expect(
      (await unlockMasterKey(await readConfigFile(join(dir, 'gocryptfs.conf')), PASS)).equals(
        masterKey,
      ),
    ).toBe(true);
    await expect(writeConfigFile(join(dir, 'gocryptfs.conf'), conf)).rejects.toThrow(/EEXIST/);
  });

  it('uses scrypt N=2^16, r=8, p=1 by default and gocryptfs accepts it', async () => {
    const dir = join(work, 'by-us-default');
    await mkdir(dir);
    const { conf, masterKey } = await createConfig(PASS);
    expect(conf.ScryptObject).toMatchObject({ N: 65536, R: 8, P: 1, KeyLen: 32 });
    expect(Buffer.from(conf.ScryptObject.Salt, 'base64').length).toBe(32);
    expect(Buffer.from(conf.EncryptedKey, 'base64').length).toBe(64);
    await writeConfigFile(join(dir, 'gocryptfs.conf'), conf);
    expect(xrayMasterKey(join(dir, 'gocryptfs.conf'), PASS).equals(masterKey)).toBe(true);
  });

  it('wraps a given master key, and gocryptfs refuses the wrong passphrase for it', async () => {
    const dir = join(work, 'given-key');
    await mkdir(dir);
    const key = randomBytes(32);
    const { conf, masterKey } = await createConfig(PASS, { scrypt: FAST, masterKey: key });
    expect(masterKey.equals(key)).toBe(true);
    await writeConfigFile(join(dir, 'gocryptfs.conf'), conf);
    const r = spawnSync('gocryptfs-xray', ['-dumpmasterkey', join(dir, 'gocryptfs.conf')], {
      input: 'not the passphrase\n',
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr.toString()).toMatch(/Password incorrect/);
  });

  it('rejects bad creation parameters', async () => {
    await expect(createConfig(Buffer.alloc(0), { scrypt: FAST })).rejects.toThrow(
      InvalidArgumentError,
    );
    await expect(createConfig(PASS, { scrypt: { N: 1024, r: 4, p: 1 } })).rejects.toThrow(
      InvalidArgumentError,
    );
    await expect(createConfig(PASS, { scrypt: { N: 512, r: 8, p: 1 } })).rejects.toThrow(
      InvalidArgumentError,
    );
    await expect(createConfig(PASS, { scrypt: FAST, masterKey: Buffer.alloc(16) })).rejects.toThrow(
      InvalidArgumentError,
    );
  });

  it('detects a modified key block as a wrong passphrase, never a wrong key', async () => {
    const { conf } = await createConfig(PASS, { scrypt: FAST });
    const blob = Buffer.from(conf.EncryptedKey, 'base64');
    blob[20]! ^= 1;
    const tampered: GocryptfsConf = { ...conf, EncryptedKey: blob.toString('base64') };
    await expect(unlockMasterKey(tampered, PASS)).rejects.toThrow(WrongPassphraseError);
  });
});

describe('config validation', () => {
  let base: GocryptfsConf;
  beforeAll(async () => {
    base = (await createConfig(PASS, { scrypt: FAST })).conf;
  });
  const variant = (patch: Record<string, unknown>): string => JSON.stringify({ ...base, ...patch });

  it.each([
    ['not JSON', () => '{', FormatError],
    ['an array', () => '[]', FormatError],
    ['version 1', () => variant({ Version: 1 }), UnsupportedError],
    [
      'an unknown flag',
      () => variant({ FeatureFlags: [...base.FeatureFlags, 'Quantum'] }),
      UnsupportedError,
    ],
    [
      'plaintext names',
      () => variant({ FeatureFlags: ['PlaintextNames', 'GCMIV128', 'HKDF'] }),
      UnsupportedError,
    ],
    [
      'AES-SIV',
      () => variant({ FeatureFlags: [...base.FeatureFlags, 'AESSIV'] }),
      UnsupportedError,
    ],
    [
      'no HKDF (gocryptfs 1.2)',
      () => variant({ FeatureFlags: ['GCMIV128', 'DirIV', 'EMENames', 'LongNames'] }),
      UnsupportedError,
    ],
    [
      'scrypt N below 2^10',
      () => variant({ ScryptObject: { ...base.ScryptObject, N: 512 } }),
      FormatError,
    ],
    [
      'scrypt R below 8',
      () => variant({ ScryptObject: { ...base.ScryptObject, R: 4 } }),
      FormatError,
    ],
    [
      'a short salt',
      () => variant({ ScryptObject: { ...base.ScryptObject, Salt: 'AAAA' } }),
      FormatError,
    ],
    [
      'KeyLen 16',
      () => variant({ ScryptObject: { ...base.ScryptObject, KeyLen: 16 } }),
      FormatError,
    ],
    ['a short key block', () => variant({ EncryptedKey: 'AAAA' }), FormatError],
    ['LongNameMax without its flag', () => variant({ LongNameMax: 100 }), FormatError],
  ])('rejects %s', (_label, text, type) => {
    expect(() => parseConfig(text())).toThrow(type);
  });

  it('accepts LongNameMax with its flag and padded base64 without Raw64', () => {
    const conf = parseConfig(
      variant({
        FeatureFlags: ['HKDF', 'GCMIV128', 'DirIV', 'EMENames', 'LongNames', 'LongNameMax'],
        LongNameMax: 100,
      }),
    );
    expect(nameOptions(conf)).toEqual({ raw64: false, longNameMax: 100 });
    expect(serializeConfig(conf)).toMatch(
      /\t"FeatureFlags": \[[^\]]*\],\n\t"LongNameMax": 100\n}\n$/,
    );
  });

  it('escapes HTML characters in strings as Go does', () => {
    expect(serializeConfig({ ...base, Creator: 'a<b>&c' })).toContain(
      '"Creator": "a\\u003cb\\u003e\\u0026c"',
    );
  });
});
