/**
 * k-of-n splitting of a key with shamir-secret-sharing (GF(2^8), audited), made self-checking.
 *
 * The value actually split is  secret || tag,  tag = SHA-256("tre-shamir-secret/v1" 0x00 header
 * || secret). Shamir hides the tag as well as the secret from fewer than k shares; on combine a
 * wrong, corrupted or foreign share yields a different polynomial and the tag no longer matches.
 *
 * Share layout (binary, see crypto/README.md, "Shamir shares"):
 *   [0]        format version, 1
 *   [1]        threshold k (2..255)
 *   [2]        number of shares n (k..255)
 *   [3..19)    share-set id, 16 random bytes shared by all shares of one split
 *   [19..L-8)  the library's share of secret||tag (its last byte is the share's x coordinate)
 *   [L-8..L)   checksum: first 8 bytes of SHA-256("tre-shamir-share/v1" 0x00 || bytes [0..L-8))
 * The checksum names a damaged share on its own; the tag is what makes the result trustworthy.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { combine, split } from 'shamir-secret-sharing';
import { fromBase64url, toBase64url } from './encoding.js';
import { FormatError, InvalidArgumentError, ShareIntegrityError } from './errors.js';

const VERSION = 1;
const SET_ID_LEN = 16;
const HEADER_LEN = 3 + SET_ID_LEN;
const TAG_LEN = 32;
const CHECKSUM_LEN = 8;
/** Shamir here protects keys; larger secrets should be encrypted and their key split. */
export const MAX_SHAMIR_SECRET = 1024;

function secretTag(header: Uint8Array, secret: Uint8Array): Buffer {
  return createHash('sha256')
    .update('tre-shamir-secret/v1\0')
    .update(header)
    .update(secret)
    .digest();
}

function checksum(body: Uint8Array): Buffer {
  return createHash('sha256')
    .update('tre-shamir-share/v1\0')
    .update(body)
    .digest()
    .subarray(0, CHECKSUM_LEN);
}

export async function splitSecret(
  secret: Uint8Array,
  opts: { threshold: number; shares: number },
): Promise<Uint8Array[]> {
  if (!(secret instanceof Uint8Array) || secret.length < 1 || secret.length > MAX_SHAMIR_SECRET) {
    throw new InvalidArgumentError(`secret must be 1 to ${MAX_SHAMIR_SECRET} bytes`);
  }
  const { threshold, shares } = opts ?? {};
  if (!Number.isInteger(threshold) || threshold < 2 || threshold > 255) {
    throw new InvalidArgumentError('threshold must be an integer from 2 to 255');
  }
  if (!Number.isInteger(shares) || shares < threshold || shares > 255) {
    throw new InvalidArgumentError(
      `shares must be an integer from the threshold (${threshold}) to 255`,
    );
  }
  const header = new Uint8Array(HEADER_LEN);
  header.set([VERSION, threshold, shares]);
  header.set(randomBytes(SET_ID_LEN), 3);
  const payload = new Uint8Array(secret.length + TAG_LEN);
  payload.set(secret);
  payload.set(secretTag(header, secret), secret.length);
  // The library insists on a plain Uint8Array (a Buffer is refused).
  const raw = await split(payload, shares, threshold);
  payload.fill(0);
  return raw.map((r) => {
    const out = new Uint8Array(HEADER_LEN + r.length + CHECKSUM_LEN);
    out.set(header);
    out.set(r, HEADER_LEN);
    out.set(checksum(out.subarray(0, HEADER_LEN + r.length)), HEADER_LEN + r.length);
    r.fill(0);
    return out;
  });
}

interface ParsedShare {
  header: Uint8Array;
  body: Uint8Array;
  x: number;
}

function parseShare(share: unknown, index: number): ParsedShare {
  const minLen = HEADER_LEN + 1 + TAG_LEN + 1 + CHECKSUM_LEN;
  if (!(share instanceof Uint8Array) || share.length < minLen) {
    throw new ShareIntegrityError(`share ${index + 1} is not a share (too short)`);
  }
  const end = share.length - CHECKSUM_LEN;
  if (!timingSafeEqual(checksum(share.subarray(0, end)), share.subarray(end))) {
    throw new ShareIntegrityError(`share ${index + 1} is corrupted (checksum mismatch)`);
  }
  if (share[0] !== VERSION) {
    throw new ShareIntegrityError(`share ${index + 1} has unsupported format version ${share[0]}`);
  }
  const k = share[1] as number;
  const n = share[2] as number;
  if (k < 2 || n < k) {
    throw new ShareIntegrityError(`share ${index + 1} has an invalid threshold ${k} of ${n}`);
  }
  const body = share.subarray(HEADER_LEN, end);
  const x = body[body.length - 1] as number;
  if (x === 0) throw new ShareIntegrityError(`share ${index + 1} has an invalid index`);
  return { header: share.subarray(0, HEADER_LEN), body, x };
}

export async function combineShares(shares: Uint8Array[]): Promise<Uint8Array> {
  if (!Array.isArray(shares) || shares.length === 0) {
    throw new ShareIntegrityError('no shares given');
  }
  const parsed = shares.map(parseShare);
  const first = parsed[0] as ParsedShare;
  const k = first.header[1] as number;
  const seen = new Set<number>();
  for (const [i, s] of parsed.entries()) {
    if (Buffer.compare(s.header, first.header) !== 0) {
      throw new ShareIntegrityError(`share ${i + 1} belongs to a different split than share 1`);
    }
    if (s.body.length !== first.body.length) {
      throw new ShareIntegrityError(`share ${i + 1} has a different length than share 1`);
    }
    if (seen.has(s.x)) {
      throw new ShareIntegrityError(`share ${i + 1} duplicates another share (index ${s.x})`);
    }
    seen.add(s.x);
  }
  if (parsed.length < k) {
    throw new ShareIntegrityError(`${k} shares are needed, got ${parsed.length}`);
  }
  // Copies into plain Uint8Arrays: the library refuses Buffers and subarray views are fine.
  const payload = await combine(parsed.map((s) => Uint8Array.from(s.body)));
  const secretLen = payload.length - TAG_LEN;
  const secret = payload.slice(0, secretLen);
  const ok = timingSafeEqual(secretTag(first.header, secret), payload.subarray(secretLen));
  payload.fill(0);
  if (!ok) {
    secret.fill(0);
    throw new ShareIntegrityError(
      'shares do not reconstruct the secret: at least one share is wrong or tampered with',
    );
  }
  return secret;
}

const SHARE_TEXT_PREFIX = 'tre-share:';

/** Text form of a share for custodians and scripts: 'tre-share:<unpadded base64url>'. */
export function encodeShare(share: Uint8Array): string {
  if (!(share instanceof Uint8Array)) throw new InvalidArgumentError('share must be bytes');
  return SHARE_TEXT_PREFIX + toBase64url(share);
}

/** Parses encodeShare's text; surrounding whitespace (from copy and paste) is ignored. */
export function decodeShare(text: string): Uint8Array {
  const t = typeof text === 'string' ? text.trim() : '';
  if (!t.startsWith(SHARE_TEXT_PREFIX)) {
    throw new FormatError(`a share must start with ${SHARE_TEXT_PREFIX}`);
  }
  return fromBase64url(t.slice(SHARE_TEXT_PREFIX.length), 'share');
}
