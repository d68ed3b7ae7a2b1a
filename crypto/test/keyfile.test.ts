import { beforeAll, describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { createCipheriv, hkdfSync, randomBytes, scryptSync } from 'node:crypto';
import { encodePublicKey, generateKeyPair, type KemName, type KeyPair } from '../src/envelope.js';
import {
  AuthenticationError,
  FormatError,
  InvalidArgumentError,
  WrongPassphraseError,
} from '../src/errors.js';
import { decryptKeyFile, encryptKeyFile, parseKeyFile, type KeyFile } from '../src/keyfile.js';
import { DEFAULT_SCRYPT } from '../src/kdf.js';

/** The cheapest cost the library accepts: tests exercise the format, one test the default. */
const FAST = { scrypt: { N: 1024, r: 8, p: 1 } };
const PASS = 'correct horse battery staple';

const pairs = {} as Record<KemName, KeyPair>;
beforeAll(async () => {
  pairs.x25519 = await generateKeyPair('x25519');
  pairs['x-wing'] = await generateKeyPair('x-wing');
});

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection, got a value');
}

function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

/** Fragments of secrets that must never appear in an error message. */
function secretsIn(kp: KeyPair, passphrase: string): string[] {
  return [b64(kp.privateKey), Buffer.from(kp.privateKey).toString('hex'), passphrase];
}

describe.each(['x25519', 'x-wing'] as KemName[])('%s key files', (kem) => {
  it('round-trip, through JSON text too', async () => {
    const kp = pairs[kem];
    const file = await encryptKeyFile(kp, PASS, FAST);
    expect(file).toMatchObject({ v: 1, kind: 'tre-kek', kem, kid: kp.kid });
    expect(file.publicKey.startsWith(`tre-${kem}:`)).toBe(true);
    for (const input of [file, JSON.stringify(file), JSON.parse(JSON.stringify(file))]) {
      const back = await decryptKeyFile(input, PASS);
      expect(back.kid).toBe(kp.kid);
      expect(Buffer.from(back.privateKey).equals(Buffer.from(kp.privateKey))).toBe(true);
      expect(Buffer.from(back.publicKey).equals(Buffer.from(kp.publicKey))).toBe(true);
    }
  });

  it('do not contain the private key in the clear', async () => {
    const kp = pairs[kem];
    const text = JSON.stringify(await encryptKeyFile(kp, PASS, FAST));
    for (const s of secretsIn(kp, PASS)) expect(text).not.toContain(s);
  });
});

describe('key file passphrases', () => {
  it('a wrong passphrase gives WrongPassphraseError with a clear, secret-free message', async () => {
    const kp = pairs.x25519;
    const file = await encryptKeyFile(kp, PASS, FAST);
    const e = await rejection(decryptKeyFile(file, 'Correct horse battery staple'));
    expect(e).toBeInstanceOf(WrongPassphraseError);
    expect(e.message).toMatch(/wrong passphrase/);
    expect(e.message).toContain(kp.kid);
    for (const s of [...secretsIn(kp, PASS), 'Correct horse battery staple']) {
      expect(e.message).not.toContain(s);
    }
  });

  it('byte passphrases work and equal their UTF-8 string', async () => {
    const kp = pairs.x25519;
    const file = await encryptKeyFile(kp, 'pässwörd', FAST);
    const back = await decryptKeyFile(file, new Uint8Array(Buffer.from('pässwörd', 'utf8')));
    expect(back.kid).toBe(kp.kid);
  });

  it('an empty passphrase is refused', async () => {
    await expect(encryptKeyFile(pairs.x25519, '', FAST)).rejects.toThrow(InvalidArgumentError);
    const file = await encryptKeyFile(pairs.x25519, PASS, FAST);
    await expect(decryptKeyFile(file, new Uint8Array(0))).rejects.toThrow(InvalidArgumentError);
  });

  it('the default cost is scrypt N=2^16, r=8, p=1 and it round-trips', async () => {
    const kp = pairs.x25519;
    const file = await encryptKeyFile(kp, PASS);
    expect(file.kdf).toMatchObject({ name: 'scrypt', N: 65536, r: 8, p: 1 });
    expect(DEFAULT_SCRYPT).toEqual({ N: 65536, r: 8, p: 1 });
    expect((await decryptKeyFile(file, PASS)).kid).toBe(kp.kid);
  });
});

describe('tampered key files', () => {
  let file: KeyFile;
  let other: KeyFile;
  beforeAll(async () => {
    file = await encryptKeyFile(pairs.x25519, PASS, FAST);
    other = await encryptKeyFile(await generateKeyPair('x25519'), PASS, FAST);
  });

  const flip = (s: string, byte = 0): string => {
    const b = Buffer.from(s, 'base64url');
    b[byte]! ^= 0x01;
    return b.toString('base64url');
  };

  // Authenticated fields that stay well-formed when changed: GCM must catch them.
  const authenticated: [string, (f: KeyFile) => unknown][] = [
    ['ct', (f) => ({ ...f, ct: flip(f.ct, 5) })],
    ['the GCM tag', (f) => ({ ...f, ct: flip(f.ct, 40) })],
    ['nonce', (f) => ({ ...f, nonce: flip(f.nonce) })],
    ['salt', (f) => ({ ...f, kdf: { ...f.kdf, salt: flip(f.kdf.salt) } })],
    ['scrypt N', (f) => ({ ...f, kdf: { ...f.kdf, N: 2048 } })],
    ['scrypt p', (f) => ({ ...f, kdf: { ...f.kdf, p: 2 } })],
    ['created', (f) => ({ ...f, created: '2000-01-01T00:00:00.000Z' })],
    ['a removed created', (f) => ({ ...f, created: undefined })],
  ];
  it.each(authenticated)('a changed %s is detected', async (_, mutate) => {
    const e = await rejection(decryptKeyFile(JSON.parse(JSON.stringify(mutate(file))), PASS));
    expect(e).toBeInstanceOf(WrongPassphraseError);
    expect(e.message).toMatch(/modified/);
  });

  it('any flipped bit in ct, nonce or salt is detected, never a wrong key', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('ct', 'nonce', 'salt'), fc.nat(), async (field, bit) => {
        const bad = JSON.parse(JSON.stringify(file)) as KeyFile;
        const flipBit = (s: string) => {
          const b = Buffer.from(s, 'base64url');
          const i = bit % (b.length * 8);
          b[i >> 3]! ^= 1 << (i & 7);
          return b.toString('base64url');
        };
        if (field === 'salt') bad.kdf.salt = flipBit(bad.kdf.salt);
        else bad[field] = flipBit(bad[field]);
        await expect(decryptKeyFile(bad, PASS)).rejects.toThrow(WrongPassphraseError);
      }),
      { numRuns: 60 },
    );
  });

  it('a swapped public key and kid (another key file header) is detected', async () => {
    const swapped = { ...file, publicKey: other.publicKey, kid: other.kid };
    await expect(decryptKeyFile(swapped, PASS)).rejects.toThrow(WrongPassphraseError);
  });

  it('a swapped public key without its kid is a format error', async () => {
    await expect(decryptKeyFile({ ...file, publicKey: other.publicKey }, PASS)).rejects.toThrow(
      FormatError,
    );
  });

  it('a key pair whose halves do not belong together is refused', async () => {
    const b = await generateKeyPair('x25519');
    await expect(
      encryptKeyFile({ ...pairs.x25519, privateKey: b.privateKey }, PASS, FAST),
    ).rejects.toThrow(InvalidArgumentError);
  });
});

/** Builds a key file with node:crypto alone, following the recipe documented in keyfile.ts. */
async function handBuilt(kp: KeyPair, storedPrivateKey: Uint8Array): Promise<KeyFile> {
  const salt = randomBytes(32);
  const nonce = randomBytes(12);
  const header = {
    v: 1 as const,
    kind: 'tre-kek' as const,
    kem: kp.kem,
    kid: kp.kid,
    publicKey: encodePublicKey(kp),
    kdf: { name: 'scrypt' as const, salt: b64(salt), N: 1024, r: 8, p: 1 },
    nonce: b64(nonce),
    ct: '',
  };
  const stretched = scryptSync(PASS, salt, 32, { N: 1024, r: 8, p: 1 });
  const kek = Buffer.from(hkdfSync('sha256', stretched, Buffer.alloc(0), 'tre-kek keyfile v1', 32));
  const aad = JSON.stringify([
    'tre-kek/v1',
    1,
    'tre-kek',
    kp.kem,
    kp.kid,
    header.publicKey,
    'scrypt',
    header.kdf.salt,
    1024,
    8,
    1,
    null,
  ]);
  const c = createCipheriv('aes-256-gcm', kek, nonce);
  c.setAAD(Buffer.from(aad));
  const ct = Buffer.concat([c.update(storedPrivateKey), c.final(), c.getAuthTag()]);
  return { ...header, ct: b64(ct) };
}

describe('the documented key file recipe', () => {
  it('a file built from the documentation decrypts', async () => {
    const kp = pairs['x-wing'];
    const back = await decryptKeyFile(await handBuilt(kp, kp.privateKey), PASS);
    expect(Buffer.from(back.privateKey).equals(Buffer.from(kp.privateKey))).toBe(true);
  });

  it('a file whose sealed private key belongs to another public key is an AuthenticationError', async () => {
    const kp = pairs.x25519;
    const stranger = await generateKeyPair('x25519');
    const e = await rejection(decryptKeyFile(await handBuilt(kp, stranger.privateKey), PASS));
    expect(e).toBeInstanceOf(AuthenticationError);
    for (const s of secretsIn(stranger, PASS)) expect(e.message).not.toContain(s);
  });
});

describe('parseKeyFile', () => {
  let file: KeyFile;
  beforeAll(async () => {
    file = await encryptKeyFile(pairs.x25519, PASS, FAST);
  });

  it('accepts a valid file and its JSON text', () => {
    expect(parseKeyFile(file)).toEqual(file);
    expect(parseKeyFile(JSON.stringify(file))).toEqual(file);
  });

  const bad: [string, (f: KeyFile) => unknown][] = [
    ['not JSON', () => 'not json'],
    ['an array', () => []],
    ['another kind', (f) => ({ ...f, kind: 'gocryptfs' })],
    ['version 2', (f) => ({ ...f, v: 2 })],
    ['an unknown field', (f) => ({ ...f, comment: 'hi' })],
    ['a missing ct', (f) => ({ ...f, ct: undefined })],
    ['an unknown kem', (f) => ({ ...f, kem: 'rsa' })],
    ['a kem that does not match the key', (f) => ({ ...f, kem: 'x-wing' })],
    ['a wrong kid', (f) => ({ ...f, kid: 'SHA256:' + 'A'.repeat(43) })],
    ['a non-scrypt kdf', (f) => ({ ...f, kdf: { ...f.kdf, name: 'pbkdf2' } })],
    ['an extra kdf field', (f) => ({ ...f, kdf: { ...f.kdf, dkLen: 32 } })],
    ['N not a power of two', (f) => ({ ...f, kdf: { ...f.kdf, N: 1000 } })],
    ['N too small', (f) => ({ ...f, kdf: { ...f.kdf, N: 16 } })],
    ['N as a string', (f) => ({ ...f, kdf: { ...f.kdf, N: '1024' } })],
    ['a memory-exhausting N', (f) => ({ ...f, kdf: { ...f.kdf, N: 2 ** 24, r: 64 } })],
    ['a short salt', (f) => ({ ...f, kdf: { ...f.kdf, salt: 'AAAA' } })],
    ['a short nonce', (f) => ({ ...f, nonce: 'AAAA' })],
    ['a truncated ct', (f) => ({ ...f, ct: f.ct.slice(0, 20) })],
    ['a malformed created', (f) => ({ ...f, created: 'yesterday' })],
    [
      'padded base64',
      (f) => ({ ...f, nonce: Buffer.from(f.nonce, 'base64url').toString('base64') + '=' }),
    ],
  ];
  it.each(bad)('rejects %s with FormatError', async (_, mutate) => {
    const input = mutate(file);
    expect(() => parseKeyFile(input)).toThrow(FormatError);
    await expect(decryptKeyFile(input, PASS)).rejects.toThrow(FormatError);
  });
});
