/**
 * `gocryptfs.conf`, read and written as gocryptfs 2.3 does: the same JSON fields, order and tab
 * indentation, the same default feature flags, and the master key wrapped the same way, i.e.
 * scrypt(passphrase) -> HKDF-SHA256 ("AES-GCM file content encryption") -> AES-256-GCM with a
 * 128-bit random nonce and associated data = uint64 BE block number 0 (no file ID).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { KEY_LEN, assertKey, deriveSubkey } from './cryptocore.js';
import {
  FormatError,
  InvalidArgumentError,
  UnsupportedError,
  WrongPassphraseError,
} from './errors.js';
import { DEFAULT_SCRYPT, scryptKey, type ScryptParams } from './kdf.js';
import { writeNewFileAtomic } from './fsatomic.js';
import { NAME_MAX, type NameTransformOptions } from './nametransform.js';

export const CONF_VERSION = 2;

/** The flags `gocryptfs -init` (2.3) writes, in its order. */
export const DEFAULT_FEATURE_FLAGS = [
  'HKDF',
  'GCMIV128',
  'DirIV',
  'EMENames',
  'LongNames',
  'Raw64',
] as const;

/** Every flag gocryptfs knows; any other flag means a newer format we must not touch. */
const KNOWN_FLAGS = new Set([
  'PlaintextNames',
  'DirIV',
  'EMENames',
  'GCMIV128',
  'LongNames',
  'LongNameMax',
  'AESSIV',
  'Raw64',
  'HKDF',
  'FIDO2',
  'XChaCha20Poly1305',
]);
/** Without these the volume uses a layout this library does not implement. */
const REQUIRED_FLAGS = ['HKDF', 'GCMIV128', 'DirIV', 'EMENames'];
const REFUSED_FLAGS = ['PlaintextNames', 'AESSIV', 'FIDO2', 'XChaCha20Poly1305'];

const NONCE_LEN = 16;
const TAG_LEN = 16;
const ENCRYPTED_KEY_LEN = NONCE_LEN + KEY_LEN + TAG_LEN;
const SALT_LEN = 32;

/** Exactly the JSON object gocryptfs reads, field for field. */
export interface GocryptfsConf {
  Creator: string;
  /** Standard base64 (Go's encoding of []byte). */
  EncryptedKey: string;
  ScryptObject: { Salt: string; N: number; R: number; P: number; KeyLen: number };
  Version: number;
  FeatureFlags: string[];
  LongNameMax?: number;
}

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** Identifies the writer for humans, as gocryptfs's "gocryptfs 2.3" does. */
export const CREATOR = `tre-crypt ${packageVersion()}`;

/** Additional data of the key block: block number 0 as uint64 big endian, no file ID. */
const KEY_AAD = Buffer.alloc(8);

async function keyEncryptionKey(passphrase: Uint8Array, conf: GocryptfsConf): Promise<Buffer> {
  const { Salt, N, R, P, KeyLen } = conf.ScryptObject;
  const scryptHash = await scryptKey(
    passphrase,
    Buffer.from(Salt, 'base64'),
    { N, r: R, p: P },
    KeyLen,
  );
  const kek = deriveSubkey(scryptHash, 'content');
  scryptHash.fill(0);
  return kek;
}

export interface CreateConfigOptions {
  scrypt?: ScryptParams;
  /** Wrap this key instead of a fresh random one (e.g. to re-create a lost config). */
  masterKey?: Uint8Array;
  creator?: string;
}

/** A new config and its master key, ready to write with writeConfigFile. */
export async function createConfig(
  passphrase: Uint8Array,
  options: CreateConfigOptions = {},
): Promise<{ conf: GocryptfsConf; masterKey: Buffer }> {
  checkPassphrase(passphrase);
  const params = options.scrypt ?? DEFAULT_SCRYPT;
  if (params.r !== 8 || params.p !== 1) {
    // gocryptfs rejects r < 8 and always writes r=8, p=1; stay inside what it writes.
    throw new InvalidArgumentError('gocryptfs.conf uses scrypt r=8 and p=1');
  }
  const masterKey = options.masterKey ? Buffer.from(options.masterKey) : randomBytes(KEY_LEN);
  assertKey(masterKey, 'master key');
  const conf: GocryptfsConf = {
    Creator: options.creator ?? CREATOR,
    EncryptedKey: '',
    ScryptObject: {
      Salt: randomBytes(SALT_LEN).toString('base64'),
      N: params.N,
      R: params.r,
      P: params.p,
      KeyLen: KEY_LEN,
    },
    Version: CONF_VERSION,
    FeatureFlags: [...DEFAULT_FEATURE_FLAGS],
  };
  const kek = await keyEncryptionKey(passphrase, conf);
  const nonce = randomBytes(NONCE_LEN);
  const cipher = createCipheriv('aes-256-gcm', kek, nonce, { authTagLength: TAG_LEN });
  kek.fill(0);
  cipher.setAAD(KEY_AAD);
  const ct = Buffer.concat([nonce, cipher.update(masterKey), cipher.final(), cipher.getAuthTag()]);
  conf.EncryptedKey = ct.toString('base64');
  return { conf, masterKey };
}

/** Unwraps the master key; a wrong passphrase (or a modified key block) fails the GCM tag. */
export async function unlockMasterKey(
  conf: GocryptfsConf,
  passphrase: Uint8Array,
): Promise<Buffer> {
  checkPassphrase(passphrase);
  const blob = Buffer.from(conf.EncryptedKey, 'base64');
  const kek = await keyEncryptionKey(passphrase, conf);
  const decipher = createDecipheriv('aes-256-gcm', kek, blob.subarray(0, NONCE_LEN), {
    authTagLength: TAG_LEN,
  });
  kek.fill(0);
  decipher.setAAD(KEY_AAD);
  decipher.setAuthTag(blob.subarray(blob.length - TAG_LEN));
  const key = decipher.update(blob.subarray(NONCE_LEN, blob.length - TAG_LEN));
  try {
    decipher.final();
  } catch {
    key.fill(0);
    throw new WrongPassphraseError('wrong passphrase for gocryptfs.conf');
  }
  return key;
}

function checkPassphrase(passphrase: Uint8Array): void {
  if (passphrase.length === 0) throw new InvalidArgumentError('the passphrase is empty');
}

const B64_STD = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

/**
 * Parses and validates a config with gocryptfs's rules (version 2, known flags, scrypt floors:
 * N >= 2^10, R >= 8, P >= 1, 32-byte salt), then refuses layouts this library cannot read
 * (plaintext names, AES-SIV, XChaCha20, FIDO2, pre-HKDF volumes, deterministic names).
 */
export function parseConfig(text: string): GocryptfsConf {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new FormatError('gocryptfs.conf is not valid JSON');
  }
  if (!isRecord(raw)) throw new FormatError('gocryptfs.conf is not a JSON object');
  const { Creator, EncryptedKey, ScryptObject: so, Version, FeatureFlags, LongNameMax } = raw;
  if (Version !== CONF_VERSION) {
    throw new UnsupportedError(
      `gocryptfs.conf has on-disk format version ${String(Version)}, want 2`,
    );
  }
  if (
    !Array.isArray(FeatureFlags) ||
    !FeatureFlags.every((f): f is string => typeof f === 'string')
  ) {
    throw new FormatError('gocryptfs.conf FeatureFlags must be a list of strings');
  }
  for (const f of FeatureFlags) {
    if (!KNOWN_FLAGS.has(f))
      throw new UnsupportedError(`gocryptfs.conf has unknown feature flag "${f}"`);
  }
  for (const f of REFUSED_FLAGS) {
    if (FeatureFlags.includes(f))
      throw new UnsupportedError(`gocryptfs volumes with ${f} are not supported`);
  }
  for (const f of REQUIRED_FLAGS) {
    if (!FeatureFlags.includes(f)) {
      throw new UnsupportedError(`gocryptfs volumes without the ${f} flag are not supported`);
    }
  }
  if (!isRecord(so) || typeof so.Salt !== 'string' || !B64_STD.test(so.Salt)) {
    throw new FormatError('gocryptfs.conf ScryptObject is missing or has no base64 Salt');
  }
  const { N, R, P, KeyLen } = so;
  if (!isInt(N) || !isInt(R) || !isInt(P) || !isInt(KeyLen)) {
    throw new FormatError('gocryptfs.conf scrypt N, R, P and KeyLen must be integers');
  }
  if (N < 1 << 10 || R < 8 || P < 1 || Buffer.from(so.Salt, 'base64').length < SALT_LEN) {
    throw new FormatError('gocryptfs.conf scrypt parameters are below the gocryptfs minimums');
  }
  if (KeyLen !== KEY_LEN) throw new FormatError(`gocryptfs.conf scrypt KeyLen must be ${KEY_LEN}`);
  if (typeof EncryptedKey !== 'string' || !B64_STD.test(EncryptedKey)) {
    throw new FormatError('gocryptfs.conf EncryptedKey is not base64');
  }
  if (Buffer.from(EncryptedKey, 'base64').length !== ENCRYPTED_KEY_LEN) {
    throw new FormatError(`gocryptfs.conf EncryptedKey must be ${ENCRYPTED_KEY_LEN} bytes`);
  }
  const hasMax = FeatureFlags.includes('LongNameMax');
  if (hasMax !== (LongNameMax !== undefined)) {
    throw new FormatError('gocryptfs.conf LongNameMax and its feature flag must come together');
  }
  if (
    LongNameMax !== undefined &&
    (!isInt(LongNameMax) || LongNameMax < 62 || LongNameMax > NAME_MAX)
  ) {
    throw new FormatError('gocryptfs.conf LongNameMax must be 62..255');
  }
  const conf: GocryptfsConf = {
    Creator: typeof Creator === 'string' ? Creator : '',
    EncryptedKey,
    ScryptObject: { Salt: so.Salt, N, R, P, KeyLen },
    Version,
    FeatureFlags: [...FeatureFlags],
  };
  if (LongNameMax !== undefined) conf.LongNameMax = LongNameMax;
  return conf;
}

/** The byte layout of Go's json.MarshalIndent(cf, "", "\t") plus the trailing newline. */
export function serializeConfig(conf: GocryptfsConf): string {
  const ordered: GocryptfsConf = {
    Creator: conf.Creator,
    EncryptedKey: conf.EncryptedKey,
    ScryptObject: {
      Salt: conf.ScryptObject.Salt,
      N: conf.ScryptObject.N,
      R: conf.ScryptObject.R,
      P: conf.ScryptObject.P,
      KeyLen: conf.ScryptObject.KeyLen,
    },
    Version: conf.Version,
    FeatureFlags: conf.FeatureFlags,
  };
  if (conf.LongNameMax !== undefined) ordered.LongNameMax = conf.LongNameMax;
  // Go escapes these three in strings by default; keep the output byte-identical.
  const json = JSON.stringify(ordered, null, '\t')
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
  return json + '\n';
}

/** The name-encryption settings a config implies. */
export function nameOptions(conf: GocryptfsConf): NameTransformOptions {
  const flags = conf.FeatureFlags;
  return {
    raw64: flags.includes('Raw64'),
    longNameMax: flags.includes('LongNames') ? (conf.LongNameMax ?? NAME_MAX) : false,
  };
}

export async function readConfigFile(path: string): Promise<GocryptfsConf> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new FormatError(`${path} does not exist: not a gocryptfs volume`);
    }
    throw err;
  }
  return parseConfig(text);
}

/**
 * Writes the config read-only (0400, as gocryptfs does), atomically, never replacing an existing
 * config.
 */
export async function writeConfigFile(path: string, conf: GocryptfsConf): Promise<void> {
  await writeNewFileAtomic(path, serializeConfig(conf), 0o400);
}
