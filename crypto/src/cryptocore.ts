import { hkdfSync } from 'node:crypto';
import { InvalidArgumentError } from './errors.js';

/** Length of every symmetric key in the TRE: gocryptfs master keys, DEKs, volume keys. */
export const KEY_LEN = 32;

/**
 * HKDF "info" strings gocryptfs uses to derive one subkey per purpose from a master key. A DEK
 * takes the master key's place, so per-file keys derive their subkeys the same way.
 */
export const HKDF_INFO = {
  content: 'AES-GCM file content encryption',
  names: 'EME filename encryption',
} as const;

export type HkdfPurpose = keyof typeof HKDF_INFO;

export function assertKey(key: Uint8Array, what = 'key'): void {
  if (key.length !== KEY_LEN) {
    throw new InvalidArgumentError(`${what} must be ${KEY_LEN} bytes, got ${key.length}`);
  }
}

/** HKDF-SHA256 with an empty salt, as gocryptfs derives its subkeys. */
export function deriveSubkey(masterKey: Uint8Array, purpose: HkdfPurpose): Buffer {
  assertKey(masterKey, 'master key');
  return Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), HKDF_INFO[purpose], KEY_LEN));
}
