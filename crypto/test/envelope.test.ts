import { beforeAll, describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import {
  decodePublicKey,
  encodePublicKey,
  encodeWrapContext,
  fingerprint,
  generateKeyPair,
  parseWrappedKey,
  publicKeyFromPrivate,
  unwrapKey,
  wrapKey,
  type KemName,
  type KeyPair,
  type WrapContext,
  type WrappedKey,
} from '../src/envelope.js';
import { AuthenticationError, FormatError, InvalidArgumentError } from '../src/errors.js';

const KEMS: KemName[] = ['x25519', 'x-wing'];
const CTX: WrapContext = { purpose: 'dek', projectId: 'proj-1', fileId: 'file-1', epoch: 2 };
const DEK = new Uint8Array(32).map((_, i) => i + 1);

const keys = {} as Record<KemName, { alice: KeyPair; bob: KeyPair }>;

beforeAll(async () => {
  for (const kem of KEMS) {
    keys[kem] = { alice: await generateKeyPair(kem), bob: await generateKeyPair(kem) };
  }
});

function flipBit(b64: string, bit: number): string {
  const bytes = Buffer.from(b64, 'base64url');
  const i = bit % (bytes.length * 8);
  bytes[i >> 3]! ^= 1 << (i & 7);
  return bytes.toString('base64url');
}

const B64URL_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** 32 bytes leave 2 unused bits in the last character; canonical encoders write them as 0. */
function setLowBit(b64: string): string {
  const last = B64URL_ALPHABET.indexOf(b64.slice(-1));
  return b64.slice(0, -1) + B64URL_ALPHABET[last | 1];
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection, got a value');
}

describe.each(KEMS)('%s key pairs', (kem) => {
  it('have the documented sizes and a kid matching the public key', () => {
    const { alice } = keys[kem];
    expect(alice.kem).toBe(kem);
    expect(alice.privateKey).toHaveLength(32);
    expect(alice.publicKey).toHaveLength(kem === 'x25519' ? 32 : 1216);
    expect(alice.kid).toBe(fingerprint(kem, alice.publicKey));
    expect(alice.kid).not.toBe(keys[kem].bob.kid);
  });

  it('rebuild from the private key alone', async () => {
    const { alice } = keys[kem];
    const again = await publicKeyFromPrivate(kem, alice.privateKey);
    expect(again.kid).toBe(alice.kid);
    expect(Buffer.from(again.publicKey).equals(Buffer.from(alice.publicKey))).toBe(true);
  });

  it('round-trip through the text form', () => {
    const { alice } = keys[kem];
    const text = encodePublicKey(alice);
    expect(text.startsWith(`tre-${kem}:`)).toBe(true);
    const back = decodePublicKey(text);
    expect(back.kid).toBe(alice.kid);
    expect(back.kem).toBe(kem);
    expect(Buffer.from(back.publicKey).equals(Buffer.from(alice.publicKey))).toBe(true);
  });
});

describe('fingerprint', () => {
  it('is SHA-256 over the documented preimage, and the KEM label separates ids', () => {
    const pk = new Uint8Array(32).fill(0x42);
    const expected =
      'SHA256:' +
      createHash('sha256')
        .update(Buffer.concat([Buffer.from('tre-kid/v1\0x25519\0'), pk]))
        .digest('base64url');
    expect(fingerprint('x25519', pk)).toBe(expected);
    expect(fingerprint('x-wing', pk)).not.toBe(expected);
    expect(fingerprint('x25519', pk)).toMatch(/^SHA256:[A-Za-z0-9_-]{43}$/);
  });
});

describe.each(KEMS)('wrap/unwrap with %s', (kem) => {
  it.each([1, 16, 32, 1024])('round-trips a %i-byte secret', async (len) => {
    const { alice } = keys[kem];
    const secret = new Uint8Array(len).map((_, i) => (i * 7 + len) & 0xff);
    const rec = await wrapKey(secret, alice, CTX);
    expect(rec).toMatchObject({ v: 1, kid: alice.kid, kem });
    expect(Buffer.from(await unwrapKey(rec, alice, CTX)).equals(Buffer.from(secret))).toBe(true);
  });

  it('uses a fresh encapsulation each time', async () => {
    const { alice } = keys[kem];
    const a = await wrapKey(DEK, alice, CTX);
    const b = await wrapKey(DEK, alice, CTX);
    expect(a.enc).not.toBe(b.enc);
    expect(a.ct).not.toBe(b.ct);
  });

  it('survives JSON and parseWrappedKey', async () => {
    const { alice } = keys[kem];
    const rec = await wrapKey(DEK, alice, CTX);
    const parsed = parseWrappedKey(JSON.stringify(rec));
    expect(parsed).toEqual(rec);
    expect(Buffer.from(await unwrapKey(parsed, alice, CTX)).equals(Buffer.from(DEK))).toBe(true);
  });

  const moved: [string, WrapContext][] = [
    ['another file', { ...CTX, fileId: 'file-2' }],
    ['another project', { ...CTX, projectId: 'proj-2' }],
    ['another purpose', { ...CTX, purpose: 'recovery' }],
    ['another epoch', { ...CTX, epoch: 3 }],
    ['a named recipient', { ...CTX, recipient: 'alice' }],
    ['a context without the file id', { purpose: 'dek', projectId: 'proj-1', epoch: 2 }],
    // Naive concatenation would make these two equal; the length-prefixed encoding does not.
    ['shifted field boundaries', { ...CTX, projectId: 'proj-1f', fileId: 'ile-1' }],
  ];
  it.each(moved)('fails with AuthenticationError when moved to %s', async (_, other) => {
    const { alice } = keys[kem];
    const rec = await wrapKey(DEK, alice, CTX);
    await expect(unwrapKey(rec, alice, other)).rejects.toThrow(AuthenticationError);
  });

  it('fails with AuthenticationError for another recipient', async () => {
    const { alice, bob } = keys[kem];
    const rec = await wrapKey(DEK, alice, CTX);
    const e = await rejection(unwrapKey(rec, bob, CTX));
    expect(e).toBeInstanceOf(AuthenticationError);
    expect((e as Error).message).toContain(alice.kid);
    // Relabelling the record for bob does not help either: the KEM binds alice's key.
    await expect(unwrapKey({ ...rec, kid: bob.kid }, bob, CTX)).rejects.toThrow(
      AuthenticationError,
    );
  });

  it('fails with AuthenticationError for a key pair whose halves do not belong together', async () => {
    const { alice, bob } = keys[kem];
    const rec = await wrapKey(DEK, alice, CTX);
    const chimera = { ...alice, privateKey: bob.privateKey };
    await expect(unwrapKey(rec, chimera, CTX)).rejects.toThrow(AuthenticationError);
  });

  it('never yields plaintext for a mutated enc, ct or kid', async () => {
    const { alice } = keys[kem];
    const rec = await wrapKey(DEK, alice, CTX);
    const mutation = fc.oneof(
      fc.record({ field: fc.constant<'enc' | 'ct'>('enc'), bit: fc.nat() }),
      fc.record({ field: fc.constant<'enc' | 'ct'>('ct'), bit: fc.nat() }),
      fc.record({ field: fc.constant<'kid'>('kid'), bit: fc.nat() }),
    );
    await fc.assert(
      fc.asyncProperty(mutation, async ({ field, bit }) => {
        const bad: WrappedKey = { ...rec };
        if (field === 'kid') {
          const body = rec.kid.slice('SHA256:'.length);
          bad.kid = 'SHA256:' + flipBit(body + 'A', bit).slice(0, 43);
          fc.pre(bad.kid !== rec.kid);
        } else {
          bad[field] = flipBit(rec[field], bit);
        }
        const e = await rejection(unwrapKey(bad, alice, CTX));
        expect(e instanceof AuthenticationError || e instanceof FormatError).toBe(true);
      }),
      { numRuns: kem === 'x25519' ? 200 : 40 },
    );
    // X-Wing runs in pure JS: 40 unwraps take several seconds on a loaded 2-core machine.
  }, 60_000);

  it('handles many concurrent wraps and unwraps', async () => {
    const { alice } = keys[kem];
    const secrets = Array.from({ length: 16 }, (_, i) => new Uint8Array(32).fill(i));
    const records = await Promise.all(
      secrets.map((s, i) => wrapKey(s, alice, { ...CTX, fileId: `f${i}` })),
    );
    const opened = await Promise.all(
      records.map((r, i) => unwrapKey(r, alice, { ...CTX, fileId: `f${i}` })),
    );
    opened.forEach((o, i) => expect(Buffer.from(o).equals(Buffer.from(secrets[i]!))).toBe(true));
  }, 60_000);

  it('refuses records of the other KEM', async () => {
    const other = kem === 'x25519' ? keys['x-wing'].alice : keys.x25519.alice;
    const rec = await wrapKey(DEK, other, CTX);
    await expect(unwrapKey(rec, keys[kem].alice, CTX)).rejects.toThrow(AuthenticationError);
  });
});

describe('context encoding', () => {
  it('is the documented length-prefixed layout', () => {
    const got = Buffer.from(encodeWrapContext({ purpose: 'dek', fileId: 'é', epoch: 258 }));
    const expected = Buffer.concat([
      Buffer.from('tre-wrap-aad/v1\0'),
      Buffer.from([1, 0, 0, 0, 3]),
      Buffer.from('dek'),
      Buffer.from([0]),
      Buffer.from([1, 0, 0, 0, 2, 0xc3, 0xa9]),
      Buffer.from([1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 2]),
      Buffer.from([0]),
    ]);
    expect(got.toString('hex')).toBe(expected.toString('hex'));
  });

  it('is injective over random contexts', () => {
    const field = fc.option(fc.string({ minLength: 1, maxLength: 6 }), { nil: undefined });
    const ctx = fc.record({
      purpose: fc.string({ minLength: 1, maxLength: 6 }),
      projectId: field,
      fileId: field,
      epoch: fc.option(fc.nat(), { nil: undefined }),
      recipient: field,
    });
    fc.assert(
      fc.property(ctx, ctx, (a, b) => {
        fc.pre(JSON.stringify(a) !== JSON.stringify(b));
        const ea = Buffer.from(encodeWrapContext(a));
        const eb = Buffer.from(encodeWrapContext(b));
        expect(ea.equals(eb)).toBe(false);
      }),
      { numRuns: 500 },
    );
  });

  const bad: [string, unknown][] = [
    ['a missing purpose', { fileId: 'x' }],
    ['an empty purpose', { purpose: '' }],
    ['an empty optional field', { purpose: 'dek', fileId: '' }],
    ['a misspelt field', { purpose: 'dek', fileID: 'x' }],
    ['a negative epoch', { purpose: 'dek', epoch: -1 }],
    ['a fractional epoch', { purpose: 'dek', epoch: 1.5 }],
    ['a lone surrogate', { purpose: 'dek\ud800' }],
    ['a number as file id', { purpose: 'dek', fileId: 7 }],
    ['an over-long field', { purpose: 'x'.repeat(1025) }],
    ['null', null],
  ];
  it.each(bad)('rejects %s with InvalidArgumentError', async (_, ctx) => {
    const { alice } = keys.x25519;
    expect(() => encodeWrapContext(ctx as WrapContext)).toThrow(InvalidArgumentError);
    await expect(wrapKey(DEK, alice, ctx as WrapContext)).rejects.toThrow(InvalidArgumentError);
  });
});

describe('argument checks', () => {
  it('refuses empty and oversized secrets', async () => {
    const { alice } = keys.x25519;
    await expect(wrapKey(new Uint8Array(0), alice, CTX)).rejects.toThrow(InvalidArgumentError);
    await expect(wrapKey(new Uint8Array(1025), alice, CTX)).rejects.toThrow(InvalidArgumentError);
  });

  it('refuses a recipient whose kid does not match its public key', async () => {
    const { alice, bob } = keys.x25519;
    await expect(wrapKey(DEK, { ...alice, kid: bob.kid }, CTX)).rejects.toThrow(
      InvalidArgumentError,
    );
  });

  it('refuses an X25519 public key of low order', async () => {
    const publicKey = new Uint8Array(32);
    const weak = { kem: 'x25519' as const, publicKey, kid: fingerprint('x25519', publicKey) };
    await expect(wrapKey(DEK, weak, CTX)).rejects.toThrow(InvalidArgumentError);
  });

  it('refuses unknown KEMs and wrong key lengths', async () => {
    await expect(generateKeyPair('rsa' as KemName)).rejects.toThrow(InvalidArgumentError);
    await expect(publicKeyFromPrivate('x25519', new Uint8Array(31))).rejects.toThrow(
      InvalidArgumentError,
    );
  });
});

describe('parseWrappedKey', () => {
  let rec: WrappedKey;
  beforeAll(async () => {
    rec = await wrapKey(DEK, keys.x25519.alice, CTX);
  });

  const cases: [string, (r: WrappedKey) => unknown][] = [
    ['a non-object', () => 42],
    ['an array', (r) => [r]],
    ['invalid JSON text', () => '{"v":1,'],
    ['an extra field', (r) => ({ ...r, note: 'x' })],
    ['a missing field', (r) => ({ v: r.v, kid: r.kid, kem: r.kem, enc: r.enc })],
    ['version 2', (r) => ({ ...r, v: 2 })],
    ['version "1"', (r) => ({ ...r, v: '1' })],
    ['an unknown KEM', (r) => ({ ...r, kem: 'p256' })],
    ['a malformed kid', (r) => ({ ...r, kid: r.kid.replace('SHA256:', 'MD5:') })],
    ['a padded enc', (r) => ({ ...r, enc: Buffer.from(r.enc, 'base64url').toString('base64') })],
    ['standard base64 characters', (r) => ({ ...r, ct: r.ct.replace(/[-_]/g, '+') + '+' })],
    ['non-canonical trailing bits', (r) => ({ ...r, enc: setLowBit(r.enc) })],
    ['an enc of the wrong length', (r) => ({ ...r, enc: r.enc + 'AAAA' })],
    ['a ct without a tag', (r) => ({ ...r, ct: 'AAAA' })],
    ['an x-wing label on an x25519 enc', (r) => ({ ...r, kem: 'x-wing' })],
  ];
  it.each(cases)('rejects %s with FormatError', (_, make) => {
    expect(() => parseWrappedKey(make(rec))).toThrow(FormatError);
  });

  it('rejects arbitrary values and JSON with FormatError, never anything else', () => {
    fc.assert(
      fc.property(fc.oneof(fc.anything(), fc.json()), (x) => {
        expect(() => parseWrappedKey(x)).toThrow(FormatError);
      }),
      { numRuns: 1000 },
    );
  });

  it('rejects any single field replaced by an arbitrary value, unless it is unchanged', () => {
    const fields = ['v', 'kid', 'kem', 'enc', 'ct'] as const;
    fc.assert(
      fc.property(fc.constantFrom(...fields), fc.oneof(fc.string(), fc.anything()), (f, value) => {
        fc.pre(JSON.stringify(value) !== JSON.stringify(rec[f]));
        expect(() => parseWrappedKey({ ...rec, [f]: value })).toThrow(FormatError);
      }),
      { numRuns: 1000 },
    );
  });

  it('never echoes the ciphertext into error messages', () => {
    const e = (() => {
      try {
        parseWrappedKey({ ...rec, ct: rec.ct + '*' });
      } catch (err) {
        return err as Error;
      }
      throw new Error('expected an error');
    })();
    expect(e.message).not.toContain(rec.ct);
  });
});

describe('decodePublicKey', () => {
  it.each([
    ['no prefix', 'x25519:AAAA'],
    ['an unknown KEM', 'tre-rsa:AAAA'],
    ['no colon', 'tre-x25519'],
    ['a short key', 'tre-x25519:' + Buffer.alloc(31).toString('base64url')],
    ['padding', 'tre-x25519:' + Buffer.alloc(32).toString('base64')],
    ['an x25519 key labelled x-wing', 'tre-x-wing:' + Buffer.alloc(32).toString('base64url')],
  ])('rejects %s with FormatError', (_, text) => {
    expect(() => decodePublicKey(text)).toThrow(FormatError);
  });
});
