import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuthenticationError, FormatError, InvalidNameError } from '../src/errors.js';
import {
  DIRIV_NAME,
  LONGNAME_PREFIX,
  NameTransform,
  cipherNameKind,
  pad16,
  readDirIV,
  readLongNameFile,
  unpad16,
  validatePlainName,
  writeDirIV,
  writeLongNameFile,
} from '../src/nametransform.js';

const KEY = Buffer.alloc(32, 0x42);
const IV = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const nt = new NameTransform(KEY);

/** Valid plaintext names: any UTF-8 string of 1..255 bytes without "/" or NUL, not "." or "..". */
const plainName = fc
  .string({ unit: 'binary', minLength: 1, maxLength: 255 })
  .map((s) => {
    let out = s.replace(/[/\0]/g, '_');
    while (Buffer.byteLength(out) > 255) out = out.slice(0, -1);
    return out;
  })
  .filter((s) => s.length > 0 && s !== '.' && s !== '..');

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

describe('plaintext name rules', () => {
  it.each([
    ['empty', '', /empty/],
    ['a slash', 'a/b', /"\/"/],
    ['a NUL byte', 'a\0b', /NUL/],
    ['"."', '.', /not a valid/],
    ['".."', '..', /not a valid/],
    ['256 ASCII bytes', 'x'.repeat(256), /256 bytes, the limit is 255/],
    ['128 two-byte characters', '\u00e9'.repeat(128), /256 bytes/],
  ])('rejects %s with a clear InvalidNameError', (_label, name, message) => {
    expect(() => validatePlainName(name)).toThrow(InvalidNameError);
    expect(() => validatePlainName(name)).toThrow(message);
    expect(() => nt.encryptName(name, IV)).toThrow(InvalidNameError);
  });

  it('accepts names gocryptfs accepts', () => {
    for (const name of ['...', '.hidden', 'a b', 'x'.repeat(255), 'ü', '\u{1F600}']) {
      expect(() => validatePlainName(name)).not.toThrow();
    }
  });
});

describe('PKCS#7 padding to 16', () => {
  it('pads 1..48 bytes to the next multiple of 16, a full block when aligned', () => {
    for (let n = 1; n <= 48; n++) {
      const p = pad16(Buffer.alloc(n, 0x61));
      const padLen = 16 - (n % 16);
      expect(p.length).toBe(n + padLen);
      expect([...p.subarray(n)]).toEqual(new Array(padLen).fill(padLen));
      expect(unpad16(p)).toEqual(Buffer.alloc(n, 0x61));
    }
  });

  it('rejects malformed padding', () => {
    const bad = [
      Buffer.alloc(16, 0),
      Buffer.alloc(16, 17),
      Buffer.alloc(16, 16),
      Buffer.concat([Buffer.alloc(13, 0x61), Buffer.from([2, 3, 3])]),
      Buffer.alloc(15, 1),
    ];
    for (const b of bad) expect(() => unpad16(b)).toThrow(AuthenticationError);
  });
});

describe('name encryption', () => {
  it('produces unpadded base64url of the padded length', () => {
    for (const [len, b64len] of [
      [1, 22],
      [15, 22],
      [16, 43],
      [175, 235],
      [176, 256],
      [255, 342],
    ] as const) {
      const c = nt.encryptName('a'.repeat(len), IV);
      expect(c).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(c.length).toBe(b64len);
    }
  });

  it('is deterministic per directory IV and differs across IVs and keys', () => {
    const other = Buffer.from(IV);
    other[15]! ^= 1;
    expect(nt.encryptName('report.csv', IV)).toBe(nt.encryptName('report.csv', IV));
    expect(nt.encryptName('report.csv', other)).not.toBe(nt.encryptName('report.csv', IV));
    const nt2 = new NameTransform(Buffer.alloc(32, 0x43));
    expect(nt2.encryptName('report.csv', IV)).not.toBe(nt.encryptName('report.csv', IV));
  });

  it('switches to a long name above 255 encrypted characters (plaintext 176+ bytes)', () => {
    const short = nt.encryptEntryName('s'.repeat(175), IV);
    expect(short.longNameFile).toBeUndefined();
    expect(short.entry.length).toBe(235);

    const long = nt.encryptEntryName('s'.repeat(176), IV);
    expect(long.longNameFile).toBe(nt.encryptName('s'.repeat(176), IV));
    const hash = createHash('sha256').update(long.longNameFile!).digest('base64url');
    expect(long.entry).toBe(LONGNAME_PREFIX + hash);
    expect(cipherNameKind(long.entry)).toBe('longname');
    expect(cipherNameKind(long.entry + '.name')).toBe('longname-file');
    expect(cipherNameKind(short.entry)).toBe('plain');
    expect(() => nt.checkLongName(long.entry, long.longNameFile!)).not.toThrow();
    expect(() => nt.checkLongName(long.entry, short.entry)).toThrow(AuthenticationError);
  });

  it('honours padded base64 and a custom long-name limit', () => {
    const padded = new NameTransform(KEY, { raw64: false, longNameMax: 100 });
    const c = padded.encryptName('abc', IV);
    expect(c).toMatch(/==$/);
    expect(padded.decryptName(c, IV)).toBe('abc');
    expect(padded.encryptEntryName('x'.repeat(80), IV).longNameFile).toBeDefined();
    const noLong = new NameTransform(KEY, { longNameMax: false });
    expect(noLong.encryptEntryName('x'.repeat(255), IV).longNameFile).toBeUndefined();
  });

  it('round-trips random unicode names up to 255 bytes', () => {
    fc.assert(
      fc.property(plainName, fc.uint8Array({ minLength: 16, maxLength: 16 }), (name, iv) => {
        const c = nt.encryptName(name, iv);
        expect(nt.decryptName(c, iv)).toBe(name);
      }),
      { numRuns: 300 },
    );
  });

  it('never returns a different name for a name with one flipped character', () => {
    fc.assert(
      fc.property(plainName, fc.nat(), fc.integer({ min: 1, max: 63 }), (name, pos, delta) => {
        const c = nt.encryptName(name, IV);
        const i = pos % c.length;
        const flipped = B64URL[(B64URL.indexOf(c[i]!) + delta) % 64]!;
        const tampered = c.slice(0, i) + flipped + c.slice(i + 1);
        expect(() => nt.decryptName(tampered, IV)).toThrow(
          expect.objectContaining({
            code: expect.stringMatching(/AUTHENTICATION_FAILED|INVALID_NAME/),
          }),
        );
      }),
      { numRuns: 500 },
    );
  });

  it('never returns a different name for a name with one flipped ciphertext bit', () => {
    fc.assert(
      fc.property(plainName, fc.nat(), (name, bit) => {
        const bin = Buffer.from(nt.encryptName(name, IV), 'base64url');
        bin[Math.floor(bit / 8) % bin.length]! ^= 1 << (bit % 8);
        expect(() => nt.decryptName(bin.toString('base64url'), IV)).toThrow(AuthenticationError);
      }),
      { numRuns: 500 },
    );
  });

  it('rejects names under the wrong directory IV or key', () => {
    const c = nt.encryptName('a-rather-ordinary-name.txt', IV);
    expect(() => nt.decryptName(c, randomBytes(16))).toThrow(AuthenticationError);
    expect(() => new NameTransform(randomBytes(32)).decryptName(c, IV)).toThrow(
      AuthenticationError,
    );
  });

  it('rejects non-canonical and malformed base64 with InvalidNameError', () => {
    const c = nt.encryptName('abc', IV); // 22 chars: the last one carries 4 padding bits
    const lastBits = B64URL[B64URL.indexOf(c[21]!) ^ 1]!;
    for (const bad of [
      c.slice(0, 21) + lastBits,
      c + '=',
      c.slice(0, 10) + '+' + c.slice(11),
      c.slice(0, 10) + '\n' + c.slice(10),
      c + 'A',
      '',
      'AAAAAAAAAAAAAAAAAAAAAA'.repeat(16),
    ]) {
      expect(() => nt.decryptName(bad, IV)).toThrow(InvalidNameError);
    }
  });

  it('treats a decryption that is not UTF-8 as tampering', () => {
    const latin1 = Buffer.from('caf\xe9', 'latin1');
    const c = nt.encryptName(latin1, IV);
    expect(nt.decryptNameBytes(c, IV)).toEqual(latin1);
    expect(() => nt.decryptName(c, IV)).toThrow(AuthenticationError);
  });
});

describe('diriv and .name files', () => {
  it('writes a read-only random 16-byte diriv and refuses to overwrite it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-names-'));
    try {
      const iv = await writeDirIV(dir);
      expect(iv.length).toBe(16);
      expect(await readDirIV(dir)).toEqual(iv);
      expect((await stat(join(dir, DIRIV_NAME))).mode & 0o777).toBe(0o444);
      await expect(writeDirIV(dir)).rejects.toThrow(/EEXIST/);
      expect(await readDirIV(dir)).toEqual(iv);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('rejects a missing, short or all-zero diriv with FormatError', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-names-'));
    try {
      await expect(readDirIV(dir)).rejects.toThrow(FormatError);
      await writeFile(join(dir, DIRIV_NAME), Buffer.alloc(15, 1));
      await expect(readDirIV(dir)).rejects.toThrow(/15 bytes/);
      await writeFile(join(dir, DIRIV_NAME), Buffer.alloc(16));
      await expect(readDirIV(dir)).rejects.toThrow(/all zero/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('stores and reads back the encrypted long name', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tre-names-'));
    try {
      const e = nt.encryptEntryName('L'.repeat(200), IV);
      await writeLongNameFile(dir, e.entry, e.longNameFile!);
      const read = await readLongNameFile(dir, e.entry);
      expect(read).toBe(e.longNameFile);
      expect(await readFile(join(dir, e.entry + '.name'), 'latin1')).toBe(e.longNameFile);
      expect(nt.decryptName(read, IV)).toBe('L'.repeat(200));
      await expect(readLongNameFile(dir, 'gocryptfs.longname.missing')).rejects.toThrow(
        FormatError,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
