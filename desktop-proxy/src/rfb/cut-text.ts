import { RfbProtocolError } from './errors.js';

/**
 * The payload length of a ClientCutText/ServerCutText message from its signed length field.
 * A negative length is the Extended Clipboard form, whose payload is |length| bytes.
 */
export function cutTextLength(
  buf: Buffer,
  off: number,
  max: number,
  what: string,
): { length: number; extended: boolean } {
  const signed = buf.readInt32BE(off);
  const length = Math.abs(signed);
  if (length > max) throw new RfbProtocolError(`${what} of ${length} bytes exceeds the limit`);
  return { length, extended: signed < 0 };
}
