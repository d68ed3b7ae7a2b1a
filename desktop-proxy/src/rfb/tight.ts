import type { ByteReader } from './byte-reader.js';
import { RfbProtocolError } from './errors.js';

const FILL = 0x8;
const JPEG = 0x9;
const PNG = 0xa;
const EXPLICIT_FILTER = 0x4;
const COPY_FILTER = 0;
const PALETTE_FILTER = 1;
const GRADIENT_FILTER = 2;
/** Basic compression sends data shorter than this uncompressed, without a length. */
const MIN_COMPRESSED = 12;

/**
 * Reads a Tight or TightPNG rectangle's header (after the 12-byte rectangle header, at offset
 * `base` of the current header) with `need()` and returns the length of the data that
 * follows it, or -1 when more bytes are needed. Only framing: zlib streams are not inflated.
 */
export function tightRect(
  r: ByteReader,
  base: number,
  png: boolean,
  w: number,
  h: number,
  tpixel: number,
): number {
  if (!r.need(base + 1)) return -1;
  const kind = r.h[r.ho + base]! >> 4;
  let off = base + 1;
  if (kind === FILL) return r.need(off + tpixel) ? 0 : -1;
  if (kind === JPEG || (kind === PNG && png)) return compactLength(r, off);
  if (kind & FILL) throw new RfbProtocolError(`invalid Tight compression control ${kind}`);
  if (png) throw new RfbProtocolError('basic compression in a TightPNG rectangle');

  let filter = COPY_FILTER;
  if (kind & EXPLICIT_FILTER) {
    if (!r.need(off + 1)) return -1;
    filter = r.h[r.ho + off]!;
    off += 1;
  }
  let size: number;
  switch (filter) {
    case COPY_FILTER:
    case GRADIENT_FILTER:
      size = w * h * tpixel;
      break;
    case PALETTE_FILTER: {
      if (!r.need(off + 1)) return -1;
      const colours = r.h[r.ho + off]! + 1;
      off += 1 + colours * tpixel;
      if (!r.need(off)) return -1;
      // Two colours (noVNC: up to two) pack eight pixels per byte, row by row.
      size = colours <= 2 ? ((w + 7) >> 3) * h : w * h;
      break;
    }
    default:
      throw new RfbProtocolError(`invalid Tight filter ${filter}`);
  }
  if (size < MIN_COMPRESSED) return size;
  return compactLength(r, off);
}

/** Tight's 1-3 byte length: 7 bits per byte, the top bit says another byte follows. */
function compactLength(r: ByteReader, off: number): number {
  if (!r.need(off + 1)) return -1;
  const b0 = r.h[r.ho + off]!;
  if (!(b0 & 0x80)) return b0;
  if (!r.need(off + 2)) return -1;
  const b1 = r.h[r.ho + off + 1]!;
  if (!(b1 & 0x80)) return (b0 & 0x7f) | (b1 << 7);
  if (!r.need(off + 3)) return -1;
  return (b0 & 0x7f) | ((b1 & 0x7f) << 7) | (r.h[r.ho + off + 2]! << 14);
}
