import { FormatError } from './errors.js';

const B64URL = /^[A-Za-z0-9_-]*$/;

/** Unpadded base64url, the text form of every binary field in TRE records. */
export function toBase64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

/**
 * Strict unpadded base64url: Buffer's own decoder skips invalid characters and ignores
 * non-zero trailing bits, so two different strings could decode to the same bytes. Records
 * must have exactly one text form, hence the re-encoding check.
 */
export function fromBase64url(text: unknown, what: string): Uint8Array {
  if (typeof text !== 'string' || !B64URL.test(text)) {
    throw new FormatError(`${what} must be an unpadded base64url string`);
  }
  const bytes = Buffer.from(text, 'base64url');
  if (bytes.toString('base64url') !== text) {
    throw new FormatError(`${what} is not canonical unpadded base64url`);
  }
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
