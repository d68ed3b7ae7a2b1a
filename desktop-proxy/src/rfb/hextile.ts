import type { ByteReader } from './byte-reader.js';
import { RfbProtocolError } from './errors.js';

const RAW = 0x01;
const BACKGROUND_SPECIFIED = 0x02;
const FOREGROUND_SPECIFIED = 0x04;
const ANY_SUBRECTS = 0x08;
const SUBRECTS_COLOURED = 0x10;
/** noVNC rejects anything above; so does the filter, to frame exactly as the client does. */
const MAX_SUBENCODING = 30;

/**
 * Reads the header of one Hextile tile (`tw` x `th` pixels) with `need()` and returns the
 * length of the body that follows it, or -1 when more bytes are needed.
 */
export function hextileTile(r: ByteReader, tw: number, th: number, bpp: number): number {
  if (!r.need(1)) return -1;
  const sub = r.h[r.ho]!;
  if (sub > MAX_SUBENCODING) throw new RfbProtocolError(`invalid Hextile subencoding ${sub}`);
  if (sub & RAW) return tw * th * bpp;
  let header = 1;
  if (sub & BACKGROUND_SPECIFIED) header += bpp;
  if (sub & FOREGROUND_SPECIFIED) header += bpp;
  if (!(sub & ANY_SUBRECTS)) return r.need(header) ? 0 : -1;
  if (!r.need(header + 1)) return -1;
  const subrects = r.h[r.ho + header]!;
  return subrects * ((sub & SUBRECTS_COLOURED ? bpp : 0) + 2);
}
