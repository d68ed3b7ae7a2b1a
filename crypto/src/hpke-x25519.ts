/**
 * HPKE (RFC 9180) base mode, single shot, for DHKEM(X25519, HKDF-SHA256) + HKDF-SHA256 +
 * AES-GCM on node:crypto. The portable @hpke/core path costs about 5 ms per wrap here against
 * about 0.4 ms native, and a wrap happens per created file (trefs, the uploader). Both directions
 * are cross-checked against @hpke/core in tests; X-Wing stays on the library.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
} from 'node:crypto';
import { AuthenticationError, InvalidArgumentError } from './errors.js';

export type HpkeAead = 'aes-128-gcm' | 'aes-256-gcm';

const KEM_ID = 0x0020;
const KDF_ID = 0x0001;
const AEADS: Record<HpkeAead, { id: number; nk: number }> = {
  'aes-128-gcm': { id: 0x0001, nk: 16 },
  'aes-256-gcm': { id: 0x0002, nk: 32 },
};
const N_SECRET = 32;
const N_N = 12;
const TAG = 16;

const HPKE_V1 = Buffer.from('HPKE-v1');
const KEM_SUITE = Buffer.concat([Buffer.from('KEM'), u16(KEM_ID)]);
const EMPTY = Buffer.alloc(0);
// DER prefixes of an X25519 PKCS#8 private key and SPKI public key around the raw 32 bytes.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function hpkeSuite(aead: HpkeAead): Buffer {
  return Buffer.concat([Buffer.from('HPKE'), u16(KEM_ID), u16(KDF_ID), u16(AEADS[aead].id)]);
}

function labeledExtract(suite: Buffer, salt: Buffer, label: string, ikm: Uint8Array): Buffer {
  return createHmac('sha256', salt)
    .update(HPKE_V1)
    .update(suite)
    .update(label)
    .update(ikm)
    .digest();
}

/** HKDF-Expand for L <= 32: a single HMAC block. */
function labeledExpand(
  suite: Buffer,
  prk: Buffer,
  label: string,
  info: Uint8Array,
  L: number,
): Buffer {
  return createHmac('sha256', prk)
    .update(u16(L))
    .update(HPKE_V1)
    .update(suite)
    .update(label)
    .update(info)
    .update(Buffer.of(1))
    .digest()
    .subarray(0, L);
}

function keySchedule(
  aead: HpkeAead,
  sharedSecret: Buffer,
  info: Uint8Array,
): { key: Buffer; nonce: Buffer } {
  const suite = hpkeSuite(aead);
  const pskIdHash = labeledExtract(suite, EMPTY, 'psk_id_hash', EMPTY);
  const infoHash = labeledExtract(suite, EMPTY, 'info_hash', info);
  const context = Buffer.concat([Buffer.of(0), pskIdHash, infoHash]);
  const secret = labeledExtract(suite, sharedSecret, 'secret', EMPTY);
  sharedSecret.fill(0);
  const key = labeledExpand(suite, secret, 'key', context, AEADS[aead].nk);
  const nonce = labeledExpand(suite, secret, 'base_nonce', context, N_N);
  secret.fill(0);
  return { key, nonce };
}

function kemSharedSecret(dh: Buffer, enc: Uint8Array, pkR: Uint8Array): Buffer {
  const prk = labeledExtract(KEM_SUITE, EMPTY, 'eae_prk', dh);
  const out = labeledExpand(KEM_SUITE, prk, 'shared_secret', Buffer.concat([enc, pkR]), N_SECRET);
  prk.fill(0);
  dh.fill(0);
  return out;
}

function publicKeyObject(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

function privateKeyObject(raw: Uint8Array): KeyObject {
  return createPrivateKey({
    key: Buffer.concat([PKCS8_PREFIX, raw]),
    format: 'der',
    type: 'pkcs8',
  });
}

function rawPublic(key: KeyObject): Uint8Array {
  return new Uint8Array(key.export({ format: 'der', type: 'spki' }).subarray(SPKI_PREFIX.length));
}

/** A fresh X25519 key pair as raw 32-byte values. */
export function x25519GenerateKeyPair(): { publicKey: Uint8Array; privateKey: Uint8Array } {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  return {
    publicKey: rawPublic(publicKey),
    privateKey: new Uint8Array(der.subarray(PKCS8_PREFIX.length)),
  };
}

/** The raw X25519 public key of a raw 32-byte private key. */
export function x25519PublicFromPrivate(privateKey: Uint8Array): Uint8Array {
  return rawPublic(createPublicKey(privateKeyObject(privateKey)));
}

/**
 * Single-shot seal to `pkR`. Throws InvalidArgumentError for a key of low order, whose shared
 * secret would be public (node:crypto refuses the all-zero X25519 output).
 */
export function x25519Seal(
  pkR: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
  aead: HpkeAead = 'aes-256-gcm',
): { enc: Uint8Array; ct: Uint8Array } {
  const eph = generateKeyPairSync('x25519');
  const enc = rawPublic(eph.publicKey);
  let dh: Buffer;
  try {
    dh = diffieHellman({ privateKey: eph.privateKey, publicKey: publicKeyObject(pkR) });
  } catch {
    throw new InvalidArgumentError('recipient is not a usable x25519 public key');
  }
  const { key, nonce } = keySchedule(aead, kemSharedSecret(dh, enc, pkR), info);
  const cipher = createCipheriv(aead, key, nonce);
  key.fill(0);
  cipher.setAAD(aad);
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return { enc, ct: new Uint8Array(ct.buffer, ct.byteOffset, ct.byteLength) };
}

/** Single-shot open; any failure (bad enc, wrong key, info or AAD, modified ct) is an AuthenticationError. */
export function x25519Open(
  skR: Uint8Array,
  pkR: Uint8Array,
  enc: Uint8Array,
  ct: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
  aead: HpkeAead = 'aes-256-gcm',
): Uint8Array {
  const failed = 'wrapped key failed authentication: wrong key, wrong context, or modified record';
  if (ct.length < TAG) throw new AuthenticationError(failed);
  let dh: Buffer;
  try {
    dh = diffieHellman({ privateKey: privateKeyObject(skR), publicKey: publicKeyObject(enc) });
  } catch {
    throw new AuthenticationError('wrapped key failed authentication: invalid encapsulated key');
  }
  const { key, nonce } = keySchedule(aead, kemSharedSecret(dh, enc, pkR), info);
  const decipher = createDecipheriv(aead, key, nonce);
  key.fill(0);
  decipher.setAAD(aad);
  decipher.setAuthTag(ct.subarray(ct.length - TAG));
  const pt = decipher.update(ct.subarray(0, ct.length - TAG));
  try {
    decipher.final();
  } catch {
    pt.fill(0);
    throw new AuthenticationError(failed);
  }
  return new Uint8Array(pt.buffer, pt.byteOffset, pt.byteLength);
}
