// Builders for hand-made RFB byte streams and a harness that feeds them through RfbFilter.
import { RfbFilter, type FilteredEvent } from '../../src/rfb/index.js';

export function u8(...values: number[]): Buffer {
  return Buffer.from(values);
}

export function u16(value: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(value);
  return b;
}

export function u32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0);
  return b;
}

export function s32(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(value);
  return b;
}

export const cat = (...parts: Buffer[]): Buffer => Buffer.concat(parts);

export interface PixelFormatSpec {
  bpp: number;
  depth: number;
  trueColour?: boolean;
  max?: number;
}

export function pixelFormat({ bpp, depth, trueColour = true, max = 255 }: PixelFormatSpec): Buffer {
  return cat(
    u8(bpp, depth, 0, trueColour ? 1 : 0),
    u16(max),
    u16(max),
    u16(max),
    u8(16, 8, 0, 0, 0, 0),
  );
}

export const version = (minor: number): Buffer => Buffer.from(`RFB 003.00${minor}\n`, 'latin1');

export function serverInit(width: number, height: number, pf: Buffer, name = 'test'): Buffer {
  const n = Buffer.from(name, 'latin1');
  return cat(u16(width), u16(height), pf, u32(n.length), n);
}

export function rect(x: number, y: number, w: number, h: number, encoding: number): Buffer {
  return cat(u16(x), u16(y), u16(w), u16(h), s32(encoding));
}

export function fbu(...rects: Buffer[]): Buffer {
  return cat(u8(0, 0), u16(rects.length), ...rects);
}

export function setEncodings(...encodings: number[]): Buffer {
  return cat(u8(2, 0), u16(encodings.length), ...encodings.map(s32));
}

export function cutText(type: 3 | 6, payload: Buffer, extended = false): Buffer {
  return cat(u8(type, 0, 0, 0), s32(extended ? -payload.length : payload.length), payload);
}

/** The handshake steps of a 3.8 session with security None: [from, bytes][]. */
export function handshake38(
  width = 64,
  height = 48,
  pf: Buffer = pixelFormat({ bpp: 32, depth: 24 }),
): Step[] {
  return [
    ['server', version(8)],
    ['client', version(8)],
    ['server', u8(1, 1)],
    ['client', u8(1)],
    ['server', u32(0)],
    ['client', u8(1)],
    ['server', serverInit(width, height, pf)],
  ];
}

export type Step = ['client' | 'server', Buffer];

export interface Run {
  toServer: Buffer;
  toClient: Buffer;
  events: FilteredEvent[];
  filter: RfbFilter;
}

/** Feeds the steps through a fresh filter, each step's bytes cut into pieces by `split`. */
export function runSteps(
  steps: Step[],
  split: (b: Buffer) => Buffer[] = (b) => [b],
  maxCutTextLength?: number,
): Run {
  const toServer: Buffer[] = [];
  const toClient: Buffer[] = [];
  const events: FilteredEvent[] = [];
  const filter = new RfbFilter({
    toServer: (c) => toServer.push(Buffer.from(c)),
    toClient: (c) => toClient.push(Buffer.from(c)),
    onFiltered: (e) => events.push(e),
    ...(maxCutTextLength === undefined ? {} : { maxCutTextLength }),
  });
  for (const [from, bytes] of steps) {
    for (const piece of split(bytes)) {
      if (from === 'client') filter.pushFromClient(piece);
      else filter.pushFromServer(piece);
    }
  }
  return { toServer: Buffer.concat(toServer), toClient: Buffer.concat(toClient), events, filter };
}

/** Splits at one position (both halves may be empty). */
export const splitAt =
  (at: number) =>
  (b: Buffer): Buffer[] => [
    b.subarray(0, Math.min(at, b.length)),
    b.subarray(Math.min(at, b.length)),
  ];

export const bytewise = (b: Buffer): Buffer[] => [...b].map((x) => Buffer.from([x]));
