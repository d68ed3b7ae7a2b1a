/**
 * The node:crypto HPKE path against @hpke/core: each seals what the other opens for the
 * AES-256-GCM suite used by wrapped keys, and the native path opens RFC 9180 A.1's first
 * ciphertext (AES-128-GCM, sequence 0 is single shot).
 */
import { describe, expect, it } from '@jest/globals';
import { Aes128Gcm, Aes256Gcm, CipherSuite, HkdfSha256 } from '@hpke/core';
import { DhkemX25519HkdfSha256 } from '@hpke/dhkem-x25519';
import { AuthenticationError, InvalidArgumentError } from '../src/errors.js';
import {
  x25519GenerateKeyPair,
  x25519Open,
  x25519PublicFromPrivate,
  x25519Seal,
} from '../src/hpke-x25519.js';

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
const toHex = (b: ArrayBuffer | Uint8Array): string =>
  Buffer.from(b instanceof Uint8Array ? b : new Uint8Array(b)).toString('hex');

const lib = new CipherSuite({
  kem: new DhkemX25519HkdfSha256(),
  kdf: new HkdfSha256(),
  aead: new Aes256Gcm(),
});
const info = new Uint8Array(Buffer.from('tre-wrap/v1\0x25519\0test'));
const aad = new Uint8Array(Buffer.from('aad'));
const secret = new Uint8Array(Buffer.alloc(32, 7));

describe('native x25519 HPKE against @hpke/core (AES-256-GCM)', () => {
  it('native seal opens with @hpke/core', async () => {
    const kp = await lib.kem.generateKeyPair();
    const pkR = new Uint8Array(await lib.kem.serializePublicKey(kp.publicKey));
    const { enc, ct } = x25519Seal(pkR, info, aad, secret);
    const pt = await lib.open({ recipientKey: kp, enc, info }, ct, aad);
    expect(toHex(pt)).toBe(toHex(secret));
  });

  it('@hpke/core seal opens natively; any change fails authentication', async () => {
    const { publicKey, privateKey } = x25519GenerateKeyPair();
    const recipientPublicKey = await lib.kem.deserializePublicKey(publicKey);
    const sealed = await lib.seal({ recipientPublicKey, info }, secret, aad);
    const enc = new Uint8Array(sealed.enc);
    const ct = new Uint8Array(sealed.ct);
    expect(toHex(x25519Open(privateKey, publicKey, enc, ct, info, aad))).toBe(toHex(secret));
    const flipped = Uint8Array.from(ct);
    flipped[0] = (flipped[0] ?? 0) ^ 1;
    expect(() => x25519Open(privateKey, publicKey, enc, flipped, info, aad)).toThrow(
      AuthenticationError,
    );
    expect(() => x25519Open(privateKey, publicKey, enc, ct, info, new Uint8Array(1))).toThrow(
      AuthenticationError,
    );
    expect(() => x25519Open(privateKey, publicKey, new Uint8Array(32), ct, info, aad)).toThrow(
      AuthenticationError,
    );
  });

  it('derives the same public key as @hpke/core', async () => {
    const kp = await lib.kem.generateKeyPair();
    const sk = new Uint8Array(await lib.kem.serializePrivateKey(kp.privateKey));
    const pk = new Uint8Array(await lib.kem.serializePublicKey(kp.publicKey));
    expect(toHex(x25519PublicFromPrivate(sk))).toBe(toHex(pk));
  });

  it('refuses a low-order recipient key', () => {
    expect(() => x25519Seal(new Uint8Array(32), info, aad, secret)).toThrow(InvalidArgumentError);
  });
});

describe('native x25519 HPKE on RFC 9180 A.1 (AES-128-GCM)', () => {
  const A1 = {
    info: '4f6465206f6e2061204772656369616e2055726e',
    pkRm: '3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d',
    skRm: '4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8',
    enc: '37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431',
    pt: '4265617574792069732074727574682c20747275746820626561757479',
    aad: '436f756e742d30',
    ct: 'f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a',
  };

  it('maps skRm to pkRm and opens the first published ciphertext', () => {
    expect(toHex(x25519PublicFromPrivate(hex(A1.skRm)))).toBe(A1.pkRm);
    const pt = x25519Open(
      hex(A1.skRm),
      hex(A1.pkRm),
      hex(A1.enc),
      hex(A1.ct),
      hex(A1.info),
      hex(A1.aad),
      'aes-128-gcm',
    );
    expect(toHex(pt)).toBe(A1.pt);
  });

  it('native AES-128-GCM seal opens with @hpke/core', async () => {
    const suite128 = new CipherSuite({
      kem: new DhkemX25519HkdfSha256(),
      kdf: new HkdfSha256(),
      aead: new Aes128Gcm(),
    });
    const kp = await suite128.kem.deserializePrivateKey(hex(A1.skRm));
    const { enc, ct } = x25519Seal(
      hex(A1.pkRm),
      hex(A1.info),
      hex(A1.aad),
      hex(A1.pt),
      'aes-128-gcm',
    );
    const pt = await suite128.open(
      {
        recipientKey: {
          privateKey: kp,
          publicKey: await suite128.kem.deserializePublicKey(hex(A1.pkRm)),
        },
        enc,
        info: hex(A1.info),
      },
      ct,
      hex(A1.aad),
    );
    expect(toHex(pt)).toBe(A1.pt);
  });
});
