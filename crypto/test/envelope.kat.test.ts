/**
 * RFC 9180 Appendix A.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode):
 * the published values, checked against @hpke/core, against our key derivation, and against a
 * small independent RFC 9180 key schedule written here with node:crypto. That independent
 * implementation, once it reproduces the RFC, opens our AES-256-GCM records: proof that a
 * wrapped key is plain standard HPKE with the documented info and AAD.
 */
import { describe, expect, it } from '@jest/globals';
import {
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
} from 'node:crypto';
import { Aes128Gcm, CipherSuite, HkdfSha256 } from '@hpke/core';
import { DhkemX25519HkdfSha256 } from '@hpke/dhkem-x25519';
import { XWing } from '@hpke/hybridkem-x-wing';
import {
  encodeWrapContext,
  generateKeyPair,
  publicKeyFromPrivate,
  wrapKey,
  type WrapContext,
} from '../src/envelope.js';

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
const toHex = (b: ArrayBuffer | Uint8Array): string =>
  Buffer.from(b instanceof Uint8Array ? b : new Uint8Array(b)).toString('hex');

const A1 = {
  info: '4f6465206f6e2061204772656369616e2055726e',
  ikmE: '7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234',
  pkEm: '37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431',
  skEm: '52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736',
  ikmR: '6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037',
  pkRm: '3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d',
  skRm: '4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8',
  enc: '37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431',
  sharedSecret: 'fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc',
  key: '4531685d41d65f03dc48f6b8302c05b0',
  baseNonce: '56d890e5accaaf011cff4b7d',
  pt: '4265617574792069732074727574682c20747275746820626561757479',
  encryptions: [
    {
      aad: '436f756e742d30',
      ct: 'f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a',
    },
    {
      aad: '436f756e742d31',
      ct: 'af2d7e9ac9ae7e270f46ba1f975be53c09f8d875bdc8535458c2494e8a6eab251c03d0c22a56b8ca42c2063b84',
    },
    {
      aad: '436f756e742d32',
      ct: '498dfcabd92e8acedc281e85af1cb4e3e31c7dc394a1ca20e173cb72516491588d96a19ad4a683518973dcc180',
    },
  ],
  exports: [
    { context: '', value: '3853fe2b4035195a573ffc53856e77058e15d9ea064de3e59f4961d0095250ee' },
    { context: '00', value: '2e8f0b54673c7029649d4eb9d5e33bf1872cf76d623ff164ac185da9e88c21a5' },
  ],
};

function a1Suite(): CipherSuite {
  return new CipherSuite({
    kem: new DhkemX25519HkdfSha256(),
    kdf: new HkdfSha256(),
    aead: new Aes128Gcm(),
  });
}

describe('RFC 9180 A.1 through @hpke/core', () => {
  it('derives the published recipient and ephemeral key pairs', async () => {
    const suite = a1Suite();
    for (const [ikm, sk, pk] of [
      [A1.ikmR, A1.skRm, A1.pkRm],
      [A1.ikmE, A1.skEm, A1.pkEm],
    ] as const) {
      const kp = await suite.kem.deriveKeyPair(hex(ikm));
      expect(toHex(await suite.kem.serializePrivateKey(kp.privateKey))).toBe(sk);
      expect(toHex(await suite.kem.serializePublicKey(kp.publicKey))).toBe(pk);
    }
  });

  it('our publicKeyFromPrivate maps skRm to pkRm', async () => {
    const kp = await publicKeyFromPrivate('x25519', hex(A1.skRm));
    expect(toHex(kp.publicKey)).toBe(A1.pkRm);
  });

  it('seals to the published enc and ciphertexts, exports, and opens them', async () => {
    const suite = a1Suite();
    const recipientPublicKey = await suite.kem.deserializePublicKey(hex(A1.pkRm));
    const sender = await suite.createSenderContext({
      recipientPublicKey,
      info: hex(A1.info),
      ekm: hex(A1.ikmE),
    });
    expect(toHex(sender.enc)).toBe(A1.enc);
    for (const e of A1.encryptions) {
      expect(toHex(await sender.seal(hex(A1.pt), hex(e.aad)))).toBe(e.ct);
    }
    const recipient = await suite.createRecipientContext({
      recipientKey: await suite.kem.deserializePrivateKey(hex(A1.skRm)),
      enc: hex(A1.enc),
      info: hex(A1.info),
    });
    for (const e of A1.encryptions) {
      expect(toHex(await recipient.open(hex(e.ct), hex(e.aad)))).toBe(A1.pt);
    }
    for (const x of A1.exports) {
      expect(toHex(await recipient.export(hex(x.context), 32))).toBe(x.value);
    }
  });
});

/**
 * draft-connolly-cfrg-xwing-kem, Appendix C, vector 1. pk (1216 bytes) and ct (1120 bytes) are
 * pinned by SHA-256 of the draft's hex values rather than transcribed in full.
 */
const XWING_C1 = {
  seed: '7f9c2ba4e88f827d616045507605853ed73b8093f6efbc88eb1a6eacfa66ef26',
  eseed:
    '3cb1eea988004b93103cfb0aeefd2a686e01fa4a58e8a3639ca8a1e3f9ae57e2' +
    '35b8cc873c23dc62b8d260169afa2f75ab916a58d974918835d25e6a435085b2',
  pkSha256: '2e816deebcd76c5c80d0cd2d174478871658e8e2ff42bc9d4a6e486372e856bb',
  ctSha256: '17cd532d657e44c897ca6583e548a5424fc70bf54f99515a4d2bcf99e3469f33',
  ss: 'd2df0522128f09dd8e2c92b1e905c793d8f57a54c3da25861f10bf4ca613e384',
};

const sha256 = (b: ArrayBuffer | Uint8Array): string =>
  createHash('sha256')
    .update(b instanceof Uint8Array ? b : new Uint8Array(b))
    .digest('hex');

describe('X-Wing draft test vector', () => {
  it('our publicKeyFromPrivate expands the seed to the published public key', async () => {
    const kp = await publicKeyFromPrivate('x-wing', hex(XWING_C1.seed));
    expect(kp.publicKey).toHaveLength(1216);
    expect(sha256(kp.publicKey)).toBe(XWING_C1.pkSha256);
  });

  it('encapsulates to the published ciphertext and shared secret, and decapsulates', async () => {
    const kem = new XWing();
    const pair = await kem.generateKeyPairDerand(hex(XWING_C1.seed));
    const { enc, sharedSecret } = await kem.encap({
      recipientPublicKey: pair.publicKey,
      ekm: hex(XWING_C1.eseed),
    });
    expect(sha256(enc)).toBe(XWING_C1.ctSha256);
    expect(toHex(sharedSecret)).toBe(XWING_C1.ss);
    const decapped = await kem.decap({ enc, recipientKey: pair.privateKey });
    expect(toHex(decapped)).toBe(XWING_C1.ss);
  });
});

// ---- an independent RFC 9180 base-mode receiver for DHKEM(X25519, HKDF-SHA256) + HKDF-SHA256 ----

const LABEL = Buffer.from('HPKE-v1');

function extract(salt: Uint8Array, ikm: Uint8Array): Buffer {
  return createHmac('sha256', salt).update(ikm).digest();
}

function expand(prk: Uint8Array, info: Uint8Array, len: number): Buffer {
  const out: Buffer[] = [];
  let t = Buffer.alloc(0);
  for (let i = 1; Buffer.concat(out).length < len; i++) {
    t = createHmac('sha256', prk)
      .update(Buffer.concat([t, info, Buffer.of(i)]))
      .digest();
    out.push(t);
  }
  return Buffer.concat(out).subarray(0, len);
}

function labeledExtract(suiteId: Buffer, salt: Uint8Array, label: string, ikm: Uint8Array) {
  return extract(salt, Buffer.concat([LABEL, suiteId, Buffer.from(label), ikm]));
}

function labeledExpand(
  suiteId: Buffer,
  prk: Uint8Array,
  label: string,
  info: Uint8Array,
  len: number,
) {
  const l = Buffer.alloc(2);
  l.writeUInt16BE(len);
  return expand(prk, Buffer.concat([l, LABEL, suiteId, Buffer.from(label), info]), len);
}

function x25519(sk: Uint8Array, pk: Uint8Array): Buffer {
  const privateKey = createPrivateKey({
    key: Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), sk]),
    format: 'der',
    type: 'pkcs8',
  });
  const publicKey = createPublicKey({
    key: Buffer.concat([Buffer.from('302a300506032b656e032100', 'hex'), pk]),
    format: 'der',
    type: 'spki',
  });
  return diffieHellman({ privateKey, publicKey });
}

/** Returns the shared secret, key and base nonce a base-mode receiver derives. */
function receiverSchedule(
  skR: Uint8Array,
  pkR: Uint8Array,
  enc: Uint8Array,
  info: Uint8Array,
  aeadId: number,
  nk: number,
) {
  const empty = Buffer.alloc(0);
  const kemSuite = Buffer.from('KEM\x00\x20', 'latin1');
  const eaePrk = labeledExtract(kemSuite, empty, 'eae_prk', x25519(skR, enc));
  const sharedSecret = labeledExpand(
    kemSuite,
    eaePrk,
    'shared_secret',
    Buffer.concat([enc, pkR]),
    32,
  );
  const suiteId = Buffer.concat([
    Buffer.from('HPKE'),
    Buffer.from([0x00, 0x20, 0x00, 0x01, 0, aeadId]),
  ]);
  const context = Buffer.concat([
    Buffer.of(0),
    labeledExtract(suiteId, empty, 'psk_id_hash', empty),
    labeledExtract(suiteId, empty, 'info_hash', info),
  ]);
  const secret = labeledExtract(suiteId, sharedSecret, 'secret', empty);
  return {
    sharedSecret,
    key: labeledExpand(suiteId, secret, 'key', context, nk),
    baseNonce: labeledExpand(suiteId, secret, 'base_nonce', context, 12),
  };
}

function gcmOpen(alg: string, key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, ct: Uint8Array) {
  const d = createDecipheriv(alg as 'aes-256-gcm', key, nonce);
  d.setAAD(aad);
  d.setAuthTag(ct.subarray(ct.length - 16));
  return Buffer.concat([d.update(ct.subarray(0, ct.length - 16)), d.final()]);
}

describe('an independent RFC 9180 receiver', () => {
  it('reproduces A.1 shared secret, key, nonce and first plaintext', () => {
    const s = receiverSchedule(hex(A1.skRm), hex(A1.pkRm), hex(A1.enc), hex(A1.info), 0x01, 16);
    expect(s.sharedSecret.toString('hex')).toBe(A1.sharedSecret);
    expect(s.key.toString('hex')).toBe(A1.key);
    expect(s.baseNonce.toString('hex')).toBe(A1.baseNonce);
    const first = A1.encryptions[0]!;
    expect(
      gcmOpen('aes-128-gcm', s.key, s.baseNonce, hex(first.aad), hex(first.ct)).toString('hex'),
    ).toBe(A1.pt);
  });

  it('opens our x25519 wrapped keys (AES-256-GCM, documented info and AAD)', async () => {
    const kp = await generateKeyPair('x25519');
    const secret = new Uint8Array(Buffer.from('a 32-byte data encryption key!!!'));
    const context: WrapContext = { purpose: 'dek', projectId: 'p-1', fileId: 'f-9', epoch: 3 };
    const rec = await wrapKey(secret, kp, context);
    const info = Buffer.from(`tre-wrap/v1\0x25519\0${kp.kid}`);
    const enc = Buffer.from(rec.enc, 'base64url');
    const s = receiverSchedule(kp.privateKey, kp.publicKey, enc, info, 0x02, 32);
    const opened = gcmOpen(
      'aes-256-gcm',
      s.key,
      s.baseNonce,
      encodeWrapContext(context),
      Buffer.from(rec.ct, 'base64url'),
    );
    expect(opened.equals(Buffer.from(secret))).toBe(true);
  });
});
