/**
 * Key files: a KEM private key stored under a passphrase, as versioned JSON.
 *
 *   KEK   = HKDF-SHA256(scrypt(passphrase, salt, N, r, p, 32), salt = "", info = "tre-kek keyfile v1")
 *   ct    = AES-256-GCM(KEK, nonce, privateKey, aad) || tag
 *   aad   = JSON.stringify(["tre-kek/v1", v, kind, kem, kid, publicKey, "scrypt", salt, N, r, p, created ?? null])
 *
 * Every field except the nonce (which GCM authenticates itself) is in the AAD, so swapping the
 * public key, weakening the scrypt parameters or editing the date is detected on decryption.
 * A fresh salt per file gives a fresh KEK, so the random 96-bit nonce is used exactly once.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { fromBase64url, toBase64url } from './encoding.js';
import {
  decodePublicKey,
  encodePublicKey,
  isKemName,
  publicKeyFromPrivate,
  type KemName,
  type KeyPair,
} from './envelope.js';
import {
  AuthenticationError,
  FormatError,
  InvalidArgumentError,
  WrongPassphraseError,
} from './errors.js';
import { checkScryptParams, DEFAULT_SCRYPT, scryptKey, type ScryptParams } from './kdf.js';

export interface KeyFile {
  v: 1;
  kind: 'tre-kek';
  kem: KemName;
  /** Fingerprint of publicKey; recomputed and checked on parse. */
  kid: string;
  /** The public key in its text form, 'tre-<kem>:<base64url>'. */
  publicKey: string;
  kdf: { name: 'scrypt'; salt: string; N: number; r: number; p: number };
  /** 12-byte AES-GCM nonce, unpadded base64url. */
  nonce: string;
  /** Encrypted private key with its 16-byte GCM tag, unpadded base64url. */
  ct: string;
  /** ISO 8601 creation time, informative but authenticated. */
  created?: string;
}

const SALT_LEN = 32;
const NONCE_LEN = 12;
const TAG_LEN = 16;
const KEK_INFO = 'tre-kek keyfile v1';
/** Refuse files whose scrypt settings would need more than this much memory to open. */
const MAX_SCRYPT_MEMORY = 1024 * 1024 * 1024;
const ISO_DATE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;
const TOP_KEYS = ['created', 'ct', 'kdf', 'kem', 'kid', 'kind', 'nonce', 'publicKey', 'v'];
const KDF_KEYS = ['N', 'name', 'p', 'r', 'salt'];

function passphraseBytes(passphrase: string | Uint8Array): Buffer {
  const bytes =
    typeof passphrase === 'string'
      ? Buffer.from(passphrase, 'utf8')
      : passphrase instanceof Uint8Array
        ? Buffer.from(passphrase)
        : undefined;
  if (bytes === undefined || bytes.length === 0) {
    throw new InvalidArgumentError('passphrase must be a non-empty string or byte array');
  }
  return bytes;
}

async function deriveKek(
  passphrase: string | Uint8Array,
  salt: Uint8Array,
  params: ScryptParams,
): Promise<Buffer> {
  const stretched = await scryptKey(passphraseBytes(passphrase), salt, params, 32);
  try {
    return Buffer.from(hkdfSync('sha256', stretched, Buffer.alloc(0), KEK_INFO, 32));
  } finally {
    stretched.fill(0);
  }
}

function keyFileAad(f: KeyFile): Buffer {
  return Buffer.from(
    JSON.stringify([
      'tre-kek/v1',
      f.v,
      f.kind,
      f.kem,
      f.kid,
      f.publicKey,
      f.kdf.name,
      f.kdf.salt,
      f.kdf.N,
      f.kdf.r,
      f.kdf.p,
      f.created ?? null,
    ]),
    'utf8',
  );
}

export async function encryptKeyFile(
  kp: KeyPair,
  passphrase: string | Uint8Array,
  opts: { scrypt?: ScryptParams } = {},
): Promise<KeyFile> {
  const params = opts.scrypt ?? DEFAULT_SCRYPT;
  checkScryptParams(params);
  if (typeof kp !== 'object' || kp === null) {
    throw new InvalidArgumentError('key pair must be an object');
  }
  const derived = await publicKeyFromPrivate(kp.kem, kp.privateKey);
  if (derived.kid !== kp.kid) {
    throw new InvalidArgumentError('key pair kid does not match its private key');
  }
  const salt = randomBytes(SALT_LEN);
  const nonce = randomBytes(NONCE_LEN);
  const header: KeyFile = {
    v: 1,
    kind: 'tre-kek',
    kem: kp.kem,
    kid: kp.kid,
    publicKey: encodePublicKey(derived),
    kdf: { name: 'scrypt', salt: toBase64url(salt), N: params.N, r: params.r, p: params.p },
    nonce: toBase64url(nonce),
    ct: '',
    created: new Date().toISOString(),
  };
  const kek = await deriveKek(passphrase, salt, params);
  try {
    const cipher = createCipheriv('aes-256-gcm', kek, nonce);
    cipher.setAAD(keyFileAad(header));
    const ct = Buffer.concat([cipher.update(kp.privateKey), cipher.final(), cipher.getAuthTag()]);
    return { ...header, ct: toBase64url(ct) };
  } finally {
    kek.fill(0);
  }
}

export async function decryptKeyFile(
  file: KeyFile | unknown,
  passphrase: string | Uint8Array,
): Promise<KeyPair> {
  const f = parseKeyFile(file);
  const salt = fromBase64url(f.kdf.salt, 'kdf.salt');
  const nonce = fromBase64url(f.nonce, 'nonce');
  const ct = fromBase64url(f.ct, 'ct');
  const kek = await deriveKek(passphrase, salt, f.kdf);
  let privateKey: Buffer;
  try {
    const decipher = createDecipheriv('aes-256-gcm', kek, nonce);
    decipher.setAAD(keyFileAad(f));
    decipher.setAuthTag(ct.subarray(ct.length - TAG_LEN));
    privateKey = Buffer.concat([
      decipher.update(ct.subarray(0, ct.length - TAG_LEN)),
      decipher.final(),
    ]);
  } catch {
    throw new WrongPassphraseError(
      `wrong passphrase for key file ${f.kid} (or the file has been modified)`,
    );
  } finally {
    kek.fill(0);
  }
  try {
    const kp = await publicKeyFromPrivate(f.kem, new Uint8Array(privateKey));
    if (kp.kid !== f.kid) {
      // Only reachable if the file was written with a mismatched pair under the right passphrase.
      throw new AuthenticationError(`key file ${f.kid} holds a private key for a different key`);
    }
    return kp;
  } finally {
    privateKey.fill(0);
  }
}

function exactKeys(
  obj: Record<string, unknown>,
  allowed: string[],
  optional: string[],
  what: string,
) {
  const keys = Object.keys(obj);
  for (const k of keys) {
    if (!allowed.includes(k))
      throw new FormatError(`${what} has an unknown field ${JSON.stringify(k)}`);
  }
  for (const k of allowed) {
    if (!optional.includes(k) && !(k in obj)) throw new FormatError(`${what} lacks the field ${k}`);
  }
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Validates a key file given as a parsed object or as its JSON text. */
export function parseKeyFile(json: unknown): KeyFile {
  let obj: unknown = json;
  if (typeof json === 'string') {
    try {
      obj = JSON.parse(json);
    } catch {
      throw new FormatError('key file is not valid JSON');
    }
  }
  if (!isPlainObject(obj)) throw new FormatError('key file must be a JSON object');
  if (obj.kind !== 'tre-kek') throw new FormatError('not a TRE key file (kind must be tre-kek)');
  if (obj.v !== 1) throw new FormatError(`unsupported key file version ${JSON.stringify(obj.v)}`);
  exactKeys(obj, TOP_KEYS, ['created'], 'key file');
  if (!isKemName(obj.kem))
    throw new FormatError(`unknown KEM ${JSON.stringify(obj.kem)} in key file`);
  if (typeof obj.publicKey !== 'string')
    throw new FormatError('key file publicKey must be a string');
  const pk = decodePublicKey(obj.publicKey);
  if (pk.kem !== obj.kem) throw new FormatError('key file publicKey is not a key of its kem');
  if (obj.kid !== pk.kid) throw new FormatError('key file kid does not match its public key');
  if (!isPlainObject(obj.kdf)) throw new FormatError('key file kdf must be an object');
  const kdf = obj.kdf;
  exactKeys(kdf, KDF_KEYS, [], 'key file kdf');
  if (kdf.name !== 'scrypt') throw new FormatError('key file kdf must be scrypt');
  const params = { N: kdf.N, r: kdf.r, p: kdf.p };
  if (![params.N, params.r, params.p].every((x) => typeof x === 'number')) {
    throw new FormatError('key file scrypt N, r and p must be numbers');
  }
  try {
    checkScryptParams(params as ScryptParams);
  } catch (e) {
    throw new FormatError(`key file ${(e as Error).message}`);
  }
  if (128 * (params.N as number) * (params.r as number) > MAX_SCRYPT_MEMORY) {
    throw new FormatError('key file scrypt parameters need more than 1 GiB of memory');
  }
  if (fromBase64url(kdf.salt, 'key file kdf.salt').length !== SALT_LEN) {
    throw new FormatError(`key file kdf.salt must be ${SALT_LEN} bytes`);
  }
  if (fromBase64url(obj.nonce, 'key file nonce').length !== NONCE_LEN) {
    throw new FormatError(`key file nonce must be ${NONCE_LEN} bytes`);
  }
  if (fromBase64url(obj.ct, 'key file ct').length !== 32 + TAG_LEN) {
    throw new FormatError(`key file ct must be ${32 + TAG_LEN} bytes`);
  }
  if (
    obj.created !== undefined &&
    (typeof obj.created !== 'string' || !ISO_DATE.test(obj.created))
  ) {
    throw new FormatError('key file created must be an ISO 8601 UTC timestamp');
  }
  const file: KeyFile = {
    v: 1,
    kind: 'tre-kek',
    kem: obj.kem,
    kid: pk.kid,
    publicKey: obj.publicKey,
    kdf: {
      name: 'scrypt',
      salt: kdf.salt as string,
      N: params.N as number,
      r: params.r as number,
      p: params.p as number,
    },
    nonce: obj.nonce as string,
    ct: obj.ct as string,
  };
  if (obj.created !== undefined) file.created = obj.created as string;
  return file;
}
