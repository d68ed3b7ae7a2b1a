/**
 * The only names the ingress accepts: encrypted names exactly as gocryptfs writes them
 * (unpadded base64url of a whole number of 16-byte EME blocks, at most 255 characters) or
 * long-name entries `gocryptfs.longname.<base64url SHA-256>`. Neither form can contain a
 * slash, a dot segment or a NUL, so no accepted name can leave its directory.
 */
import { createHash } from 'node:crypto';
import { LONGNAME_PREFIX, NAME_MAX } from '@tre/crypto';

const B64URL = /^[A-Za-z0-9_-]+$/;
const LONG_ENTRY = /^gocryptfs\.longname\.[A-Za-z0-9_-]{43}$/;
/** The longest encrypted name: EME output of a 255-byte name padded to 256 bytes. */
const MAX_FULL_NAME = 342;

export class CipherNameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CipherNameError';
  }
}

function decodedLength(text: string): number {
  const rem = text.length % 4;
  if (rem === 1) return -1;
  return Math.floor(text.length / 4) * 3 + (rem === 0 ? 0 : rem - 1);
}

/** A full encrypted name (short or long form) as base64url of 16..256 bytes in steps of 16. */
export function isFullCipherName(name: string): boolean {
  if (name.length > MAX_FULL_NAME || !B64URL.test(name)) return false;
  const n = decodedLength(name);
  if (n < 16 || n % 16 !== 0) return false;
  // Canonical: re-encoding the decoded bytes gives the same text (no stray low bits).
  return Buffer.from(name, 'base64url').toString('base64url') === name;
}

/** Checks one directory entry of a cipher path; `longName` is the full name of a long entry. */
export function checkCipherEntry(entry: string, longName?: string): void {
  if (LONG_ENTRY.test(entry)) {
    if (longName === undefined) {
      throw new CipherNameError(`${entry} is a long-name entry but its full name is missing`);
    }
    if (!isFullCipherName(longName) || longName.length <= NAME_MAX) {
      throw new CipherNameError('the full long name is not a valid encrypted name over 255 chars');
    }
    const hash = createHash('sha256').update(longName).digest('base64url');
    if (LONGNAME_PREFIX + hash !== entry) {
      throw new CipherNameError(`the full name does not hash to ${entry}`);
    }
    return;
  }
  if (longName !== undefined) {
    throw new CipherNameError(`${entry} is not a long-name entry but a full name was given`);
  }
  if (entry.length > NAME_MAX || !isFullCipherName(entry)) {
    throw new CipherNameError(
      'a name must be an encrypted gocryptfs name (base64url, 16-byte blocks, <= 255 chars) or gocryptfs.longname.<hash>',
    );
  }
}

/** One component of a cipher path as the client sends it. */
export interface CipherComponent {
  entry: string;
  longName?: string;
}

export function checkCipherPath(path: readonly CipherComponent[], what: string): void {
  if (!Array.isArray(path) || path.length > 256) {
    throw new CipherNameError(`${what} must be a list of at most 256 components`);
  }
  for (const c of path) {
    if (typeof c !== 'object' || c === null || typeof c.entry !== 'string') {
      throw new CipherNameError(`${what} components must be objects with an entry`);
    }
    if (c.longName !== undefined && typeof c.longName !== 'string') {
      throw new CipherNameError(`${what}: longName must be a string`);
    }
    checkCipherEntry(c.entry, c.longName);
  }
}

export function pathKey(path: readonly CipherComponent[]): string {
  return path.map((c) => c.entry).join('/');
}

/**
 * Checks an entry as it is stored in a cipher directory (a short encrypted name or a long-name
 * entry, whose `.name` file the reader does not need): a name that cannot leave its directory.
 */
export function checkStoredEntry(entry: string): void {
  if (LONG_ENTRY.test(entry)) return;
  if (entry.length > NAME_MAX || !isFullCipherName(entry)) {
    throw new CipherNameError(`${entry.slice(0, 40)} is not an encrypted gocryptfs name`);
  }
}

/** Splits and checks a stored cipher path `a/b/c` (empty for the root). */
export function parseStoredPath(path: string): string[] {
  if (path === '') return [];
  const parts = path.split('/');
  if (parts.length > 256) throw new CipherNameError('a path has at most 256 components');
  for (const p of parts) checkStoredEntry(p);
  return parts;
}
