import { describe, expect, it } from '@jest/globals';
import { RfbFilter, RfbProtocolError } from '../src/rfb/index.js';
import {
  bytewise,
  cat,
  cutText,
  fbu,
  handshake38,
  pixelFormat,
  rect,
  runSteps,
  s32,
  serverInit,
  setEncodings,
  splitAt,
  u16,
  u32,
  u8,
  version,
  type Step,
} from './helpers/rfb-bytes.js';

/** A step and the bytes the filter must forward for it (default: all of them). */
type Case = [...Step, Buffer?];

function splits(steps: Case[]): ((b: Buffer) => Buffer[])[] {
  const longest = Math.max(...steps.map(([, b]) => b.length));
  const out: ((b: Buffer) => Buffer[])[] = [(b) => [b], bytewise];
  // Every position within headers; sparser through long bodies to keep the run fast.
  for (let k = 1; k < longest; k += k < 96 ? 1 : 509) out.push(splitAt(k));
  return out;
}

/** Runs the steps whole, byte by byte and split at every position; the output must not vary. */
function expectForwarded(steps: Case[]): ReturnType<typeof runSteps> {
  const plain: Step[] = steps.map(([from, bytes]) => [from, bytes]);
  const want = (side: 'client' | 'server'): Buffer =>
    cat(...steps.filter(([from]) => from === side).map(([, bytes, fwd]) => fwd ?? bytes));
  let last: ReturnType<typeof runSteps> | undefined;
  for (const split of splits(steps)) {
    const run = runSteps(plain, split);
    // Hex strings: jest compares (and diffs) them far faster than Buffers.
    expect(run.toServer.toString('hex')).toBe(want('client').toString('hex'));
    expect(run.toClient.toString('hex')).toBe(want('server').toString('hex'));
    last = run;
  }
  return last!;
}

function expectFailure(steps: Case[], reason: RegExp): void {
  const plain: Step[] = steps.map(([from, bytes]) => [from, bytes]);
  for (const split of splits(steps)) {
    let error: unknown;
    try {
      runSteps(plain, split);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(RfbProtocolError);
    expect((error as RfbProtocolError).reason).toMatch(reason);
  }
}

const HS: Case[] = handshake38();
const PF32 = pixelFormat({ bpp: 32, depth: 24 });
const NOTHING = Buffer.alloc(0);

describe('handshake', () => {
  it('passes a 3.8 handshake with security None and reaches normal', () => {
    expect(expectForwarded(HS).filter.state).toBe('normal');
  });

  it('offers the client only None and VncAuth, in the server order', () => {
    const run = expectForwarded([
      ['server', version(8)],
      ['client', version(8)],
      ['server', u8(4, 19, 2, 1, 18), u8(2, 2, 1)],
      ['client', u8(2)],
      ['server', Buffer.alloc(16, 0xaa)],
      ['client', Buffer.alloc(16, 0xbb)],
      ['server', u32(0)],
      ['client', u8(0)],
      ['server', serverInit(10, 10, PF32)],
    ]);
    expect(run.filter.state).toBe('normal');
    expect(run.events).toContainEqual({
      direction: 'server-to-client',
      kind: 'security-types',
      bytes: 2,
    });
  });

  it('fails when the server offers only encrypting types', () => {
    expectFailure(
      [
        ['server', version(8)],
        ['client', version(8)],
        ['server', u8(2, 19, 6)],
      ],
      /no security type/,
    );
  });

  it('fails when the client picks a type that was not offered', () => {
    expectFailure(
      [
        ['server', version(8)],
        ['client', version(8)],
        ['server', u8(2, 19, 1), u8(1, 1)],
        ['client', u8(19)],
      ],
      /not offered/,
    );
  });

  it('forwards a 3.8 security failure with its reason, then closes', () => {
    const reason = Buffer.from('bad password');
    const run = expectForwarded([
      ['server', version(8)],
      ['client', version(8)],
      ['server', u8(1, 2)],
      ['client', u8(2)],
      ['server', Buffer.alloc(16, 1)],
      ['client', Buffer.alloc(16, 2)],
      ['server', cat(u32(1), u32(reason.length), reason)],
    ]);
    expect(run.filter.state).toBe('closed');
    expectFailure(
      [
        ['server', version(8)],
        ['client', version(8)],
        ['server', u8(1, 1)],
        ['client', u8(1)],
        ['server', cat(u32(1), u32(0))],
        ['server', u8(0)],
      ],
      /waiting for the client \(closed\)/,
    );
  });

  it('handles 3.7 (no SecurityResult for None) and 3.3 (server-chosen type)', () => {
    expect(
      expectForwarded([
        ['server', version(7)],
        ['client', version(7)],
        ['server', u8(1, 1)],
        ['client', u8(1)],
        ['client', u8(1)],
        ['server', serverInit(8, 8, PF32)],
      ]).filter.state,
    ).toBe('normal');
    expect(
      expectForwarded([
        ['server', version(8)],
        ['client', version(3)],
        ['server', u32(2)],
        ['server', Buffer.alloc(16, 3)],
        ['client', Buffer.alloc(16, 4)],
        ['server', u32(0)],
        ['client', u8(1)],
        ['server', serverInit(8, 8, PF32)],
      ]).filter.state,
    ).toBe('normal');
    expectFailure(
      [
        ['server', version(3)],
        ['client', version(3)],
        ['server', u32(16)],
      ],
      /server chose security type 16/,
    );
  });

  it('fails on unknown versions, a client above the server and out-of-turn data', () => {
    expectFailure(
      [['server', Buffer.from('RFB 004.001\n')]],
      /unsupported server protocol version/,
    );
    expectFailure(
      [
        ['server', version(7)],
        ['client', version(8)],
      ],
      /above the server/,
    );
    expectFailure([['client', version(8)]], /client sent data while waiting for the server/);
    expectFailure(
      [
        ['server', version(8)],
        ['server', u8(1, 1)],
      ],
      /server sent data while waiting for the client/,
    );
  });

  it('bounds the desktop name', () => {
    const steps = handshake38();
    steps[6] = ['server', cat(u16(8), u16(8), PF32, u32(1 << 20))];
    expectFailure(steps, /desktop name/);
  });
});

describe('client messages', () => {
  it('passes input and update requests unchanged', () => {
    expectForwarded([
      ...HS,
      ['client', cat(u8(0, 0, 0, 0), pixelFormat({ bpp: 16, depth: 16, max: 31 }))],
      ['client', cat(u8(3, 1), u16(0), u16(0), u16(64), u16(48))],
      ['client', cat(u8(4, 1, 0, 0), u32(0x61))],
      ['client', cat(u8(5, 1), u16(3), u16(4))],
      ['client', cat(u8(150, 1), u16(0), u16(0), u16(64), u16(48))],
      ['client', cat(u8(248, 0, 0, 0), u32(3), u8(4), Buffer.from('abcd'))],
      ['client', cat(u8(255, 0), u16(1), u32(0x61), u32(30))],
    ]);
  });

  it('strips clipboard, unframeable and size-changing encodings from SetEncodings', () => {
    const noVnc = [
      7, -260, 16, 21, 5, 2, 6, 0, -23, -247, -223, -224, -258, -261, -308, -309, -312, -313, -307,
    ];
    const extra = [0xc0a1e5ce | 0, -316, 0x574d5664, -239, 50, 1, 99];
    const kept = [
      7, -260, 16, 5, 2, 0, -23, -247, -223, -224, -258, -261, -312, -313, -307, -239, 1,
    ];
    const run = expectForwarded([
      ...HS,
      ['client', setEncodings(...noVnc, ...extra), setEncodings(...kept)],
    ]);
    expect(run.events).toEqual([
      { direction: 'client-to-server', kind: 'set-encodings-stripped', bytes: 4 * 9 },
    ]);
    expect(expectForwarded([...HS, ['client', setEncodings(0, 16)]]).events).toEqual([]);
  });

  it('drops ClientCutText, plain and extended, and keeps the messages around it', () => {
    const key = cat(u8(4, 1, 0, 0), u32(0x62));
    const run = expectForwarded([
      ...HS,
      ['client', cat(key, cutText(6, Buffer.from('SECRET-PLAIN')), key), cat(key, key)],
      ['client', cutText(6, Buffer.from('SECRET-EXTENDED-PAYLOAD'), true), NOTHING],
      ['client', cutText(6, NOTHING), NOTHING],
      ['client', key],
    ]);
    expect(run.events.map((e) => [e.kind, e.bytes])).toEqual([
      ['client-cut-text', 20],
      ['extended-clipboard', 31],
      ['client-cut-text', 8],
    ]);
  });

  it('keeps PointerEvent at 6 bytes once ExtendedMouseButtons was asked for', () => {
    expectForwarded([
      ...HS,
      ['client', setEncodings(0, -316), setEncodings(0)],
      ['client', cat(u8(5, 0x80), u16(1), u16(2), u8(4, 1, 0, 0), u32(0x63))],
    ]);
  });

  it('fails on oversized cut text, bad fences, unknown types and late pixel format changes', () => {
    expect(() =>
      runSteps([...handshake38(), ['client', cat(u8(6, 0, 0, 0), s32(-2000))]], undefined, 1000),
    ).toThrow(/exceeds the limit/);
    expectFailure([...HS, ['client', cat(u8(6, 0, 0, 0), s32(-0x80000000))]], /exceeds the limit/);
    expectFailure(
      [...HS, ['client', cat(u8(248, 0, 0, 0), u32(0), u8(65))]],
      /ClientFence payload/,
    );
    expectFailure([...HS, ['client', u8(251, 0)]], /unsupported client message type 251/);
    expectFailure([...HS, ['client', u8(7)]], /unsupported client message type 7/);
    expectFailure([...HS, ['client', u8(255, 1)]], /QEMU client message subtype 1/);
    expectFailure(
      [...HS, ['client', setEncodings(...new Array<number>(1025).fill(0))]],
      /1025 encodings/,
    );
    expectFailure(
      [
        ...HS,
        ['client', cat(u8(3, 0), u16(0), u16(0), u16(1), u16(1))],
        ['client', cat(u8(0, 0, 0, 0), PF32)],
      ],
      /SetPixelFormat after/,
    );
    expectFailure(
      [...HS, ['client', cat(u8(0, 0, 0, 0), pixelFormat({ bpp: 24, depth: 24 }))]],
      /bits-per-pixel 24/,
    );
  });
});

const px = (n: number, bpp = 4): Buffer => Buffer.alloc(n * bpp, 0x5a);

describe('server messages', () => {
  it('passes Bell, colour maps, fences and end of continuous updates', () => {
    expectForwarded([
      ...HS,
      ['server', u8(2)],
      ['server', cat(u8(1, 0), u16(0), u16(2), Buffer.alloc(12, 9))],
      ['server', cat(u8(248, 0, 0, 0), u32(0x80000003), u8(2), u8(7, 8))],
      ['server', u8(150)],
    ]);
  });

  it('drops ServerCutText, plain and extended', () => {
    const run = expectForwarded([
      ...HS,
      ['server', cat(u8(2), cutText(3, Buffer.from('SECRET')), u8(2)), u8(2, 2)],
      ['server', cutText(3, Buffer.from('EXTENDED-SECRET'), true), NOTHING],
    ]);
    expect(run.events.map((e) => e.kind)).toEqual(['server-cut-text', 'extended-clipboard']);
  });

  it('fails on unknown types and oversized fences', () => {
    expectFailure([...HS, ['server', u8(4)]], /unsupported server message type 4/);
    expectFailure([...HS, ['server', u8(250, 0, 1, 1)]], /unsupported server message type 250/);
    expectFailure(
      [...HS, ['server', cat(u8(248, 0, 0, 0), u32(0), u8(65))]],
      /ServerFence payload/,
    );
  });
});

describe('framebuffer update rectangles', () => {
  const update = (...rects: Buffer[]): Case[] => [...HS, ['server', fbu(...rects)]];

  it('Raw, CopyRect and RRE at 32 bits per pixel', () => {
    expectForwarded(
      update(cat(rect(1, 2, 3, 4, 0), px(12)), cat(rect(0, 0, 5, 5, 1), u16(10), u16(10))),
    );
    expectForwarded(update(cat(rect(0, 0, 8, 8, 2), u32(2), px(1), px(2, 6))));
  });

  it('Raw follows the pixel format the client set', () => {
    expectForwarded([
      ...HS,
      ['client', cat(u8(0, 0, 0, 0), pixelFormat({ bpp: 16, depth: 16, max: 31 }))],
      ['server', fbu(cat(rect(0, 0, 3, 3, 0), px(9, 2)), cat(rect(0, 0, 2, 1, 0), px(2, 2)))],
      ['client', cat(u8(0, 0, 0, 0), pixelFormat({ bpp: 8, depth: 8, trueColour: false }))],
      ['server', fbu(cat(rect(0, 0, 3, 3, 0), px(9, 1)))],
    ]);
  });

  it('Hextile: raw, background/foreground and subrectangle tiles, partial edge tiles', () => {
    // 20x18 -> 2x2 tiles: 16x16, 4x16, 16x2, 4x2.
    const tiles = cat(
      u8(1),
      px(256),
      u8(2 | 4 | 8),
      px(1),
      px(1),
      u8(2),
      u8(0x00, 0x11, 0x22, 0x33),
      u8(8 | 16),
      u8(1),
      px(1),
      u8(0x01, 0x10),
      u8(0),
    );
    expectForwarded(update(cat(rect(0, 0, 20, 18, 5), tiles)));
    expectFailure(update(cat(rect(0, 0, 16, 16, 5), u8(31))), /Hextile subencoding 31/);
  });

  it('ZRLE: a 4-byte length and opaque data', () => {
    expectForwarded(update(cat(rect(0, 0, 64, 48, 16), u32(5), u8(1, 2, 3, 4, 5))));
    expectFailure(update(cat(rect(0, 0, 64, 48, 16), u32(0x4000001))), /ZRLE data/);
  });

  it('Tight: fill, JPEG, basic copy/palette/gradient with short and compact lengths', () => {
    const tight = (w: number, h: number, body: Buffer): Buffer => cat(rect(0, 0, w, h, 7), body);
    expectForwarded(
      update(
        tight(10, 10, cat(u8(0x80), u8(1, 2, 3))),
        tight(10, 10, cat(u8(0x90), u8(0x83, 0x01), Buffer.alloc(131, 1))),
        tight(1, 3, cat(u8(0x00), Buffer.alloc(9, 2))), // 9 bytes < 12: sent uncompressed
        tight(4, 4, cat(u8(0x01 | 0x10), u8(5), Buffer.alloc(5, 3))), // stream 1, copy, compact length 5
        tight(16, 4, cat(u8(0x40), u8(1), u8(1), px(2, 3), Buffer.alloc(8, 4))), // 2 colours: 2 bytes x 4 rows < 12
        tight(
          16,
          4,
          cat(u8(0x40), u8(1), u8(3), px(4, 3), u8(0x80, 0x80, 0x01), Buffer.alloc(16384, 5)),
        ),
        tight(8, 8, cat(u8(0x40), u8(2), u8(7), Buffer.alloc(7, 6))),
        tight(0, 0, cat(u8(0x00))),
      ),
    );
    expectFailure(update(tight(4, 4, u8(0xa0))), /invalid Tight compression control 10/);
    expectFailure(update(tight(4, 4, u8(0xb0))), /invalid Tight compression control 11/);
    expectFailure(update(tight(4, 4, u8(0x40, 3))), /invalid Tight filter 3/);
  });

  it('Tight pixels are whole pixels outside 24-bit true colour', () => {
    expectForwarded([
      ...HS,
      ['client', cat(u8(0, 0, 0, 0), pixelFormat({ bpp: 16, depth: 16, max: 31 }))],
      [
        'server',
        fbu(
          cat(rect(0, 0, 2, 2, 7), u8(0x80), u8(1, 2)),
          cat(rect(0, 0, 2, 2, 7), u8(0), px(4, 2)),
        ),
      ],
    ]);
  });

  it('TightPNG: fill and PNG, no basic compression', () => {
    expectForwarded(
      update(
        cat(rect(0, 0, 4, 4, -260), u8(0x80), u8(1, 2, 3)),
        cat(rect(0, 0, 4, 4, -260), u8(0xa0), u8(3), u8(1, 2, 3)),
      ),
    );
    expectFailure(update(cat(rect(0, 0, 4, 4, -260), u8(0x00))), /basic compression in a TightPNG/);
  });

  it('pseudo-encodings: cursor, desktop size and name, QEMU key and LED, LastRect', () => {
    const run = expectForwarded([
      ...HS,
      [
        'server',
        cat(
          u8(0, 0),
          u16(0xffff),
          cat(rect(1, 1, 9, 2, -239), px(18), Buffer.alloc(4, 0xff)),
          rect(0, 0, 100, 80, -223),
          cat(rect(90, 70, 10, 10, 0), px(100)),
          cat(rect(0, 0, 0, 0, -307), u32(4), Buffer.from('name')),
          rect(0, 0, 0, 0, -258),
          cat(rect(0, 0, 0, 0, -261), u8(4)),
          rect(0, 0, 0, 0, -224),
        ),
      ],
      ['server', u8(2)],
    ]);
    expect(run.filter.state).toBe('normal');
  });

  it('fails on unframeable encodings and rectangles outside the framebuffer', () => {
    for (const enc of [21, 50, 6, -308, -316, -309, -312, 0xc0a1e5ce | 0, 12345]) {
      expectFailure(
        update(rect(0, 0, 1, 1, enc)),
        new RegExp(`unsupported rectangle encoding ${enc}`),
      );
    }
    expectFailure(update(rect(60, 0, 5, 1, 0)), /outside the 64x48 framebuffer/);
    expectFailure(update(cat(rect(0, 0, 4, 4, 1), u16(62), u16(0))), /CopyRect source/);
    expectFailure(update(rect(0, 0, 2000, 1, -239)), /cursor of 2000x1/);
  });
});

describe('streaming', () => {
  it('forwards large bodies as slices of the incoming chunks, without copies', () => {
    const toClient: Buffer[] = [];
    const filter = new RfbFilter({ toServer: () => undefined, toClient: (c) => toClient.push(c) });
    for (const [from, bytes] of handshake38(1024, 768)) {
      if (from === 'client') filter.pushFromClient(bytes);
      else filter.pushFromServer(bytes);
    }
    toClient.length = 0;
    const body = Buffer.alloc(1024 * 768 * 4, 1);
    filter.pushFromServer(
      cat(fbu(), u8(0, 0), u16(1), rect(0, 0, 1024, 768, 0), body.subarray(0, 100)),
    );
    const rest = body.subarray(100);
    filter.pushFromServer(rest);
    expect(toClient).toHaveLength(2);
    expect(toClient[1]!.buffer).toBe(rest.buffer);
    expect(toClient[1]!.byteOffset).toBe(rest.byteOffset);
    expect(toClient[1]!.length).toBe(rest.length);
  });

  it('reports how much of an announced body is still to come from the server', () => {
    const filter = new RfbFilter({ toServer: () => undefined, toClient: () => undefined });
    expect(filter.serverBodyPending).toBe(0);
    for (const [from, bytes] of handshake38(64, 48)) {
      if (from === 'client') filter.pushFromClient(bytes);
      else filter.pushFromServer(bytes);
    }
    const update = cat(fbu(rect(0, 0, 64, 48, 0)), Buffer.alloc(64 * 48 * 4, 7));
    filter.pushFromServer(update.subarray(0, 10));
    expect(filter.serverBodyPending).toBe(0); // inside a header: nothing announced yet
    filter.pushFromServer(update.subarray(10, 116));
    expect(filter.serverBodyPending).toBe(64 * 48 * 4 - 100);
    filter.pushFromServer(update.subarray(116, update.length - 1));
    expect(filter.serverBodyPending).toBe(1);
    filter.pushFromServer(update.subarray(update.length - 1));
    expect(filter.serverBodyPending).toBe(0);
    // A dropped ServerCutText is not a body that will be forwarded.
    filter.pushFromServer(cutText(3, Buffer.from('secret')).subarray(0, 9));
    expect(filter.serverBodyPending).toBe(0);
  });
});
