import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { RfbFilter, RfbProtocolError } from '../src/rfb/index.js';
import {
  cat,
  cutText,
  fbu,
  handshake38,
  rect,
  s32,
  u16,
  u32,
  u8,
  type Step,
} from './helpers/rfb-bytes.js';

const MARKER = Buffer.from('CLIPBOARD-MARKER-7f3a');
const W = 64;
const H = 48;

/** A message and whether the filter must forward it. */
type Msg = { bytes: Buffer; forwarded: boolean };

const bytes = (max: number): fc.Arbitrary<Buffer> =>
  fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
const marked = bytes(40).map((b) => cat(b, MARKER, b));

const serverMessage: fc.Arbitrary<Msg> = fc.oneof(
  fc.constant({ bytes: u8(2), forwarded: true }),
  fc
    .record({ w: fc.integer({ min: 0, max: 8 }), h: fc.integer({ min: 0, max: 8 }) })
    .map(({ w, h }) => ({
      bytes: fbu(cat(rect(0, 0, w, h, 0), Buffer.alloc(w * h * 4, 0x11))),
      forwarded: true,
    })),
  bytes(300).map((d) => ({
    bytes: fbu(cat(rect(0, 0, W, H, 16), u32(d.length), d)),
    forwarded: true,
  })),
  fc.tuple(fc.integer({ min: 1, max: 40 }), bytes(200)).map(([w, d]) => ({
    bytes: fbu(
      cat(
        rect(0, 0, w, 1, 7),
        u8(0x90),
        d.length < 128 ? u8(d.length) : u8(0x80 | (d.length & 0x7f), d.length >> 7),
        d,
      ),
    ),
    forwarded: true,
  })),
  fc
    .tuple(marked, fc.boolean())
    .map(([m, ext]) => ({ bytes: cutText(3, m, ext), forwarded: false })),
);

const clientMessage: fc.Arbitrary<Msg> = fc.oneof(
  fc
    .integer({ min: 0, max: 0xffffffff })
    .map((k) => ({ bytes: cat(u8(4, 1, 0, 0), u32(k)), forwarded: true })),
  fc
    .tuple(fc.nat(W), fc.nat(H))
    .map(([x, y]) => ({ bytes: cat(u8(5, 0), u16(x), u16(y)), forwarded: true })),
  fc.boolean().map((inc) => ({
    bytes: cat(u8(3, inc ? 1 : 0), u16(0), u16(0), u16(W), u16(H)),
    forwarded: true,
  })),
  fc
    .tuple(marked, fc.boolean())
    .map(([m, ext]) => ({ bytes: cutText(6, m, ext), forwarded: false })),
);

/** Cuts a buffer into pieces at the given (relative) positions. */
function chunk(b: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => Math.floor(c * b.length)))].sort((a, z) => a - z);
  const out: Buffer[] = [];
  let start = 0;
  for (const p of points) {
    out.push(b.subarray(start, p));
    start = p;
  }
  out.push(b.subarray(start));
  return out;
}

const cuts = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 12 });

interface Outcome {
  toServer: Buffer;
  toClient: Buffer;
  events: number;
  error: unknown;
}

function run(steps: Step[], splitCuts: number[]): Outcome {
  const toServer: Buffer[] = [];
  const toClient: Buffer[] = [];
  let events = 0;
  const filter = new RfbFilter({
    toServer: (c) => toServer.push(Buffer.from(c)),
    toClient: (c) => toClient.push(Buffer.from(c)),
    onFiltered: () => events++,
    maxCutTextLength: 1 << 16,
  });
  let error: unknown;
  try {
    for (const [from, b] of steps) {
      for (const piece of chunk(b, splitCuts)) {
        if (from === 'client') filter.pushFromClient(piece);
        else filter.pushFromServer(piece);
      }
    }
  } catch (err) {
    error = err;
  }
  return { toServer: Buffer.concat(toServer), toClient: Buffer.concat(toClient), events, error };
}

/** Only the filter's own error type, and never one that wraps an unexpected exception. */
function expectCleanFailure(error: unknown): void {
  if (error === undefined) return;
  expect(error).toBeInstanceOf(RfbProtocolError);
  expect((error as RfbProtocolError).reason).not.toMatch(/^internal/);
}

const HS = handshake38(W, H);
const hsLength = (side: 'client' | 'server'): number =>
  HS.filter(([from]) => from === side).reduce((n, [, b]) => n + b.length, 0);

describe('RFB filter fuzzing', () => {
  it('valid streams with cut text, cut anywhere: exact output, no marker, one event per drop', () => {
    fc.assert(
      fc.property(
        fc.array(serverMessage, { maxLength: 12 }),
        fc.array(clientMessage, { maxLength: 12 }),
        cuts,
        (sm, cm, c) => {
          const out = run(
            [
              ...HS,
              ['server', cat(...sm.map((m) => m.bytes))],
              ['client', cat(...cm.map((m) => m.bytes))],
            ],
            c,
          );
          expect(out.error).toBeUndefined();
          const want = (ms: Msg[]): Buffer =>
            cat(...ms.filter((m) => m.forwarded).map((m) => m.bytes));
          expect(out.toClient.subarray(hsLength('server')).equals(want(sm))).toBe(true);
          expect(out.toServer.subarray(hsLength('client')).equals(want(cm))).toBe(true);
          expect(out.toClient.includes(MARKER) || out.toServer.includes(MARKER)).toBe(false);
          expect(out.events).toBe([...sm, ...cm].filter((m) => !m.forwarded).length);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('random bytes after the handshake: only RfbProtocolError, and cut text before them never leaks', () => {
    fc.assert(
      fc.property(
        fc.array(serverMessage, { maxLength: 6 }),
        bytes(600),
        bytes(600),
        cuts,
        (sm, junkS, junkC, c) => {
          const started = Date.now();
          const out = run(
            [
              ...HS,
              ['server', cat(...sm.map((m) => m.bytes), junkS)],
              ['client', cat(cutText(6, MARKER), junkC)],
            ],
            c,
          );
          expectCleanFailure(out.error);
          expect(out.toClient.includes(MARKER) || out.toServer.includes(MARKER)).toBe(false);
          expect(Date.now() - started).toBeLessThan(1000);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('random bytes from the first byte on either side: only RfbProtocolError', () => {
    fc.assert(
      fc.property(bytes(300), bytes(300), cuts, fc.boolean(), (a, b, c, serverFirst) => {
        const steps: Step[] = serverFirst
          ? [
              ['server', a],
              ['client', b],
            ]
          : [
              ['client', b],
              ['server', a],
            ];
        expectCleanFailure(run(steps, c).error);
      }),
      { numRuns: 300 },
    );
  });

  it('mutated streams: whatever is forwarded is well-framed RFB without cut text', () => {
    fc.assert(
      fc.property(
        fc.array(serverMessage, { minLength: 1, maxLength: 8 }),
        fc.array(
          fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.integer({ min: 0, max: 255 })),
          {
            minLength: 1,
            maxLength: 4,
          },
        ),
        cuts,
        (sm, mutations, c) => {
          const stream = Buffer.from(cat(...sm.map((m) => m.bytes)));
          for (const [at, value] of mutations) stream[Math.floor(at * (stream.length - 1))] = value;
          const first = run([...HS, ['server', stream]], c);
          expectCleanFailure(first.error);
          // A second filter must accept the first one's output as it is: nothing to drop, no error.
          const again = run([...HS, ['server', first.toClient.subarray(hsLength('server'))]], []);
          expect(again.error).toBeUndefined();
          expect(again.events).toBe(0);
          expect(again.toClient.equals(first.toClient)).toBe(true);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('huge declared lengths: streamed or refused, memory stays bounded', () => {
    for (const declared of [
      cat(u8(3, 0, 0, 0), s32(0x7fffffff)),
      cat(u8(3, 0, 0, 0), s32(-0x80000000)),
      fbu(cat(rect(0, 0, W, H, 16), u32(0xffffffff))),
      fbu(cat(rect(0, 0, 0xffff, 0xffff, 0))),
      cat(u8(1, 0), u16(0xffff), u16(2)),
    ]) {
      const out = run([...HS, ['server', declared]], []);
      expectCleanFailure(out.error);
    }
    // A 64 MiB Raw rectangle, fed in 1 MiB pieces, flows through without being held.
    const filter = new RfbFilter({ toServer: () => undefined, toClient: () => undefined });
    for (const [from, b] of handshake38(4096, 4096)) {
      if (from === 'client') filter.pushFromClient(b);
      else filter.pushFromServer(b);
    }
    filter.pushFromServer(fbu(rect(0, 0, 4096, 4096, 0)));
    const piece = Buffer.alloc(1 << 20, 1);
    const before = process.memoryUsage().arrayBuffers;
    for (let i = 0; i < 64; i++) filter.pushFromServer(piece);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(8 << 20);
    expect(filter.state).toBe('normal');
  });
});
