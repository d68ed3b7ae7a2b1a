import { RfbProtocolError } from './errors.js';

/** The fields of PIXEL_FORMAT that determine how many bytes a pixel takes on the wire. */
export interface PixelFormat {
  bitsPerPixel: number;
  depth: number;
  trueColour: boolean;
  redMax: number;
  greenMax: number;
  blueMax: number;
}

/** Reads the 16-byte PIXEL_FORMAT structure at `buf[off..]`. */
export function readPixelFormat(buf: Buffer, off: number): PixelFormat {
  const pf: PixelFormat = {
    bitsPerPixel: buf[off]!,
    depth: buf[off + 1]!,
    trueColour: buf[off + 3] !== 0,
    redMax: buf.readUInt16BE(off + 4),
    greenMax: buf.readUInt16BE(off + 6),
    blueMax: buf.readUInt16BE(off + 8),
  };
  if (pf.bitsPerPixel !== 8 && pf.bitsPerPixel !== 16 && pf.bitsPerPixel !== 32) {
    throw new RfbProtocolError(`unsupported bits-per-pixel ${pf.bitsPerPixel}`);
  }
  if (pf.depth === 0 || pf.depth > pf.bitsPerPixel) {
    throw new RfbProtocolError(`invalid depth ${pf.depth} for ${pf.bitsPerPixel} bits per pixel`);
  }
  return pf;
}

export function bytesPerPixel(pf: PixelFormat): number {
  return pf.bitsPerPixel >> 3;
}

/** Tight's TPIXEL: 3 bytes for 24-bit true colour in 32-bit pixels, else a whole pixel. */
export function tightPixelSize(pf: PixelFormat): number {
  return pf.trueColour &&
    pf.bitsPerPixel === 32 &&
    pf.depth === 24 &&
    pf.redMax === 255 &&
    pf.greenMax === 255 &&
    pf.blueMax === 255
    ? 3
    : bytesPerPixel(pf);
}
