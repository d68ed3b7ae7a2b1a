// A small RFB client for tests against a real Xvnc. It buffers whole messages and decodes
// Raw, CopyRect, Hextile, ZRLE and Tight into its own framebuffer, written independently of
// the filter so that a framing mistake in either shows up as a decoding failure or a
// framebuffer that differs from the server's.
import net from 'node:net';
import zlib from 'node:zlib';
import { RfbFilter, type FilteredEvent } from '../../src/rfb/index.js';

export const ENC = {
  Raw: 0,
  CopyRect: 1,
  Hextile: 5,
  Tight: 7,
  ZRLE: 16,
  JPEG: 21,
  DesktopSize: -223,
  LastRect: -224,
  Cursor: -239,
  QEMUExtendedKeyEvent: -258,
  DesktopName: -307,
  ExtendedDesktopSize: -308,
  Fence: -312,
  ContinuousUpdates: -313,
  ExtendedMouseButtons: -316,
  ExtendedClipboard: 0xc0a1e5ce | 0,
};

const CLIP_CAPS = 1 << 24;
const CLIP_REQUEST = 1 << 25;
const CLIP_PEEK = 1 << 26;
const CLIP_NOTIFY = 1 << 27;
const CLIP_PROVIDE = 1 << 28;
const CLIP_TEXT = 1;

export interface CutText {
  extended: boolean;
  payload: Buffer;
}

const PIXEL_ENCODINGS = [ENC.Raw, ENC.CopyRect, ENC.Hextile, ENC.Tight, ENC.ZRLE];

class Incomplete extends Error {}

/** Cursor over the receive buffer that throws Incomplete when the message is not all there. */
class Reader {
  constructor(
    readonly buf: Buffer,
    public off: number,
  ) {}
  take(n: number): Buffer {
    if (this.off + n > this.buf.length) throw new Incomplete();
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }
  u8(): number {
    return this.take(1)[0]!;
  }
  u16(): number {
    return this.take(2).readUInt16BE();
  }
  u32(): number {
    return this.take(4).readUInt32BE();
  }
  s32(): number {
    return this.take(4).readInt32BE();
  }
}

/** Inflates one zlib stream whose compressed data arrives in pieces, each ending in a sync flush. */
class ZStream {
  private input: Buffer[] = [];
  private produced = 0;
  push(data: Buffer): Buffer {
    this.input.push(data);
    const all = zlib.inflateSync(Buffer.concat(this.input), {
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
    });
    const out = all.subarray(this.produced);
    this.produced = all.length;
    return out;
  }
}

export class RfbTestClient {
  width = 0;
  height = 0;
  fb = new Uint32Array(0);
  readonly cutTexts: CutText[] = [];
  readonly filtered: FilteredEvent[] = [];
  readonly rectEncodings = new Set<number>();
  private readonly rectEncodingsOfLast = new Set<number>();
  filterError: Error | undefined;
  /** Text offered to the server on an Extended Clipboard request. */
  clipboardText: string | undefined;

  private socket!: net.Socket;
  private send!: (b: Buffer) => void;
  private rx = Buffer.alloc(0);
  private phase: 'version' | 'types' | 'result' | 'init' | 'normal' = 'version';
  private waiters: (() => void)[] = [];
  private updates = 0;
  /** Updates that carried pixels (not only pseudo-rectangles such as the cursor). */
  private pixelUpdates = 0;
  private zrle = new ZStream();
  private tight: ZStream[] = [new ZStream(), new ZStream(), new ZStream(), new ZStream()];
  private closed = false;

  static async connect(socketPath: string, opts: { filter: boolean }): Promise<RfbTestClient> {
    const c = new RfbTestClient();
    await c.open(socketPath, opts.filter);
    return c;
  }

  private open(socketPath: string, useFilter: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(socketPath);
      this.socket = socket;
      if (useFilter) {
        const filter = new RfbFilter({
          toServer: (b) => socket.write(b),
          toClient: (b) => this.receive(b),
          onFiltered: (e) => this.filtered.push(e),
        });
        this.send = (b) => this.guard(() => filter.pushFromClient(b));
        socket.on('data', (d) => this.guard(() => filter.pushFromServer(d)));
      } else {
        this.send = (b) => socket.write(b);
        socket.on('data', (d) => this.receive(d));
      }
      socket.on('error', reject);
      socket.on('close', () => {
        this.closed = true;
        this.wake();
      });
      this.waiters.push(() =>
        this.phase === 'normal' ? resolve() : reject(new Error('handshake failed')),
      );
    });
  }

  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.filterError = err as Error;
      this.socket.destroy();
    }
  }

  private wake(): void {
    const ws = this.waiters;
    this.waiters = [];
    ws.forEach((w) => w());
  }

  close(): void {
    this.socket.destroy();
  }

  private receive(data: Buffer): void {
    this.rx = Buffer.concat([this.rx, data]);
    for (;;) {
      const r = new Reader(this.rx, 0);
      try {
        this.parseOne(r);
      } catch (err) {
        if (err instanceof Incomplete) return;
        throw err;
      }
      this.rx = this.rx.subarray(r.off);
    }
  }

  private parseOne(r: Reader): void {
    switch (this.phase) {
      case 'version':
        r.take(12);
        this.send(Buffer.from('RFB 003.008\n', 'latin1'));
        this.phase = 'types';
        return;
      case 'types': {
        const types = r.take(r.u8());
        if (!types.includes(1)) throw new Error('security None not offered');
        this.send(Buffer.from([1]));
        this.phase = 'result';
        return;
      }
      case 'result':
        if (r.u32() !== 0) throw new Error('security result failed');
        this.send(Buffer.from([1]));
        this.phase = 'init';
        return;
      case 'init': {
        this.width = r.u16();
        this.height = r.u16();
        r.take(16);
        r.take(r.u32());
        this.fb = new Uint32Array(this.width * this.height);
        this.phase = 'normal';
        // 32 bits per pixel, depth 24, little endian, 0x00RRGGBB.
        const pf = Buffer.from([
          0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
        ]);
        this.send(pf);
        this.wake();
        return;
      }
      case 'normal':
        this.message(r);
    }
  }

  private message(r: Reader): void {
    const type = r.u8();
    switch (type) {
      case 0:
        if (this.framebufferUpdate(r)) this.pixelUpdates++;
        this.updates++;
        this.wake();
        return;
      case 2:
        return;
      case 3: {
        r.take(3);
        const len = r.s32();
        const payload = r.take(Math.abs(len));
        this.cutTexts.push({ extended: len < 0, payload: Buffer.from(payload) });
        if (len < 0) this.extendedClipboard(payload);
        this.wake();
        return;
      }
      case 150:
        return;
      case 248: {
        r.take(3);
        const flags = r.u32();
        const payload = r.take(r.u8());
        if (flags & 0x80000000) {
          const reply = Buffer.alloc(9 + payload.length);
          reply[0] = 248;
          reply.writeUInt32BE((flags & 0x3) >>> 0, 4);
          reply[8] = payload.length;
          payload.copy(reply, 9);
          this.send(reply);
        }
        return;
      }
      default:
        throw new Error(`unexpected server message ${type}`);
    }
  }

  private extendedClipboard(payload: Buffer): void {
    const flags = payload.readUInt32BE(0);
    if (flags & CLIP_CAPS) {
      this.sendExtendedClipboard(
        CLIP_CAPS | CLIP_REQUEST | CLIP_PEEK | CLIP_NOTIFY | CLIP_PROVIDE | CLIP_TEXT,
        [Buffer.from([0, 0x10, 0, 0])],
      );
    } else if (flags & CLIP_REQUEST && this.clipboardText !== undefined) {
      this.provideClipboard(this.clipboardText);
    }
  }

  /** Extended Clipboard: announce text, then provide it (what a client does on a local copy). */
  notifyClipboard(): void {
    this.sendExtendedClipboard(CLIP_NOTIFY | CLIP_TEXT, []);
  }

  provideClipboard(text: string): void {
    const t = Buffer.from(`${text}\0`, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(t.length);
    this.sendExtendedClipboard(CLIP_PROVIDE | CLIP_TEXT, [
      zlib.deflateSync(Buffer.concat([len, t])),
    ]);
  }

  private sendExtendedClipboard(flags: number, parts: Buffer[]): void {
    const body = Buffer.concat([Buffer.alloc(4), ...parts]);
    body.writeUInt32BE(flags >>> 0, 0);
    const head = Buffer.alloc(8);
    head[0] = 6;
    head.writeInt32BE(-body.length, 4);
    this.send(Buffer.concat([head, body]));
  }

  /** Plain ClientCutText (Latin-1). */
  sendCutText(text: string): void {
    const t = Buffer.from(text, 'latin1');
    const head = Buffer.alloc(8);
    head[0] = 6;
    head.writeInt32BE(t.length, 4);
    this.send(Buffer.concat([head, t]));
  }

  setEncodings(encodings: number[]): void {
    const b = Buffer.alloc(4 + 4 * encodings.length);
    b[0] = 2;
    b.writeUInt16BE(encodings.length, 2);
    encodings.forEach((e, i) => b.writeInt32BE(e, 4 + 4 * i));
    this.send(b);
  }

  /**
   * Requests an update of the whole screen and waits until a FramebufferUpdate completes
   * (for a full update: one that carries pixels).
   */
  async update(incremental: boolean, timeoutMs = 10_000): Promise<void> {
    const counter = (): number => (incremental ? this.updates : this.pixelUpdates);
    const before = counter();
    const b = Buffer.alloc(10);
    b[0] = 3;
    b[1] = incremental ? 1 : 0;
    b.writeUInt16BE(this.width, 6);
    b.writeUInt16BE(this.height, 8);
    this.send(b);
    await this.waitFor(() => counter() > before, timeoutMs, 'framebuffer update');
  }

  async waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (this.filterError) throw this.filterError;
      if (this.closed) throw new Error(`connection closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 50));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  private framebufferUpdate(r: Reader): boolean {
    r.take(1);
    let rects = r.u16();
    this.rectEncodingsOfLast.clear();
    // Decoding mutates the zlib streams, so parse the whole message before decoding any of it.
    const rectsParsed: (() => void)[] = [];
    while (rects-- > 0) {
      const x = r.u16();
      const y = r.u16();
      const w = r.u16();
      const h = r.u16();
      const enc = r.s32();
      this.rectEncodings.add(enc);
      this.rectEncodingsOfLast.add(enc);
      if (enc === ENC.LastRect) break;
      rectsParsed.push(this.rect(r, x, y, w, h, enc));
    }
    rectsParsed.forEach((apply) => apply());
    return [...PIXEL_ENCODINGS].some((e) => this.rectEncodingsOfLast.has(e));
  }

  private put(x: number, y: number, colour: number): void {
    this.fb[y * this.width + x] = colour;
  }

  private fill(x: number, y: number, w: number, h: number, colour: number): void {
    for (let j = y; j < y + h; j++)
      this.fb.fill(colour, j * this.width + x, j * this.width + x + w);
  }

  /** Parses one rectangle and returns a function that paints it. */
  private rect(r: Reader, x: number, y: number, w: number, h: number, enc: number): () => void {
    switch (enc) {
      case ENC.Raw: {
        const data = r.take(w * h * 4);
        return () => {
          for (let j = 0; j < h; j++)
            for (let i = 0; i < w; i++)
              this.put(x + i, y + j, data.readUInt32LE(4 * (j * w + i)) & 0xffffff);
        };
      }
      case ENC.CopyRect: {
        const sx = r.u16();
        const sy = r.u16();
        return () => {
          const copy = new Uint32Array(w * h);
          for (let j = 0; j < h; j++)
            copy.set(
              this.fb.subarray((sy + j) * this.width + sx, (sy + j) * this.width + sx + w),
              j * w,
            );
          for (let j = 0; j < h; j++)
            this.fb.set(copy.subarray(j * w, (j + 1) * w), (y + j) * this.width + x);
        };
      }
      case ENC.Hextile:
        return this.hextile(r, x, y, w, h);
      case ENC.ZRLE: {
        const data = Buffer.from(r.take(r.u32()));
        return () => this.zrleDecode(this.zrle.push(data), x, y, w, h);
      }
      case ENC.Tight:
        return this.tightRect(r, x, y, w, h);
      case ENC.Cursor:
        r.take(w * h * 4 + Math.ceil(w / 8) * h);
        return () => undefined;
      case ENC.DesktopName:
        r.take(r.u32());
        return () => undefined;
      case ENC.DesktopSize:
      case ENC.QEMUExtendedKeyEvent:
        return () => undefined;
      default:
        throw new Error(`unexpected rectangle encoding ${enc}`);
    }
  }

  private hextile(r: Reader, x: number, y: number, w: number, h: number): () => void {
    const ops: (() => void)[] = [];
    let bg = 0;
    let fg = 0;
    for (let ty = y; ty < y + h; ty += 16) {
      for (let tx = x; tx < x + w; tx += 16) {
        const tw = Math.min(16, x + w - tx);
        const th = Math.min(16, y + h - ty);
        const sub = r.u8();
        if (sub & 1) {
          const data = r.take(tw * th * 4);
          ops.push(() => {
            for (let j = 0; j < th; j++)
              for (let i = 0; i < tw; i++)
                this.put(tx + i, ty + j, data.readUInt32LE(4 * (j * tw + i)) & 0xffffff);
          });
          continue;
        }
        if (sub & 2) bg = r.take(4).readUInt32LE() & 0xffffff;
        if (sub & 4) fg = r.take(4).readUInt32LE() & 0xffffff;
        const tileBg = bg;
        ops.push(() => this.fill(tx, ty, tw, th, tileBg));
        if (sub & 8) {
          const n = r.u8();
          for (let s = 0; s < n; s++) {
            const colour = sub & 16 ? r.take(4).readUInt32LE() & 0xffffff : fg;
            const xy = r.u8();
            const wh = r.u8();
            ops.push(() =>
              this.fill(tx + (xy >> 4), ty + (xy & 15), (wh >> 4) + 1, (wh & 15) + 1, colour),
            );
          }
        }
      }
    }
    return () => ops.forEach((op) => op());
  }

  private zrleDecode(data: Buffer, x: number, y: number, w: number, h: number): void {
    const r = new Reader(data, 0);
    const cpixel = (): number => {
      const b = r.take(3);
      return b[0]! | (b[1]! << 8) | (b[2]! << 16);
    };
    for (let ty = y; ty < y + h; ty += 64) {
      for (let tx = x; tx < x + w; tx += 64) {
        const tw = Math.min(64, x + w - tx);
        const th = Math.min(64, y + h - ty);
        const sub = r.u8();
        const px: number[] = [];
        if (sub === 0) {
          for (let i = 0; i < tw * th; i++) px.push(cpixel());
        } else if (sub === 1) {
          const c = cpixel();
          for (let i = 0; i < tw * th; i++) px.push(c);
        } else if (sub <= 16) {
          const palette = Array.from({ length: sub }, cpixel);
          const bits = sub === 2 ? 1 : sub <= 4 ? 2 : 4;
          for (let j = 0; j < th; j++) {
            const row = r.take(Math.ceil((tw * bits) / 8));
            for (let i = 0; i < tw; i++) {
              const bit = i * bits;
              px.push(palette[(row[bit >> 3]! >> (8 - bits - (bit & 7))) & ((1 << bits) - 1)]!);
            }
          }
        } else if (sub === 128 || sub >= 130) {
          const palette = sub === 128 ? [] : Array.from({ length: sub - 128 }, cpixel);
          while (px.length < tw * th) {
            let colour: number;
            let run = 1;
            if (sub === 128) {
              colour = cpixel();
              run = this.runLength(r);
            } else {
              const index = r.u8();
              colour = palette[index & 127]!;
              if (index & 128) run = this.runLength(r);
            }
            for (let i = 0; i < run; i++) px.push(colour);
          }
        } else {
          throw new Error(`invalid ZRLE subencoding ${sub}`);
        }
        if (px.length !== tw * th) throw new Error('ZRLE run past the tile');
        px.forEach((c, i) => this.put(tx + (i % tw), ty + Math.floor(i / tw), c));
      }
    }
    if (r.off !== data.length) throw new Error('ZRLE data left over');
  }

  private runLength(r: Reader): number {
    let n = 1;
    let b: number;
    do {
      b = r.u8();
      n += b;
    } while (b === 255);
    return n;
  }

  private tightRect(r: Reader, x: number, y: number, w: number, h: number): () => void {
    const ctl = r.u8();
    const resets = ctl & 15;
    const kind = ctl >> 4;
    const reset = (): void => {
      for (let i = 0; i < 4; i++) if (resets & (1 << i)) this.tight[i] = new ZStream();
    };
    if (kind === 8) {
      const p = r.take(3);
      const c = (p[0]! << 16) | (p[1]! << 8) | p[2]!;
      return () => this.fill(x, y, w, h, c);
    }
    if (kind & 8) throw new Error(`unexpected Tight compression ${kind}`);
    const stream = kind & 3;
    const filter = kind & 4 ? r.u8() : 0;
    let palette: number[] = [];
    let size: number;
    if (filter === 0) {
      size = w * h * 3;
    } else if (filter === 1) {
      const n = r.u8() + 1;
      for (let i = 0; i < n; i++) {
        const p = r.take(3);
        palette.push((p[0]! << 16) | (p[1]! << 8) | p[2]!);
      }
      size = n <= 2 ? Math.ceil(w / 8) * h : w * h;
    } else {
      throw new Error(`unexpected Tight filter ${filter}`);
    }
    let raw: Buffer | undefined;
    let compressed: Buffer | undefined;
    if (size < 12) {
      raw = Buffer.from(r.take(size));
    } else {
      let len = r.u8();
      if (len & 0x80) {
        const b1 = r.u8();
        len = (len & 0x7f) | ((b1 & 0x7f) << 7);
        if (b1 & 0x80) len |= r.u8() << 14;
      }
      compressed = Buffer.from(r.take(len));
    }
    return () => {
      reset();
      const data = raw ?? this.tight[stream]!.push(compressed!);
      if (data.length !== size)
        throw new Error(`Tight data of ${data.length} bytes, expected ${size}`);
      for (let j = 0; j < h; j++) {
        for (let i = 0; i < w; i++) {
          let c: number;
          if (filter === 0) {
            const o = 3 * (j * w + i);
            c = (data[o]! << 16) | (data[o + 1]! << 8) | data[o + 2]!;
          } else if (palette.length <= 2) {
            const byte = data[j * Math.ceil(w / 8) + (i >> 3)]!;
            c = palette[(byte >> (7 - (i & 7))) & 1]!;
          } else {
            c = palette[data[j * w + i]!]!;
          }
          this.put(x + i, y + j, c);
        }
      }
      palette = [];
    };
  }
}
