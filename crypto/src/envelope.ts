/**
 * Envelope encryption: a secret (typically a 32-byte DEK) wrapped for one recipient's public key
 * with HPKE (RFC 9180) base mode, single-shot. Suites:
 *   'x25519'  DHKEM(X25519, HKDF-SHA256) + HKDF-SHA256 + AES-256-GCM   (KEM 0x0020, KDF 0x0001, AEAD 0x0002)
 *   'x-wing'  X-Wing (ML-KEM-768 + X25519)  + HKDF-SHA256 + AES-256-GCM (KEM 0x647a)
 *
 * Binding (see crypto/README.md, "Wrapped keys"):
 *   info = "tre-wrap/v1" 0x00 kem 0x00 kid            who the record is for and which format
 *   aad  = canonical encoding of the WrapContext        what the key is for
 * The context goes into the AAD, the record's own identity into the key schedule's info; a
 * record copied to another file, project, purpose, epoch or recipient fails authentication.
 *
 * 'x25519' runs on node:crypto (./hpke-x25519.ts) for speed; 'x-wing' on @hpke/core.
 */
import { createHash } from 'node:crypto';
import { Aes256Gcm, CipherSuite, HkdfSha256, HpkeError } from '@hpke/core';
import { XWing } from '@hpke/hybridkem-x-wing';
import { fromBase64url, toBase64url } from './encoding.js';
import { AuthenticationError, FormatError, InvalidArgumentError } from './errors.js';
import {
  x25519GenerateKeyPair,
  x25519Open,
  x25519PublicFromPrivate,
  x25519Seal,
} from './hpke-x25519.js';

export type KemName = 'x25519' | 'x-wing';

export interface PublicKey {
  kem: KemName;
  /** Fingerprint of the public key, see {@link fingerprint}. */
  kid: string;
  publicKey: Uint8Array;
}

export interface KeyPair extends PublicKey {
  privateKey: Uint8Array;
}

/** What a wrapped key is for. Every field given is authenticated; absent and present differ. */
export interface WrapContext {
  purpose: string;
  projectId?: string;
  fileId?: string;
  epoch?: number;
  recipient?: string;
}

export interface WrappedKey {
  v: 1;
  kid: string;
  kem: KemName;
  /** HPKE encapsulated key, unpadded base64url. */
  enc: string;
  /** AES-256-GCM ciphertext of the secret with its 16-byte tag, unpadded base64url. */
  ct: string;
}

interface KemSpec {
  publicKeyLen: number;
  privateKeyLen: number;
  encLen: number;
}

const KEMS: Record<KemName, KemSpec> = {
  x25519: { publicKeyLen: 32, privateKeyLen: 32, encLen: 32 },
  'x-wing': { publicKeyLen: 1216, privateKeyLen: 32, encLen: 1120 },
};

/** Secrets wrapped here are keys, not documents: a generous bound keeps records small. */
export const MAX_WRAPPED_SECRET = 1024;
const AEAD_TAG_LEN = 16;
const KID_RE = /^SHA256:[A-Za-z0-9_-]{43}$/;
const PUBLIC_KEY_PREFIX = 'tre-';

let xwingSuite: CipherSuite | undefined;

function xwing(): CipherSuite {
  xwingSuite ??= new CipherSuite({
    kem: new XWing(),
    kdf: new HkdfSha256(),
    aead: new Aes256Gcm(),
  });
  return xwingSuite;
}

export function isKemName(x: unknown): x is KemName {
  return x === 'x25519' || x === 'x-wing';
}

function assertKem(kem: unknown): asserts kem is KemName {
  if (!isKemName(kem)) {
    throw new InvalidArgumentError(`unknown KEM ${JSON.stringify(kem)}; expected x25519 or x-wing`);
  }
}

/** A copy in a fresh ArrayBuffer: HPKE's key parsers read `.buffer`, which ignores views' offsets. */
function own(bytes: Uint8Array): Uint8Array {
  return Uint8Array.from(bytes);
}

/**
 * Key id: 'SHA256:' + unpadded base64url(SHA-256("tre-kid/v1" 0x00 kem 0x00 publicKey)).
 * The KEM label is hashed in so that equal bytes under two KEMs never share an id.
 */
export function fingerprint(kem: KemName, publicKey: Uint8Array): string {
  assertKem(kem);
  const digest = createHash('sha256').update(`tre-kid/v1\0${kem}\0`).update(publicKey).digest();
  return `SHA256:${digest.toString('base64url')}`;
}

function checkPublicKey(pk: PublicKey, what: string): void {
  if (typeof pk !== 'object' || pk === null) {
    throw new InvalidArgumentError(`${what} must be a key object`);
  }
  assertKem(pk.kem);
  if (!(pk.publicKey instanceof Uint8Array) || pk.publicKey.length !== KEMS[pk.kem].publicKeyLen) {
    throw new InvalidArgumentError(
      `${what} public key must be ${KEMS[pk.kem].publicKeyLen} bytes for ${pk.kem}`,
    );
  }
  if (pk.kid !== fingerprint(pk.kem, pk.publicKey)) {
    throw new InvalidArgumentError(`${what} kid does not match its public key`);
  }
}

function checkKeyPair(kp: KeyPair, what: string): void {
  checkPublicKey(kp, what);
  if (
    !(kp.privateKey instanceof Uint8Array) ||
    kp.privateKey.length !== KEMS[kp.kem].privateKeyLen
  ) {
    throw new InvalidArgumentError(
      `${what} private key must be ${KEMS[kp.kem].privateKeyLen} bytes for ${kp.kem}`,
    );
  }
}

export async function generateKeyPair(kem: KemName = 'x25519'): Promise<KeyPair> {
  assertKem(kem);
  if (kem === 'x25519') {
    const { publicKey, privateKey } = x25519GenerateKeyPair();
    return { kem, kid: fingerprint(kem, publicKey), publicKey, privateKey };
  }
  const s = xwing();
  const pair = await s.kem.generateKeyPair();
  const publicKey = new Uint8Array(await s.kem.serializePublicKey(pair.publicKey));
  const privateKey = new Uint8Array(await s.kem.serializePrivateKey(pair.privateKey));
  return { kem, kid: fingerprint(kem, publicKey), publicKey, privateKey };
}

/** Rebuilds the full key pair from a private key (both KEMs' private keys are 32-byte seeds). */
export async function publicKeyFromPrivate(kem: KemName, privateKey: Uint8Array): Promise<KeyPair> {
  assertKem(kem);
  if (!(privateKey instanceof Uint8Array) || privateKey.length !== KEMS[kem].privateKeyLen) {
    throw new InvalidArgumentError(`${kem} private key must be ${KEMS[kem].privateKeyLen} bytes`);
  }
  let publicKey: Uint8Array;
  if (kem === 'x25519') {
    publicKey = x25519PublicFromPrivate(privateKey);
  } else {
    const xwing = new XWing();
    const pair = await xwing.generateKeyPairDerand(own(privateKey));
    publicKey = new Uint8Array(await xwing.serializePublicKey(pair.publicKey));
  }
  return { kem, kid: fingerprint(kem, publicKey), publicKey, privateKey: own(privateKey) };
}

const CONTEXT_FIELDS = ['purpose', 'projectId', 'fileId', 'epoch', 'recipient'] as const;
const MAX_CONTEXT_FIELD = 1024;

function utf8Field(value: unknown, name: string): Buffer {
  if (typeof value !== 'string' || value.length === 0) {
    throw new InvalidArgumentError(`context.${name} must be a non-empty string`);
  }
  const bytes = Buffer.from(value, 'utf8');
  // Lone surrogates all encode to U+FFFD, so distinct strings would authenticate alike.
  if (bytes.toString('utf8') !== value) {
    throw new InvalidArgumentError(`context.${name} is not well-formed Unicode`);
  }
  if (bytes.length > MAX_CONTEXT_FIELD) {
    throw new InvalidArgumentError(`context.${name} is longer than ${MAX_CONTEXT_FIELD} bytes`);
  }
  return bytes;
}

/**
 * Canonical, injective encoding of a WrapContext (the HPKE AAD):
 *   "tre-wrap-aad/v1" 0x00, then for each field in the fixed order purpose, projectId, fileId,
 *   epoch, recipient: one presence byte (0 absent, 1 present) and, if present, a uint32 BE
 *   length and the value (UTF-8 for strings, uint64 BE for epoch).
 * Unknown keys are refused so a misspelt field cannot silently go unbound.
 */
export function encodeWrapContext(context: WrapContext): Uint8Array {
  if (typeof context !== 'object' || context === null || Array.isArray(context)) {
    throw new InvalidArgumentError('context must be an object with at least a purpose');
  }
  for (const key of Object.keys(context)) {
    if (!(CONTEXT_FIELDS as readonly string[]).includes(key)) {
      throw new InvalidArgumentError(`unknown context field ${JSON.stringify(key)}`);
    }
  }
  const parts: Buffer[] = [Buffer.from('tre-wrap-aad/v1\0', 'utf8')];
  for (const name of CONTEXT_FIELDS) {
    const value = (context as unknown as Record<string, unknown>)[name];
    if (value === undefined) {
      if (name === 'purpose') throw new InvalidArgumentError('context.purpose is required');
      parts.push(Buffer.of(0));
      continue;
    }
    let bytes: Buffer;
    if (name === 'epoch') {
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
        throw new InvalidArgumentError('context.epoch must be a non-negative integer');
      }
      bytes = Buffer.alloc(8);
      bytes.writeBigUInt64BE(BigInt(value));
    } else {
      bytes = utf8Field(value, name);
    }
    const len = Buffer.alloc(4);
    len.writeUInt32BE(bytes.length);
    parts.push(Buffer.of(1), len, bytes);
  }
  return new Uint8Array(Buffer.concat(parts));
}

function wrapInfo(kem: KemName, kid: string): Uint8Array {
  return new Uint8Array(Buffer.from(`tre-wrap/v1\0${kem}\0${kid}`, 'utf8'));
}

export async function wrapKey(
  secret: Uint8Array,
  recipient: PublicKey,
  context: WrapContext,
): Promise<WrappedKey> {
  if (!(secret instanceof Uint8Array) || secret.length < 1 || secret.length > MAX_WRAPPED_SECRET) {
    throw new InvalidArgumentError(`secret must be 1 to ${MAX_WRAPPED_SECRET} bytes`);
  }
  checkPublicKey(recipient, 'recipient');
  const aad = encodeWrapContext(context);
  const info = wrapInfo(recipient.kem, recipient.kid);
  if (recipient.kem === 'x25519') {
    const sealed = x25519Seal(recipient.publicKey, info, aad, secret);
    return {
      v: 1,
      kid: recipient.kid,
      kem: recipient.kem,
      enc: toBase64url(sealed.enc),
      ct: toBase64url(sealed.ct),
    };
  }
  const s = xwing();
  let sealed: { enc: ArrayBuffer; ct: ArrayBuffer };
  try {
    const recipientPublicKey = await s.kem.deserializePublicKey(own(recipient.publicKey));
    sealed = await s.seal({ recipientPublicKey, info }, own(secret), aad);
  } catch (e) {
    if (e instanceof HpkeError) {
      throw new InvalidArgumentError(
        `recipient ${recipient.kid} is not a usable ${recipient.kem} public key`,
      );
    }
    throw e;
  }
  return {
    v: 1,
    kid: recipient.kid,
    kem: recipient.kem,
    enc: toBase64url(new Uint8Array(sealed.enc)),
    ct: toBase64url(new Uint8Array(sealed.ct)),
  };
}

export async function unwrapKey(
  record: WrappedKey,
  recipient: KeyPair,
  context: WrapContext,
): Promise<Uint8Array> {
  const rec = parseWrappedKey(record);
  checkKeyPair(recipient, 'recipient');
  const aad = encodeWrapContext(context);
  if (rec.kem !== recipient.kem || rec.kid !== recipient.kid) {
    throw new AuthenticationError(
      `wrapped key is for ${rec.kem} key ${rec.kid}, not for ${recipient.kem} key ${recipient.kid}`,
    );
  }
  const info = wrapInfo(rec.kem, rec.kid);
  const enc = fromBase64url(rec.enc, 'enc');
  const ct = fromBase64url(rec.ct, 'ct');
  if (rec.kem === 'x25519') {
    return x25519Open(recipient.privateKey, recipient.publicKey, enc, ct, info, aad);
  }
  const s = xwing();
  try {
    const recipientKey = {
      privateKey: await s.kem.deserializePrivateKey(own(recipient.privateKey)),
      publicKey: await s.kem.deserializePublicKey(own(recipient.publicKey)),
    };
    const pt = await s.open({ recipientKey, enc, info }, ct, aad);
    return new Uint8Array(pt);
  } catch (e) {
    if (e instanceof HpkeError) {
      throw new AuthenticationError(
        'wrapped key failed authentication: wrong key, wrong context, or modified record',
      );
    }
    throw e;
  }
}

const RECORD_KEYS = ['ct', 'enc', 'kem', 'kid', 'v'];

/** Validates a wrapped-key record given as a parsed object or as its JSON text. */
export function parseWrappedKey(json: unknown): WrappedKey {
  let obj: unknown = json;
  if (typeof json === 'string') {
    try {
      obj = JSON.parse(json);
    } catch {
      throw new FormatError('wrapped key is not valid JSON');
    }
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new FormatError('wrapped key must be a JSON object');
  }
  const rec = obj as Record<string, unknown>;
  const keys = Object.keys(rec).sort();
  if (keys.length !== RECORD_KEYS.length || keys.some((k, i) => k !== RECORD_KEYS[i])) {
    throw new FormatError(`wrapped key must have exactly the fields ${RECORD_KEYS.join(', ')}`);
  }
  if (rec.v !== 1) {
    throw new FormatError(`unsupported wrapped key version ${JSON.stringify(rec.v)}`);
  }
  if (!isKemName(rec.kem)) {
    throw new FormatError(`unknown KEM ${JSON.stringify(rec.kem)} in wrapped key`);
  }
  if (typeof rec.kid !== 'string' || !KID_RE.test(rec.kid)) {
    throw new FormatError('wrapped key kid must be SHA256:<43 base64url characters>');
  }
  const spec = KEMS[rec.kem];
  const enc = fromBase64url(rec.enc, 'wrapped key enc');
  if (enc.length !== spec.encLen) {
    throw new FormatError(`wrapped key enc must be ${spec.encLen} bytes for ${rec.kem}`);
  }
  const ct = fromBase64url(rec.ct, 'wrapped key ct');
  if (ct.length <= AEAD_TAG_LEN || ct.length > MAX_WRAPPED_SECRET + AEAD_TAG_LEN) {
    throw new FormatError(
      `wrapped key ct must be ${AEAD_TAG_LEN + 1} to ${MAX_WRAPPED_SECRET + AEAD_TAG_LEN} bytes`,
    );
  }
  return { v: 1, kid: rec.kid, kem: rec.kem, enc: rec.enc as string, ct: rec.ct as string };
}

/** Text form of a public key: 'tre-<kem>:<unpadded base64url>', e.g. 'tre-x25519:…'. */
export function encodePublicKey(pk: PublicKey): string {
  checkPublicKey(pk, 'public key');
  return `${PUBLIC_KEY_PREFIX}${pk.kem}:${toBase64url(pk.publicKey)}`;
}

export function decodePublicKey(s: string): PublicKey {
  if (typeof s !== 'string') throw new FormatError('public key must be a string');
  const colon = s.indexOf(':');
  const kem = s.slice(PUBLIC_KEY_PREFIX.length, colon);
  if (colon < 0 || !s.startsWith(PUBLIC_KEY_PREFIX) || !isKemName(kem)) {
    throw new FormatError('public key must look like tre-x25519:<base64url> or tre-x-wing:<…>');
  }
  const publicKey = fromBase64url(s.slice(colon + 1), 'public key');
  if (publicKey.length !== KEMS[kem].publicKeyLen) {
    throw new FormatError(`${kem} public key must be ${KEMS[kem].publicKeyLen} bytes`);
  }
  return { kem, kid: fingerprint(kem, publicKey), publicKey };
}
